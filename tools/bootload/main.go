// Command bootload measures matchbox under load on this machine: it
// generates a data dir with N groups, starts a matchbox binary on it
// (loopback only), records start-up time and memory, and drives the boot
// endpoints with a bounded closed-loop load, printing throughput and
// latency percentiles.
//
// The load comes from wrk (Debian package wrk) when it is installed, or
// from a Go client built in: wrk needs about a third of the CPU the Go
// client does per request, and on a two-core machine the load generator
// shares the cores with the server, so wrk measures more of the server.
// -load go or -load wrk chooses.
//
//	go build -o /tmp/matchbox ./cmd/matchbox
//	go run ./tools/bootload -matchbox /tmp/matchbox -groups 10,1000,100000 -duration 5s
//
// The server runs as the README starts it (its database inside the data
// dir, info logging, the admin API on): what users run is what is
// measured. -server-flags adds flags for a run beside it (say
// "-log-level error"); the server's log goes to a file whose size is
// reported, since logging is part of the cost.
//
// Every request goes to 127.0.0.1; every loop is bounded by -duration.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	bin := flag.String("matchbox", "", "matchbox binary to run (required)")
	sizes := flag.String("groups", "10,1000,100000", "comma-separated group counts")
	dur := flag.Duration("duration", 5*time.Second, "load duration per endpoint")
	conc := flag.Int("concurrency", 32, "concurrent client connections")
	endpoints := flag.String("endpoints", "ipxe,metadata,ignition-cached,ignition-new", "endpoints to load (also update-storm and update: Flatcar update checks, see update.go)")
	keep := flag.String("keep", "", "keep the generated data dirs under this folder")
	machines := flag.Int("machines", 100_000, "distinct machines the requests come from, whatever the group count (those without a group of their own get the default group)")
	flag.DurationVar(&stormWindow, "storm-window", time.Minute, "update-storm: the time over which every machine checks once")
	rate := flag.Int("rate", 5_000, "after each saturating run, also measure latency at this fixed request rate per second (0: off)")
	loader := flag.String("load", "auto", `load generator: "wrk", "go" (built in) or "auto" (wrk when on PATH)`)
	extra := flag.String("server-flags", "", `flags added to the README's "matchbox serve" command line, space-separated (default: none, the README's defaults)`)
	flag.Parse()
	switch *loader {
	case "auto":
		if _, err := exec.LookPath("wrk"); err == nil {
			*loader = "wrk"
		} else {
			*loader = "go"
		}
	case "go", "wrk":
	default:
		fmt.Fprintf(os.Stderr, "bootload: -load %q: want wrk, go or auto\n", *loader)
		os.Exit(2)
	}
	useWrk = *loader == "wrk"
	if *machines < 1 {
		fmt.Fprintln(os.Stderr, "bootload: -machines must be at least 1")
		os.Exit(2)
	}
	numMachines = *machines
	fixedRate = *rate
	serverFlags = strings.Fields(*extra)
	fmt.Printf("load generator: %s, %d connections; server flags: %s\n", *loader, *conc, orDefaults(*extra))
	if *bin == "" {
		fmt.Fprintln(os.Stderr, "bootload: -matchbox is required")
		os.Exit(2)
	}
	fmt.Printf("%-8s %-16s %10s %9s %9s %9s %7s\n", "groups", "endpoint", "req/s", "p50", "p99", "max", "errors")
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "bootload: bad group count %q\n", s)
			os.Exit(2)
		}
		if err := runSize(*bin, n, *dur, *conc, strings.Split(*endpoints, ","), *keep); err != nil {
			fmt.Fprintln(os.Stderr, "bootload:", err)
			os.Exit(1)
		}
	}
}

// serverFlags are added to the README's command line (-server-flags).
var serverFlags []string

func orDefaults(s string) string {
	if strings.TrimSpace(s) == "" {
		return "none (the README's defaults)"
	}
	return s
}

