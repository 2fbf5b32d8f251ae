package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/api"
	"matchbox.dev/matchbox/update"
)

const machineUsage = `  matchbox machine list [-group G] [-profile P] [-label K=V] [-seen-within D] [-limit N]
  matchbox machine get MAC | events MAC [-follow] | preview MAC [K=V ...]
  matchbox machine label MAC [K=V ...] | delete MAC
  matchbox machine bmc set MAC -address HOST[:PORT] [-provider ipmitool|redfish|…] [-username U] [-password-file F]
        [-tls-fingerprint SHA256 | -tls-insecure-skip-verify]
  matchbox machine bmc get MAC | bmc delete MAC
  matchbox machine power MAC on|off|soft|reset|status
  matchbox machine bootdev MAC pxe|disk [-efi]
  matchbox machine reinstall MAC [MAC ...] [-profile P] [-force] [-efi=true|false] [-concurrency N] [-wait]
  matchbox machine cancel MAC
`

// machineCLI runs `matchbox machine VERB …`.
func machineCLI(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cf := newCLIFlags("matchbox machine", stderr)
	group := fs.String("group", "", "only machines last given this group")
	profile := fs.String("profile", "", "only machines last given this profile")
	seen := fs.String("seen-within", "", "only machines seen within this duration (e.g. 24h)")
	limit := fs.Int("limit", 0, "at most this many machines (default: all)")
	var labels multiFlag
	fs.Var(&labels, "label", "only machines with this label K=V (repeatable)")
	follow := fs.Bool("follow", false, "events: keep printing new events until interrupted")
	interval := fs.Duration("interval", 2*time.Second, "events -follow: how often to ask")
	bmcAddress := fs.String("address", "", "bmc set: BMC address, HOST or HOST:PORT")
	bmcProvider := fs.String("provider", "", "bmc set: preferred provider (ipmitool, redfish, …)")
	bmcUser := fs.String("username", "", "bmc set: BMC user name")
	bmcPasswordFile := fs.String("password-file", "", "bmc set: file holding the BMC password (- for standard input); omit to keep the stored one (same address, provider, user and TLS settings only)")
	bmcFingerprint := fs.String("tls-fingerprint", "", "bmc set: SHA-256 fingerprint of the BMC's TLS certificate, the only one then accepted")
	bmcInsecure := fs.Bool("tls-insecure-skip-verify", false, "bmc set: do not verify the BMC's TLS certificate (anyone on the path can take the password)")
	force := fs.Bool("force", false, "reinstall: restart a reinstall already in progress")
	wait := fs.Bool("wait", false, "reinstall: follow the reinstall until it is active or failed")
	concurrency := fs.Int("concurrency", 0, "reinstall: at most this many of the machines named in flight at once (0: the server's limit)")
	var efi optBool
	fs.Var(&efi, "efi", "reinstall, bootdev: UEFI network boot (reinstall default: from the machine's last boot firmware)")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage:\n"+machineUsage+"\n"+cliUsage[strings.Index(cliUsage, "Connection"):])
	}
	verb, pos, c, err := startCLI(fs, cf, args)
	if err != nil {
		return err
	}
	for flag, name := range map[string]string{"-group": *group, "-profile": *profile} {
		if name != "" {
			if err := matchbox.CheckName(flag, name); err != nil {
				return err
			}
		}
	}
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return fmt.Errorf("-label %q: want K=V", l)
		}
		if err := matchbox.CheckLabel("-label", k, v); err != nil {
			return err
		}
	}
	machinePath := func(mac string) string { return "/api/v1/machines/" + url.PathEscape(mac) }
	switch {
	case verb == "list" && len(pos) == 0:
		q := url.Values{}
		for k, v := range map[string]string{"group": *group, "profile": *profile, "seen_within": *seen} {
			if v != "" {
				q.Set(k, v)
			}
		}
		for _, l := range labels {
			q.Add("label", l)
		}
		var all []matchbox.Machine
		for {
			page := 10_000
			if *limit > 0 {
				page = min(page, *limit-len(all))
			}
			q.Set("limit", fmt.Sprint(page))
			var out struct {
				Items []matchbox.Machine `json:"items"`
				Next  string             `json:"next"`
			}
			if _, err := c.do(ctx, "GET", "/api/v1/machines?"+q.Encode(), nil, &out); err != nil {
				return fmt.Errorf("list machines: %w", err)
			}
			all = append(all, out.Items...)
			if out.Next == "" || (*limit > 0 && len(all) >= *limit) {
				break
			}
			q.Set("after", out.Next)
		}
		if cf.output == "json" {
			return printJSON(stdout, all)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "MAC\tLAST IP\tARCH\tGROUP\tPROFILE\tLAST SEEN")
		for _, m := range all {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", cell(m.MAC), cell(m.LastIP), cell(m.Arch), cell(m.Group), cell(m.Profile), ago(m.LastSeen))
		}
		return tw.Flush()
	case verb == "get" && len(pos) == 1:
		var out struct {
			Machine  matchbox.Machine   `json:"machine"`
			BMC      *api.BMCView       `json:"bmc,omitempty"`
			Events   []matchbox.Event   `json:"events"`
			Workflow *matchbox.Workflow `json:"workflow,omitempty"`
			State    string             `json:"state,omitempty"`
			Reason   string             `json:"reason,omitempty"`
			Update   *update.Machine    `json:"update,omitempty"`
		}
		if _, err := c.do(ctx, "GET", machinePath(pos[0]), nil, &out); err != nil {
			return fmt.Errorf("get machine %s: %w", matchbox.Printable(pos[0]), err)
		}
		if cf.output != "table" {
			return printJSON(stdout, out)
		}
		m := out.Machine
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		for _, kv := range [][2]string{{"MAC", cell(m.MAC)}, {"UUID", cell(m.UUID)}, {"Arch", cell(m.Arch)}, {"Last IP", cell(m.LastIP)},
			{"Group", cell(m.Group)}, {"Profile", cell(m.Profile)}, {"First seen", timeText(m.FirstSeen)}, {"Last seen", timeText(m.LastSeen)},
			{"Labels", orDash(labelText(m.Labels))}, {"BMC", bmcText(out.BMC)}, {"Events", strconv.Itoa(len(out.Events))}} {
			fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
		}
		if u := out.Update; u != nil {
			fmt.Fprintf(tw, "OS version:\t%s\n", orDash(matchbox.EscapeLine(u.Version)))
			fmt.Fprintf(tw, "Update:\t%s\n", updateText(u))
		}
		if w := out.Workflow; w != nil {
			fmt.Fprintf(tw, "Reinstall:\t%s (profile %s, attempt %d, since %s)\n", cell(w.State), cell(w.Profile), w.Attempt, w.Entered.Format(time.RFC3339))
			if w.Reason != "" {
				fmt.Fprintf(tw, "Reason:\t%s\n", matchbox.EscapeLine(w.Reason))
			}
		}
		return tw.Flush()
	case verb == "events" && len(pos) == 1:
		var last time.Time
		for {
			path := machinePath(pos[0]) + "/events"
			if !last.IsZero() {
				path += "?since=" + url.QueryEscape(last.Format(time.RFC3339Nano))
			}
			var out struct {
				Items []matchbox.Event `json:"items"`
			}
			if _, err := c.do(ctx, "GET", path, nil, &out); err != nil {
				return fmt.Errorf("events of machine %s: %w", matchbox.Printable(pos[0]), err)
			}
			for _, e := range out.Items {
				printEvent(stdout, e, cf.output == "json")
				if e.Time.After(last) {
					last = e.Time
				}
			}
			if !*follow {
				return nil
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(*interval):
			}
		}
	case verb == "preview" && len(pos) >= 1:
		q := url.Values{}
		for _, kv := range pos[1:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return fmt.Errorf("preview: %q is not K=V", kv)
			}
			if err := matchbox.CheckLabel("label", k, v); err != nil {
				return fmt.Errorf("preview: %w", err)
			}
			q.Set(k, v)
		}
		var out map[string]any
		if _, err := c.do(ctx, "GET", machinePath(pos[0])+"/preview?"+q.Encode(), nil, &out); err != nil {
			return fmt.Errorf("preview machine %s: %w", matchbox.Printable(pos[0]), err)
		}
		return printJSON(stdout, out)
	case verb == "label" && len(pos) >= 1:
		set := map[string]string{}
		for _, kv := range pos[1:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return fmt.Errorf("label: %q is not K=V", kv)
			}
			if err := matchbox.CheckLabel("label", k, v); err != nil {
				return fmt.Errorf("label: %w", err)
			}
			set[k] = v
		}
		if _, err := c.do(ctx, "PUT", machinePath(pos[0])+"/labels", map[string]any{"labels": set}, nil); err != nil {
			return fmt.Errorf("label machine %s: %w", matchbox.Printable(pos[0]), err)
		}
		fmt.Fprintf(stdout, "machine %s labels set: %s\n", matchbox.Printable(pos[0]), orDash(labelText(set)))
		return nil
	case verb == "bmc" && len(pos) == 2 && pos[0] == "set":
		body := map[string]any{"address": *bmcAddress, "provider": *bmcProvider, "username": *bmcUser,
			"tls_fingerprint": *bmcFingerprint, "tls_insecure_skip_verify": *bmcInsecure}
		if *bmcPasswordFile != "" {
			var data []byte
			if *bmcPasswordFile == "-" {
				data, err = io.ReadAll(io.LimitReader(os.Stdin, 4096))
			} else {
				data, err = os.ReadFile(*bmcPasswordFile)
			}
			if err != nil {
				return fmt.Errorf("-password-file: %w", err)
			}
			body["password"] = strings.TrimRight(string(data), "\r\n")
		}
		var out map[string]any
		if _, err := c.do(ctx, "PUT", machinePath(pos[1])+"/bmc", body, &out); err != nil {
			return fmt.Errorf("set BMC of machine %s: %w", pos[1], err)
		}
		fmt.Fprintf(stdout, "machine %s BMC set: %s, password set\n", matchbox.Printable(pos[1]), bmcText(&out))
		return nil
	case verb == "bmc" && len(pos) == 2 && pos[0] == "get":
		var out map[string]any
		if _, err := c.do(ctx, "GET", machinePath(pos[1])+"/bmc", nil, &out); err != nil {
			return fmt.Errorf("BMC of machine %s: %w", pos[1], err)
		}
		return printJSON(stdout, out)
	case verb == "bmc" && len(pos) == 2 && pos[0] == "delete":
		if _, err := c.do(ctx, "DELETE", machinePath(pos[1])+"/bmc", nil, nil); err != nil {
			return fmt.Errorf("delete BMC of machine %s: %w", pos[1], err)
		}
		fmt.Fprintf(stdout, "machine %s BMC settings deleted\n", pos[1])
		return nil
	case verb == "power" && len(pos) == 2 && pos[1] == "status":
		var out struct {
			Power string `json:"power"`
		}
		if _, err := c.do(ctx, "GET", machinePath(pos[0])+"/power", nil, &out); err != nil {
			return fmt.Errorf("power status of machine %s: %w", pos[0], err)
		}
		if cf.output == "json" {
			return printJSON(stdout, out)
		}
		fmt.Fprintf(stdout, "machine %s power: %s\n", matchbox.Printable(pos[0]), cell(out.Power))
		return nil
	case verb == "power" && len(pos) == 2:
		if _, err := c.do(ctx, "POST", machinePath(pos[0])+"/power", map[string]string{"action": pos[1]}, nil); err != nil {
			return fmt.Errorf("power %s machine %s: %w", pos[1], pos[0], err)
		}
		fmt.Fprintf(stdout, "machine %s power %s: done\n", pos[0], pos[1])
		return nil
	case verb == "bootdev" && len(pos) == 2:
		body := map[string]any{"device": pos[1], "efi": efi.set && efi.value}
		if _, err := c.do(ctx, "POST", machinePath(pos[0])+"/bootdev", body, nil); err != nil {
			return fmt.Errorf("boot device of machine %s: %w", pos[0], err)
		}
		fmt.Fprintf(stdout, "machine %s boots from %s next time\n", pos[0], pos[1])
		return nil
	case verb == "reinstall" && len(pos) >= 1:
		body := map[string]any{"macs": pos}
		if *profile != "" {
			body["profile"] = *profile
		}
		if *force {
			body["force"] = true
		}
		if efi.set {
			body["efi"] = efi.value
		}
		if *concurrency > 0 {
			body["concurrency"] = *concurrency
		}
		var out struct {
			Items []matchbox.Workflow `json:"items"`
		}
		if _, err := c.do(ctx, "POST", "/api/v1/reinstalls", body, &out); err != nil {
			return fmt.Errorf("reinstall %s: %w", strings.Join(pos, " "), err)
		}
		if !*wait {
			if cf.output == "json" {
				return printJSON(stdout, out.Items)
			}
			for _, w := range out.Items {
				fmt.Fprintf(stdout, "machine %s: reinstall requested with profile %s (follow it: matchbox machine reinstall … -wait, or machine get %s)\n", cell(w.MAC), cell(w.Profile), cell(w.MAC))
			}
			return nil
		}
		return waitReinstalls(ctx, c, out.Items, *interval, cf.output == "json", stdout)
	case verb == "cancel" && len(pos) == 1:
		var w matchbox.Workflow
		if _, err := c.do(ctx, "POST", machinePath(pos[0])+"/cancel", nil, &w); err != nil {
			return fmt.Errorf("cancel reinstall of machine %s: %w", pos[0], err)
		}
		fmt.Fprintf(stdout, "machine %s: reinstall canceled (%s)\n", cell(w.MAC), matchbox.EscapeLine(w.Reason))
		return nil
	case verb == "delete" && len(pos) == 1:
		if _, err := c.do(ctx, "DELETE", machinePath(pos[0]), nil, nil); err != nil {
			return fmt.Errorf("delete machine %s: %w", pos[0], err)
		}
		fmt.Fprintf(stdout, "machine %s deleted\n", pos[0])
		return nil
	}
	fs.Usage()
	return errUsage
}

