package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/api"
	"matchbox.dev/matchbox/dhcp"
	mbhttp "matchbox.dev/matchbox/http"
	"matchbox.dev/matchbox/storage"
	"matchbox.dev/matchbox/tftp"
)

// listFlag is a repeatable flag; one value may also hold several items
// separated by sep (for the MATCHBOX_* environment form).
type listFlag struct {
	items []string
	sep   string
}

func (l *listFlag) String() string { return strings.Join(l.items, l.sep) }

func (l *listFlag) Set(v string) error {
	for _, item := range strings.FieldsFunc(v, func(r rune) bool { return strings.ContainsRune(l.sep, r) }) {
		if item = strings.TrimSpace(item); item != "" {
			l.items = append(l.items, item)
		}
	}
	return nil
}

// netbootConfig holds the DHCP and TFTP flags.
type netbootConfig struct {
	dhcpMode    string
	interfaces  listFlag
	ranges      listFlag
	router      string
	dns         string
	ntp         string
	domain      string
	leaseTime   time.Duration
	bootFiles   listFlag
	dhcpPort    int
	binlPort    int
	tftpAddress string
	tftpRoot    string
	tftpMax     int
	// Per client address, and of the timeout option.
	tftpPerSource      int
	tftpUnansweredRate float64
	tftpMaxTimeout     time.Duration
	bootURL            string

	// Pool limits of full mode.
	offerHold        time.Duration
	unknownShare     int
	unknownEventRate float64
}

func netbootFlags(fs *flag.FlagSet) *netbootConfig {
	n := &netbootConfig{interfaces: listFlag{sep: ", "}, ranges: listFlag{sep: "; "}, bootFiles: listFlag{sep: ", "}}
	fs.StringVar(&n.dhcpMode, "dhcp-mode", "off", "DHCP: off, proxy (PXE answers beside an existing DHCP server) or full (own the address pools)")
	fs.Var(&n.interfaces, "dhcp-interface", "network interface to answer DHCP on (repeatable)")
	fs.Var(&n.ranges, "dhcp-range", "full mode address range START,END[,NETMASK] (repeatable, one per subnet)")
	fs.StringVar(&n.router, "dhcp-router", "", "full mode: default gateway given to clients")
	fs.StringVar(&n.dns, "dhcp-dns", "", "full mode: DNS servers IP[,IP]")
	fs.StringVar(&n.ntp, "dhcp-ntp", "", "full mode: NTP servers IP[,IP]")
	fs.StringVar(&n.domain, "dhcp-domain", "", "full mode: domain name given to clients")
	fs.DurationVar(&n.leaseTime, "dhcp-lease-time", time.Hour, "full mode: lease time")
	fs.Var(&n.bootFiles, "dhcp-boot-file", "override the boot file of a client architecture, ARCH=FILE (option 93 value, e.g. 7=snponly.efi; repeatable)")
	fs.IntVar(&n.dhcpPort, "dhcp-port", 67, "DHCP server port")
	fs.IntVar(&n.binlPort, "dhcp-pxe-port", 4011, "PXE boot server (BINL) port")
	fs.DurationVar(&n.offerHold, "dhcp-offer-hold", dhcp.DefaultOfferHold, "full mode: how long an offer not yet requested holds its address; when a pool has no free address the oldest offer is reclaimed sooner")
	fs.IntVar(&n.unknownShare, "dhcp-unknown-share", dhcp.DefaultUnknownShare, "full mode: percent of each pool that clients with neither a reservation nor a matching group may hold (100: no limit)")
	fs.Float64Var(&n.unknownEventRate, "dhcp-unknown-event-rate", dhcp.DefaultUnknownEventRate, "full mode: machine events a second recorded for clients with neither a reservation nor a matching group, in bursts of up to 20 seconds' worth")
	fs.StringVar(&n.tftpAddress, "tftp-address", "", "TFTP listen address HOST:PORT, e.g. :69 (TFTP off when empty)")
	fs.IntVar(&n.tftpMax, "tftp-max-transfers", 128, "concurrent TFTP transfers; more take the slot of one never answered, or wait briefly for a slot, then are refused")
	fs.IntVar(&n.tftpPerSource, "tftp-max-per-source", 8, "concurrent TFTP transfers of one client address")
	fs.Float64Var(&n.tftpUnansweredRate, "tftp-unanswered-rate", 1, "TFTP transfers a second one address may leave unanswered (no ACK: a forged source) after a burst of -tftp-max-per-source")
	fs.DurationVar(&n.tftpMaxTimeout, "tftp-max-client-timeout", 5*time.Second, "longest retransmission timeout a TFTP client may ask for (timeout option, whole seconds); longer is not granted")
	fs.StringVar(&n.tftpRoot, "tftp-root", "/usr/lib/ipxe", "folder of iPXE binaries served over TFTP (Debian's ipxe package)")
	fs.StringVar(&n.bootURL, "boot-url", "", "URL of the iPXE script told to iPXE clients (default http://<receiving interface address>:<HTTP port>/boot.ipxe)")
	return n
}

