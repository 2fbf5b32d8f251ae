package api

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/render"
)

// MachineStore is what the API needs from the machine inventory.
type MachineStore interface {
	MachinePage(ctx context.Context, after string, limit int, keep func(*matchbox.Machine) bool) ([]*matchbox.Machine, bool, error)
	GetMachine(ctx context.Context, mac string) (*matchbox.Machine, error)
	MachineEvents(ctx context.Context, mac string) ([]matchbox.Event, error)
	SetMachineLabels(ctx context.Context, mac string, labels map[string]string) (*matchbox.Machine, error)
	DeleteMachine(ctx context.Context, mac string) error
}

const (
	defaultPage = 500
	maxPage     = 10_000
)

// machineFilter builds the filter of a machine listing from its query.
func machineFilter(q url.Values) (func(*matchbox.Machine) bool, error) {
	group, profile, arch := q.Get("group"), q.Get("profile"), q.Get("arch")
	labels := map[string]string{}
	for _, l := range q["label"] {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%w: label filter %q: want KEY=VALUE", matchbox.ErrInvalid, l)
		}
		if err := matchbox.CheckLabel("label filter", k, v); err != nil {
			return nil, err
		}
		labels[k] = v
	}
	var since time.Time
	if s := q.Get("seen_within"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("%w: seen_within %q: want a duration such as 30m or 24h", matchbox.ErrInvalid, s)
		}
		since = time.Now().Add(-d)
	}
	return func(m *matchbox.Machine) bool {
		if group != "" && m.Group != group || profile != "" && m.Profile != profile || arch != "" && m.Arch != arch {
			return false
		}
		if !since.IsZero() && m.LastSeen.Before(since) {
			return false
		}
		for k, v := range labels {
			if got, ok := m.Labels[k]; !ok || got != v {
				return false
			}
		}
		return true
	}, nil
}

func (s *Server) listMachines(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	keep, err := machineFilter(q)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	limit := defaultPage
	if l := q.Get("limit"); l != "" {
		if limit, err = strconv.Atoi(l); err != nil || limit < 1 || limit > maxPage {
			s.fail(w, r, fmt.Errorf("%w: limit %q: 1 to %d", matchbox.ErrInvalid, l, maxPage))
			return
		}
	}
	after := q.Get("after")
	if after != "" {
		if after, err = matchbox.NormalizeMAC(after); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	ms, more, err := s.cfg.Machines.MachinePage(r.Context(), after, limit, keep)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := map[string]any{"items": ms}
	if ms == nil {
		out["items"] = []*matchbox.Machine{}
	}
	if more {
		out["next"] = ms[len(ms)-1].MAC
	}
	writeJSON(w, http.StatusOK, "", out)
}

func (s *Server) getMachine(w http.ResponseWriter, r *http.Request) {
	mac := mux.Vars(r)["mac"]
	m, err := s.cfg.Machines.GetMachine(r.Context(), mac)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	events, err := s.cfg.Machines.MachineEvents(r.Context(), m.MAC)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if events == nil {
		events = []matchbox.Event{}
	}
	out := map[string]any{"machine": m, "events": events}
	if s.cfg.BMC != nil {
		if b, err := s.cfg.BMC.MachineBMC(r.Context(), m.MAC); err == nil {
			out["bmc"] = viewBMC(b)
		} else if !errors.Is(err, matchbox.ErrNotFound) {
			out["bmc_error"] = err.Error()
		}
	}
	if s.cfg.Lifecycle != nil {
		// The reinstall workflow's state, also at the top for scripts.
		if wf, err := s.cfg.Lifecycle.Workflow(r.Context(), m.MAC); err == nil {
			out["workflow"] = viewWorkflow(wf)
			out["state"] = wf.State
			if wf.Reason != "" {
				out["reason"] = wf.Reason
			}
		} else if !errors.Is(err, matchbox.ErrNotFound) {
			out["workflow_error"] = err.Error()
		}
	}
	if s.cfg.Updates != nil {
		// What the update service knows: the OS version and update
		// state.
		if u, err := s.cfg.Updates.Machine(r.Context(), m.MAC); err == nil {
			out["update"] = u
		} else if !errors.Is(err, matchbox.ErrNotFound) {
			out["update_error"] = err.Error()
		}
	}
	writeJSON(w, http.StatusOK, "", out)
}

func (s *Server) machineEvents(w http.ResponseWriter, r *http.Request) {
	events, err := s.cfg.Machines.MachineEvents(r.Context(), mux.Vars(r)["mac"])
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if since := r.URL.Query().Get("since"); since != "" {
		t, err := time.Parse(time.RFC3339Nano, since)
		if err != nil {
			s.fail(w, r, fmt.Errorf("%w: since %q: want an RFC 3339 time", matchbox.ErrInvalid, since))
			return
		}
		kept := events[:0]
		for _, e := range events {
			if e.Time.After(t) {
				kept = append(kept, e)
			}
		}
		events = kept
	}
	if events == nil {
		events = []matchbox.Event{}
	}
	writeJSON(w, http.StatusOK, "", map[string]any{"items": events})
}

func (s *Server) setMachineLabels(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Labels map[string]string `json:"labels"`
	}
	if !s.decode(w, r, &body) {
		return
	}
	m, err := s.cfg.Machines.SetMachineLabels(r.Context(), mux.Vars(r)["mac"], body.Labels)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("machine labels set", "mac", m.MAC, "token", caller(r).Name)
	writeJSON(w, http.StatusOK, "", m)
}

