// Package plan computes the complete kernel state multiwan wants from what is
// configured and what is observed. It is a pure function: no I/O, no clock,
// no randomness, so the same inputs always give the same Desired, and tests
// can pin its output in golden files.
//
// How the pieces fit (IPv4; see README "How it works"):
//
//	packet ─▶ nft prerouting/output (table inet multiwan)
//	            known connection: meta mark ← ct mark (WAN id bits)
//	            new connection:   identify (pre-marked, from a WAN, bound to a WAN
//	                              address, to a WAN's subnet) or steer (rules, then
//	                              the default policy) → ct mark ← WAN id
//	       ─▶ ip rules:  main without default routes (LAN, VPN and link routes win)
//	                     fwmark WAN id → the WAN's table
//	                     from a WAN's address → the WAN's table
//	                     last-resort marks → unreachable / blackhole / main
//	                     marked for a WAN whose table is empty → unreachable
//	                     unmarked (the router's own new sockets) → best WAN's table
//	       ─▶ WAN table: default via the WAN's gateway
//	       ─▶ nft postrouting: masquerade per WAN
package plan

import (
	"cmp"
	"fmt"
	"math"
	"math/bits"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/multiwan/multiwan/internal/config"
)

// TableName is the nft table multiwan owns (family inet).
const TableName = "multiwan"

// State is a WAN's health as the planner sees it.
type State string

// Health states, as in `status --json`.
const (
	StateUp       State = "up"
	StateDegraded State = "degraded"
	StateDown     State = "down"
	StateUnknown  State = "unknown"
)

// Health maps WAN names to their state. A WAN missing from the map is
// unknown.
type Health map[string]State

// Link is what the kernel says about a WAN's interface.
type Link struct {
	// Exists is true when the interface is present.
	Exists bool
	// Up is true when the interface is administratively up and has carrier.
	Up bool
	// Addrs are the interface's addresses with their prefix length.
	Addrs []netip.Prefix
	// Gateway is the learned next hop for `gateway: auto`; invalid when none
	// is known. Gateway6 is the same for `gateway6: auto`, often
	// link-local.
	Gateway, Gateway6 netip.Addr
	// PointToPoint is true for links that need no gateway (PPP, tunnels).
	PointToPoint bool
}

// Links maps WAN names to what is observed of their interfaces.
type Links map[string]Link

// Offsets of each group of ip rules from the configured base priority.
const (
	prioSuppress   = 0
	prioMark       = 100 // + WAN id
	prioSource     = 200 // + WAN id
	prioLastResort = 300 // + 0 unreachable, 1 blackhole, 2 main
	prioMarkDead   = 400 // + WAN id
	prioLocal      = 500
)

// Plan computes the desired kernel state for cfg when the WANs' health and
// links are as given, with override naming the WAN a user prefers (`multiwan
// use`) or empty for the automatic choice. cfg must be valid (config.Parse).
func Plan(cfg *config.Config, health Health, links Links, override string) *Desired {
	p := &planner{cfg: cfg, health: health, links: links, override: override}
	return p.plan()
}

type planner struct {
	cfg      *config.Config
	health   Health
	links    Links
	override string
	d        *Desired
}

// wanInfo is a WAN's place in the plan.
type wanInfo struct {
	cfg  *config.WAN
	id   int    // 1-based, config order
	mark uint32 // id deposited into the id bits of the mask
	// Per address family, indexed by fam (v4, v6):
	gateway [2]netip.Addr
	routed  [2]bool // its table has a default route
	state   [2]State
}

// usable reports whether new connections of the family may go to the WAN.
func (w *wanInfo) usable(f fam) bool { return w.state[f] != StateDown }

// fam indexes per-family data: v4 or v6.
type fam int

const (
	v4 fam = iota
	v6
)

// Key6 is the key of a WAN's IPv6 health in Health; its IPv4 health is
// under its name. A WAN is tracked per family: it can be up for one and
// down for the other.
func Key6(wan string) string { return wan + "/ipv6" }

