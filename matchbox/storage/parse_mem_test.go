package storage

import (
	"fmt"
	"runtime"
	"testing"
)

// BenchmarkGroupMemory reports the live heap a parsed group costs, the
// bulk of a large fleet's resident memory (and of what the collector
// scans on every cycle).
func BenchmarkGroupMemory(b *testing.B) {
	const n = 20000
	files := make([][]byte, n)
	for i := range files {
		files[i] = fmt.Appendf(nil, `{"id":"node%d","metadata":{"hostname":"node%d","port":10250,"rack":"r%d","ssh_key":"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIbootload load@test"},"profile":"p%d","selector":{"mac":"52:54:00:00:%02x:%02x"}}`, i, i, i%20, i%10, byte(i>>8), byte(i))
	}
	var perGroup float64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		groups := make([]string, n)
		for i, f := range files {
			g, _, err := ParseGroup(f)
			if err != nil {
				b.Fatal(err)
			}
			g.Origin = fmt.Sprintf("/var/lib/matchbox/groups/node%d.json", i)
			g.Freeze()
			groups[i] = g.Packed() // as the data dir and the catalog hold them
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perGroup = float64(after.HeapAlloc-before.HeapAlloc) / n
		runtime.KeepAlive(groups)
	}
	b.ReportMetric(perGroup, "live-B/group")
}
