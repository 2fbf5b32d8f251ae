package main

// The update endpoints: update checks as Flatcar's update_engine sends
// them, from machines the inventory knows (seeded into the database before
// the server starts), against a release "mirrored" in the assets folder.
//
//	update-storm  every machine, running an old release, checks once within
//	              -storm-window (open loop, in a random order) while the
//	              stable group limits the rollout; every check must be
//	              answered, and no more grants made than the limits allow
//	update        machines running the newest release check as fast as the
//	              server answers (after one pass that records each
//	              machine's version): a check then costs no store write

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/omaha/omahatest"
	"matchbox.dev/matchbox/release"
	"matchbox.dev/matchbox/storage"
)

const (
	oldVersion = "3815.2.0"
	newVersion = "4081.2.0"
)

// stormWindow is how long the storm takes (-storm-window).
var stormWindow time.Duration

// The storm's connections: stormConns at once, from stormSources
// loopback addresses (the server takes 64 per address by default).
const (
	stormConns   = 256
	stormSources = 8
)

// stormLimits are the limits of the stable group during the storm.
const (
	stormMaxInFlight  = 500
	stormMaxPerPeriod = 2000
)

func wantsUpdates(endpoints []string) bool {
	for _, ep := range endpoints {
		if strings.HasPrefix(ep, "update") {
			return true
		}
	}
	return false
}

// prepareUpdates writes, under base, an assets folder holding release
// newVersion of stable/amd64-usr with an OS payload (the mirror's layout;
// what a pull verified), and seeds the data dir's database with machines
// 0..machines-1 in the inventory, as if each had booted once. It returns
// the assets folder.
func prepareUpdates(base, dataDir string, machines int) (string, error) {
	assets := filepath.Join(base, "assets")
	dir := filepath.Join(assets, "flatcar", "stable", "amd64-usr", newVersion)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	payload := bytes.Repeat([]byte("bootload update payload\n"), 4096)
	if err := os.WriteFile(filepath.Join(dir, release.UpdatePayloadName), payload, 0o644); err != nil {
		return "", err
	}
	s1, s256 := sha1.Sum(payload), sha256.Sum256(payload)
	list := map[string]any{"payloads": []release.Payload{{Name: release.UpdatePayloadName, PayloadInfo: release.PayloadInfo{Size: int64(len(payload)), SHA1: s1[:], SHA256: s256[:]}}}}
	if err := writeJSON(filepath.Join(dir, "payloads.json"), list); err != nil {
		return "", err
	}
	db, err := storage.OpenBolt(filepath.Join(dataDir, "matchbox.db"))
	if err != nil {
		return "", err
	}
	defer db.Close()
	const batch = 5000
	for from := 0; from < machines; from += batch {
		events := make([]matchbox.Event, 0, batch)
		for i := from; i < min(from+batch, machines); i++ {
			events = append(events, matchbox.Event{Time: time.Now(), MAC: mac(i), Kind: matchbox.EventDHCPAck, IP: "10.0.0.1"})
		}
		if _, err := db.RecordEvents(context.Background(), events); err != nil {
			return "", err
		}
	}
	return assets, nil
}

// checkBody is machine i's update check, running version.
func checkBody(i int, version string) string {
	return omahatest.Request(omahatest.Machine{Version: version, Track: "stable", MachineID: machineID(i), Alias: mac(i)}, omahatest.Check(""))
}

func machineID(i int) string { return fmt.Sprintf("%032x", i) }

// postCheck sends an update check and reports whether it was granted.
func postCheck(c *http.Client, url, body string) (bool, error) {
	resp, err := c.Post(url+"/v1/update/", "text/xml", strings.NewReader(body))
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return false, err
	}
	if resp.StatusCode != 200 {
		return false, fmt.Errorf("update check: %s %s", resp.Status, raw)
	}
	a, err := omahatest.ReadAnswer(raw)
	if err != nil {
		return false, err
	}
	switch a.Status {
	case "ok":
		return true, nil
	case "noupdate":
		return false, nil
	}
	return false, fmt.Errorf("update check answered %q", a.Status)
}

// api calls the admin API with the token the server wrote.
func api(apiURL, dataDir, method, path string, in, out any) error {
	token, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		return err
	}
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, apiURL+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s %s", method, path, resp.Status, raw)
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

