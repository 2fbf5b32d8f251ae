package http

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	nethttp "net/http"
	"strconv"
	"strings"
	"time"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/netlimit"
	"matchbox.dev/matchbox/omaha"
	"matchbox.dev/matchbox/update"
)

// Updates is the update service Flatcar machines' update checks are
// answered by (update.Service).
type Updates interface {
	Decide(ctx context.Context, c update.Check) (update.Answer, error)
	Report(ctx context.Context, c update.Client, outcome update.Outcome, to update.State, version string, code int) error
}

// UpdatePayloads finds a mirrored release's update payloads.
type UpdatePayloads interface {
	// Payloads returns the directory of a release under /assets/ (no
	// leading or trailing slash), its OS payload and its extensions.
	Payloads(channel, board, version string) (dir string, os omaha.Package, extensions []omaha.Package, err error)
	// Channel is the channel a version of a board is mirrored for.
	Channel(board, version string) (string, bool)
}

// updateEndpoint answers update_engine: POST /v1/update/ (the SERVER= of
// update.conf), with or without the trailing slash. Every answer that
// update_engine can parse is a success for it, so anything that goes
// wrong on the server's side (no group, a release not mirrored, a store
// error) is answered noupdate and logged; only a request that is not
// Omaha gets an HTTP error. What a machine sends wrong is logged once per
// machine in a while (logUpdate; fail's lines by address).
func (s *Server) updateEndpoint(w nethttp.ResponseWriter, r *nethttp.Request) {
	q := &query{file: "/v1/update/", host: requestHost(r)}
	if r.Method != nethttp.MethodPost {
		w.Header().Set("Allow", "POST")
		nethttp.Error(w, "method not allowed: POST an Omaha request", nethttp.StatusMethodNotAllowed)
		return
	}
	// The errors wrap ErrInvalid with %w rather than errors.Join: fail
	// answers the first line of the message, and Join's would be
	// "invalid" alone.
	if r.ContentLength > omaha.MaxRequestSize {
		s.fail(w, r, "update", q, fmt.Errorf("%w: %w", matchbox.ErrInvalid, omaha.ErrTooLarge))
		return
	}
	body, err := io.ReadAll(nethttp.MaxBytesReader(w, r.Body, omaha.MaxRequestSize))
	if err != nil {
		// Only MaxBytesReader's error means too large; any other is a
		// body the client broke off or framed wrong.
		var tooLarge *nethttp.MaxBytesError
		if errors.As(err, &tooLarge) {
			err = omaha.ErrTooLarge
		} else {
			err = fmt.Errorf("read request body: %w", err)
		}
		s.fail(w, r, "update", q, fmt.Errorf("%w: %w", matchbox.ErrInvalid, err))
		return
	}
	req, err := omaha.ParseRequest(body)
	// What is left of the body is the parsed request: its place among
	// the bodies being read goes to the next one, before the decision
	// (which may wait for a store commit) holds it up.
	netlimit.BodyDone(r)
	if err != nil {
		s.fail(w, r, "update", q, fmt.Errorf("%w: %w", matchbox.ErrInvalid, err))
		return
	}
	if len(req.Repaired) > 0 {
		// Read all the same (the machine is answered as it meant), but
		// said once: the operator fixes the value in update.conf.
		s.logUpdate(r, slog.LevelInfo, "update request repaired: a value holds an unescaped quote", req.Apps[0].MachineID,
			"attributes", strings.Join(req.Repaired, ","))
	}
	resp := omaha.NewResponse(req, time.Now().UTC())
	for i := range req.Apps {
		app := &req.Apps[i]
		a := &resp.Apps[i]
		if app.NormalizedID() != omaha.FlatcarAppID {
			a.UnknownApp = true
			continue
		}
		if app.MachineID == "" {
			// The service follows a machine by its id: without one it
			// can take none of its events nor count a grant, so the
			// machine is answered noupdate (update_engine sends an empty
			// machineid when /etc/machine-id is empty).
			s.logUpdate(r, slog.LevelWarn, "update request without a machine id: answered noupdate", "")
			continue
		}
		client := update.Client{MachineID: app.MachineID, Alias: app.MachineAlias, Addr: remoteIP(r)}
		s.takeUpdateEvents(r, client, app)
		if a.UpdateCheck != nil {
			a.UpdateCheck.Update = s.updateOffer(r, client, app)
		}
	}
	out, err := resp.Marshal()
	if err != nil {
		// An offer Marshal refuses (a payload listed wrong) must not
		// reach the machine: answer no update instead.
		s.logUpdate(r, slog.LevelError, "update answer refused", req.Apps[0].MachineID, "err", err)
		for i := range resp.Apps {
			if resp.Apps[i].UpdateCheck != nil {
				resp.Apps[i].UpdateCheck.Update = nil
			}
		}
		if out, err = resp.Marshal(); err != nil {
			s.fail(w, r, "update", q, err)
			return
		}
	}
	writeBody(w, "text/xml; charset=utf-8", out)
}

