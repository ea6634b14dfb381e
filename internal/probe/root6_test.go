package probe

// Root tests of IPv6 probing, in the lab of root_test.go made dual-stack:
//
//	R wa 2001:db8:1::2/64 ── A ua 2001:db8:1::1/64
//	R wb 2001:db8:2::2/64 ── B ub 2001:db8:2::1/64, fe80::b:1/64
//	B lo 2001:db8:ffff::20/128, 2001:db8:ffff::21/128
//
// R has no IPv6 default route in main; `ip -6 rule` fwmark 0x100 selects
// table 101 (default via A), 0x200 table 102 (default via B). B answers
// R from its link's subnet (its route back to R). Only documentation
// addresses (2001:db8::/32) are used, and no duplicate address detection
// delays them.

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

var (
	target6B  = "2001:db8:ffff::20"
	target6B2 = "2001:db8:ffff::21"
	// gateway6B is B's global address on the R–B link, gatewayLLB its
	// link-local one; wb is R's interface on that link.
	gateway6B  = netip.MustParseAddr("2001:db8:2::1")
	gatewayLLB = netip.MustParseAddr("fe80::b:1")
)

func newTopo6(t *testing.T) *topo {
	t.Helper()
	tp := newLinks(t)
	tp.addIPv4()
	r, a, b := tp.r, tp.a, tp.b
	r.ip("-6", "addr", "add", "2001:db8:1::2/64", "dev", "wa", "nodad")
	r.ip("-6", "addr", "add", "2001:db8:2::2/64", "dev", "wb", "nodad")
	a.ip("-6", "addr", "add", "2001:db8:1::1/64", "dev", "ua", "nodad")
	b.ip("-6", "addr", "add", "2001:db8:2::1/64", "dev", "ub", "nodad")
	b.ip("-6", "addr", "add", gatewayLLB.String()+"/64", "dev", "ub", "nodad")
	b.ip("-6", "addr", "add", target6B+"/128", "dev", "lo", "nodad")
	b.ip("-6", "addr", "add", target6B2+"/128", "dev", "lo", "nodad")
	r.ip("-6", "route", "add", "default", "via", "2001:db8:1::1", "dev", "wa", "table", "101")
	r.ip("-6", "route", "add", "default", "via", "2001:db8:2::1", "dev", "wb", "table", "102")
	r.ip("-6", "rule", "add", "fwmark", "0x100", "lookup", "101")
	r.ip("-6", "rule", "add", "fwmark", "0x200", "lookup", "102")
	return tp
}