type groupStatus struct {
	Rollout struct {
		InFlight int `json:"in_flight"`
		InPeriod int `json:"in_period"`
		Granted  int `json:"granted"`
	} `json:"rollout"`
	Machines []struct {
		Version string         `json:"version"`
		States  map[string]int `json:"states"`
	} `json:"machines"`
	Total int `json:"total"`
}

func stableStatus(apiURL, dataDir string) (groupStatus, error) {
	var out struct {
		Items []groupStatus `json:"items"`
	}
	if err := api(apiURL, dataDir, "GET", "/api/v1/update-status?group=stable", nil, &out); err != nil {
		return groupStatus{}, err
	}
	if len(out.Items) != 1 {
		return groupStatus{}, fmt.Errorf("update status: %d groups", len(out.Items))
	}
	return out.Items[0], nil
}

// runStorm: every machine checks once, in a random order, at the rate
// that spreads them over stormWindow, while the stable group allows
// stormMaxInFlight in flight and stormMaxPerPeriod per hour.
func runStorm(n int, url, apiURL, dataDir string, conc, machines int) error {
	group := map[string]any{"name": "stable", "channel": "stable", "version": "newest", "match": map[string]string{"kind": "track"},
		"policy": map[string]any{"max_in_flight": stormMaxInFlight, "max_per_period": stormMaxPerPeriod, "period": int64(time.Hour)}}
	if err := api(apiURL, dataDir, "PUT", "/api/v1/update-groups/stable", group, nil); err != nil {
		return err
	}
	order := rand.Perm(machines)
	// As many connections as the machines of a storm would open at
	// once, from several addresses.
	sources = stormSources
	defer func() { sources = 0 }()
	rate := max(1, int(float64(machines)/stormWindow.Seconds()))
	var granted, answered atomic.Int64
	start := time.Now()
	res := loadAtRateN(stormConns, machines, rate, func(c *http.Client, _ *rand.Rand, i int) error {
		ok, err := postCheck(c, url, checkBody(order[i], oldVersion))
		if err != nil {
			return err
		}
		answered.Add(1)
		if ok {
			granted.Add(1)
		}
		return nil
	})
	took := time.Since(start)
	fmt.Printf("%-8d %-16s %10.0f %9v %9v %9v %7d  %d machines in %v, %d granted (limit %d)\n", n, "update-storm", res.rate, res.p50, res.p99, res.max, res.errors,
		answered.Load(), took.Round(time.Second), granted.Load(), stormMaxInFlight)
	st, err := stableStatus(apiURL, dataDir)
	if err != nil {
		return err
	}
	fmt.Printf("%-8d %-16s rollout: %d in flight, %d granted in the period, %d machines recorded\n", n, "(storm status)", st.Rollout.InFlight, st.Rollout.InPeriod, st.Total)
	var problems []string
	if res.errors != 0 || answered.Load() != int64(machines) {
		problems = append(problems, fmt.Sprintf("%d of %d checks answered, %d errors", answered.Load(), machines, res.errors))
	}
	if g := granted.Load(); g != stormMaxInFlight {
		problems = append(problems, fmt.Sprintf("%d grants, want exactly the limit %d", g, stormMaxInFlight))
	}
	if st.Rollout.InFlight != stormMaxInFlight || st.Rollout.InPeriod > stormMaxPerPeriod || st.Total != machines {
		problems = append(problems, fmt.Sprintf("status: %+v", st.Rollout))
	}
	if took > stormWindow+stormWindow/10 {
		problems = append(problems, fmt.Sprintf("took %v, more than the %v window", took.Round(time.Second), stormWindow))
	}
	if len(problems) > 0 {
		return errors.New("update storm: " + strings.Join(problems, "; "))
	}
	return nil
}

// loadAtRateN is loadAtRate for a count of requests rather than a
// duration.
func loadAtRateN(conc, total, rate int, send sender) result {
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	var next atomic.Int64
	return drive(conc, 11, send, func() (int, time.Time, bool) {
		i := next.Add(1) - 1
		return int(i), start.Add(time.Duration(i) * interval), i < int64(total)
	})
}

