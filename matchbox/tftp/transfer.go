package tftp

import (
	"io"
	"net/netip"
	"time"
)

// A transfer is one file being sent to one client. Its state is touched
// only by the loop that runs it (and, before and after, by the goroutine
// that set it up or finished it), so it needs no lock.
//
// Blocks are numbered from 1 as in RFC 1350, but counted here in 64 bits:
// the 16-bit block number on the wire rolls over to 0 after 65535 (what
// firmware and tftp-hpa expect), and blockOf maps a number seen in an ACK
// back to the block it acknowledges.
type transfer struct {
	fd     int
	remote netip.AddrPort
	mac    string // the client's, when known, for its machine events
	name   string // the cleaned path served

	src    io.ReaderAt
	closer io.Closer // closed when the transfer ends (an open file), or nil
	size   int64

	blksize int
	window  int
	timeout time.Duration
	retries int
	oack    []byte // the OACK to send first, nil when no option was acknowledged

	blocks      uint64 // DATA blocks in all: the last one is short (maybe empty)
	acked       uint64 // the highest block the client has acknowledged
	sent        uint64 // the highest block sent so far
	oackPending bool   // the OACK is sent and its ACK (block 0) not yet seen
	answered    bool   // an ACK or ERROR came from the client: its address is not forged
	firstSent   time.Time
	deadline    time.Time
	tries       int // timeouts in a row without progress
	retransmits int

	start time.Time // when the request arrived
	// The outcome, set when the transfer ends.
	err        error
	clientCode int  // the client's error code when it ended the transfer, else -1
	evicted    bool // ended, unanswered, to give its slot to a new request
}

func newTransfer(size int64, blksize, window int) *transfer {
	return &transfer{
		size:       size,
		blksize:    blksize,
		window:     window,
		blocks:     uint64(size/int64(blksize)) + 1,
		clientCode: -1,
	}
}

// blockOf returns the block that an ACK carrying the 16-bit number b
// acknowledges: the highest block sent so far whose number is b.
func (t *transfer) blockOf(b uint16) (uint64, bool) {
	back := uint64(uint16(t.sent) - b)
	if back > t.sent {
		return 0, false
	}
	return t.sent - back, true
}

// ack handles an ACK carrying b and reports whether it moved the
// transfer on. A duplicate or stale ACK does not: answering those would
// double every later packet (the Sorcerer's Apprentice bug, RFC 1123
// 4.2.3.1); a lost packet is resent on timeout instead.
func (t *transfer) ack(b uint16) bool {
	if t.oackPending {
		if b != 0 {
			return false
		}
		t.oackPending = false
		t.tries = 0
		return true
	}
	k, ok := t.blockOf(b)
	if !ok || k <= t.acked {
		return false
	}
	t.acked = k
	t.tries = 0
	return true
}

// complete reports whether the client has acknowledged the last block.
func (t *transfer) complete() bool {
	return !t.oackPending && t.acked == t.blocks
}

// nextWindow returns the blocks to send now: from the first one not
// acknowledged, up to the window size (RFC 7440; 1 is lock-step).
func (t *transfer) nextWindow() (from, to uint64) {
	from = t.acked + 1
	to = min(t.acked+uint64(t.window), t.blocks)
	return from, to
}

// block returns the offset and length of block k's payload.
func (t *transfer) block(k uint64) (off int64, n int) {
	off = int64(k-1) * int64(t.blksize)
	if off >= t.size {
		return off, 0
	}
	return off, int(min(int64(t.blksize), t.size-off))
}

// delivered is how many bytes of the file the client has acknowledged.
func (t *transfer) delivered() int64 {
	if t.acked == 0 {
		return 0
	}
	return min(int64(t.acked)*int64(t.blksize), t.size)
}
