// Package tftp is matchbox's read-only TFTP front-end: it serves the iPXE
// binaries from a directory (Debian's ipxe package puts them in
// /usr/lib/ipxe) and generated files, with paths cleaned and confined to
// the root; the blksize, tsize, timeout (RFC 2348, RFC 2349) and
// windowsize (RFC 7440) options; caps on concurrent transfers, in all and
// per client address, and bounds on what a forged source address can
// make the server send (limits.go); and every transfer logged, counted
// and recorded as a machine event.
//
// Requests are read on the server's port by one goroutine and set up
// each in a goroutine of its own (path checks, opening, the file cache);
// the data phase of all transfers then runs in one loop (loop.go).
package tftp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/loglimit"
	"matchbox.dev/matchbox/metrics"
	"matchbox.dev/matchbox/recorder"
)

// Generator produces a generated file for a client that reached the
// server at localIP.
type Generator func(localIP netip.Addr) []byte

// Config configures a Server.
type Config struct {
	// Root is the directory files are served from.
	Root string
	// Generated files, by name, served before looking in Root.
	Generated map[string]Generator
	// Pinned files, by name: absolute paths served for these names even
	// though they are outside Root. Debian's ipxe package links
	// /usr/lib/ipxe/ipxe.efi to /boot/ipxe.efi; the configured boot files
	// are pinned so that such links work while every other name stays
	// confined to Root.
	Pinned map[string]string
	// MaxTransfers caps concurrent transfers (default 128); a request
	// beyond it takes the slot of a transfer its client has not answered
	// for a while, or waits up to Timeout for one, then is refused as
	// busy.
	MaxTransfers int
	// MaxPerSource caps the transfers one client address holds at once
	// (default 8), so that one machine cannot take every slot. It is also
	// how many transfers an address may leave unanswered at once.
	MaxPerSource int
	// UnansweredRate is how many transfers a second one address may start
	// and leave unanswered after that burst (default 1). A forged source
	// address never answers: this bounds what its owner is sent. A
	// transfer its client answers (an ACK or an ERROR) does not count.
	UnansweredRate float64
	// MaxClientTimeout is the longest retransmission timeout a client may
	// ask for with the timeout option (default 5s, whole seconds); one
	// longer is left out of the OACK and Timeout applies.
	MaxClientTimeout time.Duration
	// CacheBytes bounds the memory holding the content of recently served
	// files (default 64 MiB; negative: no cache). Files larger than a
	// quarter of it are always read from disk.
	CacheBytes int64
	// Timeout is the per-packet timeout (default 3s; a client may ask for
	// another with the timeout option), Retries how often a packet is
	// resent (default 5) once the client has answered; before that, the
	// first packet is resent once. When the server stops, running
	// transfers get Timeout to finish.
	Timeout  time.Duration
	Retries  int
	Recorder *recorder.Recorder
	// Booter, when set, names the group and profile of the machine in
	// its transfers' events.
	Booter   *matchbox.Booter
	Logger   *slog.Logger
	Registry prometheus.Registerer
}

// Server serves files over TFTP.
type Server struct {
	cfg         Config
	log         *slog.Logger
	limit       *loglimit.Limiter
	slots       chan struct{} // one per running transfer
	waiting     chan struct{} // one per request being set up or waiting for a slot
	sources     *sourceLimits
	cache       *fileCache
	mtus        mtuCache
	transfers   *prometheus.CounterVec
	bytes       prometheus.Counter
	retransmits prometheus.Counter
}

