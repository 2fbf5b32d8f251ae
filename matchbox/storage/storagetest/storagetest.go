package storagetest

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/storage"
)

// Harness creates the store under test.
type Harness struct {
	// Open returns a new, empty store without a secret key; a t.Cleanup
	// registered by Open closes it.
	Open func(t *testing.T) storage.Store
	// Reopen simulates a restart: it closes the store last opened with
	// the same t and opens a new one over the same storage. Nil when the
	// store does not persist.
	Reopen func(t *testing.T) storage.Store
	// Replica opens another store over the storage of the one last
	// opened with the same t, both in use at once, as two servers share
	// a database. Nil when the backend cannot be shared.
	Replica func(t *testing.T) storage.Store
	// Raw returns every byte the storage of the store last opened with
	// the same t holds, to check what is kept in the clear.
	Raw func(t *testing.T) []byte
}

// Run runs the conformance suite against the store h creates.
func Run(t *testing.T, h Harness) {
	t.Run("Read", func(t *testing.T) { RunSource(t, h.source()) })
	t.Run("Objects", func(t *testing.T) { runObjects(t, h) })
	t.Run("Tokens", func(t *testing.T) { runTokens(t, h) })
	t.Run("Machines", func(t *testing.T) { runMachines(t, h) })
	t.Run("Events", func(t *testing.T) { runEvents(t, h) })
	t.Run("Leases", func(t *testing.T) { runLeases(t, h) })
	t.Run("Workflows", func(t *testing.T) { runWorkflows(t, h) })
	t.Run("BMC", func(t *testing.T) { runBMC(t, h) })
	t.Run("Records", func(t *testing.T) { runRecords(t, h) })
	t.Run("Reopen", func(t *testing.T) {
		if h.Reopen == nil {
			t.Skip("store does not persist")
		}
		runReopen(t, h)
	})
	t.Run("Concurrency", func(t *testing.T) { runConcurrency(t, h) })
	t.Run("Changes", func(t *testing.T) { runChanges(t, h) })
}

// source reads the stores h opens as Sources, seeded through the
// conditional writes.
func (h Harness) source() SourceHarness {
	sh := SourceHarness{Open: func(t *testing.T, objs matchbox.Objects) Source {
		s := h.Open(t)
		put(t, s, objs)
		return storeSource{s}
	}}
	if h.Reopen != nil {
		sh.Reopen = func(t *testing.T) Source { return storeSource{h.Reopen(t)} }
	}
	return sh
}

// storeSource is a Store read as a Source.
type storeSource struct{ storage.Store }

func (s storeSource) GetGroup(ctx context.Context, id string) (*matchbox.Group, error) {
	g, _, err := s.GroupVersion(ctx, id)
	return g, err
}

func (s storeSource) GetProfile(ctx context.Context, id string) (*matchbox.Profile, error) {
	p, _, err := s.ProfileVersion(ctx, id)
	return p, err
}

func (s storeSource) GetTemplate(ctx context.Context, kind matchbox.TemplateKind, name string) (*matchbox.Template, error) {
	tm, _, err := s.TemplateVersion(ctx, kind, name)
	return tm, err
}

// put writes objs unconditionally.
func put(t *testing.T, s storage.Store, objs matchbox.Objects) {
	t.Helper()
	ctx := t.Context()
	for _, g := range objs.Groups {
		if _, err := s.PutGroupIf(ctx, g, matchbox.Condition{}); err != nil {
			t.Fatalf("PutGroupIf(%s): %v", g.ID, err)
		}
	}
	for _, p := range objs.Profiles {
		if _, err := s.PutProfileIf(ctx, p, matchbox.Condition{}); err != nil {
			t.Fatalf("PutProfileIf(%s): %v", p.ID, err)
		}
	}
	for _, tm := range objs.Templates {
		if _, err := s.PutTemplateIf(ctx, tm, matchbox.Condition{}); err != nil {
			t.Fatalf("PutTemplateIf(%s, %s): %v", tm.Kind, tm.Name, err)
		}
	}
}

// newKey returns a new random secret key.
func newKey(t *testing.T) *storage.SecretKey {
	t.Helper()
	b := make([]byte, 32)
	rand.Read(b)
	k, err := storage.NewSecretKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// openKeyed opens a store holding a secret key.
func openKeyed(t *testing.T, h Harness) (storage.Store, *storage.SecretKey) {
	t.Helper()
	s := h.Open(t)
	key := newKey(t)
	s.SetSecretKey(key)
	return s, key
}

// stores returns s and, when the backend can be shared, a replica of it:
// the concurrency cases spread their writers over both.
func stores(t *testing.T, h Harness, s storage.Store) []storage.Store {
	if h.Replica == nil {
		return []storage.Store{s}
	}
	return []storage.Store{s, h.Replica(t)}
}

// waitFor bounds every wait for something a store must do: it is a
// deadline for a hung store, not a measure of speed.
const waitFor = 30 * time.Second

// mac returns the i-th test machine's MAC address.
func mac(i int) string {
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", byte(i>>16), byte(i>>8), byte(i))
}
