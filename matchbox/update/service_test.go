package update

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/storage"
)

// mirror is a fixed list of mirrored versions.
type mirror []string

func (m mirror) Versions(string, string) []string { return m }

// clock is a controlled clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newService(t *testing.T, st Store, c *clock) *Service {
	t.Helper()
	s := New(st, mirror{"3815.2.0", "4081.2.0"})
	s.now = c.now
	if err := s.EnsureDefaultGroups(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// A fleet of 1,000 machines through a rollout on a controlled clock:
// never more in flight than the limit nor more grants in a period,
// nothing outside the window, the canary first, an automatic pause on
// failures, a resume, and a restart in the middle that changes nothing.
func TestFleetRollout(t *testing.T) {
	ctx := context.Background()
	backend := storage.NewMemoryBackend()
	c := &clock{t: time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)} // Monday 08:00
	s := newService(t, storage.OpenMemory(backend), c)
	weekdays, _ := ParseWindow("Mon-Fri 09:00-17:00 UTC")
	g := Group{Name: "fleet", Channel: "stable", Version: Newest, Match: Match{Kind: MatchTrack},
		Policy: Policy{MaxInFlight: 20, MaxPerPeriod: 60, Period: time.Hour, Timeout: 90 * time.Minute, Canary: 5, PauseAfterFailures: 3, Windows: []Window{weekdays}}}
	if err := s.PutGroup(ctx, g); err != nil {
		t.Fatal(err)
	}
	const fleet = 1000
	type machine struct {
		version string
		granted time.Time // zero: no grant held
		fail    bool
	}
	ms := make([]machine, fleet)
	for i := range ms {
		ms[i].version = "3815.2.0"
	}
	// Machines 100-102 fail their update, once.
	for i := 100; i < 103; i++ {
		ms[i].fail = true
	}
	var grantTimes []time.Time
	completed, restarted, paused, resumed := 0, false, false, false
	canaryDone := false
	for step := 0; step < 24*60/5*3 && completed < fleet; step++ { // 5-minute steps, 3 days at most
		now := c.now()
		for i := range ms {
			m := &ms[i]
			id := fmt.Sprintf("m%04d", i)
			if !m.granted.IsZero() {
				// Granted machines take 10 minutes, then report.
				if now.Sub(m.granted) >= 10*time.Minute {
					if m.fail {
						m.fail = false
						if err := s.Report(ctx, Client{MachineID: id}, Failed, "", "", 5); err != nil {
							t.Fatal(err)
						}
					} else {
						if err := s.Report(ctx, Client{MachineID: id}, Completed, "", "4081.2.0", 0); err != nil {
							t.Fatal(err)
						}
						m.version = "4081.2.0"
						completed++
						canaryDone = completed >= 5
					}
					m.granted = time.Time{}
				}
				continue
			}
			if (step+i)%3 != 0 {
				// Each machine checks every 15 minutes, at its own time.
				continue
			}
			ans, err := s.Decide(ctx, Check{Client: Client{MachineID: id}, Track: "fleet", Version: m.version})
			if err != nil {
				t.Fatal(err)
			}
			if ans.Version == "" {
				continue
			}
			if m.version == "4081.2.0" {
				t.Fatalf("%s granted %s while up to date", id, ans.Version)
			}
			if !weekdays.Contains(now) {
				t.Fatalf("grant at %v, outside the window", now)
			}
			if !canaryDone && len(grantTimes) >= 5 {
				t.Fatalf("grant %d at %v before the 5 canaries completed", len(grantTimes)+1, now)
			}
			m.granted = now
			grantTimes = append(grantTimes, now)
		}
		// Limits: in flight, and per any hour.
		inFlight, inHour := 0, 0
		for _, m := range ms {
			if !m.granted.IsZero() {
				inFlight++
			}
		}
		for _, gt := range grantTimes {
			if now.Sub(gt) < time.Hour {
				inHour++
			}
		}
		if inFlight > 20 || inHour > 60 {
			t.Fatalf("at %v: %d in flight (max 20), %d granted in the last hour (max 60)", now, inFlight, inHour)
		}
		if g, _ := s.Group(ctx, "fleet"); g.Policy.Paused && !paused {
			paused = true
			if g.Policy.Reason == "" {
				t.Error("paused without a reason")
			}
			// The operator looks, then resumes.
			if err := s.SetPaused(ctx, "fleet", false, ""); err != nil {
				t.Fatal(err)
			}
			resumed = true
		}
		if !restarted && completed > fleet/2 {
			// A restart: a new service over a new store of the same
			// data. Grants in flight and budgets are kept.
			s = newService(t, storage.OpenMemory(backend), c)
			restarted = true
		}
		c.add(5 * time.Minute)
	}
	if completed != fleet-3 && completed != fleet {
		t.Errorf("%d of %d machines completed", completed, fleet)
	}
	if !paused || !resumed || !restarted {
		t.Errorf("paused %v, resumed %v, restarted %v: the rollout did not go through every stage", paused, resumed, restarted)
	}
	t.Logf("%d grants, %d completed, finished at %v", len(grantTimes), completed, c.now())
}

