package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/update"
)

const updateUsage = `  matchbox update group set NAME -channel stable|beta|alpha|lts [-version X.Y.Z|newest] [-match track|group:ID|label:K=V]
        [-max-in-flight N] [-max-per-period N -period DURATION] [-timeout DURATION] [-canary N]
        [-pause-after-failures N] [-window "Mon-Fri 09:00-17:00 Europe/Berlin"]... [-paused [-reason TEXT]]
  matchbox update group list | get NAME | rm NAME
  matchbox update pause NAME [-reason TEXT] | resume NAME
  matchbox update status [NAME] [-o table|json]
  matchbox update hold MACHINE | release MACHINE

set creates a group or replaces all of its settings; the defaults are
-version newest and -match track (machines whose update.conf says
GROUP=NAME). An existing group keeps its paused state and reason (pause
and resume change them) and its floors (set through the API); a new one
starts unpaused unless -paused is given. -window is repeatable: grants
are made only inside a window (none: any time); a window's days are
Mon…Sun, ranges (Mon-Fri), lists (Sat,Sun) or daily, its zone an IANA
name (default UTC). The groups stable, beta, alpha and lts exist by
default, paused; rm of one brings it back, paused, at the server's next
start.

status shows each group's rollout (its target's grants, completions,
failures and machines in flight) and its machines by version and update
state; a grant that outlived the group's timeout counts as failed. hold
keeps a machine (its MAC, or an update client's machine id) out of every
rollout until release; the inventory label update-hold=true does the
same. release also lets a machine try again a version it rolled back
from.
`

