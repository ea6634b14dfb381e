package plan

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// Tunnel WANs (overlays), scenario by scenario, traced through the rendered
// nft table and ip rules: a tunnel's outer traffic rides its underlay and
// nothing else, the LAN rides the tunnels, a tunnel whose underlays are
// all down is down and its outer packets fail.

// seed004Main is the main table of the seed-004 router: the dishes' and
// the tunnels' connected subnets, and DHCP default routes that must be
// ignored.
var seed004Main = []Route{
	{Table: TableMain, Dst: netip.MustParsePrefix("198.18.1.0/24"), Dev: "eth1"},
	{Table: TableMain, Dst: netip.MustParsePrefix("198.18.2.0/24"), Dev: "eth2"},
	{Table: TableMain, Dst: netip.MustParsePrefix("198.18.3.0/24"), Dev: "eth3"},
	{Table: TableMain, Dst: netip.MustParsePrefix("10.0.1.0/24"), Dev: "wg1"},
	{Table: TableMain, Dst: netip.MustParsePrefix("10.0.2.0/24"), Dev: "wg2"},
	{Table: TableMain, Dst: netip.MustParsePrefix("10.0.3.0/24"), Dev: "wg3"},
	{Table: TableMain, Dst: netip.MustParsePrefix("192.168.1.0/24"), Dev: "br-lan"},
	{Table: TableMain, Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: addr("198.18.1.1"), Dev: "eth1"},
}

var seed004Addrs = []string{"198.18.1.2/24", "198.18.2.2/24", "198.18.3.2/24", "10.0.1.2/24", "10.0.2.2/24", "10.0.3.2/24"}

// outer is tunnel k's outer packet as wireguard-go sends it: from its
// socket listening on all addresses (port 3000k), to the VPS.
func outer(k int) Packet {
	return Packet{Src: addr("10.0.1.2"), Dst: addr("203.0.113.7"), Proto: "udp",
		SrcPort: uint16(30000 + k), DstPort: uint16(30000 + k), Wildcard: true}
}

func TestSeed004Tunnels(t *testing.T) {
	cfg := load(t, "seed004-three-uplinks.yaml")
	links := upLinks(cfg, seed004Addrs...)
	up := Plan(cfg, allUp(cfg), links, "")
	lan := Packet{IIF: "br-lan", Src: addr("192.168.1.20"), Dst: addr("198.51.100.80"), Proto: "tcp", SrcPort: 40000, DstPort: 443}

	t.Run("each tunnel's outer traffic rides its own dish", func(t *testing.T) {
		for k, dish := range []string{"starlink1", "starlink2", "starlink3"} {
			o := only(t, up.Trace(outer(k+1), seed004Main))
			if o.WAN != dish || o.CtMark&up.IDMask != up.Marks[dish] || !slices.Contains(o.Chains, ChainUnderlay) {
				t.Errorf("wg%d: %v via %v", k+1, o, o.Chains)
			}
		}
	})
	t.Run("the LAN rides the tunnels 1:1:1, never a dish", func(t *testing.T) {
		s := Shares(up.Trace(lan, seed004Main))
		for _, w := range []string{"wg1", "wg2", "wg3"} {
			if !near(s[w], 1.0/3) {
				t.Errorf("%s: %v", w, s)
			}
		}
	})
	t.Run("a dead dish takes its tunnel down, and the LAN moves to the others", func(t *testing.T) {
		d := Plan(cfg, allUp(cfg, "starlink2"), links, "")
		if d.States["wg2"] != StateDown || d.Causes["wg2"] != "underlay starlink2 down" {
			t.Fatalf("wg2: %s (%q)", d.States["wg2"], d.Causes["wg2"])
		}
		if s := Shares(d.Trace(lan, seed004Main)); !near(s["wg1"], 0.5) || !near(s["wg3"], 0.5) {
			t.Errorf("LAN: %v", s)
		}
		// Its outer packets fail: not into another tunnel, not by
		// main's default route (eth1), not by another dish.
		o := only(t, d.Trace(outer(2), seed004Main))
		if o.Verdict != "unreachable" || o.WAN != "" || o.CtMark != 0 {
			t.Errorf("wg2's outer packet: %v via %v", o, o.Chains)
		}
		if o := only(t, d.Trace(outer(1), seed004Main)); o.WAN != "starlink1" {
			t.Errorf("wg1's outer packet: %v", o)
		}
	})
	t.Run("the dish's own probes still leave by it, to the VPS too", func(t *testing.T) {
		d := Plan(cfg, allUp(cfg, "starlink2"), links, "")
		probe := outer(1)
		probe.Mark, probe.Wildcard = d.Marks["starlink2"], false
		if o := only(t, d.Trace(probe, seed004Main)); o.WAN != "starlink2" {
			t.Errorf("probe of starlink2: %v via %v", o, o.Chains)
		}
	})
	t.Run("an established outer flow keeps its dish until its entry is deleted", func(t *testing.T) {
		p := outer(1)
		p.Established, p.CtMark = true, up.Marks["starlink1"]
		d := Plan(cfg, allUp(cfg, "starlink2"), links, "")
		if o := only(t, d.Trace(p, seed004Main)); o.WAN != "starlink1" || !slices.Contains(o.Chains, RestoreChain("starlink1")) {
			t.Errorf("%v via %v", o, o.Chains)
		}
	})
	t.Run("a tunnel down by its own probes leaves its dish to its outer traffic", func(t *testing.T) {
		d := Plan(cfg, allUp(cfg, "wg1"), links, "")
		if o := only(t, d.Trace(outer(1), seed004Main)); o.WAN != "starlink1" {
			t.Errorf("%v via %v", o, o.Chains)
		}
		if d.Causes["wg1"] != "" {
			t.Errorf("cause %q: wg1 is down by its own probes", d.Causes["wg1"])
		}
	})
}

