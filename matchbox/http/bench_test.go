package http

import (
	"context"
	"fmt"
	nethttp "net/http"
	"net/http/httptest"
	"testing"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/reinstall"
	"matchbox.dev/matchbox/render"
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