func (f fam) String() string { return [...]string{"ipv4", "ipv6"}[f] }
func (f fam) ip() string     { return [...]string{"ip", "ip6"}[f] }
func (f fam) addrType() string {
	return [...]string{"ipv4_addr", "ipv6_addr"}[f]
}
func (f fam) family() int { return [...]int{4, 6}[f] }
func (f fam) any() netip.Prefix {
	return [...]netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}[f]
}
func (f fam) has(a netip.Addr) bool { return a.Is4() == (f == v4) }

func (p *planner) plan() *Desired {
	cfg := p.cfg
	mask := cfg.MarkMask
	movable := uint32(1) << (31 - bits.LeadingZeros32(mask))
	idMask := mask &^ movable
	n := len(cfg.WANs)
	d := &Desired{
		Marks:           map[string]uint32{},
		States:          map[string]State{},
		Mask:            mask,
		IDMask:          idMask,
		MovableBit:      movable,
		UnreachableMark: deposit(uint32(n+1), idMask),
		BlackholeMark:   deposit(uint32(n+2), idMask),
		MainMark:        deposit(uint32(n+3), idMask),
	}
	p.d = d

	wans := make([]*wanInfo, n)
	byName := map[string]*wanInfo{}
	for i := range cfg.WANs {
		w := &cfg.WANs[i]
		link := p.links[w.Name]
		wi := &wanInfo{cfg: w, id: i + 1, mark: deposit(uint32(i+1), idMask)}
		wi.gateway[v4], wi.gateway[v6] = w.Gateway, w.Gateway6
		if w.GatewayAuto {
			wi.gateway[v4] = link.Gateway
		}
		if w.Gateway6Auto {
			wi.gateway[v6] = link.Gateway6
		}
		up := link.Exists && link.Up
		wi.routed[v4] = up && (wi.gateway[v4].IsValid() || link.PointToPoint)
		wi.routed[v6] = up && w.IPv6 && (wi.gateway[v6].IsValid() || link.PointToPoint)
		for f, key := range [2]string{w.Name, Key6(w.Name)} {
			wi.state[f] = p.health[key]
			if wi.state[f] == "" {
				wi.state[f] = StateUnknown
			}
			if !wi.routed[f] {
				// Without a route the WAN cannot carry anything, whatever
				// the probes said last.
				wi.state[f] = StateDown
			}
		}
		if w.IPv6 {
			d.IPv6 = true
		}
		wans[i] = wi
		byName[w.Name] = wi
		d.Marks[w.Name] = wi.mark
		d.States[w.Name] = wi.state[v4]
		if w.IPv6 {
			d.States[Key6(w.Name)] = wi.state[v6]
		}
	}

	for _, pol := range cfg.Policies {
		d.Policies = append(d.Policies, p.choose(&pol, byName, v4))
		if d.IPv6 {
			d.Policies6 = append(d.Policies6, p.choose(&pol, byName, v6))
		}
	}
	d.Best = best(d.Policies, cfg.DefaultPolicy)
	d.Best6 = best(d.Policies6, cfg.DefaultPolicy)

	d.Routes = p.routes(wans)
	d.Rules = p.rules(wans, byName)
	d.Sysctls = p.sysctls(wans)
	d.Table = p.table(wans)
	return d
}

// best is the preferred active WAN of the named policy: the one with the
// largest weight, the first on ties. "" when the policy has none.
func best(choices []PolicyChoice, policy string) string {
	for _, c := range choices {
		if c.Name != policy || len(c.Active) == 0 {
			continue
		}
		b := c.Active[0]
		for _, s := range c.Active[1:] {
			if s.Weight > b.Weight {
				b = s
			}
		}
		return b.WAN
	}
	return ""
}

// deposit spreads the bits of v, lowest first, over the set bits of mask, so
// that marks work with masks that are not contiguous.
func deposit(v, mask uint32) uint32 {
	var out uint32
	for m := mask; m != 0 && v != 0; m &= m - 1 {
		bit := m & -m
		if v&1 != 0 {
			out |= bit
		}
		v >>= 1
	}
	return out
}