// Machines checking at the same moment, on two servers sharing the store,
// never get more grants than the limit. The second server learns of the
// group the first wrote through the store's change feed (Follow).
func TestConcurrentChecksHoldTheLimit(t *testing.T) {
	synctest.Test(t, testConcurrentChecksHoldTheLimit)
}

func testConcurrentChecksHoldTheLimit(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	backend := storage.NewMemoryBackend()
	c := &clock{t: time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)}
	sa, sb := storage.OpenMemory(backend), storage.OpenMemory(backend)
	followed := sb.Changes(ctx, matchbox.ChangeRecord)
	a, b := newService(t, sa, c), newService(t, sb, c)
	done := make(chan struct{})
	go func() { b.Follow(ctx, followed); close(done) }()
	defer func() { cancel(); <-done }()
	if err := a.PutGroup(ctx, Group{Name: "g", Channel: "stable", Version: Newest, Match: Match{Kind: MatchTrack}, Policy: Policy{MaxInFlight: 7}}); err != nil {
		t.Fatal(err)
	}
	synctest.Wait()
	if _, ok := groupFor(*b.groups.Load(), link{}, "g"); !ok {
		t.Fatal("the second server did not follow the group written by the first")
	}
	var mu sync.Mutex
	granted := 0
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 200 {
		wg.Go(func() {
			<-start
			s := a
			if i%2 == 1 {
				s = b
			}
			ans, err := s.Decide(ctx, Check{Client: Client{MachineID: fmt.Sprintf("m%d", i)}, Track: "g", Version: "3815.2.0"})
			if err != nil {
				t.Error(err)
				return
			}
			if ans.Version != "" {
				mu.Lock()
				granted++
				mu.Unlock()
			} else if ans.Hold != HoldInFlight {
				t.Errorf("m%d held for %q, want %q", i, ans.Hold, HoldInFlight)
			}
		})
	}
	close(start)
	wg.Wait()
	if granted != 7 {
		t.Errorf("%d grants, want 7", granted)
	}
}

// Default groups exist paused, and a machine in them is held, not
// updated by surprise.
func TestDefaultGroupsHold(t *testing.T) {
	ctx := context.Background()
	c := &clock{t: time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)}
	s := newService(t, storage.NewMemory(), c)
	ans, err := s.Decide(ctx, Check{Client: Client{MachineID: "m"}, Track: "stable", Version: "3815.2.0"})
	if err != nil || ans.Version != "" || ans.Hold != HoldPaused {
		t.Fatalf("a check in the default stable group: %+v, %v", ans, err)
	}
	if err := s.SetPaused(ctx, "stable", false, ""); err != nil {
		t.Fatal(err)
	}
	if ans, err := s.Decide(ctx, Check{Client: Client{MachineID: "m"}, Track: "stable", Version: "3815.2.0"}); err != nil || ans.Version != "4081.2.0" {
		t.Fatalf("after resume: %+v, %v", ans, err)
	}
	// Up to date: no update, no hold.
	if ans, err := s.Decide(ctx, Check{Client: Client{MachineID: "n"}, Track: "stable", Version: "4081.2.0"}); err != nil || ans != (Answer{Group: "stable"}) {
		t.Fatalf("up to date: %+v, %v", ans, err)
	}
}