// updateCLI runs `matchbox update group VERB …` and `matchbox update
// pause|resume NAME`.
func updateCLI(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cf := newCLIFlags("matchbox update", stderr)
	channel := fs.String("channel", "", "set: the group's release channel (stable, beta, alpha, lts)")
	version := fs.String("version", update.Newest, "set: the target, X.Y.Z or newest")
	match := fs.String("match", update.MatchTrack, "set: the machines of the group: track, group:ID or label:K=V")
	maxInFlight := fs.Int("max-in-flight", 0, "set: at most this many machines updating at once (0: no limit)")
	maxPerPeriod := fs.Int("max-per-period", 0, "set: at most this many updates granted per -period (0: no limit)")
	period := fs.Duration("period", 0, "set: the period of -max-per-period (e.g. 1h)")
	timeout := fs.Duration("timeout", 0, "set: how long an update may take before it counts as failed (default 2h)")
	canary := fs.Int("canary", 0, "set: this many machines must complete the update before more are granted it")
	pauseAfter := fs.Int("pause-after-failures", 0, "set: pause the group after this many machines failed the update (0: never)")
	var windows multiFlag
	fs.Var(&windows, "window", `set: when updates may be granted, "DAYS HH:MM-HH:MM [ZONE]" (repeatable)`)
	paused := fs.Bool("paused", false, "set: pause the group")
	reason := fs.String("reason", "", "pause, set -paused: why the group is paused")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage:\n"+updateUsage+"\n"+cliUsage[strings.Index(cliUsage, "Connection"):])
	}
	verb, pos, c, err := startCLI(fs, cf, args)
	if err != nil {
		return err
	}
	groupPath := func(name string) string { return "/api/v1/update-groups/" + url.PathEscape(name) }
	sub := ""
	if verb == "group" && len(pos) > 0 {
		sub, pos = pos[0], pos[1:]
	}
	switch {
	case sub == "set" && len(pos) == 1:
		g, err := groupFromFlags(pos[0], *channel, *version, *match, windows, update.Policy{
			MaxInFlight: *maxInFlight, MaxPerPeriod: *maxPerPeriod, Period: *period, Timeout: *timeout,
			Canary: *canary, PauseAfterFailures: *pauseAfter,
		})
		if err != nil {
			return err
		}
		if *paused {
			g.Policy.Paused, g.Policy.Reason = true, *reason
			if g.Policy.Reason == "" {
				g.Policy.Reason = "paused with update group set"
			}
		}
		// The server keeps an existing group's floors and paused state,
		// reading and writing it in one transaction.
		var stored update.Group
		a, err := c.send(ctx, "PUT", groupPath(g.Name)+"?keep=state", g, "", &stored)
		if err != nil {
			return fmt.Errorf("set update group %s: %w", g.Name, err)
		}
		what := "updated"
		if a.status == http.StatusCreated {
			what = "created"
		}
		fmt.Fprintf(stdout, "update group %s %s%s\n", g.Name, what, pausedText(stored.Policy))
		return nil
	case sub == "list" && len(pos) == 0:
		var out struct {
			Items []update.Group `json:"items"`
		}
		if _, err := c.do(ctx, "GET", "/api/v1/update-groups", nil, &out); err != nil {
			return fmt.Errorf("list update groups: %w", err)
		}
		if cf.output == "json" {
			return printJSON(stdout, out.Items)
		}
		return printUpdateGroups(stdout, out.Items)
	case sub == "get" && len(pos) == 1:
		var g update.Group
		if _, err := c.do(ctx, "GET", groupPath(pos[0]), nil, &g); err != nil {
			return fmt.Errorf("get update group %s: %w", matchbox.Printable(pos[0]), err)
		}
		if cf.output == "table" {
			return printUpdateGroups(stdout, []update.Group{g})
		}
		return printJSON(stdout, g)
	case sub == "rm" && len(pos) == 1:
		if _, err := c.do(ctx, "DELETE", groupPath(pos[0]), nil, nil); err != nil {
			return fmt.Errorf("remove update group %s: %w", matchbox.Printable(pos[0]), err)
		}
		fmt.Fprintf(stdout, "update group %s removed\n", matchbox.Printable(pos[0]))
		return nil
	case verb == "status" && len(pos) <= 1:
		path := "/api/v1/update-status"
		if len(pos) == 1 {
			path += "?group=" + url.QueryEscape(pos[0])
		}
		var out struct {
			Items []update.GroupStatus `json:"items"`
		}
		if _, err := c.do(ctx, "GET", path, nil, &out); err != nil {
			return fmt.Errorf("update status: %w", err)
		}
		if cf.output == "json" {
			return printJSON(stdout, out.Items)
		}
		return printUpdateStatus(stdout, out.Items)
	case (verb == "hold" || verb == "release") && len(pos) == 1:
		var m update.Machine
		if _, err := c.do(ctx, "POST", "/api/v1/update-machines/"+url.PathEscape(pos[0])+"/"+verb, nil, &m); err != nil {
			return fmt.Errorf("%s update machine %s: %w", verb, matchbox.Printable(pos[0]), err)
		}
		what := "released"
		if m.Held {
			what = "held out of rollouts"
		}
		fmt.Fprintf(stdout, "machine %s %s\n", matchbox.Printable(pos[0]), what)
		return nil
	case (verb == "pause" || verb == "resume") && len(pos) == 1:
		var body any
		if verb == "pause" && *reason != "" {
			body = map[string]string{"reason": *reason}
		}
		var g update.Group
		if _, err := c.do(ctx, "POST", groupPath(pos[0])+"/"+verb, body, &g); err != nil {
			return fmt.Errorf("%s update group %s: %w", verb, matchbox.Printable(pos[0]), err)
		}
		fmt.Fprintf(stdout, "update group %s %sd%s\n", g.Name, verb, pausedText(g.Policy))
		return nil
	}
	fs.Usage()
	return errUsage
}

