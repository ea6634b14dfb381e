package plan

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/multiwan/multiwan/internal/config"
)

// The nft table, built by one method per group of objects. Each builder
// decides one kind of packet; table only puts what they build in order.
// Names come from names.go.

// hex formats a mark the way nft prints it back.
func hex(v uint32) string { return fmt.Sprintf("0x%08x", v) }

// goTo is the verdict that continues in chain and, when chain ends, returns
// to the caller of the chain it was issued from (not to that chain).
func goTo(chain string) string { return "goto " + chain }

func quote(s string) string { return `"` + s + `"` }

// table builds table inet multiwan.
//
// The order of its sets and chains is part of the table's shape, and must
// not depend on the decision (health, override): the kernel adapter
// (kernel.NFT) updates a table in place only when the new one declares the
// same sets and chains, with the same comments, in the same order, and
// otherwise replaces it whole. Whatever the order here, the adapter adds
// every chain before any set: nft 1.0.6 fails with "No such file or
// directory" on a `goto` element of an interval map added before the chain
// it names.
func (p *planner) table(wans []*wanInfo) Table {
	dispatch := p.dispatchMaps(wans)
	nets := p.subnetMaps(wans)
	ifs := p.interfaceSets(wans)
	ruleSets, steer := p.steer()
	base := p.baseChains()

	guardSets, guard := p.guard(wans)
	guard = p.guardLearned(wans, guard)
	dnsSets, dnsChains := p.dnsTable(wans, p.dnsp)

	t := Table{Family: "inet", Name: TableName}
	t.Sets = append(t.Sets, dispatch.restore, dispatch.byMark, dispatch.byIIF, nets.net, ifs.all, ifs.nat)
	if p.d.IPv6 {
		t.Sets = append(t.Sets, nets.net6, nets.src6, ifs.nat6, ifs.noIPv6)
	}
	t.Sets = append(t.Sets, ruleSets...)
	t.Sets = append(t.Sets, guardSets...)
	t.Sets = append(t.Sets, dnsSets...)
	if p.counting() {
		counters, maps := p.trafficCounters(wans)
		t.Counters = counters
		t.Sets = append(t.Sets, maps...)
	}
	t.Chains = append(t.Chains, base.prerouting, base.output, base.inside, base.postrouting)
	if guard != nil {
		t.Chains = append(t.Chains, *guard)
	}
	t.Chains = append(t.Chains, p.identifyChain())
	underlaySets, underlay := p.underlayChains() // tunnels' outer traffic (underlay.go)
	t.Sets = append(t.Sets, underlaySets...)
	t.Chains = append(t.Chains, underlay...)
	boundSets, bound := p.boundChain(wans)
	t.Sets = append(t.Sets, boundSets...)
	t.Chains = append(t.Chains, bound)
	t.Chains = append(t.Chains, dnsChains...)
	t.Chains = append(t.Chains, steer)
	polSets, polChains := p.policyChains()
	t.Sets = append(t.Sets, polSets...)
	t.Chains = append(t.Chains, polChains...)
	t.Chains = append(t.Chains, p.lastResortChains()...)
	t.Chains = append(t.Chains, p.wanChains(wans)...)
	return t
}

// baseChains are the chains hooked into the kernel.
type baseChains struct {
	prerouting, output, inside, postrouting Chain
}