// Deleting a group deletes it and its rollout's progress; a group not
// there is not found; EnsureDefaultGroups brings a default one back,
// paused.
func TestDeleteGroup(t *testing.T) {
	ctx := context.Background()
	c := &clock{t: time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)}
	s := newService(t, storage.NewMemory(), c)
	if err := s.SetPaused(ctx, "stable", false, ""); err != nil {
		t.Fatal(err)
	}
	if ans, err := s.Decide(ctx, Check{Client: Client{MachineID: "m"}, Track: "stable", Version: "3815.2.0"}); err != nil || ans.Version == "" {
		t.Fatalf("check: %+v, %v", ans, err)
	}
	if err := s.DeleteGroup(ctx, "stable"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Group(ctx, "stable"); !errors.Is(err, matchbox.ErrNotFound) {
		t.Fatalf("group after delete: %v", err)
	}
	if _, err := s.store.Record(ctx, kindRollout, "stable"); !errors.Is(err, matchbox.ErrNotFound) {
		t.Fatalf("rollout after delete: %v", err)
	}
	if err := s.DeleteGroup(ctx, "stable"); !errors.Is(err, matchbox.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if err := s.EnsureDefaultGroups(ctx); err != nil {
		t.Fatal(err)
	}
	if g, err := s.Group(ctx, "stable"); err != nil || !g.Policy.Paused {
		t.Fatalf("default group after EnsureDefaultGroups: %+v, %v", g, err)
	}
}

// A hold makes no record: machine ids a client makes up while their group
// holds them cost no write and leave nothing in the store.
func TestHoldsMakeNoRecords(t *testing.T) {
	ctx := context.Background()
	c := &clock{t: time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)}
	st := storage.NewMemory()
	s := newService(t, st, c)
	for i := range 100 {
		ans, err := s.Decide(ctx, Check{Client: Client{MachineID: fmt.Sprintf("made-up-%d", i)}, Track: "stable", Version: "3815.2.0"})
		if err != nil || ans.Hold != HoldPaused {
			t.Fatalf("check %d: %+v, %v", i, ans, err)
		}
	}
	if recs, err := st.Records(ctx, kindMachine); err != nil || len(recs) != 0 {
		t.Errorf("%d machine records after holds only (%v), want none", len(recs), err)
	}
}

// A rollout's record stays small whatever the fleet: 2,500 machines
// granted at once in a group that pauses after failures but has no limit
// in flight, under a per-period limit larger than that, fit in a record
// (grants in flight followed one by one up to maxTracked, grants of the
// period counted in buckets).
func TestRolloutRecordBounded(t *testing.T) {
	ctx := context.Background()
	c := &clock{t: time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)}
	st := storage.NewMemory()
	s := newService(t, st, c)
	if err := s.PutGroup(ctx, Group{Name: "all", Channel: "stable", Version: Newest, Match: Match{Kind: MatchTrack},
		Policy: Policy{MaxPerPeriod: 50_000, Period: 24 * time.Hour, PauseAfterFailures: 10, Timeout: 24 * time.Hour}}); err != nil {
		t.Fatal(err)
	}
	const fleet = 2_500
	for i := range fleet {
		ans, err := s.Decide(ctx, Check{Client: Client{MachineID: fmt.Sprintf("m%d", i)}, Track: "all", Version: "3815.2.0"})
		if err != nil || ans.Version != "4081.2.0" {
			t.Fatalf("check %d: %+v, %v", i, ans, err)
		}
		if i%20 == 19 {
			c.add(time.Minute)
		}
	}
	data, err := st.Record(ctx, kindRollout, "all")
	if err != nil {
		t.Fatal(err)
	}
	r, _ := readRollout(data)
	if len(data) > matchbox.MaxRecord/2 || len(r.InFlight) != maxTracked || len(r.Grants) > grantBuckets+1 || r.Granted != fleet {
		t.Errorf("rollout record: %d bytes, %d in flight, %d buckets, %d granted", len(data), len(r.InFlight), len(r.Grants), r.Granted)
	}
	if c := r.counts(c.now(), Policy{MaxPerPeriod: 50_000, Period: 24 * time.Hour}); c.InPeriod != fleet {
		t.Errorf("%d grants in the period, want %d", c.InPeriod, fleet)
	}
	if err := s.PutGroup(ctx, Group{Name: "big", Channel: "stable", Version: Newest, Match: Match{Kind: MatchTrack}, Policy: Policy{MaxInFlight: maxTracked + 1}}); !errors.Is(err, matchbox.ErrInvalid) {
		t.Errorf("a max in flight above %d: %v", maxTracked, err)
	}
}