// groupFromFlags is the group `update group set` writes, checked before
// it is sent so that a mistake is reported with the flag's name.
func groupFromFlags(name, channel, version, match string, windows []string, p update.Policy) (update.Group, error) {
	m, err := update.ParseMatch(match)
	if err != nil {
		return update.Group{}, fmt.Errorf("-match: %w", err)
	}
	for _, spec := range windows {
		w, err := update.ParseWindow(spec)
		if err != nil {
			return update.Group{}, fmt.Errorf("-window: %w", err)
		}
		p.Windows = append(p.Windows, w)
	}
	if channel == "" {
		return update.Group{}, fmt.Errorf("-channel is required: one of %s", strings.Join(update.Channels, ", "))
	}
	g := update.Group{Name: name, Channel: channel, Version: version, Match: m, Policy: p}
	return g, g.Check()
}

// pausedText says that a group is paused, and why.
func pausedText(p update.Policy) string {
	if !p.Paused {
		return ""
	}
	return " (paused: " + matchbox.EscapeLine(p.Reason) + ")"
}

func printUpdateGroups(w io.Writer, gs []update.Group) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCHANNEL\tVERSION\tMATCH\tLIMITS\tWINDOWS\tPAUSED")
	for _, g := range gs {
		var ws []string
		for _, win := range g.Policy.Windows {
			ws = append(ws, win.String())
		}
		state := "no"
		if g.Policy.Paused {
			state = "yes: " + g.Policy.Reason
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cell(g.Name), cell(g.Channel), cell(g.Version), cell(g.Match.String()),
			orDash(limitsText(g.Policy)), orDash(strings.Join(ws, "; ")), matchbox.EscapeLine(state))
	}
	return tw.Flush()
}

// limitsText is a policy's limits as the flags that set them.
func limitsText(p update.Policy) string {
	var parts []string
	for _, l := range []struct {
		flag string
		n    int
	}{{"max-in-flight", p.MaxInFlight}, {"canary", p.Canary}, {"pause-after-failures", p.PauseAfterFailures}} {
		if l.n > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", l.flag, l.n))
		}
	}
	if p.MaxPerPeriod > 0 {
		parts = append(parts, fmt.Sprintf("max-per-period=%d/%s", p.MaxPerPeriod, p.Period))
	}
	if p.Timeout > 0 {
		parts = append(parts, "timeout="+p.Timeout.String())
	}
	return strings.Join(parts, " ")
}

// statusStates are the columns of `update status`, in an update's order.
var statusStates = []update.State{update.StateIdle, update.StateGranted, update.StateDownloading, update.StateDownloaded,
	update.StateInstalled, update.StateComplete, update.StateFailed, update.StateOnHold}

// printUpdateStatus prints each group's rollout and its machines, one
// row per version, one column per update state.
func printUpdateStatus(w io.Writer, gs []update.GroupStatus) error {
	for i, g := range gs {
		if i > 0 {
			fmt.Fprintln(w)
		}
		name := g.Name
		if name == "" {
			name = "(no group)"
		}
		state := "running"
		if g.Paused {
			state = "paused: " + g.Reason
		}
		if g.Name == "" {
			fmt.Fprintf(w, "%s: %d machines\n", name, g.Total)
		} else {
			r := g.Rollout
			fmt.Fprintf(w, "%s (channel %s, version %s): %s\n", matchbox.EscapeLine(name), cell(g.Channel), cell(g.Version), matchbox.EscapeLine(state))
			fmt.Fprintf(w, "  rollout of %s: %d granted, %d completed, %d failed, %d in flight, %d in the period\n",
				orDash(r.Target), r.Granted, r.Completed, r.Failed, r.InFlight, r.InPeriod)
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		head := []string{"  VERSION"}
		for _, st := range statusStates {
			head = append(head, strings.ToUpper(string(st)))
		}
		fmt.Fprintln(tw, strings.Join(append(head, "TOTAL"), "\t"))
		for _, v := range g.Machines {
			row := []string{"  " + orDash(matchbox.EscapeLine(v.Version))}
			total := 0
			for _, st := range statusStates {
				row = append(row, fmt.Sprint(v.States[st]))
				total += v.States[st]
			}
			fmt.Fprintln(tw, strings.Join(append(row, fmt.Sprint(total)), "\t"))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}
