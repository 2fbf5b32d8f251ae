package tftp

import (
	"net/netip"
	"sync"
	"time"
)

// A TFTP request is one UDP packet whose source address anyone on the
// network can forge, and the server may answer it with a packet 30 times
// its size. What a forged address can make the server do is bounded here and
// in the loop:
//
//   - a transfer never answered (no ACK or ERROR from its client, which a
//     forged source never sends: the answers go to whoever owns the
//     address) is sent its first packet twice at most and ends after two
//     timeouts, without an ERROR; the timeout a client asks for is granted
//     up to MaxClientTimeout;
//   - a request that finds every slot taken ends the oldest transfer never
//     answered (after evictAfter) and takes its place, so unanswered
//     transfers cannot keep the machines that do answer out;
//   - one address holds at most MaxPerSource transfers, and starts
//     transfers it does not answer at UnansweredRate a second after a
//     burst of MaxPerSource (a transfer answered is given back), which
//     bounds what is sent to one address that never asked.

// unansweredRetries is how often the first packet of a transfer (its
// OACK, or DATA 1) is sent again while the client has not answered. A
// client that asked and lost the answer sends its request again too.
const unansweredRetries = 1

// evictAfter is how long a transfer must have gone unanswered before a
// request that finds no free slot may end it. A client on the network
// answers within milliseconds, so this spares the transfers of a boot
// storm that are just starting, and takes those whose client is slow,
// gone or forged.
const evictAfter = 500 * time.Millisecond

// sourceLimits keeps, for each client address, the transfers it holds
// (being set up, waiting for a slot or running) and its allowance of
// transfers it leaves unanswered: a token bucket of MaxPerSource tokens
// refilled at UnansweredRate a second. Each transfer takes a token when
// it is admitted and gives it back when its client answered or when it
// never sent anything.
//
// An address is forgotten when it holds no transfer and its bucket is
// full, which is how a new one starts. Only transfers admitted make an
// entry, and those that took a token without giving it back are bounded
// by the slots' turnover (a slot goes to an unanswered transfer for
// evictAfter at least), so the map stays small; sweeps run when it has
// doubled since the last one.
type sourceLimits struct {
	max   int
	rate  float64 // tokens a second
	burst float64

	mu      sync.Mutex
	m       map[netip.Addr]*sourceState
	sweepAt int
}

type sourceState struct {
	active int
	tokens float64
	at     time.Time // when tokens was last brought up to date
}

// minSweep is the size of the map below which it is never swept.
const minSweep = 1024

func newSourceLimits(max int, rate float64) *sourceLimits {
	return &sourceLimits{max: max, rate: rate, burst: float64(max), m: make(map[netip.Addr]*sourceState), sweepAt: minSweep}
}

// refill brings s's tokens up to now.
func (l *sourceLimits) refill(s *sourceState, now time.Time) {
	if d := now.Sub(s.at); d > 0 {
		s.tokens = min(l.burst, s.tokens+d.Seconds()*l.rate)
	}
	s.at = now
}

// admit reserves a transfer for a; the result is "" when admitted, else
// the result label of the refusal: "busy-source" when a holds max
// transfers, "rate-limited" when it has no token left.
func (l *sourceLimits) admit(a netip.Addr, now time.Time) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.m[a]
	if s == nil {
		if len(l.m) >= l.sweepAt {
			l.sweepLocked(now)
		}
		s = &sourceState{tokens: l.burst, at: now}
		l.m[a] = s
	}
	l.refill(s, now)
	switch {
	case s.active >= l.max:
		return "busy-source"
	case s.tokens < 1:
		return "rate-limited"
	}
	s.active++
	s.tokens--
	return ""
}

// release ends a transfer admitted for a; refund gives its token back
// (the client answered, or nothing was sent to it).
func (l *sourceLimits) release(a netip.Addr, refund bool, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.m[a]
	if s == nil {
		return
	}
	s.active--
	l.refill(s, now)
	if refund {
		s.tokens = min(l.burst, s.tokens+1)
	}
	if s.active <= 0 && s.tokens >= l.burst {
		delete(l.m, a)
	}
}

func (l *sourceLimits) sweepLocked(now time.Time) {
	for a, s := range l.m {
		if l.refill(s, now); s.active <= 0 && s.tokens >= l.burst {
			delete(l.m, a)
		}
	}
	l.sweepAt = max(minSweep, 2*len(l.m))
}
