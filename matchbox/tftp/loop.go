package tftp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The data phase of every transfer runs in one loop on one thread: an
// epoll set holds each transfer's socket (a UDP socket of its own,
// connected to the client, so the kernel filters other senders and skips
// the route lookup on every send), and each ACK read is answered at once
// with the next block. A boot storm costs one read and one write per
// block and no goroutine switch; a goroutine per transfer parked on the
// Go poller costs a failed read, a park and a wake-up per block on top
// (see docs/performance.md). The reads, writes and polls that cannot
// block bypass the Go scheduler (raw.go); only the wait for the next
// packet is a blocking call.

// Under a boot storm the next ACK is microseconds away, and a sleeping
// loop must be woken by the kernel for each one, which costs more than
// looking again for a little while (on a virtual machine the clients'
// sends pay for the wake-ups). While spinTransfers or more transfers run,
// the loop polls for up to spin.d before it sleeps; spin.d adapts, as
// Linux's guest halt-polling does: a sleep that ended sooner than spinMax
// means a longer spin would have caught the packet, so it grows; a spin
// followed by a longer sleep was wasted, so it shrinks, down to none. Fast
// clients keep the loop polling; slow or few clients cost no spinning.
const (
	spinMax       = 100 * time.Microsecond
	spinMin       = 10 * time.Microsecond
	spinTransfers = 8
)

type spinner struct{ d time.Duration }

// slept adapts the spin to a sleep of d that followed it.
func (s *spinner) slept(d time.Duration) {
	if d < spinMax {
		s.d = min(max(2*s.d, spinMin), spinMax)
		return
	}
	if s.d /= 2; s.d < spinMin {
		s.d = 0
	}
}

// scanEvery is how often the loop looks for transfers whose packet timed
// out; timeouts are at least a second, so this is precise enough.
const scanEvery = 50 * time.Millisecond

// errShutdown ends the transfers still running when the server stops.
var errShutdown = errors.New("server shutting down")

// errEvicted ends a transfer never answered whose slot a new request took.
var errEvicted = errors.New("no answer from the client; its slot was given to a new request")

type loop struct {
	epfd, evfd int
	finish     func(*transfer) // called in a goroutine of its own when a transfer ends
	// wanted counts the requests waiting for a slot: the loop ends as
	// many transfers never answered (see evict) at its next scan.
	wanted atomic.Int32

	mu       sync.Mutex
	pending  []*transfer // handed over by add, started by the loop
	stopping bool
	stopAt   time.Time

	// Owned by the loop goroutine.
	xfers map[int32]*transfer
	sbuf  []byte
	rbuf  []byte
	done  chan struct{}
}

func newLoop(finish func(*transfer)) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("tftp: epoll: %w", err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("tftp: eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(evfd)}); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, fmt.Errorf("tftp: epoll: %w", err)
	}
	return &loop{
		epfd:   epfd,
		evfd:   evfd,
		finish: finish,
		xfers:  make(map[int32]*transfer),
		sbuf:   make([]byte, 4+maxBlockSize),
		rbuf:   make([]byte, 4+maxBlockSize),
		done:   make(chan struct{}),
	}, nil
}

// add hands a transfer, its socket open and connected, to the loop,
// which sends its first packet. It fails once the loop is stopping.
func (l *loop) add(t *transfer) error {
	l.mu.Lock()
	if l.stopping {
		l.mu.Unlock()
		return errShutdown
	}
	l.pending = append(l.pending, t)
	l.mu.Unlock()
	l.wake()
	return nil
}

// stop lets the running transfers finish for up to grace, ends the rest
// with an error to their clients, and returns when the loop has exited.
func (l *loop) stop(grace time.Duration) {
	l.mu.Lock()
	if !l.stopping {
		l.stopping = true
		l.stopAt = time.Now().Add(grace)
	}
	l.mu.Unlock()
	l.wake()
	<-l.done
}

