package plan

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/multiwan/multiwan/internal/config"
)

// DNS through a failover (README "DNS"). Each WAN's resolvers (dns:, and
// with `auto` those learned from its DHCP lease and router advertisements,
// Link.DNS) are pinned to it: a query to an ISP's resolver leaves by that
// ISP whatever the rules and policies say, since an ISP's resolver answers
// only its own customers. The planner also orders every resolver for the
// resolver list (resolv_file) the daemon keeps for the router's DNS
// forwarder: the resolvers of usable WANs first.
//
// In the nft table: one verdict map per WAN and family with the WAN's
// resolvers (SetDNS), and ChainDNS, jumped by new connections of both the
// forwarded path (prerouting, after identify) and the router's own
// (output, after identify and bound: a socket that asked for a WAN keeps
// it), before the rules and policies (steer). For each WAN, TCP and UDP to
// port 53 of an address in its map go to the WAN's chain while the WAN is
// usable, and to ChainDNSDown while it is down (the map's elements say
// which).
//
// Why a dead WAN's resolvers fail at once rather than leave by another
// WAN: a resolver answers its own ISP's customers only, so a query sent to
// it through another ISP is never answered, and the client waits its
// whole timeout (seconds: dnsmasq 3 s or more, glibc 5 s) before it tries
// the next server. Unreachable is told at once: the router's own sendto
// fails with ENETUNREACH, a TCP connect is rejected, and a LAN host gets
// an ICMP network unreachable; dnsmasq, glibc and systemd-resolved then
// try their next server straight away. Leaving by the dead WAN itself
// (its table keeps its route while the probes say it is down) would time
// out the same way.

// Names of the DNS pinning objects (see names.go for the rest).
const (
	// ChainDNS pins DNS queries (TCP and UDP, port 53) to the WAN whose
	// resolver they go to; a switch changes only its maps' elements.
	ChainDNS = "dns"
	// ChainDNSDown decides a query to the resolver of a WAN that is down:
	// it gets the unreachable mark, on the packet and the connection (so
	// that no rule or policy takes it up after), and fails at once.
	ChainDNSDown = "dns_down"
)

// SetDNS names the verdict map of a WAN's resolver addresses of one family
// (4 or 6), e.g. SetDNS("isp1", 4) is "dns_isp1_4": each address to the
// WAN's chain, or to ChainDNSDown while the WAN is down.
func SetDNS(wan string, family int) string {
	return fmt.Sprintf("dns_%s_%d", config.NFTName(wan), family)
}

// dnsComment is the comment of a WAN's rules in ChainDNS; explain reads
// the WAN back from it.
const dnsComment = "dns "

// Resolver is one entry of the resolver list, in the order the daemon
// writes it to resolv_file.
type Resolver struct {
	Addr netip.Addr
	// WAN is the WAN whose resolver it is: the one its queries are pinned
	// to, or the first that lists it when Pinned is false.
	WAN string
	// Usable is false when the WAN is down for the resolver's family: its
	// queries fail at once, so the resolver list puts it last.
	Usable bool
	// Learned is true for a resolver of `dns: auto` (DHCP lease, router
	// advertisement), false for a configured one.
	Learned bool
	// Pinned is false for a learned resolver that several WANs gave and
	// none configures: any of them can reach it, the policy decides.
	Pinned bool
}

// wanResolvers are one WAN's resolvers, configured and learned, in the
// order of its dns: list (learned ones where `auto` is), each once.
type wanResolvers struct {
	addrs   []netip.Addr
	learned map[netip.Addr]bool
}

// resolversOf merges a WAN's configured and learned resolvers. Learned
// ones are observations, so they are checked again: an address that can
// never be a resolver, one of a family the WAN does not carry, or past
// config.MaxDNSServers is left out (internal/resolv says why, in a note).
func (p *planner) resolversOf(w *config.WAN) wanResolvers {
	r := wanResolvers{learned: map[netip.Addr]bool{}}
	seen := map[netip.Addr]bool{}
	add := func(a netip.Addr, learned bool) {
		a = a.Unmap()
		if seen[a] || config.ResolverProblem(a) != "" || (a.Is6() && !w.IPv6) {
			return
		}
		seen[a] = true
		r.addrs = append(r.addrs, a)
		if learned {
			r.learned[a] = true
		}
	}
	for i := 0; i <= len(w.DNS); i++ {
		if w.DNSAuto && i == w.DNSAutoAt {
			for _, a := range p.links[w.Name].DNS[:min(len(p.links[w.Name].DNS), config.MaxDNSServers)] {
				add(a, true)
			}
		}
		if i < len(w.DNS) {
			add(w.DNS[i], false)
		}
	}
	return r
}