// baseChains decide, for every packet, whether multiwan looks at it at all.
// A packet of a known connection (its ct mark holds a WAN id) only gets that
// id copied onto its own mark (MapRestore), so it is routed by its WAN's
// table whatever the policies say now. The first packet of a new connection
// goes through ChainIdentify and, unless identify found its WAN, through
// ChainSteer; forwarded packets to the router itself are not steered
// (they are answered, not routed out), and the router's own only with
// local_traffic. At postrouting, ChainInside drops the WAN of connections
// that stay inside and ChainPostrouting masquerades.
func (p *planner) baseChains() baseChains {
	d := p.d
	idMask := hex(d.IDMask)
	restore := fmt.Sprintf("ct mark and %s vmap @%s", idMask, MapRestore)
	ctNew := fmt.Sprintf("ct state new ct mark and %s == 0", idMask)
	if !d.IPv6 {
		// No WAN carries IPv6: multiwan leaves IPv6 to the main table.
		ctNew += " meta nfproto ipv4"
	}
	var b baseChains
	var rx, tx []string
	if p.counting() {
		rx = []string{"counter name iifname map @" + MapWANRX}
		tx = []string{"counter name oifname map @" + MapWANTX}
	}
	b.prerouting = Chain{Name: ChainPrerouting, Type: "filter", Hook: "prerouting", Priority: "mangle", Rules: append(rx,
		restore,
		ctNew+" jump "+ChainIdentify,
	)}
	if p.pinned() {
		// DNS queries to a WAN's resolvers, before the rules (dns.go).
		b.prerouting.Rules = append(b.prerouting.Rules, ctNew+" fib daddr type != local jump "+ChainDNS)
	}
	b.prerouting.Rules = append(b.prerouting.Rules, ctNew+" fib daddr type != local jump "+ChainSteer)
	// Type route: a mark set here makes the kernel route the router's
	// packet again, by its new mark.
	b.output = Chain{Name: ChainOutput, Type: "route", Hook: "output", Priority: "mangle", Rules: []string{
		restore,
		ctNew + " jump " + ChainIdentify,
		ctNew + " jump " + ChainBound,
	}}
	b.output.Rules = p.underlayRules(b.output.Rules, ctNew) // tunnels' outer traffic (underlay.go)
	if p.pinned() {
		// The router's own DNS queries too, with or without
		// local_traffic: an ISP's resolver answers its customers only.
		b.output.Rules = append(b.output.Rules, ctNew+" jump "+ChainDNS)
	}
	if p.cfg.LocalTraffic {
		b.output.Rules = append(b.output.Rules, ctNew+" jump "+ChainSteer)
	}
	if p.cfg.LocalTraffic || p.pinned() {
		// A router's TCP connect whose policy fell back to last resort
		// unreachable (or whose resolver's WAN is down) must fail at once,
		// as a datagram's sendto does: otherwise the reroute drops its SYN
		// without telling the socket, and connect() hangs until its
		// timeout.
		b.output.Rules = append(b.output.Rules, fmt.Sprintf("meta mark and %s == %s meta l4proto tcp reject with icmpx type no-route",
			idMask, hex(d.UnreachableMark)))
	}
	// A new connection that neither came from a WAN nor leaves by one (LAN
	// to LAN, router to LAN) carries no WAN: dropping the mark here keeps
	// a dead WAN's cleanup from cutting it.
	b.inside = Chain{Name: ChainInside, Type: "filter", Hook: "postrouting", Priority: "mangle", Rules: append(tx,
		fmt.Sprintf("ct state new ct mark and %s != 0 iifname != @%s oifname != @%s ct mark set ct mark and %s",
			idMask, SetWANIfs, SetWANIfs, hex(^d.Mask)),
	)}
	b.postrouting = Chain{Name: ChainPostrouting, Type: "nat", Hook: "postrouting", Priority: "srcnat", Rules: []string{
		"meta nfproto ipv4 oifname @" + SetNATOIF + " masquerade",
	}}
	if d.IPv6 {
		b.postrouting.Rules = append(b.postrouting.Rules, "meta nfproto ipv6 oifname @"+SetNAT6OIF+" masquerade")
	}
	return b
}

// identifyChain decides new connections whose WAN is known before any
// steering rule, in this order: a packet already marked for a WAN (a
// health probe's SO_MARK: it must leave by the WAN it tests, up or down),
// a connection that arrived on a WAN (its replies leave by it), a
// destination on a WAN's own subnet (the ISP's router is reached
// directly), and for IPv6 a source in a prefix a WAN routes without NAT
// (no other WAN can carry it). Each match is a goto to the WAN's chain; the
// rest falls through to the caller: for the router's own packets
// ChainBound, then the steering rules. IPv6 that arrived on a WAN without
// IPv6 of its own (no gateway6) is left alone (accept): that WAN has no
// IPv6 table, and its IPv6 is routed by the main table as if multiwan were
// not there.
func (p *planner) identifyChain() Chain {
	c := Chain{Name: ChainIdentify, Comment: "connections whose WAN is known before any rule", Rules: []string{
		fmt.Sprintf("meta mark and %s vmap @%s", hex(p.d.IDMask), MapWANMark),
	}}
	if p.d.IPv6 {
		c.Rules = append(c.Rules, "meta nfproto ipv6 iifname @"+SetNoIPv6Ifs+" accept")
	}
	c.Rules = append(c.Rules,
		"iifname vmap @"+MapWANIIF,
		"ip daddr vmap @"+MapWANNet,
	)
	if p.d.IPv6 {
		c.Rules = append(c.Rules, "ip6 daddr vmap @"+MapWANNet6, "ip6 saddr vmap @"+MapWANSrc6)
	}
	return c
}