func mac(i int) string {
	return fmt.Sprintf("52:54:%02x:%02x:%02x:%02x", byte(i>>24), byte(i>>16), byte(i>>8), byte(i))
}

const butane = `variant: flatcar
version: 1.1.0
passwd:
  users:
    - name: core
      ssh_authorized_keys:
        - {{.ssh_key}}
storage:
  files:
    - path: /etc/hostname
      mode: 0644
      contents:
        inline: {{.hostname}}
    - path: /etc/matchbox/node.env
      contents:
        inline: |
          MAC={{.request.query.mac}}
          RACK={{.rack}}
          SEQ={{.request.query.seq}}
systemd:
  units:
    - name: node-agent.service
      enabled: true
      contents: |
        [Unit]
        Description=Node agent
        [Service]
        ExecStart=/usr/bin/sleep infinity
        [Install]
        WantedBy=multi-user.target
`

// generate writes a data dir with n groups selected by MAC (plus a default
// group), ten profiles and one Butane template.
func generate(dir string, n int) error {
	for _, d := range []string{"groups", "profiles", "ignition"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	for p := range 10 {
		prof := map[string]any{
			"id": fmt.Sprintf("p%d", p), "ignition_id": "node.yaml",
			"boot": map[string]any{
				"kernel": "/assets/flatcar/stable/amd64-usr/current/flatcar_production_pxe.vmlinuz",
				"initrd": []string{"--name main /assets/flatcar/stable/amd64-usr/current/flatcar_production_pxe_image.cpio.gz"},
				"args":   []string{"initrd=main", "flatcar.first_boot=yes", "ignition.config.url=http://{{.request.host}}/ignition?uuid=${uuid}&mac=${mac:hexhyp}", "console=ttyS0,115200n8"},
			},
		}
		if err := writeJSON(filepath.Join(dir, "profiles", fmt.Sprintf("p%d.json", p)), prof); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "ignition", "node.yaml"), []byte(butane), 0o644); err != nil {
		return err
	}
	meta := func(i int) map[string]any {
		return map[string]any{"hostname": fmt.Sprintf("node%d", i), "rack": fmt.Sprintf("r%d", i%40), "ssh_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIbootload load@test", "port": 10250}
	}
	for i := range n - 1 {
		g := map[string]any{"id": fmt.Sprintf("node%d", i), "profile": fmt.Sprintf("p%d", i%10),
			"selector": map[string]string{"mac": mac(i)}, "metadata": meta(i)}
		if err := writeJSON(filepath.Join(dir, "groups", fmt.Sprintf("node%d.json", i)), g); err != nil {
			return err
		}
	}
	// Groups with other selectors, so the index holds more than MACs.
	for r := range 40 {
		g := map[string]any{"id": fmt.Sprintf("rack%d-installed", r), "profile": "p1",
			"selector": map[string]string{"rack": fmt.Sprintf("r%d", r), "os": "installed"}, "metadata": meta(-1)}
		if err := writeJSON(filepath.Join(dir, "groups", fmt.Sprintf("rack%d-installed.json", r)), g); err != nil {
			return err
		}
	}
	return writeJSON(filepath.Join(dir, "groups", "default.json"), map[string]any{"id": "default", "profile": "p0", "metadata": meta(-1)})
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// useWrk selects wrk as the load generator.
var useWrk bool

// sources is the number of loopback addresses drive's workers connect
// from (0 or 1: the default one).
var sources int

// numMachines is the number of distinct machines requests come from.
var numMachines int

// fixedRate is the request rate of the latency runs (0: none).
var fixedRate int

// rss describes a process's resident memory from /proc/PID/status: the
// total, the anonymous part (Go heap, stacks, runtime) and the
// file-backed part (the binary and the database pages mapped by bbolt,
// which the kernel can reclaim).
func countLines(path string) int {
	f, err := os.Open(path)
	if err != nil {
		return -1
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		n++
	}
	return n
}

func rss(pid int) string {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	mb := map[string]float64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
		if err == nil {
			mb[k] = float64(kb) / 1024
		}
	}
	return fmt.Sprintf("%.0f MB (anonymous %.0f MB, file-backed %.0f MB)", mb["VmRSS"], mb["RssAnon"], mb["RssFile"])
}