func (s *Server) deleteMachine(w http.ResponseWriter, r *http.Request) {
	mac := mux.Vars(r)["mac"]
	if err := s.cfg.Machines.DeleteMachine(r.Context(), mac); err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("machine deleted", "mac", mac, "token", caller(r).Name)
	w.WriteHeader(http.StatusNoContent)
}

// HiddenToken stands for a reinstall's token in previews: the read role
// sees what a machine under reinstall is served, not the secret that lets
// it report.
const HiddenToken = "REINSTALL-TOKEN-HIDDEN"

// preview answers "what would this machine get", without the machine
// asking and without recording or changing anything: the boot decision
// for its MAC plus the labels in the query (the one the boot endpoints
// take, reinstall included), and the rendered iPXE script and Ignition,
// with a reinstall's token shown as HiddenToken.
func (s *Server) preview(w http.ResponseWriter, r *http.Request) {
	mac, err := matchbox.NormalizeMAC(mux.Vars(r)["mac"])
	if err != nil {
		s.fail(w, r, err)
		return
	}
	labels, err := matchbox.ParseQueryLabels(r.URL.RawQuery)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if _, ok := labels["token"]; ok {
		// Else the answer would tell a reader whether a token is right.
		s.fail(w, r, fmt.Errorf("%w: a preview takes no token label (a reinstall's token is shown hidden)", matchbox.ErrInvalid))
		return
	}
	labels["mac"] = mac
	d := s.booter.Decide(labels)
	if errors.Is(d.Err, matchbox.ErrUnavailable) {
		s.fail(w, r, fmt.Errorf("machine %s with labels %v: %w", mac, labels, d.Err))
		return
	}
	if d.Group == nil {
		s.fail(w, r, fmt.Errorf("no group matches machine %s with labels %v: %w", mac, labels, matchbox.ErrNotFound))
		return
	}
	out := map[string]any{"labels": labels, "group": d.Group.ID}
	if d.Held {
		out["reinstall"] = map[string]any{"state": d.Gate.State, "profile": d.Gate.Profile}
		d.Gate.Token = HiddenToken
	}
	if err := cmp.Or(d.Refused, d.Err); err != nil || d.Profile == nil {
		if err == nil {
			err = fmt.Errorf("group %q has no profile", d.Group.ID)
		}
		out["problems"] = []string{err.Error()}
		writeJSON(w, http.StatusOK, "", out)
		return
	}
	out["profile"] = d.Profile.ID
	var problems []string
	if s.cfg.Engine != nil {
		q := url.Values{}
		for k, v := range labels {
			q.Set(k, v)
		}
		data := s.cfg.Engine.BootData(&d, render.Request{Labels: labels, RawQuery: q.Encode(), Host: s.cfg.BootHost}, s.cfg.BootHost)
		switch {
		case d.Held && d.Gate.State == matchbox.StateInstalled:
			out["ipxe"] = string(render.LocalBootIPXE)
		case d.Profile.Boot.Kernel != "" || d.Profile.Release != nil:
			if ipxe, err := s.cfg.Engine.IPXE(r.Context(), d.Selection, data); err != nil {
				problems = append(problems, "ipxe: "+err.Error())
			} else {
				out["ipxe"] = string(ipxe)
			}
		}
		if d.Profile.IgnitionID != "" {
			if ign, err := s.cfg.Engine.Ignition(r.Context(), d.Snapshot, d.Selection, data); err != nil {
				problems = append(problems, "ignition: "+err.Error())
			} else {
				out["ignition"] = json.RawMessage(ign)
			}
		}
	}
	if problems != nil {
		out["problems"] = problems
	}
	writeJSON(w, http.StatusOK, "", out)
}

