package dhcp

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/ipv4"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/loglimit"
	"matchbox.dev/matchbox/metrics"
	"matchbox.dev/matchbox/recorder"
)

// Listener is one socket the server answers on.
type Listener struct {
	Conn net.PacketConn
	// Interface names the network interface, for logs.
	Interface string
	// ServerIP is this interface's IPv4 address: option 54, siaddr and
	// the host of boot URLs.
	ServerIP netip.Addr
	// Prefix is the interface's subnet: non-relayed clients get addresses
	// from the pool inside it.
	Prefix netip.Prefix
	Mode   Mode
	// BINL marks the PXE boot-server socket (UDP 4011).
	BINL bool
}

// Config configures a Server.
type Config struct {
	Subnets   []Subnet
	LeaseTime time.Duration
	BootFiles BootFiles
	// BootURL is the iPXE script URL given to iPXE clients reaching us at
	// serverIP (http://serverIP:port/boot.ipxe by default).
	BootURL func(serverIP netip.Addr) string
	// HTTPBootURL is the full URL of a boot file for UEFI HTTP Boot.
	HTTPBootURL  func(serverIP netip.Addr, file string) string
	Booter       Booter
	Reservations Reservations
	Leases       matchbox.LeaseStore
	// Changes, when set, is the change feed of the store Leases is part
	// of: the leases other servers sharing the store write are applied to
	// this server's table as they are committed.
	Changes  matchbox.ChangeFeed
	Recorder *recorder.Recorder
	Logger   *slog.Logger
	Registry prometheus.Registerer
	// MaxInFlight bounds packets handled at once (default 1024).
	MaxInFlight int
	// OfferHold is how long an offer holds its address in full mode
	// (default DefaultOfferHold, from MinOfferHold to MaxOfferHold); when
	// a pool has no free address, the oldest offer is reclaimed sooner.
	OfferHold time.Duration
	// UnknownShare is the percent of each pool (1 to 100, default
	// DefaultUnknownShare; 100: no limit) that unknown clients may hold:
	// those with neither a reservation nor a group that matches them.
	UnknownShare int
	// UnknownEventRate is how many events of unknown clients are recorded
	// a second, in bursts of up to 20 seconds' worth (default
	// DefaultUnknownEventRate); the others are counted and dropped.
	UnknownEventRate float64
}

// Default and bound of Config.UnknownEventRate.
const (
	DefaultUnknownEventRate = 50
	MaxUnknownEventRate     = 100_000
)

// unknownEventBurst is how many seconds of UnknownEventRate a burst holds.
const unknownEventBurst = 20

// Server answers DHCP and PXE requests.
type Server struct {
	cfg     Config
	log     *slog.Logger
	limit   *loglimit.Limiter
	leases  *leaseTable
	rec     *recorder.Recorder
	answers *answerCache
	sem     chan struct{}
	packets *prometheus.CounterVec
	replies *prometheus.CounterVec
	dropped *prometheus.CounterVec
	// unknownEvents bounds the events unknown clients cause.
	unknownEvents *eventBudget
	// counters caches child counters by labels.
	counters sync.Map
	// leaseChanges are the store's lease changes (nil: not followed).
	leaseChanges <-chan matchbox.Change
}