// waitReinstalls follows reinstalls until each is active or failed,
// printing every change of state; it fails when any reinstall failed.
func waitReinstalls(ctx context.Context, c *client, flows []matchbox.Workflow, interval time.Duration, asJSON bool, stdout io.Writer) error {
	// shown counts the history steps printed per machine.
	shown := map[string]int{}
	last := map[string]matchbox.Workflow{}
	show := func(w matchbox.Workflow) {
		if len(w.History) < shown[w.MAC] {
			shown[w.MAC] = 0 // restarted (forced) meanwhile
		}
		for _, st := range w.History[shown[w.MAC]:] {
			if asJSON {
				line, _ := json.Marshal(map[string]any{"mac": w.MAC, "state": st.State, "time": st.Time, "reason": st.Reason})
				_, _ = stdout.Write(escapeJSON(append(line, '\n')))
				continue
			}
			line := fmt.Sprintf("%s  %s  %s", st.Time.Local().Format(time.TimeOnly), cell(w.MAC), cell(st.State))
			if st.Reason != "" {
				line += ": " + matchbox.EscapeLine(st.Reason)
			}
			fmt.Fprintln(stdout, line)
		}
		shown[w.MAC] = len(w.History)
		last[w.MAC] = w
	}
	for _, w := range flows {
		show(w)
	}
	// A server restart does not end the wait: reinstalls resume, and so
	// does following them, unless the server stays away.
	var unreachable time.Time
	for {
		pending := 0
		for mac, prev := range last {
			if prev.State.Done() {
				continue
			}
			var w matchbox.Workflow
			if _, err := c.do(ctx, "GET", "/api/v1/machines/"+url.PathEscape(mac)+"/workflow", nil, &w); err != nil {
				var af *apiFailure
				if errors.As(err, &af) || ctx.Err() != nil {
					return fmt.Errorf("follow reinstall of %s: %w", mac, err)
				}
				if unreachable.IsZero() {
					unreachable = time.Now()
					fmt.Fprintf(stdout, "%s  server unreachable, still waiting: %v\n", time.Now().Format(time.TimeOnly), err)
				} else if time.Since(unreachable) > 5*time.Minute {
					return fmt.Errorf("follow reinstall of %s: server unreachable for 5m: %w", mac, err)
				}
				pending++
				continue
			}
			unreachable = time.Time{}
			show(w)
			if !w.State.Done() {
				pending++
			}
		}
		if pending == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
	var failed []string
	for mac, w := range last {
		if w.State == matchbox.StateFailed {
			failed = append(failed, mac+": "+w.Reason)
		}
	}
	if len(failed) > 0 {
		sort.Strings(failed)
		return fmt.Errorf("reinstall failed: %s", strings.Join(failed, "; "))
	}
	return nil
}

// optBool is a boolean flag that knows whether it was given.
type optBool struct{ set, value bool }

func (o *optBool) String() string { return fmt.Sprint(o.value) }
func (o *optBool) Set(v string) error {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return err
	}
	o.set, o.value = true, b
	return nil
}
func (o *optBool) IsBoolFlag() bool { return true }

