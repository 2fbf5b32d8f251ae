// Package bounded holds a map of bounded size for the state kept per
// machine or per log key: what machines on the network can make grow.
package bounded

// Map is a map of bounded size that keeps what was used lately:
// entries go into recent; when recent is full (or on rotate) it becomes
// older, and what older held is forgotten. An entry found in older moves
// back to recent. Keys are hashes, so that with pointer-free values the
// collector does not scan the maps.
type Map[V any] struct {
	recent, older map[uint64]V
	max           int
}

// New returns an empty Map holding at most about 2*max entries.
func New[V any](max int) Map[V] {
	return Map[V]{recent: make(map[uint64]V), older: make(map[uint64]V), max: max}
}

// Get returns the value of k, moving it back to recent if it was older.
func (g *Map[V]) Get(k uint64) (V, bool) {
	if v, ok := g.recent[k]; ok {
		return v, true
	}
	v, ok := g.older[k]
	if ok {
		delete(g.older, k)
		g.Put(k, v)
	}
	return v, ok
}

// Put sets the value of k, rotating first when recent is full.
func (g *Map[V]) Put(k uint64, v V) {
	if _, ok := g.recent[k]; !ok && len(g.recent) >= g.max {
		g.Rotate()
	}
	g.recent[k] = v
}

// Rotate makes recent older and forgets what older held.
func (g *Map[V]) Rotate() {
	g.older, g.recent = g.recent, make(map[uint64]V, len(g.recent))
}

// Len is how many entries the map holds, in both generations.
func (g *Map[V]) Len() int { return len(g.recent) + len(g.older) }