// New returns a Server.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxTransfers <= 0 {
		cfg.MaxTransfers = 128
	}
	if cfg.MaxPerSource <= 0 {
		cfg.MaxPerSource = 8
	}
	if cfg.UnansweredRate <= 0 {
		cfg.UnansweredRate = 1
	}
	if cfg.MaxClientTimeout <= 0 {
		cfg.MaxClientTimeout = 5 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 3 * time.Second
	}
	if cfg.Retries <= 0 {
		cfg.Retries = 5
	}
	if cfg.CacheBytes == 0 {
		cfg.CacheBytes = 64 << 20
	}
	if cfg.Recorder == nil {
		cfg.Recorder = recorder.New(nil, nil)
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		limit:   loglimit.New(cfg.Logger),
		slots:   make(chan struct{}, cfg.MaxTransfers),
		waiting: make(chan struct{}, cfg.MaxTransfers+256),
		sources: newSourceLimits(cfg.MaxPerSource, cfg.UnansweredRate),
		cache:   newFileCache(cfg.CacheBytes),
		transfers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "matchbox_tftp_transfers_total", Help: "TFTP read requests by result (sent, size-probe, not-found, refused, busy, busy-source, rate-limited, failed, unanswered, evicted).",
		}, []string{"result"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "matchbox_tftp_bytes_total", Help: "Bytes of files delivered over TFTP (acknowledged by the clients).",
		}),
		retransmits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "matchbox_tftp_retransmits_total", Help: "TFTP packets sent again after a timeout or a client's ACK asking for them.",
		}),
	}
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(s.transfers, s.bytes, s.retransmits, metrics.SuppressedLines(s.limit.Suppressed))
	}
	return s
}

// Serve answers read requests on conn (IPv4 UDP) until ctx ends, then
// gives running transfers up to the packet timeout to finish.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	l, err := newLoop(s.finished)
	if err != nil {
		return err
	}
	go l.run()

	stopped := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			conn.Close()
		case <-stopped:
		}
	}()
	listenIP := netip.IPv4Unspecified()
	if ua, ok := conn.LocalAddr().(*net.UDPAddr); ok {
		if a, ok := netip.AddrFromSlice(ua.IP.To4()); ok {
			listenIP = a
		}
	}
	// The address a request was sent to is the source of the answers and
	// what generated files name; the receiving interface bounds blksize.
	pc := ipv4.NewPacketConn(conn)
	withControl := pc.SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true) == nil

	var wg sync.WaitGroup
	buf := make([]byte, 2048)
	var serveErr error
	for {
		n, cm, src, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				serveErr = fmt.Errorf("tftp: %w", err)
			}
			break
		}
		ua, ok := src.(*net.UDPAddr)
		if !ok {
			continue
		}
		remote, ok := netip.AddrFromSlice(ua.IP.To4())
		if !ok || n < 2 {
			continue
		}
		local, ifindex := listenIP, 0
		if withControl && cm != nil {
			if a, ok := netip.AddrFromSlice(cm.Dst.To4()); ok {
				local = a
			}
			ifindex = cm.IfIndex
		}
		if op := binary.BigEndian.Uint16(buf); op != opRRQ && op != opWRQ {
			continue // not a request: a late packet of an ended transfer, or noise
		}
		// Requests beyond what can wait for a slot are refused at once.
		select {
		case s.waiting <- struct{}{}:
		default:
			s.transfers.WithLabelValues("busy").Inc()
			pc.WriteTo(appendError(nil, errNotDefined, "server busy: too many requests, retry later"), nil, ua)
			continue
		}
		pkt := bytes.Clone(buf[:n])
		wg.Add(1)
		go func() {
			defer func() { <-s.waiting; wg.Done() }()
			s.request(pc, pkt, netip.AddrPortFrom(remote, uint16(ua.Port)), local, ifindex, l)
		}()
	}
	close(stopped)
	wg.Wait()
	l.stop(s.cfg.Timeout)
	return serveErr
}

