package initconfig

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/multiwan/multiwan/internal/config"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// TestProposeGolden feeds every synthetic box of testdata/*.json to
// Propose and compares the config, the report and the error with
// testdata/*.golden.
func TestProposeGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.json")
	if err != nil || len(files) < 7 {
		t.Fatalf("testdata: %v %v", files, err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		t.Run(name, func(t *testing.T) {
			obs := readObserved(t, f)
			text, report, err := Propose(obs)
			got := golden(text, report, err)
			path := strings.TrimSuffix(f, ".json") + ".golden"
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("%s differs from Propose's output (go test -update rewrites it):\n%s", path, got)
			}
		})
	}
}

func readObserved(t *testing.T, path string) Observed {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var obs Observed
	if err := json.Unmarshal(data, &obs); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return obs
}

// golden is what a golden file holds: the config, then the report, then
// the error.
func golden(text string, report []string, err error) string {
	var b strings.Builder
	b.WriteString(text)
	b.WriteString("#### report\n")
	for _, l := range report {
		b.WriteString(l + "\n")
	}
	if err != nil {
		b.WriteString("#### error\n" + err.Error() + "\n")
	}
	return b.String()
}

// TestProposeValid checks what every proposal must be: valid (Propose
// parses it itself; this is the check's check), with the uplinks in
// metric order as tiers, the public targets, and local_traffic.
func TestProposeValid(t *testing.T) {
	for _, f := range []string{"two-dhcp", "static-dhcp", "dual-stack-ra", "one-uplink", "ppp", "twenty"} {
		obs := readObserved(t, "testdata/"+f+".json")
		text, _, err := Propose(obs)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		cfg, err := config.Parse(f, []byte(text))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if !cfg.LocalTraffic || cfg.DefaultPolicy != "failover" {
			t.Errorf("%s: local_traffic %v, default_policy %q", f, cfg.LocalTraffic, cfg.DefaultPolicy)
		}
		p, _ := cfg.PolicyByName("failover")
		for i, m := range p.Members {
			if m.Tier != i+1 {
				t.Errorf("%s: member %d tier %d", f, i, m.Tier)
			}
		}
		for _, w := range cfg.WANs {
			if len(w.Probe.Targets) < 2 {
				t.Errorf("%s: WAN %s has targets %v, want two or more", f, w.Name, w.Probe.Targets)
			}
		}
	}
}

