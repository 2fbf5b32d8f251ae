package netlimit

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Listener returns ln with the connection limits applied: a connection
// over MaxConns, or over MaxConnsPerSource from its address, is reset as
// soon as it is accepted and never reaches the server. The connections
// returned enforce the stall timeout on writes.
func (l *Limits) Listener(ln net.Listener) net.Listener { return &listener{Listener: ln, l: l} }

type listener struct {
	net.Listener
	l *Limits
}

func (ln *listener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := remoteAddr(c)
		reason := ln.l.admit(src)
		if reason == "" {
			return &conn{Conn: c, l: ln.l, src: src}, nil
		}
		ln.l.refused.WithLabelValues(reason).Inc()
		reset(c)
		_ = c.Close()
		if reason == reasonTotal {
			ln.l.logLine(context.Background(), "connection refused: too many open", src, "remote", c.RemoteAddr().String(), "limit", ln.l.cfg.MaxConns)
		} else {
			ln.l.logLine(context.Background(), "connection refused: too many from one address", src, "remote", c.RemoteAddr().String(), "limit", ln.l.cfg.MaxConnsPerSource)
		}
	}
}

// remoteAddr is the address of c's peer.
func remoteAddr(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return sourceOf(c.RemoteAddr().String())
}

// reset makes closing c send a reset: the kernel frees the connection at
// once instead of trying to deliver what is left to send.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
}

// conn is an admitted connection. Each write is given StallTimeout to
// make progress, renewed whenever it does; a write that makes none fails,
// and the connection is reset when closed. A write deadline its user sets
// (SetWriteDeadline) is kept when it is earlier.
type conn struct {
	net.Conn
	l      *Limits
	src    netip.Addr
	closed atomic.Bool

	mu       sync.Mutex
	deadline time.Time // the user's write deadline (zero: none)
	armed    time.Time // the stall deadline of the write in progress (zero: none)
}

// arm sets the write deadline of the next attempt, and reports whether it
// is the stall deadline (rather than the user's, earlier one).
func (c *conn) arm() bool {
	d := time.Now().Add(c.l.cfg.StallTimeout)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.armed = d
	stall := c.deadline.IsZero() || d.Before(c.deadline)
	if !stall {
		d = c.deadline
	}
	_ = c.Conn.SetWriteDeadline(d)
	return stall
}

func (c *conn) disarm() {
	c.mu.Lock()
	c.armed = time.Time{}
	c.mu.Unlock()
}

// stalled records a write that made no progress for StallTimeout.
func (c *conn) stalled() {
	c.l.stalled.Inc()
	reset(c.Conn)
	c.l.logLine(context.Background(), "response stalled: connection dropped", c.src, "remote", c.RemoteAddr().String(), "stall_timeout", c.l.cfg.StallTimeout)
}

// retry reports whether a write that returned err after moving n bytes
// under the stall deadline is to go on; it records a stall.
func (c *conn) retry(err error, n int64, stall bool) bool {
	if !stall || !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	if n == 0 {
		c.stalled()
		return false
	}
	return true
}

func (c *conn) Write(p []byte) (int, error) {
	done := 0
	for {
		stall := c.arm()
		n, err := c.Conn.Write(p[done:])
		c.disarm()
		done += n
		if err == nil || !c.retry(err, int64(n), stall) {
			return done, err
		}
	}
}

// ReadFrom keeps sendfile for files (net/http hands a response's file to
// its connection's ReadFrom), with the stall deadline renewed whenever
// the file moves. Other readers are copied through Write.
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	rf, ok := c.Conn.(io.ReaderFrom)
	lr := fileSource(r)
	if !ok || lr == nil {
		return io.Copy(writerOnly{c}, r)
	}
	var total int64
	for {
		stall := c.arm()
		left := lr.N
		n, err := rf.ReadFrom(lr)
		c.disarm()
		total += n
		// Going on is safe only if nothing was read that was not
		// written: true of sendfile, which moves the file's offset by
		// what it sent, not of a buffered copy.
		if err == nil || left-lr.N != n || !c.retry(err, n, stall) {
			return total, err
		}
	}
}

// fileSource returns r as a limited reader of a file, or nil if it is
// not one.
func fileSource(r io.Reader) *io.LimitedReader {
	switch v := r.(type) {
	case *io.LimitedReader:
		if _, ok := v.R.(*os.File); ok {
			return v
		}
	case *os.File:
		return &io.LimitedReader{R: v, N: math.MaxInt64}
	}
	return nil
}

// writerOnly hides conn's ReadFrom from io.Copy.
type writerOnly struct{ io.Writer }

func (c *conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	if !c.armed.IsZero() && (t.IsZero() || c.armed.Before(t)) {
		t = c.armed
	}
	return c.Conn.SetWriteDeadline(t)
}

func (c *conn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// CloseWrite half-closes the connection, as net/http does before it
// closes a connection whose request it did not read to the end.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *conn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.l.release(c.src)
	}
	return c.Conn.Close()
}
