// Command tftpload measures a TFTP server under concurrent downloads: in
// each round, -clients clients start at once and each downloads -file
// completely (with the blksize option, 1468 by default as UEFI firmware
// asks, and tsize); the next round starts when every client of the round
// has finished. Downloads are lock-step unless -windowsize 4 asks for
// windows as UEFI firmware does (RFC 7440; a server without the option
// answers in lock-step). The packets of all downloads run in one loop
// (-client loop), so that the load generator takes little of the machine
// from the server; -client pin uses pin/tftp's client instead, an
// implementation independent of this project's. It checks every download's size (against tsize, and against
// -verify's size and content, byte for byte, when given) and prints one
// line:
//
//	tftpload server=10.66.0.1:69 file=ipxe.efi client=loop clients=100 rounds=3 blksize=1468 windowsize=0 ok=300 failed=0 retries=0 bytes=255158400 wall=2.41s files/s=124.5 MB/s=105.9 p50=0.75s p99=0.95s max=0.98s
//
// Used by scripts/bench-netboot:
//
//	go run ./tools/tftpload -server 10.66.0.1:69 -file ipxe.efi -clients 100 -rounds 3 -verify /boot/ipxe.efi
//
// All clients send from one address: a server that bounds the transfers
// of one address (matchbox: -tftp-max-per-source, 8 by default) must
// allow -clients of them, as scripts/bench-netboot does.
//
// Every wait is bounded: -timeout per packet (with -packet-retries), at
// most -attempts tries of one download, and -deadline for the whole run.
// The exit status is 0 when every download succeeded, 3 when some failed
// (the line is printed either way), 2 on bad flags and 1 on other errors.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pin/tftp/v3"
)

type result struct {
	took    time.Duration
	bytes   int64
	retries int
	err     error
}