// choose decides which members of pol take new connections: the lowest tier
// with a member that is up or unknown (just started, its probes have not
// finished their first rounds: presumed good, so that a restart does not
// move traffic to a backup that happened to answer first); failing that,
// the lowest with a degraded one. A usable override that is a member wins
// outright. A WAN whose carrier returns is down, not unknown, until its
// probes pass (internal/health).
func (p *planner) choose(pol *config.Policy, wans map[string]*wanInfo, f fam) PolicyChoice {
	c := PolicyChoice{Name: pol.Name, Sticky: pol.Sticky}
	if p.override != "" {
		for _, m := range pol.Members {
			if m.WAN == p.override && wans[m.WAN].usable(f) {
				c.Active = []Share{{WAN: m.WAN, Weight: 1, Share: 1}}
				return c
			}
		}
	}
	for _, class := range [][]State{{StateUp, StateUnknown}, {StateDegraded}} {
		in := func(w *wanInfo) bool { return slices.Contains(class, w.state[f]) }
		tier := 0
		for _, m := range pol.Members {
			if in(wans[m.WAN]) && (tier == 0 || m.Tier < tier) {
				tier = m.Tier
			}
		}
		if tier == 0 {
			continue
		}
		total := 0
		for _, m := range pol.Members {
			if m.Tier != tier {
				continue
			}
			c.Tier = append(c.Tier, Share{WAN: m.WAN, Weight: m.Weight})
			if in(wans[m.WAN]) {
				c.Active = append(c.Active, Share{WAN: m.WAN, Weight: m.Weight})
				total += m.Weight
			}
		}
		for i := range c.Active {
			c.Active[i].Share = float64(c.Active[i].Weight) / float64(total)
		}
		return c
	}
	c.LastResort = pol.LastResort
	return c
}

// String says where new connections go, e.g. "isp1 75%, isp2 25%" or
// "no usable WAN: last resort unreachable".
func (c PolicyChoice) String() string {
	if len(c.Active) == 0 {
		return "no usable WAN: last resort " + c.LastResort
	}
	parts := make([]string, len(c.Active))
	for i, s := range c.Active {
		pct := math.Round(s.Share*1000) / 10
		parts[i] = s.WAN + " " + strconv.FormatFloat(pct, 'f', -1, 64) + "%"
	}
	return strings.Join(parts, ", ")
}

// Policy returns the decision for the named policy, or nil.
func (d *Desired) Policy(name string) *PolicyChoice {
	for i := range d.Policies {
		if d.Policies[i].Name == name {
			return &d.Policies[i]
		}
	}
	return nil
}

func (p *planner) routes(wans []*wanInfo) []Route {
	var out []Route
	for _, f := range []fam{v4, v6} {
		for _, w := range wans {
			if !w.routed[f] {
				continue
			}
			r := Route{Family: f.family(), Table: w.cfg.Table, Dst: f.any(), Dev: w.cfg.Interface, Comment: w.cfg.Name}
			if gw := w.gateway[f]; gw.IsValid() && f.has(gw) {
				r.Gateway = gw
			}
			out = append(out, r)
		}
	}
	return out
}

func (p *planner) rules(wans []*wanInfo, byName map[string]*wanInfo) []Rule {
	out := p.familyRules(wans, byName, v4, p.d.Best)
	if p.d.IPv6 {
		out = append(out, p.familyRules(wans, byName, v6, p.d.Best6)...)
	}
	return out
}

