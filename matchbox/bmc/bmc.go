// Package bmc drives baseboard management controllers through bmclib: power
// status, power on/off/soft/reset and the one-time boot device, each bounded
// by a deadline, with the provider order each machine's settings prefer. It
// implements the core's PowerController; bmclib's types stay in here.
package bmc

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	bmclib "github.com/bmc-toolbox/bmclib/v2"
	"github.com/go-logr/logr"

	"matchbox.dev/matchbox"
)

// Config configures a Controller. Zero values take the defaults named.
type Config struct {
	// OperationTimeout bounds one operation, connection included
	// (default 60s).
	OperationTimeout time.Duration
	// ProviderTimeout bounds each provider's attempt within an operation
	// (default 20s), so one unresponsive provider leaves time for the
	// next.
	ProviderTimeout time.Duration
	// IPMIToolPath is the ipmitool binary (default: found on PATH).
	IPMIToolPath string
	// IPMICipherSuite is the IPMI v2 cipher suite (default 3).
	IPMICipherSuite string
	// DefaultProviders is the provider order for machines whose settings
	// name none (default ipmitool, then redfish).
	DefaultProviders []string
	// RootCAs are the CAs an HTTPS BMC's certificate must chain to, for
	// the host of its address, when its settings pin no certificate (nil:
	// the system's roots; LoadCAFile adds a bundle to them).
	RootCAs *x509.CertPool
	Logger  *slog.Logger
}

// LoadCAFile returns the system's roots with the PEM certificates of path
// added.
func LoadCAFile(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bmc CA file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("bmc CA file %s: no PEM certificate in it", path)
	}
	return pool, nil
}

// Fingerprint is a certificate's SHA-256 fingerprint as BMC settings pin
// it: the digest of its DER encoding, 64 lowercase hex digits (what
// `openssl x509 -noout -fingerprint -sha256` prints, without the colons).
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// Controller runs BMC operations. It is safe for concurrent use: every
// operation builds its own bmclib client.
type Controller struct {
	cfg Config
}

// New returns a Controller.
func New(cfg Config) *Controller {
	if cfg.OperationTimeout <= 0 {
		cfg.OperationTimeout = 60 * time.Second
	}
	if cfg.ProviderTimeout <= 0 {
		cfg.ProviderTimeout = 20 * time.Second
	}
	if cfg.IPMICipherSuite == "" {
		cfg.IPMICipherSuite = "3"
	}
	if len(cfg.DefaultProviders) == 0 {
		cfg.DefaultProviders = []string{"ipmitool", "redfish"}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Controller{cfg: cfg}
}

// renamed are the providers (of matchbox.BMCProviders, the one list of
// them) that bmclib's registry knows by another name.
var renamed = map[string]string{"redfish": "gofish", "intelamt": "IntelAMT"}

// registryName is bmclib's registry name of a provider.
func registryName(p string) string {
	if rn, ok := renamed[p]; ok {
		return rn
	}
	return p
}

// fixedPort are the providers bmclib always connects to port 443: they
// cannot reach a BMC at another port, and must not be sent its
// credentials at 443 instead.
var fixedPort = map[string]bool{"supermicro": true, "openbmc": true, "dell": true}

// open connects to the machine's BMC with its preferred providers, one at
// a time in order, and returns a client holding the first that connects
// (and its name). bmclib would try them all at once and wait for the
// slowest; in turn, an answering first choice costs nothing extra. The
// caller closes the client.
func (c *Controller) open(ctx context.Context, b matchbox.BMC) (*bmclib.Client, string, error) {
	providers, err := matchbox.ParseBMCProviders(b.Provider)
	if err != nil {
		return nil, "", err
	}
	if len(providers) == 0 {
		providers = c.cfg.DefaultProviders
	}
	if b.TLSFingerprint, err = matchbox.NormalizeBMCFingerprint(b.TLSFingerprint); err != nil {
		return nil, "", err
	}
	host, port := b.Address, ""
	if h, p, err := net.SplitHostPort(b.Address); err == nil {
		host, port = h, p
	}
	opts := []bmclib.Option{
		bmclib.WithPerProviderTimeout(c.cfg.ProviderTimeout),
		bmclib.WithIpmitoolCipherSuite(c.cfg.IPMICipherSuite),
		bmclib.WithLogger(logr.Discard()),
		bmclib.WithHTTPClient(c.httpClient(b, host)),
	}
	if c.cfg.IPMIToolPath != "" {
		opts = append(opts, bmclib.WithIpmitoolPath(c.cfg.IPMIToolPath))
	}
	if port != "" {
		opts = append(opts, bmclib.WithIpmitoolPort(port), bmclib.WithRedfishPort(port), bmclib.WithAsrockrackPort(port))
		if n, err := strconv.ParseUint(port, 10, 16); err == nil {
			opts = append(opts, bmclib.WithIntelAMTPort(uint32(n)))
		}
	}
	var failures []string
	for _, p := range providers {
		if fixedPort[p] && port != "" && port != "443" {
			failures = append(failures, fmt.Sprintf("%s: connects to port 443 only, not %s (give the address without a port, or another provider)", p, port))
			continue
		}
		cl := bmclib.NewClient(host, b.Username, b.Password, opts...)
		cl.Registry.Drivers = cl.Registry.For(registryName(p))
		if len(cl.Registry.Drivers) == 0 {
			why := "not available"
			if p == "ipmitool" {
				why = "needs the ipmitool binary (not found; install ipmitool or give -ipmitool-path)"
			}
			failures = append(failures, p+": "+why)
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, c.cfg.ProviderTimeout)
		err := cl.Open(pctx)
		timedOut := pctx.Err() == context.DeadlineExceeded
		cancel()
		if err == nil {
			return cl, p, nil
		}
		failures = append(failures, p+": "+c.reason(err, b, timedOut))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, "", fmt.Errorf("connect to %s: %s", b.Address, strings.Join(failures, "; "))
}

// do runs one operation against the machine's BMC within the operation
// deadline.
func (c *Controller) do(ctx context.Context, b matchbox.BMC, what string, op func(context.Context, *bmclib.Client) error) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.OperationTimeout)
	defer cancel()
	start := time.Now()
	cl, provider, err := c.open(ctx, b)
	if err == nil {
		err = op(ctx, cl)
		// A fresh context: the session is closed even after a deadline.
		cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = cl.Close(cctx)
		ccancel()
		if err != nil && !errors.Is(err, matchbox.ErrInvalid) {
			err = fmt.Errorf("%s via %s at %s: %s", what, provider, b.Address, c.reason(err, b, ctx.Err() == context.DeadlineExceeded))
		}
	}
	err = matchbox.RedactError(err, b.Password)
	attrs := []any{"address", b.Address, "op", what, "provider", provider, "took", time.Since(start).Round(time.Millisecond)}
	if err != nil {
		c.cfg.Logger.Warn("bmc operation failed", append(attrs, "err", err)...)
	} else {
		c.cfg.Logger.Debug("bmc operation", attrs...)
	}
	return err
}

