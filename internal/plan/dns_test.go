package plan

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// DNS through a failover (README "DNS"): queries to an ISP's resolver
// leave by that ISP whatever the rules say, fail at once while it is
// down, and the resolver list puts the usable WANs' resolvers first. Each
// case below is a scenario traced through the rendered table and rules.

const dnsConfig = `wans:
  - name: isp1
    interface: wan1
    gateway: 192.0.2.1
    dns: [198.18.1.53, 198.18.1.54]
  - name: isp2
    interface: wan2
    gateway: 198.51.100.1
    dns: [auto, 198.18.2.54]
policies:
  - name: failover
    members: [{wan: isp1, tier: 1}, {wan: isp2, tier: 2}]
rules:
  - {name: dns-via-isp2, proto: udp, dst_port: [53], wan: isp2}
default_policy: failover
`

var dnsMain = []Route{
	{Table: TableMain, Dst: netip.MustParsePrefix("192.0.2.0/24"), Dev: "wan1"},
	{Table: TableMain, Dst: netip.MustParsePrefix("198.51.100.0/24"), Dev: "wan2"},
	{Table: TableMain, Dst: netip.MustParsePrefix("10.0.0.0/24"), Dev: "lan"},
}

// dnsLinks are both WANs up with addresses; isp2 learned 198.18.2.53.
func dnsLinks(t *testing.T, learned ...string) Links {
	t.Helper()
	cfg := parseConfig(t, dnsConfig)
	l := upLinks(cfg, "192.0.2.2/24", "198.51.100.2/24")
	isp2 := l["isp2"]
	for _, a := range learned {
		isp2.DNS = append(isp2.DNS, addr(a))
	}
	l["isp2"] = isp2
	return l
}

func TestDNSPinning(t *testing.T) {
	cfg := parseConfig(t, dnsConfig)
	links := dnsLinks(t, "198.18.2.53")
	up := Plan(cfg, allUp(cfg), links, "")
	isp1Down := Plan(cfg, allUp(cfg, "isp1"), links, "")
	isp2Down := Plan(cfg, allUp(cfg, "isp2"), links, "")
	lanQuery := func(dst, proto string) Packet {
		return Packet{IIF: "lan", Src: addr("10.0.0.20"), Dst: addr(dst), Proto: proto, SrcPort: 40000, DstPort: 53}
	}
	// The router's forwarder (dnsmasq): an unbound, unconnected socket.
	routerQuery := func(dst, proto string) Packet {
		return Packet{Src: addr("192.0.2.2"), Dst: addr(dst), Proto: proto, SrcPort: 40000, DstPort: 53, Wildcard: true}
	}
	cases := []struct {
		name         string
		d            *Desired
		p            Packet
		wan, verdict string
	}{
		{"a LAN host's query to isp1's resolver leaves by isp1, although a rule sends DNS to isp2",
			up, lanQuery("198.18.1.53", "udp"), "isp1", ""},
		{"over TCP too", up, lanQuery("198.18.1.54", "tcp"), "isp1", ""},
		{"the router's own query to isp1's resolver leaves by isp1", up, routerQuery("198.18.1.53", "udp"), "isp1", ""},
		{"a query to isp2's learned resolver leaves by isp2", up, routerQuery("198.18.2.53", "udp"), "isp2", ""},
		{"isp2's resolvers while isp1 carries the policy", up, lanQuery("198.18.2.54", "udp"), "isp2", ""},
		{"isp1 down: its resolver fails at once, never leaks through isp2", isp1Down, lanQuery("198.18.1.53", "udp"), "", "unreachable"},
		{"isp1 down: the router's query fails at once", isp1Down, routerQuery("198.18.1.53", "udp"), "", "unreachable"},
		{"isp1 down: the router's TCP query fails at once", isp1Down, routerQuery("198.18.1.53", "tcp"), "", "unreachable"},
		{"isp1 down: isp2's resolvers still work", isp1Down, lanQuery("198.18.2.53", "udp"), "isp2", ""},
		{"isp2 down: its resolvers fail at once", isp2Down, routerQuery("198.18.2.54", "udp"), "", "unreachable"},
		{"a resolver nobody configured follows the rules", up, lanQuery("203.0.113.53", "udp"), "isp2", ""},
		{"port 853 is not pinned", up, func() Packet { p := lanQuery("198.18.1.53", "tcp"); p.DstPort = 853; return p }(), "isp1", ""},
		{"a socket bound to isp2's address keeps isp2, resolver of isp1 or not",
			up, func() Packet {
				p := routerQuery("198.18.1.53", "udp")
				p.Src, p.Wildcard = addr("198.51.100.2"), false
				return p
			}(), "isp2", ""},
		{"a probe marked for isp2 keeps isp2",
			up, func() Packet { p := routerQuery("198.18.1.53", "udp"); p.Mark = up.Marks["isp2"]; return p }(), "isp2", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := only(t, c.d.Trace(c.p, dnsMain))
			if c.wan != "" && (o.WAN != c.wan || o.Verdict != "route") {
				t.Fatalf("got %v (chains %v), want leaves by %s", o, o.Chains, c.wan)
			}
			if c.verdict != "" && o.Verdict != c.verdict {
				t.Fatalf("got %v (chains %v), want %s", o, o.Chains, c.verdict)
			}
		})
	}
	t.Run("the pinned connection carries its WAN, so a dead WAN's cleanup takes it", func(t *testing.T) {
		o := only(t, up.Trace(lanQuery("198.18.1.53", "udp"), dnsMain))
		if o.CtMark != up.Marks["isp1"] || !slices.Contains(o.Chains, ChainDNS) {
			t.Fatalf("got %v %v", o, o.Chains)
		}
	})
}