// request sets up the transfer asked for by pkt and hands it to the loop,
// or refuses it with an ERROR from the server's port.
func (s *Server) request(pc *ipv4.PacketConn, pkt []byte, remote netip.AddrPort, local netip.Addr, ifindex int, l *loop) {
	start := time.Now()
	mac, _ := s.cfg.Recorder.MACOf(remote.Addr())
	req, perr := parseRequest(pkt)
	refuse := func(result string, code uint16, err error) {
		var cm *ipv4.ControlMessage
		if local.Is4() && !local.IsUnspecified() && !local.IsMulticast() && local != netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			cm = &ipv4.ControlMessage{Src: local.AsSlice()}
		}
		// Counted before it is sent: whoever reads the ERROR then sees it
		// in the metrics.
		s.transfers.WithLabelValues(result).Inc()
		pc.WriteTo(appendError(nil, code, err.Error()), cm, net.UDPAddrFromAddrPort(remote))
		s.limit.Log(context.Background(), slog.LevelInfo, "tftp: refused", remote.Addr().String()+" "+result+" "+req.filename,
			"remote", remote.Addr(), "mac", mac, "file", matchbox.Quote(req.filename), "result", result, "err", err)
		// A flood from a forged address gets these: they are not the
		// machine's doing.
		if mac != "" && result != "busy-source" && result != "rate-limited" {
			s.record(matchbox.Event{MAC: mac, Kind: matchbox.EventTFTPFailed, IP: remote.Addr().String(), File: req.filename, Detail: err.Error()})
		}
	}
	switch {
	case perr != nil:
		refuse("refused", errIllegalOp, perr)
		return
	case req.op == opWRQ:
		refuse("refused", errAccessDenied, errors.New("this server is read-only"))
		return
	case req.mode != "octet" && req.mode != "netascii":
		refuse("refused", errIllegalOp, fmt.Errorf("transfer mode %s is not served (octet, netascii)", matchbox.Quote(req.mode)))
		return
	}

	name, err := CleanPath(req.filename)
	if err != nil {
		refuse("refused", errAccessDenied, err)
		return
	}
	// What to send is found, opened and checked before a slot is taken:
	// a request for a file that is not there, or not a regular file,
	// costs an ERROR and nothing else.
	gen, generated := s.cfg.Generated[name]
	var f *os.File // the open file, until the transfer owns it
	var fi fs.FileInfo
	if !generated {
		if f, fi, err = s.open(name); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				refuse("not-found", errNotFound, fmt.Errorf("file not found: %s", matchbox.Quote(name)))
			} else {
				refuse("refused", errAccessDenied, err)
			}
			return
		}
	}
	fd := -1
	ok := false
	defer func() {
		if !ok && f != nil {
			f.Close()
		}
		if !ok && fd >= 0 {
			unix.Close(fd)
		}
	}()

	switch s.sources.admit(remote.Addr(), time.Now()) {
	case "busy-source":
		refuse("busy-source", errNotDefined, errors.New("too many transfers from this address, retry later"))
		return
	case "rate-limited":
		refuse("rate-limited", errNotDefined, errors.New("too many unanswered transfers to this address, retry later"))
		return
	}
	defer func() {
		if !ok {
			s.sources.release(remote.Addr(), true, time.Now()) // nothing but an ERROR was sent
		}
	}()
	if !s.takeSlot(l) {
		refuse("busy", errNotDefined, errors.New("server busy: too many transfers, retry later"))
		return
	}
	defer func() {
		if !ok {
			<-s.slots
		}
	}()

	// Answers come from a socket of the transfer's own (its TID, RFC
	// 1350), connected to the client; the address it sends from is what
	// generated files name.
	fd, local, err = transferSocket(local, remote)
	if err != nil {
		refuse("failed", errNotDefined, fmt.Errorf("cannot open a transfer socket: %w", err))
		return
	}
	var src io.ReaderAt
	var closer io.Closer // an open file the transfer reads from
	var size int64
	switch {
	case generated:
		body := gen(local)
		src, size = bytes.NewReader(body), int64(len(body))
	default:
		if data, cached := s.cache.content(name, f, fi); cached {
			f.Close()
			src, size = bytes.NewReader(data), int64(len(data))
		} else {
			src, closer, size = f, f, fi.Size()
		}
		f = nil // closed, or the transfer's now
	}
	if req.mode == "netascii" {
		if size > netasciiMax {
			if closer != nil {
				closer.Close()
			}
			refuse("refused", errNotDefined, fmt.Errorf("netascii transfers are limited to %d MiB: ask in octet mode", netasciiMax>>20))
			return
		}
		data := make([]byte, size)
		_, err := src.ReadAt(data, 0)
		if closer != nil {
			closer.Close()
			closer = nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			refuse("failed", errNotDefined, fmt.Errorf("reading %s: %w", name, err))
			return
		}
		data = netascii(data)
		src, size = bytes.NewReader(data), int64(len(data))
	}

	t := s.negotiate(req, size, ifindex)
	t.fd, t.remote, t.mac, t.name = fd, remote, mac, name
	t.src, t.closer = src, closer
	t.start = start
	if err := l.add(t); err != nil {
		if closer != nil {
			closer.Close()
		}
		refuse("failed", errNotDefined, err)
		return
	}
	ok = true // the loop owns the socket and file now; finished releases the slot
}

