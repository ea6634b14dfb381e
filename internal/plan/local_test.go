package plan

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/multiwan/multiwan/internal/config"
)

// The router's own new connections are decided in this order (README:
// "The router's own traffic"): a mark the socket carries (SO_MARK: probes),
// a socket bound to a WAN's address (not the best WAN's: the kernel gives
// unbound sockets that one), the steering rules, the policy. A connection
// that arrived on a WAN keeps it. A pinned connection never leaves by
// another WAN, whatever source its socket carries. Each case below is one
// such scenario, traced through the rendered nft table and ip rules.

const localConfig = `wans:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1}
  - {name: isp2, interface: wan2, gateway: 198.51.100.1}
policies:
  - name: failover
    members: [{wan: isp1, tier: 1}, {wan: isp2, tier: 2}]
rules:
  - {name: resolver, dst: [203.0.113.53], proto: udp, dst_port: [53], wan: isp1}
  - {name: smtp, proto: tcp, dst_port: [25], wan: isp2}
default_policy: failover
`

var localMain = []Route{
	{Table: TableMain, Dst: netip.MustParsePrefix("192.0.2.0/24"), Dev: "wan1"},
	{Table: TableMain, Dst: netip.MustParsePrefix("198.51.100.0/24"), Dev: "wan2"},
}

func parseConfig(t *testing.T, text string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("t.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestRouterOwnTrafficOrder(t *testing.T) {
	cfg := parseConfig(t, localConfig)
	links := upLinks(cfg, "192.0.2.2/24", "198.51.100.2/24")
	both := Plan(cfg, allUp(cfg), links, "")             // best: isp1
	isp1Down := Plan(cfg, allUp(cfg, "isp1"), links, "") // best: isp2
	isp1Addr, isp2Addr := addr("192.0.2.2"), addr("198.51.100.2")
	web := Packet{Src: isp1Addr, Dst: addr("203.0.113.80"), Proto: "tcp", SrcPort: 40000, DstPort: 443}
	query := Packet{Src: isp1Addr, Dst: addr("203.0.113.53"), Proto: "udp", SrcPort: 5353, DstPort: 53, Wildcard: true}

	cases := []struct {
		name string
		d    *Desired
		p    Packet
		// wan is the WAN the packet must leave by, or the verdict when it
		// must not leave.
		wan, verdict string
		chain        string // a chain it must have gone through
	}{
		{name: "unbound socket: the policy", d: both, p: web, wan: "isp1", chain: PolicyChain("failover")},
		{name: "the router's reply on a connection that arrived on isp2",
			d: both, p: Packet{Src: isp2Addr, Dst: addr("203.0.113.99"), Proto: "tcp", SrcPort: 22, Established: true, CtMark: both.Marks["isp2"]},
			wan: "isp2", chain: RestoreChain("isp2")},
		{name: "SO_MARK of isp2 beats the policy and the rules",
			d: both, p: func() Packet { p := query; p.Mark = both.Marks["isp2"]; return p }(), wan: "isp2", chain: ChainIdentify},
		{name: "bound to isp2's address beats a rule to isp1",
			d: both, p: func() Packet { p := query; p.Src, p.Wildcard = isp2Addr, false; return p }(), wan: "isp2", chain: ChainBound},
		{name: "a rule beats the best WAN's address a connected socket was given",
			d: both, p: func() Packet { p := web; p.DstPort = 25; return p }(), wan: "isp2", chain: RuleChainOf(t, both, "smtp")},
		{name: "an unbound socket that kept an old best's address follows the policy",
			d: both, p: func() Packet { p := web; p.Src, p.Wildcard = isp2Addr, true; return p }(), wan: "isp1", chain: PolicyChain("failover")},
		{name: "an unbound socket that kept an old best's address follows the rules",
			d: isp1Down, p: func() Packet { p := web; p.Src, p.Wildcard, p.DstPort = isp1Addr, true, 25; return p }(), wan: "isp2"},
		{name: "pinned to isp1, isp1 down: unreachable at once, never via isp2",
			d: isp1Down, p: func() Packet { p := query; p.Src = isp2Addr; return p }(), verdict: "unreachable"},
		{name: "bound to isp1's address keeps isp1, down or not, like a probe",
			d: isp1Down, p: func() Packet { p := query; p.Wildcard = false; return p }(), wan: "isp1", chain: ChainBound},
	}
	t.Run("a connection that arrived on isp2 is marked with it", func(t *testing.T) {
		in := Packet{IIF: "wan2", Src: addr("203.0.113.99"), Dst: isp2Addr, Proto: "tcp", DstPort: 22, ToRouter: true}
		if o := only(t, both.Trace(in, localMain)); o.CtMark != both.Marks["isp2"] {
			t.Fatalf("got %v via %v", o, o.Chains)
		}
	})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := only(t, c.d.Trace(c.p, localMain))
			switch {
			case c.verdict != "" && (o.Verdict != c.verdict || o.WAN != ""):
				t.Fatalf("want %s, got %v via %v", c.verdict, o, o.Chains)
			case c.wan != "" && (o.WAN != c.wan || o.CtMark&c.d.IDMask != c.d.Marks[c.wan]):
				t.Fatalf("want %s, got %v via %v", c.wan, o, o.Chains)
			case c.chain != "" && !slices.Contains(o.Chains, c.chain):
				t.Fatalf("did not go through %s: %v", c.chain, o.Chains)
			}
		})
	}
}

