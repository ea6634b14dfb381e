package metrics

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/multiwan/multiwan/internal/control"
	"github.com/multiwan/multiwan/internal/probe"
)

type fakeSource struct{ st control.Status }

func (f fakeSource) Status() control.Status { return f.st }
func (f fakeSource) Traffic() map[string]Traffic {
	return map[string]Traffic{"isp1": {RXBytes: 1000, RXPackets: 10, TXBytes: 500, TXPackets: 5}}
}
func (f fakeSource) Connections() map[string]int { return map[string]int{"isp1": 7} }

func TestScrape(t *testing.T) {
	since := time.Now().Add(-time.Minute)
	m := New(fakeSource{control.Status{
		WANs:     []control.WANStatus{{Name: "isp1", State: "up", RTTms: 2, LossPct: 5, Since: since}},
		Policies: []control.PolicyStatus{{Name: "failover", Active: []control.Share{{WAN: "isp1", Share: 1}}}},
		Override: "isp1",
	}})
	m.Round("isp1", "ipv4", probe.Round{Results: []probe.Result{{Target: "203.0.113.20", OK: true, RTT: time.Millisecond},
		{Target: "203.0.113.30", Err: "timeout"}}})
	m.Round("isp1", "ipv4", probe.Round{Late: true, Results: []probe.Result{{Target: "203.0.113.30", OK: true, RTT: 900 * time.Millisecond}}})
	m.Transition("isp1", "ipv4", "unknown", "up")
	m.Applied(3 * time.Millisecond)
	m.Reloaded(false)
	m.HookRan("timeout")
	want := `
# HELP multiwan_wan_state 1 for the WAN's current state (up, degraded, down, unknown), 0 for the others.
# TYPE multiwan_wan_state gauge
multiwan_wan_state{family="ipv4",state="degraded",wan="isp1"} 0
multiwan_wan_state{family="ipv4",state="down",wan="isp1"} 0
multiwan_wan_state{family="ipv4",state="unknown",wan="isp1"} 0
multiwan_wan_state{family="ipv4",state="up",wan="isp1"} 1
# HELP multiwan_probes_lost_total Probes not answered within the round's deadline.
# TYPE multiwan_probes_lost_total counter
multiwan_probes_lost_total{family="ipv4",target="203.0.113.30",wan="isp1"} 1
# HELP multiwan_probes_late_total Probes answered after the round's deadline but within the timeout (counted as lost too).
# TYPE multiwan_probes_late_total counter
multiwan_probes_late_total{family="ipv4",target="203.0.113.30",wan="isp1"} 1
# HELP multiwan_wan_bytes_total Bytes received from (rx) and sent to (tx) a WAN's interface.
# TYPE multiwan_wan_bytes_total counter
multiwan_wan_bytes_total{direction="rx",wan="isp1"} 1000
multiwan_wan_bytes_total{direction="tx",wan="isp1"} 500
# HELP multiwan_override 1 for the WAN chosen with ` + "`multiwan use`" + `; no series while the choice is automatic.
# TYPE multiwan_override gauge
multiwan_override{wan="isp1"} 1
# HELP multiwan_wan_conntrack_entries Connections (conntrack entries) marked with a WAN, counted every few seconds.
# TYPE multiwan_wan_conntrack_entries gauge
multiwan_wan_conntrack_entries{wan="isp1"} 7
# HELP multiwan_config_reloads_total Config reloads, by result: ok or refused.
# TYPE multiwan_config_reloads_total counter
multiwan_config_reloads_total{result="ok"} 0
multiwan_config_reloads_total{result="refused"} 1
`
	names := []string{"multiwan_wan_state", "multiwan_probes_lost_total", "multiwan_probes_late_total", "multiwan_wan_bytes_total",
		"multiwan_override", "multiwan_wan_conntrack_entries", "multiwan_config_reloads_total"}
	if err := testutil.GatherAndCompare(m.reg, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(m.probeRTT); n != 2 {
		t.Fatalf("RTT histograms %d, want one per target", n)
	}
}

// TestAlertRules checks that examples/alerts.yml is YAML and that every
// multiwan metric its expressions use exists.
func TestAlertRules(t *testing.T) {
	data, err := os.ReadFile("../../examples/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(data, &rules); err != nil {
		t.Fatal(err)
	}
	m := New(fakeSource{control.Status{WANs: []control.WANStatus{{Name: "isp1", State: "up"}}}})
	m.Round("isp1", "ipv4", probe.Round{Results: []probe.Result{{Target: "t", OK: true}, {Target: "u", Err: "timeout"}}})
	m.Repaired("nft table")
	m.Transition("isp1", "ipv4", "up", "down")
	fams, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, f := range fams {
		known[f.GetName()] = true
	}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			for _, name := range regexp.MustCompile(`multiwan_[a-z_]+`).FindAllString(r.Expr, -1) {
				if !known[name] {
					t.Errorf("alert %s uses %s, which multiwan does not export", r.Alert, name)
				}
			}
		}
	}
	if n < 5 {
		t.Fatalf("%d alert rules", n)
	}
}