// PowerState returns the machine's power state, normalised.
func (c *Controller) PowerState(ctx context.Context, b matchbox.BMC) (matchbox.PowerState, error) {
	st := matchbox.PowerUnknown
	err := c.do(ctx, b, "power status", func(ctx context.Context, cl *bmclib.Client) error {
		raw, err := cl.GetPowerState(ctx)
		if err != nil {
			return err
		}
		st = NormalizePower(raw)
		return nil
	})
	return st, err
}

// SetPower changes the machine's power.
func (c *Controller) SetPower(ctx context.Context, b matchbox.BMC, action matchbox.PowerAction) error {
	switch action {
	case matchbox.ActionOn, matchbox.ActionOff, matchbox.ActionSoft, matchbox.ActionReset:
	default:
		return fmt.Errorf("power action %q: %w", action, matchbox.ErrInvalid)
	}
	return c.do(ctx, b, "power "+string(action), func(ctx context.Context, cl *bmclib.Client) error {
		ok, err := cl.SetPowerState(ctx, string(action))
		if err == nil && !ok {
			err = errors.New("the BMC did not confirm the change")
		}
		if err != nil && action == matchbox.ActionSoft {
			// bmclib's Redfish provider reports a soft power-off as not
			// confirmed even when the BMC took the request (the machine
			// shuts down afterwards): a provider that sent it without an
			// error of its own succeeded.
			md := cl.GetMetadata()
			for _, p := range md.ProvidersAttempted {
				if _, failed := md.FailedProviderDetail[p]; !failed {
					return nil
				}
			}
		}
		return err
	})
}

// SetBootDevice sets the next boot device, once (not persistent).
func (c *Controller) SetBootDevice(ctx context.Context, b matchbox.BMC, dev matchbox.BootDevice, efi bool) error {
	switch dev {
	case matchbox.BootPXE, matchbox.BootDisk:
	default:
		return fmt.Errorf("boot device %q: %w", dev, matchbox.ErrInvalid)
	}
	return c.do(ctx, b, "set boot device "+string(dev), func(ctx context.Context, cl *bmclib.Client) error {
		ok, err := cl.SetBootDevice(ctx, string(dev), false, efi)
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("the BMC did not confirm the change")
		}
		return nil
	})
}

// httpClient is the HTTP client of the HTTPS providers for one operation
// on b: its certificate is verified as b's settings say (verifyCert), it
// follows no redirect off the BMC's endpoint, and it uses no proxy.
func (c *Controller) httpClient(b matchbox.BMC, host string) *http.Client {
	jar, _ := cookiejar.New(nil)
	// An operation skipping verification says so once, however many
	// connections it makes.
	var warn sync.Once
	return &http.Client{
		Jar:     jar,
		Timeout: c.cfg.OperationTimeout,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{
				// Verification is VerifyConnection's: it knows pins, and
				// its error names the certificate's fingerprint.
				InsecureSkipVerify: true,
				VerifyConnection:   func(cs tls.ConnectionState) error { return c.verifyCert(b, host, cs, &warn) },
			},
			DialContext:           (&net.Dialer{Timeout: c.cfg.ProviderTimeout}).DialContext,
			TLSHandshakeTimeout:   c.cfg.ProviderTimeout,
			ResponseHeaderTimeout: c.cfg.ProviderTimeout,
			DisableKeepAlives:     true,
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("stopped after 5 redirects")
			}
			if from := via[0].URL; req.URL.Scheme != from.Scheme || !strings.EqualFold(req.URL.Host, from.Host) {
				return fmt.Errorf("redirect to %s refused: the BMC's credentials go to %s only", matchbox.Quote(req.URL.Scheme+"://"+req.URL.Host), from.Host)
			}
			return nil
		},
	}
}