// New returns a Server; it loads persisted leases in full mode.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.LeaseTime <= 0 {
		cfg.LeaseTime = time.Hour
	}
	if cfg.BootFiles == nil {
		cfg.BootFiles = DefaultBootFiles()
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 1024
	}
	if cfg.Recorder == nil {
		cfg.Recorder = recorder.New(nil, nil)
	}
	if cfg.BootURL == nil || cfg.HTTPBootURL == nil || cfg.Booter == nil {
		return nil, errors.New("dhcp: BootURL, HTTPBootURL and Booter are required")
	}
	if cfg.OfferHold == 0 {
		cfg.OfferHold = DefaultOfferHold
	}
	if cfg.OfferHold < MinOfferHold || cfg.OfferHold > MaxOfferHold {
		return nil, fmt.Errorf("dhcp: offer hold %v: want %v to %v", cfg.OfferHold, MinOfferHold, MaxOfferHold)
	}
	if cfg.UnknownShare == 0 {
		cfg.UnknownShare = DefaultUnknownShare
	}
	if cfg.UnknownShare < 1 || cfg.UnknownShare > 100 {
		return nil, fmt.Errorf("dhcp: unknown clients' share %d%%: want 1 to 100", cfg.UnknownShare)
	}
	if cfg.UnknownEventRate == 0 {
		cfg.UnknownEventRate = DefaultUnknownEventRate
	}
	if !(cfg.UnknownEventRate > 0 && cfg.UnknownEventRate <= MaxUnknownEventRate) {
		return nil, fmt.Errorf("dhcp: unknown clients' event rate %v/s: want more than 0, at most %d", cfg.UnknownEventRate, MaxUnknownEventRate)
	}
	for i := range cfg.Subnets {
		if cfg.Subnets[i].LeaseTime <= 0 {
			cfg.Subnets[i].LeaseTime = cfg.LeaseTime
		}
	}
	s := &Server{
		cfg:           cfg,
		log:           cfg.Logger,
		limit:         loglimit.New(cfg.Logger),
		leases:        newLeaseTable(cfg.Subnets, cfg.Leases, cfg.OfferHold, cfg.UnknownShare),
		rec:           cfg.Recorder,
		answers:       newAnswerCache(),
		sem:           make(chan struct{}, cfg.MaxInFlight),
		unknownEvents: newEventBudget(cfg.UnknownEventRate, cfg.UnknownEventRate*unknownEventBurst),
		packets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "matchbox_dhcp_requests_total", Help: "DHCP requests received, by mode and message type.",
		}, []string{"mode", "type"}),
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "matchbox_dhcp_replies_total", Help: "DHCP replies sent, by mode and message type (offer, ack, nak, proxy-offer, binl-ack).",
		}, []string{"mode", "type"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "matchbox_dhcp_dropped_total", Help: "DHCP packets not answered, by reason.",
		}, []string{"reason"}),
	}
	if cfg.Changes != nil && cfg.Leases != nil && len(cfg.Subnets) > 0 {
		// Subscribed before the load: nothing written between is missed.
		s.leaseChanges = cfg.Changes.Changes(ctx, matchbox.ChangeLease)
	}
	n, err := s.leases.load(ctx, s.unknownMAC)
	if err != nil {
		return nil, fmt.Errorf("dhcp: load leases: %w", err)
	}
	if len(cfg.Subnets) > 0 {
		s.log.Info("dhcp leases loaded", "leases", n, "subnets", len(cfg.Subnets))
	}
	if cfg.Registry != nil {
		inUse := prometheus.NewDesc("matchbox_dhcp_leases_in_use", "Active bound leases per subnet.", []string{"subnet"}, nil)
		reclaimed := prometheus.NewDesc("matchbox_dhcp_offers_reclaimed_total",
			"Offers taken back, before they expired, for another client because the pool had no free address.", []string{"subnet"}, nil)
		cfg.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "matchbox_dhcp_repeat_answers_total", Help: "Repeated proxy and port 4011 requests answered from the answer kept for them.",
		}, func() float64 { return float64(s.answers.hits.Load()) }), prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "matchbox_dhcp_kept_answers_dropped_total", Help: "Answers kept for repeated proxy and port 4011 requests dropped because the table of them was full.",
		}, func() float64 { return float64(s.answers.dropped.Load()) }), prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "matchbox_dhcp_events_dropped_total", Help: "Events of unknown DHCP clients not recorded, beyond their rate.",
		}, func() float64 { return float64(s.unknownEvents.droppedCount()) }), collectorFunc{
			desc: reclaimed,
			collect: func(ch chan<- prometheus.Metric) {
				for subnet, n := range s.leases.reclaimedBySubnet() {
					ch <- prometheus.MustNewConstMetric(reclaimed, prometheus.CounterValue, float64(n), subnet)
				}
			},
		})
		cfg.Registry.MustRegister(s.packets, s.replies, s.dropped, metrics.SuppressedLines(s.limit.Suppressed), collectorFunc{
			desc: inUse,
			collect: func(ch chan<- prometheus.Metric) {
				for subnet, n := range s.leases.inUse() {
					ch <- prometheus.MustNewConstMetric(inUse, prometheus.GaugeValue, float64(n), subnet)
				}
			},
		})
	}
	return s, nil
}

// collectorFunc is a prometheus.Collector from a function.
type collectorFunc struct {
	desc    *prometheus.Desc
	collect func(chan<- prometheus.Metric)
}

func (c collectorFunc) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c collectorFunc) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }

// Leases returns the leases held in memory (bound, offered and declined).
func (s *Server) Leases() []matchbox.Lease { return s.leases.all() }

// Release frees the lease of ip on an operator's request and records it on
// the machine.
func (s *Server) Release(ctx context.Context, ip netip.Addr) (matchbox.Lease, error) {
	l, err := s.leases.forceRelease(ctx, ip.Unmap())
	if err == nil && l.MAC != "" {
		s.rec.Record(matchbox.Event{MAC: l.MAC, Kind: matchbox.EventDHCPRelease, IP: ip.String(), Detail: "released by an operator"})
	}
	return l, err
}

// Serve answers on every listener until ctx ends, then closes them.
func (s *Server) Serve(ctx context.Context, listeners ...Listener) error {
	var wg sync.WaitGroup
	errc := make(chan error, len(listeners))
	if s.leaseChanges != nil {
		wg.Go(func() { s.followLeases(ctx, s.leaseChanges) })
	}
	for _, l := range listeners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.serveOne(ctx, l); err != nil {
				errc <- err
			}
		}()
	}
	go func() {
		<-ctx.Done()
		for _, l := range listeners {
			l.Conn.Close()
		}
	}()
	wg.Wait()
	// Wait for packets still being handled.
	for range cap(s.sem) {
		s.sem <- struct{}{}
	}
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// readersPerSocket is how many goroutines read each socket. Packets are
// handled by the goroutine that read them (no goroutine per packet), except
// those that wait for a lease commit, which get their own.
var readersPerSocket = max(1, runtime.GOMAXPROCS(0)/2)