func runSize(bin string, n int, dur time.Duration, conc int, endpoints []string, keep string) error {
	base := keep
	if base == "" {
		tmp, err := os.MkdirTemp("", "bootload")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		base = tmp
	}
	dir := filepath.Join(base, fmt.Sprintf("groups-%d", n))
	if _, err := os.Stat(dir); err != nil {
		if err := generate(dir, n); err != nil {
			return err
		}
	}
	addr, err := freePort()
	if err != nil {
		return err
	}
	// As the README runs it: the database, token and secret key are
	// created in the data dir (fresh for every run), the admin API
	// listens (on a free port here), logging is at info.
	for _, f := range []string{"matchbox.db", "admin.token", "secret.key"} {
		os.Remove(filepath.Join(dir, f))
	}
	apiAddr, err := freePort()
	if err != nil {
		return err
	}
	assets := ""
	if wantsUpdates(endpoints) {
		// A release to update to, and the machines in the inventory.
		if assets, err = prepareUpdates(base, dir, numMachines); err != nil {
			return err
		}
	}
	args := append([]string{"serve", "-address", addr, "-data-path", dir, "-assets-path", assets, "-api-address", apiAddr}, serverFlags...)
	logPath := filepath.Join(base, fmt.Sprintf("server-%d.log", n))
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer func() {
		if st, err := logFile.Stat(); err == nil {
			fmt.Printf("%-8d %-16s log %s: %d bytes, %d lines\n", n, "(server)", logPath, st.Size(), countLines(logPath))
		}
		logFile.Close()
	}()
	cmd := exec.Command(bin, args...)
	cmd.Stderr = logFile
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	url := "http://" + addr
	var startup time.Duration
	for {
		if resp, err := http.Get(url + "/readyz"); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				startup = time.Since(start)
				break
			}
		}
		if time.Since(start) > 60*time.Second {
			return errors.New("server not ready within 60s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	fmt.Printf("%-8d %-16s start-up %v, RSS %s\n", n, "(server)", startup.Round(time.Millisecond), rss(cmd.Process.Pid))
	// The same request stream at every group count: only the number of
	// groups differs between the rows (the inventory records every
	// machine either way).
	macs := numMachines
	for _, ep := range endpoints {
		var pathFor func(r *rand.Rand, i int) string
		var luaPath string // the same paths as a Lua expression for wrk
		switch ep {
		case "ipxe":
			pathFor = func(r *rand.Rand, _ int) string { return "/ipxe?mac=" + mac(r.IntN(macs)) + "&uuid=x&arch=x86_64" }
			luaPath = fmt.Sprintf(`"/ipxe?mac=" .. mac(math.random(0, %d)) .. "&uuid=x&arch=x86_64"`, macs-1)
		case "metadata":
			pathFor = func(r *rand.Rand, _ int) string { return "/metadata?mac=" + mac(r.IntN(macs)) }
			luaPath = fmt.Sprintf(`"/metadata?mac=" .. mac(math.random(0, %d))`, macs-1)
		case "ignition-cached":
			// A working set of up to 1000 machines, rendered once before the
			// measurement so every Butane text was translated before.
			set := min(macs, 1000)
			for i := range set {
				if err := getOK(http.DefaultClient, url+"/ignition?seq=0&mac="+mac(i)); err != nil {
					return err
				}
			}
			pathFor = func(r *rand.Rand, _ int) string { return "/ignition?seq=0&mac=" + mac(r.IntN(set)) }
			luaPath = fmt.Sprintf(`"/ignition?seq=0&mac=" .. mac(math.random(0, %d))`, set-1)
		case "update-storm", "update":
			run := runStorm
			if ep == "update" {
				run = func(n int, url, apiURL, dir string, conc, machines int) error {
					return runUpToDate(n, url, apiURL, dir, conc, dur, machines)
				}
			}
			if err := run(n, url, "http://"+apiAddr, dir, conc, macs); err != nil {
				return err
			}
			continue
		case "ignition-new":
			var seq atomic.Int64
			pathFor = func(r *rand.Rand, _ int) string {
				return fmt.Sprintf("/ignition?seq=%d&mac=%s", seq.Add(1), mac(r.IntN(macs)))
			}
			luaPath = fmt.Sprintf(`"/ignition?seq=" .. nextSeq() .. "&mac=" .. mac(math.random(0, %d))`, macs-1)
		default:
			return fmt.Errorf("unknown endpoint %q", ep)
		}
		var res result
		if useWrk {
			if res, err = loadWrk(url, conc, dur, luaPath); err != nil {
				return err
			}
		} else {
			res = load(conc, dur, getPath(url, pathFor))
		}
		fmt.Printf("%-8d %-16s %10.0f %9v %9v %9v %7d\n", n, ep, res.rate, res.p50, res.p99, res.max, res.errors)
		if fixedRate > 0 && ep != "ignition-new" {
			// Let the server finish what the saturating run left behind
			// (inventory writes, a collection) before measuring latency.
			time.Sleep(3 * time.Second)
			res := loadAtRate(conc, dur, fixedRate, getPath(url, pathFor))
			fmt.Printf("%-8d %-16s %10.0f %9v %9v %9v %7d\n", n, fmt.Sprintf("%s@%d/s", ep, fixedRate), res.rate, res.p50, res.p99, res.max, res.errors)
		}
	}
	fmt.Printf("%-8d %-16s RSS after load %s\n", n, "(server)", rss(cmd.Process.Pid))
	return nil
}

func getOK(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

type result struct {
	rate          float64
	p50, p99, max time.Duration
	errors        int64
}

// load runs conc workers for dur, each on its own keep-alive connection,
// each sending its next request as soon as the last one is answered.
func load(conc int, dur time.Duration, send sender) result {
	end := time.Now().Add(dur)
	var next atomic.Int64
	return drive(conc, 42, send, func() (int, time.Time, bool) {
		now := time.Now()
		return int(next.Add(1) - 1), now, now.Before(end)
	})
}

// sender sends request i (r: the worker's randomness) over c and says
// whether it was answered as it should be.
type sender func(c *http.Client, r *rand.Rand, i int) error

// getPath is the sender of GET requests of the paths pathFor makes.
func getPath(url string, pathFor func(*rand.Rand, int) string) sender {
	return func(c *http.Client, r *rand.Rand, i int) error { return getOK(c, url+pathFor(r, i)) }
}

// drive runs conc workers, each on its own keep-alive connection, sending
// requests as next hands them out (their number and when each is due)
// until it says stop, and measures each from when it was due.
func drive(conc int, seed uint64, send sender, next func() (int, time.Time, bool)) result {
	var mu sync.Mutex
	var all []time.Duration
	var errs atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}
			if sources > 1 {
				// Machines come from many addresses: worker w from
				// 127.0.0.(2 + w%sources), within the server's
				// connections-per-address limit.
				d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+w%sources))}}
				tr.DialContext = d.DialContext
			}
			client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			// Closed when done: connections left idle would count against
			// the server's per-address connection limit in the next run.
			defer client.CloseIdleConnections()
			r := rand.New(rand.NewPCG(uint64(w), seed))
			lat := make([]time.Duration, 0, 1<<12)
			for {
				i, due, ok := next()
				if !ok {
					break
				}
				if d := time.Until(due); d > 0 {
					time.Sleep(d)
				}
				if err := send(client, r, i); err != nil {
					errs.Add(1)
					continue
				}
				lat = append(lat, time.Since(due))
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return summarize(all, errs.Load(), time.Since(start))
}

