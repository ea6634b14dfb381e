package e2e

// `multiwan explain` checked against real traffic: every seed example of
// examples/ is adapted to the lab (its WAN k on the lab's ISP k, its
// addresses mapped onto the lab's, fast probes, a control socket of its
// own) and run by the real daemon; for each scenario, a new connection
// that matches one of the example's rules, its default policy, the
// router's own traffic, or an inbound connection through a port forward,
// the daemon is asked where it goes (`multiwan explain --json` over the
// control socket), and then the connection is made for real and the WAN
// it left by is read from what the internet's server saw (each ISP
// masquerades to an address of its own), or, for a connection nobody
// answered, from its conntrack mark in the router. A balanced prediction
// is checked over as many new connections as make a miss of a WAN with a
// share of p unlikely (below 1e-6): every WAN with a share was used, none
// without. Then ISP1's upstream is cut, and once the daemon says it is
// down, every scenario is explained again: the new answer must be what the
// first explanation predicted under "if isp1 went down", and the real
// traffic must follow it.

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/multiwan/multiwan/internal/lab"
	"github.com/multiwan/multiwan/internal/plan"
)

// exFlow is one real new connection, and the query that explains it.
type exFlow struct {
	ns    string // lab.NSClient (iif lan1), lab.NSClient2 (lan2), lab.NSRouter (the router's own)
	proto string // tcp (curl to the HTTP service) or udp (the UDP echo)
	src   string // source address the socket binds; "" for the router's unbound socket
	dst   string
	dport int
	// inbound, when not 0, makes the flow a connection from the internet
	// through ISP inbound's port forward (FwdTCPPort1) to a whoami on the
	// router; the other fields are not used.
	inbound int
}

// exCase is a scenario: a flow, and what it is meant to match.
type exCase struct {
	name string
	flow exFlow
	// rule is the steering rule every path must name ("" for none: the
	// default policy or an identification); why, if set, a part of every
	// path's reason. They keep the scenario honest: explain and the
	// kernel agreeing on the wrong rule would otherwise pass.
	rule, why string
	// upOnly skips the scenario once ISP1 is cut (an inbound connection
	// through ISP1 cannot arrive then).
	upOnly bool
	// logText logs the text form of this scenario's explanation.
	logText bool
	// silent: nobody answers the flow (a tunnel's outer traffic to the
	// VPS's WireGuard port); it counts for the WAN of its conntrack mark.
	silent bool
}

// exExample is a seed example and how it is adapted to the lab.
type exExample struct {
	file string
	opts lab.Options
	// wans are the example's WAN names, in order: WAN k is the lab's ISP k.
	wans []string
	// repl returns old, new pairs applied in order to the example's
	// text; each old string must occur in it (so a changed example fails
	// here rather than being tested half-adapted).
	repl  func(t *testing.T, l *lab.Lab) []string
	cases []exCase
	// sticky, if set, names a balanced policy to check once more with
	// `sticky: source` added (no seed example has it), before the cut.
	sticky string
	// cutAs are the WANs the cut of ISP1's upstream takes down, whose
	// "if down" predictions the explanations after the cut must match:
	// wans[0] when empty; a tunnel riding ISP1 goes down with it.
	cutAs []string
	// seen maps what the internet's server sees of a connection, beyond
	// the ISPs' addresses, to the example's WAN that carried it (the
	// VPS's source for each tunnel).
	seen map[string]string
}

func exCli(ns, proto, src, dst string, dport int) exFlow {
	return exFlow{ns: ns, proto: proto, src: src, dst: dst, dport: dport}
}

func probeRepl(old string) []string {
	// Probe ten times a second (down and up after 3 rounds), so the cut
	// is seen in about 0.3 s.
	return []string{old, strings.Replace(old, "]", "], interval: 100ms", 1)}
}