// A period's grants count for at least the period (up to a bucket's
// width longer, never shorter), so the limit holds across bucket edges.
func TestGrantBucketsHoldThePeriod(t *testing.T) {
	p := Policy{MaxPerPeriod: 3, Period: time.Hour}
	var r rollout
	r.InFlight = map[string]time.Time{}
	start := time.Date(2026, 12, 7, 10, 0, 3, 0, time.UTC)
	var times []time.Time
	for i := range 3 {
		at := start.Add(time.Duration(i) * 7 * time.Second)
		r.grant(fmt.Sprint(i), at, p)
		times = append(times, at)
	}
	width := p.Period / grantBuckets
	for d := time.Duration(0); d < p.Period+2*width+time.Minute; d += time.Second {
		now := start.Add(d)
		exact := 0
		for _, at := range times {
			if now.Sub(at) < p.Period {
				exact++
			}
		}
		got := r.counts(now, p).InPeriod
		if got < exact || got > 0 && exact == 0 && d > p.Period+2*width {
			t.Fatalf("at +%v: %d grants counted in the period, %d made in it", d, got, exact)
		}
	}
	at := start.Add(p.Period + time.Minute)
	r.expire(at, p)
	if c := r.counts(at, p); c.InPeriod != 0 || len(r.Grants) != 0 {
		t.Errorf("after the period and a bucket: %d grants, %d buckets", c.InPeriod, len(r.Grants))
	}
}

// SetGroup with keepState keeps an existing group's floors and pause (a
// body can pause, not resume); without it, the body is the whole group.
func TestSetGroupKeepsState(t *testing.T) {
	ctx := context.Background()
	c := &clock{t: time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)}
	s := newService(t, storage.NewMemory(), c)
	g := Group{Name: "w", Channel: "stable", Version: Newest, Match: Match{Kind: MatchTrack}, Floors: []string{"3815.2.0"}}
	if _, created, err := s.SetGroup(ctx, g, true); err != nil || !created {
		t.Fatalf("create: %v, %v", created, err)
	}
	if err := s.SetPaused(ctx, "w", true, "freeze"); err != nil {
		t.Fatal(err)
	}
	g.Floors, g.Policy.MaxInFlight = nil, 3
	stored, created, err := s.SetGroup(ctx, g, true)
	if err != nil || created || !stored.Policy.Paused || stored.Policy.Reason != "freeze" || len(stored.Floors) != 1 || stored.Policy.MaxInFlight != 3 {
		t.Fatalf("set keeping state: %+v, %v, %v", stored, created, err)
	}
	if got, _ := s.Group(ctx, "w"); got.Policy.Reason != "freeze" || len(got.Floors) != 1 {
		t.Errorf("stored: %+v", got)
	}
	if stored, _, err := s.SetGroup(ctx, g, false); err != nil || stored.Policy.Paused || stored.Floors != nil {
		t.Errorf("set replacing: %+v, %v", stored, err)
	}
}
