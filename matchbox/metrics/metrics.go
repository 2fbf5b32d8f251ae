// Package metrics holds the Prometheus collectors that several front-ends
// export alike, so each is written once.
package metrics

import "github.com/prometheus/client_golang/prometheus"

// SuppressedLines exports the lines a loglimit.Limiter suppressed (its
// Suppressed method), by message, as matchbox_log_suppressed_total. It
// describes no metric (an unchecked collector), so the recorder and every
// front-end can each register their own messages under the one name; the
// messages do not overlap.
type SuppressedLines func() map[string]uint64

var suppressedDesc = prometheus.NewDesc("matchbox_log_suppressed_total",
	"Log lines not written: repeats of a line written within a minute, or beyond the rate of their message.", []string{"message"}, nil)

// Describe describes nothing: see SuppressedLines.
func (SuppressedLines) Describe(chan<- *prometheus.Desc) {}

// Collect sends one counter per message.
func (f SuppressedLines) Collect(ch chan<- prometheus.Metric) {
	for msg, n := range f() {
		ch <- prometheus.MustNewConstMetric(suppressedDesc, prometheus.CounterValue, float64(n), msg)
	}
}