// familyRules are the ip rules of one address family.
func (p *planner) familyRules(wans []*wanInfo, byName map[string]*wanInfo, f fam, best string) []Rule {
	base := p.cfg.RulePriority
	d := p.d
	rule := func(prio int, comment string) Rule {
		return Rule{Family: f.family(), Priority: base + prio, Action: "lookup", SuppressPrefixLen: -1, Comment: comment}
	}
	var out []Rule
	r := rule(prioSuppress, "main first, but not its default routes: LAN, VPN and link routes win")
	r.Table, r.SuppressPrefixLen = TableMain, 0
	out = append(out, r)
	for _, w := range wans {
		if f == v6 && !w.cfg.IPv6 {
			continue
		}
		r := rule(prioMark+w.id, "connections of "+w.cfg.Name)
		r.Mark, r.Mask, r.Table = w.mark, d.IDMask, w.cfg.Table
		out = append(out, r)
	}
	for _, w := range wans {
		if f == v6 && !w.cfg.IPv6 {
			continue
		}
		for _, a := range p.wanAddrs(w, f) {
			r := rule(prioSource+w.id, "sockets bound to "+w.cfg.Name+"'s address")
			r.Src, r.Table = netip.PrefixFrom(a, a.BitLen()), w.cfg.Table
			out = append(out, r)
		}
		if f == v6 {
			for _, pfx := range w.cfg.Prefixes6 {
				r := rule(prioSource+w.id, "prefix routed by "+w.cfg.Name+" without NAT")
				r.Src, r.Table = pfx, w.cfg.Table
				out = append(out, r)
			}
		}
	}
	for i, lr := range []struct {
		mark   uint32
		action string
	}{{d.UnreachableMark, "unreachable"}, {d.BlackholeMark, "blackhole"}, {d.MainMark, "lookup"}} {
		r := rule(prioLastResort+i, "last resort of a policy with no usable WAN")
		r.Mark, r.Mask, r.Action = lr.mark, d.IDMask, lr.action
		if lr.action == "lookup" {
			r.Table = TableMain
		}
		out = append(out, r)
	}
	for _, w := range wans {
		r := rule(prioMarkDead+w.id, "never leak "+w.cfg.Name+"'s connections through another WAN")
		r.Mark, r.Mask, r.Action = w.mark, d.IDMask, "unreachable"
		out = append(out, r)
	}
	if p.cfg.LocalTraffic && best != "" {
		r := rule(prioLocal, "the router's own new sockets: source address of the best WAN")
		r.Mark, r.Mask, r.Table = 0, d.IDMask, byName[best].cfg.Table
		out = append(out, r)
	}
	slices.SortStableFunc(out, func(a, b Rule) int { return cmp.Compare(a.Priority, b.Priority) })
	return out
}

// wanAddrs are the WAN interface's addresses of family f that can source
// traffic to the internet: not link-local.
func (p *planner) wanAddrs(w *wanInfo, f fam) []netip.Addr {
	link := p.links[w.cfg.Name]
	if !link.Exists {
		return nil
	}
	var out []netip.Addr
	for _, a := range link.Addrs {
		if f.has(a.Addr()) && !a.Addr().IsLinkLocalUnicast() {
			out = append(out, a.Addr())
		}
	}
	return out
}

func (p *planner) sysctls(wans []*wanInfo) []Sysctl {
	out := []Sysctl{
		{Key: "net/ipv4/ip_forward", Value: "1", Comment: "route between LAN and WANs"},
		{Key: "net/ipv4/fwmark_reflect", Value: "1", Comment: "kernel-made replies (ICMP errors, RSTs) carry the connection's mark"},
		{Key: "net/ipv4/tcp_fwmark_accept", Value: "1", Comment: "accepted sockets keep the mark of the WAN the SYN came in on"},
	}
	for _, w := range wans {
		if !p.links[w.cfg.Name].Exists {
			continue
		}
		dir := "net/ipv4/conf/" + w.cfg.Interface + "/"
		out = append(out,
			Sysctl{Key: dir + "rp_filter", Value: "2", Loosen: true, Comment: "not strict: replies may arrive on a WAN other than the main table's"},
			Sysctl{Key: dir + "src_valid_mark", Value: "1", Comment: "reverse-path checks honour the fwmark"},
		)
	}
	if !p.d.IPv6 {
		return out
	}
	out = append(out,
		Sysctl{Key: "net/ipv6/conf/all/forwarding", Value: "1", Comment: "route IPv6 between LAN and WANs"},
		Sysctl{Key: "net/ipv6/fwmark_reflect", Value: "1", Comment: "kernel-made IPv6 replies carry the connection's mark"},
	)
	for _, w := range wans {
		if !w.cfg.IPv6 || !w.cfg.Gateway6Auto || !p.links[w.cfg.Name].Exists {
			continue
		}
		out = append(out, Sysctl{Key: "net/ipv6/conf/" + w.cfg.Interface + "/accept_ra", Value: "2",
			Comment: "keep learning the gateway from router advertisements while forwarding"})
	}
	return out
}

