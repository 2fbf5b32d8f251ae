package http

import (
	"bytes"
	"context"
	"fmt"
	nethttp "net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/omaha/omahatest"
	"matchbox.dev/matchbox/reinstall"
	"matchbox.dev/matchbox/render"
	"matchbox.dev/matchbox/storage"
	"matchbox.dev/matchbox/update"
)

// benchCatalog holds n groups selected by MAC (ten profiles, one Butane
// template), as a fleet of n machines would.
func benchCatalog(n int) *matchbox.Catalog {
	objs := matchbox.Objects{
		Templates: []*matchbox.Template{{Kind: matchbox.KindIgnition, Name: "node.yaml", Content: []byte(butaneOK)}},
	}
	for p := range 10 {
		objs.Profiles = append(objs.Profiles, &matchbox.Profile{
			ID: fmt.Sprintf("p%d", p), IgnitionID: "node.yaml",
			Boot: matchbox.Boot{
				Kernel: "/assets/flatcar/stable/amd64-usr/current/flatcar_production_pxe.vmlinuz",
				Initrd: []string{"--name main /assets/flatcar/stable/amd64-usr/current/flatcar_production_pxe_image.cpio.gz"},
				Args:   []string{"initrd=main", "flatcar.first_boot=yes", "ignition.config.url=http://{{.request.host}}/ignition?uuid=${uuid}&mac=${mac:hexhyp}"},
			},
		})
	}
	for i := range n {
		objs.Groups = append(objs.Groups, &matchbox.Group{
			ID: fmt.Sprintf("node%d", i), Profile: fmt.Sprintf("p%d", i%10),
			Selector: map[string]string{"mac": benchMAC(i)},
			Metadata: map[string]any{"ssh_key": "ssh-ed25519 AAAA bench", "hostname": fmt.Sprintf("node%d", i), "port": 10250.0},
		})
		objs.Groups[i].Freeze() // as the data dir and the database hand them out
	}
	cat := matchbox.NewCatalog("bench")
	cat.Update(context.Background(), "bench", objs)
	return cat
}

func benchMAC(i int) string {
	return fmt.Sprintf("52:54:%02x:%02x:%02x:%02x", byte(i>>24), byte(i>>16), byte(i>>8), byte(i))
}

// BenchmarkServe measures a whole boot request through the handler (query
// parsing, selection, rendering, metrics), without the network, at 10,
// 1,000 and 100,000 groups. The cost per request must stay flat.
func BenchmarkServe(b *testing.B) {
	// As served: the reinstall gate is asked on every request (here with
	// one other machine being reinstalled).
	lc := reinstall.New(reinstall.Config{Store: benchWorkflows{{MAC: "52:54:00:ff:ff:ff", State: matchbox.StateBooting, Profile: "p", Token: "t", Generation: 1}}})
	if err := lc.Load(context.Background()); err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{10, 1000, 100000} {
		srv := New(Config{Catalog: benchCatalog(n), Engine: render.NewEngine(render.Options{}), Lifecycle: lc})
		h := srv.Handler()
		for _, ep := range []string{"ipxe", "metadata", "ignition"} {
			b.Run(fmt.Sprintf("%s/groups=%d", ep, n), func(b *testing.B) {
				// Warm the translation cache for the machines used.
				urls := make([]string, 64)
				for i := range urls {
					urls[i] = fmt.Sprintf("/%s?mac=%s&uuid=u&arch=x86_64", ep, benchMAC((i*7919)%n))
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, httptest.NewRequest("GET", urls[i], nil))
					if rec.Code != 200 {
						b.Fatalf("%s: %d %s", urls[i], rec.Code, rec.Body)
					}
				}
				reqs := make([]*nethttp.Request, len(urls))
				for i, u := range urls {
					reqs[i] = httptest.NewRequest("GET", u, nil)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, reqs[i%len(reqs)])
				}
			})
		}
	}
}

// benchWorkflows is a fixed set of stored workflows.
type benchWorkflows []matchbox.Workflow

func (w benchWorkflows) Workflow(_ context.Context, mac string) (matchbox.Workflow, error) {
	for _, f := range w {
		if f.MAC == mac {
			return f, nil
		}
	}
	return matchbox.Workflow{}, matchbox.ErrNotFound
}

func (w benchWorkflows) Workflows(context.Context) ([]matchbox.Workflow, error) { return w, nil }

func (w benchWorkflows) SwapWorkflow(context.Context, uint64, matchbox.Workflow) error {
	return matchbox.ErrPrecondition
}

// BenchmarkUpdateCheck measures an update check of an up-to-date machine
// through the handler, at 100,000 machines known to the inventory and to
// the update service: linked by its alias, its record read, no write.
func BenchmarkUpdateCheck(b *testing.B) {
	ctx := context.Background()
	const fleet = 100_000
	st := storage.NewMemory()
	events := make([]matchbox.Event, 0, fleet)
	for i := range fleet {
		events = append(events, matchbox.Event{MAC: benchMAC(i), Kind: matchbox.EventDHCPAck, IP: "10.0.0.1"})
	}
	if _, err := st.RecordEvents(ctx, events); err != nil {
		b.Fatal(err)
	}
	svc := update.New(st, releases{})
	if err := svc.EnsureDefaultGroups(ctx); err != nil {
		b.Fatal(err)
	}
	if err := svc.SetPaused(ctx, "stable", false, ""); err != nil {
		b.Fatal(err)
	}
	srv := New(Config{Catalog: matchbox.NewCatalog(), Updates: svc, UpdatePayloads: releases{}, Registry: prometheus.NewRegistry()})
	h := srv.Handler()
	bodies := make([]string, fleet)
	for i := range bodies {
		m := omahatest.Machine{Version: "4081.2.0", Track: "stable", MachineID: fmt.Sprintf("%032x", i), Alias: benchMAC(i)}
		bodies[i] = omahatest.Request(m, omahatest.Check(""))
		// The first check records the machine's version; the next ones
		// write nothing.
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", "/v1/update/", strings.NewReader(bodies[i])))
		if rec.Code != 200 || !strings.Contains(rec.Body.String(), "noupdate") {
			b.Fatalf("check %d: %d %s", i, rec.Code, rec.Body)
		}
	}
	before, err := st.Records(ctx, "update-machine")
	if err != nil || len(before) != fleet {
		b.Fatalf("%d update records (%v), want %d", len(before), err, fleet)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", "/v1/update/", strings.NewReader(bodies[(i*7919)%fleet])))
	}
	b.StopTimer()
	// Checks of up-to-date machines wrote nothing.
	after, err := st.Records(ctx, "update-machine")
	if err != nil || !slices.EqualFunc(before, after, func(x, y matchbox.Record) bool { return x.Key == y.Key && bytes.Equal(x.Value, y.Value) }) {
		b.Fatalf("update records changed by checks of up-to-date machines (%v)", err)
	}
}