// takeUpdateEvents hands what a machine's events say of its update to the
// service.
func (s *Server) takeUpdateEvents(r *nethttp.Request, client update.Client, app *omaha.App) {
	ctx := r.Context()
	for _, e := range app.Events {
		outcome, to := update.Progress, update.State("")
		code, _ := e.ErrorCode.Split()
		switch {
		case e.Result == omaha.ResultError:
			outcome = update.Failed
		case e.Type == omaha.EventUpdateDownloadStarted && e.Result == omaha.ResultSuccess:
			to = update.StateDownloading
		case e.Type == omaha.EventUpdateDownloadFinished && e.Result == omaha.ResultSuccess:
			to = update.StateDownloaded
		case e.Type == omaha.EventUpdateComplete && e.Result == omaha.ResultSuccess:
			to = update.StateInstalled
		default:
			if _, ok := e.UpdatedFrom(); !ok {
				continue
			}
			outcome = update.Completed
		}
		name := string(to)
		switch outcome {
		case update.Completed:
			name = "completed"
		case update.Failed:
			name = "failed"
		}
		codeLabel := ""
		if outcome == update.Failed {
			codeLabel = errorCodeLabel(int(code))
		}
		s.updateEvents.WithLabelValues(name, codeLabel).Inc()
		err := s.cfg.Updates.Report(ctx, client, outcome, to, app.Version, int(code))
		if err != nil && !errors.Is(err, matchbox.ErrNotFound) {
			s.logUpdate(r, slog.LevelWarn, "update event not recorded", app.MachineID, "event", e.Type.String(), "err", err)
		}
	}
}

// updateOffer decides a machine's update check: the update to offer, or
// nil.
func (s *Server) updateOffer(r *nethttp.Request, client update.Client, app *omaha.App) *omaha.Update {
	ctx := r.Context()
	ans, err := s.cfg.Updates.Decide(ctx, update.Check{Client: client, Track: app.Track, Version: app.Version, Board: app.Board})
	switch {
	case err != nil:
		s.updateChecks.WithLabelValues("error", "").Inc()
		s.logUpdate(r, slog.LevelWarn, "update check not decided", app.MachineID, "group", app.Track, "err", err)
		return nil
	case ans.Hold != "":
		s.updateChecks.WithLabelValues("held", string(ans.Hold)).Inc()
		return nil
	case ans.Version == "":
		s.updateChecks.WithLabelValues("none", "").Inc()
		return nil
	}
	channel, ok := s.cfg.UpdatePayloads.Channel(app.Board, ans.Version)
	if !ok {
		s.updateChecks.WithLabelValues("error", "").Inc()
		s.logUpdate(r, slog.LevelError, "granted release not mirrored", app.MachineID, "version", ans.Version, "board", app.Board)
		return nil
	}
	dir, osPayload, exts, err := s.cfg.UpdatePayloads.Payloads(channel, app.Board, ans.Version)
	if err != nil {
		s.updateChecks.WithLabelValues("error", "").Inc()
		s.logUpdate(r, slog.LevelError, "granted release's payloads not found", app.MachineID, "version", ans.Version, "err", err)
		return nil
	}
	s.updateChecks.WithLabelValues("update", "").Inc()
	if ans.Granted {
		s.updateGrants.WithLabelValues(ans.Group).Inc()
	}
	return &omaha.Update{Version: ans.Version, URLs: []string{"http://" + requestHost(r) + "/assets/" + dir + "/"}, Payload: osPayload, Extensions: exts}
}

// logUpdate logs a line about a machine's update, once per machine and
// message in a while (any machine can cause them). A machine that sent no
// id is known by its address: keyed by the empty id, the first machine
// without one would hide every other's line.
func (s *Server) logUpdate(r *nethttp.Request, level slog.Level, msg, machineID string, args ...any) {
	key := "machine " + machineID
	if machineID == "" {
		key = "remote " + remoteIP(r).String()
	}
	s.limit.Log(r.Context(), level, msg, key, append([]any{"machine_id", matchbox.Quote(machineID), "remote", r.RemoteAddr}, args...)...)
}

// errorCodeLabel is an update_engine error code as a metric label: the
// code itself for update_engine's own (below 100), "http" for a failed
// transfer (2000 and up), "other" for anything else a client may send,
// so that the label's values stay few.
func errorCodeLabel(code int) string {
	switch {
	case code >= 0 && code < 100:
		return strconv.Itoa(code)
	case code >= 2000 && code < 3000:
		return "http"
	}
	return "other"
}