// dnsPlan is what the planner decided about DNS: each WAN's resolvers,
// the WAN each address is pinned to, and the resolver list.
type dnsPlan struct {
	byWAN map[string]wanResolvers
	owner map[netip.Addr]string // pinned addresses only
	// shared are learned addresses several WANs gave and none configures.
	shared map[netip.Addr][]string
}

// dns decides which WAN each resolver address is pinned to: a configured
// resolver to its WAN (config refuses one address on two WANs); a learned
// one to the WAN that learned it, unless another WAN configures it (that
// one wins) or learned it too (then none: any of them reaches it).
func (p *planner) dns() dnsPlan {
	dp := dnsPlan{byWAN: map[string]wanResolvers{}, owner: map[netip.Addr]string{}, shared: map[netip.Addr][]string{}}
	learnedBy := map[netip.Addr][]string{}
	for i := range p.cfg.WANs {
		w := &p.cfg.WANs[i]
		r := p.resolversOf(w)
		dp.byWAN[w.Name] = r
		for _, a := range r.addrs {
			if r.learned[a] {
				learnedBy[a] = append(learnedBy[a], w.Name)
			} else {
				dp.owner[a] = w.Name
			}
		}
	}
	for a, wans := range learnedBy {
		if _, configured := dp.owner[a]; configured {
			continue
		}
		if len(wans) > 1 {
			dp.shared[a] = wans
			continue
		}
		dp.owner[a] = wans[0]
	}
	return dp
}

// pinned reports whether multiwan pins DNS at all: only when some WAN has
// resolvers, configured or learned.
func (p *planner) pinned() bool { return p.cfg.HasDNS() }

// dnsTable builds the sets of each WAN's resolvers and the chains that pin
// queries to them (nil when no WAN has dns:). The sets exist for every
// WAN with dns: (an IPv6 one only when it carries IPv6), empty or not, so
// that the table's shape depends on the config alone.
func (p *planner) dnsTable(wans []*wanInfo, dp dnsPlan) ([]Set, []Chain) {
	if !p.pinned() {
		return nil, nil
	}
	d := p.d
	var sets []Set
	pins := Chain{Name: ChainDNS, Terminal: true, Comment: "DNS queries to a WAN's resolvers leave by that WAN"}
	for _, w := range wans {
		if len(w.cfg.DNS) == 0 && !w.cfg.DNSAuto {
			continue
		}
		for _, f := range []fam{v4, v6} {
			if f == v6 && !w.cfg.IPv6 {
				continue
			}
			// The rule stays; only the elements' verdict follows the WAN's
			// health, so a failover changes elements alone.
			verdict := goTo(WANChain(w.cfg.Name))
			if !w.usable(f) {
				verdict = goTo(ChainDNSDown)
			}
			var els []Element
			for _, a := range dp.byWAN[w.cfg.Name].addrs {
				if f.has(a) && dp.owner[a] == w.cfg.Name {
					els = append(els, Element{Key: a.String(), Value: verdict})
				}
			}
			name := SetDNS(w.cfg.Name, f.family())
			sets = append(sets, Set{Name: name, Type: f.addrType(), Map: "verdict", Elements: els,
				Comment: "resolvers of " + w.cfg.Name})
			pins.Rules = append(pins.Rules, fmt.Sprintf("meta l4proto { tcp, udp } th dport 53 %s daddr vmap @%s comment %q",
				f.ip(), name, dnsComment+w.cfg.Name))
		}
	}
	down := Chain{Name: ChainDNSDown, Comment: "a query to a resolver of a WAN that is down fails at once", Rules: []string{
		fmt.Sprintf("ct mark set ct mark and %s or %s", hex(^d.IDMask), hex(d.UnreachableMark)),
		fmt.Sprintf("meta mark set meta mark and %s or %s", hex(^d.Mask), hex(d.UnreachableMark)),
	}}
	return sets, []Chain{pins, down}
}

