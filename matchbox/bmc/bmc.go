// Package bmc drives baseboard management controllers through bmclib: power
// status, power on/off/soft/reset and the one-time boot device, each bounded
// by a deadline, with the provider order each machine's settings prefer. It
// implements the core's PowerController; bmclib's types stay in here.
package bmc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
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
	Logger           *slog.Logger
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

// registryNames maps the provider names machines' settings use to
// bmclib's registry names.
var registryNames = map[string]string{
	"ipmitool":   "ipmitool",
	"redfish":    "gofish",
	"intelamt":   "IntelAMT",
	"asrockrack": "asrockrack",
	"supermicro": "supermicro",
	"openbmc":    "openbmc",
	"dell":       "dell",
}

// open connects to the machine's BMC with its preferred providers only, in
// order. The caller closes the client.
func (c *Controller) open(ctx context.Context, b matchbox.BMC) (*bmclib.Client, []string, error) {
	providers, err := matchbox.ParseBMCProviders(b.Provider)
	if err != nil {
		return nil, nil, err
	}
	if len(providers) == 0 {
		providers = c.cfg.DefaultProviders
	}
	host, port := b.Address, ""
	if h, p, err := net.SplitHostPort(b.Address); err == nil {
		host, port = h, p
	}
	opts := []bmclib.Option{
		bmclib.WithPerProviderTimeout(c.cfg.ProviderTimeout),
		bmclib.WithIpmitoolCipherSuite(c.cfg.IPMICipherSuite),
		bmclib.WithLogger(logr.Discard()),
	}
	if c.cfg.IPMIToolPath != "" {
		opts = append(opts, bmclib.WithIpmitoolPath(c.cfg.IPMIToolPath))
	}
	if port != "" {
		opts = append(opts, bmclib.WithIpmitoolPort(port), bmclib.WithRedfishPort(port))
	}
	cl := bmclib.NewClient(host, b.Username, b.Password, opts...)
	var drivers = cl.Registry.Drivers[:0:0]
	for _, p := range providers {
		drivers = append(drivers, cl.Registry.For(registryNames[p])...)
	}
	if len(drivers) == 0 {
		if p := providers[0]; p == "ipmitool" {
			return nil, providers, errors.New("the ipmitool provider needs the ipmitool binary (not found)")
		}
		return nil, providers, fmt.Errorf("no bmclib provider available for %s", strings.Join(providers, ", "))
	}
	cl.Registry.Drivers = drivers
	if err := cl.Open(ctx); err != nil {
		return nil, providers, c.clean(fmt.Errorf("connect to %s with %s: %w", b.Address, strings.Join(providers, ", "), err), b)
	}
	return cl, providers, nil
}

// do runs one operation against the machine's BMC within the operation
// deadline.
func (c *Controller) do(ctx context.Context, b matchbox.BMC, what string, op func(context.Context, *bmclib.Client) error) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.OperationTimeout)
	defer cancel()
	start := time.Now()
	cl, providers, err := c.open(ctx, b)
	if err == nil {
		err = op(ctx, cl)
		// A fresh context: the session is closed even after a deadline.
		cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = cl.Close(cctx)
		ccancel()
		if err != nil {
			err = c.clean(fmt.Errorf("%s via %s: %w", what, strings.Join(providers, ", "), err), b)
		}
	}
	if err != nil && ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("%w (deadline %v)", err, c.cfg.OperationTimeout)
	}
	attrs := []any{"address", b.Address, "op", what, "took", time.Since(start).Round(time.Millisecond)}
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
			// bmclib's Redfish provider reports a soft power-off as failed
			// even when the BMC took it: believe the machine's state.
			if raw, serr := cl.GetPowerState(ctx); serr == nil && NormalizePower(raw) == matchbox.PowerOff {
				return nil
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

// clean makes a bmclib error fit one log line and an event: bmclib joins
// the providers' errors over several lines. The password never appears.
func (c *Controller) clean(err error, b matchbox.BMC) error {
	msg := err.Error()
	msg = strings.ReplaceAll(msg, "\n\t* ", "; ")
	msg = strings.Join(strings.Fields(msg), " ")
	if b.Password != "" {
		msg = strings.ReplaceAll(msg, b.Password, "********")
	}
	return &opError{msg: msg, err: err}
}

// opError is a cleaned error that still unwraps to the original (for
// matchbox.ErrInvalid and context errors).
type opError struct {
	msg string
	err error
}

func (e *opError) Error() string { return e.msg }
func (e *opError) Unwrap() error { return e.err }
