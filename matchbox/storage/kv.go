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
