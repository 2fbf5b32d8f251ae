package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/gorilla/mux"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/update"
)

// Updates is the update service as the API manages it (update.Service).
type Updates interface {
	Groups(ctx context.Context) ([]update.Group, error)
	Group(ctx context.Context, name string) (update.Group, error)
	SetGroup(ctx context.Context, g update.Group, keepState bool) (update.Group, bool, error)
	DeleteGroup(ctx context.Context, name string) error
	SetPaused(ctx context.Context, name string, paused bool, reason string) error
	Machine(ctx context.Context, id string) (update.Machine, error)
	SetHeld(ctx context.Context, id string, held bool) (update.Machine, error)
	Status(ctx context.Context, group string) ([]update.GroupStatus, error)
}

const errNoUpdates = "the update service is not configured on this server (it runs with the release mirror: -assets-path)"

func (s *Server) listUpdateGroups(w http.ResponseWriter, r *http.Request) {
	gs, err := s.cfg.Updates.Groups(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, "", map[string]any{"items": gs})
}

func (s *Server) getUpdateGroup(w http.ResponseWriter, r *http.Request) {
	g, err := s.cfg.Updates.Group(r.Context(), mux.Vars(r)["name"])
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, "", g)
}

// putUpdateGroup creates or replaces a group, its paused state included:
// the body is the whole group. With ?keep=state an existing group keeps
// its floors and paused state (the body can pause it, not resume it), in
// one transaction: what `update group set` does.
func (s *Server) putUpdateGroup(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["name"]
	keep := false
	switch v := r.URL.Query().Get("keep"); v {
	case "":
	case "state":
		keep = true
	default:
		s.fail(w, r, fmt.Errorf("keep=%s: want keep=state: %w", matchbox.Quote(v), matchbox.ErrInvalid))
		return
	}
	var g update.Group
	if !s.decode(w, r, &g) || !pathID(w, name, &g.Name) {
		return
	}
	stored, created, err := s.cfg.Updates.SetGroup(r.Context(), g, keep)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	s.log.Info("update group written", "update_group", name, "channel", stored.Channel, "version", stored.Version, "paused", stored.Policy.Paused, "token", caller(r).Name)
	writeJSON(w, status, "", stored)
}

func (s *Server) deleteUpdateGroup(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["name"]
	if err := s.cfg.Updates.DeleteGroup(r.Context(), name); err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("update group deleted", "update_group", name, "token", caller(r).Name)
	w.WriteHeader(http.StatusNoContent)
}

// pauseUpdateGroup pauses a group; the optional body gives the reason.
func (s *Server) pauseUpdateGroup(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Reason string `json:"reason"`
	}
	if r.ContentLength != 0 && !s.decode(w, r, &in) {
		return
	}
	if in.Reason == "" {
		in.Reason = "paused by " + caller(r).Name
	}
	s.setPaused(w, r, true, in.Reason)
}

func (s *Server) resumeUpdateGroup(w http.ResponseWriter, r *http.Request) {
	s.setPaused(w, r, false, "")
}

// setPaused pauses or resumes a group and answers with it.
func (s *Server) setPaused(w http.ResponseWriter, r *http.Request, paused bool, reason string) {
	name := mux.Vars(r)["name"]
	if err := matchbox.CheckValue("reason", reason, false); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.cfg.Updates.SetPaused(r.Context(), name, paused, reason); err != nil {
		s.fail(w, r, err)
		return
	}
	what := "update group resumed"
	if paused {
		what = "update group paused"
	}
	s.log.Info(what, "update_group", name, "reason", reason, "token", caller(r).Name)
	s.getUpdateGroup(w, r)
}

func (s *Server) getUpdateMachine(w http.ResponseWriter, r *http.Request) {
	m, err := s.cfg.Updates.Machine(r.Context(), mux.Vars(r)["id"])
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, "", m)
}

// holdUpdateMachine holds a machine out of every rollout (hold) or
// releases it (release): {id} is a MAC or an update client's machine id.
func (s *Server) holdUpdateMachine(held bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := mux.Vars(r)["id"]
		if err := matchbox.CheckValue("machine", id, false); err != nil {
			s.fail(w, r, err)
			return
		}
		m, err := s.cfg.Updates.SetHeld(r.Context(), id, held)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		what := "update machine released"
		if held {
			what = "update machine held"
		}
		s.log.Info(what, "machine", matchbox.Quote(id), "token", caller(r).Name)
		writeJSON(w, http.StatusOK, "", m)
	}
}

// updateStatus answers every group's status, or one's (?group=NAME).
func (s *Server) updateStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.cfg.Updates.Status(r.Context(), r.URL.Query().Get("group"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, "", map[string]any{"items": st})
}