func (s *Server) serveOne(ctx context.Context, l Listener) error {
	var wg sync.WaitGroup
	errc := make(chan error, readersPerSocket)
	for range readersPerSocket {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.readLoop(ctx, l); err != nil {
				errc <- err
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// batchSize is how many datagrams one system call reads.
const batchSize = 32

func (s *Server) readLoop(ctx context.Context, l Listener) error {
	if uc, ok := l.Conn.(*net.UDPConn); ok {
		return s.readBatches(ctx, l, ipv4.NewPacketConn(uc))
	}
	buf := make([]byte, 4096)
	for {
		n, peer, err := l.Conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("dhcp %s: %w", l.Interface, err)
		}
		s.dispatch(ctx, l, buf[:n], peer)
	}
}

// dispatch answers one datagram read by a socket reader: inline, or in its
// own goroutine when the answer waits for a lease commit.
func (s *Server) dispatch(ctx context.Context, l Listener, raw []byte, peer net.Addr) {
	s.answer(ctx, l, raw, peer, false)
}

// answer answers one datagram: from a kept answer, inline, or (unless
// inline is set) in its own goroutine when the answer waits for a lease
// commit.
func (s *Server) answer(ctx context.Context, l Listener, raw []byte, peer net.Addr, inline bool) {
	if s.answerKept(l, raw, peer) {
		return
	}
	m, err := dhcpv4.FromBytes(raw)
	if err != nil {
		s.drop("malformed")
		s.log.Debug("dhcp: malformed packet", "interface", l.Interface, "peer", peer, "err", err)
		return
	}
	if !inline && commits(l, m) {
		s.sem <- struct{}{}
		go func() {
			defer func() { <-s.sem }()
			s.respond(ctx, l, m, peer, nil)
		}()
		return
	}
	s.respond(ctx, l, m, peer, raw)
}

// readBatches is readLoop on a UDP socket: under load one system call
// reads many datagrams (recvmmsg). Replies go out one by one as each is
// ready: sent as one batch (sendmmsg) they reach a client in bursts that
// overflow its socket buffer at high rates (measured with perfdhcp: a
// quarter of the drops at 25,000 offers/s, half the latency).
func (s *Server) readBatches(ctx context.Context, l Listener, pc *ipv4.PacketConn) error {
	msgs := make([]ipv4.Message, batchSize)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 4096)}
	}
	for {
		n, err := pc.ReadBatch(msgs, 0)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("dhcp %s: %w", l.Interface, err)
		}
		for i := range n {
			s.dispatch(ctx, l, msgs[i].Buffers[0][:msgs[i].N], msgs[i].Addr)
		}
	}
}

// commits reports whether answering m waits for the lease store.
func commits(l Listener, m *dhcpv4.DHCPv4) bool {
	if l.Mode != ModeFull || l.BINL {
		return false
	}
	switch m.MessageType() {
	case dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeDecline, dhcpv4.MessageTypeRelease:
		return true
	}
	return false
}

// client is what a request tells about the machine.
type client struct {
	mac      string
	uuid     string
	arch     uint16
	hasArch  bool
	ipxe     bool
	vendor   string // option 60 as sent
	httpBoot bool
	pxe      bool // PXEClient, HTTPClient or iPXE
}

func classify(m *dhcpv4.DHCPv4) client {
	c := client{mac: m.ClientHWAddr.String(), vendor: m.ClassIdentifier()}
	if archs := m.ClientArch(); len(archs) > 0 {
		c.arch, c.hasArch = uint16(archs[0]), true
	}
	for _, uc := range m.UserClass() {
		if uc == "iPXE" {
			c.ipxe = true
		}
	}
	c.httpBoot = strings.HasPrefix(c.vendor, "HTTPClient")
	c.pxe = c.ipxe || c.httpBoot || strings.HasPrefix(c.vendor, "PXEClient")
	if !c.hasArch && c.pxe {
		// The arch field of option 60 ("PXEClient:Arch:00007:…") is decimal.
		if i := strings.Index(c.vendor, ":Arch:"); i >= 0 && len(c.vendor) >= i+11 {
			if v, err := strconv.ParseUint(c.vendor[i+6:i+11], 10, 16); err == nil {
				c.arch, c.hasArch = uint16(v), true
			}
		}
	}
	if g := m.GetOneOption(dhcpv4.OptionClientMachineIdentifier); len(g) == 17 && g[0] == 0 {
		c.uuid = formatGUID(g[1:])
	}
	return c
}

// formatGUID renders option 97's 16 bytes as PXE firmware prints them
// (the first three fields little-endian, as iPXE's ${uuid} does).
func formatGUID(b []byte) string {
	// The first three fields are little-endian (SMBIOS 2.6 and later, as
	// iPXE's ${uuid} prints them); one allocation, on every PXE packet.
	const hexdigits = "0123456789abcdef"
	order := [16]int{3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15}
	var out [36]byte
	j := 0
	for i, k := range order {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out[j] = '-'
			j++
		}
		out[j], out[j+1] = hexdigits[b[k]>>4], hexdigits[b[k]&0x0f]
		j += 2
	}
	return string(out[:])
}

// boot is a PXE answer.
type boot struct {
	file   string
	vendor string // option 60 to echo
	sel    matchbox.Selection
}

