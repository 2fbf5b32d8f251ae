package storage_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/storage"
)

func openBolt(t *testing.T, path string) *storage.DB {
	t.Helper()
	db, err := storage.OpenBolt(path)
	if err != nil {
		t.Fatalf("OpenBolt: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// rawBolt opens the database file directly, for the layout checks.
func rawBolt(t *testing.T, path string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("bolt.Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestBoltSchemaVersionWritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "matchbox.db")
	if err := openBolt(t, path).Close(); err != nil {
		t.Fatal(err)
	}
	db := rawBolt(t, path)
	err := db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket([]byte("meta"))
		if meta == nil {
			return errors.New("no meta bucket")
		}
		if got, want := string(meta.Get([]byte("schema_version"))), strconv.Itoa(storage.SchemaVersion); got != want {
			t.Errorf("meta/schema_version = %q, want %q", got, want)
		}
		for _, b := range []string{"groups", "profiles", "templates", "machines"} {
			if tx.Bucket([]byte(b)) == nil {
				t.Errorf("bucket %q missing", b)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestBoltSchemaVersionRefused(t *testing.T) {
	tests := []struct {
		name    string
		version string
		errHas  []string
	}{
		{"newer", "99", []string{"newer", "99", strconv.Itoa(storage.SchemaVersion)}},
		{"next", strconv.Itoa(storage.SchemaVersion + 1), []string{"newer"}},
		{"corrupt", "one", []string{"corrupt schema version", `"one"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "matchbox.db")
			raw, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = raw.Update(func(tx *bolt.Tx) error {
				meta, err := tx.CreateBucket([]byte("meta"))
				if err != nil {
					return err
				}
				return meta.Put([]byte("schema_version"), []byte(tt.version))
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := raw.Close(); err != nil {
				t.Fatal(err)
			}

			db, err := storage.OpenBolt(path)
			if err == nil {
				db.Close()
				t.Fatalf("OpenBolt of a database with schema version %q succeeded", tt.version)
			}
			for _, s := range append(tt.errHas, path) {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			// The refused database is left as it was and not left locked.
			raw = rawBolt(t, path)
			err = raw.View(func(tx *bolt.Tx) error {
				if got := string(tx.Bucket([]byte("meta")).Get([]byte("schema_version"))); got != tt.version {
					t.Errorf("schema_version after the refused open = %q, want %q", got, tt.version)
				}
				if tx.Bucket([]byte("groups")) != nil {
					t.Error("the refused open created the groups bucket")
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestBoltMigratesVersionZero opens a database written before the schema
// was versioned: its data is kept and the version recorded.
func TestBoltMigratesVersionZero(t *testing.T) {
	path := filepath.Join(t.TempDir(), "matchbox.db")
	raw, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = raw.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("groups"))
		if err != nil {
			return err
		}
		return b.Put([]byte("old"), []byte(`{"id": "old", "profile": "p"}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	raw.Close()

	db := openBolt(t, path)
	g, _, err := db.GroupVersion(t.Context(), "old")
	if err != nil {
		t.Fatalf("GroupVersion(old) after migration: %v", err)
	}
	if g.Profile != "p" {
		t.Errorf("migrated group = %+v, want profile p", g)
	}
	if _, err := db.PutProfileIf(t.Context(), &matchbox.Profile{ID: "p"}, matchbox.Condition{}); err != nil {
		t.Errorf("PutProfileIf after migration: %v", err)
	}
	db.Close()
	err = rawBolt(t, path).View(func(tx *bolt.Tx) error {
		if got := string(tx.Bucket([]byte("meta")).Get([]byte("schema_version"))); got != strconv.Itoa(storage.SchemaVersion) {
			t.Errorf("schema_version after migration = %q, want %d", got, storage.SchemaVersion)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestBoltLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "matchbox.db")
	first := openBolt(t, path)

	type result struct {
		db  *storage.DB
		err error
	}
	done := make(chan result, 1)
	go func() {
		db, err := storage.OpenBolt(path)
		done <- result{db, err}
	}()
	select {
	case r := <-done:
		if r.err == nil {
			r.db.Close()
			t.Fatal("second OpenBolt of a database in use succeeded")
		}
		if !strings.Contains(r.err.Error(), "locked") || !strings.Contains(r.err.Error(), path) {
			t.Errorf("error %q does not say that %s is locked", r.err, path)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("second OpenBolt of a database in use still blocked after 15s")
	}

	// Once released, the database opens again.
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	openBolt(t, path)
}

func TestBoltCorruptRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "matchbox.db")
	db := openBolt(t, path)
	if _, err := db.PutGroupIf(t.Context(), &matchbox.Group{ID: "good", Profile: "p"}, matchbox.Condition{}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	raw := rawBolt(t, path)
	if err := raw.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("groups")).Put([]byte("broken"), []byte(`{"id": `))
	}); err != nil {
		t.Fatal(err)
	}
	raw.Close()

	db = openBolt(t, path)
	if _, err := db.Objects(t.Context()); err == nil || !strings.Contains(err.Error(), "broken") {
		t.Errorf("Objects with a corrupt record: error = %v, want one naming the record", err)
	}
	if _, _, err := db.GroupVersion(t.Context(), "broken"); err == nil || errors.Is(err, matchbox.ErrNotFound) {
		t.Errorf("GroupVersion of a corrupt record: error = %v, want a decode error, not not-found", err)
	}
	if _, _, err := db.GroupVersion(t.Context(), "good"); err != nil {
		t.Errorf("GroupVersion of a good record next to a corrupt one: %v", err)
	}
}

// boltChildEnv, when set, makes TestBoltKill9Child the writer process of
// TestBoltKill9, writing to the database file it names.
const boltChildEnv = "MATCHBOX_TEST_BOLT_KILL9_DB"

// TestBoltKill9 kills a process writing to the database with SIGKILL and
// checks that every write it acknowledged survived and that the database
// is intact.
func TestBoltKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	path := filepath.Join(t.TempDir(), "matchbox.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestBoltKill9Child$", "-test.count=1")
	cmd.Env = append(os.Environ(), boltChildEnv+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })

	const enough = 200
	var acked []string
	killed := false
	// Every line is read, including those still in the pipe after the
	// kill: each was written after its PutGroupIf returned.
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		id, ok := strings.CutPrefix(sc.Text(), "ack ")
		if !ok {
			continue
		}
		acked = append(acked, id)
		if len(acked) >= enough && !killed {
			if err := cmd.Process.Kill(); err != nil {
				t.Fatalf("kill: %v", err)
			}
			killed = true
		}
	}
	waitErr := cmd.Wait()
	if !killed {
		t.Fatalf("writer exited after %d acknowledged writes, before it could be killed: %v\n%s", len(acked), waitErr, stderr.Bytes())
	}
	var exitErr *exec.ExitError
	if !errors.As(waitErr, &exitErr) || exitErr.ExitCode() != -1 {
		t.Fatalf("writer ended with %v, want killed by a signal\n%s", waitErr, stderr.Bytes())
	}
	t.Logf("%d writes acknowledged before SIGKILL", len(acked))

	// bbolt's own consistency check over every page.
	raw, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("bolt.Open after SIGKILL: %v", err)
	}
	err = raw.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			t.Errorf("consistency check: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.Close(); err != nil {
		t.Fatal(err)
	}

	db := openBolt(t, path)
	ctx := t.Context()
	objs, err := db.Objects(ctx)
	if err != nil {
		t.Fatalf("Objects after SIGKILL: %v", err)
	}
	got := make(map[string]*matchbox.Group, len(objs.Groups))
	for _, g := range objs.Groups {
		got[g.ID] = g
	}
	for i, id := range acked {
		g, ok := got[id]
		if !ok {
			t.Errorf("acknowledged group %s (write %d of %d) is missing", id, i+1, len(acked))
			continue
		}
		if want := killGroup(i); g.Profile != want.Profile || selectorValue(g, "mac") != strings.ToLower(strings.ReplaceAll(want.Selector["mac"], "-", ":")) {
			t.Errorf("acknowledged group %s = %+v, want %+v", id, g, want)
		}
	}
	// Writes are sequential: besides the acknowledged ones, at most the
	// write in flight when the process died may have landed.
	if n := len(objs.Groups); n > len(acked)+1 {
		t.Errorf("%d groups in the database, want at most %d (acknowledged + one in flight)", n, len(acked)+1)
	}
	if _, err := db.PutGroupIf(ctx, &matchbox.Group{ID: "after", Profile: "p"}, matchbox.Condition{}); err != nil {
		t.Errorf("PutGroupIf after recovery: %v", err)
	}
}

// killGroup is the i-th group the writer process puts; its metadata makes
// records of varied size so that pages fill and split.
func killGroup(i int) *matchbox.Group {
	return &matchbox.Group{
		ID:       fmt.Sprintf("g%06d", i),
		Profile:  fmt.Sprintf("profile-%d", i%7),
		Selector: map[string]string{"mac": fmt.Sprintf("02-00-00-%02X-%02X-%02X", i>>16&0xff, i>>8&0xff, i&0xff)},
		Metadata: map[string]any{"i": float64(i), "pad": strings.Repeat("x", 64+(i*37)%2000)},
	}
}

// TestBoltKill9Child is the writer process of TestBoltKill9; it does
// nothing in a normal test run.
func TestBoltKill9Child(t *testing.T) {
	path := os.Getenv(boltChildEnv)
	if path == "" {
		t.Skip("helper process for TestBoltKill9")
	}
	db, err := storage.OpenBolt(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	ctx := context.Background()
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; i < 100000 && time.Now().Before(deadline); i++ {
		g := killGroup(i)
		if _, err := db.PutGroupIf(ctx, g, matchbox.Condition{}); err != nil {
			fmt.Fprintln(os.Stderr, "put:", err)
			os.Exit(3)
		}
		// Acknowledge only after PutGroupIf returned. os.Stdout is
		// unbuffered: the line is in the pipe when Fprintf returns.
		fmt.Fprintf(os.Stdout, "ack %s\n", g.ID)
	}
	os.Exit(0)
}

func TestMigrateV2Events(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		meta, _ := tx.CreateBucketIfNotExists([]byte("meta"))
		if err := meta.Put([]byte("schema_version"), []byte("2")); err != nil {
			return err
		}
		ev, _ := tx.CreateBucketIfNotExists([]byte("events"))
		_, err := ev.CreateBucket([]byte("52:54:00:00:00:01"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	b, err := storage.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	db, err = bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.View(func(tx *bolt.Tx) error {
		if tx.Bucket([]byte("events")) != nil || tx.Bucket([]byte("history")) == nil {
			t.Error("schema 2 events bucket not migrated to history")
		}
		if v := tx.Bucket([]byte("meta")).Get([]byte("schema_version")); string(v) != strconv.Itoa(storage.SchemaVersion) {
			t.Errorf("schema version %s", v)
		}
		return nil
	})
}

func selectorValue(g *matchbox.Group, key string) string {
	v, _ := g.SelectorValue(key)
	return v
}
