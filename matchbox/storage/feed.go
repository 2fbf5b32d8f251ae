package storage

import (
	"context"
	"math/bits"
	"sync"
	"sync/atomic"

	"matchbox.dev/matchbox"
)

// The change feed. Every write transaction collects what it changed in a
// changeSet, takes a sequence number as its last step inside the
// transaction (where the backend runs writers one at a time, so numbers
// follow commit order) and publishes the set once it committed; the feed
// delivers sets in sequence order to each subscriber's bounded queue.
// Keys are collected only for the kinds someone subscribes to, so a write
// nobody watches pays a sequence number and one uncontended lock.

// kindSet is a set of change kinds, one bit each.
type kindSet uint16

const (
	kindGroup kindSet = 1 << iota
	kindProfile
	kindTemplate
	kindToken
	kindMachine
	kindWorkflow
	kindLease
	kindBMC
	kindRecord

	allKinds kindSet = 1<<len(changeKinds) - 1
)

// changeKinds names the bits of kindSet, lowest first.
var changeKinds = [...]matchbox.ChangeKind{
	matchbox.ChangeGroup, matchbox.ChangeProfile, matchbox.ChangeTemplate, matchbox.ChangeToken,
	matchbox.ChangeMachine, matchbox.ChangeWorkflow, matchbox.ChangeLease, matchbox.ChangeBMC, matchbox.ChangeRecord,
}

// kindOf returns the bit of k (0 for a kind no store reports).
func kindOf(k matchbox.ChangeKind) kindSet {
	for i, kk := range changeKinds {
		if kk == k {
			return 1 << i
		}
	}
	return 0
}

// lowest returns the lowest kind in s and its name.
func (s kindSet) lowest() (kindSet, matchbox.ChangeKind) {
	i := bits.TrailingZeros16(uint16(s))
	return 1 << i, changeKinds[i]
}

// feedBuffer is how many changes a subscriber may fall behind by; past
// it, changes are dropped for it and it is told to reload what it missed.
const feedBuffer = 1024

// keyChange is one key a transaction wrote ("": anything of the kind);
// local when the subscriber's own store wrote it.
type keyChange struct {
	kind  kindSet
	key   string
	local bool
}

// changeSet is what one write transaction changed.
type changeSet struct {
	// want are the kinds subscribed to when the transaction began:
	// their keys are kept.
	want    kindSet
	touched kindSet // the kinds written
	keys    []keyChange
	// origin is the store that wrote (of those over one backend).
	origin *DB
}

// touch notes that the transaction wrote something of kind k.
func (c *changeSet) touch(k kindSet) { c.touched |= k }

// wants reports whether keys of kind k are kept.
func (c *changeSet) wants(k kindSet) bool { return c.want&k != 0 }

// add notes that the transaction wrote key of kind k.
func (c *changeSet) add(k kindSet, key string) {
	c.touched |= k
	if c.want&k != 0 {
		c.keys = append(c.keys, keyChange{kind: k, key: key})
	}
}

// feed delivers the changes of every store over one backend. Its zero
// value is ready.
type feed struct {
	want atomic.Uint32 // kindSet of the kinds with a subscriber
	seq  atomic.Uint64 // sequence numbers given out

	mu     sync.Mutex
	next   uint64                // the sequence number to deliver next
	held   map[uint64]*changeSet // published ahead of next; nil: nothing to tell
	subs   map[*subscriber]struct{}
	counts [len(changeKinds)]int // subscribers of each kind
}

func (f *feed) wanted() kindSet { return kindSet(f.want.Load()) }

// stamp gives a committing transaction its sequence number; it is called
// by the transaction's last step, inside the backend's writer lock.
func (f *feed) stamp() uint64 { return f.seq.Add(1) - 1 }

// publish hands over the changes of the transaction numbered seq (nil: it
// changed nothing, or did not commit). Every number stamp gave out must be
// published, once: later ones wait for it.
func (f *feed) publish(seq uint64, cs *changeSet) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if seq != f.next {
		if f.held == nil {
			f.held = make(map[uint64]*changeSet)
		}
		f.held[seq] = cs
		return
	}
	for {
		if cs != nil {
			for s := range f.subs {
				s.push(cs)
			}
		}
		f.next++
		var ok bool
		if cs, ok = f.held[f.next]; !ok {
			return
		}
		delete(f.held, f.next)
	}
}

func (f *feed) subscribe(s *subscriber) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.subs == nil {
		f.subs = make(map[*subscriber]struct{})
	}
	f.subs[s] = struct{}{}
	f.count(s.kinds, 1)
}

func (f *feed) unsubscribe(s *subscriber) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.subs, s)
	f.count(s.kinds, -1)
}

func (f *feed) count(kinds kindSet, d int) {
	var want kindSet
	for i := range f.counts {
		if kinds&(1<<i) != 0 {
			f.counts[i] += d
		}
		if f.counts[i] > 0 {
			want |= 1 << i
		}
	}
	f.want.Store(uint32(want))
}

