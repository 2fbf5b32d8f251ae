package http

import (
	"fmt"
	"log/slog"
	"net"
	nethttp "net/http"
	"net/netip"
	"strconv"
	"strings"

	"matchbox.dev/matchbox"
)

// maxHostLen bounds a Host header: a DNS name of 253 bytes and a trailing
// dot, a colon and a port of five digits.
const maxHostLen = 254 + 1 + 5

// splitHost splits a valid Host into its host part (lowercased, brackets
// of an IPv6 literal and a trailing dot kept off) and its port ("" when
// none); ok is false if h is not a host name or an IP literal with an
// optional port.
func splitHost(h string) (host, port string, ok bool) {
	if h == "" || len(h) > maxHostLen {
		return "", "", false
	}
	if h[0] == '[' {
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return "", "", false
		}
		a, err := netip.ParseAddr(h[1:end])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return "", "", false
		}
		rest := h[end+1:]
		if rest != "" {
			if rest[0] != ':' {
				return "", "", false
			}
			port = rest[1:]
		}
		return a.String(), port, validPort(port)
	}
	host = h
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		host, port = h[:i], h[i+1:]
	}
	host = strings.TrimSuffix(host, ".")
	if !validName(host) || !validPort(port) {
		return "", "", false
	}
	return strings.ToLower(host), port, true
}

// validName reports whether s is a DNS name (or an IPv4 literal): labels
// of 1 to 63 letters, digits, hyphens and underscores, 253 bytes at most.
func validName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// validPort reports whether s is empty or a port number.
func validPort(s string) bool {
	if len(s) > 5 {
		return false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n <= 65535
}

// CheckHostName checks a name of Config.HostNames: a host name or an IP
// literal, with an optional port.
func CheckHostName(name string) error {
	if _, _, ok := splitHost(name); !ok {
		return fmt.Errorf("%s is not a host name or IP address with an optional port: %w", matchbox.Quote(name), matchbox.ErrInvalid)
	}
	return nil
}

// hostNames indexes Config.HostNames: "host" for a name without a port,
// "host:port" for one with.
func hostNames(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		if host, port, ok := splitHost(n); ok {
			m[joinHost(host, port)] = true
		}
	}
	return m
}

func joinHost(host, port string) string {
	if port == "" {
		return host
	}
	return net.JoinHostPort(host, port)
}

// checkHost answers 400 to a request whose Host header is not a host name
// or IP literal with an optional port, and, with a signer, makes the host
// of rendered URLs the listening address unless the Host names it or one
// of the operator's names (ownHost), so that no signature covers a URL a
// client chose. Every endpoint, signed or not, follows the same rule, so
// that a body and its signature fetched apart still match.
func (s *Server) checkHost(h nethttp.Handler) nethttp.Handler {
	return nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		if r.Host == "" {
			h.ServeHTTP(w, r)
			return
		}
		host, port, ok := splitHost(r.Host)
		if !ok {
			s.requests.WithLabelValues("bad-host", "400").Inc()
			s.limit.Log(r.Context(), slog.LevelWarn, "invalid Host header", remoteIP(r).String(),
				"remote", r.RemoteAddr, "host", matchbox.Quote(r.Host))
			w.Header().Set("Content-Type", textType)
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(nethttp.StatusBadRequest)
			fmt.Fprintln(w, "invalid Host header: give a host name or IP address, with an optional port")
			return
		}
		if s.cfg.Signer != nil && !s.ownHost(r, host, port) {
			if s.limit.Allow(r.Context(), slog.LevelInfo, "Host header not ours: rendering the listening address", r.Host) {
				s.log.Info("Host header not ours: rendering the listening address", "remote", r.RemoteAddr,
					"host", matchbox.Quote(r.Host), "address", localHost(r))
			}
			r = r.WithContext(r.Context())
			r.Host = localHost(r)
		}
		h.ServeHTTP(w, r)
	})
}

// ownHost reports whether the host and port of a request's Host header
// name this server: one of Config.HostNames (a name given without a port
// matches no port or the listening port), or the address the connection
// came in on.
func (s *Server) ownHost(r *nethttp.Request, host, port string) bool {
	local, _ := localAddr(r)
	lport := strconv.Itoa(int(local.Port()))
	if s.hostNames[host] && (port == "" || port == lport) {
		return true
	}
	if port == "" {
		port = "80"
	}
	if s.hostNames[joinHost(host, port)] {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && local.IsValid() && a.Unmap() == local.Addr() && port == lport
}

// localAddr is the address a request came in on, without an IPv6 zone.
func localAddr(r *nethttp.Request) (netip.AddrPort, bool) {
	a, ok := r.Context().Value(nethttp.LocalAddrContextKey).(net.Addr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().WithZone("").Unmap(), ap.Port()), true
}

// localHost is the host:port of the address a request came in on.
func localHost(r *nethttp.Request) string {
	if ap, ok := localAddr(r); ok {
		return ap.String()
	}
	return ""
}
