package reinstall

import (
	"context"
	"errors"

	"matchbox.dev/matchbox"
)

// Several engines may share one store (replicas). A workflow is driven —
// its BMC steps run, its deadlines enforced — by the engine that wrote its
// last transition; every engine follows the others' writes through the
// store's change feed, so each one gates the machine (serves it the
// install profile, checks its token) and takes its reports, whichever
// replica the machine asks. A report taken here makes this engine the one
// that drives the workflow from then on.

// follow reads the workflow of mac again (mac "": every workflow, after
// the feed dropped changes) and adopts what another engine wrote.
func (l *Engine) follow(ctx context.Context, mac string) {
	if mac == "" {
		all, err := l.cfg.Store.Workflows(ctx)
		if err != nil {
			l.log.Warn("reinstall: reading workflows written elsewhere", "err", err)
			return
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		seen := make(map[string]bool, len(all))
		for _, w := range all {
			seen[w.MAC] = true
			l.adoptLocked(w)
		}
		for m := range l.flows {
			if !seen[m] {
				l.forgetLocked(m)
			}
		}
		l.publishGates()
		return
	}
	w, err := l.cfg.Store.Workflow(ctx, mac)
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case errors.Is(err, matchbox.ErrNotFound):
		// The machine was deleted, with its workflow.
		l.forgetLocked(mac)
	case err != nil:
		l.log.Warn("reinstall: reading a workflow written elsewhere", "mac", mac, "err", err)
		return
	default:
		l.adoptLocked(w)
	}
	l.publishGates()
}

// adoptLocked takes w, read from the store, for the machine's workflow
// when it is newer than this engine's view. Called with l.mu held.
func (l *Engine) adoptLocked(w matchbox.Workflow) {
	cur := l.flows[w.MAC]
	if cur != nil && cur.Generation >= w.Generation {
		return
	}
	if w.State.Done() {
		if cur != nil {
			l.log.Info("reinstall ended elsewhere", "mac", w.MAC, "state", w.State, "reason", w.Reason)
		}
		l.forgetLocked(w.MAC)
		return
	}
	if cur == nil {
		l.log.Info("reinstall followed", "mac", w.MAC, "state", w.State, "attempt", w.Attempt)
	}
	l.flows[w.MAC] = &w
	l.followed[w.MAC] = true
}

// forgetLocked drops this engine's view of mac's workflow. Called with
// l.mu held.
func (l *Engine) forgetLocked(mac string) {
	delete(l.flows, mac)
	delete(l.followed, mac)
	delete(l.poweredOn, mac)
}
