// Package metrics exposes multiwan's numbers to Prometheus.
//
// Two kinds: what the daemon records as it happens (probes, RTTs,
// transitions, applies, repairs, reloads, hook runs: counters and
// histograms), and what is read at scrape time from the daemon's published
// state and the kernel (WAN states, shares, the override, traffic and
// connections per WAN: gauges and counters built by a Collector). Recording
// never blocks: the client library's vectors are safe for concurrent use
// and cost a few atomic operations.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/multiwan/multiwan/internal/control"
	"github.com/multiwan/multiwan/internal/probe"
)

// Traffic is what a WAN's interface received and sent, from multiwan's
// own nft counters.
type Traffic struct {
	RXBytes, RXPackets, TXBytes, TXPackets uint64
}

// Source gives the values read at scrape time. Its methods are called from
// the scraping goroutine and must not wait for the daemon's loop.
type Source interface {
	// Status is the daemon's published snapshot.
	Status() control.Status
	// Traffic is the traffic per WAN; nil when not counted.
	Traffic() map[string]Traffic
	// Connections is the number of conntrack entries per WAN, as last
	// counted (the daemon counts them every few seconds, not per scrape);
	// nil when not counted.
	Connections() map[string]int
}

// States are the WAN states, one gauge series each.
var States = []string{"up", "degraded", "down", "unknown"}

// RTTBuckets are the probe RTT histogram's buckets: from 50 µs, doubling
// (as smokeping_prober's), up to about 26 s.
var RTTBuckets = prometheus.ExponentialBuckets(50e-6, 2, 20)

// Metrics holds the recorded metrics and the registry they are served
// from.
type Metrics struct {
	reg *prometheus.Registry

	probesSent, probesAnswered, probesLate, probesLost *prometheus.CounterVec
	probeRTT                                           *prometheus.HistogramVec
	transitions                                        *prometheus.CounterVec
	applyDuration                                      prometheus.Histogram
	applyFailures                                      prometheus.Counter
	repairs                                            *prometheus.CounterVec
	hookRuns                                           *prometheus.CounterVec
	reloads                                            *prometheus.CounterVec
}

// New returns the metrics, with the scrape-time values read from src (nil:
// none) and Go's process metrics.
func New(src Source) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	probe := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"wan", "family", "target"})
	}
	m.probesSent = probe("multiwan_probes_sent_total", "Probes sent, by WAN, family and target.")
	m.probesAnswered = probe("multiwan_probes_answered_total", "Probes answered within the round's deadline.")
	m.probesLate = probe("multiwan_probes_late_total", "Probes answered after the round's deadline but within the timeout (counted as lost too).")
	m.probesLost = probe("multiwan_probes_lost_total", "Probes not answered within the round's deadline.")
	m.probeRTT = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "multiwan_probe_rtt_seconds", Help: "Round-trip time of answered probes.", Buckets: RTTBuckets,
	}, []string{"wan", "family", "target"})
	m.transitions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "multiwan_wan_transitions_total", Help: "WAN state changes, by WAN, family, from and to.",
	}, []string{"wan", "family", "from", "to"})
	m.applyDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "multiwan_apply_duration_seconds",
		Help:    "Time from a decision to the kernel holding it.",
		Buckets: prometheus.ExponentialBuckets(100e-6, 2, 16),
	})
	m.applyFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "multiwan_apply_failures_total", Help: "Applies that failed (each is retried).",
	})
	m.repairs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "multiwan_repairs_total", Help: "State other programs removed that multiwan put back, by what.",
	}, []string{"what"})
	m.hookRuns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "multiwan_hook_runs_total", Help: "Hook runs, by result: ok, failed, timeout, not_started.",
	}, []string{"result"})
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "multiwan_config_reloads_total", Help: "Config reloads, by result: ok or refused.",
	}, []string{"result"})
	m.reg.MustRegister(m.probesSent, m.probesAnswered, m.probesLate, m.probesLost, m.probeRTT, m.transitions,
		m.applyDuration, m.applyFailures, m.repairs, m.hookRuns, m.reloads,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, r := range []string{"ok", "refused"} {
		m.reloads.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "failed", "timeout", "not_started"} {
		m.hookRuns.WithLabelValues(r)
	}
	if src != nil {
		m.SetSource(src)
	}
	return m
}

// SetSource registers the scrape-time metrics read from src; once.
func (m *Metrics) SetSource(src Source) {
	m.reg.MustRegister(&collector{src: src, now: time.Now})
}

// Handler serves the metrics in the Prometheus text format, bounded: at
// most one scrape at a time, each within 10 s.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{MaxRequestsInFlight: 1, Timeout: 10 * time.Second})
}

// Round records a probe round of one WAN and family: its targets' probes
// sent, answered or lost and their RTTs, or, for a late report, the
// answers that came after the deadline.
func (m *Metrics) Round(wan, family string, r probe.Round) {
	if m == nil {
		return
	}
	for _, res := range r.Results {
		if r.Late {
			if res.OK {
				m.probesLate.WithLabelValues(wan, family, res.Target).Inc()
				m.probeRTT.WithLabelValues(wan, family, res.Target).Observe(res.RTT.Seconds())
			}
			continue
		}
		m.probesSent.WithLabelValues(wan, family, res.Target).Inc()
		if res.OK {
			m.probesAnswered.WithLabelValues(wan, family, res.Target).Inc()
			m.probeRTT.WithLabelValues(wan, family, res.Target).Observe(res.RTT.Seconds())
		} else {
			m.probesLost.WithLabelValues(wan, family, res.Target).Inc()
		}
	}
}

