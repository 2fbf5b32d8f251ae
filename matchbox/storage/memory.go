package storage

import (
	"bytes"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
)

// MemoryBackend holds a store's data in memory, for tests and as the
// reference the other backends are checked against. Several stores may
// be opened over one backend (OpenMemory) and used at once: they stand
// for replicas sharing one database, each seeing the others' writes and
// their changes (Changes). Nothing survives the process.
type MemoryBackend struct {
	// mu is held for reading by View transactions and for writing by
	// Update ones, which therefore see a consistent state and are
	// isolated from each other.
	mu      sync.RWMutex
	buckets map[string]*memBucket
	state   backendState
}

// NewMemoryBackend returns an empty backend.
func NewMemoryBackend() *MemoryBackend {
	m := &MemoryBackend{buckets: make(map[string]*memBucket, len(storeBuckets))}
	for _, name := range storeBuckets {
		m.buckets[string(name)] = new(memBucket)
	}
	return m
}

// OpenMemory opens a store over b. The stores over one backend share its
// data, change feed and machine count; each has its own secret key and
// bound on machines, as servers have. Closing one leaves b and the others
// open.
func OpenMemory(b *MemoryBackend) *DB { return newDB(kvBackend{mem: &memKV{b: b}}, &b.state) }

// NewMemory returns a store over a new backend of its own.
func NewMemory() *DB { return OpenMemory(NewMemoryBackend()) }

var errMemoryClosed = errors.New("memory store is closed")

// memKV is the kv layer of one store over a MemoryBackend.
type memKV struct {
	b      *MemoryBackend
	closed atomic.Bool
}

func (s *memKV) View(fn func(kvTx) error) error {
	if s.closed.Load() {
		return errMemoryClosed
	}
	s.b.mu.RLock()
	defer s.b.mu.RUnlock()
	return fn(&memTx{b: s.b})
}

// Update runs fn with the backend to itself; what fn wrote is undone
// when it fails (or panics).
func (s *memKV) Update(fn func(kvTx) error) error {
	if s.closed.Load() {
		return errMemoryClosed
	}
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	tx := &memTx{b: s.b, writable: true}
	committed := false
	defer func() {
		if !committed {
			tx.rollback()
		}
	}()
	if err := fn(tx); err != nil {
		return err
	}
	committed = true
	return nil
}

// Batch is Update: there is no commit cost to share.
func (s *memKV) Batch(fn func(kvTx) error) error { return s.Update(fn) }

func (s *memKV) Close() error {
	s.closed.Store(true)
	return nil
}

// memBucket holds its entries sorted by key.
type memBucket struct{ entries []memEntry }

type memEntry struct{ key, value []byte }

// find returns the index of the first entry at or after key and whether
// it is key.
func (b *memBucket) find(key []byte) (int, bool) {
	return slices.BinarySearchFunc(b.entries, key, func(e memEntry, k []byte) int { return bytes.Compare(e.key, k) })
}

// set stores value under key (nil value: removes it) and returns what was
// there.
func (b *memBucket) set(key, value []byte) (old []byte, existed bool) {
	i, found := b.find(key)
	switch {
	case found && value == nil:
		old = b.entries[i].value
		b.entries = slices.Delete(b.entries, i, i+1)
	case found:
		old = b.entries[i].value
		b.entries[i].value = value
	case value != nil:
		b.entries = slices.Insert(b.entries, i, memEntry{key, value})
	}
	return old, found
}

// clone copies b; unlike bytes.Clone, an empty b gives an empty, not nil,
// slice (nil is "absent").
func clone(b []byte) []byte { return append(make([]byte, 0, len(b)), b...) }

// memTx is a transaction over a MemoryBackend; a writable one keeps what
// it replaced, to undo it.
type memTx struct {
	b        *MemoryBackend
	writable bool
	undo     []memUndo
}

type memUndo struct {
	bucket  *memBucket
	key     []byte
	old     []byte
	existed bool
}

var errMemoryReadOnly = errors.New("memory store: write in a read-only transaction")

func (tx *memTx) Bucket(name []byte) kvBucket {
	b, ok := tx.b.buckets[string(name)]
	if !ok {
		return nil
	}
	return memTxBucket{tx, b}
}

// write sets key to value (nil: deletes it), remembering how to undo it.
func (tx *memTx) write(b *memBucket, key, value []byte) error {
	if !tx.writable {
		return errMemoryReadOnly
	}
	old, existed := b.set(key, value)
	tx.undo = append(tx.undo, memUndo{b, key, old, existed})
	return nil
}

func (tx *memTx) rollback() {
	for i := len(tx.undo) - 1; i >= 0; i-- {
		u := tx.undo[i]
		if u.existed {
			u.bucket.set(u.key, u.old)
		} else {
			u.bucket.set(u.key, nil)
		}
	}
	tx.undo = nil
}

type memTxBucket struct {
	tx *memTx
	b  *memBucket
}

// Get, ForEach and the cursor hand out copies, so that nothing a caller
// keeps or changes after the transaction touches the backend (bbolt's
// memory is read-only, and its slices are valid only in the transaction).
func (b memTxBucket) Get(key []byte) []byte {
	if i, ok := b.b.find(key); ok {
		return clone(b.b.entries[i].value)
	}
	return nil
}

// Put keeps copies: the caller's slices are its own again once the
// transaction ends.
func (b memTxBucket) Put(key, value []byte) error {
	if len(key) == 0 {
		return errors.New("memory store: empty key")
	}
	return b.tx.write(b.b, clone(key), clone(value))
}

func (b memTxBucket) Delete(key []byte) error {
	if _, ok := b.b.find(key); !ok {
		return nil
	}
	return b.tx.write(b.b, clone(key), nil)
}

func (b memTxBucket) ForEach(fn func(k, v []byte) error) error {
	for _, e := range b.b.entries {
		if err := fn(clone(e.key), clone(e.value)); err != nil {
			return err
		}
	}
	return nil
}

func (b memTxBucket) Cursor() kvCursor { return &memCursor{bucket: b} }

// memCursor remembers the key it is at, not an index, so that writes
// between its moves (Delete) do not make it skip entries.
type memCursor struct {
	bucket memTxBucket
	key    []byte // nil: before the first or past the last
}

func (c *memCursor) at(i int) ([]byte, []byte) {
	es := c.bucket.b.entries
	if i >= len(es) {
		c.key = nil
		return nil, nil
	}
	c.key = es[i].key
	return clone(es[i].key), clone(es[i].value)
}

func (c *memCursor) First() ([]byte, []byte) { return c.at(0) }

func (c *memCursor) Seek(seek []byte) ([]byte, []byte) {
	i, _ := c.bucket.b.find(seek)
	return c.at(i)
}

func (c *memCursor) Next() ([]byte, []byte) {
	if c.key == nil {
		return nil, nil
	}
	i, found := c.bucket.b.find(c.key)
	if found {
		i++
	}
	return c.at(i)
}

func (c *memCursor) Delete() error {
	if c.key == nil {
		return errors.New("memory store: cursor delete with no current key")
	}
	return c.bucket.Delete(c.key)
}
