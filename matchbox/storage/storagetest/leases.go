package storagetest

import (
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"matchbox.dev/matchbox"
)

// testLease returns the lease of 10.0.0.<i>.
func testLease(i int) matchbox.Lease {
	return matchbox.Lease{IP: netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), MAC: mac(i), State: matchbox.LeaseBound,
		Subnet: "10.0.0.0/24", Expires: time.Date(2026, 6, 1, 0, 0, i, 0, time.UTC), Updated: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)}
}

// leasesAre checks the stored leases, in any order.
func leasesAre(t *testing.T, s matchbox.LeaseStore, want ...matchbox.Lease) {
	t.Helper()
	got, err := s.Leases(t.Context())
	if err != nil {
		t.Fatalf("Leases: %v", err)
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmpopts.EquateEmpty(),
		cmpopts.SortSlices(func(a, b matchbox.Lease) bool { return a.IP.Less(b.IP) })); diff != "" {
		t.Errorf("Leases (-want +got):\n%s", diff)
	}
}

func runLeases(t *testing.T, h Harness) {
	s := h.Open(t)
	ctx := t.Context()
	leasesAre(t, s)
	// Concurrent writers, as the DHCP server commits each lease before
	// its ACK.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := 1; i <= 4; i++ {
		wg.Go(func() { errs <- s.PutLeases(ctx, testLease(i)) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("PutLeases: %v", err)
		}
	}
	leasesAre(t, s, testLease(1), testLease(2), testLease(3), testLease(4))

	// A replaced lease; several in one call; the update time filled in.
	l2 := testLease(2)
	l2.State, l2.Hostname = matchbox.LeaseDeclined, "node2"
	l5 := testLease(5)
	l5.Updated = time.Time{}
	if err := s.PutLeases(ctx, l2, l5); err != nil {
		t.Fatal(err)
	}
	got, err := s.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range got {
		if l.IP == l5.IP && l.Updated.IsZero() {
			t.Error("a lease stored without an update time has none")
		}
	}
	if err := s.PutLeases(ctx, matchbox.Lease{IP: netip.MustParseAddr("::1")}); !errors.Is(err, matchbox.ErrInvalid) {
		t.Errorf("IPv6 lease: %v, want ErrInvalid", err)
	}
	if err := s.PutLeases(ctx, testLease(6), matchbox.Lease{}); !errors.Is(err, matchbox.ErrInvalid) {
		t.Errorf("lease without an address: %v, want ErrInvalid", err)
	}
	// Missing ones are ignored.
	if err := s.DeleteLeases(ctx, testLease(1).IP, testLease(5).IP, testLease(9).IP); err != nil {
		t.Fatal(err)
	}
	leasesAre(t, s, testLease(3), testLease(4), l2)
	// One address's lease.
	if l, err := s.Lease(ctx, l2.IP); err != nil || l.State != matchbox.LeaseDeclined || l.Hostname != "node2" || !l.Expires.Equal(l2.Expires) {
		t.Errorf("Lease(%v) = %+v, %v; want the declined lease", l2.IP, l, err)
	}
	if _, err := s.Lease(ctx, testLease(1).IP); !errors.Is(err, matchbox.ErrNotFound) {
		t.Errorf("Lease of a deleted lease: %v, want ErrNotFound", err)
	}
}
