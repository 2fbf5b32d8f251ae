package storage

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"matchbox.dev/matchbox"
)

// recordKey is the bucket key of a record: kind, a zero byte, key.
func recordKey(kind, key string) []byte {
	return append(append(append(make([]byte, 0, len(kind)+1+len(key)), kind...), 0), key...)
}

func checkRecordKey(k matchbox.RecordKey) error {
	if k.Kind == "" || strings.ContainsRune(k.Kind, 0) || k.Key == "" || len(k.Kind)+len(k.Key) > 1024 {
		return fmt.Errorf("%w: record %q/%q: want a kind without NUL and a key, 1 KiB at most", matchbox.ErrInvalid, k.Kind, k.Key)
	}
	return nil
}

// Record returns one record, or ErrNotFound.
func (db *DB) Record(_ context.Context, kind, key string) ([]byte, error) {
	if err := checkRecordKey(matchbox.RecordKey{Kind: kind, Key: key}); err != nil {
		return nil, err
	}
	var out []byte
	err := db.kv.View(func(tx kvTx) error {
		v := tx.Bucket(bucketRecords).Get(recordKey(kind, key))
		if v == nil {
			return fmt.Errorf("record %s %q: %w", kind, key, matchbox.ErrNotFound)
		}
		out = bytes.Clone(v)
		return nil
	})
	return out, err
}

// Records returns every record of a kind, in key order.
func (db *DB) Records(_ context.Context, kind string) ([]matchbox.Record, error) {
	if kind == "" || strings.ContainsRune(kind, 0) {
		return nil, fmt.Errorf("%w: record kind %q", matchbox.ErrInvalid, kind)
	}
	prefix := recordKey(kind, "")
	var out []matchbox.Record
	err := db.kv.View(func(tx kvTx) error {
		c := tx.Bucket(bucketRecords).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			out = append(out, matchbox.Record{Key: string(k[len(prefix):]), Value: bytes.Clone(v)})
		}
		return nil
	})
	return out, err
}

// UpdateRecords reads, changes and writes records in one transaction; see
// matchbox.RecordStore. Concurrent updates share a commit (a storm of
// update checks costs one disk sync per batch, not one per machine); fn
// then runs again alone when another's failure undoes the batch.
func (db *DB) UpdateRecords(_ context.Context, keys []matchbox.RecordKey, fn func(values [][]byte) ([][]byte, error)) error {
	for _, k := range keys {
		if err := checkRecordKey(k); err != nil {
			return err
		}
	}
	return db.batch(func(tx kvTx, ch *changeSet) error {
		bk := tx.Bucket(bucketRecords)
		old := make([][]byte, len(keys))
		for i, k := range keys {
			if v := bk.Get(recordKey(k.Kind, k.Key)); v != nil {
				old[i] = bytes.Clone(v)
			}
		}
		next, err := fn(old)
		if err != nil {
			return err
		}
		if len(next) != len(keys) {
			return fmt.Errorf("update of %d records returned %d values", len(keys), len(next))
		}
		for i, k := range keys {
			switch {
			case bytes.Equal(next[i], old[i]) && (next[i] == nil) == (old[i] == nil):
				continue
			case next[i] == nil:
				if err := bk.Delete(recordKey(k.Kind, k.Key)); err != nil {
					return err
				}
			case len(next[i]) > matchbox.MaxRecord:
				return fmt.Errorf("%w: record %s %q: %d bytes, at most %d", matchbox.ErrInvalid, k.Kind, k.Key, len(next[i]), matchbox.MaxRecord)
			default:
				if err := bk.Put(recordKey(k.Kind, k.Key), bytes.Clone(next[i])); err != nil {
					return err
				}
			}
			if ch.wants(kindRecord) {
				ch.add(kindRecord, k.Kind+"/"+k.Key)
			} else {
				ch.touch(kindRecord)
			}
		}
		return nil
	})
}