// RuleChainOf is the chain a steering rule sends its matches to.
func RuleChainOf(t *testing.T, d *Desired, rule string) string {
	t.Helper()
	for _, r := range d.Table.Chains {
		if r.Name != ChainSteer {
			continue
		}
		for _, line := range r.Rules {
			if tok := tokenize(line); slices.Contains(tok, `"rule `+rule+`"`) {
				return tok[slices.Index(tok, "goto")+1]
			}
		}
	}
	t.Fatalf("no rule %s in steer", rule)
	return ""
}

// TestLoopGuard: a tunnel's outer packet routed into the tunnel itself
// (here: the policy prefers the tunnel and no rule pins its outer packets)
// is dropped after routing; the same packet by the underlay passes.
func TestLoopGuard(t *testing.T) {
	cfg := parseConfig(t, `wans:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1}
  - {name: wg1, interface: wg1, gateway: auto, endpoint: ["198.51.100.200:51820"]}
policies:
  - name: failover
    members: [{wan: wg1, tier: 1}, {wan: isp1, tier: 2}]
default_policy: failover
`)
	links := upLinks(cfg, "192.0.2.2/24", "10.9.0.2/32")
	outer := Packet{Src: addr("10.9.0.2"), Dst: addr("198.51.100.200"), Proto: "udp", SrcPort: 40000, DstPort: 51820, Wildcard: true}
	main := []Route{{Table: TableMain, Dst: netip.MustParsePrefix("192.0.2.0/24"), Dev: "wan1"}}
	d := Plan(cfg, allUp(cfg), links, "")
	if o := only(t, d.Trace(outer, main)); o.Verdict != "dropped" || !slices.Contains(o.Chains, ChainGuard) {
		t.Fatalf("outer packet into its own tunnel: %v via %v", o, o.Chains)
	}
	d = Plan(cfg, allUp(cfg, "wg1"), links, "")
	if o := only(t, d.Trace(outer, main)); o.WAN != "isp1" || o.Verdict != "route" {
		t.Fatalf("outer packet by the underlay: %v via %v", o, o.Chains)
	}
}

// TestIPv6OfAWANWithoutGateway6: in a dual-stack config, IPv6 that
// arrives on a WAN without gateway6 is left alone (accepted unmarked), not
// marked for a WAN that has no IPv6 table (which made it unreachable).
func TestIPv6OfAWANWithoutGateway6(t *testing.T) {
	cfg := parseConfig(t, `wans:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, gateway6: "fe80::1"}
  - {name: isp2, interface: wan2, gateway: 198.51.100.1}
policies:
  - name: failover
    members: [{wan: isp1, tier: 1}, {wan: isp2, tier: 2}]
default_policy: failover
`)
	links := upLinks(cfg, "192.0.2.2/24", "2001:db8:2::2/64")
	d := Plan(cfg, allUp(cfg), links, "")
	main := []Route{{Family: 6, Table: TableMain, Dst: netip.MustParsePrefix("::/0"), Gateway: addr("fe80::2"), Dev: "wan2"}}
	in := Packet{IIF: "wan2", Src: addr("2001:db8:ff::9"), Dst: addr("2001:db8:2::2"), Proto: "tcp", DstPort: 22, ToRouter: true}
	o := only(t, d.Trace(in, main))
	if o.CtMark != 0 || o.Mark != 0 || !slices.Contains(o.Chains, ChainIdentify) {
		t.Fatalf("IPv6 from a WAN without gateway6 was marked: %v via %v", o, o.Chains)
	}
	reply := Packet{Src: addr("2001:db8:2::2"), Dst: addr("2001:db8:ff::9"), Proto: "tcp", SrcPort: 22}
	if o := only(t, d.Trace(reply, main)); o.Verdict != "route" || o.Route.Dev != "wan2" {
		t.Fatalf("the router's IPv6 from that WAN's address: %v via %v", o, o.Chains)
	}
}