// exExamples lists every seed example of examples/, adapted to the lab.
var exExamples = []exExample{
	{
		file: "seed000-dual-wan-failover.yaml",
		opts: lab.Options{ISPs: 2},
		wans: []string{"isp1", "isp2"},
		repl: func(t *testing.T, l *lab.Lab) []string {
			return []string{
				"interface: brwan1", "interface: wan1",
				"interface: brwan2", "interface: wan2",
				// isp1's gateway 192.0.2.1 is the lab's ISP1 already; isp2's
				// 198.51.100.1 is the lab's LAN, so it becomes ISP2's.
				"gateway: 198.51.100.1", "gateway: " + lab.ISPGateway(2),
				"      targets: [203.0.113.20, 203.0.113.30]\n", "      targets: [203.0.113.20, 203.0.113.30]\n      interval: 100ms\n",
				// The pinned heavy host is a client's secondary address.
				"src: [203.0.113.53/32]", "src: [" + lab.ClientExtraAddr(1) + "/32]",
			}
		},
		cases: []exCase{
			{name: "pinned-host tcp", flow: exCli(lab.NSClient, "tcp", lab.ClientExtraAddr(1), lab.ServiceAddr, 80), rule: "pinned-host", logText: true},
			{name: "pinned-host udp before udp-movable", flow: exCli(lab.NSClient, "udp", lab.ClientExtraAddr(1), lab.ServiceAddr, 7000), rule: "pinned-host"},
			{name: "udp-movable", flow: exCli(lab.NSClient, "udp", lab.ClientAddr, lab.ServiceAddr, 7000), rule: "udp-movable"},
			{name: "no rule tcp", flow: exCli(lab.NSClient, "tcp", lab.ClientAddr, lab.ServiceAddr, 80), why: "default policy failover"},
			{name: "no rule tcp from lan2", flow: exCli(lab.NSClient2, "tcp", lab.Client2Addr, lab.PortalAddr, 80), why: "default policy failover"},
			{name: "router tcp unbound", flow: exCli(lab.NSRouter, "tcp", "", lab.ServiceAddr, 80), why: "default policy failover"},
			{name: "router udp unbound", flow: exCli(lab.NSRouter, "udp", "", lab.ServiceAddr, 7000), rule: "udp-movable"},
			{name: "router tcp bound to isp2", flow: exCli(lab.NSRouter, "tcp", lab.WANAddr(2), lab.ServiceAddr, 80), why: "bound to the WAN's address"},
			{name: "inbound via isp1", flow: exFlow{inbound: 1}, why: "arrived on this WAN", upOnly: true},
			{name: "inbound via isp2", flow: exFlow{inbound: 2}, why: "arrived on this WAN", logText: true},
		},
	},
	{
		file: "seed002-active-active.yaml",
		opts: lab.Options{ISPs: 2},
		wans: []string{"isp1", "isp2"},
		repl: func(t *testing.T, l *lab.Lab) []string {
			return append(probeRepl("probe: {targets: [203.0.113.20, 203.0.113.30]}"),
				"interface: enp1s0", "interface: wan1",
				"interface: enp2s0", "interface: wan2",
				"gateway: 192.0.2.254", "gateway: "+lab.ISPGateway(1),
				"gateway: 198.51.100.254", "gateway: "+lab.ISPGateway(2),
				// The admin LAN enp8s0 is the lab's second LAN, and the
				// rule takes port 80 too: only 80 and 7000 are served.
				"iif: [enp8s0]", "iif: [lan2]",
				"dst_port: [22]", "dst_port: [22, 80]",
			)
		},
		cases: []exCase{
			{name: "ssh-via-isp2 from lan2", flow: exCli(lab.NSClient2, "tcp", lab.Client2Addr, lab.ServiceAddr, 80), rule: "ssh-via-isp2"},
			{name: "no rule tcp from lan1", flow: exCli(lab.NSClient, "tcp", lab.ClientAddr, lab.ServiceAddr, 80), why: "default policy balanced", logText: true},
			{name: "no rule udp from lan2", flow: exCli(lab.NSClient2, "udp", lab.Client2Addr, lab.ServiceAddr, 7000), why: "default policy balanced"},
			{name: "no rule udp from lan1", flow: exCli(lab.NSClient, "udp", lab.ClientExtraAddr(2), lab.PortalAddr, 7000), why: "default policy balanced"},
			{name: "router udp unbound", flow: exCli(lab.NSRouter, "udp", "", lab.ServiceAddr, 7000), why: "default policy balanced"},
			{name: "router tcp unbound", flow: exCli(lab.NSRouter, "tcp", "", lab.ServiceAddr, 80), why: "default policy balanced"},
			{name: "inbound via isp1", flow: exFlow{inbound: 1}, why: "arrived on this WAN", upOnly: true},
			{name: "inbound via isp2", flow: exFlow{inbound: 2}, why: "arrived on this WAN"},
		},
		sticky: "balanced",
	},
	{
		file: "seed002-active-passive.yaml",
		// gateway: auto, learned from the DHCP clients' default routes.
		opts: lab.Options{ISPs: 2, DHCP: true},
		wans: []string{"primary", "secondary"},
		repl: func(t *testing.T, l *lab.Lab) []string {
			return []string{
				"interface: enp1s0", "interface: wan1",
				"interface: enp2s0", "interface: wan2",
				"      targets: [203.0.113.20]\n", "      targets: [203.0.113.20]\n      interval: 100ms\n",
				"      targets: [203.0.113.30]\n", "      targets: [203.0.113.30]\n      interval: 100ms\n",
			}
		},
		cases: []exCase{
			{name: "no rule tcp", flow: exCli(lab.NSClient, "tcp", lab.ClientAddr, lab.ServiceAddr, 80), why: "default policy failover", logText: true},
			{name: "no rule udp", flow: exCli(lab.NSClient, "udp", lab.ClientExtraAddr(3), lab.PortalAddr, 7000), why: "default policy failover"},
			{name: "no rule tcp from lan2", flow: exCli(lab.NSClient2, "tcp", lab.Client2Addr, lab.ServiceAddr, 80), why: "default policy failover"},
			{name: "router tcp unbound", flow: exCli(lab.NSRouter, "tcp", "", lab.ServiceAddr, 80), why: "default policy failover"},
			{name: "router udp unbound", flow: exCli(lab.NSRouter, "udp", "", lab.ServiceAddr, 7000), why: "default policy failover"},
			{name: "inbound via primary", flow: exFlow{inbound: 1}, why: "arrived on this WAN", upOnly: true},
			{name: "inbound via secondary", flow: exFlow{inbound: 2}, why: "arrived on this WAN"},
		},
	},
	{
		file: "seed003-multihomed-server.yaml",
		// ppp0 is the lab's point-to-point ISP 1 (gateway: auto, "default
		// dev wan1"); the lab has one such link, so ppp1 is ISP 2's veth
		// with its static gateway.
		opts: lab.Options{ISPs: 2, P2PISP: 1},
		wans: []string{"isp1", "isp2"},
		repl: func(t *testing.T, l *lab.Lab) []string {
			return append(probeRepl("probe: {targets: [203.0.113.20, 203.0.113.30]}"),
				"interface: ppp0", "interface: wan1",
				"interface: ppp1\n    gateway: auto", "interface: wan2\n    gateway: "+lab.ISPGateway(2),
				// smtp takes port 80 too (only 80 and 7000 are served); the
				// portal is the lab's portal; the company VPN endpoint is
				// the lab's second probe address, its port 7000 too.
				`dst_port: [25, 465, "587"]`, `dst_port: [25, 465, "587", 80]`,
				"dst: [198.51.100.80/32]", "dst: ["+lab.PortalAddr+"/32]",
				"dst: [203.0.113.7/32]", "dst: ["+lab.ProbeAddr2+"/32]",
				"dst_port: [1130]", "dst_port: [1130, 7000]",
			)
		},
		cases: []exCase{
			{name: "smtp", flow: exCli(lab.NSClient, "tcp", lab.ClientAddr, lab.ServiceAddr, 80), rule: "smtp"},
			{name: "smtp before isp2-portal", flow: exCli(lab.NSClient, "tcp", lab.ClientAddr, lab.PortalAddr, 80), rule: "smtp"},
			{name: "isp2-portal", flow: exCli(lab.NSClient, "udp", lab.ClientAddr, lab.PortalAddr, 7000), rule: "isp2-portal", logText: true},
			{name: "company-vpn", flow: exCli(lab.NSClient, "udp", lab.ClientExtraAddr(4), lab.ProbeAddr2, 7000), rule: "company-vpn"},
			{name: "no rule udp", flow: exCli(lab.NSClient, "udp", lab.ClientAddr, lab.ServiceAddr, 7000), why: "default policy balanced"},
			{name: "no rule udp from lan2", flow: exCli(lab.NSClient2, "udp", lab.Client2Addr, lab.ProbeAddr1, 7000), why: "default policy balanced"},
			{name: "router udp unbound", flow: exCli(lab.NSRouter, "udp", "", lab.ServiceAddr, 7000), why: "default policy balanced"},
			{name: "router tcp unbound", flow: exCli(lab.NSRouter, "tcp", "", lab.ServiceAddr, 80), rule: "smtp"},
			{name: "inbound via isp1 (point-to-point)", flow: exFlow{inbound: 1}, why: "arrived on this WAN", upOnly: true},
			{name: "inbound via isp2", flow: exFlow{inbound: 2}, why: "arrived on this WAN"},
		},
	},
	{
		file: "seed004-three-uplinks.yaml",
		// The dishes are the lab's ISPs; the tunnels go to the lab's VPS
		// (internal/lab/vps.go), tunnel k riding ISP k.
		opts: lab.Options{ISPs: 3},
		wans: []string{"starlink1", "starlink2", "starlink3", "wg1", "wg2", "wg3"},
		repl: func(t *testing.T, l *lab.Lab) []string {
			_, tunnels := addTunnels(t, l)
			return seed004Repl(tunnels)
		},
		cutAs: []string{"starlink1", "wg1"},
		seen:  map[string]string{lab.TunnelSource(1): "wg1", lab.TunnelSource(2): "wg2", lab.TunnelSource(3): "wg3"},
		cases: []exCase{
			{name: "https", flow: exCli(lab.NSClient, "tcp", lab.ClientAddr, lab.ServiceAddr, 80), rule: "https", logText: true},
			{name: "no rule udp", flow: exCli(lab.NSClient, "udp", lab.ClientAddr, lab.ServiceAddr, 7000), why: "default policy balanced"},
			{name: "no rule udp from lan2", flow: exCli(lab.NSClient2, "udp", lab.Client2Addr, lab.PortalAddr, 7000), why: "default policy balanced"},
			{name: "router udp unbound", flow: exCli(lab.NSRouter, "udp", "", lab.PortalAddr, 7000), why: "default policy balanced"},
			{name: "router tcp unbound", flow: exCli(lab.NSRouter, "tcp", "", lab.ServiceAddr, 80), rule: "https"},
			{name: "router tcp bound to starlink3", flow: exCli(lab.NSRouter, "tcp", lab.WANAddr(3), lab.ServiceAddr, 80), why: "bound to the WAN's address"},
			{name: "router tcp bound to wg3", flow: exCli(lab.NSRouter, "tcp", lab.TunnelRouterAddr(3), lab.ServiceAddr, 80), why: "bound to the WAN's address"},
			// The tunnels' own outer traffic, to the VPS's WireGuard
			// ports: it rides the tunnel's dish; wg1's fails with ISP1.
			{name: "outer traffic of wg1", flow: exCli(lab.NSRouter, "udp", "", lab.VPSAddr, lab.TunnelPort(1)), why: "the outer traffic of tunnel wg1", silent: true, logText: true},
			{name: "outer traffic of wg2", flow: exCli(lab.NSRouter, "udp", "", lab.VPSAddr, lab.TunnelPort(2)), why: "the outer traffic of tunnel wg2 rides starlink2", silent: true},
			{name: "inbound via starlink1", flow: exFlow{inbound: 1}, why: "arrived on this WAN", upOnly: true},
			{name: "inbound via starlink3", flow: exFlow{inbound: 3}, why: "arrived on this WAN"},
		},
	},
	{
		file: "dual-stack.yaml",
		// isp1: IPv4 by DHCP and IPv6 gateway from router advertisements
		// (both auto); the LAN's 2001:db8:100::/64 lies in its delegated
		// /56 already. isp2: static IPv4 gateway, the ISP's link-local
		// address as gateway6 like the example's fe80::1.
		opts: lab.Options{ISPs: 2, IPv6: true, RA: true, DHCP: true},
		wans: []string{"isp1", "isp2"},
		repl: func(t *testing.T, l *lab.Lab) []string {
			ll, err := l.ISPLinkLocal6(2)
			if err != nil {
				t.Fatal(err)
			}
			return []string{
				"gateway: 198.51.100.1", "gateway: " + lab.ISPGateway(2),
				"gateway6: fe80::1", "gateway6: " + ll,
				"      targets: [203.0.113.20, 2001:db8:ffff::20]\n", "      targets: [203.0.113.20, 2001:db8:ffff::20]\n      interval: 100ms\n",
				"      targets: [203.0.113.30, 2001:db8:ffff::30]\n", "      targets: [203.0.113.30, 2001:db8:ffff::30]\n      interval: 100ms\n",
			}
		},
		cases: []exCase{
			{name: "ipv4 no rule", flow: exCli(lab.NSClient, "tcp", lab.ClientAddr, lab.ServiceAddr, 80), why: "default policy failover"},
			{name: "ipv6 from the delegated prefix", flow: exCli(lab.NSClient, "tcp", lab.ClientAddr6, lab.ServiceAddr6, 80), why: "prefixes6", logText: true},
			{name: "ipv6 udp from the delegated prefix", flow: exCli(lab.NSClient, "udp", lab.ClientExtraAddr6(1), lab.PortalAddr6, 7000), why: "prefixes6"},
			{name: "ipv6 from lan2 outside the prefix", flow: exCli(lab.NSClient2, "tcp", lab.Client2Addr6, lab.ServiceAddr6, 80), why: "default policy failover"},
			{name: "ipv6 udp from lan2", flow: exCli(lab.NSClient2, "udp", lab.Client2Addr6, lab.ServiceAddr6, 7000), why: "default policy failover"},
			{name: "router ipv4 tcp unbound", flow: exCli(lab.NSRouter, "tcp", "", lab.ServiceAddr, 80), why: "default policy failover"},
			{name: "router ipv6 tcp unbound", flow: exCli(lab.NSRouter, "tcp", "", lab.ServiceAddr6, 80), why: "default policy failover"},
			{name: "router ipv6 udp unbound", flow: exCli(lab.NSRouter, "udp", "", lab.PortalAddr6, 7000), why: "default policy failover"},
			{name: "inbound via isp1", flow: exFlow{inbound: 1}, why: "arrived on this WAN", upOnly: true},
			{name: "inbound via isp2", flow: exFlow{inbound: 2}, why: "arrived on this WAN"},
		},
	},
}