// bootAnswer decides what a PXE client is told to boot, or why nothing.
// The returned boot carries the machine's selection (for its host name)
// even when there is no boot answer.
func (s *Server) bootAnswer(l Listener, c client) (boot, string) {
	d := s.decide(c)
	return s.bootFor(l, c, &d)
}

// decide asks the core's decision about the client.
func (s *Server) decide(c client) matchbox.Decision {
	labels := map[string]string{"mac": c.mac}
	if c.uuid != "" {
		labels["uuid"] = c.uuid
	}
	return s.cfg.Booter.Decide(labels)
}

// known reports whether the client with mac is one the configuration
// expects (Decision.Grouped) or has a reservation. Other clients are
// unknown: their share of each pool and the events they cause are bounded.
func (s *Server) known(mac string, d *matchbox.Decision) bool {
	if d.Grouped() {
		return true
	}
	if s.cfg.Reservations != nil {
		_, ok := s.cfg.Reservations.Reserved(mac)
		return ok
	}
	return false
}

// bootFor is bootAnswer from the core's decision.
func (s *Server) bootFor(l Listener, c client, d *matchbox.Decision) (boot, string) {
	sel := d.Selection
	if !c.pxe {
		return boot{sel: sel}, "not a PXE client"
	}
	if !d.Netboots() {
		return boot{sel: sel}, d.Err.Error()
	}
	switch {
	case c.ipxe:
		// iPXE already runs: send it the script, never a binary (no loop).
		return boot{file: s.cfg.BootURL(l.ServerIP), vendor: vendorEcho(c, "PXEClient"), sel: sel}, ""
	case c.httpBoot || (c.hasArch && httpBootArch(c.arch)):
		f, ok := s.cfg.BootFiles[c.arch]
		if !ok {
			return boot{sel: sel}, fmt.Sprintf("no boot file configured for %s", ArchName(c.arch))
		}
		return boot{file: s.cfg.HTTPBootURL(l.ServerIP, f), vendor: "HTTPClient", sel: sel}, ""
	default:
		if !c.hasArch {
			c.arch = 0
		}
		f, ok := s.cfg.BootFiles[c.arch]
		if !ok {
			return boot{sel: sel}, fmt.Sprintf("no boot file configured for %s", ArchName(c.arch))
		}
		return boot{file: f, vendor: "PXEClient", sel: sel}, ""
	}
}

func vendorEcho(c client, def string) string {
	if strings.HasPrefix(c.vendor, "PXEClient") || strings.HasPrefix(c.vendor, "HTTPClient") {
		return c.vendor[:strings.IndexByte(c.vendor+":", ':')]
	}
	return def
}

// addBoot puts a PXE answer into a reply.
func addBoot(reply *dhcpv4.DHCPv4, req *dhcpv4.DHCPv4, l Listener, b boot, c client, proxy bool) {
	reply.ServerIPAddr = net.IP(l.ServerIP.AsSlice())
	reply.BootFileName = b.file
	reply.UpdateOption(dhcpv4.OptBootFileName(b.file))
	reply.UpdateOption(dhcpv4.OptClassIdentifier(b.vendor))
	if !c.ipxe && !c.httpBoot {
		reply.UpdateOption(dhcpv4.OptTFTPServerName(l.ServerIP.String()))
	}
	if g := req.GetOneOption(dhcpv4.OptionClientMachineIdentifier); g != nil {
		reply.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, g))
	}
	// Legacy BIOS PXE ROMs in proxy mode need PXE discovery control
	// (option 43, sub-option 6 = 8: boot the file in this packet). UEFI
	// clients get no option 43 and move to UDP 4011, as EDK2 expects.
	if proxy && !c.ipxe && c.hasArch && c.arch == 0 {
		reply.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, []byte{6, 1, 8, 255}))
	}
}

// handle answers one raw packet synchronously, commits included (see
// respond); tests and benchmarks use it.
func (s *Server) handle(ctx context.Context, l Listener, pkt []byte, peer net.Addr) {
	s.answer(ctx, l, pkt, peer, true)
}

// count increments vec{mode, kind}, caching the child counter: resolving
// label values hashes them on every call.
func (s *Server) count(vec *prometheus.CounterVec, which, mode, kind string) {
	key := [3]string{which, mode, kind}
	if c, ok := s.counters.Load(key); ok {
		c.(prometheus.Counter).Inc()
		return
	}
	c := vec.WithLabelValues(mode, strings.ToLower(kind))
	s.counters.Store(key, c)
	c.Inc()
}

func (s *Server) drop(reason string) {
	if c, ok := s.counters.Load([3]string{"drop", reason}); ok {
		c.(prometheus.Counter).Inc()
		return
	}
	c := s.dropped.WithLabelValues(reason)
	s.counters.Store([3]string{"drop", reason}, c)
	c.Inc()
}

