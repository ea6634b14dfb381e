package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/multiwan/multiwan/internal/lab"
)

// The router's own traffic: rules win over a source address the kernel
// merely picked, and pinned traffic never leaks through another WAN.

// stickySocket is a long-lived UDP socket on the router bound to no
// address of its own, that sends every datagram from a source address it
// chooses (IP_PKTINFO), as wireguard-go does with the address its peer
// last reached it on.
type stickySocket struct {
	t  *testing.T
	pc *ipv4.PacketConn
}

func newStickySocket(t *testing.T, l *lab.Lab) *stickySocket {
	t.Helper()
	c, err := l.ListenPacket(lab.NSRouter, "udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &stickySocket{t: t, pc: ipv4.NewPacketConn(c)}
}

// echo sends one datagram from src to the lab's UDP echo at dst and
// returns the address the server saw, or the send's error.
func (s *stickySocket) echo(src, dst string) (string, error) {
	s.t.Helper()
	raddr := &net.UDPAddr{IP: net.ParseIP(dst), Port: lab.UDPEchoPort}
	cm := &ipv4.ControlMessage{Src: net.ParseIP(src)}
	deadline := time.Now().Add(3 * time.Second)
	s.pc.SetDeadline(deadline)
	var lastErr error
	for time.Now().Before(deadline) {
		if _, err := s.pc.WriteTo([]byte("ping"), cm, raddr); err != nil {
			return "", err
		}
		buf := make([]byte, 512)
		s.pc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, _, from, err := s.pc.ReadFrom(buf)
		if err != nil {
			lastErr = err
			continue // lost, or a stray datagram: send again
		}
		if u, ok := from.(*net.UDPAddr); ok && u.IP.Equal(raddr.IP) {
			host, _, _ := net.SplitHostPort(strings.TrimSpace(string(buf[:n])))
			return host, nil
		}
	}
	return "", fmt.Errorf("no echo from %s: %v", dst, lastErr)
}

// TestStickyUnboundSocketAcrossBestChanges: a long-lived unbound UDP
// socket keeps sending from the address of the WAN that was best when it
// started. Across two changes of the best WAN its new flows follow the
// policy (they were pinned to the old best WAN, dead or alive, as if bound
// to it), and a rule that pins its destination wins over that address
// throughout.
func TestStickyUnboundSocketAcrossBestChanges(t *testing.T) {
	l := newLab(t, 2)
	rules := fmt.Sprintf(`  - {name: pinned, dst: [%s], proto: udp, dst_port: [%d], wan: isp2}
`, lab.PortalAddr, lab.UDPEchoPort)
	s := setup{isps: 2, probe: fastProbe, policies: failover12, rules: rules, deflt: "failover"}
	r := startRouter(t, l, s.yaml(t))
	r.waitState("isp1", "up", 10*time.Second)
	r.waitState("isp2", "up", 10*time.Second)
	sock := newStickySocket(t, l)
	sticky := lab.WANAddr(1) // best at the start, kept for good
	isp1, isp2 := lab.ISPPublicAddr(1), lab.ISPPublicAddr(2)

	// Each step sends to a new destination: a new flow, classified anew.
	step := func(name, dst, want string) {
		t.Helper()
		got, err := sock.echo(sticky, dst)
		if err != nil || got != want {
			t.Fatalf("%s: to %s from %s: seen from %q (%v), want %s\n%s", name, dst, sticky, got, err, want, r.proc.Output())
		}
		t.Logf("%s: a flow from %s to %s left by the ISP seen as %s", name, sticky, dst, got)
	}
	step("isp1 best", lab.ServiceAddr, isp1)
	step("isp1 best, rule to isp2", lab.PortalAddr, isp2)

	if err := l.CutUpstream(1); err != nil {
		t.Fatal(err)
	}
	r.waitState("isp1", "down", 10*time.Second)
	step("isp2 best after a change", lab.ProbeAddr1, isp2)

	if err := l.RestoreUpstream(1); err != nil {
		t.Fatal(err)
	}
	r.waitState("isp1", "up", 10*time.Second)
	// Back to isp1 as best, and the socket's address is the best one's
	// again; one more change: isp2 is now cut, and the rule pinning the
	// portal to isp2 makes it fail rather than leak through isp1.
	step("isp1 best again", lab.ProbeAddr2, isp1)
	if err := l.CutUpstream(2); err != nil {
		t.Fatal(err)
	}
	r.waitState("isp2", "down", 10*time.Second)
	if got, err := sock.echo(sticky, lab.InternetPeerAddr(1)); err != nil || got != isp1 {
		t.Fatalf("isp2 down: policy flow seen from %q (%v), want %s", got, err, isp1)
	}
}

// TestPinnedRouterQueriesNeverLeak: the router's own queries to a resolver
// that a rule pins to ISP1 fail at once while ISP1 is down ("network is
// unreachable", which makes a resolver like dnsmasq move on), and not one
// of them reaches ISP2, although the sockets carry ISP2's address (the
// best WAN's) from the catch-all rule.
func TestPinnedRouterQueriesNeverLeak(t *testing.T) {
	l := newLab(t, 2)
	rules := fmt.Sprintf(`  - {name: resolver, dst: [%s], proto: udp, dst_port: [%d], wan: isp1}
`, lab.PortalAddr, lab.UDPEchoPort)
	s := setup{isps: 2, probe: fastProbe, policies: failover12, rules: rules, deflt: "failover"}
	r := startRouter(t, l, s.yaml(t))
	r.waitState("isp1", "up", 10*time.Second)
	r.waitState("isp2", "up", 10*time.Second)

	// Every datagram to the resolver that ISP2 sees, counted there.
	counter := fmt.Sprintf(`add table inet leak
add chain inet leak watch { type filter hook prerouting priority -300; }
add rule inet leak watch ip daddr %s udp dport %d counter`, lab.PortalAddr, lab.UDPEchoPort)
	execIn(t, l, lab.ISPNS(2), "sh", "-c", "echo '"+counter+"' | nft -f -")
	leaked := func() int {
		out := execIn(t, l, lab.ISPNS(2), "nft", "list", "chain", "inet", "leak", "watch")
		i := strings.Index(out, "counter packets ")
		if i < 0 {
			t.Fatalf("no counter:\n%s", out)
		}
		n, _ := strconv.Atoi(strings.Fields(out[i+len("counter packets "):])[0])
		return n
	}

	query := func() error {
		c, err := l.ListenPacket(lab.NSRouter, "udp4", "0.0.0.0:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		dst := &net.UDPAddr{IP: net.ParseIP(lab.PortalAddr), Port: lab.UDPEchoPort}
		if _, err := c.WriteTo([]byte("query"), dst); err != nil {
			return err
		}
		buf := make([]byte, 512)
		_, _, err = c.ReadFrom(buf)
		return err
	}
	if err := query(); err != nil {
		t.Fatalf("with ISP1 up the query fails: %v", err)
	}
	if n := leaked(); n != 0 {
		t.Fatalf("%d queries seen at ISP2 with ISP1 up", n)
	}

	if err := l.CutUpstream(1); err != nil {
		t.Fatal(err)
	}
	r.waitState("isp1", "down", 10*time.Second)
	var unreachable int
	start := time.Now()
	for range 50 {
		err := query()
		switch {
		case errors.Is(err, syscall.ENETUNREACH):
			unreachable++
		case err == nil:
			t.Fatal("a query pinned to ISP1 was answered while ISP1 is cut")
		}
	}
	t.Logf("50 queries while ISP1 is down: %d failed at once with network unreachable, in %v; %d seen at ISP2",
		unreachable, time.Since(start).Round(time.Millisecond), leaked())
	if n := leaked(); n != 0 {
		t.Errorf("%d of 50 pinned queries leaked through ISP2", n)
	}
	if unreachable != 50 {
		t.Errorf("%d of 50 queries failed with network unreachable; want all, at once", unreachable)
	}
	// The other traffic fails over as usual.
	if got := seenFrom(t, l, lab.NSClient, service); got != lab.ISPPublicAddr(2) {
		t.Errorf("LAN traffic with ISP1 down seen from %s", got)
	}
}

// TestGapsAreLoud: a WAN that probes only its gateway, and a WAN whose
// interface carries IPv6 default routes without gateway6, are warned about
// in the log and shown in status, as soon as the box shows them.
func TestGapsAreLoud(t *testing.T) {
	l := lab.NewForTest(t, lab.Options{ISPs: 2, IPv6: true, Logf: t.Logf})
	// No probe targets (gateway only), no gateway6.
	r := startRouter(t, l, labConfig(t, 2, failover12, "", "failover"))
	notes := func() []string {
		var st struct {
			Daemon struct {
				Notes []string `json:"notes"`
			} `json:"daemon"`
		}
		r.statusInto(&st)
		return st.Daemon.Notes
	}
	if n := notes(); len(n) != 2 || !strings.Contains(n[0], "isp1: probes only its gateway") ||
		!strings.Contains(n[1], "isp2: probes only its gateway") {
		t.Fatalf("notes %q", n)
	}
	execIn(t, l, lab.NSRouter, "ip", "-6", "route", "replace", "default", "via", lab.ISPGateway6(1), "dev", lab.WANIface(1))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.WaitFor(ctx, func() error {
		for _, n := range notes() {
			if strings.Contains(n, "isp1: interface wan1 has IPv6 default routes but the WAN has no gateway6") {
				return nil
			}
		}
		return fmt.Errorf("no IPv6 note yet")
	}); err != nil {
		t.Fatal(err)
	}
	if out, err := r.cli("status"); err != nil || !strings.Contains(out, "note: isp1: interface wan1 has IPv6 default routes") {
		t.Errorf("status table: %v\n%s", err, out)
	}
	if c := strings.Count(r.proc.Output(), `msg="gap in the config"`); c != 3 {
		t.Errorf("%d gap warnings logged, want 3 (each once)", c)
	}
}
