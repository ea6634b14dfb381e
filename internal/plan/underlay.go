package plan

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/multiwan/multiwan/internal/config"
)

// Tunnel WANs (overlays). A WAN whose interface is a tunnel names the WANs
// its outer packets ride (`underlay:`, in order of preference). The router
// sends those outer packets itself, so they meet the output hook as new
// connections like any of its own traffic; left to the policy they could
// be sent into a tunnel, even their own (a loop the guard catches), or by
// the main table's default route. Instead:
//
//   - ChainUnderlay, jumped to from ChainOutput after ChainIdentify (a
//     probe's SO_MARK still wins) and before ChainBound and ChainSteer,
//     recognises the outer packets of each tunnel by the tunnel's own
//     fwmark (tunnel_mark, or WireGuard's fwmark read from the interface),
//     by its listen port (read from WireGuard) and by its peers' endpoints
//     (endpoint:, or read from WireGuard), UDP, and sends them to the
//     first usable underlay's WAN chain, which writes that WAN into the
//     connection mark: every later packet of the outer flow is restored
//     to it. When no underlay is usable they fail (the unreachable
//     last-resort mark, accepted as it is): never into a tunnel, never
//     by the main table.
//   - A tunnel with no usable underlay is down, whatever its probes say,
//     so the policies drop it; Desired.Causes says why.
//   - A learned fwmark that overlaps mark_mask cannot be honoured without
//     clobbering it: the tunnel's outer packets are then left alone (an
//     exact-mark accept ahead of everything) and Overlay.Problem says so.
//
// The packets of an outer flow keep the underlay of their connection mark:
// when the tunnel moves to another underlay, the daemon deletes the outer
// flow's conntrack entries (the old underlay's entries all go when it dies;
// a move between two usable underlays deletes the outer flow's alone), so
// its next packet is classified, and NATed, again.

// TunnelInfo is what a tunnel's software says about its interface (read
// from WireGuard by the daemon): the mark it puts on its outer packets,
// the UDP port it sends them from, and where its peers are.
type TunnelInfo struct {
	// Kind names the implementation: "wireguard" (the kernel's) or
	// "wireguard-go" (userspace, through its UAPI socket).
	Kind string
	// ListenPort is the UDP port the outer packets leave from; 0 unknown.
	ListenPort uint16
	// FwMark is the mark on the tunnel's outer packets; 0 for none.
	FwMark uint32
	// Endpoints are the peers' current endpoints, at most
	// MaxLearnedEndpoints of them, in the order read.
	Endpoints []netip.AddrPort
	// Peers is how many peers the interface has (with or without an
	// endpoint); more than len(Endpoints) when some were not taken.
	Peers int
}

// MaxLearnedEndpoints bounds the endpoints taken from one tunnel: an
// overlay uplink has one peer, or a few; the listen port and the tunnel
// mark still recognise the outer packets to peers beyond it.
const MaxLearnedEndpoints = 16

// Overlay is where a tunnel WAN's outer traffic goes in a plan.
type Overlay struct {
	WAN string
	// Underlays are the configured underlays, in order.
	Underlays []string
	// Underlay is the first usable one, which the outer traffic rides;
	// empty when none is usable (the tunnel is down and its outer
	// packets fail).
	Underlay string
	// How the outer packets are recognised: the tunnel's marks (the
	// configured tunnel_mark and the learned one, when they differ),
	// the learned listen port (0 unknown) and the peers' endpoints
	// (configured and learned; port 0: any).
	Marks      []uint32
	ListenPort uint16
	Endpoints  []netip.AddrPort
	// LeftAlone is a learned mark that clashes with mark_mask: packets
	// carrying it are accepted untouched, and Problem says why.
	LeftAlone uint32
	Problem   string
}

// Overlay returns the named tunnel WAN's overlay decision, or nil.
func (d *Desired) Overlay(wan string) *Overlay {
	for i := range d.Overlays {
		if d.Overlays[i].WAN == wan {
			return &d.Overlays[i]
		}
	}
	return nil
}