// dispatchMaps are the verdict maps that send a packet to a WAN's chain by
// what the packet already says about its WAN.
type dispatchMaps struct {
	restore, byMark, byIIF Set
}

// dispatchMaps decide by mark and interface: MapRestore sends every packet
// of a known connection to the RestoreChain of the WAN in its ct mark;
// MapWANMark sends a new connection whose packet carries a WAN's mark (a
// probe) to that WAN's chain; MapWANIIF one that arrived on a WAN's
// interface to that WAN's chain, so that replies (a port forward's, the
// router's own services') leave by the WAN they came in on.
func (p *planner) dispatchMaps(wans []*wanInfo) dispatchMaps {
	var restore, byMark, byIIF []Element
	for _, w := range wans {
		m := hex(w.mark)
		restore = append(restore, Element{Key: m, Value: goTo(RestoreChain(w.cfg.Name))})
		byMark = append(byMark, Element{Key: m, Value: goTo(WANChain(w.cfg.Name))})
		byIIF = append(byIIF, Element{Key: quote(w.cfg.Interface), Value: goTo(WANChain(w.cfg.Name))})
	}
	return dispatchMaps{
		restore: Set{Name: MapRestore, Type: "mark", Map: "verdict", Elements: restore,
			Comment: "connection's WAN id → copy it onto the packet"},
		byMark: Set{Name: MapWANMark, Type: "mark", Map: "verdict", Elements: byMark,
			Comment: "packet already marked for a WAN (probes, other tables)"},
		byIIF: Set{Name: MapWANIIF, Type: "ifname", Map: "verdict", Elements: byIIF,
			Comment: "connection arrived on a WAN: replies leave by it"},
	}
}

// subnetMaps are the verdict maps of the WANs' subnets and routed prefixes.
type subnetMaps struct {
	net, net6, src6 Set
}

// subnetMaps decide by address: a destination on the subnet of a WAN's
// interface (MapWANNet, MapWANNet6) can only be reached through that WAN,
// and so can the internet from a source in a prefix a WAN routes without
// NAT (MapWANSrc6, the WAN's prefixes6). Where two WANs share a subnet the
// first one in config order keeps it (an interval map cannot overlap).
// Host addresses (/32, /128) and link-local ones have no subnet to speak of.
func (p *planner) subnetMaps(wans []*wanInfo) subnetMaps {
	var byNet [2][]Element
	var bySrc6 []Element
	for _, w := range wans {
		for _, a := range p.links[w.cfg.Name].Addrs {
			if a.Addr().IsLinkLocalUnicast() || a.Bits() == a.Addr().BitLen() {
				continue
			}
			f := v4
			if a.Addr().Is6() {
				f = v6
			}
			if f == v6 && !w.cfg.IPv6 {
				continue // IPv6 of a WAN without gateway6: not multiwan's
			}
			byNet[f] = append(byNet[f], Element{Key: a.Masked().String(), Value: goTo(WANChain(w.cfg.Name))})
		}
		for _, pfx := range w.cfg.Prefixes6 {
			bySrc6 = append(bySrc6, Element{Key: pfx.String(), Value: goTo(WANChain(w.cfg.Name))})
		}
	}
	return subnetMaps{
		net: Set{Name: MapWANNet, Type: "ipv4_addr", Map: "verdict", Flags: []string{"interval"}, Elements: mergeNets(byNet[v4]),
			Comment: "destination on a WAN's own subnet"},
		net6: Set{Name: MapWANNet6, Type: "ipv6_addr", Map: "verdict", Flags: []string{"interval"}, Elements: mergeNets(byNet[v6]),
			Comment: "IPv6 destination on a WAN's own subnet"},
		src6: Set{Name: MapWANSrc6, Type: "ipv6_addr", Map: "verdict", Flags: []string{"interval"}, Elements: mergeNets(bySrc6),
			Comment: "source in a prefix a WAN routes without NAT: only that WAN can carry it"},
	}
}