const failoverTunnel = `wans:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1}
  - {name: isp2, interface: wan2, gateway: 192.0.2.65}
  - {name: wg1, interface: wg1, gateway: auto, underlay: [isp1, isp2]}
  - {name: wg9, interface: wg9, gateway: auto, underlay: wg1, endpoint: "198.51.100.9"}
policies:
  - {name: p, members: [{wan: wg1, tier: 1}, {wan: wg9, tier: 2}]}
default_policy: p
`

// learned is what the daemon reads from wg1: listen port 51820, one peer.
var learned = &TunnelInfo{Kind: "wireguard-go", ListenPort: 51820, Endpoints: []netip.AddrPort{netip.MustParseAddrPort("203.0.113.7:51820")}, Peers: 1}

func TestUnderlayFailover(t *testing.T) {
	cfg := parseConfig(t, failoverTunnel)
	links := upLinks(cfg, "192.0.2.2/26", "192.0.2.66/26", "10.9.0.2/24", "10.8.0.2/24")
	l := links["wg1"]
	l.Tunnel = learned
	links["wg1"] = l
	main := []Route{{Table: TableMain, Dst: netip.MustParsePrefix("10.9.0.0/24"), Dev: "wg1"}}
	byPort := Packet{Src: addr("10.9.0.2"), Dst: addr("198.51.100.200"), Proto: "udp", SrcPort: 51820, DstPort: 4500, Wildcard: true}
	byEndpoint := Packet{Src: addr("10.9.0.2"), Dst: addr("203.0.113.7"), Proto: "udp", SrcPort: 40000, DstPort: 51820, Wildcard: true}

	for _, c := range []struct {
		down          []string
		underlay      string // "" none: the packets fail
		wg1, wg9Cause string
	}{
		{nil, "isp1", "", ""},
		{[]string{"isp1"}, "isp2", "", ""},
		{[]string{"isp2"}, "isp1", "", ""},
		{[]string{"isp1", "isp2"}, "", "underlays isp1, isp2 down", "underlay wg1 down"},
	} {
		d := Plan(cfg, allUp(cfg, c.down...), links, "")
		for _, p := range []Packet{byPort, byEndpoint} {
			o := only(t, d.Trace(p, main))
			switch {
			case c.underlay != "" && o.WAN != c.underlay:
				t.Errorf("%v down, %d→%s: %v via %v, want %s", c.down, p.SrcPort, p.Dst, o, o.Chains, c.underlay)
			case c.underlay == "" && o.Verdict != "unreachable":
				t.Errorf("%v down, %d→%s: %v via %v, want unreachable", c.down, p.SrcPort, p.Dst, o, o.Chains)
			}
		}
		if ov := d.Overlay("wg1"); ov == nil || ov.Underlay != c.underlay || ov.ListenPort != 51820 {
			t.Errorf("%v down: overlay %+v", c.down, ov)
		}
		if d.Causes["wg1"] != c.wg1 || d.Causes["wg9"] != c.wg9Cause {
			t.Errorf("%v down: causes %v", c.down, d.Causes)
		}
	}
	t.Run("a tunnel over a tunnel rides it, and is down with it", func(t *testing.T) {
		p := Packet{Src: addr("10.8.0.2"), Dst: addr("198.51.100.9"), Proto: "udp", SrcPort: 1194, DstPort: 1194, Wildcard: true}
		d := Plan(cfg, allUp(cfg), links, "")
		if o := only(t, d.Trace(p, main)); o.WAN != "wg1" {
			t.Errorf("%v via %v", o, o.Chains)
		}
		d = Plan(cfg, allUp(cfg, "wg1"), links, "")
		if d.States["wg9"] != StateDown {
			t.Errorf("wg9 %s with wg1 down", d.States["wg9"])
		}
	})
	t.Run("learned endpoints join the loop guard, UDP to their port", func(t *testing.T) {
		d := Plan(cfg, allUp(cfg), links, "")
		g := slices.IndexFunc(d.Table.Chains, func(c Chain) bool { return c.Name == ChainGuard })
		if g < 0 || !slices.ContainsFunc(d.Table.Chains[g].Rules, func(r string) bool {
			return strings.Contains(r, `oifname "wg1" meta l4proto udp ip daddr 203.0.113.7 th dport 51820 counter drop`)
		}) {
			t.Fatalf("guard: %v", d.Table.Chains)
		}
	})
}