// overlays decides, for every WAN with underlays, which underlay its outer
// traffic rides, marks the tunnels without a usable underlay down (in
// both families: the tunnel carries nothing without its outer packets),
// and records both in the Desired. Tunnels may ride tunnels: an underlay
// is usable when its own effective state is (config refuses cycles).
func (p *planner) overlays(wans []*wanInfo, byName map[string]*wanInfo) {
	d := p.d
	decided := map[string]bool{}
	var decide func(w *wanInfo)
	decide = func(w *wanInfo) {
		if decided[w.cfg.Name] || len(w.cfg.Underlays) == 0 {
			return
		}
		decided[w.cfg.Name] = true
		o := p.recognise(w)
		f := outerFamily(o.Endpoints)
		var down []string
		for _, name := range w.cfg.Underlays {
			u := byName[name]
			if u == nil {
				continue
			}
			decide(u)
			if u.usable(f) {
				o.Underlay = name
				break
			}
			down = append(down, name)
		}
		if o.Underlay == "" {
			cause := "underlay " + strings.Join(down, ", ") + " down"
			if len(down) > 1 {
				cause = "underlays " + strings.Join(down, ", ") + " down"
			}
			if d.Causes == nil {
				d.Causes = map[string]string{}
			}
			for f, key := range [2]string{w.cfg.Name, Key6(w.cfg.Name)} {
				w.state[f] = StateDown
				if f == int(v4) || w.cfg.IPv6 {
					d.States[key] = StateDown
					d.Causes[key] = cause
				}
			}
		}
		d.Overlays = append(d.Overlays, o)
	}
	for _, w := range wans {
		decide(w)
	}
	// Config order, whatever order the recursion decided them in.
	slices.SortStableFunc(d.Overlays, func(a, b Overlay) int {
		return byName[a.WAN].id - byName[b.WAN].id
	})
}

// recognise gathers what tells the tunnel's outer packets: its configured
// and learned marks (a learned mark that clashes with mark_mask is left
// alone instead), its learned listen port, its configured and learned
// endpoints, without repeats.
func (p *planner) recognise(w *wanInfo) Overlay {
	o := Overlay{WAN: w.cfg.Name, Underlays: w.cfg.Underlays}
	if m := w.cfg.TunnelMark; m != 0 {
		o.Marks = append(o.Marks, m) // config refuses one that clashes
	}
	o.Endpoints = append(o.Endpoints, w.cfg.Endpoints...)
	if t := p.links[w.cfg.Name].Tunnel; t != nil {
		switch {
		case t.FwMark == 0 || slices.Contains(o.Marks, t.FwMark):
		case t.FwMark&p.d.Mask != 0:
			o.LeftAlone = t.FwMark
			o.Problem = config.MarkClash(fmt.Sprintf("the %s fwmark %#x of %s", t.Kind, t.FwMark, w.cfg.Interface),
				t.FwMark, p.d.Mask, len(p.cfg.WANs), p.tunnelMarks()) +
				"; until then multiwan leaves this tunnel's outer packets alone (they are not pinned to the underlay)"
		default:
			o.Marks = append(o.Marks, t.FwMark)
		}
		o.ListenPort = t.ListenPort
		for _, ep := range t.Endpoints[:min(len(t.Endpoints), MaxLearnedEndpoints)] {
			if ep.IsValid() && !slices.Contains(o.Endpoints, ep) {
				o.Endpoints = append(o.Endpoints, netip.AddrPortFrom(ep.Addr().Unmap(), ep.Port()))
			}
		}
	}
	return o
}

// tunnelMarks are every tunnel mark the config and the links know, for
// suggesting a mask clear of them all.
func (p *planner) tunnelMarks() []uint32 {
	var out []uint32
	for _, w := range p.cfg.WANs {
		if w.TunnelMark != 0 {
			out = append(out, w.TunnelMark)
		}
		if t := p.links[w.Name].Tunnel; t != nil && t.FwMark != 0 {
			out = append(out, t.FwMark)
		}
	}
	return out
}

// outerFamily is the family whose usability an underlay needs to carry a
// tunnel: IPv6 when every known endpoint is IPv6, IPv4 otherwise.
func outerFamily(eps []netip.AddrPort) fam {
	if len(eps) == 0 {
		return v4
	}
	for _, ep := range eps {
		if ep.Addr().Is4() {
			return v4
		}
	}
	return v6
}

// underlayRules are the rules that ChainOutput gets for tunnels: the
// accepts of marks left alone, ahead of identify (which would read their
// bits as a WAN's id), and the jump to ChainUnderlay, after identify (a
// probe's SO_MARK still wins) and before bound. rules are ChainOutput's
// other rules: restore, the jump to identify, then the rest.
func (p *planner) underlayRules(rules []string, ctNew string) []string {
	if len(p.d.Overlays) == 0 {
		return rules
	}
	var alone []string
	for _, o := range p.d.Overlays {
		if o.LeftAlone != 0 {
			alone = append(alone, fmt.Sprintf("%s meta mark == %s accept comment %q",
				ctNew, hex(o.LeftAlone), o.WAN+": fwmark overlaps mark_mask, left alone"))
		}
	}
	identify := slices.Index(rules, ctNew+" jump "+ChainIdentify)
	if identify < 0 {
		panic("plan: output chain without identify")
	}
	out := slices.Concat(rules[:identify], alone, rules[identify:identify+1],
		[]string{ctNew + " jump " + ChainUnderlay}, rules[identify+1:])
	return out
}