// errNoInventory answers when the API runs without an inventory.
var errNoInventory = errors.New("no machine inventory configured")

// LeaseAdmin is the running DHCP server's lease table.
type LeaseAdmin interface {
	Leases() []matchbox.Lease
	Release(ctx context.Context, ip netip.Addr) (matchbox.Lease, error)
}

func (s *Server) listLeases(w http.ResponseWriter, r *http.Request) {
	ls := s.cfg.Leases.Leases()
	mac := r.URL.Query().Get("mac")
	if mac != "" {
		var err error
		if mac, err = matchbox.NormalizeMAC(mac); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	out := make([]matchbox.Lease, 0, len(ls))
	for _, l := range ls {
		if mac == "" || l.MAC == mac {
			out = append(out, l)
		}
	}
	slices.SortFunc(out, func(a, b matchbox.Lease) int { return a.IP.Compare(b.IP) })
	writeJSON(w, http.StatusOK, "", map[string]any{"items": out})
}

func (s *Server) releaseLease(w http.ResponseWriter, r *http.Request) {
	ip, err := netip.ParseAddr(mux.Vars(r)["ip"])
	if err != nil || !ip.Is4() {
		s.fail(w, r, fmt.Errorf("%w: %q is not an IPv4 address", matchbox.ErrInvalid, mux.Vars(r)["ip"]))
		return
	}
	l, err := s.cfg.Leases.Release(r.Context(), ip)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("DHCP lease released", "ip", ip, "mac", l.MAC, "token", caller(r).Name)
	w.WriteHeader(http.StatusNoContent)
}

// BMCStore keeps machines' BMC settings; passwords go in, never out of
// the API.
type BMCStore = matchbox.BMCStore

// BMCView is what the API shows of BMC settings (never the password);
// the CLI decodes it too.
type BMCView struct {
	Address        string `json:"address"`
	Provider       string `json:"provider,omitempty"`
	Username       string `json:"username,omitempty"`
	PasswordSet    bool   `json:"password_set"`
	TLSFingerprint string `json:"tls_fingerprint,omitempty"`
	TLSInsecure    bool   `json:"tls_insecure_skip_verify"`
}

func viewBMC(b matchbox.BMC) BMCView {
	return BMCView{Address: b.Address, Provider: b.Provider, Username: b.Username, PasswordSet: b.Password != "",
		TLSFingerprint: b.TLSFingerprint, TLSInsecure: b.TLSInsecure}
}

func (s *Server) setBMC(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Address        string `json:"address"`
		Provider       string `json:"provider"`
		Username       string `json:"username"`
		Password       string `json:"password"`
		TLSFingerprint string `json:"tls_fingerprint"`
		TLSInsecure    bool   `json:"tls_insecure_skip_verify"`
	}
	if !s.decode(w, r, &body) {
		return
	}
	mac := mux.Vars(r)["mac"]
	b := matchbox.BMC{Address: body.Address, Provider: body.Provider, Username: body.Username, Password: body.Password,
		TLSFingerprint: body.TLSFingerprint, TLSInsecure: body.TLSInsecure}
	if err := s.cfg.BMC.SetMachineBMC(r.Context(), mac, b); err != nil {
		s.fail(w, r, err)
		return
	}
	stored, err := s.cfg.BMC.MachineBMC(r.Context(), mac)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	attrs := []any{"mac", mac, "address", stored.Address, "provider", stored.Provider, "token", caller(r).Name}
	if stored.TLSInsecure {
		s.log.Warn("machine BMC settings set to skip TLS certificate verification", attrs...)
	} else {
		s.log.Info("machine BMC settings set", append(attrs, "tls_fingerprint", stored.TLSFingerprint)...)
	}
	writeJSON(w, http.StatusOK, "", viewBMC(stored))
}

func (s *Server) getBMC(w http.ResponseWriter, r *http.Request) {
	b, err := s.cfg.BMC.MachineBMC(r.Context(), mux.Vars(r)["mac"])
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, "", viewBMC(b))
}

func (s *Server) deleteBMC(w http.ResponseWriter, r *http.Request) {
	mac := mux.Vars(r)["mac"]
	if err := s.cfg.BMC.DeleteMachineBMC(r.Context(), mac); err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("machine BMC settings deleted", "mac", mac, "token", caller(r).Name)
	w.WriteHeader(http.StatusNoContent)
}