// TestExplainExamples runs every seed example in the lab and checks
// `multiwan explain` against real connections, with all WANs up and with
// ISP1's upstream cut.
func TestExplainExamples(t *testing.T) {
	for _, ex := range exExamples {
		t.Run(strings.TrimSuffix(ex.file, ".yaml"), func(t *testing.T) {
			start := time.Now()
			runExplainExample(t, ex)
			t.Logf("%s: %v", ex.file, time.Since(start).Round(time.Millisecond))
		})
	}
}

// exRig is an example running in its lab.
type exRig struct {
	t     *testing.T
	l     *lab.Lab
	r     *router
	ex    exExample
	ports *portSeq
	mask  uint32
	addrs map[int]string // the router's address on ISP k's link
}

func runExplainExample(t *testing.T, ex exExample) {
	opts := ex.opts
	opts.Logf = t.Logf
	l := lab.NewForTest(t, opts)
	raw, err := os.ReadFile(filepath.Join("..", "examples", ex.file))
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(raw)
	repl := ex.repl(t, l)
	for i := 0; i < len(repl); i += 2 {
		if !strings.Contains(cfg, repl[i]) {
			t.Fatalf("examples/%s no longer contains %q: adapt the lab copy", ex.file, repl[i])
		}
		cfg = strings.ReplaceAll(cfg, repl[i], repl[i+1])
	}
	sock := filepath.Join(t.TempDir(), "mw.sock")
	if strings.Contains(cfg, "socket: /run/multiwan/multiwan.sock") {
		cfg = strings.Replace(cfg, "socket: /run/multiwan/multiwan.sock", "socket: "+sock, 1)
	} else {
		cfg += "control:\n  socket: " + sock + "\n"
	}
	if !strings.HasSuffix(cfg, "\n") {
		cfg += "\n"
	}
	mask := uint32(0xff00)
	if i := strings.Index(cfg, "mark_mask: "); i >= 0 {
		v, err := strconv.ParseUint(strings.Fields(cfg[i+len("mark_mask: "):])[0], 0, 32)
		if err != nil {
			t.Fatal(err)
		}
		mask = uint32(v)
	}
	for _, k := range []int{1, 2, 3} {
		if k <= opts.ISPs && !strings.Contains(cfg, "interface: "+lab.WANIface(k)+"\n") {
			t.Fatalf("the lab copy has no WAN on %s:\n%s", lab.WANIface(k), cfg)
		}
	}

	// A whoami on the router behind every ISP's port forward.
	srv, err := l.ServeWhoami(lab.NSRouter, fmt.Sprintf(":%d", lab.FwdTCPPort1))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	r := startRouter(t, l, cfg)
	x := &exRig{t: t, l: l, r: r, ex: ex, ports: newPortSeq(), mask: mask, addrs: wanAddrs(t, l, opts.ISPs, opts.DHCP)}
	x.waitWANs("up")

	before := map[string]plan.Explanation{}
	for _, c := range ex.cases {
		t.Run(c.name, func(t *testing.T) {
			e := x.explain(t, c, c.logText)
			before[c.name] = e
			x.checkReasons(t, c, e.Paths)
			x.checkReal(t, c, e.Paths, "")
		})
	}

	if ex.sticky != "" {
		t.Run("sticky source", func(t *testing.T) { x.checkSticky(t, cfg, ex.sticky) })
	}

	// ISP1 dies: each new explanation must be what the first one said
	// for "if WAN1 went down", and the traffic must follow it.
	if err := l.CutUpstream(1); err != nil {
		t.Fatal(err)
	}
	x.waitWANs("down")
	cutAs := ex.cutAs
	if len(cutAs) == 0 {
		cutAs = ex.wans[:1]
	}
	for _, c := range ex.cases {
		if c.upOnly {
			continue
		}
		t.Run(c.name+" with "+cutAs[0]+" down", func(t *testing.T) {
			prev, ok := before[c.name]
			if !ok {
				t.Skip("no explanation from before the cut")
			}
			e := x.explain(t, c, false)
			// The prediction for the first of the dead WANs the
			// connection went by.
			wan1 := cutAs[0]
			for _, w := range cutAs {
				if _, ok := prev.IfDown[w]; ok {
					wan1 = w
					break
				}
			}
			want, predicted := prev.IfDown[wan1]
			keys := pathKeys
			if !predicted {
				// The first explanation went by no path of WAN1, so it
				// made no prediction for its death: where the connection
				// goes must not change. Why may: the router's socket
				// bound to the address of a WAN that has become the best
				// follows the policy (README: "The router's own traffic").
				want, keys = prev.Paths, outcomeKeys
			}
			if got, w := keys(e.Paths), keys(want); !slices.Equal(got, w) {
				t.Errorf("explain with %s down says\n  %s\nbut with it up it predicted (if_down[%s]: %v)\n  %s",
					wan1, strings.Join(got, "\n  "), wan1, predicted, strings.Join(w, "\n  "))
			}
			x.checkReal(t, c, e.Paths, wan1)
		})
	}
}

