package http

import (
	"context"
	"errors"
	"io"
	"log/slog"
	nethttp "net/http"
	"strconv"
	"time"

	"matchbox.dev/matchbox"
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
// Omaha gets an HTTP error.
func (s *Server) updateEndpoint(w nethttp.ResponseWriter, r *nethttp.Request) {
	q := &query{file: "/v1/update/", host: requestHost(r)}
	if r.Method != nethttp.MethodPost {
		w.Header().Set("Allow", "POST")
		nethttp.Error(w, "method not allowed: POST an Omaha request", nethttp.StatusMethodNotAllowed)
		return
	}
	if r.ContentLength > omaha.MaxRequestSize {
		s.fail(w, r, "update", q, errors.Join(matchbox.ErrInvalid, omaha.ErrTooLarge))
		return
	}
	body, err := io.ReadAll(nethttp.MaxBytesReader(w, r.Body, omaha.MaxRequestSize))
	if err != nil {
		s.fail(w, r, "update", q, errors.Join(matchbox.ErrInvalid, omaha.ErrTooLarge))
		return
	}
	req, err := omaha.ParseRequest(body)
	if err != nil {
		s.fail(w, r, "update", q, errors.Join(matchbox.ErrInvalid, err))
		return
	}
	ctx := r.Context()
	resp := omaha.NewResponse(req, time.Now().UTC())
	for i := range req.Apps {
		app := &req.Apps[i]
		a := &resp.Apps[i]
		if app.NormalizedID() != omaha.FlatcarAppID {
			a.UnknownApp = true
			continue
		}
		client := update.Client{MachineID: app.MachineID, Alias: app.MachineAlias, Addr: remoteIP(r)}
		s.takeUpdateEvents(ctx, client, app)
		if a.UpdateCheck != nil {
			a.UpdateCheck.Update = s.updateOffer(ctx, r, client, app)
		}
	}
	out, err := resp.Marshal()
	if err != nil {
		// An offer Marshal refuses (a payload listed wrong) must not
		// reach the machine: answer no update instead.
		s.logUpdate(ctx, slog.LevelError, "update answer refused", req.Apps[0].MachineID, "err", err)
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
func (s *Server) takeUpdateEvents(ctx context.Context, client update.Client, app *omaha.App) {
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
			s.logUpdate(ctx, slog.LevelWarn, "update event not recorded", app.MachineID, "event", e.Type.String(), "err", err)
		}
	}
}

// updateOffer decides a machine's update check: the update to offer, or
// nil.
func (s *Server) updateOffer(ctx context.Context, r *nethttp.Request, client update.Client, app *omaha.App) *omaha.Update {
	ans, err := s.cfg.Updates.Decide(ctx, update.Check{Client: client, Track: app.Track, Version: app.Version, Board: app.Board})
	switch {
	case err != nil:
		s.updateChecks.WithLabelValues("error", "").Inc()
		s.logUpdate(ctx, slog.LevelWarn, "update check not decided", app.MachineID, "group", app.Track, "err", err)
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
		s.logUpdate(ctx, slog.LevelError, "granted release not mirrored", app.MachineID, "version", ans.Version, "board", app.Board)
		return nil
	}
	dir, osPayload, exts, err := s.cfg.UpdatePayloads.Payloads(channel, app.Board, ans.Version)
	if err != nil {
		s.updateChecks.WithLabelValues("error", "").Inc()
		s.logUpdate(ctx, slog.LevelError, "granted release's payloads not found", app.MachineID, "version", ans.Version, "err", err)
		return nil
	}
	s.updateChecks.WithLabelValues("update", "").Inc()
	if ans.Granted {
		s.updateGrants.WithLabelValues(ans.Group).Inc()
	}
	return &omaha.Update{Version: ans.Version, URLs: []string{"http://" + requestHost(r) + "/assets/" + dir + "/"}, Payload: osPayload, Extensions: exts}
}

// logUpdate logs a line about a machine's update, once per machine and
// message in a while (any machine can cause them).
func (s *Server) logUpdate(ctx context.Context, level slog.Level, msg, machineID string, args ...any) {
	s.limit.Log(ctx, level, msg, machineID, append([]any{"machine_id", matchbox.Quote(machineID)}, args...)...)
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