func parseAddrs(s string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		a, err := netip.ParseAddr(f)
		if err != nil || !a.Is4() {
			return nil, fmt.Errorf("%q is not an IPv4 address", f)
		}
		out = append(out, a)
	}
	return out, nil
}

// dhcpLimits checks the pool limit flags (before serve changes anything).
func (n *netbootConfig) dhcpLimits() error {
	if n.offerHold < dhcp.MinOfferHold || n.offerHold > dhcp.MaxOfferHold {
		return fmt.Errorf("-dhcp-offer-hold %v: want %v to %v", n.offerHold, dhcp.MinOfferHold, dhcp.MaxOfferHold)
	}
	if n.unknownShare < 1 || n.unknownShare > 100 {
		return fmt.Errorf("-dhcp-unknown-share %d: want a percent from 1 to 100 (100: no limit)", n.unknownShare)
	}
	if !(n.unknownEventRate > 0 && n.unknownEventRate <= dhcp.MaxUnknownEventRate) {
		return fmt.Errorf("-dhcp-unknown-event-rate %v: want more than 0 and at most %d events a second", n.unknownEventRate, dhcp.MaxUnknownEventRate)
	}
	return nil
}

// reservations reads fixed addresses from the machine's group metadata
// ("dhcp_address") or its machine record.
type reservations struct {
	catalog *matchbox.Catalog
	db      storage.Store
	log     *slog.Logger
}