// summarize turns latencies into a result.
func summarize(all []time.Duration, errs int64, elapsed time.Duration) result {
	slices.Sort(all)
	res := result{errors: errs}
	if len(all) > 0 {
		res.rate = float64(len(all)) / elapsed.Seconds()
		res.p50 = all[len(all)/2].Round(time.Microsecond)
		res.p99 = all[len(all)*99/100].Round(time.Microsecond)
		res.max = all[len(all)-1].Round(time.Microsecond)
	}
	return res
}

// loadAtRate sends requests at a fixed rate for dur (open loop: request i
// is due at start + i/rate whether or not earlier ones have finished) over
// conc keep-alive connections, and measures each latency from the moment
// the request was due, so time spent waiting for a free connection counts.
func loadAtRate(conc int, dur time.Duration, rate int, send sender) result {
	total := int64(dur.Seconds() * float64(rate))
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	var next atomic.Int64
	return drive(conc, 7, send, func() (int, time.Time, bool) {
		i := next.Add(1) - 1
		return int(i), start.Add(time.Duration(i) * interval), i < total
	})
}

// wrkScript is the request generator for wrk (LuaJIT, so no bit
// operators): mac(i) spells machine i as the generated groups do.
const wrkScript = `
math.randomseed(os.time())
local counter = 0
function mac(i)
  return string.format("52:54:%%02x:%%02x:%%02x:%%02x", math.floor(i / 16777216) %% 256,
    math.floor(i / 65536) %% 256, math.floor(i / 256) %% 256, i %% 256)
end
function nextSeq()
  counter = counter + 1
  return counter
end
request = function()
  return wrk.format("GET", %s)
end
`