func TestKernelIPv6MarkDecidesPath(t *testing.T) {
	tp := newTopo6(t)
	spec := func(mark uint32, gw netip.Addr, iface string, targets ...string) Spec {
		return Spec{WAN: "b", Mark: mark, Method: "icmp", Targets: targets, Interval: 50 * ms, Timeout: 300 * ms, Reliability: 1,
			Gateway: func() netip.Addr { return gw }, Interface: iface}
	}
	for _, tc := range []struct {
		name string
		spec Spec
		// ok: every result must be OK; else every one must fail with
		// err; with neither, the outcome is only logged.
		ok  bool
		err string
		// name of the target in the results, for the gateway.
		target string
	}{
		{"icmp via B", spec(markB, netip.Addr{}, "", target6B, target6B2), true, "", ""},
		{"icmp via A", spec(markA, netip.Addr{}, "", target6B, target6B2), false, "timeout", ""},
		// R's main table has no IPv6 default route.
		{"icmp unmarked", spec(0, netip.Addr{}, "", target6B), false, "network is unreachable", ""},
		{"gateway via B", spec(markB, gateway6B, "wb"), true, "", gateway6B.String()},
		{"gateway via A", spec(markA, gateway6B, "wb"), false, "timeout", gateway6B.String()},
		// A link-local gateway is sent on the zone's link, with the mark.
		{"link-local gateway via B", spec(markB, gatewayLLB, "wb"), true, "", "fe80::b:1%wb"},
		{"link-local gateway, zone from Gateway", spec(markB, gatewayLLB.WithZone("wb"), ""), true, "", "fe80::b:1%wb"},
		{"link-local gateway, zone wa", spec(markB, gatewayLLB, "wa"), false, "timeout", "fe80::b:1%wa"},
		{"link-local gateway, no such interface", spec(markB, gatewayLLB, "nosuch0"), false, "interface nosuch0: no such device", "fe80::b:1%nosuch0"},
		{"link-local target", spec(markB, netip.Addr{}, "wb", gatewayLLB.String()), true, "", ""},
		// The zone, not the mark, picks the link of a link-local
		// address; the mark still selects the table the kernel consults
		// first. Whatever the kernel does here is logged.
		{"link-local gateway via A", spec(markA, gatewayLLB, "wb"), false, "", "fe80::b:1%wb"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			baseline := runtime.NumGoroutine()
			r := startRun(t, tc.spec, tp.r.do)
			for range 3 {
				rd := r.nextRound(2 * time.Second)
				for _, res := range rd.Results {
					if tc.ok || tc.err != "" {
						if res.OK != tc.ok || !strings.Contains(res.Err, tc.err) {
							t.Fatalf("got %s, want ok=%v err %q", describeRounds([]Round{rd}), tc.ok, tc.err)
						}
					}
					if res.OK && res.RTT <= 0 {
						t.Fatalf("got %s", describeRounds([]Round{rd}))
					}
				}
				if !tc.ok && tc.err == "" {
					t.Logf("%s: %s", tc.name, describeRounds([]Round{rd}))
				}
				if tc.target != "" && rd.Results[0].Target != tc.target {
					t.Fatalf("gateway round names %q, want %q", rd.Results[0].Target, tc.target)
				}
			}
			r.stop()
			checkNoLeak(t, baseline)
		})
	}
}

// TestKernelGatewayChangesFamily: a gateway Run has a socket per family,
// so its gateway may go from IPv4 to IPv6 and back.
func TestKernelGatewayChangesFamily(t *testing.T) {
	tp := newTopo6(t)
	gws := make(chan netip.Addr, 1)
	gw := gatewayB
	r := startRun(t, Spec{Mark: markB, Interface: "wb", Interval: 30 * ms, Timeout: 300 * ms, Reliability: 1,
		Gateway: func() netip.Addr {
			select {
			case gw = <-gws:
			default:
			}
			return gw
		}}, tp.r.do)
	for _, want := range []netip.Addr{gatewayB, gatewayLLB, gateway6B, gatewayB} {
		gws <- want
		name := probeAddr(want, "wb").String()
		r.waitFor(2*time.Second, "an answer from "+name, func(rd Round) bool {
			return allOK(rd) && rd.Results[0].Target == name
		})
	}
}

