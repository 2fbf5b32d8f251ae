package render

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"text/template"

	butane "github.com/coreos/butane/config"
	butanecommon "github.com/coreos/butane/config/common"

	"matchbox.dev/matchbox"
)

// benchButane is a realistic Flatcar node config: a user with SSH keys, a
// few files and two systemd units, with per-machine values templated.
const benchButane = `variant: flatcar
version: 1.1.0
passwd:
  users:
    - name: core
      ssh_authorized_keys:
        - {{.ssh_authorized_key}}
        - ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 ops@example.com
      groups: [sudo, docker]
storage:
  files:
    - path: /etc/hostname
      mode: 0644
      overwrite: true
      contents:
        inline: {{.hostname}}
    - path: /etc/systemd/network/00-eth0.network
      mode: 0644
      contents:
        inline: |
          [Match]
          MACAddress={{.request.query.mac}}

          [Network]
          DHCP=yes
          Domains={{.domain}}
    - path: /etc/flatcar/update.conf
      mode: 0420
      overwrite: true
      contents:
        inline: |
          GROUP=stable
          REBOOT_STRATEGY=off
    - path: /opt/bin/node-id
      mode: 0755
      contents:
        inline: |
          #!/bin/sh
          echo {{.request.query.uuid}}
  links:
    - path: /etc/localtime
      target: /usr/share/zoneinfo/UTC
systemd:
  units:
    - name: node-exporter.service
      enabled: true
      contents: |
        [Unit]
        Description=Prometheus node exporter
        After=docker.service
        Requires=docker.service
        [Service]
        ExecStartPre=-/usr/bin/docker rm -f node-exporter
        ExecStart=/usr/bin/docker run --name node-exporter --net=host --pid=host quay.io/prometheus/node-exporter:v1.8.1
        Restart=always
        [Install]
        WantedBy=multi-user.target
    - name: locksmithd.service
      mask: true
    - name: docker.service
      dropins:
        - name: 10-opts.conf
          contents: |
            [Service]
            Environment=DOCKER_OPTS=--log-level=warn
`

func benchGroup() *matchbox.Group {
	return &matchbox.Group{
		ID: "node1", Profile: "flatcar",
		Selector: map[string]string{"mac": "52:54:00:a1:9c:ae"},
		Metadata: map[string]any{
			"ssh_authorized_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0ZXN0a2V5 admin@example.com",
			"hostname":           "node1.lab.example.com",
			"domain":             "lab.example.com",
			"k8s_version":        "v1.30.2",
			"etcd_endpoints":     "https://10.0.0.10:2379,https://10.0.0.11:2379",
			"pod_cidr":           "10.2.0.0/16",
			"service_cidr":       "10.3.0.0/16",
			"max_pods":           110.0,
			"labels":             map[string]any{"rack": "r7", "zone": "a", "gpu": false},
			"taints":             []any{"dedicated=infra:NoSchedule"},
		},
	}
}

func benchRequest() Request {
	return Request{
		Labels: map[string]string{
			"uuid": "8a2b3c4d-0000-1111-2222-333344445555", "mac": "52:54:00:a1:9c:ae",
			"domain": "lab.example.com", "hostname": "node1", "serial": "SN0001", "arch": "x86_64",
		},
		RawQuery: "uuid=8a2b3c4d-0000-1111-2222-333344445555&mac=52-54-00-a1-9c-ae&domain=lab.example.com&hostname=node1&serial=SN0001&arch=x86_64",
		Host:     "matchbox.lab.example.com:8080",
	}
}

