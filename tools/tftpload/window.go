package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// TFTP opcodes.
const (
	opRRQ   = 1
	opDATA  = 3
	opACK   = 4
	opERROR = 5
	opOACK  = 6
)

// windowDownload downloads file from server asking for the windowsize
// option (RFC 7440) as UEFI firmware does, which pin/tftp's client does
// not offer: the client acknowledges each full window (and the last
// block), and when a block is missing it acknowledges the last one it has
// in order, once, so that the server resends from there. Every wait is
// bounded by timeout, retries times.
func windowDownload(server, file string, blksize, window int, askSize bool, timeout time.Duration, retries int, w io.Writer) (n, size int64, sized bool, err error) {
	sa, err := net.ResolveUDPAddr("udp4", server)
	if err != nil {
		return 0, 0, false, err
	}
	conn, err := net.ListenUDP("udp4", nil)
	if err != nil {
		return 0, 0, false, err
	}
	defer conn.Close()

	rrq := binary.BigEndian.AppendUint16(nil, opRRQ)
	opts := []string{file, "octet", "windowsize", strconv.Itoa(window)}
	if blksize > 0 {
		opts = append(opts, "blksize", strconv.Itoa(blksize))
	}
	if askSize {
		opts = append(opts, "tsize", "0")
	}
	for _, s := range opts {
		rrq = append(append(rrq, s...), 0)
	}
	// Until the server negotiates, blocks are 512 bytes and sent one by one.
	blk, win := 512, 1
	last := rrq // what to send again on a timeout
	var peer *net.UDPAddr
	buf := make([]byte, 65536+4)
	ackBuf := make([]byte, 4)
	ack := func(b uint16) error {
		binary.BigEndian.PutUint16(ackBuf, opACK)
		binary.BigEndian.PutUint16(ackBuf[2:], b)
		last = ackBuf
		_, err := conn.WriteToUDP(ackBuf, peer)
		return err
	}
	if _, err := conn.WriteToUDP(rrq, sa); err != nil {
		return 0, 0, false, err
	}
	var expect uint16 = 1 // the next block wanted
	inWindow := 0         // blocks received since the last ACK
	gapAcked := false     // a gap before expect was already reported
	tries := 0
	for {
		conn.SetReadDeadline(time.Now().Add(timeout))
		m, from, err := conn.ReadFromUDP(buf)
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return n, size, sized, err
			}
			if tries++; tries > retries {
				return n, size, sized, fmt.Errorf("timeout waiting for block %d", expect)
			}
			to := sa
			if peer != nil {
				to = peer
			}
			if _, err := conn.WriteToUDP(last, to); err != nil {
				return n, size, sized, err
			}
			inWindow, gapAcked = 0, false
			continue
		}
		if m < 4 || (peer != nil && (from.Port != peer.Port || !from.IP.Equal(peer.IP))) {
			continue
		}
		if peer == nil {
			peer = from
		}
		p := buf[:m]
		switch binary.BigEndian.Uint16(p) {
		case opERROR:
			msg, _, _ := strings.Cut(string(p[4:]), "\x00")
			return n, size, sized, fmt.Errorf("server error %d: %s", binary.BigEndian.Uint16(p[2:]), msg)
		case opOACK:
			if expect != 1 || n > 0 {
				continue
			}
			f := strings.Split(strings.TrimSuffix(string(p[2:]), "\x00"), "\x00")
			for i := 0; i+1 < len(f); i += 2 {
				v, err := strconv.Atoi(f[i+1])
				if err != nil {
					return n, size, sized, fmt.Errorf("OACK: %s=%q", f[i], f[i+1])
				}
				switch strings.ToLower(f[i]) {
				case "blksize":
					blk = v
				case "windowsize":
					win = v
				case "tsize":
					size, sized = int64(v), true
				}
			}
			tries = 0
			if err := ack(0); err != nil {
				return n, size, sized, err
			}
		case opDATA:
			b := binary.BigEndian.Uint16(p[2:])
			if b != expect {
				// Ahead of what is wanted: a block went missing. Say once
				// where the client stands; older duplicates are dropped.
				if int16(b-expect) > 0 && !gapAcked {
					gapAcked, inWindow = true, 0
					if err := ack(expect - 1); err != nil {
						return n, size, sized, err
					}
				}
				continue
			}
			data := p[4:]
			if _, err := w.Write(data); err != nil {
				return n, size, sized, err
			}
			n += int64(len(data))
			expect++
			inWindow++
			tries, gapAcked = 0, false
			final := len(data) < blk
			if final || inWindow >= win {
				inWindow = 0
				if err := ack(b); err != nil {
					return n, size, sized, err
				}
			}
			if final {
				return n, size, sized, nil
			}
		}
	}
}