// subscriber is one Changes channel: a bounded queue that publish fills
// and a goroutine empties into the channel.
type subscriber struct {
	kinds kindSet
	wake  chan struct{} // capacity 1: the queue may have grown
	// origin is the store subscribed on: changes it wrote are Local.
	origin *DB

	mu    sync.Mutex
	queue []keyChange
	lost  kindSet // kinds of changes dropped on a full queue, not yet told
}

// push queues what cs holds of the subscriber's kinds.
func (s *subscriber) push(cs *changeSet) {
	kinds := cs.touched & s.kinds
	if kinds == 0 {
		return
	}
	s.mu.Lock()
	s.tellLost()
	local := cs.origin == s.origin
	for _, c := range cs.keys {
		if c.kind&s.kinds != 0 {
			c.local = local
			s.enqueue(c)
		}
	}
	// Kinds whose keys were not kept: the subscriber came in while the
	// transaction ran.
	for missed := kinds &^ cs.want; missed != 0; {
		k, _ := missed.lowest()
		missed &^= k
		s.enqueue(keyChange{kind: k, local: local})
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscriber) enqueue(c keyChange) {
	if len(s.queue) >= feedBuffer {
		s.lost |= c.kind
		return
	}
	s.queue = append(s.queue, c)
}

// tellLost queues, while there is room, a reload of each kind dropped.
func (s *subscriber) tellLost() {
	for s.lost != 0 && len(s.queue) < feedBuffer {
		k, _ := s.lost.lowest()
		s.lost &^= k
		s.queue = append(s.queue, keyChange{kind: k})
	}
}

func (s *subscriber) pop() (matchbox.Change, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) == 0 {
		return matchbox.Change{}, false
	}
	c := s.queue[0]
	s.queue = s.queue[1:]
	s.tellLost()
	_, kind := c.kind.lowest()
	return matchbox.Change{Kind: kind, Key: c.key, Local: c.local}, true
}

// run empties the queue into out until ctx ends or the store closes.
func (s *subscriber) run(ctx context.Context, closed <-chan struct{}, out chan<- matchbox.Change, done func()) {
	defer close(out)
	defer done()
	for {
		c, ok := s.pop()
		if !ok {
			select {
			case <-s.wake:
				continue
			case <-ctx.Done():
				return
			case <-closed:
				return
			}
		}
		select {
		case out <- c:
		case <-ctx.Done():
			return
		case <-closed:
			return
		}
	}
}

// Changes returns the changes committed from now on, of the kinds given
// (none: every kind), by this store and, over a MemoryBackend, by every
// store over the same backend; see matchbox.ChangeFeed. The channel is
// closed when ctx ends or the store is closed.
func (db *DB) Changes(ctx context.Context, kinds ...matchbox.ChangeKind) <-chan matchbox.Change {
	set := allKinds
	if len(kinds) > 0 {
		set = 0
		for _, k := range kinds {
			set |= kindOf(k)
		}
	}
	s := &subscriber{kinds: set, wake: make(chan struct{}, 1), origin: db}
	f := &db.state.feed
	f.subscribe(s)
	out := make(chan matchbox.Change)
	go s.run(ctx, db.closed, out, func() { f.unsubscribe(s) })
	return out
}

// write runs fn in a write transaction (batch: one it may share, see
// kvStore.Batch) and publishes what it changed once it committed.
func (db *DB) write(batch bool, fn func(kvTx, *changeSet) error) error {
	w := writeRun{feed: &db.state.feed, fn: fn, origin: db}
	committed := false
	defer func() { w.publish(committed) }()
	var err error
	if batch {
		err = db.kv.Batch(w.run)
	} else {
		err = db.kv.Update(w.run)
	}
	committed = err == nil
	return err
}

// writeRun is one call of write: the runs of its function (Batch may run
// it again after rolling back a transaction it shared).
type writeRun struct {
	feed    *feed
	origin  *DB
	fn      func(kvTx, *changeSet) error
	cs      changeSet // of the last run
	seq     uint64    // of the last run, if stamped
	stamped bool
	orphans []uint64 // numbers of runs rolled back
}

func (w *writeRun) run(tx kvTx) error {
	if w.stamped {
		w.orphans = append(w.orphans, w.seq)
		w.stamped = false
	}
	w.cs = changeSet{want: w.feed.wanted(), origin: w.origin}
	if err := w.fn(tx, &w.cs); err != nil {
		return err
	}
	// The last step inside the transaction: numbers follow commit order.
	w.seq, w.stamped = w.feed.stamp(), true
	return nil
}

// publish hands every number the runs took to the feed, with the changes
// of the run that committed.
func (w *writeRun) publish(committed bool) {
	for _, n := range w.orphans {
		w.feed.publish(n, nil)
	}
	switch {
	case !w.stamped:
	case committed && w.cs.touched != 0:
		w.feed.publish(w.seq, &w.cs)
	default:
		w.feed.publish(w.seq, nil)
	}
}

// update runs fn in a write transaction of its own.
func (db *DB) update(fn func(kvTx, *changeSet) error) error { return db.write(false, fn) }

// batch runs fn in a write transaction it may share with concurrent
// callers (one commit for all); fn may run more than once.
func (db *DB) batch(fn func(kvTx, *changeSet) error) error { return db.write(true, fn) }