func BenchmarkIPXE(b *testing.B) {
	e := NewEngine(Options{})
	p := &matchbox.Profile{ID: "flatcar", Boot: matchbox.Boot{
		Kernel: "/assets/flatcar/current/flatcar_production_pxe.vmlinuz",
		Initrd: []string{"/assets/flatcar/current/flatcar_production_pxe_image.cpio.gz"},
		Args: []string{
			"initrd=flatcar_production_pxe_image.cpio.gz",
			"flatcar.config.url=http://{{.request.host}}/ignition?uuid=${uuid}&mac=${mac:hexhyp}",
			"flatcar.first_boot=yes",
			"hostname={{.hostname}}",
			"console=tty0",
			"console=ttyS0",
		},
	}}
	g := benchGroup()
	sel := matchbox.Selection{Group: g, Profile: p}
	req := benchRequest()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.IPXE(ctx, sel, Data(g, req)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMetadata(b *testing.B) {
	data := Data(benchGroup(), benchRequest())
	b.ReportAllocs()
	for b.Loop() {
		if len(Metadata(data)) == 0 {
			b.Fatal("empty metadata")
		}
	}
}

func benchIgnitionFixture(b *testing.B) (*Engine, *matchbox.Snapshot, matchbox.Selection) {
	b.Helper()
	snap := matchbox.NewSnapshot(matchbox.Objects{
		Profiles:  []*matchbox.Profile{{ID: "flatcar", IgnitionID: "flatcar.yaml"}},
		Templates: []*matchbox.Template{{Kind: matchbox.KindIgnition, Name: "flatcar.yaml", Content: []byte(benchButane)}},
	})
	p, _ := snap.Profile("flatcar")
	return NewEngine(Options{}), snap, matchbox.Selection{Group: benchGroup(), Profile: p}
}

func BenchmarkIgnitionCached(b *testing.B) {
	e, snap, sel := benchIgnitionFixture(b)
	data := Data(sel.Group, benchRequest())
	ctx := context.Background()
	if _, err := e.Ignition(ctx, snap, sel, data); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Ignition(ctx, snap, sel, data); err != nil {
			b.Fatal(err)
		}
	}
	if s := e.Stats(); s.TranslateMisses != 1 {
		b.Fatalf("cached benchmark missed the cache: %+v", s)
	}
}

// BenchmarkIgnitionUncached renders a different hostname every iteration,
// so every render translates. Compare with BenchmarkButaneLibrary.
func BenchmarkIgnitionUncached(b *testing.B) {
	e, snap, sel := benchIgnitionFixture(b)
	req := benchRequest()
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		data := Data(sel.Group, req)
		data["hostname"] = fmt.Sprintf("node%d.lab.example.com", i)
		i++
		if _, err := e.Ignition(ctx, snap, sel, data); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if s := e.Stats(); s.TranslateHits != 0 {
		b.Fatalf("uncached benchmark hit the cache: %+v", s)
	}
}

// BenchmarkButaneLibrary is the butane library's own cost for the config
// BenchmarkIgnitionUncached renders, with a unique hostname per iteration.
func BenchmarkButaneLibrary(b *testing.B) {
	// Render the template once, with a placeholder for the per-iteration
	// hostname.
	data := Data(benchGroup(), benchRequest())
	data["hostname"] = "HOSTNAME-PLACEHOLDER"
	tmpl := template.Must(template.New("flatcar.yaml").Option("missingkey=error").Parse(benchButane))
	var sb strings.Builder
	if err := tmpl.Execute(&sb, data); err != nil {
		b.Fatal(err)
	}
	rendered := sb.String()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		src := strings.Replace(rendered, "HOSTNAME-PLACEHOLDER", fmt.Sprintf("node%d.lab.example.com", i), 1)
		i++
		if _, _, err := butane.TranslateBytes([]byte(src), butanecommon.TranslateBytesOptions{Raw: true}); err != nil {
			b.Fatal(err)
		}
	}
}

// benchLoop is a generic template that loops and calls functions (a
// range, sprig functions and printf): what the limit checks cost shows
// here, not in the templates above, which need none.
const benchLoop = `{{range $i, $n := .nodes}}{{printf "%-12s" $n.name | upper}} {{$n.ip | default "dhcp"}} {{if $n.disks}}{{join "," $n.disks}}{{end}}
{{end}}`

func BenchmarkGenericLoop(b *testing.B) {
	var nodes []any
	for i := range 20 {
		nodes = append(nodes, map[string]any{"name": fmt.Sprintf("node%d", i), "ip": fmt.Sprintf("10.0.0.%d", i), "disks": []any{"sda", "sdb"}})
	}
	g := &matchbox.Group{ID: "rack", Metadata: map[string]any{"nodes": nodes}}
	snap := matchbox.NewSnapshot(matchbox.Objects{
		Profiles:  []*matchbox.Profile{{ID: "p", GenericID: "loop.tmpl"}},
		Templates: []*matchbox.Template{{Kind: matchbox.KindGeneric, Name: "loop.tmpl", Content: []byte(benchLoop)}},
	})
	p, _ := snap.Profile("p")
	e, sel, ctx := NewEngine(Options{}), matchbox.Selection{Group: g, Profile: p}, context.Background()
	data := Data(g, benchRequest())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Template(ctx, snap, sel, matchbox.KindGeneric, data); err != nil {
			b.Fatal(err)
		}
	}
}
