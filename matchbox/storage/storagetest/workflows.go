package storagetest

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"matchbox.dev/matchbox"
)

// workflow returns machine i's workflow at generation gen.
func workflow(i int, gen uint64, state matchbox.WorkflowState) matchbox.Workflow {
	at := time.Date(2026, 4, 1, 0, 0, int(gen), 0, time.UTC)
	return matchbox.Workflow{MAC: mac(i), State: state, Generation: gen, Profile: "install", EFI: true, Token: "tok",
		Attempt: int(gen), Requested: at, Entered: at, History: []matchbox.WorkflowStep{{State: state, Time: at}}}
}

func runWorkflows(t *testing.T, h Harness) {
	s := h.Open(t)
	ctx := t.Context()
	if _, err := s.Workflow(ctx, mac(1)); !errors.Is(err, matchbox.ErrNotFound) {
		t.Errorf("Workflow of a machine without one: %v, want ErrNotFound", err)
	}
	w1 := workflow(1, 1, matchbox.StateRequested)
	if err := s.SwapWorkflow(ctx, 0, w1); err != nil {
		t.Fatalf("SwapWorkflow(0, first): %v", err)
	}
	if err := s.SwapWorkflow(ctx, 0, workflow(1, 1, matchbox.StateFailed)); !errors.Is(err, matchbox.ErrPrecondition) {
		t.Errorf("SwapWorkflow(0) over a stored workflow: %v, want ErrPrecondition", err)
	}
	w2 := workflow(1, 2, matchbox.StateBooting)
	w2.MAC = strings.ToUpper(strings.ReplaceAll(w2.MAC, ":", "-")) // stored normalised
	if err := s.SwapWorkflow(ctx, 1, w2); err != nil {
		t.Fatalf("SwapWorkflow(1, next): %v", err)
	}
	w2.MAC = mac(1)
	for _, prev := range []uint64{0, 1, 3} {
		if err := s.SwapWorkflow(ctx, prev, workflow(1, prev+1, matchbox.StateFailed)); !errors.Is(err, matchbox.ErrPrecondition) {
			t.Errorf("SwapWorkflow(%d) at generation 2: %v, want ErrPrecondition", prev, err)
		}
	}
	got, err := s.Workflow(ctx, "52-54-00-00-00-01")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(w2, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("Workflow after the refused swaps (-want +got):\n%s", diff)
	}
	w0 := workflow(0, 1, matchbox.StateRequested)
	if err := s.SwapWorkflow(ctx, 0, w0); err != nil {
		t.Fatal(err)
	}
	all, err := s.Workflows(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]matchbox.Workflow{w0, w2}, all, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("Workflows, in MAC order (-want +got):\n%s", diff)
	}
}
