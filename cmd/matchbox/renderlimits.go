package main

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"matchbox.dev/matchbox/render"
)

// renderLimits are the flags bounding one template render, the same for
// serve and validate.
type renderLimits struct {
	timeout positiveDuration
	maxMB   mebibytes
}

func (l *renderLimits) define(fs *flag.FlagSet) {
	l.timeout = positiveDuration(render.DefaultRenderTimeout)
	l.maxMB = render.DefaultRenderMaxBytes >> 20
	fs.Var(&l.timeout, "render-timeout", "longest time one template may take to render")
	fs.Var(&l.maxMB, "render-max-mb", "bound of one render's output and of every value its template functions make, in MiB; all they make together is bounded by 4 times this")
}

func (l *renderLimits) timeoutValue() time.Duration { return time.Duration(l.timeout) }

func (l *renderLimits) maxBytes() int { return int(l.maxMB) << 20 }

// positiveDuration is a duration flag above zero.
type positiveDuration time.Duration

func (d *positiveDuration) String() string { return time.Duration(*d).String() }

func (d *positiveDuration) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("not a duration (e.g. 5s)")
	}
	if v <= 0 {
		return errors.New("must be more than 0")
	}
	*d = positiveDuration(v)
	return nil
}

// mebibytes is a size flag in MiB, from 1 MiB to 64 GiB.
type mebibytes int

func (m *mebibytes) String() string { return strconv.Itoa(int(*m)) }

func (m *mebibytes) Set(s string) error {
	v, err := strconv.Atoi(s)
	if err != nil || v < 1 || v > 64<<10 {
		return fmt.Errorf("not a number of MiB from 1 to %d", 64<<10)
	}
	*m = mebibytes(v)
	return nil
}

// registerRenderLimitMetrics exports how many renders a limit stopped.
func registerRenderLimitMetrics(reg *prometheus.Registry, eng *render.Engine) {
	for _, l := range []struct {
		kind string
		n    func(render.Stats) uint64
	}{
		{render.LimitTimeout, func(s render.Stats) uint64 { return s.LimitTimeout }},
		{render.LimitSize, func(s render.Stats) uint64 { return s.LimitSize }},
		{render.LimitNesting, func(s render.Stats) uint64 { return s.LimitNesting }},
	} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "matchbox_render_limit_hits_total",
			Help:        "Renders stopped by a limit: timeout (-render-timeout), size (-render-max-mb) or nesting (values or template calls nested more than 1000 deep).",
			ConstLabels: prometheus.Labels{"limit": l.kind},
		}, func() float64 { return float64(l.n(eng.Stats())) }))
	}
}
