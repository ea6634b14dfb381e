package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/multiwan/multiwan/internal/lab"
)

// httpListen is where the lab router's network listener serves the
// dashboard, metrics and the read-only API: its LAN address.
var httpListen = lab.LAN1Addr + ":9731"

// scrape fetches /metrics from the LAN client and parses it with
// Prometheus' own text parser.
func scrape(t *testing.T, l *lab.Lab) map[string]*dto.MetricFamily {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	body, err := l.Curl(ctx, lab.NSClient, "http://"+httpListen+"/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	// The lab's curl helper trims the last newline the format ends with.
	fams, err := p.TextToMetricFamilies(strings.NewReader(body + "\n"))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, body)
	}
	return fams
}

// value is the value of the series of family name with labels (a
// counter's, a gauge's, or a histogram's count); -1 when there is none.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.Label {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

// TestMetrics scrapes the daemon's metrics and checks that they move with
// what happens: WAN states, transitions and shares on a cut, traffic per
// WAN with a download, probes and their RTTs, connections per WAN.
func TestMetrics(t *testing.T) {
	l := newLab(t, 2)
	s := setup{isps: 2, probe: fastProbe, policies: failover12, deflt: "failover",
		extra: fmt.Sprintf("http: {listen: %q}\n", httpListen)}
	r := startRouter(t, l, s.yaml(t))
	r.waitState("isp1", "up", 10*time.Second)
	r.waitState("isp2", "up", 10*time.Second)

	before := scrape(t, l)
	for _, want := range []struct {
		name   string
		labels []string
		value  float64
	}{
		{"multiwan_wan_state", []string{"wan", "isp1", "family", "ipv4", "state", "up"}, 1},
		{"multiwan_wan_state", []string{"wan", "isp1", "family", "ipv4", "state", "down"}, 0},
		{"multiwan_policy_share", []string{"policy", "failover", "wan", "isp1"}, 1},
		{"multiwan_apply_failing", nil, 0},
	} {
		if got := value(before, want.name, want.labels...); got != want.value {
			t.Errorf("%s%v = %v, want %v", want.name, want.labels, got, want.value)
		}
	}
	for _, name := range []string{"multiwan_probes_sent_total", "multiwan_probes_answered_total", "multiwan_probe_rtt_seconds",
		"multiwan_apply_duration_seconds", "multiwan_wan_state_duration_seconds", "multiwan_wan_rtt_seconds"} {
		if got := value(before, name, "wan", "isp1"); name != "multiwan_apply_duration_seconds" && got <= 0 {
			t.Errorf("%s{wan=isp1} = %v, want > 0", name, got)
		}
	}
	// Traffic: a 200 KB download through isp1 shows in its rx counter.
	rx0 := value(before, "multiwan_wan_bytes_total", "wan", "isp1", "direction", "rx")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := l.Curl(ctx, lab.NSClient, service+"bytes?n=200000"); err != nil {
		t.Fatal(err)
	}
	// A connection held open is counted within ten seconds.
	finished := startDownload(t, l, 12, 50)
	if err := l.WaitFor(ctx, func() error {
		if n := value(scrape(t, l), "multiwan_wan_conntrack_entries", "wan", "isp1"); n < 1 {
			return fmt.Errorf("conntrack entries of isp1: %v", n)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	mid := scrape(t, l)
	if rx := value(mid, "multiwan_wan_bytes_total", "wan", "isp1", "direction", "rx"); rx-rx0 < 200000 {
		t.Errorf("isp1 received %v bytes during a 200 KB download", rx-rx0)
	}

	if err := l.CutUpstream(1); err != nil {
		t.Fatal(err)
	}
	r.waitState("isp1", "down", 10*time.Second)
	after := scrape(t, l)
	for _, want := range []struct {
		name   string
		labels []string
		value  float64
	}{
		{"multiwan_wan_state", []string{"wan", "isp1", "family", "ipv4", "state", "down"}, 1},
		{"multiwan_wan_state", []string{"wan", "isp1", "family", "ipv4", "state", "up"}, 0},
		{"multiwan_wan_transitions_total", []string{"wan", "isp1", "from", "up", "to", "down"}, 1},
		{"multiwan_policy_share", []string{"policy", "failover", "wan", "isp2"}, 1},
	} {
		if got := value(after, want.name, want.labels...); got != want.value {
			t.Errorf("after the cut: %s%v = %v, want %v", want.name, want.labels, got, want.value)
		}
	}
	if lost := value(after, "multiwan_probes_lost_total", "wan", "isp1"); lost < 3 {
		t.Errorf("isp1's lost probes %v after the cut", lost)
	}
	if got := value(after, "multiwan_policy_share", "policy", "failover", "wan", "isp1"); got != -1 {
		t.Errorf("isp1 still has a share: %v", got)
	}
	_ = finished
}
