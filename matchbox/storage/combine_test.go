package storage

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Writers that arrive while a commit runs share the next transaction; a
// writer whose function fails gets its own error and writes nothing, the
// others commit; every writer's result is its own.
func TestCombinerSharesCommits(t *testing.T) {
	db, kv := openBoltKV(t)

	// The first writer holds its transaction open until three more have
	// queued behind it.
	release, started := make(chan struct{}), make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	defer free() // before db.Close, even when the test fails early
	first := make(chan error, 1)
	go func() {
		first <- kv.Batch(func(tx kvTx) error {
			close(started)
			<-release
			return tx.Bucket(bucketGroups).Put([]byte("first"), []byte("1"))
		})
	}()
	waitQueued := func(n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			kv.comb.mu.Lock()
			q := len(kv.comb.queue)
			kv.comb.mu.Unlock()
			if q == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d writers queued, want %d", q, n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	<-started
	var mu sync.Mutex
	txs := map[string]kvTx{}
	runs := map[string]int{}
	errRefused := errors.New("refused")
	results := make(map[string]chan error)
	for _, name := range []string{"a", "b", "c"} {
		results[name] = make(chan error, 1)
		go func() {
			results[name] <- kv.Batch(func(tx kvTx) error {
				mu.Lock()
				txs[name] = tx
				runs[name]++
				mu.Unlock()
				if name == "b" {
					return errRefused
				}
				return tx.Bucket(bucketGroups).Put([]byte(name), []byte(name))
			})
		}()
		// In this order, so that b fails between a and c.
		waitQueued(len(results))
	}
	free()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]error{"a": nil, "b": errRefused, "c": nil} {
		if err := <-results[name]; !errors.Is(err, want) || (want == nil && err != nil) {
			t.Errorf("writer %s: %v, want %v", name, err, want)
		}
	}
	// a ran twice (with b, then again after b's failure), b twice (in the
	// batch, then alone for its own result), c once, with a the second
	// time: a and c's last transaction is one.
	if runs["a"] != 2 || runs["c"] != 1 || runs["b"] != 2 {
		t.Errorf("runs %v", runs)
	}
	if txs["a"] != txs["c"] {
		t.Error("a and c did not commit in one transaction")
	}
	err := db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketGroups)
		for k, want := range map[string]string{"first": "1", "a": "a", "c": "c", "b": ""} {
			if got := string(b.Get([]byte(k))); got != want {
				return fmt.Errorf("%s = %q, want %q", k, got, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	// Idle again: a lone writer commits on its own.
	if err := kv.Batch(func(tx kvTx) error { return tx.Bucket(bucketGroups).Put([]byte("lone"), []byte("x")) }); err != nil {
		t.Fatal(err)
	}
	kv.comb.mu.Lock()
	busy, q := kv.comb.busy, len(kv.comb.queue)
	kv.comb.mu.Unlock()
	if busy || q != 0 {
		t.Errorf("after the writes: busy %v, %d queued", busy, q)
	}
}

// Many concurrent writers: every write lands once and every writer hears
// back.
func TestCombinerManyWriters(t *testing.T) {
	db, kv := openBoltKV(t)
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	for w := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				key := fmt.Sprintf("w%d-%d", w, i)
				errs <- kv.Batch(func(tx kvTx) error {
					if i == 7 {
						return errors.New(key)
					}
					return tx.Bucket(bucketGroups).Put([]byte(key), []byte("v"))
				})
			}
		}()
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			failed++
		}
	}
	if failed != 20 {
		t.Errorf("%d writes failed, want 20", failed)
	}
	n := 0
	db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketGroups).ForEach(func(k, v []byte) error { n++; return nil })
	})
	if n != 380 {
		t.Errorf("%d keys stored, want 380", n)
	}
}

// openBoltKV is a migrated bbolt database and the store's kv layer over it.
func openBoltKV(t *testing.T) (*bolt.DB, *boltKV) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "kv.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := migrate(db); err != nil {
		t.Fatal(err)
	}
	return db, &boltKV{db: db}
}

// A writer whose function panics gets an error; the others in its batch
// commit, and later writers are not stranded.
func TestCombinerPanic(t *testing.T) {
	db, kv := openBoltKV(t)
	errs := make(chan error, 3)
	for i, name := range []string{"x", "boom", "y"} {
		go func() {
			errs <- kv.Batch(func(tx kvTx) error {
				if i == 1 {
					panic("boom")
				}
				return tx.Bucket(bucketGroups).Put([]byte(name), []byte("v"))
			})
		}()
	}
	panicked := 0
	for range 3 {
		select {
		case err := <-errs:
			if err != nil {
				if !strings.Contains(err.Error(), "write panicked: boom") {
					t.Errorf("error %v", err)
				}
				panicked++
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a writer did not hear back")
		}
	}
	if panicked != 1 {
		t.Errorf("%d writers failed, want 1", panicked)
	}
	if err := kv.Batch(func(tx kvTx) error { return tx.Bucket(bucketGroups).Put([]byte("after"), []byte("v")) }); err != nil {
		t.Fatal(err)
	}
	db.View(func(tx *bolt.Tx) error {
		for _, k := range []string{"x", "y", "after"} {
			if tx.Bucket(bucketGroups).Get([]byte(k)) == nil {
				t.Errorf("%s not stored", k)
			}
		}
		return nil
	})
}
