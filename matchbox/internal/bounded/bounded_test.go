package bounded

import "testing"

func TestMap(t *testing.T) {
	g := New[int](4)
	for i := range 4 {
		g.Put(uint64(i), i)
	}
	g.Put(4, 4) // recent full: 0-3 move to older
	if len(g.recent) != 1 || len(g.older) != 4 {
		t.Fatalf("recent %v older %v", g.recent, g.older)
	}
	if v, ok := g.Get(1); !ok || v != 1 { // moves back to recent
		t.Fatalf("get(1) = %v, %v", v, ok)
	}
	for i := 5; i < 7; i++ {
		g.Put(uint64(i), i)
	}
	g.Put(7, 7) // recent (4, 1, 5, 6) full: 0, 2 and 3 are forgotten
	for k, want := range map[uint64]bool{0: false, 1: true, 2: false, 3: false, 4: true, 7: true} {
		if _, ok := g.Get(k); ok != want {
			t.Errorf("get(%d) found %v, want %v", k, ok, want)
		}
	}
	for i := range 1000 {
		g.Put(uint64(100+i), i)
		if n := len(g.recent) + len(g.older); n > 8 {
			t.Fatalf("%d entries, bound 8", n)
		}
	}
}
