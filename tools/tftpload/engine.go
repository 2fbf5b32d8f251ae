package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// TFTP opcodes.
const (
	opRRQ   = 1
	opDATA  = 3
	opACK   = 4
	opERROR = 5
	opOACK  = 6
)

// engine runs the packets of every download in one loop on one thread (an
// epoll set of the downloads' sockets), so that the load generator spends
// a read and a write per block and leaves the rest of the machine to the
// server under test; pin/tftp's client (-client pin) parks a goroutine on
// the Go poller for every block, which costs several times more.
//
// It asks for blksize, tsize and, when window > 0, windowsize (RFC 7440)
// as UEFI firmware does: it acknowledges each full window and the last
// block, and when a block is missing it acknowledges the last one it has
// in order, once, so that the server resends from there. Every wait is
// bounded by timeout, retries times.
type engine struct {
	server  unix.SockaddrInet4
	rrq     []byte
	timeout time.Duration
	retries int

	epfd, evfd int
	mu         sync.Mutex
	pending    []*xfer

	// Owned by the loop.
	active map[int32]*xfer
	buf    []byte
}

// xfer is one download in the engine.
type xfer struct {
	w    io.Writer
	done chan got

	fd       int
	peer     bool   // connected to the server's transfer port
	expect   uint16 // the next block wanted
	blk, win int
	inWindow int
	gapAcked bool
	n        int64
	size     int64
	sized    bool
	tries    int
	deadline time.Time
	last     []byte // what to send again on a timeout: the RRQ or the last ACK
	ack      [4]byte
}

type got struct {
	n, size int64
	sized   bool
	err     error
}

func newEngine(server, file string, blksize, window int, askSize bool, timeout time.Duration, retries int) (*engine, error) {
	ap, err := netip.ParseAddrPort(server)
	if err != nil || !ap.Addr().Is4() {
		return nil, fmt.Errorf("-server %q: want IPv4:PORT", server)
	}
	rrq := binary.BigEndian.AppendUint16(nil, opRRQ)
	opts := []string{file, "octet"}
	if blksize > 0 {
		opts = append(opts, "blksize", strconv.Itoa(blksize))
	}
	if askSize {
		opts = append(opts, "tsize", "0")
	}
	if window > 0 {
		opts = append(opts, "windowsize", strconv.Itoa(window))
	}
	for _, s := range opts {
		rrq = append(append(rrq, s...), 0)
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	evfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(evfd)}); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, err
	}
	e := &engine{
		server: unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())},
		rrq:    rrq, timeout: timeout, retries: retries,
		epfd: epfd, evfd: evfd,
		active: make(map[int32]*xfer),
		buf:    make([]byte, 65536+4),
	}
	go e.run()
	return e, nil
}

// get downloads the file into w.
func (e *engine) get(w io.Writer) (n, size int64, sized bool, err error) {
	x := &xfer{w: w, done: make(chan got, 1), fd: -1, expect: 1, blk: 512, win: 1}
	e.mu.Lock()
	e.pending = append(e.pending, x)
	e.mu.Unlock()
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	unix.Write(e.evfd, one[:])
	r := <-x.done
	return r.n, r.size, r.sized, r.err
}

func (e *engine) run() {
	runtime.LockOSThread()
	events := make([]unix.EpollEvent, 256)
	var drain [8]byte
	nextScan := time.Now().Add(50 * time.Millisecond)
	for {
		wait := -1
		if len(e.active) > 0 {
			wait = max(1, int(time.Until(nextScan)/time.Millisecond)+1)
		}
		n, err := unix.EpollWait(e.epfd, events, wait)
		if err != nil && err != unix.EINTR {
			panic(fmt.Sprintf("tftpload: epoll: %v", err))
		}
		now := time.Now()
		for i := 0; i < n; i++ {
			fd := events[i].Fd
			if int(fd) == e.evfd {
				unix.Read(e.evfd, drain[:])
				e.startPending(now)
			} else if x := e.active[fd]; x != nil {
				e.readable(x, now)
			}
		}
		if !now.Before(nextScan) {
			nextScan = now.Add(50 * time.Millisecond)
			for _, x := range e.active {
				if now.After(x.deadline) {
					if x.tries++; x.tries > e.retries {
						e.end(x, fmt.Errorf("timeout waiting for block %d", x.expect))
						continue
					}
					x.inWindow, x.gapAcked = 0, false
					e.send(x, x.last, now)
				}
			}
		}
	}
}