// resolvers orders every resolver for the resolver list: by how usable its
// WAN is for its family (up or unknown, then degraded, then down: the
// policies' own preference), then by the WAN's place in the default policy
// (the override first, then by tier, larger weight first, then member
// order; WANs outside the default policy after its members, in config
// order), then in the WAN's own order. Each address comes once, under the
// WAN it is pinned to.
func (p *planner) resolvers(byName map[string]*wanInfo, dp dnsPlan) []Resolver {
	rank := map[string]int{}
	var order []string
	if pol, ok := p.cfg.PolicyByName(p.cfg.DefaultPolicy); ok {
		members := slices.Clone(pol.Members)
		slices.SortStableFunc(members, func(a, b config.Member) int {
			return cmp.Or(cmp.Compare(a.Tier, b.Tier), cmp.Compare(b.Weight, a.Weight))
		})
		for _, m := range members {
			order = append(order, m.WAN)
		}
	}
	if o := p.override; o != "" {
		order = append([]string{o}, order...)
	}
	for _, w := range p.cfg.WANs {
		order = append(order, w.Name)
	}
	for _, w := range order {
		if _, ok := rank[w]; !ok {
			rank[w] = len(rank)
		}
	}
	class := func(s State) int {
		switch s {
		case StateUp, StateUnknown:
			return 0
		case StateDegraded:
			return 1
		}
		return 2
	}
	type entry struct {
		Resolver
		class, rank, index int
	}
	var all []entry
	seen := map[netip.Addr]bool{}
	for _, w := range p.cfg.WANs {
		r := dp.byWAN[w.Name]
		for i, a := range r.addrs {
			owner, pinned := dp.owner[a]
			if (pinned && owner != w.Name) || seen[a] {
				continue
			}
			seen[a] = true
			f := v4
			if a.Is6() {
				f = v6
			}
			st := byName[w.Name].state[f]
			all = append(all, entry{
				Resolver: Resolver{Addr: a, WAN: w.Name, Usable: st != StateDown, Learned: r.learned[a], Pinned: pinned},
				class:    class(st), rank: rank[w.Name], index: i,
			})
		}
	}
	slices.SortStableFunc(all, func(a, b entry) int {
		return cmp.Or(cmp.Compare(a.class, b.class), cmp.Compare(a.rank, b.rank), cmp.Compare(a.index, b.index))
	})
	out := make([]Resolver, len(all))
	for i, e := range all {
		out[i] = e.Resolver
	}
	return out
}

// dnsNotes are the gaps of DNS on this box: what learning a WAN's
// resolvers ran into (Link.DNSProblem: no lease, a lease without
// resolvers, bogus ones), and learned resolvers several WANs share.
func dnsNotes(cfg *config.Config, links Links) []Note {
	var out []Note
	if links == nil {
		return nil
	}
	learned := map[netip.Addr][]string{}
	for _, w := range cfg.WANs {
		if !w.DNSAuto {
			continue
		}
		l := links[w.Name]
		if l.DNSProblem != "" {
			out = append(out, Note{WAN: w.Name, Pos: w.Pos, Msg: "dns: " + l.DNSProblem})
		}
		for _, a := range l.DNS {
			if !slices.Contains(learned[a], w.Name) {
				learned[a] = append(learned[a], w.Name)
			}
		}
	}
	configured := map[netip.Addr]bool{}
	for _, w := range cfg.WANs {
		for _, a := range w.DNS {
			configured[a] = true
		}
	}
	noted := map[netip.Addr]bool{}
	for _, w := range cfg.WANs {
		for _, a := range links[w.Name].DNS {
			wans := learned[a]
			if len(wans) < 2 || configured[a] || noted[a] {
				continue
			}
			noted[a] = true
			out = append(out, Note{WAN: w.Name, Pos: w.Pos, Msg: fmt.Sprintf(
				"dns: resolver %s was learned by %s: it is not pinned to any of them (the policy decides which WAN carries its queries)",
				a, strings.Join(wans, " and "))})
		}
	}
	return out
}

// dnsWhy says why a traced query went where it did when ChainDNS decided
// it, or "" when ChainDNS did not.
func dnsWhy(steps []Step) string {
	for _, s := range steps {
		if s.Chain != ChainDNS {
			continue
		}
		wan := ""
		if i := strings.Index(s.Rule, `comment "`+dnsComment); i >= 0 {
			wan = strings.TrimSuffix(s.Rule[i+len(`comment "`+dnsComment):], `"`)
		}
		if s.To == ChainDNSDown {
			return fmt.Sprintf("a DNS query to a resolver of %s (dns:), which is down: it fails at once, "+
				"so the resolver asks its next server instead of waiting for a line that cannot answer", wan)
		}
		return fmt.Sprintf("a DNS query to a resolver of %s (dns:): pinned to %s whatever the rules and policies say, "+
			"since an ISP's resolver answers only its own customers", wan, wan)
	}
	return ""
}
