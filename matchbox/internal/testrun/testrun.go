// Package testrun runs the long-running parts tests start (a server's
// Serve, an engine's Run) until the test ends, and fails the test when
// one returns an error.
package testrun

import (
	"context"
	"testing"
)

// Background runs run in a goroutine until the test ends: at cleanup its
// context is canceled and it is waited for; an error it returns fails
// the test.
func Background(t testing.TB, run func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}