// TestProposeChoices pins the decisions on the synthetic boxes.
func TestProposeChoices(t *testing.T) {
	type wan struct{ name, iface, gw, gw6 string }
	cases := map[string][]wan{
		// dhclient's route says proto boot: the running client tells
		// it apart; networkd's says dhcp.
		"two-dhcp":    {{"eth0", "eth0", "auto", ""}, {"eth1", "eth1", "auto", ""}},
		"static-dhcp": {{"enp1s0", "enp1s0", "203.0.113.9", ""}, {"wwan0", "wwan0", "auto", ""}},
		// IPv4 metrics order the tiers; the RA routes give gateway6 auto.
		"dual-stack-ra": {{"wanb", "wanb", "192.0.2.1", "auto"}, {"wan", "wan", "auto", "auto"}},
		"one-uplink":    {{"eth0", "eth0", "auto", ""}},
		// pppd's route has no gateway: auto routes by the link.
		"ppp": {{"ppp0", "ppp0", "auto", ""}, {"eth1", "eth1", "192.168.100.1", ""}},
	}
	for f, want := range cases {
		text, _, err := Propose(readObserved(t, "testdata/"+f+".json"))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		cfg, err := config.Parse(f, []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		var got []wan
		for _, w := range cfg.WANs {
			g := "auto"
			if !w.GatewayAuto {
				g = w.Gateway.String()
			}
			g6 := ""
			switch {
			case w.Gateway6Auto:
				g6 = "auto"
			case w.IPv6:
				g6 = w.Gateway6.String()
			}
			got = append(got, wan{w.Name, w.Interface, g, g6})
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: WANs %v, want %v", f, got, want)
		}
	}
}

func TestProposeNone(t *testing.T) {
	_, report, err := Propose(readObserved(t, "testdata/none.json"))
	if !errors.Is(err, ErrNoUplink) {
		t.Fatalf("err %v, want ErrNoUplink", err)
	}
	all := strings.Join(report, "\n")
	for _, want := range []string{"eth0 (device, up, 192.168.1.10/24)", "eth1 (device, up, no carrier, no address)",
		"wlan0 (device, down, no address)", "installed by multiwan itself", "what to do:"} {
		if !strings.Contains(all, want) {
			t.Errorf("report lacks %q:\n%s", want, all)
		}
	}
	if _, _, err := Propose(Observed{}); !errors.Is(err, ErrNoUplink) {
		t.Errorf("empty box: %v", err)
	}
}

// TestProposeTooMany: 120 uplinks yield the first 99 by metric, a valid
// config, and a report naming the rest.
func TestProposeTooMany(t *testing.T) {
	var obs Observed
	for i := range 120 {
		name := fmt.Sprintf("vlan%d", 1000+i)
		obs.Links = append(obs.Links, Link{Index: 10 + i, Name: name, Kind: "vlan", Up: true, Carrier: true})
		obs.Routes = append(obs.Routes, Route{Family: 4, Dev: name, Table: mainTable, Metric: 1000 - i, Protocol: "boot",
			Gateway: netip.AddrFrom4([4]byte{10, byte(i), 0, 1})})
	}
	text, report, err := Propose(obs)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("x", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.WANs) != MaxWANs || cfg.WANs[0].Name != "vlan1119" {
		t.Errorf("%d WANs, first %s", len(cfg.WANs), cfg.WANs[0].Name)
	}
	if all := strings.Join(report, "\n"); !strings.Contains(all, "at most 99 WANs") || !strings.Contains(all, "vlan1000") {
		t.Errorf("report:\n%s", all)
	}
}

// TestProposeOneUplinkFilledIn: the commented second WAN of a one-uplink
// proposal, uncommented with its member, is a valid two-WAN config.
func TestProposeOneUplinkFilledIn(t *testing.T) {
	text, _, err := Propose(readObserved(t, "testdata/one-uplink.json"))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimLeft(line, " ")
		if rest, ok := strings.CutPrefix(trimmed, "# - "); ok {
			line = line[:len(line)-len(trimmed)] + "- " + rest
		} else if rest, ok := strings.CutPrefix(trimmed, "#   "); ok {
			line = line[:len(line)-len(trimmed)] + "  " + rest
		}
		b.WriteString(line + "\n")
	}
	cfg, err := config.Parse("filled", []byte(b.String()))
	if err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	p, _ := cfg.PolicyByName("failover")
	if len(cfg.WANs) != 2 || cfg.WANs[1].Interface != "eth1" || len(p.Members) != 2 || p.Members[1].WAN != "eth1" {
		t.Errorf("WANs %+v, members %+v", cfg.WANs, p.Members)
	}
}

// TestProposeTie: equal metrics are ordered by interface index, with a
// warning; a default route only in another table comes last, with one.
func TestProposeTie(t *testing.T) {
	gw := netip.MustParseAddr("192.0.2.1")
	obs := Observed{
		Links: []Link{{Index: 3, Name: "b", Up: true, Carrier: true}, {Index: 2, Name: "a", Up: true, Carrier: true},
			{Index: 4, Name: "wg0", Kind: "wireguard", PointToPoint: true, Up: true, Carrier: true}},
		Routes: []Route{
			{Family: 4, Dev: "wg0", Table: 51820, Metric: 0, Protocol: "boot"},
			{Family: 4, Dev: "b", Gateway: gw, Table: mainTable, Metric: 100, Protocol: "dhcp"},
			{Family: 4, Dev: "a", Gateway: gw, Table: mainTable, Metric: 100, Protocol: "dhcp"},
		},
	}
	text, report, err := Propose(obs)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := config.Parse("x", []byte(text))
	var names []string
	for _, w := range cfg.WANs {
		names = append(names, w.Name)
	}
	if fmt.Sprint(names) != "[a b wg0]" {
		t.Errorf("order %v", names)
	}
	all := strings.Join(report, "\n")
	for _, want := range []string{"a and b have default routes of the same metric 100", "wg0: its default route is in table 51820, not main"} {
		if !strings.Contains(all, want) {
			t.Errorf("report lacks %q:\n%s", want, all)
		}
	}
}