// interfaceSets are the plain sets of WAN interfaces.
type interfaceSets struct {
	all, nat, nat6, noIPv6 Set
}

// interfaceSets decide by outgoing interface, at postrouting: SetWANIfs
// tells a connection that stays inside (ChainInside), SetNATOIF and
// SetNAT6OIF the WANs whose packets are masqueraded (nat, nat6:
// masquerade).
func (p *planner) interfaceSets(wans []*wanInfo) interfaceSets {
	var all, nat, nat6, noIPv6 []Element
	for _, w := range wans {
		all = append(all, Element{Key: quote(w.cfg.Interface)})
		if !w.cfg.IPv6 {
			noIPv6 = append(noIPv6, Element{Key: quote(w.cfg.Interface)})
		}
		if w.cfg.NAT == "masquerade" {
			nat = append(nat, Element{Key: quote(w.cfg.Interface)})
		}
		if w.cfg.IPv6 && w.cfg.NAT6 == "masquerade" {
			nat6 = append(nat6, Element{Key: quote(w.cfg.Interface)})
		}
	}
	return interfaceSets{
		all:  Set{Name: SetWANIfs, Type: "ifname", Elements: all, Comment: "every WAN interface"},
		nat:  Set{Name: SetNATOIF, Type: "ifname", Elements: nat, Comment: "WAN interfaces that masquerade"},
		nat6: Set{Name: SetNAT6OIF, Type: "ifname", Elements: nat6, Comment: "WAN interfaces that masquerade IPv6 (NAT66)"},
		noIPv6: Set{Name: SetNoIPv6Ifs, Type: "ifname", Elements: noIPv6,
			Comment: "WAN interfaces without gateway6: their IPv6 is not multiwan's"},
	}
}

// boundChain decides the router's new sockets that are bound to a WAN's
// address: they leave by that WAN, before any steering rule. It must not
// take a socket whose source the kernel merely picked for one: the
// catch-all ip rule gives the router's unbound sockets the best WAN's
// address, and a socket outlives a change of the best WAN.
//
//   - A socket bound to no address of its own (`socket wildcard 1`: an
//     unconnected socket listening on all addresses, like a WireGuard or
//     DNS daemon's, which picks or remembers a source per packet) is never
//     taken for a bound one, whatever source its packet carries: the rules
//     and the policy decide.
//   - A socket with an address of its own (bound, or connected: the kernel
//     fixes the source at connect) and the address of a WAN that is not
//     the best is taken as bound to that WAN.
//   - The best WAN's address cannot tell a socket bound on purpose from an
//     unbound one just connected: it is left to the rules and the policy
//     (return) when local traffic is steered.
//
// An address two WANs share is the first one's. The v6 addresses of a WAN
// without IPv6 of its own are left alone (accept), as in identify.
//
// The addresses are a verdict map per family: the best WAN changes at
// every failover, and only the map's elements change with it.
func (p *planner) boundChain(wans []*wanInfo) ([]Set, Chain) {
	d := p.d
	var byAddr [2][]Element
	seen := map[netip.Addr]bool{}
	for _, w := range wans {
		for _, f := range []fam{v4, v6} {
			best := d.Best
			if f == v6 {
				best = d.Best6
			}
			verdict := goTo(WANChain(w.cfg.Name))
			switch {
			case f == v6 && !w.cfg.IPv6:
				verdict = "accept"
			case p.cfg.LocalTraffic && w.cfg.Name == best:
				verdict = "return"
			}
			for _, a := range p.wanAddrs(w, f) {
				if !seen[a] {
					seen[a] = true
					byAddr[f] = append(byAddr[f], Element{Key: a.String(), Value: verdict})
				}
			}
		}
	}
	c := Chain{Name: ChainBound, Terminal: true, Comment: "router socket bound to a WAN's address"}
	var sets []Set
	for _, f := range []fam{v4, v6} {
		if f == v6 && !d.IPv6 && len(byAddr[f]) == 0 {
			continue
		}
		name := BoundMap(f.family())
		sets = append(sets, Set{Name: name, Type: f.addrType(), Map: "verdict", Elements: byAddr[f],
			Comment: "WAN addresses of the router's bound sockets (" + f.String() + ")"})
		c.Rules = append(c.Rules, "socket wildcard 0 "+f.ip()+" saddr vmap @"+name)
	}
	return sets, c
}

