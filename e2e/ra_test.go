package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/multiwan/multiwan/internal/lab"
)

// TestIPv6GatewayFromRA: with `gateway6: auto` the daemon learns each
// WAN's IPv6 gateway from the ISPs' router advertisements (the ISP's
// link-local address), routes the WAN's table through it, and a LAN
// client's IPv6 fails over and back like with a static gateway6.
func TestIPv6GatewayFromRA(t *testing.T) {
	l := lab.NewForTest(t, lab.Options{ISPs: 2, IPv6: true, RA: true, Logf: t.Logf})
	gw := map[int]string{}
	for k := 1; k <= 2; k++ {
		g, err := l.RAGateway(k)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(g, "fe80:") {
			t.Fatalf("RAGateway(%d) = %s, not link-local", k, g)
		}
		gw[k] = g
	}

	r := startRouter(t, l, dualStackConfig(t, func(int) string { return "auto" }))
	r.waitState("isp1", "up", 5*time.Second)
	r.waitState6("isp1", "up", 5*time.Second)
	r.waitState6("isp2", "up", 5*time.Second)

	// status --json: each WAN's IPv6 gateway is the one learned from RA.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var last dualStatus
	err := l.WaitFor(ctx, func() error {
		last = r.dualStatus()
		for k := 1; k <= 2; k++ {
			name := fmt.Sprintf("isp%d", k)
			var found bool
			for _, w := range last.WANs {
				if w.Name != name {
					continue
				}
				found = true
				switch {
				case w.IPv6 == nil:
					return fmt.Errorf("%s has no ipv6 status", name)
				case w.IPv6.Gateway != gw[k]:
					return fmt.Errorf("%s ipv6 gateway %q, want %s", name, w.IPv6.Gateway, gw[k])
				case w.IPv6.State != "up":
					return fmt.Errorf("%s ipv6 state %q", name, w.IPv6.State)
				case w.IPv6.Address != lab.WANAddr6(k):
					return fmt.Errorf("%s ipv6 address %q, want %s", name, w.IPv6.Address, lab.WANAddr6(k))
				}
			}
			if !found {
				return fmt.Errorf("no WAN %s in status", name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("status: %v\n%+v\n%s\n%s", err, last, execIn(t, l, lab.NSRouter, "ip", "-6", "route", "show", "table", "all"), r.proc.Output())
	}

	// Each WAN's table routes IPv6 through the learned gateway.
	for k := 1; k <= 2; k++ {
		table := fmt.Sprint(100 + k)
		routes := execIn(t, l, lab.NSRouter, "ip", "-6", "route", "show", "table", table)
		if want := fmt.Sprintf("default via %s dev %s", gw[k], lab.WANIface(k)); !strings.Contains(routes, want) {
			t.Errorf("table %s has no %q:\n%s\nall IPv6 routes:\n%s", table, want, routes,
				execIn(t, l, lab.NSRouter, "ip", "-6", "route", "show", "table", "all"))
		}
	}

	service6 := "http://[" + lab.ServiceAddr6 + "]/"
	if got := seenFrom(t, l, lab.NSClient, service6); got != lab.ISPPublicAddr6(1) {
		t.Fatalf("IPv6 seen from %s, want %s", got, lab.ISPPublicAddr6(1))
	}
	if got := seenFrom(t, l, lab.NSClient, service); got != isp1Seen {
		t.Fatalf("IPv4 seen from %s, want %s", got, isp1Seen)
	}

	if err := l.CutUpstreamFamily(1, 6); err != nil {
		t.Fatal(err)
	}
	r.waitState6("isp1", "down", 5*time.Second)
	eventually(t, l, lab.NSClient, service6, lab.ISPPublicAddr6(2), 5*time.Second)
	// IPv4 is untouched, and the learned gateway is still known while the
	// WAN's IPv6 is down.
	st := r.dualStatus()
	if st.WANs[0].State != "up" {
		t.Errorf("isp1 IPv4 state %q after an IPv6-only cut", st.WANs[0].State)
	}
	if got := seenFrom(t, l, lab.NSClient, service); got != isp1Seen {
		t.Errorf("IPv4 after the IPv6 cut: seen from %s, want %s", got, isp1Seen)
	}
	if w := st.WANs[0].IPv6; w == nil || w.Gateway != gw[1] {
		t.Errorf("isp1 ipv6 status while down %+v, want gateway %s", w, gw[1])
	}

	if err := l.RestoreUpstreamFamily(1, 6); err != nil {
		t.Fatal(err)
	}
	r.waitState6("isp1", "up", 5*time.Second)
	eventually(t, l, lab.NSClient, service6, lab.ISPPublicAddr6(1), 5*time.Second)
}