// respond answers one packet. Errors and drops are logged and counted here.
// respond answers m; raw, when given, is the request as received, and the
// answer is kept for its repeats when the listener allows it.
func (s *Server) respond(ctx context.Context, l Listener, m *dhcpv4.DHCPv4, peer net.Addr, raw []byte) {
	if m.OpCode != dhcpv4.OpcodeBootRequest || len(m.ClientHWAddr) != 6 {
		s.drop("not-a-request")
		return
	}
	mt := m.MessageType()
	mode := string(l.Mode)
	if l.BINL {
		mode += "-4011"
	}
	s.count(s.packets, "req", mode, mt.String())
	c := classify(m)
	var reply *dhcpv4.DHCPv4
	var event matchbox.Event
	// Proxy and port 4011 answers go only to machines with a group.
	known := true
	switch {
	case l.BINL:
		reply, event = s.binl(l, m, c)
	case l.Mode == ModeProxy:
		reply, event = s.proxy(l, m, c)
	case l.Mode == ModeFull:
		reply, event, known = s.full(ctx, l, m, c)
	}
	if reply == nil {
		return
	}
	data, dst := reply.ToBytes(), destination(m, peer)
	if _, err := l.Conn.WriteTo(data, dst); err != nil {
		s.drop("send-failed")
		s.replyNotSent(l, c.mac, err)
		return
	}
	s.count(s.replies, "rep", mode, replyKind(reply, l))
	if event.Kind != "" {
		event.MAC = c.mac
		if c.hasArch {
			event.Arch = ArchName(c.arch)
		}
		event.UUID = c.uuid
		if event.Detail == "" {
			event.Detail = mode
		} else {
			event.Detail = mode + ": " + event.Detail
		}
		if !s.record(ctx, event, known) {
			event = matchbox.Event{}
		}
	}
	if raw != nil && cacheable(l) {
		s.answers.keep(l, peerKey(peer), raw, &keptAnswer{reply: data, dst: dst, mode: mode, reqType: mt.String(),
			repKind: replyKind(reply, l), event: event, packetMAC: c.mac})
	}
}

func replyKind(r *dhcpv4.DHCPv4, l Listener) string {
	switch {
	case l.BINL:
		return "binl-ack"
	case l.Mode == ModeProxy:
		return "proxy-offer"
	}
	return strings.ToLower(r.MessageType().String())
}

// destination: replies go back to where the request came from when it
// has an address (a relay, a renewing client, a client on 4011), otherwise
// they are broadcast on the receiving interface.
// destination is where a reply to req, received from peer, goes.
func destination(req *dhcpv4.DHCPv4, peer net.Addr) *net.UDPAddr {
	dst, _ := peer.(*net.UDPAddr)
	if dst == nil || dst.IP == nil || dst.IP.IsUnspecified() {
		if gw := req.GatewayIPAddr; gw != nil && !gw.IsUnspecified() {
			dst = &net.UDPAddr{IP: gw, Port: dhcpv4.ServerPort}
		} else {
			dst = &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
		}
	}
	return dst
}

// newReply starts a reply to req: what dhcpv4.NewReplyFromRequest does
// (copying the relay agent information and client identifier, RFC 3046
// and 6842), without drawing a random transaction id only to replace it.
func newReply(req *dhcpv4.DHCPv4, l Listener, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	reply := &dhcpv4.DHCPv4{
		OpCode: dhcpv4.OpcodeBootReply, HWType: req.HWType, TransactionID: req.TransactionID,
		ClientHWAddr: req.ClientHWAddr, Flags: req.Flags, GatewayIPAddr: req.GatewayIPAddr,
		ClientIPAddr: net.IPv4zero, YourIPAddr: net.IPv4zero, ServerIPAddr: net.IPv4zero, Options: dhcpv4.Options{},
	}
	if reply.GatewayIPAddr == nil {
		reply.GatewayIPAddr = net.IPv4zero
	}
	for _, code := range []dhcpv4.OptionCode{dhcpv4.OptionRelayAgentInformation, dhcpv4.OptionClientIdentifier} {
		if v := req.GetOneOption(code); v != nil {
			reply.UpdateOption(dhcpv4.OptGeneric(code, v))
		}
	}
	reply.UpdateOption(dhcpv4.OptMessageType(mt))
	reply.UpdateOption(dhcpv4.OptServerIdentifier(net.IP(l.ServerIP.AsSlice())))
	return reply
}

// proxy answers PXE DISCOVERs on port 67 with boot information only.
func (s *Server) proxy(l Listener, m *dhcpv4.DHCPv4, c client) (*dhcpv4.DHCPv4, matchbox.Event) {
	if m.MessageType() == dhcpv4.MessageTypeRequest {
		// The client takes an address from the network's DHCP server:
		// remember whose it is, so that the downloads it makes next
		// (TFTP, assets), which name no MAC, are its own. As trusted as
		// the 4011 exchange's ciaddr: both are the client's DHCP word.
		ip := m.RequestedIPAddress()
		if ip == nil || ip.IsUnspecified() {
			ip = m.ClientIPAddr
		}
		if a, ok := netip.AddrFromSlice(ip.To4()); ok && !a.IsUnspecified() {
			s.rec.Learn(a, c.mac)
		}
		return nil, matchbox.Event{}
	}
	if m.MessageType() != dhcpv4.MessageTypeDiscover {
		return nil, matchbox.Event{}
	}
	return s.bootOnly(l, m, c, dhcpv4.MessageTypeOffer, true, "")
}