// hex formats a mark the way nft prints it back.
func hex(v uint32) string { return fmt.Sprintf("0x%08x", v) }

func (p *planner) table(wans []*wanInfo) Table {
	d := p.d
	cfg := p.cfg
	t := Table{Family: "inet", Name: TableName}
	keepMask := hex(^d.Mask)
	idMask := hex(d.IDMask)

	// Per-WAN chains: assign a connection to the WAN (keeping the movable
	// bit and every bit outside the mask), and restore its mark onto a
	// packet. nft 1.0 cannot combine two registers, hence one small chain
	// per WAN reached through verdict maps.
	var restore, byMark, byIIF, bySrc6 []Element
	var byAddr, byNet [2][]Element
	var natIfs, nat6Ifs, wanIfs []Element
	seenAddr := map[netip.Addr]bool{}
	var wanChains []Chain
	for _, w := range wans {
		m := hex(w.mark)
		assign := "wan_" + w.cfg.Name
		back := "restore_" + w.cfg.Name
		wanChains = append(wanChains,
			Chain{Name: assign, Comment: "new connection leaves by " + w.cfg.Name, Rules: []string{
				fmt.Sprintf("ct mark set ct mark and %s or %s", hex(^d.IDMask), m),
				fmt.Sprintf("meta mark set meta mark and %s or %s", keepMask, m),
			}},
			Chain{Name: back, Rules: []string{
				fmt.Sprintf("meta mark set meta mark and %s or %s", keepMask, m),
			}},
		)
		restore = append(restore, Element{Key: m, Value: "goto " + back})
		byMark = append(byMark, Element{Key: m, Value: "goto " + assign})
		byIIF = append(byIIF, Element{Key: quote(w.cfg.Interface), Value: "goto " + assign})
		for _, f := range []fam{v4, v6} {
			best := d.Best
			if f == v6 {
				best = d.Best6
			}
			// The router's unbound sockets take their source address
			// from the best WAN (the catch-all rule), so that address
			// cannot tell a socket bound on purpose from one that was
			// not: it is left to the policy (return). Sockets bound to
			// another WAN's address are kept on that WAN.
			verdict := "goto " + assign
			if cfg.LocalTraffic && w.cfg.Name == best {
				verdict = "return"
			}
			for _, a := range p.wanAddrs(w, f) {
				if !seenAddr[a] {
					seenAddr[a] = true
					byAddr[f] = append(byAddr[f], Element{Key: a.String(), Value: verdict})
				}
			}
		}
		for _, a := range p.links[w.cfg.Name].Addrs {
			if a.Addr().IsLinkLocalUnicast() || a.Bits() == a.Addr().BitLen() {
				continue
			}
			f := v4
			if a.Addr().Is6() {
				f = v6
			}
			byNet[f] = append(byNet[f], Element{Key: a.Masked().String(), Value: "goto " + assign})
		}
		for _, pfx := range w.cfg.Prefixes6 {
			bySrc6 = append(bySrc6, Element{Key: pfx.String(), Value: "goto " + assign})
		}
		wanIfs = append(wanIfs, Element{Key: quote(w.cfg.Interface)})
		if w.cfg.NAT == "masquerade" {
			natIfs = append(natIfs, Element{Key: quote(w.cfg.Interface)})
		}
		if w.cfg.IPv6 && w.cfg.NAT6 == "masquerade" {
			nat6Ifs = append(nat6Ifs, Element{Key: quote(w.cfg.Interface)})
		}
	}
	byNet[v4], byNet[v6], bySrc6 = mergeNets(byNet[v4]), mergeNets(byNet[v6]), mergeNets(bySrc6)

	t.Sets = append(t.Sets,
		Set{Name: "restore", Type: "mark", Map: "verdict", Elements: restore,
			Comment: "connection's WAN id → copy it onto the packet"},
		Set{Name: "wan_mark", Type: "mark", Map: "verdict", Elements: byMark,
			Comment: "packet already marked for a WAN (probes, other tables)"},
		Set{Name: "wan_iif", Type: "ifname", Map: "verdict", Elements: byIIF,
			Comment: "connection arrived on a WAN: replies leave by it"},
		Set{Name: "wan_net", Type: "ipv4_addr", Map: "verdict", Flags: []string{"interval"}, Elements: byNet[v4],
			Comment: "destination on a WAN's own subnet"},
		Set{Name: "wan_ifs", Type: "ifname", Elements: wanIfs,
			Comment: "every WAN interface"},
		Set{Name: "nat_oif", Type: "ifname", Elements: natIfs,
			Comment: "WAN interfaces that masquerade"},
	)
	if d.IPv6 {
		t.Sets = append(t.Sets,
			Set{Name: "wan_net6", Type: "ipv6_addr", Map: "verdict", Flags: []string{"interval"}, Elements: byNet[v6],
				Comment: "IPv6 destination on a WAN's own subnet"},
			Set{Name: "wan_src6", Type: "ipv6_addr", Map: "verdict", Flags: []string{"interval"}, Elements: bySrc6,
				Comment: "source in a prefix a WAN routes without NAT: only that WAN can carry it"},
			Set{Name: "nat6_oif", Type: "ifname", Elements: nat6Ifs,
				Comment: "WAN interfaces that masquerade IPv6 (NAT66)"},
		)
	}

	steer := Chain{Name: "steer", Comment: "rules in order, then the default policy"}
	for _, r := range cfg.Rules {
		sets, rules := p.ruleMatch(r)
		t.Sets = append(t.Sets, sets...)
		for _, m := range rules {
			if r.Movable {
				m += fmt.Sprintf(" ct mark set ct mark or %s", hex(d.MovableBit))
			}
			steer.Rules = append(steer.Rules, strings.TrimSpace(m+" goto "+policyChain(r.Policy))+
				fmt.Sprintf(" comment %q", "rule "+r.Name))
		}
	}
	steer.Rules = append(steer.Rules, "goto "+policyChain(cfg.DefaultPolicy))

	ctNew := fmt.Sprintf("ct state new ct mark and %s == 0", idMask)
	if !d.IPv6 {
		// No WAN carries IPv6: multiwan leaves IPv6 to the main table.
		ctNew += " meta nfproto ipv4"
	}
	pre := Chain{Name: "prerouting", Type: "filter", Hook: "prerouting", Priority: "mangle", Rules: []string{
		fmt.Sprintf("ct mark and %s vmap @restore", idMask),
		ctNew + " jump identify",
		ctNew + " fib daddr type != local jump steer",
	}}
	out := Chain{Name: "output", Type: "route", Hook: "output", Priority: "mangle", Rules: []string{
		fmt.Sprintf("ct mark and %s vmap @restore", idMask),
		ctNew + " jump identify",
	}}
	if cfg.LocalTraffic {
		out.Rules = append(out.Rules, ctNew+" jump steer")
	}
	identify := Chain{Name: "identify", Comment: "connections whose WAN is known before any rule", Rules: []string{
		fmt.Sprintf("meta mark and %s vmap @wan_mark", idMask),
		"iifname vmap @wan_iif",
		"jump bound",
		"ip daddr vmap @wan_net",
	}}
	post := Chain{Name: "postrouting", Type: "nat", Hook: "postrouting", Priority: "srcnat", Rules: []string{
		"meta nfproto ipv4 oifname @nat_oif masquerade",
	}}
	if d.IPv6 {
		identify.Rules = append(identify.Rules, "ip6 daddr vmap @wan_net6", "ip6 saddr vmap @wan_src6")
		post.Rules = append(post.Rules, "meta nfproto ipv6 oifname @nat6_oif masquerade")
	}
	// A new connection that neither came from a WAN nor leaves by one (LAN
	// to LAN, router to LAN) carries no WAN: dropping the mark here keeps
	// a dead WAN's cleanup from cutting it.
	inside := Chain{Name: "inside", Type: "filter", Hook: "postrouting", Priority: "mangle", Rules: []string{
		fmt.Sprintf("ct state new ct mark and %s != 0 iifname != @wan_ifs oifname != @wan_ifs ct mark set ct mark and %s", idMask, keepMask),
	}}
	// The router's WAN addresses, as one anonymous map in a chain of its
	// own: the best WAN changes at every failover, and a chain whose rule
	// decides for every address it lists can take its new version ahead of
	// the old one (see Chain.Terminal), where a named map would have to
	// delete elements, which costs the kernel a grace period.
	bound := Chain{Name: "bound", Terminal: true, Comment: "router socket bound to a WAN's address"}
	for _, f := range []fam{v4, v6} {
		if len(byAddr[f]) == 0 {
			continue
		}
		els := make([]string, len(byAddr[f]))
		for i, e := range byAddr[f] {
			els[i] = e.String()
		}
		bound.Rules = append(bound.Rules, f.ip()+" saddr vmap { "+strings.Join(els, ", ")+" }")
	}
	t.Chains = append(t.Chains, pre, out, inside, post, identify, bound, steer)

	for i, c := range d.Policies {
		var c6 *PolicyChoice
		if d.IPv6 {
			c6 = &d.Policies6[i]
		}
		t.Chains = append(t.Chains, p.policyChain(c, c6))
	}
	t.Chains = append(t.Chains, wanChains...)
	return t
}

