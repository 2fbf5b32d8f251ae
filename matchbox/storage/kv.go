package storage

// The store's logic is written once over this key/value layer: buckets of
// sorted keys, read in View transactions and written in Update (or
// Batch) transactions that commit whole or not at all. It is the part of
// bbolt the store uses, and bbolt's rules hold for every backend: a slice
// a Get or a cursor returns is valid only until its transaction ends and
// must not be modified; a slice given to Put must not be modified until
// the transaction ends; Batch may call its function more than once.

// kvStore is a key/value backend, opened.
type kvStore interface {
	View(fn func(kvTx) error) error
	Update(fn func(kvTx) error) error
	// Batch is Update for callers that may be coalesced into one
	// transaction with others (one commit, one fsync for all of them).
	Batch(fn func(kvTx) error) error
	Close() error
}

// kvTx is a transaction. Every bucket of the layout (storeBuckets) exists.
type kvTx interface {
	Bucket(name []byte) kvBucket
}

// kvBucket holds keys in byte order.
type kvBucket interface {
	// Get returns the value of key, nil when absent.
	Get(key []byte) []byte
	Put(key, value []byte) error
	// Delete removes key; an absent key is not an error.
	Delete(key []byte) error
	// ForEach calls fn for every key in order; fn must not write to the
	// bucket.
	ForEach(fn func(k, v []byte) error) error
	Cursor() kvCursor
}

// kvCursor walks a bucket in key order; each move returns nil keys past
// the end.
type kvCursor interface {
	First() (key, value []byte)
	// Seek moves to the first key at or after seek.
	Seek(seek []byte) (key, value []byte)
	Next() (key, value []byte)
	// Delete removes the key at the cursor.
	Delete() error
}

// kvBackend is a DB's backend: bbolt or memory. The store calls it, not a
// kvStore, so that the compiler sees the transactions' functions end
// with the calls: a read on the DHCP server's path allocates nothing for
// them.
type kvBackend struct {
	bolt *boltKV
	mem  *memKV
}

var (
	_ kvStore = (*boltKV)(nil)
	_ kvStore = (*memKV)(nil)
)

func (b kvBackend) View(fn func(kvTx) error) error {
	if b.mem != nil {
		return b.mem.View(fn)
	}
	return b.bolt.View(fn)
}

func (b kvBackend) Update(fn func(kvTx) error) error {
	if b.mem != nil {
		return b.mem.Update(fn)
	}
	return b.bolt.Update(fn)
}

func (b kvBackend) Batch(fn func(kvTx) error) error {
	if b.mem != nil {
		return b.mem.Batch(fn)
	}
	return b.bolt.Batch(fn)
}

func (b kvBackend) Close() error {
	if b.mem != nil {
		return b.mem.Close()
	}
	return b.bolt.Close()
}