// steer decides the new connections identify left: the steering rules in
// order, the first match going to its policy's chain (flagging the flow
// movable first if the rule says so), and what no rule matches to the
// default policy's chain. It returns the rules' match sets with the chain.
func (p *planner) steer() ([]Set, Chain) {
	d := p.d
	var sets []Set
	c := Chain{Name: ChainSteer, Comment: "rules in order, then the default policy"}
	for _, r := range p.cfg.Rules {
		rs, matches := ruleMatch(r)
		sets = append(sets, rs...)
		for _, m := range matches {
			if r.Movable {
				m += fmt.Sprintf(" ct mark set ct mark or %s", hex(d.MovableBit))
			}
			c.Rules = append(c.Rules, strings.TrimSpace(m+" "+goTo(PolicyChain(r.Policy)))+
				fmt.Sprintf(" comment %q", "rule "+r.Name))
		}
	}
	c.Rules = append(c.Rules, goTo(PolicyChain(p.cfg.DefaultPolicy)))
	return sets, c
}

// ruleMatch renders the match part of a steering rule: one nft match per
// address family the rule can match (one for both when it names no
// address, none for a family its addresses exclude). Address and port
// lists become named sets (RuleSet), so a rule costs one nft rule per
// address family however long its lists are.
func ruleMatch(r config.Rule) ([]Set, []string) {
	var sets []Set
	var common []string
	if len(r.IIF) > 0 {
		var els []Element
		for _, i := range slices.Compact(slices.Sorted(slices.Values(r.IIF))) {
			els = append(els, Element{Key: quote(i)})
		}
		name := RuleSet(r.Name, RuleSetIIF)
		sets = append(sets, Set{Name: name, Type: "ifname", Elements: els})
		common = append(common, "iifname @"+name)
	}
	if r.Proto != "" {
		common = append(common, "meta l4proto "+r.Proto)
	}
	for _, pp := range []struct {
		dir, suffix string
		ports       []config.PortRange
	}{{"sport", RuleSetSrcPort, r.SrcPort}, {"dport", RuleSetDstPort, r.DstPort}} {
		if len(pp.ports) == 0 {
			continue
		}
		name := RuleSet(r.Name, pp.suffix)
		sets = append(sets, Set{Name: name, Type: "inet_service", Flags: []string{"interval"}, Elements: mergePorts(pp.ports)})
		common = append(common, "th "+pp.dir+" @"+name)
	}

	if len(r.Src) == 0 && len(r.Dst) == 0 {
		// No addresses: one rule covers both families.
		return sets, []string{strings.Join(common, " ")}
	}
	src4, src6 := split(r.Src)
	dst4, dst6 := split(r.Dst)
	var matches []string
	for _, fa := range []struct {
		f              fam
		src, dst       []netip.Prefix
		srcSet, dstSet string
	}{{v4, src4, dst4, RuleSetSrc4, RuleSetDst4}, {v6, src6, dst6, RuleSetSrc6, RuleSetDst6}} {
		if (len(r.Src) > 0 && len(fa.src) == 0) || (len(r.Dst) > 0 && len(fa.dst) == 0) {
			continue // the rule cannot match this family
		}
		var m []string
		for _, a := range []struct {
			dir, suffix string
			list        []netip.Prefix
		}{{"saddr", fa.srcSet, fa.src}, {"daddr", fa.dstSet, fa.dst}} {
			if len(a.list) == 0 {
				continue
			}
			name := RuleSet(r.Name, a.suffix)
			sets = append(sets, Set{Name: name, Type: fa.f.addrType(), Flags: []string{"interval"}, Elements: prefixElements(a.list)})
			m = append(m, fa.f.ip()+" "+a.dir+" @"+name)
		}
		matches = append(matches, strings.Join(append(m, common...), " "))
	}
	return sets, matches
}

