package dhcp

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

// suppressedLines exports the lines a matchbox.LogLimiter suppressed, by
// message. It describes no metric (an unchecked collector): the recorder
// and every front-end export their own messages under one name.
type suppressedLines func() map[string]uint64

var suppressedDesc = prometheus.NewDesc("matchbox_log_suppressed_total",
	"Log lines not written: repeats of a line written within a minute, or beyond the rate of their message.", []string{"message"}, nil)

func (suppressedLines) Describe(chan<- *prometheus.Desc) {}

func (f suppressedLines) Collect(ch chan<- prometheus.Metric) {
	for msg, n := range f() {
		ch <- prometheus.MustNewConstMetric(suppressedDesc, prometheus.CounterValue, float64(n), msg)
	}
}

// replyNotSent logs a reply the socket did not take.
func (s *Server) replyNotSent(l Listener, mac string, err error) {
	s.limit.Log(context.Background(), slog.LevelWarn, "dhcp: reply not sent", l.Interface+" "+err.Error(), "interface", l.Interface, "mac", mac, "err", err)
}