// underlayChains builds ChainUnderlay: per tunnel, in config order, a rule
// per way of recognising its outer packets (marks, listen port,
// endpoints), each looking up the tunnel's verdict map (UnderlayMap),
// whose elements send it to the chosen underlay's chain, or to
// ChainNoUnderlay, which fails the packet, when none is usable. The map is
// keyed by the packet's family, a key every packet has, so that the rules
// never change: an underlay's failover changes elements only. None when
// no WAN has underlays.
func (p *planner) underlayChains() ([]Set, []Chain) {
	if len(p.d.Overlays) == 0 {
		return nil, nil
	}
	d := p.d
	c := Chain{Name: ChainUnderlay, Terminal: true, Comment: "outer traffic of tunnels, pinned to their underlay"}
	var sets []Set
	for _, o := range d.Overlays {
		if o.LeftAlone != 0 {
			continue // its packets never get here; not pinned by port or endpoint either
		}
		to := goTo(WANChain(o.Underlay))
		if o.Underlay == "" {
			to = goTo(ChainNoUnderlay)
		}
		name := UnderlayMap(o.WAN)
		sets = append(sets, Set{Name: name, TypeOf: "meta nfproto", Map: "verdict",
			Elements: []Element{{Key: "ipv4", Value: to}, {Key: "ipv6", Value: to}},
			Comment:  "underlay of " + o.WAN})
		verdict := "meta nfproto vmap @" + name
		comment := fmt.Sprintf("comment %q", "tunnel "+o.WAN)
		for _, m := range o.Marks {
			c.Rules = append(c.Rules, fmt.Sprintf("meta mark and %s == %s %s %s", hex(^d.Mask), hex(m), verdict, comment))
		}
		if o.ListenPort != 0 {
			c.Rules = append(c.Rules, fmt.Sprintf("meta l4proto udp th sport %d %s %s", o.ListenPort, verdict, comment))
		}
		for _, ep := range o.Endpoints {
			f := v4
			if ep.Addr().Is6() {
				f = v6
			}
			match := fmt.Sprintf("meta l4proto udp %s daddr %s", f.ip(), ep.Addr())
			if ep.Port() != 0 {
				match += fmt.Sprintf(" th dport %d", ep.Port())
			}
			c.Rules = append(c.Rules, match+" "+verdict+" "+comment)
		}
	}
	none := Chain{Name: ChainNoUnderlay, Comment: "outer packet of a tunnel without a usable underlay: fails at routing",
		Rules: []string{fmt.Sprintf("meta mark set meta mark and %s or %s accept", hex(^d.Mask), hex(d.UnreachableMark))}}
	return sets, []Chain{c, none}
}

// guardLearned adds to the loop guard the endpoints learned from the
// tunnels' interfaces (the configured ones are in the guard's sets): one
// rule per endpoint, UDP to its port, since a peer the tunnel learned is
// reached by UDP and the peer's address may well serve other traffic
// through the tunnel. guard is the chain built from the configured
// endpoints, or nil.
func (p *planner) guardLearned(wans []*wanInfo, guard *Chain) *Chain {
	for _, w := range wans {
		t := p.links[w.cfg.Name].Tunnel
		if t == nil || len(w.cfg.Underlays) == 0 {
			continue
		}
		for _, ep := range t.Endpoints[:min(len(t.Endpoints), MaxLearnedEndpoints)] {
			if !ep.IsValid() || slices.Contains(w.cfg.Endpoints, ep) {
				continue
			}
			if guard == nil {
				guard = &Chain{Name: ChainGuard, Type: "filter", Hook: "postrouting", Priority: "mangle",
					Comment: "a tunnel never carries its own outer packets"}
			}
			f := v4
			if ep.Addr().Unmap().Is6() {
				f = v6
			}
			guard.Rules = append(guard.Rules, fmt.Sprintf("oifname %s meta l4proto udp %s daddr %s th dport %d counter drop comment %q",
				quote(w.cfg.Interface), f.ip(), ep.Addr().Unmap(), ep.Port(), "loop: "+w.cfg.Name+"'s outer packet into "+w.cfg.Name))
		}
	}
	return guard
}