// waitWANs waits until ISP1 is in state (up: every WAN), in both
// families when the lab has IPv6.
func (x *exRig) waitWANs(state string) {
	x.t.Helper()
	wans := x.ex.wans
	if state != "up" {
		wans = x.ex.cutAs
		if len(wans) == 0 {
			wans = x.ex.wans[:1]
		}
	}
	for _, w := range wans {
		x.r.waitState(w, state, 10*time.Second)
		if x.ex.opts.IPv6 {
			x.r.waitState6(w, state, 10*time.Second)
		}
	}
}

// wanAddrs are the router's IPv4 addresses on the ISPs' links, by ISP
// (DHCP leases in a DHCP lab).
func wanAddrs(t *testing.T, l *lab.Lab, isps int, dhcp bool) map[int]string {
	m := map[int]string{}
	for k := 1; k <= isps; k++ {
		m[k] = lab.WANAddr(k)
		if dhcp {
			a, _, err := l.DHCPLease(k)
			if err != nil {
				t.Fatal(err)
			}
			m[k] = a
		}
	}
	return m
}

// query is the flow as `multiwan explain` flags.
func (x *exRig) query(t *testing.T, f exFlow) []string {
	if f.inbound != 0 {
		return []string{"--src", lab.InternetPeerAddr(f.inbound), "--dst", x.addrs[f.inbound],
			"--iif", lab.WANIface(f.inbound), "--proto", "tcp", "--dport", strconv.Itoa(lab.FwdTCPPort1)}
	}
	var q []string
	switch f.ns {
	case lab.NSClient:
		q = []string{"--src", f.src, "--iif", "lan1"}
	case lab.NSClient2:
		q = []string{"--src", f.src, "--iif", "lan2"}
	case lab.NSRouter:
		q = []string{"--local"}
		if f.src != "" {
			q = append(q, "--src", f.src)
		}
	default:
		t.Fatalf("no query for namespace %s", f.ns)
	}
	return append(q, "--dst", f.dst, "--proto", f.proto, "--dport", strconv.Itoa(f.dport))
}