func TestDNSLocalTrafficOff(t *testing.T) {
	cfg := parseConfig(t, strings.Replace(dnsConfig, "default_policy: failover\n", "default_policy: failover\nlocal_traffic: false\n", 1))
	d := Plan(cfg, allUp(cfg, "isp1"), dnsLinks(t), "")
	q := Packet{Src: addr("198.51.100.2"), Dst: addr("198.18.2.54"), Proto: "udp", DstPort: 53, Wildcard: true}
	if o := only(t, d.Trace(q, dnsMain)); o.WAN != "isp2" {
		t.Fatalf("the router's query to isp2's resolver with local_traffic off: %v %v", o, o.Chains)
	}
	q.Dst, q.Proto = addr("198.18.1.53"), "tcp"
	if o := only(t, d.Trace(q, dnsMain)); o.Verdict != "unreachable" {
		t.Fatalf("isp1 down, TCP query to its resolver: %v %v", o, o.Chains)
	}
}

func TestDNSResolverOrder(t *testing.T) {
	cfg := parseConfig(t, dnsConfig)
	links := dnsLinks(t, "198.18.2.53")
	list := func(d *Desired) string {
		var parts []string
		for _, r := range d.Resolvers {
			s := r.Addr.String() + "@" + r.WAN
			if !r.Usable {
				s += "(down)"
			}
			if r.Learned {
				s += "(learned)"
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, " ")
	}
	cases := []struct {
		name     string
		health   Health
		override string
		want     string
	}{
		{"both up: the policy's order, each WAN's own order (learned where auto is)", allUp(cfg), "",
			"198.18.1.53@isp1 198.18.1.54@isp1 198.18.2.53@isp2(learned) 198.18.2.54@isp2"},
		{"isp1 down: isp2's first, isp1's after (never an empty list)", allUp(cfg, "isp1"), "",
			"198.18.2.53@isp2(learned) 198.18.2.54@isp2 198.18.1.53@isp1(down) 198.18.1.54@isp1(down)"},
		{"isp1 degraded: after the up backup", Health{"isp1": StateDegraded, "isp2": StateUp}, "",
			"198.18.2.53@isp2(learned) 198.18.2.54@isp2 198.18.1.53@isp1 198.18.1.54@isp1"},
		{"nothing known yet: the policy's order", Health{}, "",
			"198.18.1.53@isp1 198.18.1.54@isp1 198.18.2.53@isp2(learned) 198.18.2.54@isp2"},
		{"use isp2: isp2's first", allUp(cfg), "isp2",
			"198.18.2.53@isp2(learned) 198.18.2.54@isp2 198.18.1.53@isp1 198.18.1.54@isp1"},
		{"both down: both listed", allUp(cfg, "isp1", "isp2"), "",
			"198.18.1.53@isp1(down) 198.18.1.54@isp1(down) 198.18.2.53@isp2(down)(learned) 198.18.2.54@isp2(down)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := list(Plan(cfg, c.health, links, c.override)); got != c.want {
				t.Errorf("got  %s\nwant %s", got, c.want)
			}
		})
	}
	t.Run("weights: the heavier member first within a tier", func(t *testing.T) {
		cfg := parseConfig(t, strings.Replace(dnsConfig, "[{wan: isp1, tier: 1}, {wan: isp2, tier: 2}]", "[{wan: isp1, weight: 1}, {wan: isp2, weight: 3}]", 1))
		if got := list(Plan(cfg, allUp(cfg), links, "")); !strings.HasPrefix(got, "198.18.2.53@isp2") {
			t.Errorf("got %s", got)
		}
	})
}

