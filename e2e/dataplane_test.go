package e2e

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/multiwan/multiwan/internal/lab"
)

var (
	isp1Seen = lab.ISPPublicAddr(1)
	isp2Seen = lab.ISPPublicAddr(2)
	service  = httpURL(lab.ServiceAddr, lab.HTTPPort)
)

// TestSteering: the default policy and each kind of rule send LAN traffic
// out by the WAN they name; the server sees that ISP's address.
func TestSteering(t *testing.T) {
	l := newLab(t, 2)
	closer, err := l.ServeWhoami(lab.NSInternet, lab.ServiceAddr+":8081")
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	rules := `  - name: by-source
    src: [198.51.100.53/32]
    wan: isp2
  - name: by-destination
    dst: [203.0.113.48/29]
    wan: isp2
  - name: by-port
    proto: tcp
    dst_port: [8081, "9000-9100"]
    wan: isp2
  - name: udp-by-port
    proto: udp
    dst_port: [7000]
    wan: isp2
  - name: by-iif
    iif: [lan2]
    wan: isp2
`
	startRouter(t, l, labConfig(t, 2, failover12, rules, "failover"))

	t.Run("default policy", func(t *testing.T) {
		if got := seenFrom(t, l, lab.NSClient, service); got != isp1Seen {
			t.Fatalf("seen from %s, want %s (isp1)", got, isp1Seen)
		}
	})
	t.Run("source host", func(t *testing.T) {
		if got := seenFrom(t, l, lab.NSClient, service, "--interface", "198.51.100.53"); got != isp2Seen {
			t.Fatalf("from .53: seen from %s, want %s", got, isp2Seen)
		}
		if got := seenFrom(t, l, lab.NSClient, service, "--interface", "198.51.100.52"); got != isp1Seen {
			t.Fatalf("from .52 (no rule): seen from %s, want %s", got, isp1Seen)
		}
	})
	t.Run("destination prefix", func(t *testing.T) {
		if got := seenFrom(t, l, lab.NSClient, httpURL(lab.PortalAddr, 80)); got != isp2Seen {
			t.Fatalf("seen from %s, want %s", got, isp2Seen)
		}
	})
	t.Run("protocol and destination port", func(t *testing.T) {
		if got := seenFrom(t, l, lab.NSClient, httpURL(lab.ServiceAddr, 8081)); got != isp2Seen {
			t.Fatalf("tcp 8081: seen from %s, want %s", got, isp2Seen)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		reply, err := l.UDPEcho(ctx, lab.NSClient, "", fmt.Sprintf("%s:%d", lab.ServiceAddr, lab.UDPEchoPort))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(reply, isp2Seen+":") {
			t.Fatalf("udp 7000: echo %q, want it from %s", reply, isp2Seen)
		}
	})
	t.Run("incoming interface", func(t *testing.T) {
		if got := seenFrom(t, l, lab.NSClient2, service); got != isp2Seen {
			t.Fatalf("from lan2: seen from %s, want %s", got, isp2Seen)
		}
	})
}

// TestRepliesLeaveByIncomingWAN: connections that arrive through ISP2 (a
// port forward of the ISP's router) are answered through ISP2, for a service
// on the router and for a LAN host behind a port forward of the router,
// while new outgoing connections use ISP1.
func TestRepliesLeaveByIncomingWAN(t *testing.T) {
	l := newLab(t, 2)
	onRouter, err := l.ServeWhoami(lab.NSRouter, fmt.Sprintf(":%d", lab.FwdTCPPort1))
	if err != nil {
		t.Fatal(err)
	}
	defer onRouter.Close()
	onClient, err := l.ServeWhoami(lab.NSClient, fmt.Sprintf(":%d", lab.FwdTCPPort2))
	if err != nil {
		t.Fatal(err)
	}
	defer onClient.Close()
	// The user's own firewall forwards 9090 to the LAN host.
	execIn(t, l, lab.NSRouter, "nft", fmt.Sprintf(
		"add table ip userfw; add chain ip userfw userpre { type nat hook prerouting priority dstnat; }; add rule ip userfw userpre iifname \"wan*\" tcp dport %d dnat to %s",
		lab.FwdTCPPort2, lab.ClientAddr))
	startRouter(t, l, labConfig(t, 2, failover12, "", "failover"))

	for k := 1; k <= 2; k++ {
		peer := lab.InternetPeerAddr(k)
		t.Run(fmt.Sprintf("service on the router via isp%d", k), func(t *testing.T) {
			if got := seenFrom(t, l, lab.NSInternet, httpURL(lab.ISPPublicAddr(k), lab.FwdTCPPort1)); got != peer {
				t.Fatalf("router saw %s, want %s", got, peer)
			}
		})
		t.Run(fmt.Sprintf("port forward to a LAN host via isp%d", k), func(t *testing.T) {
			if got := seenFrom(t, l, lab.NSInternet, httpURL(lab.ISPPublicAddr(k), lab.FwdTCPPort2)); got != peer {
				t.Fatalf("LAN host saw %s, want %s", got, peer)
			}
		})
	}
	if got := seenFrom(t, l, lab.NSClient, service); got != isp1Seen {
		t.Fatalf("outgoing: seen from %s, want %s", got, isp1Seen)
	}
}

// TestRouterOwnTraffic: with no default route in the main table the router's
// own connections work, follow the policy and rules, and a socket bound to
// WAN2's address leaves by WAN2.
func TestRouterOwnTraffic(t *testing.T) {
	l := newLab(t, 2)
	rules := `  - name: portal
    dst: [203.0.113.50/32]
    wan: isp2
`
	startRouter(t, l, labConfig(t, 2, failover12, rules, "failover"))
	if main := execIn(t, l, lab.NSRouter, "ip", "route", "show", "table", "main"); strings.Contains(main, "default") {
		t.Fatalf("the lab's router must have no default route in main:\n%s", main)
	}
	if got := seenFrom(t, l, lab.NSRouter, service); got != isp1Seen {
		t.Errorf("policy: seen from %s, want %s", got, isp1Seen)
	}
	if got := seenFrom(t, l, lab.NSRouter, httpURL(lab.PortalAddr, 80)); got != isp2Seen {
		t.Errorf("rule: seen from %s, want %s", got, isp2Seen)
	}
	if got := seenFrom(t, l, lab.NSRouter, service, "--interface", lab.WANAddr(2)); got != isp2Seen {
		t.Errorf("bound to %s: seen from %s, want %s", lab.WANAddr(2), got, isp2Seen)
	}
	if got := seenFrom(t, l, lab.NSRouter, service, "--interface", lab.WANAddr(1)); got != isp1Seen {
		t.Errorf("bound to %s: seen from %s, want %s", lab.WANAddr(1), got, isp1Seen)
	}
}

// TestMarkedTrafficKeepsItsWAN: a packet that already carries a WAN's mark
// (as health probes will, by SO_MARK) leaves by that WAN whatever the policy
// says. ISP1's upstream is cut, the policy still says ISP1 (no probes yet),
// so unmarked pings fail and pings marked for ISP2 get through.
func TestMarkedTrafficKeepsItsWAN(t *testing.T) {
	l := newLab(t, 2)
	startRouter(t, l, labConfig(t, 2, failover12, "", "failover"))
	if err := l.CutUpstream(1); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ping := func(mark string) error {
		argv := []string{"ping", "-n", "-c", "1", "-W", "1"}
		if mark != "" {
			argv = append(argv, "-m", mark)
		}
		_, err := l.Exec(ctx, lab.NSRouter, append(argv, lab.ProbeAddr1)...)
		return err
	}
	if err := ping(""); err == nil {
		t.Fatal("unmarked ping got through ISP1 although its upstream is cut: the test proves nothing")
	}
	if err := ping(fmt.Sprint(0x200)); err != nil {
		t.Fatalf("ping marked for isp2 (0x200): %v", err)
	}
	if err := ping(fmt.Sprint(0x100)); err == nil {
		t.Fatal("ping marked for isp1 got through a cut ISP1")
	}
}

// TestCoexistence: another nft table and an ip rule on mark bits outside
// mark_mask are untouched by start, run and stop, and those bits survive on
// packets and connections multiwan marks.
func TestCoexistence(t *testing.T) {
	l := newLab(t, 2)
	execIn(t, l, lab.NSRouter, "nft", `add table inet userfw
add chain inet userfw pre { type filter hook prerouting priority -200; policy accept; }
add rule inet userfw pre iifname "lan1" meta mark set meta mark or 0x1 ct mark set ct mark or 0x1 counter`)
	execIn(t, l, lab.NSRouter, "ip", "rule", "add", "priority", "500", "fwmark", "0x1/0x1", "lookup", "300")
	fw := func() string {
		out := execIn(t, l, lab.NSRouter, "nft", "list", "table", "inet", "userfw")
		return regexp.MustCompile(`counter packets \d+ bytes \d+`).ReplaceAllString(out, "counter")
	}
	rule500 := func() string {
		return execIn(t, l, lab.NSRouter, "ip", "rule", "show", "priority", "500")
	}
	fwBefore, ruleBefore := fw(), rule500()

	r := startRouter(t, l, labConfig(t, 2, failover12, "", "failover"))
	if got := seenFrom(t, l, lab.NSClient, service); got != isp1Seen {
		t.Fatalf("seen from %s, want %s", got, isp1Seen)
	}
	// The client's connection carries both bits: 0x1 (userfw) and 0x100 (isp1).
	ct := execIn(t, l, lab.NSRouter, "conntrack", "-L", "-p", "tcp", "--orig-src", lab.ClientAddr, "--orig-dst", lab.ServiceAddr)
	if !strings.Contains(ct, "mark=257 ") {
		t.Errorf("conntrack mark is not 0x101 (userfw bit kept, isp1 added):\n%s", ct)
	}
	if fw() != fwBefore || rule500() != ruleBefore {
		t.Errorf("foreign state changed while running:\n%s\n%s", fw(), rule500())
	}
	r.stop()
	r.assertClean()
	if got := fw(); got != fwBefore {
		t.Errorf("userfw changed by stop:\nbefore:\n%s\nafter:\n%s", fwBefore, got)
	}
	if got := rule500(); got != ruleBefore || !strings.Contains(got, "lookup 300") {
		t.Errorf("rule 500 changed by stop: before %q after %q", ruleBefore, got)
	}
}

// TestLinkDown: with WAN1's link down new connections use WAN2, and go back
// when it returns. A WAN whose interface does not exist is simply down.
func TestLinkDown(t *testing.T) {
	l := newLab(t, 2)
	policies := `  - name: failover
    members:
      - {wan: isp1, tier: 1}
      - {wan: isp2, tier: 2}
      - {wan: isp3, tier: 3}
`
	cfg := labConfig(t, 2, policies, "", "failover")
	cfg = strings.Replace(cfg, "policies:", strings.TrimSuffix(wanYAML(3), "\n")+"\npolicies:", 1)
	r := startRouter(t, l, cfg)
	r.waitLog("wan=isp3 interface=wan3 state=missing", 5*time.Second)
	if got := seenFrom(t, l, lab.NSClient, service); got != isp1Seen {
		t.Fatalf("seen from %s, want %s", got, isp1Seen)
	}
	if err := l.SetLinkDown(1, true); err != nil {
		t.Fatal(err)
	}
	eventually(t, l, lab.NSClient, service, isp2Seen, 5*time.Second)
	r.waitLog("wan=isp1 interface=wan1 state=down", 5*time.Second)
	if err := l.SetLinkDown(1, false); err != nil {
		t.Fatal(err)
	}
	eventually(t, l, lab.NSClient, service, isp1Seen, 5*time.Second)
}

// TestKill9Adopt: after kill -9 the installed state stays and traffic keeps
// flowing; the next run adopts it without duplicates, and a download that
// was running all along completes.
func TestKill9Adopt(t *testing.T) {
	l := newLab(t, 2)
	r := startRouter(t, l, labConfig(t, 2, failover12, "", "failover"))
	rulesBefore := ourRules(t, l)
	if len(rulesBefore) == 0 {
		t.Fatal("no multiwan rules installed")
	}
	const seconds, rate = 6, 100 // KB/s
	dl, err := l.Start(lab.NSClient, "curl", "-sS", "--noproxy", "*", "--max-time", "30", "-o", "/dev/null",
		"-w", "%{size_download}\n", fmt.Sprintf("%sstream?seconds=%d&rate=%d", service, seconds, rate))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.WaitFor(ctx, func() error {
		out, _ := l.Exec(ctx, lab.NSRouter, "conntrack", "-L", "-p", "tcp", "--orig-dst", lab.ServiceAddr, "--state", "ESTABLISHED")
		if !strings.Contains(string(out), "dport=80") {
			return fmt.Errorf("download not established yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	r.kill9()
	if tables := execIn(t, l, lab.NSRouter, "nft", "list", "tables"); !strings.Contains(tables, "table inet multiwan") {
		t.Fatalf("table gone after kill -9:\n%s", tables)
	}
	if got := seenFrom(t, l, lab.NSClient, service); got != isp1Seen {
		t.Fatalf("with the daemon dead: seen from %s, want %s", got, isp1Seen)
	}

	r.start()
	rulesAfter := ourRules(t, l)
	if !slices.Equal(rulesAfter, rulesBefore) {
		t.Errorf("rules after adoption differ:\nbefore %q\nafter  %q", rulesBefore, rulesAfter)
	}
	if n := strings.Count(execIn(t, l, lab.NSRouter, "nft", "list", "tables"), "table inet multiwan\n"); n != 1 {
		t.Errorf("%d multiwan tables", n)
	}
	if err := dl.Wait(20 * time.Second); err != nil {
		t.Fatalf("download interrupted: %v\n%s", err, dl.Output())
	}
	got := strings.TrimSpace(dl.Output())
	if want := seconds * rate * 1024; atoi(got) < want*9/10 {
		t.Fatalf("download got %s bytes, want about %d", got, want)
	}
	if got := seenFrom(t, l, lab.NSClient, service); got != isp1Seen {
		t.Fatalf("after adoption: seen from %s, want %s", got, isp1Seen)
	}
}

func atoi(s string) int {
	n := 0
	fmt.Sscan(s, &n)
	return n
}