// explain asks the daemon about c's flow, as JSON and, with text, in
// words too (logged).
func (x *exRig) explain(t *testing.T, c exCase, text bool) plan.Explanation {
	t.Helper()
	q := x.query(t, c.flow)
	out, err := x.r.cli(append([]string{"explain"}, append(q, "--json")...)...)
	if err != nil {
		t.Fatalf("explain %s: %v\n%s", strings.Join(q, " "), err, out)
	}
	var e plan.Explanation
	if err := json.Unmarshal([]byte(out), &e); err != nil {
		t.Fatalf("explain --json: %v\n%s", err, out)
	}
	if len(e.Paths) == 0 {
		t.Fatalf("explain %s: no paths\n%s", strings.Join(q, " "), out)
	}
	if text {
		words, err := x.r.cli(append([]string{"explain"}, q...)...)
		if err != nil {
			t.Fatalf("explain %s: %v\n%s", strings.Join(q, " "), err, words)
		}
		t.Logf("$ multiwan explain %s\n%s", strings.Join(q, " "), words)
	}
	return e
}

// checkReasons checks that every path names the rule, and gives the
// reason, the scenario is meant to match.
func (x *exRig) checkReasons(t *testing.T, c exCase, paths []plan.Path) {
	t.Helper()
	for _, p := range paths {
		if p.Rule != c.rule {
			t.Errorf("path via %q: rule %q, the scenario is meant to match %q (why: %s)", p.WAN, p.Rule, c.rule, p.Why)
		}
		if c.why != "" && !strings.Contains(p.Why, c.why) {
			t.Errorf("path via %q: why %q, want it to say %q", p.WAN, p.Why, c.why)
		}
	}
}

// pathKeys are what must not differ between two explanations of the
// same connection in the same state: WAN, verdict, share, rule, policy
// and reason of each path.
func pathKeys(paths []plan.Path) []string {
	var keys []string
	for _, p := range paths {
		keys = append(keys, fmt.Sprintf("%s %s %.4f rule=%q policy=%q why=%q", p.Verdict, p.WAN, p.Share, p.Rule, p.Policy, p.Why))
	}
	return keys
}

// outcomeKeys are where the paths go, with their shares.
func outcomeKeys(paths []plan.Path) []string {
	var keys []string
	for _, p := range paths {
		keys = append(keys, fmt.Sprintf("%s %.4f", outcome(p), p.Share))
	}
	return keys
}