func policyChain(name string) string {
	if wan, ok := strings.CutPrefix(name, "wan:"); ok {
		return "pin_" + wan
	}
	return "policy_" + name
}

// Buckets is how many hash buckets `sticky: source` spreads source
// addresses over. Many more than any weight total, so shares stay within a
// tenth of a percent of the weights.
const Buckets = 1024

// bucketMap gives the hash buckets to the members of the chosen tier in
// proportion to their weights, as contiguous ranges in config order, then
// hands the ranges of members that are not active to the active ones, again
// by weight. A host on a surviving WAN thus keeps it when another member
// goes down or comes back; only the dead member's hosts move.
func bucketMap(tier, active []Share) string {
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
	var els []string
	for start := 0; start < Buckets; {
		end := start
		for end+1 < Buckets && owner[end+1] == owner[start] {
			end++
		}
		key := fmt.Sprint(start)
		if end > start {
			key = fmt.Sprintf("%d-%d", start, end)
		}
		els = append(els, key+" : goto wan_"+owner[start])
		start = end + 1
	}
	return fmt.Sprintf("mod %d seed %#x vmap { %s }", Buckets, hashSeed, strings.Join(els, ", "))
}

// hashSeed is the fixed jhash seed of `sticky: source`. Without one the
// kernel draws a random seed for every rule it creates, and each new version
// of the policy's rule (every switch) would move every host.
const hashSeed = 0x6d77616e // "mwan"