// TestDNSLearnedUntrusted: learned resolvers are observations; bogus ones
// are never pinned or listed, one several WANs share is listed but pinned
// to none, and one another WAN configures stays with that WAN.
func TestDNSLearnedUntrusted(t *testing.T) {
	cfg := parseConfig(t, strings.Replace(dnsConfig, "dns: [198.18.1.53, 198.18.1.54]", "dns: [auto, 198.18.1.53, 198.18.1.54]", 1))
	links := dnsLinks(t, "0.0.0.0", "127.0.0.1", "224.0.0.251", "169.254.1.1", "2001:db8::53", "9.9.9.9", "198.18.1.53", "198.18.2.53", "198.18.2.53")
	isp1 := links["isp1"]
	isp1.DNS = []netip.Addr{addr("9.9.9.9")}
	isp1.DNSProblem = "the lease in /var/lib/dhcp/dhclient.wan1.leases lists no DNS servers"
	links["isp1"] = isp1
	d := Plan(cfg, allUp(cfg), links, "")
	var got []string
	for _, r := range d.Resolvers {
		got = append(got, r.Addr.String()+"@"+r.WAN)
		if r.Addr == addr("9.9.9.9") && r.Pinned {
			t.Errorf("9.9.9.9, learned on both WANs, is pinned to %s", r.WAN)
		}
	}
	if want := "9.9.9.9@isp1 198.18.1.53@isp1 198.18.1.54@isp1 198.18.2.53@isp2 198.18.2.54@isp2"; strings.Join(got, " ") != want {
		t.Errorf("resolvers %v, want %s", got, want)
	}
	q := Packet{IIF: "lan", Src: addr("10.0.0.20"), Dst: addr("9.9.9.9"), Proto: "udp", DstPort: 53}
	if o := only(t, d.Trace(q, dnsMain)); slices.Contains(o.Chains, ChainDNSDown) || o.WAN != "isp2" {
		t.Errorf("a shared resolver follows the rules (dns-via-isp2): %v %v", o, o.Chains)
	}
	for _, s := range d.Table.Sets {
		if strings.HasPrefix(s.Name, "dns_") {
			for _, e := range s.Elements {
				if a := addr(e.Key); a.IsLoopback() || a.IsUnspecified() || a.IsMulticast() || a.IsLinkLocalUnicast() || a.Is6() {
					t.Errorf("%s holds %s", s.Name, a)
				}
			}
		}
	}
	notes := Notes(cfg, links)
	var text []string
	for _, n := range notes {
		text = append(text, n.String())
	}
	all := strings.Join(text, "\n")
	for _, want := range []string{
		"isp1: dns: the lease in /var/lib/dhcp/dhclient.wan1.leases lists no DNS servers",
		"isp1: dns: resolver 9.9.9.9 was learned by isp1 and isp2: it is not pinned to any of them",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("notes lack %q:\n%s", want, all)
		}
	}
}

// TestDNSExplain: explain says a query is pinned to its WAN's resolver,
// and what happens when that WAN dies.
func TestDNSExplain(t *testing.T) {
	cfg := parseConfig(t, dnsConfig)
	links := dnsLinks(t)
	q := Query{Local: true, Dst: addr("198.18.1.53"), Proto: "udp", DstPort: 53}
	ex := Explain(cfg, allUp(cfg), links, "", q, dnsMain)
	if len(ex.Paths) != 1 || ex.Paths[0].WAN != "isp1" || !strings.Contains(ex.Paths[0].Why, "pinned to isp1") {
		t.Fatalf("paths %+v", ex.Paths)
	}
	down := ex.IfDown["isp1"]
	if len(down) != 1 || down[0].Verdict != "unreachable" || !strings.Contains(down[0].Why, "which is down: it fails at once") {
		t.Fatalf("if isp1 went down: %+v", down)
	}
	text := ex.String()
	for _, want := range []string{
		"a new udp connection from the router itself (an unbound socket) to 198.18.1.53 port 53:",
		"leaves by isp1",
		"why:     a DNS query to a resolver of isp1 (dns:): pinned to isp1",
		"chains:  output → identify → bound → dns → wan_isp1",
		"if isp1 went down:\n  fails at once: network unreachable",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("explanation lacks %q:\n%s", want, text)
		}
	}
}

// TestDNSGolden pins the rendered plan of the DNS scenario, all up and
// with isp1 down; and a config without dns: has no trace of it.
func TestDNSGolden(t *testing.T) {
	cfg := parseConfig(t, dnsConfig)
	links := dnsLinks(t, "198.18.2.53")
	golden(t, "dns", Plan(cfg, allUp(cfg), links, "").String())
	golden(t, "dns-down-isp1", Plan(cfg, allUp(cfg, "isp1"), links, "").String())

	plain := parseConfig(t, localConfig)
	if s := Plan(plain, allUp(plain), upLinks(plain), "").String(); strings.Contains(s, "dns") {
		t.Errorf("a config without dns: pins DNS:\n%s", s)
	}
}