// outcome is how a predicted path is named when comparing with real
// traffic: its WAN, or its verdict when it leaves by none.
func outcome(p plan.Path) string {
	if p.WAN != "" && p.Verdict == "route" {
		return p.WAN
	}
	return p.Verdict
}

// flowsFor is how many connections check a prediction: a few for one
// path; for several, enough that a path with the smallest share is missed
// with probability below 1e-6.
func flowsFor(shares map[string]float64, inbound bool) int {
	if inbound {
		return 1
	}
	if len(shares) == 1 {
		if shares["unreachable"] > 0 || shares["blackhole"] > 0 {
			// One: the router's ICMP errors to a host are rate limited
			// (a burst of about 5, then one a second).
			return 1
		}
		return 3
	}
	least := 1.0
	for _, s := range shares {
		least = min(least, s)
	}
	if least <= 0 || least >= 1 {
		return 3
	}
	return min(100, int(math.Ceil(math.Log(1e-6)/math.Log(1-least))))
}

// checkReal makes c's connection for real, as many times as the
// prediction needs, and compares where they went with the paths. A
// connection nobody answered counts for the WAN of its conntrack mark
// only when that is cut, the WAN whose upstream is cut.
func (x *exRig) checkReal(t *testing.T, c exCase, paths []plan.Path, cut string) {
	t.Helper()
	shares := map[string]float64{}
	for _, p := range paths {
		shares[outcome(p)] += p.Share
	}
	n := flowsFor(shares, c.flow.inbound != 0)
	// Connections that go into the cut WAN get no answer: wait less.
	wait := 3 * time.Second
	if cut != "" && (shares[cut] > 0 || shares["unreachable"] > 0) {
		wait = 1500 * time.Millisecond
	}
	got := x.flows(t, c.flow, n, wait)
	counts := map[string]int{}
	for _, g := range got {
		switch {
		case cut != "" && g == cut+" (no answer)":
			// It left by the WAN whose upstream is cut, as predicted.
			g = cut
		case c.silent && strings.HasSuffix(g, " (no answer)"):
			// Nobody answers it: it left by the WAN of its mark.
			g = strings.TrimSuffix(g, " (no answer)")
		}
		counts[g]++
	}
	t.Logf("explain: %v; %d real connections: %v", shares, n, counts)
	for o, k := range counts {
		if shares[o] == 0 {
			t.Errorf("%d of %d connections: %s, which explain did not predict (%v)", k, n, o, shares)
		}
	}
	for o, s := range shares {
		if s <= 0 {
			continue
		}
		if counts[o] == 0 {
			t.Errorf("explain gives %s a share of %.3f, but none of %d connections went so (%v)", o, s, n, counts)
			continue
		}
		if n >= 20 {
			// Far beyond chance: 4.5 standard deviations.
			mean, sd := float64(n)*s, math.Sqrt(float64(n)*s*(1-s))
			if d := math.Abs(float64(counts[o]) - mean); d > 4.5*sd+1 {
				t.Errorf("%s: %d of %d connections, explain's share %.3f expects about %.0f", o, counts[o], n, s, mean)
			}
		}
	}
}

// flows makes n new connections of f, at most 8 at a time, each from a
// source port of its own and given wait, and returns where each went: the
// example's WAN whose ISP the server saw; for one nobody answered, the
// WAN of its conntrack mark in the router with " (no answer)"; and
// "unreachable" for one the router refused at once.
func (x *exRig) flows(t *testing.T, f exFlow, n int, wait time.Duration) []string {
	t.Helper()
	first := x.ports.take(n)
	out := make([]string, n)
	// A LAN host's UDP socket does not hear of the router's ICMP errors
	// (it is not connected): its namespace's counter of them tells.
	unreach0 := -1
	if f.proto == "udp" && f.ns != lab.NSRouter && f.inbound == 0 {
		unreach0 = x.icmpUnreach(t, f)
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			out[i] = x.flow(t, f, first+i, unreach0, wait)
		}()
	}
	wg.Wait()
	return out
}

func exHostPort(addr string, port int) string {
	return net.JoinHostPort(addr, strconv.Itoa(port))
}

func (x *exRig) flow(t *testing.T, f exFlow, sport, unreach0 int, wait time.Duration) string {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if f.inbound != 0 {
		k := f.inbound
		body, err := x.l.Curl(ctx, lab.NSInternet, "http://"+exHostPort(lab.ISPPublicAddr(k), lab.FwdTCPPort1)+"/")
		wan := x.ctWAN(t, "-p", "tcp", "--orig-src", lab.InternetPeerAddr(k), "--orig-dst", x.addrs[k],
			"--dport", strconv.Itoa(lab.FwdTCPPort1))
		switch {
		case err != nil:
			return wan + " (no answer: " + err.Error() + ")"
		case body != lab.InternetPeerAddr(k):
			return fmt.Sprintf("%s (the router saw %s, want %s)", wan, body, lab.InternetPeerAddr(k))
		}
		return wan
	}
	v6 := strings.Contains(f.dst, ":")
	var seen string
	var err error
	switch f.proto {
	case "tcp":
		// -v: curl says why it could not connect (network unreachable)
		// only in its verbose output.
		args := []string{"-v", "--local-port", strconv.Itoa(sport)}
		if f.src != "" {
			args = append(args, "--interface", f.src)
		}
		seen, err = x.l.Curl(ctx, f.ns, "http://"+exHostPort(f.dst, f.dport)+"/", args...)
	case "udp":
		src := f.src
		if src == "" {
			src = map[bool]string{false: "0.0.0.0", true: "::"}[v6]
		}
		var reply string
		reply, err = x.l.UDPEcho(ctx, f.ns, exHostPort(src, sport), exHostPort(f.dst, f.dport))
		if err == nil {
			host, _, serr := net.SplitHostPort(reply)
			if serr != nil {
				return fmt.Sprintf("odd echo %q", reply)
			}
			seen = host
		}
	default:
		t.Errorf("no real flow for proto %s", f.proto)
		return "?"
	}
	if err == nil {
		if w, ok := x.ex.seen[seen]; ok {
			return w
		}
		for k := 1; k <= len(x.ex.wans); k++ {
			if seen == lab.ISPPublicAddr(k) || seen == lab.ISPPublicAddr6(k) {
				return x.ex.wans[k-1]
			}
		}
		return "seen from " + seen
	}
	msg := strings.ToLower(err.Error())
	if strings.Contains(msg, "unreachable") || strings.Contains(msg, "no route to host") {
		return "unreachable"
	}
	// No answer: which WAN did it leave by?
	args := []string{"-p", f.proto, "--sport", strconv.Itoa(sport), "--orig-dst", f.dst}
	if v6 {
		args = append([]string{"-f", "ipv6"}, args...)
	}
	wan := x.ctWAN(t, args...)
	if wan == noEntry && unreach0 >= 0 && x.icmpUnreach(t, f) > unreach0 {
		// Refused at routing, before conntrack confirmed the
		// connection, and the router said so.
		return "unreachable"
	}
	return wan + " (no answer)"
}