// loadWrk runs wrk (one thread, conc connections) for dur with requests
// from luaPath and parses its report.
func loadWrk(url string, conc int, dur time.Duration, luaPath string) (result, error) {
	return runWrk(url, conc, dur, fmt.Sprintf(wrkScript, luaPath))
}

// runWrk runs wrk (one thread, conc connections) for dur with a Lua
// script and parses its report.
func runWrk(url string, conc int, dur time.Duration, script string) (result, error) {
	f, err := os.CreateTemp("", "bootload-*.lua")
	if err != nil {
		return result{}, err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(script); err != nil {
		return result{}, err
	}
	f.Close()
	secs := max(1, int(dur.Round(time.Second)/time.Second))
	out, err := exec.Command("wrk", "-t1", "-c"+strconv.Itoa(conc), "-d"+strconv.Itoa(secs)+"s", "--latency", "-s", f.Name(), url).CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("wrk: %v\n%s", err, out)
	}
	return parseWrk(string(out))
}

// parseWrk reads throughput, p50/p99/max latency and errors from wrk's
// report.
func parseWrk(out string) (result, error) {
	var res result
	found := false
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 4 && f[0] == "Latency":
			res.max, _ = time.ParseDuration(f[3])
		case len(f) == 2 && f[0] == "50%":
			res.p50, _ = time.ParseDuration(f[1])
		case len(f) == 2 && f[0] == "99%":
			res.p99, _ = time.ParseDuration(f[1])
		case len(f) == 2 && f[0] == "Requests/sec:":
			res.rate, _ = strconv.ParseFloat(f[1], 64)
			found = true
		case strings.HasPrefix(strings.TrimSpace(line), "Non-2xx or 3xx responses:"):
			n, _ := strconv.ParseInt(f[len(f)-1], 10, 64)
			res.errors += n
		case len(f) > 2 && f[0] == "Socket" && f[1] == "errors:":
			for _, part := range strings.Split(strings.Join(f[2:], " "), ",") {
				kv := strings.Fields(part)
				if len(kv) == 2 {
					n, _ := strconv.ParseInt(kv[1], 10, 64)
					res.errors += n
				}
			}
		}
	}
	if !found {
		return res, fmt.Errorf("no Requests/sec in wrk's output:\n%s", out)
	}
	return res, nil
}
