package api

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A reload due while another write is being committed waits for it and
// covers both; an abandoned write releases the wait; a write that asks
// after a reload started gets another reload.
func TestReloaderGathersCommittingWrites(t *testing.T) {
	old := gatherWait
	gatherWait = time.Minute // longer than any test: only the writes end the wait
	t.Cleanup(func() { gatherWait = old })
	var reloads atomic.Int32
	reload := func(context.Context) error { reloads.Add(1); return nil }
	r := newReloader()
	ctx := context.Background()
	within := func(what string, done <-chan error) {
		t.Helper()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: %v", what, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no answer", what)
		}
	}

	// Two writes committing; the first asks while the second is still
	// committing: its reload waits, and covers the second too.
	r.begin()
	r.begin()
	first := make(chan error, 1)
	go func() { first <- r.do(ctx, reload) }()
	waitFor(t, func() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.running })
	second := make(chan error, 1)
	go func() { second <- r.do(ctx, reload) }()
	within("first write", first)
	within("second write", second)
	if n := reloads.Load(); n != 1 {
		t.Errorf("%d reloads for two writes committed together, want 1", n)
	}

	// A write that fails releases a reload waiting for it.
	r.begin()
	r.begin()
	third := make(chan error, 1)
	go func() { third <- r.do(ctx, reload) }()
	waitFor(t, func() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.running })
	r.abandon()
	within("write beside a failed one", third)
	if n := reloads.Load(); n != 2 {
		t.Errorf("%d reloads, want 2", n)
	}

	// Alone, a write reloads at once, without waiting.
	r.begin()
	within("lone write", func() chan error { c := make(chan error, 1); c <- r.do(ctx, reload); return c }())
	if n := reloads.Load(); n != 3 {
		t.Errorf("%d reloads, want 3", n)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.committing != 0 || r.running {
		t.Errorf("left committing %d, running %v", r.committing, r.running)
	}
}

// Each writer gets the result of the reload that covered its write, not of
// a later one; a reload that panics fails its writers, and the next works.
func TestReloaderResultsPerRound(t *testing.T) {
	r := newReloader()
	ctx := context.Background()
	gate := make(chan error)
	reload := func(context.Context) error { return <-gate }
	a, z := make(chan error, 1), make(chan error, 1)
	r.begin()
	go func() { a <- r.do(ctx, reload) }()
	waitFor(t, func() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.running && r.pending == nil })
	// z commits while a's reload reads: it needs the next round.
	r.begin()
	go func() { z <- r.do(ctx, reload) }()
	waitFor(t, func() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.pending != nil })
	errZ := errors.New("z's reload failed")
	gate <- nil  // a's round
	gate <- errZ // z's round
	if err := <-a; err != nil {
		t.Errorf("a, covered by a reload that worked: %v", err)
	}
	if err := <-z; !errors.Is(err, errZ) {
		t.Errorf("z: %v, want %v", err, errZ)
	}

	r.begin()
	err := r.do(ctx, func(context.Context) error { panic("boom") })
	if err == nil || !strings.Contains(err.Error(), "panicked: boom") {
		t.Errorf("a reload that panics: %v", err)
	}
	r.begin()
	if err := r.do(ctx, func(context.Context) error { return nil }); err != nil {
		t.Errorf("after a panic: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 10s")
		}
	}
}