func TestTunnelMarks(t *testing.T) {
	cfg := parseConfig(t, `mark_mask: 0xff00
wans:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1}
  - {name: isp2, interface: wan2, gateway: 192.0.2.65}
  - {name: ts, interface: tailscale0, gateway: auto, underlay: isp2, tunnel_mark: 0x80000}
  - {name: wg1, interface: wg1, gateway: auto, underlay: isp1}
policies:
  - {name: p, members: [{wan: ts, tier: 1}, {wan: isp1, tier: 2}]}
default_policy: p
`)
	links := upLinks(cfg, "192.0.2.2/26", "192.0.2.66/26", "100.64.0.2/32", "10.9.0.2/24")
	bypass := Packet{Src: addr("192.0.2.2"), Dst: addr("198.51.100.50"), Proto: "udp", SrcPort: 41641, DstPort: 41641,
		Mark: 0x80000, Wildcard: true}
	d := Plan(cfg, allUp(cfg), links, "")
	o := only(t, d.Trace(bypass, nil))
	if o.WAN != "isp2" || o.Mark&^d.Mask != 0x80000 {
		t.Fatalf("Tailscale's bypass-marked packet: %v via %v, want isp2 with its own mark kept", o, o.Chains)
	}

	t.Run("a learned fwmark outside the mask pins", func(t *testing.T) {
		l := links["wg1"]
		l.Tunnel = &TunnelInfo{Kind: "wireguard", FwMark: 0x1}
		links["wg1"] = l
		d := Plan(cfg, allUp(cfg), links, "")
		p := Packet{Src: addr("10.9.0.2"), Dst: addr("198.51.100.77"), Proto: "udp", SrcPort: 1, DstPort: 2, Mark: 0x1, Wildcard: true}
		if o := only(t, d.Trace(p, nil)); o.WAN != "isp1" {
			t.Fatalf("%v via %v", o, o.Chains)
		}
	})
	t.Run("a learned fwmark that clashes is left alone and reported", func(t *testing.T) {
		l := links["wg1"]
		l.Tunnel = &TunnelInfo{Kind: "wireguard", FwMark: 0x388, ListenPort: 51820}
		links["wg1"] = l
		d := Plan(cfg, allUp(cfg), links, "")
		ov := d.Overlay("wg1")
		if ov == nil || ov.LeftAlone != 0x388 || !strings.Contains(ov.Problem, "use mark_mask: 0xff0000") {
			t.Fatalf("overlay %+v", ov)
		}
		p := Packet{Src: addr("10.9.0.2"), Dst: addr("198.51.100.77"), Proto: "udp", SrcPort: 51820, DstPort: 2, Mark: 0x388, Wildcard: true}
		o := only(t, d.Trace(p, nil))
		if o.CtMark != 0 || o.Mark != 0x388 || slices.Contains(o.Chains, ChainIdentify) {
			t.Fatalf("left alone: %v via %v", o, o.Chains)
		}
		notes := Notes(cfg, links)
		if !slices.ContainsFunc(notes, func(n Note) bool {
			return n.WAN == "wg1" && strings.Contains(n.Msg, "overlaps mark_mask 0xff00 (bits 0x300)")
		}) {
			t.Fatalf("notes %v", notes)
		}
	})
}