func (r reservations) Reserved(mac string) (netip.Addr, bool) {
	if sel, err := r.catalog.Snapshot().Select(map[string]string{"mac": mac}); sel.Group != nil && err == nil {
		if v, _ := sel.Group.MetadataValue("dhcp_address"); v != nil {
			s, _ := v.(string)
			if a, err := netip.ParseAddr(s); err == nil && a.Is4() {
				return a, true
			}
			r.log.Warn("group metadata dhcp_address is not an IPv4 address", "group", sel.Group.ID, "value", v)
		}
	}
	if s, err := r.db.ReservedIP(context.Background(), mac); err == nil && s != "" {
		if a, err := netip.ParseAddr(s); err == nil && a.Is4() {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// netboot is the running DHCP and TFTP front-ends.
type netboot struct {
	run []part
	// pinned are the boot files served from outside the TFTP root.
	pinned map[string]string
	// leases is the DHCP server when it hands out addresses (full mode).
	leases api.LeaseAdmin
	// dhcp is the same server (nil unless it hands out addresses), and
	// allFull says DHCP runs in full mode on every interface it serves;
	// anyDHCP that it runs at all.
	dhcp             *dhcp.Server
	allFull, anyDHCP bool
	// holder is what lease binding asks (nil: binding off).
	holder mbhttp.LeaseHolder
}

// setupNetboot opens the DHCP and TFTP sockets the flags ask for.
func (s *instance) setupNetboot(ctx context.Context) error {
	nb, err := s.openNetboot(ctx)
	if err != nil {
		return err
	}
	s.nb = nb
	for _, p := range nb.run {
		s.add(p.name, p.run)
	}
	return nil
}

// openNetboot opens the DHCP and TFTP front-ends.
func (s *instance) openNetboot(ctx context.Context) (*netboot, error) {
	n, fc, httpAddr, catalog, db, rec, booter, reg, log := s.nbc, s.fc, s.ln.Addr().String(), s.catalog, s.db, s.rec, s.booter, s.reg, s.log
	nb := &netboot{}
	if n.tftpAddress != "" {
		switch {
		case n.tftpMax < 1 || n.tftpPerSource < 1:
			return nil, fmt.Errorf("-tftp-max-transfers and -tftp-max-per-source must be at least 1")
		case !(n.tftpUnansweredRate > 0):
			return nil, fmt.Errorf("-tftp-unanswered-rate must be more than 0")
		case n.tftpMaxTimeout < time.Second || n.tftpMaxTimeout > 255*time.Second:
			return nil, fmt.Errorf("-tftp-max-client-timeout must be between 1s and 255s (the timeout option's range)")
		}
	}
	_, httpPort, err := net.SplitHostPort(httpAddr)
	if err != nil {
		return nil, fmt.Errorf("-address: %w", err)
	}
	bootURL := func(ip netip.Addr) string {
		if n.bootURL != "" {
			return n.bootURL
		}
		return "http://" + net.JoinHostPort(ip.String(), httpPort) + "/boot.ipxe"
	}
	httpHost, _, _ := net.SplitHostPort(httpAddr)
	if (n.dhcpMode != "off" || fc != nil && fc.dhcp != nil || n.tftpAddress != "") && n.bootURL == "" {
		if ip, err := netip.ParseAddr(httpHost); err == nil && ip.IsLoopback() {
			log.Warn("the HTTP endpoints listen on loopback only: machines cannot reach them; use -address 0.0.0.0:PORT or -boot-url", "address", httpAddr)
		}
	}

	ifaces, subnetSpecs, overrides, err := n.dhcpPlan(fc)
	if err != nil {
		return nil, err
	}
	files := dhcp.DefaultBootFiles()
	for arch, f := range overrides {
		files[arch] = f
	}
	var names []string
	for _, f := range files {
		names = append(names, f)
	}
	nb.pinned = tftp.PinBootFiles(n.tftpRoot, names)
	for name, target := range nb.pinned {
		log.Info("boot file is a link out of the TFTP root; serving its target", "file", name, "target", target)
	}

	if len(ifaces) > 0 {
		var listeners []dhcp.Listener
		var prefixes []netip.Prefix
		closeAll := func() {
			for _, l := range listeners {
				l.Conn.Close()
			}
		}
		for _, ifc := range ifaces {
			prefix, err := dhcp.InterfacePrefix(ifc.name)
			if err != nil {
				closeAll()
				return nil, err
			}
			prefixes = append(prefixes, prefix)
			for i, port := range []int{n.dhcpPort, n.binlPort} {
				conn, err := dhcp.ListenInterface(ctx, ifc.name, port)
				if err != nil {
					closeAll()
					return nil, err
				}
				listeners = append(listeners, dhcp.Listener{Conn: conn, Interface: ifc.name, ServerIP: prefix.Addr(),
					Prefix: prefix.Masked(), Mode: ifc.mode, BINL: i == 1})
			}
		}
		var subnets []dhcp.Subnet
		for _, sp := range subnetSpecs {
			// Without a netmask, a range on an interface's subnet takes
			// that subnet's.
			var fallback netip.Prefix
			start, _, _ := strings.Cut(sp.rng, ",")
			for _, p := range prefixes {
				if p.Masked().Contains(parseOrZero(start)) {
					fallback = p.Masked()
				}
			}
			sub, err := dhcp.ParseRange(sp.rng, fallback)
			if err != nil {
				closeAll()
				return nil, fmt.Errorf("%s: %w", sp.where, err)
			}
			sub.Routers, sub.DNS, sub.NTP, sub.Domain, sub.LeaseTime = sp.routers, sp.dns, sp.ntp, sp.domain, sp.leaseTime
			subnets = append(subnets, sub)
		}
		srv, err := dhcp.New(ctx, dhcp.Config{
			Subnets:   subnets,
			LeaseTime: n.leaseTime,
			BootFiles: files,
			BootURL:   bootURL,
			HTTPBootURL: func(ip netip.Addr, file string) string {
				return "http://" + net.JoinHostPort(ip.String(), httpPort) + "/boot/" + file
			},
			Booter:       booter,
			Reservations: reservations{catalog, db, log},
			Leases:       db,
			Changes:      db,
			Recorder:     rec,
			Logger:       log.With("component", "dhcp"),
			Registry:     reg,

			OfferHold:        n.offerHold,
			UnknownShare:     n.unknownShare,
			UnknownEventRate: n.unknownEventRate,
		})
		if err != nil {
			closeAll()
			return nil, err
		}
		nb.run = append(nb.run, part{"dhcp", func(ctx context.Context) error { return srv.Serve(ctx, listeners...) }})
		// Answers kept for repeated PXE requests follow the configuration.
		catalog.OnChange(func(*matchbox.Snapshot) { srv.ForgetAnswers() })
		if len(subnets) > 0 {
			nb.leases, nb.dhcp = srv, srv
		}
		nb.anyDHCP, nb.allFull = true, true
		for _, ifc := range ifaces {
			nb.allFull = nb.allFull && ifc.mode == dhcp.ModeFull
		}
		for _, l := range listeners {
			log.Info("dhcp serving", "interface", l.Interface, "mode", l.Mode, "address", l.Conn.LocalAddr().String(), "pxe_port", l.BINL)
		}
		log.Info("dhcp subnets", "count", len(subnets))
	}

	if n.tftpAddress != "" {
		conn, err := net.ListenPacket("udp4", n.tftpAddress)
		if err != nil {
			return nil, fmt.Errorf("-tftp-address: %w", err)
		}
		ts := tftp.New(tftp.Config{
			Root:             n.tftpRoot,
			Pinned:           nb.pinned,
			MaxTransfers:     n.tftpMax,
			MaxPerSource:     n.tftpPerSource,
			UnansweredRate:   n.tftpUnansweredRate,
			MaxClientTimeout: n.tftpMaxTimeout,
			Generated: map[string]tftp.Generator{
				// For firmware that asks for a script over TFTP.
				"boot.ipxe": func(local netip.Addr) []byte {
					return []byte("#!ipxe\nchain " + bootURL(local) + "\n")
				},
			},
			Recorder: rec,
			Booter:   booter,
			Logger:   log.With("component", "tftp"),
			Registry: reg,
		})
		nb.run = append(nb.run, part{"tftp", func(ctx context.Context) error { return ts.Serve(ctx, conn) }})
		log.Info("tftp serving", "address", conn.LocalAddr().String(), "root", n.tftpRoot)
	}
	return nb, nil
}

func parseOrZero(s string) netip.Addr {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return netip.Addr{}
	}
	return a
}
