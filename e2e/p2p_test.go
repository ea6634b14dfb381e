package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/multiwan/multiwan/internal/lab"
)

// A WAN on a point-to-point link (PPP, a tunnel) has no gateway: the lab's
// ISP 1 is linked to the router by a tun pair (wan1 "192.0.2.2 peer
// 192.0.2.1", flags POINTOPOINT,NOARP), and nobody installs a default route
// through it. With `gateway: auto` the daemon must route it as
// "default dev wan1".

// p2pConfig is the failover config (isp1 first) with isp1 on the
// point-to-point link, gateway learned, and isp2 static; fast probes.
func p2pConfig(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf("wans:\n%s%spolicies:\n%sdefault_policy: failover\ncontrol:\n  socket: %s\n",
		autoWANYAML(1, fastProbe), wanYAML(2, fastProbe), failover12, filepath.Join(t.TempDir(), "mw.sock"))
}

// waitLogSince waits until the daemon's output after offset mark contains
// s.
func (r *router) waitLogSince(mark int, s string, timeout time.Duration) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := r.lab.WaitFor(ctx, func() error {
		if strings.Contains(r.proc.Output()[mark:], s) {
			return nil
		}
		return fmt.Errorf("no %q in the log yet", s)
	}); err != nil {
		r.t.Fatalf("waiting for %q: %v\ndaemon output:\n%s", s, err, r.proc.Output())
	}
}

// waitTable waits until the router's routing table n (ip route show
// table n) has a line starting with want.
func waitTable(t *testing.T, l *lab.Lab, n int, want string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last string
	if err := l.WaitFor(ctx, func() error {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		out, err := l.Exec(c, lab.NSRouter, "ip", "-4", "route", "show", "table", fmt.Sprint(n))
		if err != nil {
			return err
		}
		last = string(out)
		for _, line := range strings.Split(last, "\n") {
			if strings.HasPrefix(line, want) {
				return nil
			}
		}
		return fmt.Errorf("no %q", want)
	}); err != nil {
		all, _ := l.Exec(context.Background(), lab.NSRouter, "ip", "-4", "route", "show", "table", "all")
		t.Fatalf("table %d: %v; it has:\n%s\nip route show table all:\n%s", n, err, last, all)
	}
}

// TestPointToPointWAN: isp1 is a point-to-point link without gateway
// (`gateway: auto`), isp2 a usual static one, failover isp1 -> isp2. The
// daemon routes isp1 by "default dev wan1", LAN traffic leaves by it, fails
// over when its upstream dies and when its link loses carrier or goes
// down, and comes back.
func TestPointToPointWAN(t *testing.T) {
	l := lab.NewForTest(t, lab.Options{ISPs: 2, P2PISP: 1, Logf: t.Logf})
	r := startRouter(t, l, p2pConfig(t))
	r.waitState("isp1", "up", 5*time.Second)
	r.waitState("isp2", "up", 5*time.Second)

	// Status: isp1 is up with its address and no gateway.
	state, addr, gw, err := r.wanAddressing("isp1")
	if err != nil {
		t.Fatal(err)
	}
	if state != "up" || addr != lab.WANAddr(1) || gw != "" {
		t.Errorf("status isp1: state %q address %q gateway %q, want up, %s, no gateway", state, addr, gw, lab.WANAddr(1))
	}
	waitTable(t, l, 101, "default dev wan1 ", 5*time.Second)
	if route := tableDefault(l, 101); strings.Contains(route, " via ") {
		t.Errorf("table 101: %q, want no gateway", route)
	} else {
		t.Logf("status isp1: %s, address %s, gateway %q; table 101: %s", state, addr, gw, route)
	}
	waitTable(t, l, 102, "default via "+lab.ISPGateway(2)+" dev wan2 ", 5*time.Second)
	if got := seenFrom(t, l, lab.NSClient, service); got != isp1Seen {
		t.Fatalf("seen from %s, want %s", got, isp1Seen)
	}
	// The router's own connections too.
	if got := seenFrom(t, l, lab.NSRouter, service); got != isp1Seen {
		t.Errorf("router's own connection seen from %s, want %s", got, isp1Seen)
	}

	t.Log("upstream of isp1 cut")
	if err := l.CutUpstream(1); err != nil {
		t.Fatal(err)
	}
	eventually(t, l, lab.NSClient, service, isp2Seen, 5*time.Second)
	r.waitState("isp1", "down", 5*time.Second)
	if err := l.RestoreUpstream(1); err != nil {
		t.Fatal(err)
	}
	r.waitState("isp1", "up", 5*time.Second)
	eventually(t, l, lab.NSClient, service, isp1Seen, 5*time.Second)

	t.Log("wan1 set down in the router")
	mark, start := len(r.proc.Output()), time.Now()
	if err := l.SetP2PDown(true); err != nil {
		t.Fatal(err)
	}
	r.waitLogSince(mark, `msg="wan state" wan=isp1 from=up to=down cause="carrier lost"`, 2*time.Second)
	t.Logf("isp1 down (carrier lost) within %v of setting wan1 down", time.Since(start).Round(time.Millisecond))
	if st := r.status().state("isp1"); st != "down" {
		t.Errorf("status: isp1 %s with wan1 down", st)
	}
	eventually(t, l, lab.NSClient, service, isp2Seen, 5*time.Second)

	t.Log("wan1 set up again")
	if err := l.SetP2PDown(false); err != nil {
		t.Fatal(err)
	}
	r.waitState("isp1", "up", 10*time.Second)
	waitTable(t, l, 101, "default dev wan1 ", 5*time.Second)
	eventually(t, l, lab.NSClient, service, isp1Seen, 5*time.Second)

	t.Log("carrier of wan1 lost")
	mark, start = len(r.proc.Output()), time.Now()
	if err := l.SetLinkDown(1, true); err != nil {
		t.Fatal(err)
	}
	r.waitLogSince(mark, `msg="wan state" wan=isp1 from=up to=down cause="carrier lost"`, 2*time.Second)
	t.Logf("isp1 down (carrier lost) within %v of switching wan1's carrier off", time.Since(start).Round(time.Millisecond))
	eventually(t, l, lab.NSClient, service, isp2Seen, 5*time.Second)
	if err := l.SetLinkDown(1, false); err != nil {
		t.Fatal(err)
	}
	r.waitState("isp1", "up", 10*time.Second)
	waitTable(t, l, 101, "default dev wan1 ", 5*time.Second)
	eventually(t, l, lab.NSClient, service, isp1Seen, 5*time.Second)

	if r.proc.Exited() {
		t.Fatalf("daemon exited:\n%s", r.proc.Output())
	}
}