// takeSlot takes a transfer slot, waiting up to Timeout for one (rather
// than refusing at once: firmware does not always retry a refused
// transfer); while it waits, the loop ends transfers never answered to
// free one.
func (s *Server) takeSlot(l *loop) bool {
	select {
	case s.slots <- struct{}{}:
		return true
	default:
	}
	l.wanted.Add(1)
	defer l.wanted.Add(-1)
	wait := time.NewTimer(s.cfg.Timeout)
	defer wait.Stop()
	select {
	case s.slots <- struct{}{}:
		return true
	case <-wait.C:
		return false
	}
}

// netasciiMax bounds a file sent in netascii mode, which is converted in
// memory.
const netasciiMax = 16 << 20

// negotiate builds the transfer from the request's options: blksize
// (bounded by the receiving interface's MTU), tsize, timeout and
// windowsize; the others are ignored, as RFC 2347 says.
func (s *Server) negotiate(req request, size int64, ifindex int) *transfer {
	blksize, window, timeout := 512, 1, s.cfg.Timeout
	var acked []string
	for _, name := range req.order {
		v := req.options[name]
		switch name {
		case "blksize":
			n, ok := optionInt(v, minBlockSize, maxBlockSize)
			if !ok {
				continue
			}
			if mtu := s.mtus.get(ifindex); mtu > 0 {
				n = min(n, max(mtu-28, 512)) // IPv4 and UDP headers
			}
			blksize = n
			acked = append(acked, name, strconv.Itoa(n))
		case "tsize":
			acked = append(acked, name, strconv.FormatInt(size, 10))
		case "timeout":
			// Granted as asked or not at all: RFC 2349 has the OACK
			// echo the client's value.
			n, ok := optionInt(v, 1, 255)
			if !ok || time.Duration(n)*time.Second > s.cfg.MaxClientTimeout {
				continue
			}
			timeout = time.Duration(n) * time.Second
			acked = append(acked, name, v)
		case "windowsize":
			n, ok := optionInt(v, 1, 65535)
			if !ok {
				continue
			}
			window = min(n, maxWindowSize)
			acked = append(acked, name, strconv.Itoa(window))
		}
	}
	t := newTransfer(size, blksize, window)
	t.timeout, t.retries = timeout, s.cfg.Retries
	if len(acked) > 0 {
		t.oack = appendOACK(nil, acked...)
	}
	return t
}

// transferSocket opens a UDP socket on local (any address when local is
// not one to send from), connected to remote, and returns it with the
// address the kernel chose to send from.
func transferSocket(local netip.Addr, remote netip.AddrPort) (int, netip.Addr, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, local, err
	}
	bindTo := local
	if !local.Is4() || local.IsMulticast() || local == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		bindTo = netip.IPv4Unspecified()
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: bindTo.As4()}); err != nil && bindTo.IsUnspecified() {
		unix.Close(fd)
		return -1, local, err
	} else if err != nil {
		// A directed broadcast, or an address gone since: let the
		// kernel choose.
		if err := unix.Bind(fd, &unix.SockaddrInet4{}); err != nil {
			unix.Close(fd)
			return -1, local, err
		}
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: remote.Addr().As4(), Port: int(remote.Port())}); err != nil {
		unix.Close(fd)
		return -1, local, err
	}
	if sa, err := unix.Getsockname(fd); err == nil {
		if in4, ok := sa.(*unix.SockaddrInet4); ok {
			local = netip.AddrFrom4(in4.Addr)
		}
	}
	return fd, local, nil
}

