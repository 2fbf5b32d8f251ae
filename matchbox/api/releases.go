package api

import (
	"net/http"
	"time"

	"github.com/gorilla/mux"

	"matchbox.dev/matchbox"
)

// Release is a Flatcar release in the local mirror.
type Release struct {
	Channel string        `json:"channel"`
	Board   string        `json:"board"`
	Version string        `json:"version"`
	Current bool          `json:"current"`
	Files   []ReleaseFile `json:"files"`
	Pulled  time.Time     `json:"pulled"`
}

// ReleaseFile is one verified file of a release.
type ReleaseFile struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// ReleasePullRequest asks for a release to be pulled.
type ReleasePullRequest struct {
	Channel string `json:"channel"`
	Version string `json:"version,omitempty"`
	Arch    string `json:"arch,omitempty"`
}

// ReleasePull is a pull the server runs or ran.
type ReleasePull struct {
	Channel string `json:"channel"`
	Version string `json:"version"`
	Arch    string `json:"arch"`
	// State is running, done or failed.
	State string `json:"state"`
	// Resolved is the version pulled (for "current").
	Resolved string `json:"resolved,omitempty"`
	// File is the file being downloaded, Done and Total its bytes.
	File     string    `json:"file,omitempty"`
	Done     int64     `json:"done,omitempty"`
	Total    int64     `json:"total,omitempty"`
	Error    string    `json:"error,omitempty"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
}

// ReleaseAdmin is the release mirror as the API manages it.
type ReleaseAdmin interface {
	Releases() ([]Release, []ReleasePull, error)
	StartPull(req ReleasePullRequest) (ReleasePull, error)
	RemoveRelease(channel, board, version string) error
}

const errNoReleases = "the release mirror is not configured on this server (no -assets-path)"

func (s *Server) listReleases(w http.ResponseWriter, r *http.Request) {
	rels, pulls, err := s.cfg.Releases.Releases()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if rels == nil {
		rels = []Release{}
	}
	if pulls == nil {
		pulls = []ReleasePull{}
	}
	writeJSON(w, http.StatusOK, "", map[string]any{"items": rels, "pulls": pulls})
}

func (s *Server) pullRelease(w http.ResponseWriter, r *http.Request) {
	var in ReleasePullRequest
	if !s.decode(w, r, &in) {
		return
	}
	p, err := s.cfg.Releases.StartPull(in)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("release pull requested", "channel", p.Channel, "version", p.Version, "arch", p.Arch, "token", caller(r).Name)
	writeJSON(w, http.StatusAccepted, "", p)
}

func (s *Server) removeRelease(w http.ResponseWriter, r *http.Request) {
	v := mux.Vars(r)
	if err := (matchbox.ReleaseRef{Channel: v["channel"], Version: v["version"]}).Check(); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.cfg.Releases.RemoveRelease(v["channel"], v["board"], v["version"]); err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("release removed", "channel", v["channel"], "board", v["board"], "version", v["version"], "token", caller(r).Name)
	w.WriteHeader(http.StatusNoContent)
}