// bmcText describes BMC settings in one line (never a password: the API
// does not return it).
func bmcText[T any](b *T) string {
	if b == nil {
		return "-"
	}
	data, _ := json.Marshal(b)
	var m map[string]any
	_ = json.Unmarshal(data, &m)
	tlsText := "verified"
	if fp, _ := m["tls_fingerprint"].(string); fp != "" {
		tlsText = "pinned " + cell(fp)
	} else if m["tls_insecure_skip_verify"] == true {
		tlsText = "NOT verified"
	}
	return fmt.Sprintf("%s (provider %s, user %s, TLS certificate %s)", cell(m["address"]), cell(m["provider"]), cell(m["username"]), tlsText)
}

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// orDash is s, or "-" when it is empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func labelText(l map[string]string) string {
	m := make(map[string]any, len(l))
	for k, v := range l {
		m[k] = v
	}
	if len(m) == 0 {
		return ""
	}
	return selectorText(m)
}

// timeText prints a time, or "-" for none (a machine registered by its
// BMC settings has not been seen yet).
func timeText(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(time.RFC3339)
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}

func printEvent(w io.Writer, e matchbox.Event, asJSON bool) {
	if asJSON {
		_ = printJSON(w, e)
		return
	}
	parts := []string{e.Time.Format(time.RFC3339), cell(string(e.Kind))}
	for _, kv := range [][2]string{{"file", e.File}, {"ip", e.IP}, {"arch", e.Arch}, {"group", e.Group}, {"profile", e.Profile}, {"detail", e.Detail}} {
		if kv[1] != "" {
			parts = append(parts, kv[0]+"="+matchbox.Printable(kv[1]))
		}
	}
	fmt.Fprintln(w, strings.Join(parts, " "))
}