// policyChain renders a policy decision: one WAN, a weighted random or
// source-hashed choice among several, or the last resort.
func (p *planner) policyChain(c4 PolicyChoice, c6 *PolicyChoice) Chain {
	// The comment must not depend on the decision: a chain's comment is
	// part of its shape, and a switch must keep the shape (see
	// kernel.NFT.Apply).
	ch := Chain{Name: policyChain(c4.Name), Terminal: true, Comment: "policy " + c4.Name + ", sticky " + c4.Sticky}
	switch {
	case c6 == nil:
		// IPv4 only (steer is not reached by IPv6 packets).
		ch.Rules = p.decision(c4, v4, "")
	case c4.Sticky == "source" || c4.String() != c6.String():
		// The families decide apart: each rule is terminal for its own.
		ch.Rules = append(p.decision(c4, v4, "meta nfproto ipv4 "), p.decision(*c6, v6, "meta nfproto ipv6 ")...)
	default:
		ch.Rules = p.decision(c4, v4, "")
	}
	return ch
}

// decision renders one family's choice for a policy: one WAN, a weighted
// random or source-hashed choice among several, or the last resort. match
// restricts the rules to a family ("meta nfproto ipv4 ") or is empty.
func (p *planner) decision(c PolicyChoice, f fam, match string) []string {
	d := p.d
	switch {
	case len(c.Active) == 1:
		return []string{match + "goto wan_" + c.Active[0].WAN}
	case len(c.Active) > 1 && c.Sticky == "source":
		if match == "" {
			match = "meta nfproto " + f.String() + " "
		}
		return []string{match + "jhash " + f.ip() + " saddr " + bucketMap(c.Tier, c.Active)}
	case len(c.Active) > 1:
		var total int
		var els []string
		for _, s := range c.Active {
			first := total
			total += s.Weight
			key := fmt.Sprint(first)
			if s.Weight > 1 {
				key = fmt.Sprintf("%d-%d", first, total-1)
			}
			els = append(els, key+" : goto wan_"+s.WAN)
		}
		return []string{match + fmt.Sprintf("numgen random mod %d vmap { %s }", total, strings.Join(els, ", "))}
	default:
		mark := map[string]uint32{"unreachable": d.UnreachableMark, "blackhole": d.BlackholeMark, "main": d.MainMark}[c.LastResort]
		// Only the packet is marked, not the connection: its next packet
		// is classified again and finds a WAN as soon as one is back.
		return []string{match + fmt.Sprintf("meta mark set meta mark and %s or %s return", hex(^d.Mask), hex(mark))}
	}
}