// binl answers the PXE boot-server exchange on UDP 4011.
func (s *Server) binl(l Listener, m *dhcpv4.DHCPv4, c client) (*dhcpv4.DHCPv4, matchbox.Event) {
	if mt := m.MessageType(); mt != dhcpv4.MessageTypeRequest && mt != dhcpv4.MessageTypeInform {
		return nil, matchbox.Event{}
	}
	return s.bootOnly(l, m, c, dhcpv4.MessageTypeAck, false, "boot server")
}

// bootOnly builds a reply that carries boot information and no address.
func (s *Server) bootOnly(l Listener, m *dhcpv4.DHCPv4, c client, mt dhcpv4.MessageType, proxy bool, detail string) (*dhcpv4.DHCPv4, matchbox.Event) {
	b, why := s.bootAnswer(l, c)
	if why != "" {
		s.noBoot(l, c, why)
		return nil, matchbox.Event{}
	}
	reply := newReply(m, l, mt)
	reply.YourIPAddr = net.IPv4zero
	reply.ClientIPAddr = m.ClientIPAddr
	addBoot(reply, m, l, b, c, proxy)
	return reply, matchbox.Event{Kind: matchbox.EventPXEOffer, IP: ipString(m.ClientIPAddr), File: b.file,
		Group: groupID(b.sel), Profile: profileID(b.sel), Detail: detail}
}

func (s *Server) noBoot(l Listener, c client, why string) {
	s.drop("no-boot")
	// Every client on the network asks (in proxy mode even those the
	// DHCP server beside us answers): one that does not network-boot is
	// not worth an info line.
	level := slog.LevelInfo
	if !c.pxe {
		level = slog.LevelDebug
	}
	s.limit.Log(context.Background(), level, "dhcp: no boot answer", c.mac+" "+why, "interface", l.Interface, "mac", c.mac, "arch", ArchName(c.arch), "reason", why)
}

func groupID(sel matchbox.Selection) string {
	if sel.Group != nil {
		return sel.Group.ID
	}
	return ""
}

func profileID(sel matchbox.Selection) string {
	if sel.Profile != nil {
		return sel.Profile.ID
	}
	return ""
}

func ipString(ip net.IP) string {
	if ip == nil || ip.IsUnspecified() {
		return ""
	}
	return ip.String()
}

func toAddr(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip.To4())
	if !ok {
		return netip.Addr{}
	}
	return a
}

func ipsOf(addrs []netip.Addr) []net.IP {
	out := make([]net.IP, len(addrs))
	for i, a := range addrs {
		out[i] = net.IP(a.AsSlice())
	}
	return out
}

// poolFor picks the pool a request draws from: the relay's subnet when
// relayed, else the receiving interface's.
func (s *Server) poolFor(l Listener, m *dhcpv4.DHCPv4) *pool {
	if gw := toAddr(m.GatewayIPAddr); gw.IsValid() && !gw.IsUnspecified() {
		return s.leases.poolContaining(gw)
	}
	if l.Prefix.IsValid() {
		for _, p := range s.leases.pools {
			if p.subnet.Prefix.Overlaps(l.Prefix) {
				return p
			}
		}
	}
	return s.leases.poolContaining(l.ServerIP)
}

func (s *Server) requestOf(m *dhcpv4.DHCPv4, c client) request {
	r := request{mac: c.mac, hostname: m.HostName(), hw: [6]byte(m.ClientHWAddr)}
	// One machine, one address through the whole boot: UEFI PXE, iPXE and
	// the booted OS identify themselves differently (a GUID client id, no
	// client id, hardware type 1 + MAC), so network-booting clients and
	// client ids that are just the MAC are keyed by the MAC.
	if id := m.GetOneOption(dhcpv4.OptionClientIdentifier); len(id) > 0 && !c.pxe &&
		!(len(id) == 7 && id[0] == 1 && net.HardwareAddr(id[1:]).String() == c.mac) {
		r.clientID = hex.EncodeToString(id)
	}
	r.key = clientKey(r.clientID, r.mac)
	if gw := toAddr(m.GatewayIPAddr); gw.IsValid() && !gw.IsUnspecified() {
		r.relay = gw.String()
	}
	if ri := m.RelayAgentInfo(); ri != nil {
		if v := ri.Get(dhcpv4.GenericOptionCode(1)); v != nil {
			r.circuitID = hex.EncodeToString(v)
		}
		if v := ri.Get(dhcpv4.GenericOptionCode(2)); v != nil {
			r.remoteID = hex.EncodeToString(v)
		}
	}
	r.requested = toAddr(m.RequestedIPAddress())
	if s.cfg.Reservations != nil {
		if ip, ok := s.cfg.Reservations.Reserved(c.mac); ok {
			r.reserved = ip
		}
	}
	return r
}