// underlayNotes are the gaps of tunnel WANs: an endpoint that routing will
// not send by the underlay (it lies in a subnet connected on another WAN's
// link, where the main table's link route wins, or in the tunnel's own
// subnet: a loop); a tunnel whose outer packets cannot be recognised
// (nothing configured, nothing read from the interface); a learned mark
// that clashes with mark_mask; peers beyond what multiwan takes. links
// nil: only what the config alone says.
func underlayNotes(cfg *config.Config, links Links) []Note {
	var out []Note
	for _, w := range cfg.WANs {
		if len(w.Underlays) == 0 {
			continue
		}
		var learned *TunnelInfo
		if links != nil {
			learned = links[w.Name].Tunnel
		}
		eps := slices.Clone(w.Endpoints)
		if learned != nil {
			eps = append(eps, learned.Endpoints[:min(len(learned.Endpoints), MaxLearnedEndpoints)]...)
		}
		note := func(format string, args ...any) {
			out = append(out, Note{WAN: w.Name, Pos: w.Pos, Msg: fmt.Sprintf(format, args...)})
		}
		for _, ep := range eps {
			a := ep.Addr().Unmap()
			for _, other := range cfg.WANs {
				if slices.Contains(w.Underlays, other.Name) || links == nil {
					continue
				}
				for _, pfx := range links[other.Name].Addrs {
					if pfx.Bits() == pfx.Addr().BitLen() || !pfx.Contains(a) {
						continue
					}
					if other.Name == w.Name {
						note("endpoint %s lies in the tunnel's own subnet %s: it is reached through %s itself, a loop (the loop guard drops it); the endpoint must be reached by the underlay",
							a, pfx.Masked(), w.Interface)
					} else {
						note("endpoint %s lies in %s, connected on %s (WAN %s): the main table's link route wins (ip rule %d), so the tunnel's outer packets do not ride its underlay %s",
							a, pfx.Masked(), other.Interface, other.Name, cfg.RulePriority, strings.Join(w.Underlays, ", "))
					}
				}
			}
		}
		if learned != nil && learned.FwMark != 0 && learned.FwMark&cfg.MarkMask != 0 && learned.FwMark != w.TunnelMark {
			note("%s", config.MarkClash(fmt.Sprintf("the %s fwmark %#x of %s", learned.Kind, learned.FwMark, w.Interface),
				learned.FwMark, cfg.MarkMask, len(cfg.WANs), nil)+"; its outer packets are left alone, not pinned to the underlay")
		}
		if learned != nil && learned.Peers > MaxLearnedEndpoints {
			note("%s has %d peers; multiwan pins the outer packets to the first %d endpoints it reads, and to the rest by the tunnel's mark and listen port",
				w.Interface, learned.Peers, MaxLearnedEndpoints)
		}
		if links != nil && links[w.Name].Exists && learned == nil && w.TunnelMark == 0 && len(w.Endpoints) == 0 {
			note("rides %s, but multiwan cannot tell its outer packets: %s is not a WireGuard interface it can read, and neither endpoint nor tunnel_mark is set",
				strings.Join(w.Underlays, ", "), w.Interface)
		}
	}
	return out
}

// tunnelWhy reads a trace's steps for a tunnel's outer packet: pinned to
// an underlay by ChainUnderlay, failed there for want of one, or left
// alone for a mark that clashes with mark_mask. The tunnel is named by the
// deciding rule's comment.
func tunnelWhy(steps []Step) (string, bool) {
	if len(steps) == 0 {
		return "", false
	}
	s := steps[len(steps)-1]
	if s.Chain == ChainNoUnderlay && len(steps) > 1 {
		s = steps[len(steps)-2]
		s.To = "accept"
	}
	i := strings.Index(s.Rule, `comment "`)
	if i < 0 {
		return "", false
	}
	comment := strings.TrimSuffix(s.Rule[i+len(`comment "`):], `"`)
	switch {
	case s.Chain == ChainUnderlay && s.To == "accept":
		tunnel, _, _ := strings.Cut(strings.TrimPrefix(comment, "tunnel "), ":")
		return fmt.Sprintf("the outer traffic of tunnel %s has no usable underlay: it fails here rather than enter a tunnel or follow the main table", tunnel), true
	case s.Chain == ChainUnderlay:
		under, _ := WANOfChain(s.To)
		return fmt.Sprintf("the outer traffic of tunnel %s rides %s", strings.TrimPrefix(comment, "tunnel "), under), true
	case s.Chain == ChainOutput && s.To == "accept" && strings.HasSuffix(comment, "left alone"):
		tunnel, _, _ := strings.Cut(comment, ":")
		return fmt.Sprintf("the outer traffic of tunnel %s is left alone: its fwmark overlaps mark_mask (see multiwan status)", tunnel), true
	}
	return "", false
}

// usableForSource is the WAN whose table gives the router's own new
// sockets a route and a source address when no WAN of the default policy
// is usable: the first usable, routed WAN in config order; "" when there
// is none. Without a route a socket fails before nft sees its packet, and
// a tunnel whose overlay is the default policy's only member could never
// send the handshake that brings it back up; with one, nft decides as
// always (ChainUnderlay pins the outer packets, the policy's last resort
// fails the rest at once).
func (p *planner) usableForSource(f fam, byName map[string]*wanInfo) string {
	for _, w := range p.cfg.WANs {
		if wi := byName[w.Name]; wi != nil && wi.usable(f) && wi.routed[f] {
			return w.Name
		}
	}
	return ""
}