// Transition records a WAN's state change.
func (m *Metrics) Transition(wan, family, from, to string) {
	if m == nil {
		return
	}
	m.transitions.WithLabelValues(wan, family, from, to).Inc()
}

// Applied records the time from a decision to the kernel holding it.
func (m *Metrics) Applied(took time.Duration) {
	if m != nil {
		m.applyDuration.Observe(took.Seconds())
	}
}

// ApplyFailed records a failed apply.
func (m *Metrics) ApplyFailed() {
	if m != nil {
		m.applyFailures.Inc()
	}
}

// Repaired records a repair of what ("nft table", "routing").
func (m *Metrics) Repaired(what string) {
	if m != nil {
		m.repairs.WithLabelValues(what).Inc()
	}
}

// Reloaded records a reload, accepted or refused.
func (m *Metrics) Reloaded(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.reloads.WithLabelValues("ok").Inc()
	} else {
		m.reloads.WithLabelValues("refused").Inc()
	}
}

// HookRan records a hook run's result: ok, failed, timeout, not_started.
func (m *Metrics) HookRan(result string) {
	if m != nil {
		m.hookRuns.WithLabelValues(result).Inc()
	}
}

// collector builds the scrape-time metrics from a Source.
type collector struct {
	src Source
	now func() time.Time
}

var (
	descState = prometheus.NewDesc("multiwan_wan_state",
		"1 for the WAN's current state (up, degraded, down, unknown), 0 for the others.", []string{"wan", "family", "state"}, nil)
	descStateDuration = prometheus.NewDesc("multiwan_wan_state_duration_seconds",
		"Seconds since the WAN entered its current state.", []string{"wan", "family"}, nil)
	descLoss = prometheus.NewDesc("multiwan_wan_loss_ratio",
		"The share of lost probes (0-1) the health decision used.", []string{"wan", "family"}, nil)
	descRTT = prometheus.NewDesc("multiwan_wan_rtt_seconds",
		"The median probe RTT the health decision used.", []string{"wan", "family"}, nil)
	descShare = prometheus.NewDesc("multiwan_policy_share",
		"The share (0-1) of a policy's new connections that go to a WAN now.", []string{"policy", "family", "wan"}, nil)
	descOverride = prometheus.NewDesc("multiwan_override",
		"1 for the WAN chosen with `multiwan use`; no series while the choice is automatic.", []string{"wan"}, nil)
	descBytes = prometheus.NewDesc("multiwan_wan_bytes_total",
		"Bytes received from (rx) and sent to (tx) a WAN's interface.", []string{"wan", "direction"}, nil)
	descPackets = prometheus.NewDesc("multiwan_wan_packets_total",
		"Packets received from (rx) and sent to (tx) a WAN's interface.", []string{"wan", "direction"}, nil)
	descConns = prometheus.NewDesc("multiwan_wan_conntrack_entries",
		"Connections (conntrack entries) marked with a WAN, counted every few seconds.", []string{"wan"}, nil)
	descApplyFailing = prometheus.NewDesc("multiwan_apply_failing",
		"1 while the kernel could not be made to match the plan (retried), 0 otherwise.", nil, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descState, descStateDuration, descLoss, descRTT, descShare, descOverride,
		descBytes, descPackets, descConns, descApplyFailing} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Status()
	now := c.now()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	family := func(wan, fam, state string, since time.Time, rttMS, lossPct float64) {
		for _, s := range States {
			v := 0.0
			if s == state {
				v = 1
			}
			gauge(descState, v, wan, fam, s)
		}
		if !since.IsZero() {
			gauge(descStateDuration, now.Sub(since).Seconds(), wan, fam)
		}
		if state != "unknown" {
			gauge(descLoss, lossPct/100, wan, fam)
			gauge(descRTT, rttMS/1000, wan, fam)
		}
	}
	for _, w := range st.WANs {
		family(w.Name, "ipv4", w.State, w.Since, w.RTTms, w.LossPct)
		if w.IPv6 != nil {
			family(w.Name, "ipv6", w.IPv6.State, w.IPv6.Since, w.IPv6.RTTms, w.IPv6.LossPct)
		}
	}
	for fam, policies := range map[string][]control.PolicyStatus{"ipv4": st.Policies, "ipv6": st.Policies6} {
		for _, p := range policies {
			for _, a := range p.Active {
				gauge(descShare, a.Share, p.Name, fam, a.WAN)
			}
		}
	}
	if st.Override != "" {
		gauge(descOverride, 1, st.Override)
	}
	failing := 0.0
	if st.Daemon != nil && st.Daemon.ApplyError != "" {
		failing = 1
	}
	gauge(descApplyFailing, failing)
	for wan, t := range c.src.Traffic() {
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(t.RXBytes), wan, "rx")
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(t.TXBytes), wan, "tx")
		ch <- prometheus.MustNewConstMetric(descPackets, prometheus.CounterValue, float64(t.RXPackets), wan, "rx")
		ch <- prometheus.MustNewConstMetric(descPackets, prometheus.CounterValue, float64(t.TXPackets), wan, "tx")
	}
	for wan, n := range c.src.Connections() {
		gauge(descConns, float64(n), wan)
	}
}
