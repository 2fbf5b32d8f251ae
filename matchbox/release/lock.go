package release

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// lockPoll is how often a waiter retries a lock file another process holds.
const lockPoll = 100 * time.Millisecond

// lock takes the lock named by path, a dot file beside what it guards:
// first among this process's goroutines, then among processes with
// flock(2) on the file. It waits until ctx is done. The returned function
// releases the lock and removes the file.
func (m *Mirror) lock(ctx context.Context, path string) (func(), error) {
	unlockMem, err := m.locks.lock(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("waiting for lock %s: %w", path, err)
	}
	unlockFile, err := lockFile(ctx, path)
	if err != nil {
		unlockMem()
		return nil, err
	}
	return func() {
		unlockFile()
		unlockMem()
	}, nil
}

// keyedMutex is a set of mutexes by name whose waiters honour a context.
type keyedMutex struct {
	mu   sync.Mutex
	held map[string]chan struct{} // closed when released
}

func (k *keyedMutex) lock(ctx context.Context, key string) (func(), error) {
	for {
		k.mu.Lock()
		released, busy := k.held[key]
		if !busy {
			if k.held == nil {
				k.held = make(map[string]chan struct{})
			}
			done := make(chan struct{})
			k.held[key] = done
			k.mu.Unlock()
			return func() {
				k.mu.Lock()
				delete(k.held, key)
				k.mu.Unlock()
				close(done)
			}, nil
		}
		k.mu.Unlock()
		select {
		case <-released:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// lockFile takes an exclusive flock on path, creating the file. Holders
// remove the file before they release it, so after locking, lockFile checks
// that path still names the file it locked and starts over if not.
func lockFile(ctx context.Context, path string) (func(), error) {
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("lock: %w", err)
		}
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			if sameFile(f, path) {
				return func() {
					os.Remove(path)
					f.Close()
				}, nil
			}
			f.Close()
			continue
		}
		f.Close()
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for lock %s (held by another process): %w", path, context.Cause(ctx))
		case <-time.After(lockPoll):
		}
	}
}

func sameFile(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Stat(path)
	return err == nil && os.SameFile(a, b)
}
