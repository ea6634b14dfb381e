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
//
// Where things are: plan.go decides (WAN states, policy choices) and builds
// the ip rules, routes and sysctls; table.go builds the nft table, one
// builder per group of chains and sets; names.go names every nft object;
// trace.go follows a packet through a Desired; underlay.go pins tunnel
// WANs' outer traffic to their underlays.
package plan

import (
	"cmp"
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
	// Default6 is true when someone else (router advertisements, a DHCPv6
	// client) installed an IPv6 default route through the interface: it
	// carries IPv6, whether or not the WAN says so (gateway6).
	Default6 bool
	// Tunnel is what the tunnel's software says about the interface
	// (read from WireGuard: its own mark, port and peers' endpoints);
	// nil when nothing was read. Only WANs with underlays are read.
	Tunnel *TunnelInfo
	// DNS are the resolvers learned for the WAN's `dns: auto` (its DHCP
	// lease, router advertisements), in the order they were given;
	// DNSProblem says what went wrong learning them (no lease yet, a lease
	// without resolvers, bogus ones dropped), for a note.
	DNS        []netip.Addr
	DNSProblem string
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
	dnsp     dnsPlan
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

	// A tunnel with no usable underlay is down, whatever its probes say,
	// before any policy chooses (underlay.go).
	p.overlays(wans, byName)

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
	p.dnsp = p.dns()
	d.Resolvers = p.resolvers(byName, p.dnsp)
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

// rules are the policy-routing rules, IPv4 then IPv6 (when a WAN carries
// it). See README "How it works in the kernel" for the groups.
func (p *planner) rules(wans []*wanInfo, byName map[string]*wanInfo) []Rule {
	out := p.familyRules(wans, byName, v4, p.d.Best)
	if p.d.IPv6 {
		out = append(out, p.familyRules(wans, byName, v6, p.d.Best6)...)
	}
	return out
}

// ipRules makes the rules of one address family at priorities relative to
// the configured base.
type ipRules struct {
	f    fam
	base int
}

func (r ipRules) rule(prio int, comment string) Rule {
	return Rule{Family: r.f.family(), Priority: r.base + prio, Action: "lookup", SuppressPrefixLen: -1, Comment: comment}
}

// familyRules are the ip rules of one address family, one group per
// priority offset (prio* constants), in priority order.
func (p *planner) familyRules(wans []*wanInfo, byName map[string]*wanInfo, f fam, best string) []Rule {
	r := ipRules{f: f, base: p.cfg.RulePriority}
	out := []Rule{r.suppressRule()}
	out = append(out, p.markRules(r, wans)...)
	out = append(out, p.sourceRules(r, wans)...)
	out = append(out, p.lastResortRules(r)...)
	out = append(out, p.deadMarkRules(r, wans)...)
	out = append(out, p.localRules(r, byName, best)...)
	slices.SortStableFunc(out, func(a, b Rule) int { return cmp.Compare(a.Priority, b.Priority) })
	return out
}

// suppressRule decides every packet whose destination the main table routes
// more specifically than by a default route: LAN, VPN and link routes win
// over any WAN, a default route someone else installed in main does not.
func (r ipRules) suppressRule() Rule {
	rule := r.rule(prioSuppress, "main first, but not its default routes: LAN, VPN and link routes win")
	rule.Table, rule.SuppressPrefixLen = TableMain, 0
	return rule
}

// markRules send a packet marked with a WAN's id (a connection nft gave to
// the WAN) to the WAN's table. IPv6 only for the WANs that carry it.
func (p *planner) markRules(r ipRules, wans []*wanInfo) []Rule {
	var out []Rule
	for _, w := range wans {
		if r.f == v6 && !w.cfg.IPv6 {
			continue
		}
		rule := r.rule(prioMark+w.id, "connections of "+w.cfg.Name)
		rule.Mark, rule.Mask, rule.Table = w.mark, p.d.IDMask, w.cfg.Table
		out = append(out, rule)
	}
	return out
}

// sourceRules send a packet from a WAN's address (a socket bound to it,
// before nft has marked anything) and, for IPv6, from a prefix the WAN
// routes without NAT, to the WAN's table.
func (p *planner) sourceRules(r ipRules, wans []*wanInfo) []Rule {
	var out []Rule
	for _, w := range wans {
		if r.f == v6 && !w.cfg.IPv6 {
			// No gateway6: the WAN's IPv6 is not multiwan's; its sockets
			// are routed by the main table, not caught for the best WAN.
			for _, a := range p.wanAddrs(w, r.f) {
				rule := r.rule(prioSource+w.id, "unmarked sockets of "+w.cfg.Name+"'s IPv6 address: not managed (no gateway6)")
				rule.Src, rule.Table = netip.PrefixFrom(a, a.BitLen()), TableMain
				rule.Mark, rule.Mask = 0, p.d.IDMask
				out = append(out, rule)
			}
			continue
		}
		for _, a := range p.wanAddrs(w, r.f) {
			rule := r.rule(prioSource+w.id, "unmarked sockets bound to "+w.cfg.Name+"'s address")
			rule.Src, rule.Table = netip.PrefixFrom(a, a.BitLen()), w.cfg.Table
			rule.Mark, rule.Mask = 0, p.d.IDMask
			out = append(out, rule)
		}
		if r.f == v6 {
			for _, pfx := range w.cfg.Prefixes6 {
				rule := r.rule(prioSource+w.id, "unmarked packets from a prefix routed by "+w.cfg.Name+" without NAT")
				rule.Src, rule.Table = pfx, w.cfg.Table
				rule.Mark, rule.Mask = 0, p.d.IDMask
				out = append(out, rule)
			}
		}
	}
	return out
}

// lastResortRules decide the packets a policy with no usable WAN marked
// with one of the last-resort marks: unreachable, blackhole, or the main
// table.
func (p *planner) lastResortRules(r ipRules) []Rule {
	d := p.d
	var out []Rule
	for i, lr := range []struct {
		mark   uint32
		action string
	}{{d.UnreachableMark, "unreachable"}, {d.BlackholeMark, "blackhole"}, {d.MainMark, "lookup"}} {
		rule := r.rule(prioLastResort+i, "last resort of a policy with no usable WAN")
		rule.Mark, rule.Mask, rule.Action = lr.mark, d.IDMask, lr.action
		if lr.action == "lookup" {
			rule.Table = TableMain
		}
		out = append(out, rule)
	}
	return out
}

// deadMarkRules stop a packet marked with a WAN's id that the WAN's table
// could not route (the WAN is down, or does not carry the family): it is
// unreachable rather than leaking through another WAN or main's default
// route. Every WAN, in both families.
func (p *planner) deadMarkRules(r ipRules, wans []*wanInfo) []Rule {
	var out []Rule
	for _, w := range wans {
		rule := r.rule(prioMarkDead+w.id, "never leak "+w.cfg.Name+"'s connections through another WAN")
		rule.Mark, rule.Mask, rule.Action = w.mark, p.d.IDMask, "unreachable"
		out = append(out, rule)
	}
	return out
}

// localRules send the router's own unmarked packets (a new socket, before
// nft has marked it) to the best WAN's table, so that they get a route and
// a source address at all; the output chain then marks them by policy, and
// masquerade fixes the source when the policy picks another WAN. None when
// local traffic is not steered or no WAN is usable.
func (p *planner) localRules(r ipRules, byName map[string]*wanInfo, best string) []Rule {
	if !p.cfg.LocalTraffic {
		return nil
	}
	comment := "the router's own new sockets: source address of the best WAN"
	if best == "" {
		// The default policy has no usable WAN (underlay.go: a tunnel
		// that is down must still send the outer packets that bring it
		// back up).
		best = p.usableForSource(r.f, byName)
		comment = "the router's own new sockets: source address of a usable WAN (none of the default policy's is)"
	}
	if best == "" {
		return nil
	}
	rule := r.rule(prioLocal, comment)
	rule.Mark, rule.Mask, rule.Table = 0, p.d.IDMask, byName[best].cfg.Table
	return []Rule{rule}
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