// runUpToDate: after one pass in which every machine reports running
// newVersion (recorded once), checks of random machines as fast as the
// server answers, then at the fixed rate.
func runUpToDate(n int, url, apiURL, dataDir string, conc int, dur time.Duration, machines int) error {
	// Resume without limits (the storm may have set them): what is
	// measured is the answer to machines already up to date.
	group := map[string]any{"name": "stable", "channel": "stable", "version": "newest", "match": map[string]string{"kind": "track"}}
	if err := api(apiURL, dataDir, "PUT", "/api/v1/update-groups/stable", group, nil); err != nil {
		return err
	}
	var next atomic.Int64
	sources = stormSources
	warm := drive(stormConns, 3, func(c *http.Client, _ *rand.Rand, i int) error {
		ok, err := postCheck(c, url, checkBody(i, newVersion))
		if err == nil && ok {
			err = errors.New("an up-to-date machine was offered an update")
		}
		return err
	}, func() (int, time.Time, bool) {
		i := next.Add(1) - 1
		return int(i), time.Now(), i < int64(machines)
	})
	sources = 0
	fmt.Printf("%-8d %-16s %10.0f %9v %9v %9v %7d  (each machine's first check: its version recorded)\n", n, "update-first", warm.rate, warm.p50, warm.p99, warm.max, warm.errors)
	if warm.errors != 0 {
		return fmt.Errorf("update: %d errors in the first pass", warm.errors)
	}
	send := func(c *http.Client, r *rand.Rand, _ int) error {
		ok, err := postCheck(c, url, checkBody(r.IntN(machines), newVersion))
		if err == nil && ok {
			err = errors.New("an up-to-date machine was offered an update")
		}
		return err
	}
	var res result
	var err error
	if useWrk {
		if res, err = loadWrkUpdate(url, conc, dur, machines); err != nil {
			return err
		}
	} else {
		res = load(conc, dur, send)
	}
	fmt.Printf("%-8d %-16s %10.0f %9v %9v %9v %7d\n", n, "update", res.rate, res.p50, res.p99, res.max, res.errors)
	if fixedRate > 0 {
		time.Sleep(3 * time.Second)
		res := loadAtRate(conc, dur, fixedRate, send)
		fmt.Printf("%-8d %-16s %10.0f %9v %9v %9v %7d\n", n, fmt.Sprintf("update@%d/s", fixedRate), res.rate, res.p50, res.p99, res.max, res.errors)
	}
	st, err := stableStatus(apiURL, dataDir)
	if err != nil {
		return err
	}
	for _, v := range st.Machines {
		if v.Version == newVersion && v.States["idle"]+v.States["complete"] != machines {
			return fmt.Errorf("update: status after the run: %+v", st.Machines)
		}
	}
	return nil
}

// wrkUpdateScript posts machine i's update check (an up-to-date one) for
// random i; the request is the Go client's, cut where the machine id and
// alias go.
const wrkUpdateScript = `
math.randomseed(os.time())
local p1, p2, p3 = [==[%s]==], [==[%s]==], [==[%s]==]
local headers = {["Content-Type"] = "text/xml"}
function mac(i)
  return string.format("52:54:%%02x:%%02x:%%02x:%%02x", math.floor(i / 16777216) %% 256,
    math.floor(i / 65536) %% 256, math.floor(i / 256) %% 256, i %% 256)
end
request = function()
  local i = math.random(0, %d)
  return wrk.format("POST", "/v1/update/", headers, p1 .. string.format("%%032x", i) .. p2 .. mac(i) .. p3)
end
`

func loadWrkUpdate(url string, conc int, dur time.Duration, machines int) (result, error) {
	// Cut a request at its machine id and alias.
	body := omahatest.Request(omahatest.Machine{Version: newVersion, Track: "stable", MachineID: "@ID@", Alias: "@ALIAS@"}, omahatest.Check(""))
	p1, rest, ok1 := strings.Cut(body, "@ID@")
	p2, p3, ok2 := strings.Cut(rest, "@ALIAS@")
	if !ok1 || !ok2 {
		return result{}, errors.New("update request template: machine id or alias not found")
	}
	return runWrk(url, conc, dur, fmt.Sprintf(wrkUpdateScript, p1, p2, p3, machines-1))
}
