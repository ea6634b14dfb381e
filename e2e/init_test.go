package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/multiwan/multiwan/internal/config"
	"github.com/multiwan/multiwan/internal/initconfig"
	"github.com/multiwan/multiwan/internal/lab"
)

// `multiwan init` in lab routers: the real binary reads the router's
// links and default routes and proposes a config; `check` accepts it, and
// the daemon run on it (with the lab's probe targets in place of the
// public resolvers, which the lab cannot reach) fails over when ISP 1's
// upstream dies.

// routerState is what of the router init must not change.
func routerState(t *testing.T, l *lab.Lab) string {
	t.Helper()
	var b strings.Builder
	for _, argv := range [][]string{
		{"ip", "rule", "show"}, {"ip", "-6", "rule", "show"},
		{"ip", "route", "show", "table", "all"}, {"ip", "-6", "route", "show", "table", "all"},
		{"ip", "addr", "show"}, {"nft", "list", "ruleset"},
	} {
		for _, line := range strings.Split(execIn(t, l, lab.NSRouter, argv...), "\n") {
			// The kernel's own link-local addresses come and go (DAD)
			// whatever init does.
			if !strings.Contains(line, "fe80:") {
				b.WriteString(line + "\n")
			}
		}
	}
	return b.String()
}

// runInit runs `multiwan init -o FILE` in the router and returns the
// config it wrote and what it said.
func runInit(t *testing.T, l *lab.Lab) (text, report string) {
	t.Helper()
	before := routerState(t, l)
	path := filepath.Join(t.TempDir(), "init", "multiwan.yaml")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := l.Exec(ctx, lab.NSRouter, multiwanBin, "init", "-o", path)
	if err != nil {
		t.Fatalf("multiwan init: %v\n%s", err, out)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if after := routerState(t, l); after != before {
		t.Errorf("init changed the router:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if got := execIn(t, l, lab.NSRouter, multiwanBin, "check", "-c", path); got != "ok\n" {
		t.Fatalf("check: %q", got)
	}
	t.Logf("multiwan init said:\n%s\nand wrote %s:\n%s", out, path, data)
	return string(data), string(out)
}

// labTargets replaces the public probe targets init proposes with the
// lab's probe addresses, and gives the daemon a control socket of the
// test's own.
func labTargets(t *testing.T, text string) string {
	t.Helper()
	v4 := "[" + strings.Join(initconfig.Targets4, ", ") + "]"
	both := strings.TrimSuffix(v4, "]")
	for _, a := range initconfig.Targets6 {
		both += fmt.Sprintf(", %q", a)
	}
	both += "]"
	lab6 := fmt.Sprintf("[%s, %s, %q, %q]", lab.ProbeAddr1, lab.ProbeAddr2, lab.ProbeAddr6a, lab.ProbeAddr6b)
	lab4 := fmt.Sprintf("[%s, %s]", lab.ProbeAddr1, lab.ProbeAddr2)
	if !strings.Contains(text, v4) && !strings.Contains(text, both) {
		t.Fatalf("no %s or %s in the proposed config", v4, both)
	}
	text = strings.ReplaceAll(text, both, lab6)
	text = strings.ReplaceAll(text, v4, lab4)
	return text + fmt.Sprintf("control:\n  socket: %s\n", filepath.Join(t.TempDir(), "mw.sock"))
}

// wantWAN is what the proposed config should say of a lab WAN.
type wantWAN struct{ name, iface, gateway, gateway6 string }

// checkProposal parses the proposal and compares its WANs, in failover
// order, with want.
func checkProposal(t *testing.T, text string, want []wantWAN) {
	t.Helper()
	cfg, err := config.Parse("init", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	var got []wantWAN
	for _, w := range cfg.WANs {
		g, g6 := w.Gateway.String(), ""
		if w.GatewayAuto {
			g = "auto"
		}
		switch {
		case w.Gateway6Auto:
			g6 = "auto"
		case w.IPv6:
			g6 = w.Gateway6.String()
		}
		got = append(got, wantWAN{w.Name, w.Interface, g, g6})
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("proposed WANs %v, want %v", got, want)
	}
	p, ok := cfg.PolicyByName(cfg.DefaultPolicy)
	if !ok || len(p.Members) != len(want) || !cfg.LocalTraffic {
		t.Fatalf("default policy %q: %+v, local_traffic %v", cfg.DefaultPolicy, p, cfg.LocalTraffic)
	}
	for i, m := range p.Members {
		if m.WAN != want[i].name || m.Tier != i+1 {
			t.Fatalf("member %d: %+v, want %s tier %d", i, m, want[i].name, i+1)
		}
	}
}

// addDefaultRoutes gives the router the default routes a box with static
// uplinks has: via each ISP's gateway, ISP k with metric 100k.
func addDefaultRoutes(t *testing.T, l *lab.Lab) {
	t.Helper()
	for k := 1; k <= l.ISPs(); k++ {
		execIn(t, l, lab.NSRouter, "ip", "route", "add", "default", "via", lab.ISPGateway(k),
			"dev", lab.WANIface(k), "metric", fmt.Sprint(100*k))
	}
}

// failsOver runs the daemon on the proposal and checks that LAN traffic
// leaves by ISP 1, moves to ISP 2 when ISP 1's upstream dies, and comes
// back.
func failsOver(t *testing.T, l *lab.Lab, text string, ipv6 bool) {
	t.Helper()
	r := startRouter(t, l, labTargets(t, text))
	r.waitState("wan1", "up", 10*time.Second)
	r.waitState("wan2", "up", 10*time.Second)
	service6 := "http://[" + lab.ServiceAddr6 + "]/"
	if got := seenFrom(t, l, lab.NSClient, service); got != isp1Seen {
		t.Fatalf("seen from %s, want %s", got, isp1Seen)
	}
	if ipv6 {
		if got := seenFrom(t, l, lab.NSClient, service6); got != lab.ISPPublicAddr6(1) {
			t.Fatalf("IPv6 seen from %s, want %s", got, lab.ISPPublicAddr6(1))
		}
	}
	start := time.Now()
	if err := l.CutUpstream(1); err != nil {
		t.Fatal(err)
	}
	eventually(t, l, lab.NSClient, service, isp2Seen, 5*time.Second)
	t.Logf("ISP 1 cut: LAN traffic via ISP 2 after %v", time.Since(start).Round(time.Millisecond))
	if ipv6 {
		eventually(t, l, lab.NSClient, service6, lab.ISPPublicAddr6(2), 5*time.Second)
	}
	r.waitState("wan1", "down", 5*time.Second)
	if err := l.RestoreUpstream(1); err != nil {
		t.Fatal(err)
	}
	r.waitState("wan1", "up", 10*time.Second)
	eventually(t, l, lab.NSClient, service, isp1Seen, 5*time.Second)
}

// TestInitStatic: static uplinks (default routes added as ip route or
// ifupdown would, protocol boot, no DHCP client): the gateways are
// written down, tiers follow the metrics.
func TestInitStatic(t *testing.T) {
	l := newLab(t, 2)
	addDefaultRoutes(t, l)
	text, report := runInit(t, l)
	checkProposal(t, text, []wantWAN{{"wan1", "wan1", lab.ISPGateway(1), ""}, {"wan2", "wan2", lab.ISPGateway(2), ""}})
	if !strings.Contains(report, "not WANs: lan1, lan2 (no default route); lo (loopback)") {
		t.Errorf("report:\n%s", report)
	}
	failsOver(t, l, text, false)
}

// TestInitDHCP: uplinks leased by dhclient (whose routes carry protocol
// boot, like static ones): init tells them apart by the client running
// for each, and proposes gateway: auto.
func TestInitDHCP(t *testing.T) {
	l := newDHCPLab(t, 2)
	text, _ := runInit(t, l)
	checkProposal(t, text, []wantWAN{{"wan1", "wan1", "auto", ""}, {"wan2", "wan2", "auto", ""}})
	failsOver(t, l, text, false)
}

// TestInitDualStack: static IPv4 uplinks and IPv6 default routes from
// router advertisements: gateway6: auto, NAT66, IPv6 targets, and both
// families fail over.
func TestInitDualStack(t *testing.T) {
	l := lab.NewForTest(t, lab.Options{ISPs: 2, IPv6: true, RA: true, Logf: t.Logf})
	addDefaultRoutes(t, l)
	text, _ := runInit(t, l)
	checkProposal(t, text, []wantWAN{{"wan1", "wan1", lab.ISPGateway(1), "auto"}, {"wan2", "wan2", lab.ISPGateway(2), "auto"}})
	if !strings.Contains(text, "nat6: masquerade") || !strings.Contains(text, `"2606:4700:4700::1111"`) {
		t.Fatalf("no NAT66 or IPv6 targets:\n%s", text)
	}
	failsOver(t, l, text, true)
}