func (l *loop) wake() {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	unix.Write(l.evfd, one[:])
}

func (l *loop) run() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer close(l.done)
	defer unix.Close(l.evfd)
	defer unix.Close(l.epfd)

	events := make([]unix.EpollEvent, 256)
	var drain [8]byte
	var spin spinner
	nextScan := time.Now().Add(scanEvery)
	for {
		wait := -1
		l.mu.Lock()
		stopping, stopAt := l.stopping, l.stopAt
		l.mu.Unlock()
		if len(l.xfers) > 0 || stopping {
			wait = max(1, int(time.Until(nextScan)/time.Millisecond)+1)
		}
		n, err := rawEpollPoll(l.epfd, events)
		storm := len(l.xfers) >= spinTransfers
		if n == 0 && err == nil && storm && spin.d > 0 {
			t0 := time.Now()
			for n == 0 && err == nil && time.Since(t0) < spin.d {
				n, err = rawEpollPoll(l.epfd, events)
			}
		}
		if n == 0 && err == nil {
			t0 := time.Now()
			n, err = unix.EpollWait(l.epfd, events, wait)
			if storm {
				spin.slept(time.Since(t0))
			}
		}
		if err != nil && err != unix.EINTR {
			// Only a broken epoll set gets here; end what runs.
			l.endAll(fmt.Errorf("epoll: %w", err))
			return
		}
		now := time.Now()
		for i := 0; i < n; i++ {
			fd := events[i].Fd
			if int(fd) == l.evfd {
				unix.Read(l.evfd, drain[:])
				l.startPending(now)
				continue
			}
			if t := l.xfers[fd]; t != nil {
				l.readable(t, now)
			}
		}
		if !now.Before(nextScan) {
			nextScan = now.Add(scanEvery)
			for _, t := range l.xfers {
				if now.After(t.deadline) {
					l.expired(t, now)
				}
			}
			if n := l.wanted.Load(); n > 0 {
				l.evict(now, int(n))
			}
		}
		if stopping {
			l.startPending(now) // hand-overs that raced with stop run like the others
			if len(l.xfers) == 0 || !now.Before(stopAt) {
				l.endAll(errShutdown)
				return
			}
		}
	}
}

func (l *loop) startPending(now time.Time) {
	l.mu.Lock()
	pending := l.pending
	l.pending = nil
	l.mu.Unlock()
	for _, t := range pending {
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, t.fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(t.fd)}); err != nil {
			l.fail(t, fmt.Errorf("epoll: %w", err))
			continue
		}
		l.xfers[int32(t.fd)] = t
		t.oackPending = t.oack != nil
		t.firstSent = now
		l.send(t, now)
	}
}

// send sends what the client waits for: the OACK, or the next window of
// blocks; and sets the timeout.
func (l *loop) send(t *transfer, now time.Time) {
	t.deadline = now.Add(t.timeout)
	if t.oackPending {
		l.write(t, t.oack)
		return
	}
	from, to := t.nextWindow()
	if from <= t.sent {
		t.retransmits += int(min(to, t.sent) - from + 1)
	}
	for k := from; k <= to; k++ {
		off, n := t.block(k)
		b := l.sbuf[:4+n]
		binary.BigEndian.PutUint16(b[0:], opDATA)
		binary.BigEndian.PutUint16(b[2:], uint16(k))
		if n > 0 {
			if got, err := t.src.ReadAt(b[4:], off); got < n {
				l.fail(t, fmt.Errorf("reading %s: %v", t.name, err))
				return
			}
		}
		if !l.write(t, b) {
			return
		}
		t.sent = max(t.sent, k)
	}
}