func TestKernelIPv6ProbeMethods(t *testing.T) {
	tp := newTopo6(t)
	at := func(port string) string { return "[" + target6B + "]:" + port }
	tp.b.listenTCP(at("7070"))
	tp.b.serveHTTP(at("8080"), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	tp.b.serveDNS(at("53"))
	for _, tc := range []struct {
		method       string
		good, absent string
	}{
		{"tcp", at("7070"), at("7071")},
		{"http", "http://" + at("8080") + "/", "http://" + at("8081") + "/"},
		{"dns", target6B, at("5353")},
	} {
		t.Run(tc.method, func(t *testing.T) {
			if fam, err := Family([]string{tc.good, tc.absent}, tc.method); fam != 6 || err != nil {
				t.Fatalf("Family: %d, %v", fam, err)
			}
			r := startRun(t, Spec{Mark: markB, Method: tc.method, Targets: []string{tc.good, tc.absent},
				Interval: 50 * ms, Timeout: 500 * ms, Reliability: 1}, tp.r.do)
			for range 3 {
				rd := r.nextRound(2 * time.Second)
				g, a := rd.Results[0], rd.Results[1]
				if !g.OK || g.RTT <= 0 || g.Target != tc.good || a.OK || a.Err != "connection refused" || a.Target != tc.absent {
					t.Fatalf("got %s", describeRounds([]Round{rd}))
				}
			}
			r.stop()
			// The mark decides the path for these too.
			r = startRun(t, Spec{Mark: markA, Method: tc.method, Targets: []string{tc.good},
				Interval: 50 * ms, Timeout: 300 * ms, Reliability: 1}, tp.r.do)
			if rd := r.nextRound(2 * time.Second); rd.Results[0].OK {
				t.Fatalf("via A: %s", describeRounds([]Round{rd}))
			} else {
				t.Logf("via A: %s", rd.Results[0].Err)
			}
		})
	}
}

func TestKernelIPv6DeadlineAndFastConfirmation(t *testing.T) {
	tp := newTopo6(t)
	const interval = 100 * ms
	r := startRun(t, Spec{Mark: markB, Method: "icmp", Targets: []string{target6B, target6B2},
		Interval: interval, Timeout: time.Second, Reliability: 1}, tp.r.do)
	checkFastFailure(t, tp, r, interval)
}

// TestKernelIPv6Runs: Runs side by side in one namespace each see only
// their own replies, IPv4 and IPv6 alike.
func TestKernelIPv6Runs(t *testing.T) {
	tp := newTopo6(t)
	var runs []*runner
	for _, targets := range [][]string{{target6B}, {target6B2}, {target6B, target6B2}, {targetB}} {
		runs = append(runs, startRun(t, Spec{Mark: markB, Method: "icmp", Targets: targets,
			Interval: 20 * ms, Timeout: 300 * ms, Reliability: len(targets)}, tp.r.do))
	}
	for range 10 {
		for i, r := range runs {
			if rd := r.nextRound(2 * time.Second); !allOK(rd) {
				t.Fatalf("run %d: %s", i, describeRounds([]Round{rd}))
			}
		}
	}
}

// TestKernelICMP6Filters checks what the kernel hands the reader of an
// IPv6 socket: only echo replies with the Run's identifier, not the
// replies to another identifier, not our requests looped back, not an
// error message. And the socket has its mark from the start.
func TestKernelICMP6Filters(t *testing.T) {
	requireRoot(t)
	n := newNS(t, "f")
	const id = 0x5151
	s, err := openICMP(true, markB, id, n.do)
	if err != nil {
		t.Fatal(err)
	}
	defer s.conn.Close()
	var mark int
	var serr error
	s.rc.Control(func(fd uintptr) { mark, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK) })
	if serr != nil || mark != markB {
		t.Fatalf("SO_MARK %#x, %v", mark, serr)
	}
	f, err := ipv6.NewPacketConn(s.conn).ICMPFilter()
	if err != nil {
		t.Fatal(err)
	}
	for typ := range 256 {
		if f.WillBlock(ipv6.ICMPType(typ)) != (typ != icmp6EchoReply) {
			t.Fatalf("ICMP6_FILTER: type %d blocked %v", typ, f.WillBlock(ipv6.ICMPType(typ)))
		}
	}

	var other *net.IPConn
	if err := n.do(func() error {
		c, err := net.ListenPacket("ip6:ipv6-icmp", "::")
		if err == nil {
			other = c.(*net.IPConn)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	lo := &net.IPAddr{IP: net.IPv6loopback}
	var req [echoLen]byte
	for _, m := range [][]byte{
		// Another identifier: its request and reply.
		func() []byte { marshalEcho6(req[:], id+1, 1, 0, time.Now()); return append([]byte(nil), req[:]...) }(),
		// Not an echo reply, though our identifier is where an echo
		// reply has it.
		icmp6Msg(1, 4, id, 2, quoted6(id, 2, 0)),
		// Ours: the request is not delivered, the reply is.
		func() []byte { marshalEcho6(req[:], id, 3, 0, time.Now()); return req[:] }(),
	} {
		if _, err := other.WriteTo(m, lo); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, readBuf)
	s.conn.SetReadDeadline(time.Now().Add(300 * ms))
	var got []string
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			break
		}
		got = append(got, fmt.Sprintf("% x from %v", buf[:min(n, 8)], from))
	}
	want := fmt.Sprintf("81 00 %02x %02x 51 51 00 03 from ::1", buf[2], buf[3])
	if len(got) != 1 || got[0] != want {
		t.Fatalf("the socket read %q, want only %q", got, want)
	}
}
