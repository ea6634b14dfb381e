package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/multiwan/multiwan/internal/lab"
)

// dualStackConfig: both WANs with IPv4 and IPv6, NAT66 on the router (the
// lab's ISPs route only their own link prefix back), probes of both
// families ten times a second, failover isp1 → isp2. gateway6 gives WAN k's
// gateway6 setting.
func dualStackConfig(t *testing.T, gateway6 func(k int) string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("wans:\n")
	for k := 1; k <= 2; k++ {
		fmt.Fprintf(&b, `  - name: isp%d
    interface: %s
    gateway: %s
    gateway6: %s
    nat6: masquerade
    probe: {targets: [%s, %s, %q, %q], interval: 100ms}
`, k, lab.WANIface(k), lab.ISPGateway(k), gateway6(k), lab.ProbeAddr1, lab.ProbeAddr2, lab.ProbeAddr6a, lab.ProbeAddr6b)
	}
	fmt.Fprintf(&b, "policies:\n%sdefault_policy: failover\ncontrol: {socket: %s}\n", failover12, filepath.Join(t.TempDir(), "mw.sock"))
	return b.String()
}

// dualStatus is the part of `status --json` about families.
type dualStatus struct {
	WANs []struct {
		Name  string `json:"name"`
		State string `json:"state"`
		IPv6  *struct {
			State   string `json:"state"`
			Address string `json:"address"`
			Gateway string `json:"gateway"`
		} `json:"ipv6"`
	} `json:"wans"`
	Policies6 []struct {
		Name   string `json:"name"`
		Active []struct {
			WAN string `json:"wan"`
		} `json:"active"`
	} `json:"policies6"`
}

func (r *router) dualStatus() dualStatus {
	r.t.Helper()
	out, err := r.cli("status", "--json")
	if err != nil {
		r.t.Fatalf("status: %v\n%s", err, out)
	}
	var st dualStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		r.t.Fatalf("status --json: %v\n%s", err, out)
	}
	return st
}

// waitState6 waits until the daemon reports wan's IPv6 in state.
func (r *router) waitState6(wan, state string, timeout time.Duration) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	last := ""
	err := r.lab.WaitFor(ctx, func() error {
		for _, w := range r.dualStatus().WANs {
			if w.Name == wan && w.IPv6 != nil {
				if last = w.IPv6.State; last == state {
					return nil
				}
			}
		}
		return fmt.Errorf("%s ipv6 is %q", wan, last)
	})
	if err != nil {
		r.t.Fatalf("waiting for %s ipv6 %s: %v\n%s", wan, state, err, r.proc.Output())
	}
}

// TestIPv6Failover: a LAN client's IPv6 connection leaves by ISP1 and fails
// over to ISP2 when ISP1's IPv6 upstream dies, while IPv4 stays on ISP1:
// the families are tracked apart, and status shows it.
func TestIPv6Failover(t *testing.T) {
	l := lab.NewForTest(t, lab.Options{ISPs: 2, IPv6: true, Logf: t.Logf})
	r := startRouter(t, l, dualStackConfig(t, lab.ISPGateway6))
	r.waitState("isp1", "up", 5*time.Second)
	r.waitState6("isp1", "up", 5*time.Second)
	r.waitState6("isp2", "up", 5*time.Second)
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
	// IPv4 is untouched: still up, still on ISP1.
	st := r.dualStatus()
	if st.WANs[0].State != "up" {
		t.Errorf("isp1 IPv4 state %q after an IPv6-only cut", st.WANs[0].State)
	}
	if got := seenFrom(t, l, lab.NSClient, service); got != isp1Seen {
		t.Errorf("IPv4 after the IPv6 cut: seen from %s, want %s", got, isp1Seen)
	}
	if len(st.Policies6) == 0 || len(st.Policies6[0].Active) == 0 || st.Policies6[0].Active[0].WAN != "isp2" {
		t.Errorf("policies6 %+v", st.Policies6)
	}
	if w := st.WANs[0].IPv6; w == nil || w.Address != lab.WANAddr6(1) || w.Gateway != lab.ISPGateway6(1) {
		t.Errorf("isp1 ipv6 status %+v", w)
	}
	r.waitLog(`family=ipv6`, time.Second)

	if err := l.RestoreUpstreamFamily(1, 6); err != nil {
		t.Fatal(err)
	}
	r.waitState6("isp1", "up", 5*time.Second)
	eventually(t, l, lab.NSClient, service6, lab.ISPPublicAddr6(1), 5*time.Second)
}

// TestIPv6RoutedPrefix: a prefix ISP1 routes without NAT leaves by ISP1
// even when the policy prefers ISP2, and the router does not translate it.
func TestIPv6RoutedPrefix(t *testing.T) {
	l := lab.NewForTest(t, lab.Options{ISPs: 2, IPv6: true, Logf: t.Logf})
	cfg := strings.Replace(dualStackConfig(t, lab.ISPGateway6), "{wan: isp1, tier: 1}", "{wan: isp1, tier: 3}", 1)
	cfg = strings.Replace(cfg, "    nat6: masquerade\n", "    nat6: none\n    prefixes6: [\"2001:db8:100::/64\"]\n", 1)
	r := startRouter(t, l, cfg)
	r.waitState6("isp1", "up", 5*time.Second)
	r.waitState6("isp2", "up", 5*time.Second)
	// The LAN's prefix belongs to ISP1: its hosts leave by ISP1 whatever
	// the policy (ISP2 first) says.
	if got := seenFrom(t, l, lab.NSClient, "http://["+lab.ServiceAddr6+"]/"); got != lab.ISPPublicAddr6(1) {
		t.Fatalf("IPv6 from the routed prefix seen from %s, want %s", got, lab.ISPPublicAddr6(1))
	}
	// IPv4 follows the policy.
	if got := seenFrom(t, l, lab.NSClient, service); got != isp2Seen {
		t.Fatalf("IPv4 seen from %s, want %s", got, isp2Seen)
	}
	// No NAT on the router: the connection's reply goes to the client's
	// own address.
	ct := execIn(t, l, lab.NSRouter, "conntrack", "-L", "-f", "ipv6", "-p", "tcp", "--orig-src", lab.ClientAddr6)
	if !strings.Contains(ct, "dst="+lab.ClientAddr6) {
		t.Errorf("router translated the routed prefix:\n%s", ct)
	}
}