func main() {
	server := flag.String("server", "10.66.0.1:69", "TFTP server HOST:PORT")
	file := flag.String("file", "ipxe.efi", "file to download")
	clients := flag.Int("clients", 100, "concurrent clients per round")
	rounds := flag.Int("rounds", 3, "rounds; each client downloads the file once per round")
	blksize := flag.Int("blksize", 1468, "blksize option (0: do not ask; 512-byte blocks)")
	tsize := flag.Bool("tsize", true, "ask for the transfer size (tsize option) and check it")
	windowsize := flag.Int("windowsize", 0, "ask for the windowsize option (RFC 7440) as UEFI firmware does (4); 0: do not ask (lock-step)")
	client := flag.String("client", "loop", "loop: this tool's client, every download in one loop; pin: pin/tftp's client, a goroutine per download (lock-step only)")
	verify := flag.String("verify", "", "local copy of the file: every download must be byte for byte the same")
	timeout := flag.Duration("timeout", time.Second, "per-packet timeout")
	packetRetries := flag.Int("packet-retries", 5, "retransmissions of one packet before a download fails")
	attempts := flag.Int("attempts", 5, "tries of one download (a refused or failed transfer is retried after -retry-wait)")
	retryWait := flag.Duration("retry-wait", 100*time.Millisecond, "wait before retrying a failed download")
	deadline := flag.Duration("deadline", 5*time.Minute, "bound on the whole run; downloads still running then count as failed")
	flag.Parse()
	if *clients < 1 || *rounds < 1 || *attempts < 1 || *packetRetries < 1 || *timeout <= 0 || *deadline <= 0 ||
		(*blksize != 0 && (*blksize < 8 || *blksize > 65464)) || *windowsize < 0 || *windowsize > 65535 ||
		(*client != "loop" && *client != "pin") || (*client == "pin" && *windowsize > 0) {
		fmt.Fprintln(os.Stderr, "tftpload: -clients, -rounds, -attempts, -packet-retries must be ≥ 1, -timeout and -deadline > 0, -blksize 0 or 8..65464, -windowsize 0..65535, -client loop or pin (pin: no -windowsize)")
		os.Exit(2)
	}

	var wantSize int64 = -1
	var want []byte
	if *verify != "" {
		data, err := os.ReadFile(*verify)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tftpload:", err)
			os.Exit(1)
		}
		wantSize, want = int64(len(data)), data
	}

	newClient := func() (*tftp.Client, error) {
		c, err := tftp.NewClient(*server)
		if err != nil {
			return nil, err
		}
		c.SetTimeout(*timeout)
		c.SetRetries(*packetRetries)
		// Retransmit right after a timeout (the library's default adds a
		// random sleep of up to a second).
		c.SetBackoff(func(int) time.Duration { return 0 })
		if *blksize != 0 {
			c.SetBlockSize(*blksize)
		}
		c.RequestTSize(*tsize)
		return c, nil
	}
	if _, err := newClient(); err != nil {
		fmt.Fprintln(os.Stderr, "tftpload:", err)
		os.Exit(1)
	}

	var eng *engine
	if *client == "loop" {
		var err error
		if eng, err = newEngine(*server, *file, *blksize, *windowsize, *tsize, *timeout, *packetRetries); err != nil {
			fmt.Fprintln(os.Stderr, "tftpload:", err)
			os.Exit(2)
		}
	}
	download := func() (int64, error) {
		var w io.Writer = io.Discard
		var m *matcher
		if want != nil {
			m = &matcher{want: want, differs: -1}
			w = m
		}
		var n, size int64
		var sized bool
		if eng != nil {
			var err error
			n, size, sized, err = eng.get(w)
			if err != nil {
				return n, err
			}
		} else {
			c, _ := newClient()
			wt, err := c.Receive(*file, "octet")
			if err != nil {
				return 0, err
			}
			// The announced size must be read before WriteTo, which drops
			// the negotiated options.
			if it, ok := wt.(tftp.IncomingTransfer); ok {
				size, sized = it.Size()
			}
			if n, err = wt.WriteTo(w); err != nil {
				return n, err
			}
		}
		if *tsize {
			if !sized {
				return n, errors.New("server did not send tsize")
			} else if size != n {
				return n, fmt.Errorf("got %d bytes, tsize said %d", n, size)
			}
		}
		if wantSize >= 0 && n != wantSize {
			return n, fmt.Errorf("got %d bytes, want %d", n, wantSize)
		}
		if m != nil && m.differs >= 0 {
			return n, fmt.Errorf("content differs from the local copy from byte %d", m.differs)
		}
		return n, nil
	}

	stop := time.Now().Add(*deadline)
	var expired atomic.Bool
	var mu sync.Mutex
	retryErrs := map[string]int{} // errors of attempts that were retried
	results := make([]result, 0, *clients**rounds)
	start := time.Now()
	for range *rounds {
		if time.Now().After(stop) {
			expired.Store(true)
			break
		}
		round := make([]result, *clients)
		var wg sync.WaitGroup
		for i := range *clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				t0 := time.Now()
				r := &round[i]
				for a := range *attempts {
					if a > 0 {
						if time.Now().Add(*retryWait).After(stop) {
							break
						}
						r.retries++
						time.Sleep(*retryWait)
					}
					r.bytes, r.err = download()
					if r.err == nil {
						break
					}
					if a+1 < *attempts {
						mu.Lock()
						retryErrs[clean(r.err)]++
						mu.Unlock()
					}
				}
				r.took = time.Since(t0)
			}()
		}
		wg.Wait()
		results = append(results, round...)
	}
	wall := time.Since(start)

	var ok, failed, retries int
	var total int64
	var took []time.Duration
	errs := map[string]int{}
	for _, r := range results {
		retries += r.retries
		if r.err != nil {
			failed++
			errs[clean(r.err)]++
			continue
		}
		ok++
		total += r.bytes
		took = append(took, r.took)
	}
	if expired.Load() {
		failed += *clients**rounds - len(results)
		errs["deadline reached"] += *clients**rounds - len(results)
	}
	slices.Sort(took)
	pct := func(p float64) string {
		if len(took) == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2fs", took[min(len(took)-1, int(p*float64(len(took))))].Seconds())
	}
	secs := wall.Seconds()
	fmt.Printf("tftpload server=%s file=%s client=%s clients=%d rounds=%d blksize=%d windowsize=%d ok=%d failed=%d retries=%d bytes=%d wall=%.2fs files/s=%.1f MB/s=%.1f p50=%s p99=%s max=%s\n",
		*server, *file, *client, *clients, *rounds, *blksize, *windowsize, ok, failed, retries, total, secs,
		float64(ok)/secs, float64(total)/secs/1e6, pct(0.50), pct(0.99), pct(1))
	if retries > 0 {
		fmt.Fprintln(os.Stderr, "tftpload: attempts retried after:", summary(retryErrs))
	}
	if failed > 0 {
		fmt.Fprintln(os.Stderr, "tftpload: failed downloads:", summary(errs))
		os.Exit(3)
	}
}

// matcher compares what is written to it with want, byte for byte: a
// comparison costs the load generator far less than a hash would, which
// leaves more of the machine to the server under test.
type matcher struct {
	want    []byte
	off     int
	differs int // the first differing offset, or -1
}

func (m *matcher) Write(p []byte) (int, error) {
	if m.differs < 0 {
		end := m.off + len(p)
		if end > len(m.want) || !bytes.Equal(p, m.want[m.off:end]) {
			m.differs = m.off
		}
	}
	m.off += len(p)
	return len(p), nil
}

// summary renders error counts, most frequent first.
func summary(errs map[string]int) string {
	var keys []string
	for e := range errs {
		keys = append(keys, e)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if errs[a] != errs[b] {
			return errs[b] - errs[a]
		}
		return strings.Compare(a, b)
	})
	var out []string
	for _, k := range keys {
		out = append(out, fmt.Sprintf("%dx %s", errs[k], k))
	}
	return strings.Join(out, "; ")
}

// clean renders an error on one printable line (TFTP error messages
// arrive with their terminating NUL).
func clean(err error) string {
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, err.Error()))
}