// icmpUnreach reads how many ICMP destination unreachable messages the
// namespace of f's flow has received (/proc/net/snmp, or snmp6).
func (x *exRig) icmpUnreach(t *testing.T, f exFlow) int {
	file, key := "/proc/net/snmp", "InDestUnreachs"
	if strings.Contains(f.dst, ":") {
		file, key = "/proc/net/snmp6", "Icmp6InDestUnreachs"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := x.l.Exec(ctx, f.ns, "cat", file)
	if err != nil {
		t.Errorf("cat %s: %v", file, err)
		return -1
	}
	lines := strings.Split(string(out), "\n")
	for i, line := range lines {
		fields := strings.Fields(line)
		if len(fields) == 2 && fields[0] == key {
			n, _ := strconv.Atoi(fields[1])
			return n
		}
		// snmp: a header line "Icmp: InMsgs InErrors ..." then values.
		if strings.HasPrefix(line, "Icmp: ") && i+1 < len(lines) && strings.HasPrefix(lines[i+1], "Icmp: ") {
			if j := slices.Index(fields, key); j > 0 {
				vals := strings.Fields(lines[i+1])
				if j < len(vals) {
					n, _ := strconv.Atoi(vals[j])
					return n
				}
			}
		}
	}
	t.Errorf("no %s in %s", key, file)
	return -1
}

// noEntry is what ctWAN says of a connection the router has no conntrack
// entry for: it was dropped before conntrack confirmed it (at routing).
const noEntry = "no conntrack entry"

// ctWAN is the WAN of the router's conntrack entries conntrack -L args
// selects, by their mark; several entries must agree.
func (x *exRig) ctWAN(t *testing.T, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := x.l.Exec(ctx, lab.NSRouter, append([]string{"conntrack", "-L"}, args...)...)
	if err != nil {
		return fmt.Sprintf("conntrack: %v", err)
	}
	movable := uint32(1) << (31 - bits.LeadingZeros32(x.mask))
	idMask := x.mask &^ movable
	wans := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		i := strings.Index(line, " mark=")
		if i < 0 {
			continue
		}
		m, err := strconv.ParseUint(strings.Fields(line[i+len(" mark="):])[0], 10, 32)
		if err != nil {
			continue
		}
		// The WAN id is the value of the id bits (deposited in idMask).
		id, bit := uint32(0), uint32(1)
		for msk := idMask; msk != 0; msk &= msk - 1 {
			if uint32(m)&msk&-msk != 0 {
				id |= bit
			}
			bit <<= 1
		}
		if id >= 1 && int(id) <= len(x.ex.wans) {
			wans[x.ex.wans[id-1]] = true
		} else {
			wans[fmt.Sprintf("mark %#x", m)] = true
		}
	}
	if len(wans) == 0 {
		return noEntry
	}
	names := make([]string, 0, len(wans))
	for w := range wans {
		names = append(names, w)
	}
	slices.Sort(names)
	return strings.Join(names, "+")
}