// finished accounts for a transfer the loop has ended.
func (s *Server) finished(t *transfer) {
	if t.closer != nil {
		t.closer.Close()
	}
	s.sources.release(t.remote.Addr(), t.answered, time.Now())
	<-s.slots
	n := t.delivered()
	s.bytes.Add(float64(n))
	s.retransmits.Add(float64(t.retransmits))
	remote, mac := t.remote.Addr(), t.mac
	took := time.Since(t.start).Round(time.Millisecond)
	switch {
	case t.err == nil:
		s.transfers.WithLabelValues("sent").Inc()
		s.log.Debug("tftp: sent", "remote", remote, "mac", mac, "file", t.name, "bytes", n, "blksize", t.blksize,
			"windowsize", t.window, "retransmits", t.retransmits, "took", took)
		if mac != "" {
			s.record(matchbox.Event{MAC: mac, Kind: matchbox.EventTFTPSent, IP: remote.String(), File: t.name,
				Detail: fmt.Sprintf("%d bytes", n)})
		}
	case t.clientCode == errOptionRefuse && t.acked == 0:
		// The client stopped after option negotiation (error 8): UEFI PXE
		// asks for the size first, then requests the file again.
		s.transfers.WithLabelValues("size-probe").Inc()
		s.log.Debug("tftp: client took the size and stopped", "remote", remote, "file", t.name)
	case !t.answered:
		// Not recorded on the machine: the source address may be forged.
		// An eviction means the server was full; a transfer left
		// unanswered alone is common (a request sent twice, the second
		// answer ignored).
		result, level := "unanswered", slog.LevelDebug
		if t.evicted {
			result, level = "evicted", slog.LevelInfo
		}
		s.transfers.WithLabelValues(result).Inc()
		s.limit.Log(context.Background(), level, "tftp: no answer from the client", remote.String()+" "+result,
			"remote", remote, "mac", mac, "file", t.name, "result", result, "took", took, "err", t.err)
	default:
		s.transfers.WithLabelValues("failed").Inc()
		s.limit.Log(context.Background(), slog.LevelInfo, "tftp: transfer failed", remote.String()+" "+t.name,
			"remote", remote, "mac", mac, "file", t.name, "bytes", n, "retransmits", t.retransmits, "took", took, "err", t.err)
		if mac != "" {
			s.record(matchbox.Event{MAC: mac, Kind: matchbox.EventTFTPFailed, IP: remote.String(), File: t.name, Detail: t.err.Error()})
		}
	}
}

// record records a transfer on the machine, with the group and profile
// the boot decision gives it (as its DHCP and HTTP events have).
func (s *Server) record(ev matchbox.Event) {
	if s.cfg.Booter != nil {
		d := s.cfg.Booter.Decide(map[string]string{"mac": ev.MAC})
		if d.Netboots() {
			if d.Group != nil {
				ev.Group = d.Group.ID
			}
			if d.Profile != nil {
				ev.Profile = d.Profile.ID
			}
		}
	}
	s.cfg.Recorder.Record(ev)
}

// mtuCache remembers interfaces' MTUs for a while: reading one costs a
// dump of the interface table.
type mtuCache struct {
	mu sync.Mutex
	m  map[int]mtuEntry
}

type mtuEntry struct {
	mtu     int
	expires time.Time
}