func split(ps []netip.Prefix) (v4, v6 []netip.Prefix) {
	for _, p := range ps {
		if p.Addr().Is4() {
			v4 = append(v4, p)
		} else {
			v6 = append(v6, p)
		}
	}
	return v4, v6
}

// policyChains are the chains of the policies, in config order (implicit
// one-WAN policies last, as config appends them), with the verdict maps
// that hold their decisions.
func (p *planner) policyChains() ([]Set, []Chain) {
	d := p.d
	var sets []Set
	var chains []Chain
	for i, c := range d.Policies {
		var c6 *PolicyChoice
		if d.IPv6 {
			c6 = &d.Policies6[i]
		}
		s, ch := p.policyChain(c, c6)
		sets = append(sets, s...)
		chains = append(chains, ch)
	}
	return sets, chains
}

// policyChain decides the new connections steered to one policy. Its rule
// never changes: it draws a number (numgen random, or a hash of the
// source address for `sticky: source`) and looks it up in the policy's
// verdict map, one per family, whose elements say where each number goes
// now: the active WANs' chains by weight, or the last resort's chain. A
// failover changes only elements, which the kernel adapter replaces
// in-process in one netlink transaction (kernel.NFT.Apply).
func (p *planner) policyChain(c4 PolicyChoice, c6 *PolicyChoice) ([]Set, Chain) {
	// The comment must not depend on the decision: a chain's comment is
	// part of its shape (see kernel.NFT.Apply).
	ch := Chain{Name: PolicyChain(c4.Name), Terminal: true, Comment: "policy " + c4.Name + ", sticky " + c4.Sticky}
	mod := p.draws(c4.Name, c4.Sticky)
	choices := []PolicyChoice{c4}
	fams := []fam{v4}
	if c6 != nil {
		choices, fams = append(choices, *c6), append(fams, v6)
	}
	var sets []Set
	for i, c := range choices {
		f := fams[i]
		name := PolicyMap(c.Name, f.family())
		match := ""
		if c6 != nil || c.Sticky == "source" {
			match = "meta nfproto " + f.String() + " "
		}
		draw := fmt.Sprintf("numgen random mod %d", mod)
		if c.Sticky == "source" {
			draw = fmt.Sprintf("jhash %s saddr mod %d seed %#x", f.ip(), mod, hashSeed)
		}
		ch.Rules = append(ch.Rules, match+draw+" vmap @"+name)
		sets = append(sets, Set{Name: name, TypeOf: fmt.Sprintf("numgen random mod %d", mod), Map: "verdict",
			Flags: []string{"interval"}, Elements: p.decision(c, mod), Comment: "policy " + c.Name + " " + f.String()})
	}
	return sets, ch
}

// maxDraws bounds the numbers a policy draws from. Weights whose shares
// cannot be cut exactly from this many are cut to within 1/65536.
const maxDraws = 1 << 16

