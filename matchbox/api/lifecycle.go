package api

import (
	"context"
	"errors"
	"net/http"
	"slices"

	"github.com/gorilla/mux"

	"matchbox.dev/matchbox"

	"matchbox.dev/matchbox/reinstall"
)

// Power drives machines' BMCs (power.Service).
type Power interface {
	PowerState(ctx context.Context, mac string) (matchbox.PowerState, error)
	SetPower(ctx context.Context, mac string, action matchbox.PowerAction) error
	SetBootDevice(ctx context.Context, mac string, dev matchbox.BootDevice, efi bool) error
}

// Reinstaller runs reinstall workflows (reinstall.Engine).
type Reinstaller interface {
	Reinstall(ctx context.Context, req reinstall.Request) ([]matchbox.Workflow, error)
	Cancel(ctx context.Context, mac string) (matchbox.Workflow, error)
	Workflow(ctx context.Context, mac string) (matchbox.Workflow, error)
}

const (
	errNoPower     = "BMC control is not configured on this server"
	errNoLifecycle = "the reinstall workflow is not configured on this server"
)

// viewWorkflow is a workflow as the API shows it: without its token.
func viewWorkflow(w matchbox.Workflow) matchbox.Workflow {
	w.Token = ""
	return w
}

// bmcFail answers a failed BMC operation: the BMC's own failure is a bad
// gateway, anything else maps as usual.
func (s *Server) bmcFail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, matchbox.ErrNotFound) || errors.Is(err, matchbox.ErrInvalid) || errors.Is(err, matchbox.ErrConflict) {
		s.fail(w, r, err)
		return
	}
	s.log.Warn("BMC operation failed", "path", r.URL.Path, "err", err)
	writeError(w, http.StatusBadGateway, "bmc_failed", err.Error(), nil)
}

func (s *Server) getPower(w http.ResponseWriter, r *http.Request) {
	mac, err := matchbox.NormalizeMAC(mux.Vars(r)["mac"])
	if err != nil {
		s.fail(w, r, err)
		return
	}
	st, err := s.cfg.Power.PowerState(r.Context(), mac)
	if err != nil {
		s.bmcFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, "", map[string]any{"mac": mac, "power": st})
}

func (s *Server) setPower(w http.ResponseWriter, r *http.Request) {
	mac, err := matchbox.NormalizeMAC(mux.Vars(r)["mac"])
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var in struct {
		Action matchbox.PowerAction `json:"action"`
	}
	if !s.decode(w, r, &in) {
		return
	}
	if !slices.Contains(matchbox.PowerActions, in.Action) {
		writeError(w, http.StatusBadRequest, "invalid", "action must be on, off, soft or reset", nil)
		return
	}
	if err := s.cfg.Power.SetPower(r.Context(), mac, in.Action); err != nil {
		s.bmcFail(w, r, err)
		return
	}
	s.log.Info("machine power set", "mac", mac, "action", in.Action, "token", caller(r).Name)
	writeJSON(w, http.StatusOK, "", map[string]any{"mac": mac, "action": in.Action, "done": true})
}

func (s *Server) setBootDevice(w http.ResponseWriter, r *http.Request) {
	mac, err := matchbox.NormalizeMAC(mux.Vars(r)["mac"])
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var in struct {
		Device matchbox.BootDevice `json:"device"`
		EFI    bool                `json:"efi"`
	}
	if !s.decode(w, r, &in) {
		return
	}
	if in.Device != matchbox.BootPXE && in.Device != matchbox.BootDisk {
		writeError(w, http.StatusBadRequest, "invalid", "device must be pxe or disk", nil)
		return
	}
	if err := s.cfg.Power.SetBootDevice(r.Context(), mac, in.Device, in.EFI); err != nil {
		s.bmcFail(w, r, err)
		return
	}
	s.log.Info("machine boot device set", "mac", mac, "device", in.Device, "efi", in.EFI, "token", caller(r).Name)
	writeJSON(w, http.StatusOK, "", map[string]any{"mac": mac, "device": in.Device, "efi": in.EFI, "done": true})
}

// reinstallBody is a reinstall request; MACs only in the bulk form.
type reinstallBody struct {
	MACs        []string `json:"macs,omitempty"`
	Profile     string   `json:"profile,omitempty"`
	Force       bool     `json:"force,omitempty"`
	EFI         *bool    `json:"efi,omitempty"`
	Concurrency int      `json:"concurrency,omitempty"`
}

func (s *Server) reinstall(w http.ResponseWriter, r *http.Request) {
	var in reinstallBody
	if r.ContentLength != 0 && !s.decode(w, r, &in) {
		return
	}
	mac, ok := mux.Vars(r)["mac"]
	if ok {
		if len(in.MACs) > 0 {
			writeError(w, http.StatusBadRequest, "invalid", "macs belongs to POST /api/v1/reinstalls; this path names one machine", nil)
			return
		}
		in.MACs = []string{mac}
	}
	flows, err := s.cfg.Lifecycle.Reinstall(r.Context(), reinstall.Request{
		MACs: in.MACs, Profile: in.Profile, Force: in.Force, EFI: in.EFI, Concurrency: in.Concurrency,
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]matchbox.Workflow, len(flows))
	for i, f := range flows {
		out[i] = viewWorkflow(f)
		s.log.Info("reinstall requested", "mac", f.MAC, "profile", f.Profile, "force", in.Force, "token", caller(r).Name)
	}
	if ok {
		writeJSON(w, http.StatusAccepted, "", out[0])
		return
	}
	writeJSON(w, http.StatusAccepted, "", map[string]any{"items": out})
}

func (s *Server) cancelReinstall(w http.ResponseWriter, r *http.Request) {
	wf, err := s.cfg.Lifecycle.Cancel(r.Context(), mux.Vars(r)["mac"])
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("reinstall canceled", "mac", wf.MAC, "token", caller(r).Name)
	writeJSON(w, http.StatusOK, "", viewWorkflow(wf))
}

func (s *Server) getWorkflow(w http.ResponseWriter, r *http.Request) {
	wf, err := s.cfg.Lifecycle.Workflow(r.Context(), mux.Vars(r)["mac"])
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, "", viewWorkflow(wf))
}
