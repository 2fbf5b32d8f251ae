package matchbox

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkSnapshotBuild10k is the catalog's part of reloading the
// database's 10,000 groups, as every write through the admin API does:
// the groups (frozen, as the store hands them out) compiled into the
// source and the snapshot rebuilt. Most groups select a MAC, every tenth
// an os and a rack; one is the default group.
func BenchmarkSnapshotBuild10k(b *testing.B) {
	groups := []*Group{{ID: "default", Profile: "install"}}
	for i := 1; i < 10_000; i++ {
		sel := map[string]string{"mac": fmt.Sprintf("52:54:00:00:%02x:%02x", byte(i>>8), byte(i))}
		if i%10 == 0 {
			sel = map[string]string{"os": "flatcar", "rack": fmt.Sprintf("r%d", i)}
		}
		groups = append(groups, &Group{ID: fmt.Sprintf("node%06d", i), Profile: "flatcar", Selector: sel,
			Metadata: map[string]any{"hostname": fmt.Sprintf("node%d", i)}})
	}
	for _, g := range groups {
		g.Origin = "db"
		g.Freeze()
	}
	objs := Objects{
		Groups:   groups,
		Profiles: []*Profile{{ID: "install", Origin: "db"}, {ID: "flatcar", Origin: "db"}},
	}
	c := NewCatalog("db")
	ctx := context.Background()
	if probs := c.Update(ctx, "db", objs).Problems(); len(probs) != 0 {
		b.Fatalf("problems: %v", probs)
	}
	b.ReportAllocs()
	for b.Loop() {
		c.Update(ctx, "db", objs)
	}
}