// draws is how many numbers a policy's rule draws from: a number every
// active subset of every tier divides into exactly by weight (the least
// common multiple of their weight sums), so that the rule stays the same
// whichever members are up; Buckets for `sticky: source`.
func (p *planner) draws(policy, sticky string) int {
	if sticky == "source" {
		return Buckets
	}
	pol, ok := p.cfg.PolicyByName(policy)
	if !ok {
		return 1
	}
	m := 1
	tiers := map[int][]int{}
	for _, mb := range pol.Members {
		tiers[mb.Tier] = append(tiers[mb.Tier], mb.Weight)
	}
	for _, ws := range tiers {
		if len(ws) > 16 {
			return maxDraws
		}
		for subset := 1; subset < 1<<len(ws); subset++ {
			sum := 0
			for i, w := range ws {
				if subset&(1<<i) != 0 {
					sum += w
				}
			}
			m = m / gcd(m, sum) * sum
			if m > maxDraws {
				return maxDraws
			}
		}
	}
	return m
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// decision is the elements of one family's decision map for a policy: the
// numbers 0..mod-1 cut by weight among the active WANs (for `sticky:
// source`, by bucketMap, so hosts stay put), or all of them to the last
// resort.
func (p *planner) decision(c PolicyChoice, mod int) []Element {
	switch {
	case len(c.Active) == 0:
		return []Element{{Key: numRange(0, mod-1), Value: goTo(LastResortChain(c.LastResort))}}
	case len(c.Active) > 1 && c.Sticky == "source":
		return bucketMap(c.Tier, c.Active)
	}
	total := 0
	for _, s := range c.Active {
		total += s.Weight
	}
	var els []Element
	cum := 0
	for _, s := range c.Active {
		lo := cum * mod / total
		cum += s.Weight
		hi := cum*mod/total - 1
		if hi >= lo {
			els = append(els, Element{Key: numRange(lo, hi), Value: goTo(WANChain(s.WAN))})
		}
	}
	return els
}

// numRange is an interval map key: "3" or "3-7".
func numRange(lo, hi int) string {
	if lo == hi {
		return fmt.Sprint(lo)
	}
	return fmt.Sprintf("%d-%d", lo, hi)
}

// lastResortChains mark the packets of a policy with no usable WAN for the
// ip rule of its last resort, one chain per last resort some policy names.
// Only the packet is marked, not the connection: its next packet is
// classified again and finds a WAN as soon as one is back. The chain is
// reached by goto: at its end the packet goes back to the base chain.
func (p *planner) lastResortChains() []Chain {
	d := p.d
	var out []Chain
	for _, kind := range []string{"unreachable", "blackhole", "main"} {
		if !slices.ContainsFunc(d.Policies, func(c PolicyChoice) bool {
			pol, ok := p.cfg.PolicyByName(c.Name)
			return ok && pol.LastResort == kind
		}) {
			continue
		}
		mark := map[string]uint32{"unreachable": d.UnreachableMark, "blackhole": d.BlackholeMark, "main": d.MainMark}[kind]
		out = append(out, Chain{Name: LastResortChain(kind), Comment: "policy without a usable WAN: last resort " + kind,
			Rules: []string{fmt.Sprintf("meta mark set meta mark and %s or %s", hex(^d.Mask), hex(mark))}})
	}
	return out
}

// Buckets is how many hash buckets `sticky: source` spreads source
// addresses over. Many more than any weight total, so shares stay within a
// tenth of a percent of the weights.
const Buckets = 1024

// hashSeed is the fixed jhash seed of `sticky: source`. Without one the
// kernel draws a random seed for every rule it creates, and each new version
// of the policy's rule (every switch) would move every host.
const hashSeed = 0x6d77616e // "mwan"

// bucketMap gives the hash buckets to the members of the chosen tier in
// proportion to their weights, as contiguous ranges in config order, then
// hands the ranges of members that are not active to the active ones, again
// by weight. A host on a surviving WAN thus keeps it when another member
// goes down or comes back; only the dead member's hosts move.
func bucketMap(tier, active []Share) []Element {
	isActive := map[string]bool{}
	activeTotal := 0
	for _, s := range active {
		isActive[s.WAN] = true
		activeTotal += s.Weight
	}
	tierTotal := 0
	for _, s := range tier {
		tierTotal += s.Weight
	}
	owner := make([]string, Buckets)
	cum := 0
	for _, s := range tier {
		lo := cum * Buckets / tierTotal
		cum += s.Weight
		hi := cum * Buckets / tierTotal
		if isActive[s.WAN] {
			for b := lo; b < hi; b++ {
				owner[b] = s.WAN
			}
			continue
		}
		// Split the orphaned range among the active members.
		acum := 0
		for _, a := range active {
			alo := lo + acum*(hi-lo)/activeTotal
			acum += a.Weight
			ahi := lo + acum*(hi-lo)/activeTotal
			for b := alo; b < ahi; b++ {
				owner[b] = a.WAN
			}
		}
	}
	var els []Element
	for start := 0; start < Buckets; {
		end := start
		for end+1 < Buckets && owner[end+1] == owner[start] {
			end++
		}
		els = append(els, Element{Key: numRange(start, end), Value: goTo(WANChain(owner[start]))})
		start = end + 1
	}
	return els
}

// wanChains are the two chains of each WAN, in config order, which every
// decision that picks a WAN ends in: WANChain gives a new connection to the
// WAN, writing its id into the connection mark (keeping the movable bit and
// every bit outside the mask) and into the packet mark, which the ip rules
// route by; RestoreChain copies a known connection's id onto its packet.
// nft 1.0 cannot combine two registers (copy the id bits of one mark into
// another under a mask), hence one small chain per WAN with the id as a
// constant, reached through verdict maps.
func (p *planner) wanChains(wans []*wanInfo) []Chain {
	d := p.d
	keepMask := hex(^d.Mask)
	var out []Chain
	for _, w := range wans {
		m := hex(w.mark)
		out = append(out,
			Chain{Name: WANChain(w.cfg.Name), Comment: "new connection leaves by " + w.cfg.Name, Rules: []string{
				fmt.Sprintf("ct mark set ct mark and %s or %s", hex(^d.IDMask), m),
				fmt.Sprintf("meta mark set meta mark and %s or %s", keepMask, m),
			}},
			Chain{Name: RestoreChain(w.cfg.Name), Rules: []string{
				fmt.Sprintf("meta mark set meta mark and %s or %s", keepMask, m),
			}},
		)
	}
	return out
}

// guard builds ChainGuard and its sets: for every WAN that names tunnel
// endpoints, a packet to one of them leaving by the WAN's own interface is
// counted and dropped. Such a packet is the tunnel's own outer traffic
// routed into the tunnel: it would be encapsulated and sent again, into
// the tunnel again, without end. Routing should never do it (the rules pin
// the outer traffic to the underlay); the guard holds when something else
// went wrong. nil when no WAN names endpoints.
func (p *planner) guard(wans []*wanInfo) ([]Set, *Chain) {
	var sets []Set
	c := Chain{Name: ChainGuard, Type: "filter", Hook: "postrouting", Priority: "mangle",
		Comment: "a tunnel never carries its own outer packets"}
	for _, w := range wans {
		var els [2][]Element
		seen := map[netip.Addr]bool{}
		for _, ep := range w.cfg.Endpoints {
			a := ep.Addr()
			if seen[a] {
				continue
			}
			seen[a] = true
			f := v4
			if a.Is6() {
				f = v6
			}
			els[f] = append(els[f], Element{Key: a.String()})
		}
		for _, f := range []fam{v4, v6} {
			if len(els[f]) == 0 {
				continue
			}
			name := GuardSet(w.cfg.Name, f.family())
			sets = append(sets, Set{Name: name, Type: f.addrType(), Elements: els[f],
				Comment: "endpoints of tunnel " + w.cfg.Name})
			c.Rules = append(c.Rules, fmt.Sprintf("oifname %s %s daddr @%s counter drop comment %q",
				quote(w.cfg.Interface), f.ip(), name, "loop: "+w.cfg.Name+"'s outer packet into "+w.cfg.Name))
		}
	}
	if len(c.Rules) == 0 {
		return nil, nil
	}
	return sets, &c
}

// counting reports whether the table counts traffic per WAN: only when
// something reads the counts (the network listener: metrics, dashboard),
// since each costs a map lookup per packet.
func (p *planner) counting() bool { return p.cfg.HTTP.Listen.IsValid() }

// trafficCounters are the named counters of what each WAN received and
// sent, and the maps from interface to counter that the first rule of
// prerouting and of inside (postrouting) use.
func (p *planner) trafficCounters(wans []*wanInfo) ([]string, []Set) {
	var counters []string
	var rx, tx []Element
	for _, w := range wans {
		counters = append(counters, CounterRX(w.cfg.Name), CounterTX(w.cfg.Name))
		rx = append(rx, Element{Key: quote(w.cfg.Interface), Value: quote(CounterRX(w.cfg.Name))})
		tx = append(tx, Element{Key: quote(w.cfg.Interface), Value: quote(CounterTX(w.cfg.Name))})
	}
	return counters, []Set{
		{Name: MapWANRX, Type: "ifname", Map: "counter", Elements: rx, Comment: "bytes received from each WAN"},
		{Name: MapWANTX, Type: "ifname", Map: "counter", Elements: tx, Comment: "bytes sent to each WAN"},
	}
}