func TestNotes(t *testing.T) {
	cfg := parseConfig(t, `wans:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, probe: {targets: [203.0.113.20]}}
  - {name: isp2, interface: wan2, gateway: 198.51.100.1}
policies:
  - {name: failover, members: [{wan: isp1, tier: 1}, {wan: isp2, tier: 2}]}
default_policy: failover
`)
	notes := Notes(cfg, nil)
	if len(notes) != 1 || notes[0].WAN != "isp2" || notes[0].Pos.Line != 3 {
		t.Fatalf("without links: %v at %v", notes, notes[0].Pos)
	}
	notes = Notes(cfg, Links{"isp1": {Exists: true, Default6: true}})
	if len(notes) != 2 || notes[0].WAN != "isp1" || notes[1].WAN != "isp2" {
		t.Fatalf("isp1 with IPv6 default routes: %v", notes)
	}
}

// TestTraceWithCounters: the traffic counters (with the network listener)
// change no decision.
func TestTraceWithCounters(t *testing.T) {
	cfg := parseConfig(t, localConfig+"http: {listen: \"198.18.0.1:9731\"}\n")
	links := upLinks(cfg, "192.0.2.2/24", "198.51.100.2/24")
	d := Plan(cfg, allUp(cfg), links, "")
	if len(d.Table.Counters) != 4 {
		t.Fatalf("counters %v", d.Table.Counters)
	}
	web := Packet{IIF: "lan", Src: addr("10.0.0.9"), Dst: addr("203.0.113.80"), Proto: "tcp", DstPort: 25}
	if o := only(t, d.Trace(web, localMain)); o.WAN != "isp2" {
		t.Fatalf("%v via %v", o, o.Chains)
	}
}

func TestExplain(t *testing.T) {
	cfg := parseConfig(t, localConfig)
	links := upLinks(cfg, "192.0.2.2/24", "198.51.100.2/24")
	q := Query{IIF: "lan", Src: addr("10.0.0.9"), Dst: addr("203.0.113.25"), Proto: "tcp", SrcPort: 40000, DstPort: 25}
	ex := Explain(cfg, allUp(cfg), links, "", q, localMain)
	if len(ex.Paths) != 1 {
		t.Fatalf("%+v", ex)
	}
	p := ex.Paths[0]
	if p.WAN != "isp2" || p.Rule != "smtp" || p.Policy != "wan:isp2" || !strings.Contains(p.Why, "rule smtp matched") ||
		!strings.Contains(p.IPRule, "priority 1102") || p.Source != "198.51.100.2 (masquerade on wan2)" {
		t.Fatalf("smtp: %+v", p)
	}
	// A pin has no fallback: with isp2 down, unreachable.
	if down := ex.IfDown["isp2"]; len(down) != 1 || down[0].Verdict != "unreachable" {
		t.Fatalf("smtp with isp2 down: %+v", ex.IfDown)
	}
	web := q
	web.DstPort = 443
	ex = Explain(cfg, allUp(cfg), links, "", web, localMain)
	if p := ex.Paths[0]; p.WAN != "isp1" || p.Rule != "" || p.Policy != "failover" || !strings.Contains(p.Why, "default policy failover") {
		t.Fatalf("web: %+v", p)
	}
	if down := ex.IfDown["isp1"]; len(down) != 1 || down[0].WAN != "isp2" {
		t.Fatalf("web with isp1 down: %+v", ex.IfDown)
	}
	local := Query{Local: true, Dst: addr("203.0.113.80"), Proto: "tcp", DstPort: 443}
	ex = Explain(cfg, allUp(cfg), links, "", local, localMain)
	if p := ex.Paths[0]; p.WAN != "isp1" || !strings.Contains(p.Why, "router's own") {
		t.Fatalf("local: %+v", p)
	}
	in := Query{IIF: "wan2", Src: addr("203.0.113.9"), Dst: addr("10.0.0.9"), Proto: "tcp", DstPort: 22}
	ex = Explain(cfg, allUp(cfg), links, "", in, append(localMain, Route{Table: TableMain, Dst: netip.MustParsePrefix("10.0.0.0/24"), Dev: "lan"}))
	if p := ex.Paths[0]; !strings.Contains(p.Why, "arrived on this WAN") {
		t.Fatalf("inbound: %+v", p)
	}
	if s := ex.String(); !strings.Contains(s, "arriving on wan2") || !strings.Contains(s, "why:") {
		t.Fatalf("text:\n%s", s)
	}
}
