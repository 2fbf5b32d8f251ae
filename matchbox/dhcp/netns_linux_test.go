package dhcp

import (
	"fmt"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// netns is a network namespace of a test's own with only its loopback, up:
// the server listens on the real DHCP ports there, as in production, apart
// from the host and from other tests, and no packet leaves it.
type netns struct {
	do chan func()
}

// newNetns makes a network namespace for t, or fails t saying why: the
// tests that need one run as root (CI does), and are not skipped.
func newNetns(t *testing.T) *netns {
	t.Helper()
	ns := &netns{do: make(chan func())}
	ready := make(chan error, 1)
	go func() {
		// The thread stays locked: when this goroutine returns, the
		// thread, still in the namespace, ends with it.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ready <- fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
			return
		}
		if err := loopbackUp(); err != nil {
			ready <- err
			return
		}
		ready <- nil
		for f := range ns.do {
			f()
		}
	}()
	if err := <-ready; err != nil {
		t.Fatalf("no network namespace for DHCP on its real ports: %v; this test needs root (or CAP_SYS_ADMIN and CAP_NET_ADMIN), as CI has", err)
	}
	t.Cleanup(func() { close(ns.do) })
	return ns
}

// run runs f in the namespace: the sockets f opens belong to it.
func (ns *netns) run(f func() error) error {
	errc := make(chan error, 1)
	ns.do <- func() { errc <- f() }
	return <-errc
}

// loopbackUp brings up the loopback interface of the calling thread's
// network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	return nil
}