// verifyCert checks the certificate an HTTPS BMC presents: the pinned one
// if b pins one, any if b skips verification (logged, once per warn),
// otherwise one that chains to the trusted roots for host. An untrusted
// certificate's error names its fingerprint and how to trust it.
func (c *Controller) verifyCert(b matchbox.BMC, host string, cs tls.ConnectionState, warn *sync.Once) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the BMC presented no TLS certificate")
	}
	leaf := cs.PeerCertificates[0]
	fp := Fingerprint(leaf)
	switch {
	case b.TLSFingerprint != "":
		if fp != b.TLSFingerprint {
			return fmt.Errorf("TLS certificate of the BMC has SHA-256 fingerprint %s, not the pinned %s: if the BMC's certificate was replaced, pin the new one with tls_fingerprint (giving the password again)", fp, b.TLSFingerprint)
		}
		return nil
	case b.TLSInsecure:
		warn.Do(func() {
			c.cfg.Logger.Warn("bmc TLS certificate not verified (tls_insecure_skip_verify is set): pin it with tls_fingerprint", "address", b.Address, "fingerprint", fp)
		})
		return nil
	}
	inter := x509.NewCertPool()
	for _, cert := range cs.PeerCertificates[1:] {
		inter.AddCert(cert)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: c.cfg.RootCAs, Intermediates: inter, DNSName: host, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		return fmt.Errorf("TLS certificate of the BMC not trusted (%v); its SHA-256 fingerprint is %s: if that is the BMC's own certificate, pin it (tls_fingerprint in the BMC settings, -tls-fingerprint of matchbox machine bmc set, with the password again), or give the CA that issued it with -bmc-ca-file", err, fp)
	}
	return nil
}

// NormalizePower maps a provider's power state text to on, off or unknown:
// ipmitool prints "Chassis Power is on", Redfish says "On", "PoweringOff"…
func NormalizePower(raw string) matchbox.PowerState {
	s := strings.ToLower(strings.TrimSpace(raw))
	s = strings.TrimPrefix(s, "chassis power is ")
	switch s {
	// A machine changing state reports the state it is going to.
	case "on", "poweringon", "powering on":
		return matchbox.PowerOn
	case "off", "poweringoff", "powering off", "soft off", "softoff":
		return matchbox.PowerOff
	}
	return matchbox.PowerUnknown
}

// reason makes a bmclib error fit one log line and an event: bmclib joins
// the providers' errors into a list over several lines, with bookkeeping
// entries and Redfish error bodies in them. The password never appears.
func (c *Controller) reason(err error, b matchbox.BMC, timedOut bool) string {
	var parts []string
	var list interface{ WrappedErrors() []error }
	if errors.As(err, &list) {
		for _, e := range list.WrappedErrors() {
			msg := e.Error()
			if strings.HasPrefix(msg, "no Opener implementations found") || (strings.HasPrefix(msg, "failed to ") && len(list.WrappedErrors()) > 1) {
				continue
			}
			parts = append(parts, redfishMessage(msg))
		}
	}
	if len(parts) == 0 {
		parts = []string{redfishMessage(err.Error())}
	}
	for i, part := range parts {
		// "provider: gofish: …": the caller names the provider.
		part = strings.TrimPrefix(part, "provider: ")
		for _, p := range matchbox.BMCProviders {
			part = strings.TrimPrefix(part, registryName(p)+": ")
		}
		parts[i] = part
	}
	msg := strings.Join(strings.Fields(strings.Join(parts, "; ")), " ")
	if timedOut || errors.Is(err, context.DeadlineExceeded) {
		msg += fmt.Sprintf(" (no answer within the provider timeout %v or the operation deadline %v)", c.cfg.ProviderTimeout, c.cfg.OperationTimeout)
	}
	return matchbox.RedactSecret(msg, b.Password)
}

// redfishErrorBody finds where a Redfish error body starts in a message.
var redfishErrorBody = regexp.MustCompile(`\{\s*"error"\s*:`)

// redfishMessage replaces a Redfish error body in msg by its message.
func redfishMessage(msg string) string {
	loc := redfishErrorBody.FindStringIndex(msg)
	if loc == nil {
		return msg
	}
	i := loc[0]
	var body struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal([]byte(msg[i:]), &body) != nil || body.Error.Message == "" {
		return msg
	}
	return msg[:i] + body.Error.Message
}