func (c *mtuCache) get(ifindex int) int {
	if ifindex <= 0 {
		return 0
	}
	now := time.Now()
	c.mu.Lock()
	e, ok := c.m[ifindex]
	c.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.mtu
	}
	mtu := 0
	if ifc, err := net.InterfaceByIndex(ifindex); err == nil {
		mtu = ifc.MTU
	}
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[int]mtuEntry)
	}
	c.m[ifindex] = mtuEntry{mtu: mtu, expires: now.Add(time.Minute)}
	c.mu.Unlock()
	return mtu
}

// errAccess is the refusal of a path that is not allowed.
var errAccess = errors.New("access violation")

// PinBootFiles returns, for the given file names, those that are symlinks
// in root leading outside it, with the absolute path they lead to.
func PinBootFiles(root string, names []string) map[string]string {
	out := map[string]string{}
	for _, n := range names {
		clean, err := CleanPath(n)
		if err != nil {
			continue
		}
		p := filepath.Join(root, filepath.FromSlash(clean))
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			continue
		}
		target, err := filepath.EvalSymlinks(p)
		if err != nil {
			continue
		}
		absRoot, err := filepath.EvalSymlinks(root)
		if err != nil {
			continue
		}
		if rel, err := filepath.Rel(absRoot, target); err == nil && !strings.HasPrefix(rel, "..") {
			continue // inside the root: no pin needed
		}
		out[clean] = target
	}
	return out
}

// CleanPath turns a requested file name into a path inside the root, or
// refuses it. A leading "/" means the root (as tftpd-hpa -s does); "..",
// NUL and other control characters, and backslashes are refused.
func CleanPath(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: empty file name", errAccess)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || r == '\\' {
			return "", fmt.Errorf("%w: invalid character in file name", errAccess)
		}
	}
	rel := strings.TrimLeft(name, "/")
	for _, part := range strings.Split(rel, "/") {
		if part == ".." {
			return "", fmt.Errorf("%w: %s leaves the root", errAccess, matchbox.Quote(name))
		}
	}
	clean := path.Clean(rel)
	if clean == "." || clean == "" {
		return "", fmt.Errorf("%w: %s is not a file", errAccess, matchbox.Quote(name))
	}
	return clean, nil
}

// open opens name inside the root (or its pinned path); symlinks leading
// outside the root are refused, and so is anything but a regular file.
// Nothing here waits on the file: opening a FIFO for reading would wait
// for a writer for ever, and opening a device may act on it. So the type
// is looked at first and a file that is not regular is not opened; the
// open does not block (O_NONBLOCK), and the type is checked again on the
// open file, which is what is read, in case the name was replaced in
// between.
func (s *Server) open(name string) (*os.File, fs.FileInfo, error) {
	var f *os.File
	if p, ok := s.cfg.Pinned[name]; ok {
		if fi, err := os.Stat(p); err != nil {
			return nil, nil, err
		} else if !fi.Mode().IsRegular() {
			return nil, nil, fmt.Errorf("%w: %s is not a regular file", errAccess, matchbox.Quote(name))
		}
		var err error
		if f, err = os.OpenFile(p, os.O_RDONLY|unix.O_NONBLOCK, 0); err != nil {
			return nil, nil, err
		}
	} else {
		root, err := os.OpenRoot(s.cfg.Root)
		if err != nil {
			return nil, nil, fmt.Errorf("tftp root: %w", err)
		}
		defer root.Close()
		fi, err := root.Stat(name)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, nil, err
		case err != nil:
			return nil, nil, fmt.Errorf("%w: %s", errAccess, matchbox.Quote(name))
		case !fi.Mode().IsRegular():
			return nil, nil, fmt.Errorf("%w: %s is not a regular file", errAccess, matchbox.Quote(name))
		}
		if f, err = root.OpenFile(name, os.O_RDONLY|unix.O_NONBLOCK, 0); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, nil, err
			}
			return nil, nil, fmt.Errorf("%w: %s", errAccess, matchbox.Quote(name))
		}
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%w: %s is not a regular file", errAccess, matchbox.Quote(name))
	}
	return f, fi, nil
}