// addLeaseOptions adds the subnet's options to an OFFER or ACK.
func addLeaseOptions(reply *dhcpv4.DHCPv4, p *pool, hostname string) {
	sub := p.subnet
	reply.UpdateOption(dhcpv4.OptSubnetMask(net.CIDRMask(sub.Prefix.Bits(), 32)))
	reply.UpdateOption(dhcpv4.OptIPAddressLeaseTime(sub.LeaseTime))
	reply.UpdateOption(dhcpv4.OptRenewTimeValue(sub.LeaseTime / 2))
	reply.UpdateOption(dhcpv4.OptRebindingTimeValue(sub.LeaseTime * 7 / 8))
	if len(sub.Routers) > 0 {
		reply.UpdateOption(dhcpv4.OptRouter(ipsOf(sub.Routers)...))
	}
	if len(sub.DNS) > 0 {
		reply.UpdateOption(dhcpv4.OptDNS(ipsOf(sub.DNS)...))
	}
	if len(sub.NTP) > 0 {
		reply.UpdateOption(dhcpv4.OptNTPServers(ipsOf(sub.NTP)...))
	}
	if sub.Domain != "" {
		reply.UpdateOption(dhcpv4.OptDomainName(sub.Domain))
	}
	if hostname != "" {
		reply.UpdateOption(dhcpv4.OptHostName(hostname))
	}
}

// hostnameFor is the host name a machine's group gives it, if any.
func hostnameFor(sel matchbox.Selection) string {
	if sel.Group == nil {
		return ""
	}
	if h, ok := metadataString(sel.Group, "hostname"); ok {
		return h
	}
	return ""
}

// leaseReply builds an OFFER or ACK of ip with the subnet's options and,
// for a PXE client the core lets boot, its boot answer.
func (s *Server) leaseReply(l Listener, m *dhcpv4.DHCPv4, c client, d *matchbox.Decision, p *pool, ip netip.Addr, mt dhcpv4.MessageType, kind matchbox.EventKind) (*dhcpv4.DHCPv4, matchbox.Event) {
	reply := newReply(m, l, mt)
	reply.YourIPAddr = net.IP(ip.AsSlice())
	if mt == dhcpv4.MessageTypeAck {
		reply.ClientIPAddr = m.ClientIPAddr
	}
	ev := matchbox.Event{Kind: kind, IP: ip.String()}
	b, why := s.bootFor(l, c, d)
	addLeaseOptions(reply, p, hostnameFor(b.sel))
	if why == "" {
		addBoot(reply, m, l, b, c, false)
		ev.File, ev.Group, ev.Profile = b.file, groupID(b.sel), profileID(b.sel)
	}
	return reply, ev
}

