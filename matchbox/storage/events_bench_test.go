package storage_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/storage"
)

// BenchmarkRecordEvents writes batches of 1,000 events of distinct
// machines, as a boot storm of a large fleet does, into an inventory that
// keeps growing.
func BenchmarkRecordEvents(b *testing.B) {
	db, err := storage.OpenBolt(filepath.Join(b.TempDir(), "m.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	batch := make([]matchbox.Event, 1000)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		for i := range batch {
			n++
			batch[i] = matchbox.Event{Time: time.Unix(int64(n), 0), MAC: fmt.Sprintf("52:54:00:%02x:%02x:%02x", byte(n>>16), byte(n>>8), byte(n)),
				Kind: matchbox.EventHTTPServed, File: "/metadata", IP: "10.0.0.5", Group: "node", Profile: "p1", Arch: "x86_64"}
		}
		if _, err := db.RecordEvents(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/event")
}