func (e *engine) startPending(now time.Time) {
	e.mu.Lock()
	pending := e.pending
	e.pending = nil
	e.mu.Unlock()
	for _, x := range pending {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			x.done <- got{err: err}
			continue
		}
		x.fd = fd
		if err := unix.EpollCtl(e.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
			unix.Close(fd)
			x.done <- got{err: err}
			continue
		}
		e.active[int32(fd)] = x
		e.send(x, e.rrq, now)
	}
}

// send sends p (the RRQ to the server's port, else to the transfer's).
func (e *engine) send(x *xfer, p []byte, now time.Time) {
	x.last = p
	x.deadline = now.Add(e.timeout)
	var err error
	if x.peer {
		_, err = unix.Write(x.fd, p)
	} else {
		err = unix.Sendto(x.fd, p, 0, &e.server)
	}
	if err != nil && err != unix.EAGAIN && err != unix.ENOBUFS {
		e.end(x, fmt.Errorf("send: %w", err))
	}
}

func (e *engine) ackBlock(x *xfer, b uint16, now time.Time) {
	binary.BigEndian.PutUint16(x.ack[:], opACK)
	binary.BigEndian.PutUint16(x.ack[2:], b)
	e.send(x, x.ack[:], now)
}

func (e *engine) readable(x *xfer, now time.Time) {
	var m int
	var err error
	if x.peer {
		m, err = unix.Read(x.fd, e.buf)
	} else {
		var from unix.Sockaddr
		m, from, err = unix.Recvfrom(x.fd, e.buf, 0)
		if err == nil {
			in4, ok := from.(*unix.SockaddrInet4)
			if !ok || in4.Addr != e.server.Addr {
				return
			}
			// The server's first answer names the transfer's port (its
			// TID): talk to that port only from now on.
			if err := unix.Connect(x.fd, in4); err != nil {
				e.end(x, fmt.Errorf("connect: %w", err))
				return
			}
			x.peer = true
		}
	}
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		return
	case err != nil:
		e.end(x, fmt.Errorf("receive: %w", err))
		return
	case m < 4:
		return
	}
	p := e.buf[:m]
	switch binary.BigEndian.Uint16(p) {
	case opERROR:
		msg, _, _ := strings.Cut(string(p[4:]), "\x00")
		e.end(x, fmt.Errorf("server error %d: %s", binary.BigEndian.Uint16(p[2:]), msg))
	case opOACK:
		if x.expect != 1 || x.n > 0 {
			return
		}
		f := strings.Split(strings.TrimSuffix(string(p[2:]), "\x00"), "\x00")
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseInt(f[i+1], 10, 64)
			if err != nil || v < 0 {
				e.end(x, fmt.Errorf("OACK: %s=%q", f[i], f[i+1]))
				return
			}
			switch strings.ToLower(f[i]) {
			case "blksize":
				x.blk = int(v)
			case "windowsize":
				x.win = int(v)
			case "tsize":
				x.size, x.sized = v, true
			}
		}
		x.tries = 0
		e.ackBlock(x, 0, now)
	case opDATA:
		b := binary.BigEndian.Uint16(p[2:])
		if b != x.expect {
			// Ahead of what is wanted: a block went missing. Say once
			// where the client stands; older duplicates are dropped.
			if int16(b-x.expect) > 0 && !x.gapAcked {
				x.gapAcked, x.inWindow = true, 0
				e.ackBlock(x, x.expect-1, now)
			}
			return
		}
		data := p[4:]
		if _, err := x.w.Write(data); err != nil {
			e.end(x, err)
			return
		}
		x.n += int64(len(data))
		x.expect++
		x.inWindow++
		x.tries, x.gapAcked = 0, false
		final := len(data) < x.blk
		if final || x.inWindow >= x.win {
			x.inWindow = 0
			e.ackBlock(x, b, now)
		}
		if final {
			e.end(x, nil)
		}
	}
}

func (e *engine) end(x *xfer, err error) {
	if x.fd < 0 {
		return
	}
	delete(e.active, int32(x.fd))
	unix.Close(x.fd)
	x.fd = -1
	if err != nil && errors.Is(err, unix.ECONNREFUSED) {
		err = errors.New("server port unreachable")
	}
	x.done <- got{n: x.n, size: x.size, sized: x.sized, err: err}
}