func quote(s string) string { return `"` + s + `"` }

// ruleMatch renders the match part of a steering rule. Address and port lists
// become named sets, so a rule costs one nft rule per address family however
// long its lists are.
func (p *planner) ruleMatch(r config.Rule) ([]Set, []string) {
	var sets []Set
	var common []string
	if len(r.IIF) > 0 {
		var els []Element
		for _, i := range slices.Compact(slices.Sorted(slices.Values(r.IIF))) {
			els = append(els, Element{Key: quote(i)})
		}
		name := "r_" + setName(r.Name) + "_iif"
		sets = append(sets, Set{Name: name, Type: "ifname", Elements: els})
		common = append(common, "iifname @"+name)
	}
	if r.Proto != "" {
		common = append(common, "meta l4proto "+r.Proto)
	}
	for _, pp := range []struct {
		dir   string
		ports []config.PortRange
	}{{"sport", r.SrcPort}, {"dport", r.DstPort}} {
		if len(pp.ports) == 0 {
			continue
		}
		name := "r_" + setName(r.Name) + "_" + pp.dir
		s := Set{Name: name, Type: "inet_service", Flags: []string{"interval"}, Elements: mergePorts(pp.ports)}
		sets = append(sets, s)
		common = append(common, "th "+pp.dir+" @"+name)
	}

	src4, src6 := split(r.Src)
	dst4, dst6 := split(r.Dst)
	var rules []string
	family := func(fam, ip, typ string, src, dst []netip.Prefix) {
		m := []string{}
		if len(r.Src) > 0 || len(r.Dst) > 0 {
			if (len(r.Src) > 0 && len(src) == 0) || (len(r.Dst) > 0 && len(dst) == 0) {
				return // the rule cannot match this family
			}
		} else {
			if fam == "6" {
				return // no addresses: one rule covers both families
			}
			rules = append(rules, strings.Join(common, " "))
			return
		}
		for _, a := range []struct {
			dir  string
			list []netip.Prefix
		}{{"saddr", src}, {"daddr", dst}} {
			if len(a.list) == 0 {
				continue
			}
			name := "r_" + setName(r.Name) + "_" + map[string]string{"saddr": "src", "daddr": "dst"}[a.dir] + fam
			sets = append(sets, Set{Name: name, Type: typ, Flags: []string{"interval"}, Elements: prefixElements(a.list)})
			m = append(m, ip+" "+a.dir+" @"+name)
		}
		rules = append(rules, strings.Join(append(m, common...), " "))
	}
	family("4", "ip", "ipv4_addr", src4, dst4)
	family("6", "ip6", "ipv6_addr", src6, dst6)
	return sets, rules
}

func setName(rule string) string { return strings.ReplaceAll(rule, "-", "_") }

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