// full answers in full mode: address leases, with PXE answers for PXE
// clients the core lets boot. known reports whether the client is known
// (see Server.known).
func (s *Server) full(ctx context.Context, l Listener, m *dhcpv4.DHCPv4, c client) (*dhcpv4.DHCPv4, matchbox.Event, bool) {
	mt := m.MessageType()
	d := s.decide(c)
	if mt == dhcpv4.MessageTypeInform {
		reply := newReply(m, l, dhcpv4.MessageTypeAck)
		reply.ClientIPAddr = m.ClientIPAddr
		if p := s.poolFor(l, m); p != nil {
			addLeaseOptions(reply, p, "")
			reply.Options.Del(dhcpv4.OptionIPAddressLeaseTime)
			reply.Options.Del(dhcpv4.OptionRenewTimeValue)
			reply.Options.Del(dhcpv4.OptionRebindingTimeValue)
		}
		var ev matchbox.Event
		if b, why := s.bootFor(l, c, &d); why == "" {
			addBoot(reply, m, l, b, c, false)
			ev.File, ev.Group, ev.Profile = b.file, groupID(b.sel), profileID(b.sel)
		}
		ev.Kind = matchbox.EventDHCPInform
		// The event's address becomes the machine's in the recorder: only
		// an address leased to it, not any the client claims.
		if ci := toAddr(m.ClientIPAddr); ci.IsValid() && !ci.IsUnspecified() {
			if s.leases.macs.holds([6]byte(m.ClientHWAddr), ci, s.leases.now()) {
				ev.IP = ci.String()
			} else {
				ev.Detail = "ciaddr " + ci.String() + " is not leased to this client"
			}
		}
		return reply, ev, s.known(c.mac, &d)
	}
	p := s.poolFor(l, m)
	if p == nil {
		s.drop("no-subnet")
		s.log.Debug("dhcp: no subnet for request", "interface", l.Interface, "mac", c.mac, "relay", ipString(m.GatewayIPAddr))
		return nil, matchbox.Event{}, false
	}
	r := s.requestOf(m, c)
	r.unknown = !r.reserved.IsValid() && !d.Grouped()
	known := !r.unknown
	switch mt {
	case dhcpv4.MessageTypeDiscover:
		ip, reclaimed, err := s.leases.offer(p, r)
		if errors.Is(err, errUnknownShare) {
			s.unknownShareFull(ctx, p, c)
			return nil, matchbox.Event{}, known
		}
		if err != nil {
			s.drop("pool-exhausted")
			s.limit.Log(ctx, slog.LevelWarn, "dhcp: no address to offer", p.subnet.Prefix.String(), "subnet", p.subnet.Prefix, "mac", c.mac, "err", err)
			return nil, matchbox.Event{}, known
		}
		if reclaimed {
			s.limit.Log(ctx, slog.LevelWarn, "dhcp: no free address; the oldest offer to another client is reclaimed", p.subnet.Prefix.String(),
				"subnet", p.subnet.Prefix, "mac", c.mac, "ip", ip)
		}
		reply, ev := s.leaseReply(l, m, c, &d, p, ip, dhcpv4.MessageTypeOffer, matchbox.EventDHCPOffer)
		return reply, ev, known
	case dhcpv4.MessageTypeRequest:
		if sid := toAddr(m.ServerIdentifier()); sid.IsValid() && sid != l.ServerIP {
			// The client took another server's offer.
			s.leases.forgetOffer(p, r.key)
			return nil, matchbox.Event{}, known
		}
		ip := r.requested
		if !ip.IsValid() {
			ip = toAddr(m.ClientIPAddr)
		}
		if !ip.IsValid() || ip.IsUnspecified() {
			s.drop("no-address-requested")
			return nil, matchbox.Event{}, known
		}
		lease, err := s.leases.bind(ctx, p, r, ip, p.subnet.LeaseTime)
		if errors.Is(err, errNotYours) {
			nak := newReply(m, l, dhcpv4.MessageTypeNak)
			nak.UpdateOption(dhcpv4.OptMessage(err.Error()))
			if !m.GatewayIPAddr.IsUnspecified() && m.GatewayIPAddr != nil {
				nak.SetBroadcast()
			}
			return nak, matchbox.Event{Kind: matchbox.EventDHCPNak, IP: ip.String(), Detail: err.Error()}, known
		}
		if errors.Is(err, errUnknownShare) {
			s.unknownShareFull(ctx, p, c)
			return nil, matchbox.Event{}, known
		}
		if err != nil {
			s.drop("commit-failed")
			s.limit.Log(ctx, slog.LevelError, "dhcp: lease not committed; no ACK sent", err.Error(), "mac", c.mac, "ip", ip, "err", err)
			return nil, matchbox.Event{}, known
		}
		s.rec.Learn(lease.IP, c.mac)
		reply, ev := s.leaseReply(l, m, c, &d, p, ip, dhcpv4.MessageTypeAck, matchbox.EventDHCPAck)
		return reply, ev, known
	case dhcpv4.MessageTypeDecline:
		ip := r.requested
		if err := s.leases.decline(ctx, p, r.key, ip); err != nil {
			s.limit.Log(ctx, slog.LevelInfo, "dhcp: decline ignored", c.mac, "mac", c.mac, "ip", ip, "err", err)
			return nil, matchbox.Event{}, known
		}
		s.limit.Log(ctx, slog.LevelWarn, "dhcp: client declined its address (in use by someone else?); quarantined", c.mac, "mac", c.mac, "ip", ip)
		s.record(ctx, matchbox.Event{MAC: c.mac, Kind: matchbox.EventDHCPDecline, IP: ip.String()}, known)
		return nil, matchbox.Event{}, known
	case dhcpv4.MessageTypeRelease:
		ip := toAddr(m.ClientIPAddr)
		if err := s.leases.release(ctx, p, r.key, ip); err != nil {
			s.limit.Log(ctx, slog.LevelInfo, "dhcp: release ignored", c.mac, "mac", c.mac, "ip", ip, "err", err)
			return nil, matchbox.Event{}, known
		}
		s.record(ctx, matchbox.Event{MAC: c.mac, Kind: matchbox.EventDHCPRelease, IP: ip.String()}, known)
		return nil, matchbox.Event{}, known
	}
	return nil, matchbox.Event{}, known
}

// unknownShareFull drops a request of an unknown client: unknown clients
// hold their share of the pool.
func (s *Server) unknownShareFull(ctx context.Context, p *pool, c client) {
	s.drop("unknown-share")
	s.limit.Log(ctx, slog.LevelWarn, "dhcp: clients without a reservation or a group hold their share of the pool; no address for another",
		p.subnet.Prefix.String(), "subnet", p.subnet.Prefix, "mac", c.mac, "share", s.cfg.UnknownShare, "addresses", p.unknownMax)
}

// record records e, unless it is an unknown client's beyond their rate;
// it reports whether e was recorded.
func (s *Server) record(ctx context.Context, e matchbox.Event, known bool) bool {
	if !known && !s.unknownEvents.take(time.Now()) {
		s.limit.Log(ctx, slog.LevelWarn, "dhcp: events of clients without a reservation or a group beyond their rate are not recorded", "",
			"rate", s.cfg.UnknownEventRate)
		return false
	}
	s.rec.Record(e)
	return true
}

// eventBudget is a token bucket: rate a second, at most burst at once.
type eventBudget struct {
	mu          sync.Mutex
	rate, burst float64
	tokens      float64
	filled      time.Time
	dropped     uint64
}

func newEventBudget(rate, burst float64) *eventBudget {
	return &eventBudget{rate: rate, burst: max(1, burst), tokens: max(1, burst)}
}

// take takes a token at now, or counts a drop.
func (b *eventBudget) take(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.filled.IsZero() && now.After(b.filled) {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.filled).Seconds()*b.rate)
	}
	b.filled = now
	if b.tokens < 1 {
		b.dropped++
		return false
	}
	b.tokens--
	return true
}

func (b *eventBudget) droppedCount() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dropped
}

// metadataString returns a string metadata value of g.
func metadataString(g *matchbox.Group, key string) (string, bool) {
	v, _ := g.MetadataValue(key)
	s, ok := v.(string)
	return s, ok
}
