package storage_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/storage"
)

// BenchmarkCollectLoaded measures what a loaded data dir costs the garbage
// collector: one full collection (runtime.GC, both phases, all cores) with
// the configuration of n groups held as the server holds it (the data
// dir's entries and the catalog's snapshot and index). A large fleet pays
// this on every collection under load, so it shows up in tail latency.
func BenchmarkCollectLoaded(b *testing.B) {
	for _, n := range []int{10, 1000, 100000} {
		b.Run(fmt.Sprintf("groups=%d", n), func(b *testing.B) {
			dir := b.TempDir()
			for _, sub := range []string{"groups", "profiles"} {
				if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
					b.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(dir, "profiles", "p0.json"), []byte(`{"id":"p0","boot":{"kernel":"/k"}}`), 0o644); err != nil {
				b.Fatal(err)
			}
			for i := range n {
				doc := fmt.Sprintf(`{"id":"node%d","profile":"p0","selector":{"mac":"52:54:%02x:%02x:%02x:%02x"},"metadata":{"hostname":"node-%d","port":10250,"rack":"r-%d","ssh_key":"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIbench bench@test"}}`,
					i, byte(i>>24), byte(i>>16), byte(i>>8), byte(i), i, i%40)
				if err := os.WriteFile(filepath.Join(dir, "groups", fmt.Sprintf("node%d.json", i)), []byte(doc), 0o644); err != nil {
					b.Fatal(err)
				}
			}
			d := storage.NewDataDir(dir, nil)
			objs, err := d.Load(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			c := matchbox.NewCatalog("datadir")
			c.Update(context.Background(), "datadir", objs)
			objs = matchbox.Objects{}
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			b.ResetTimer()
			for b.Loop() {
				runtime.GC()
			}
			b.StopTimer()
			// After the loop: ResetTimer drops reported metrics.
			b.ReportMetric(float64(ms.HeapAlloc)/float64(n), "live-B/group")
			b.ReportMetric(float64(ms.HeapObjects)/float64(n), "objects/group")
			if _, err := c.Snapshot().Select(map[string]string{"mac": "52:54:00:00:00:01"}); err != nil {
				b.Fatal(err)
			}
			runtime.KeepAlive(d)
		})
	}
}