// write sends one packet; false when the transfer has ended because of it.
func (l *loop) write(t *transfer, p []byte) bool {
	_, err := rawWrite(t.fd, p)
	switch err {
	case nil, unix.EAGAIN, unix.ENOBUFS, unix.EINTR:
		// Lost packets are resent on timeout, like the network's.
		return true
	case unix.ECONNREFUSED:
		l.fail(t, errors.New("client went away (port unreachable)"))
	default:
		l.fail(t, fmt.Errorf("send: %w", err))
	}
	return false
}

func (l *loop) readable(t *transfer, now time.Time) {
	n, err := rawRead(t.fd, l.rbuf)
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		return
	case err == unix.ECONNREFUSED:
		l.fail(t, errors.New("client went away (port unreachable)"))
		return
	case err != nil:
		l.fail(t, fmt.Errorf("receive: %w", err))
		return
	case n < 4:
		return
	}
	p := l.rbuf[:n]
	switch binary.BigEndian.Uint16(p) {
	case opACK:
		// The socket is connected to the client's address and port, and
		// its own port is chosen at random: whoever sent this received
		// what the server sent, so the address is not forged.
		t.answered = true
		if !t.ack(binary.BigEndian.Uint16(p[2:])) {
			return
		}
		if t.complete() {
			l.end(t, 0, nil)
			return
		}
		l.send(t, now)
	case opERROR:
		t.answered = true
		code, msg := parseError(p)
		t.clientCode = int(code)
		t.err = fmt.Errorf("client ended the transfer: code %d: %s", code, msg)
		l.end(t, 0, nil)
	default:
		// Not a packet a reading client sends: tell it, keep going.
		l.write(t, appendError(nil, errIllegalOp, "unexpected packet"))
	}
}

func (l *loop) expired(t *transfer, now time.Time) {
	t.tries++
	if !t.answered {
		if t.tries > min(t.retries, unansweredRetries) {
			// Ended without an ERROR: a client that never answered may
			// not have asked (its address forged), and a real one asks
			// again.
			t.err = fmt.Errorf("no answer from the client after %d tries of %s", t.tries, t.timeout)
			l.end(t, 0, nil)
			return
		}
	} else if t.tries > t.retries {
		l.fail(t, fmt.Errorf("timeout: no answer after %d tries of %s", t.tries, t.timeout))
		return
	}
	l.send(t, now) // the OACK, or everything after the last ACK, again
}

// evict ends up to n transfers whose client has not answered for
// evictAfter, the oldest first, without an ERROR; the requests waiting
// for a slot get theirs as each ends. A request that gets a slot stops
// counting in wanted within microseconds, long before the next scan.
func (l *loop) evict(now time.Time, n int) {
	var old []*transfer
	for _, t := range l.xfers {
		if !t.answered && now.Sub(t.firstSent) >= evictAfter {
			old = append(old, t)
		}
	}
	slices.SortFunc(old, func(a, b *transfer) int { return a.firstSent.Compare(b.firstSent) })
	for _, t := range old[:min(n, len(old))] {
		t.evicted = true
		t.err = errEvicted
		l.end(t, 0, nil)
	}
}

// fail ends a transfer on the server's side, telling the client why.
func (l *loop) fail(t *transfer, err error) {
	if t.fd < 0 {
		return
	}
	t.err = err
	l.end(t, errNotDefined, []byte(err.Error()))
}

// end removes a transfer, sends an ERROR first when msg is set, closes
// its socket and hands it to finish.
func (l *loop) end(t *transfer, code uint16, msg []byte) {
	if t.fd < 0 {
		return
	}
	if msg != nil {
		unix.Write(t.fd, appendError(l.sbuf[:0], code, string(msg)))
	}
	delete(l.xfers, int32(t.fd))
	unix.Close(t.fd) // also leaves the epoll set
	t.fd = -1
	go l.finish(t)
}

func (l *loop) endAll(err error) {
	l.mu.Lock()
	l.stopping = true
	l.mu.Unlock()
	l.startPending(time.Now())
	for _, t := range l.xfers {
		l.fail(t, err)
	}
}