// leaseCLI runs `matchbox lease list [-mac MAC] | release IP`.
func leaseCLI(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cf := newCLIFlags("matchbox lease", stderr)
	mac := fs.String("mac", "", "only the leases of this MAC")
	verb, pos, c, err := startCLI(fs, cf, args)
	if err != nil {
		return err
	}
	switch {
	case verb == "list" && len(pos) == 0:
		path := "/api/v1/leases"
		if *mac != "" {
			path += "?mac=" + url.QueryEscape(*mac)
		}
		var out struct {
			Items []matchbox.Lease `json:"items"`
		}
		if _, err := c.do(ctx, "GET", path, nil, &out); err != nil {
			return fmt.Errorf("list leases: %w", err)
		}
		if cf.output == "json" {
			return printJSON(stdout, out.Items)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "IP\tMAC\tSTATE\tSUBNET\tEXPIRES\tHOSTNAME")
		for _, l := range out.Items {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", cell(l.IP), cell(l.MAC), cell(l.State), cell(l.Subnet), l.Expires.Format(time.RFC3339), cell(l.Hostname))
		}
		return tw.Flush()
	case verb == "release" && len(pos) == 1:
		if _, err := c.do(ctx, "DELETE", "/api/v1/leases/"+url.PathEscape(pos[0]), nil, nil); err != nil {
			return fmt.Errorf("release lease %s: %w", pos[0], err)
		}
		fmt.Fprintf(stdout, "lease %s released\n", pos[0])
		return nil
	}
	fs.Usage()
	return errUsage
}

// updateText is a machine's update state in a line: the state, its group
// and what it is about.
func updateText(u *update.Machine) string {
	out := string(u.State)
	switch {
	case u.State == update.StateOnHold:
		out += ": " + string(u.Hold)
	case u.State == update.StateFailed && u.ErrorCode != 0:
		out += fmt.Sprintf(" (update_engine error code %d)", u.ErrorCode)
	}
	if u.Target != "" && u.State != update.StateIdle {
		out += ", target " + u.Target
	}
	if u.Group != "" {
		out += ", update group " + u.Group
	}
	if u.Held {
		out += ", held out of rollouts"
	}
	return matchbox.EscapeLine(out) + " (" + timeText(u.Updated) + ")"
}