func TestUnderlayNotes(t *testing.T) {
	cfg := parseConfig(t, `wans:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, probe: {targets: [203.0.113.20]}}
  - {name: isp2, interface: wan2, gateway: 192.0.2.65, probe: {targets: [203.0.113.20]}}
  - {name: wg1, interface: wg1, gateway: auto, underlay: isp1, endpoint: ["192.0.2.70:51820", "10.9.0.1"], probe: {targets: [10.9.0.1]}}
  - {name: gre1, interface: gre1, gateway: auto, underlay: isp2, probe: {targets: [10.8.0.1]}}
policies:
  - {name: p, members: [{wan: wg1}]}
default_policy: p
`)
	if n := Notes(cfg, nil); len(n) != 0 {
		t.Fatalf("without links: %v", n)
	}
	links := upLinks(cfg, "192.0.2.2/26", "192.0.2.66/26", "10.9.0.2/24", "10.8.0.2/30")
	var msgs []string
	for _, n := range Notes(cfg, links) {
		msgs = append(msgs, n.String())
	}
	for _, want := range []string{
		"wg1: endpoint 192.0.2.70 lies in 192.0.2.64/26, connected on wan2 (WAN isp2)",
		"wg1: endpoint 10.9.0.1 lies in the tunnel's own subnet 10.9.0.0/24",
		"gre1: rides isp2, but multiwan cannot tell its outer packets",
	} {
		if !slices.ContainsFunc(msgs, func(m string) bool { return strings.HasPrefix(m, want) }) {
			t.Errorf("no note %q in\n%s", want, strings.Join(msgs, "\n"))
		}
	}
}

func TestExplainOuterTraffic(t *testing.T) {
	cfg := load(t, "seed004-three-uplinks.yaml")
	links := upLinks(cfg, seed004Addrs...)
	q := Query{Local: true, Dst: addr("203.0.113.7"), Proto: "udp", DstPort: 30002}
	ex := Explain(cfg, allUp(cfg), links, "", q, seed004Main)
	if len(ex.Paths) != 1 || ex.Paths[0].WAN != "starlink2" || ex.Paths[0].Why != "the outer traffic of tunnel wg2 rides starlink2" {
		t.Fatalf("%+v", ex.Paths)
	}
	down := ex.IfDown["starlink2"]
	if len(down) != 1 || down[0].Verdict != "unreachable" || !strings.Contains(down[0].Why, "tunnel wg2 has no usable underlay") {
		t.Fatalf("if starlink2 went down: %+v", down)
	}
	if s := ex.String(); !strings.Contains(s, "leaves by starlink2") || !strings.Contains(s, "chains:  output → identify → underlay → wan_starlink2") {
		t.Fatalf("text:\n%s", s)
	}
}