// checkSticky reloads the lab copy with `sticky: source` added to policy
// pol, and checks explain against each of 20 LAN hosts: explain gives the
// policy's shares (it traces every bucket of the hash, whatever the
// source), while each host's connections all leave by one WAN, one of
// those with a share, and every WAN with a share gets some hosts. The
// host's WAN is also computed here, as the kernel does (jhash of the
// source address into the buckets of the policy's vmap, read from the
// kernel): an explain that names the host's own WAN could do the same.
// The original config is reloaded at the end.
func (x *exRig) checkSticky(t *testing.T, cfg, pol string) {
	head := "  - name: " + pol + "\n"
	if !strings.Contains(cfg, head) {
		t.Fatalf("no policy %s in the lab copy", pol)
	}
	reload := func(text string) {
		t.Helper()
		if err := os.WriteFile(x.r.cfg, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := x.r.cli("reload"); err != nil {
			t.Fatalf("reload: %v\n%s", err, out)
		}
	}
	reload(strings.Replace(cfg, head, head+"    sticky: source\n", 1))
	defer reload(cfg)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	chain, err := x.l.Exec(ctx, lab.NSRouter, "nft", "list", "chain", "inet", "multiwan", plan.PolicyChain(pol))
	if err != nil {
		t.Fatalf("%v\n%s", err, chain)
	}
	decision, err := x.l.Exec(ctx, lab.NSRouter, "nft", "list", "map", "inet", "multiwan", plan.PolicyMap(pol, 4))
	if err != nil {
		t.Fatalf("%v\n%s", err, decision)
	}
	buckets := parseJhashVmap(t, string(chain), string(decision))

	var hosts []string
	for i := 11; i <= 30; i++ {
		hosts = append(hosts, lab.ClientExtraAddr(i))
	}
	byWAN := map[string]int{}
	shares := map[string]float64{}
	for i, h := range hosts {
		c := exCase{flow: exCli(lab.NSClient, "udp", h, lab.ServiceAddr, 7000)}
		e := x.explain(t, c, i == 0)
		for _, p := range e.Paths {
			if p.Policy != pol {
				t.Errorf("host %s: path via %s chosen by %q, want policy %s", h, p.WAN, p.Policy, pol)
			}
		}
		got := x.flows(t, c.flow, 4, 3*time.Second)
		seen := map[string]bool{}
		for _, g := range got {
			seen[g] = true
		}
		if len(seen) != 1 {
			t.Errorf("host %s: its connections went to %v, want one WAN (sticky: source)", h, got)
			continue
		}
		w := got[0]
		shares = map[string]float64{}
		for _, p := range e.Paths {
			shares[outcome(p)] += p.Share
		}
		if shares[w] == 0 {
			t.Errorf("host %s: its connections went by %s, explain gives it no share (%v)", h, w, shares)
		}
		a := netip.MustParseAddr(h).As4()
		if want := buckets(exJhash(a[:], 0x6d77616e)); want != w {
			t.Errorf("host %s: jhash bucket says %s, its connections went by %s", h, want, w)
		}
		byWAN[w]++
	}
	t.Logf("sticky source: explain gives every host %v; 20 hosts by WAN (all their connections): %v", shares, byWAN)
	for w, s := range shares {
		if s > 0 && byWAN[w] == 0 {
			t.Errorf("explain gives %s a share of %.2f, but none of 20 hosts went by it", w, s)
		}
	}
}

// parseJhashVmap reads "jhash ip saddr mod N seed S vmap @MAP" of a policy
// chain and the elements "lo-hi : goto wan_X, ..." of the map as nft
// lists them, and returns the WAN of a hash value.
func parseJhashVmap(t *testing.T, chain, decision string) func(h uint32) string {
	t.Helper()
	i := strings.Index(chain, "jhash ip saddr mod ")
	if i < 0 {
		t.Fatalf("no jhash in\n%s", chain)
	}
	f := strings.Fields(chain[i+len("jhash ip saddr mod "):])
	mod, err := strconv.ParseUint(f[0], 10, 32)
	if err != nil || f[1] != "seed" || f[2] != "0x6d77616e" {
		t.Fatalf("unexpected jhash in\n%s", chain)
	}
	if !strings.Contains(chain, "vmap @") {
		t.Fatalf("no map lookup in\n%s", chain)
	}
	j := strings.Index(decision, "elements = {")
	if j < 0 {
		t.Fatalf("no elements in\n%s", decision)
	}
	open, end := j+len("elements = ")-1, j+strings.Index(decision[j:], "}")
	type span struct {
		lo, hi uint64
		wan    string
	}
	var spans []span
	for _, el := range strings.Split(decision[open+1:end], ",") {
		k, v, _ := strings.Cut(el, " : ")
		lo, hi, ok := strings.Cut(strings.TrimSpace(k), "-")
		if !ok {
			hi = lo
		}
		l, _ := strconv.ParseUint(lo, 10, 32)
		h, _ := strconv.ParseUint(hi, 10, 32)
		w, _ := plan.WANOfChain(strings.TrimPrefix(strings.TrimSpace(v), "goto "))
		spans = append(spans, span{l, h, w})
	}
	return func(h uint32) string {
		b := uint64(h) * mod >> 32 // reciprocal_scale, as nft_jhash does
		for _, s := range spans {
			if s.lo <= b && b <= s.hi {
				return s.wan
			}
		}
		return fmt.Sprintf("no element for bucket %d", b)
	}
}

// exJhash is the kernel's jhash (Bob Jenkins' lookup3, include/linux/
// jhash.h) of key with initval seed, as nft's jhash expression computes
// it over the packet's bytes.
func exJhash(key []byte, seed uint32) uint32 {
	rol := bits.RotateLeft32
	a := 0xdeadbeef + uint32(len(key)) + seed
	b, c := a, a
	le := func(k []byte) uint32 { return uint32(k[0]) | uint32(k[1])<<8 | uint32(k[2])<<16 | uint32(k[3])<<24 }
	for len(key) > 12 {
		a += le(key[0:])
		b += le(key[4:])
		c += le(key[8:])
		a -= c
		a ^= rol(c, 4)
		c += b
		b -= a
		b ^= rol(a, 6)
		a += c
		c -= b
		c ^= rol(b, 8)
		b += a
		a -= c
		a ^= rol(c, 16)
		c += b
		b -= a
		b ^= rol(a, 19)
		a += c
		c -= b
		c ^= rol(b, 4)
		b += a
		key = key[12:]
	}
	if len(key) == 0 {
		return c
	}
	var tail [12]byte
	copy(tail[:], key)
	a += le(tail[0:])
	b += le(tail[4:])
	c += le(tail[8:])
	c ^= b
	c -= rol(b, 14)
	a ^= c
	a -= rol(c, 11)
	b ^= a
	b -= rol(a, 25)
	c ^= b
	c -= rol(b, 16)
	a ^= c
	a -= rol(c, 4)
	b ^= a
	b -= rol(a, 14)
	c ^= b
	c -= rol(b, 24)
	return c
}
