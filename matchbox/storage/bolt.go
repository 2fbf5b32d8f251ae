package storage

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
)

// SchemaVersion is the version of the bbolt layout this build writes.
// Opening a database with a newer version is refused; older versions are
// migrated explicitly in migrate.
const SchemaVersion = 4

var (
	bucketMeta = []byte("meta")
	keySchema  = []byte("schema_version")
	// bucketEventsV2 is schema 2's nested layout, dropped by migration.
	bucketEventsV2 = []byte("events")
)

// OpenBolt opens (creating if needed) the bbolt database at path, the
// embedded store of a single server. It fails fast when another process
// holds the database open. Its change feed reports the writes of this
// process.
func OpenBolt(path string) (*DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("open database %s: locked by another process (is another matchbox running?)", path)
		}
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	if err := migrate(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	state := new(backendState)
	if err := db.View(func(tx *bolt.Tx) error {
		state.machines.Store(int64(tx.Bucket(bucketMachines).Stats().KeyN))
		return nil
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	return newDB(kvBackend{bolt: &boltKV{db: db}}, state), nil
}

func migrate(db *bolt.DB) error {
	return db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		version := 0
		if v := meta.Get(keySchema); v != nil {
			version, err = strconv.Atoi(string(v))
			if err != nil {
				return fmt.Errorf("corrupt schema version %q", v)
			}
		}
		if version > SchemaVersion {
			return fmt.Errorf("database schema version %d is newer than this matchbox supports (%d)", version, SchemaVersion)
		}
		// Version 0 → 1: configuration and machine buckets.
		// Version 1 → 2: event histories (a bucket per machine) and leases.
		// Version 2 → 3: event histories in one flat bucket (history); the
		// per-machine buckets cost too much under load and are dropped.
		// Version 3 → 4: machine records and events are written in a
		// binary form (codec.go); JSON records stay readable, so nothing
		// is rewritten, but older builds must not open the database.
		// The workflows and tokens_revoked buckets came later within
		// version 4: builds that do not know them leave them alone.
		if version == 2 && tx.Bucket(bucketEventsV2) != nil {
			if err := tx.DeleteBucket(bucketEventsV2); err != nil {
				return err
			}
		}
		for _, name := range storeBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return meta.Put(keySchema, []byte(strconv.Itoa(SchemaVersion)))
	})
}

// boltKV is the kv layer over a bbolt database. The adapter types are
// bbolt's own under another name, so that wrapping costs no allocation.
type boltKV struct {
	db   *bolt.DB
	comb combiner
}

type (
	boltTx     bolt.Tx
	boltBucket bolt.Bucket
	boltCursor bolt.Cursor
)

func (s *boltKV) View(fn func(kvTx) error) error {
	return s.db.View(func(tx *bolt.Tx) error { return fn((*boltTx)(tx)) })
}

func (s *boltKV) Update(fn func(kvTx) error) error {
	return s.db.Update(func(tx *bolt.Tx) error { return fn((*boltTx)(tx)) })
}

// Batch is Update shared with the writers waiting when it commits (see
// combiner).
func (s *boltKV) Batch(fn func(kvTx) error) error {
	return s.comb.do(fn, s.Update)
}

func (s *boltKV) Close() error { return s.db.Close() }

func (tx *boltTx) Bucket(name []byte) kvBucket {
	return (*boltBucket)((*bolt.Tx)(tx).Bucket(name))
}

func (b *boltBucket) Get(key []byte) []byte { return (*bolt.Bucket)(b).Get(key) }

func (b *boltBucket) Put(key, value []byte) error { return (*bolt.Bucket)(b).Put(key, value) }

func (b *boltBucket) Delete(key []byte) error { return (*bolt.Bucket)(b).Delete(key) }

func (b *boltBucket) ForEach(fn func(k, v []byte) error) error {
	return (*bolt.Bucket)(b).ForEach(fn)
}

func (b *boltBucket) Cursor() kvCursor { return (*boltCursor)((*bolt.Bucket)(b).Cursor()) }

func (c *boltCursor) First() ([]byte, []byte) { return (*bolt.Cursor)(c).First() }

func (c *boltCursor) Seek(seek []byte) ([]byte, []byte) { return (*bolt.Cursor)(c).Seek(seek) }

func (c *boltCursor) Next() ([]byte, []byte) { return (*bolt.Cursor)(c).Next() }

func (c *boltCursor) Delete() error { return (*bolt.Cursor)(c).Delete() }
