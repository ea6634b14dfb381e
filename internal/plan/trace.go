package plan

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Packet is a packet to trace through a Desired state: the first packet of a
// new connection unless Established is set.
type Packet struct {
	// IIF is the incoming interface; empty for the router's own traffic.
	IIF      string
	Src, Dst netip.Addr
	// Proto is a protocol name as nft writes it (tcp, udp, icmp).
	Proto            string
	SrcPort, DstPort uint16
	// Mark is the fwmark the packet already carries (a probe's SO_MARK).
	Mark uint32
	// CtMark is the mark of the packet's connection.
	CtMark uint32
	// Established is true for a packet of a known connection; false for
	// the first packet of a new one.
	Established bool
	// ToRouter is true when the destination is one of the router's own
	// addresses (`fib daddr type local`).
	ToRouter bool
	// Wildcard is true for the router's own packet from a socket bound to
	// no address of its own (`socket wildcard 1`): an unconnected socket
	// listening on all addresses, like a WireGuard or DNS daemon's. A
	// socket bound to an address, or connected, is not: its source was
	// fixed when it was bound or connected.
	Wildcard bool
}

// Local reports whether the packet is the router's own.
func (p Packet) Local() bool { return p.IIF == "" }

// Outcome is one way a traced packet can end, with its probability (a
// policy that balances has one outcome per WAN).
type Outcome struct {
	Prob   float64
	Mark   uint32 // the packet's fwmark at routing
	CtMark uint32 // the connection's mark after the packet
	// Chains lists the nft chains the packet went through, in order.
	Chains []string
	// Steps are the rules that sent it from chain to chain.
	Steps []Step
	// Rule is the ip rule that decided; nil when none matched.
	Rule *Rule
	// Route is the route taken; nil when the packet was not routed by a
	// route (unreachable, blackhole, or no route at all).
	Route *Route
	// WAN names the WAN whose table held the route, if any.
	WAN string
	// Verdict is "route", "unreachable", "blackhole", "no route", or
	// "dropped" (by the loop guard, after routing), or "accepted" when
	// multiwan leaves the packet alone (IPv6 of a WAN without gateway6).
	Verdict string
}

func (o Outcome) String() string {
	s := fmt.Sprintf("%.3f %s mark=%#x ctmark=%#x", o.Prob, o.Verdict, o.Mark, o.CtMark)
	if o.Route != nil {
		s += " via " + o.Route.Dev
	}
	if o.WAN != "" {
		s += " wan=" + o.WAN
	}
	return s
}

// Trace follows p through the nft table (prerouting for forwarded packets,
// output for the router's own) and then the ip rules and routes of d. main
// holds the routes of the main table (link, LAN and VPN routes, maybe a
// DHCP default route). Outcomes are sorted by WAN then verdict.
func (d *Desired) Trace(p Packet, main []Route) []Outcome {
	hook := ChainPrerouting
	if p.Local() {
		hook = ChainOutput
	}
	t := &tracer{d: d, p: p}
	start := traceState{prob: 1, mark: p.Mark, ctmark: p.CtMark}
	var outs []Outcome
	for _, st := range t.run(hook, start, 0) {
		o := d.route(p, st.mark, main)
		o.Prob, o.CtMark, o.Chains, o.Steps = st.prob, st.ctmark, st.path, st.steps
		if o.Route != nil && t.chain(ChainGuard) != nil {
			// Postrouting, where the outgoing interface is known.
			t.oif = o.Route.Dev
			for _, g := range t.run(ChainGuard, traceState{prob: 1, mark: st.mark, ctmark: st.ctmark}, 0) {
				if g.dropped {
					o.Verdict, o.Chains = "dropped", append(o.Chains, g.path...)
				}
			}
		}
		outs = append(outs, o)
	}
	slices.SortStableFunc(outs, func(a, b Outcome) int {
		return cmp.Or(cmp.Compare(a.WAN, b.WAN), cmp.Compare(a.Verdict, b.Verdict))
	})
	return outs
}

// Shares sums the probability of each WAN over outcomes; packets not routed
// by a WAN count under their verdict.
func Shares(outs []Outcome) map[string]float64 {
	m := map[string]float64{}
	for _, o := range outs {
		k := o.WAN
		if k == "" {
			k = o.Verdict
		}
		m[k] += o.Prob
	}
	return m
}

// route evaluates the ip rules of the packet's family in priority order.
func (d *Desired) route(p Packet, mark uint32, main []Route) Outcome {
	family := 4
	if p.Dst.Is6() {
		family = 6
	}
	for i := range d.Rules {
		r := &d.Rules[i]
		if r.Family != family {
			continue
		}
		if r.Mask != 0 && mark&r.Mask != r.Mark {
			continue
		}
		if r.Src.IsValid() && !r.Src.Contains(p.Src) {
			continue
		}
		switch r.Action {
		case "unreachable", "blackhole":
			return Outcome{Mark: mark, Rule: r, Verdict: r.Action}
		}
		routes := main
		if r.Table != TableMain {
			routes = nil
			for _, rt := range d.Routes {
				if rt.Table == r.Table && rt.Family == family {
					routes = append(routes, rt)
				}
			}
		}
		if rt := longestMatch(routes, p.Dst); rt != nil && rt.Dst.Bits() > max(r.SuppressPrefixLen, -1) {
			return Outcome{Mark: mark, Rule: r, Route: rt, WAN: d.wanOfTable(r.Table), Verdict: "route"}
		}
	}
	return Outcome{Mark: mark, Verdict: "no route"}
}

func (d *Desired) wanOfTable(table int) string {
	for _, rt := range d.Routes {
		if rt.Table == table && rt.Comment != "" {
			return rt.Comment
		}
	}
	return ""
}

func longestMatch(routes []Route, dst netip.Addr) *Route {
	var best *Route
	for i := range routes {
		r := &routes[i]
		if r.Dst.Contains(dst) && (best == nil || r.Dst.Bits() > best.Dst.Bits()) {
			best = r
		}
	}
	return best
}

type traceState struct {
	prob         float64
	mark, ctmark uint32
	path         []string
	// steps are the rules that sent the packet on (goto, jump, a verdict
	// map's element), in order: what decided, for explain.
	steps []Step
	// accepted and dropped end the packet's way through every chain.
	accepted, dropped bool
}

// Step is a rule that sent a traced packet to another chain.
type Step struct {
	Chain string // the chain the rule is in
	Rule  string // the rule, as the table holds it
	To    string // the chain it went to, or "accept" or "drop" for a rule that ended the packet's way
}

func (s traceState) final() bool { return s.accepted || s.dropped }

type tracer struct {
	d   *Desired
	p   Packet
	oif string // the outgoing interface, once routed
}

// run evaluates a chain and returns the states in which control comes back
// to its caller (every chain here ends by falling through or by a verdict
// that the caller continues from, as all base chains accept).
func (t *tracer) run(chain string, st traceState, depth int) []traceState {
	if depth > 16 {
		panic("trace: chain loop at " + chain)
	}
	c := t.chain(chain)
	if c == nil {
		panic("trace: no chain " + chain)
	}
	st.path = append(slices.Clip(st.path), chain)
	live := []traceState{st}
	var done []traceState
	for _, rule := range c.Rules {
		var next []traceState
		for _, s := range live {
			cont, ret := t.rule(rule, rule, chain, s, depth)
			for _, c := range cont {
				if c.final() {
					done = append(done, c)
				} else {
					next = append(next, c)
				}
			}
			done = append(done, ret...)
		}
		live = next
	}
	return append(done, live...)
}

func (t *tracer) chain(name string) *Chain {
	for i := range t.d.Table.Chains {
		if t.d.Table.Chains[i].Name == name {
			return &t.d.Table.Chains[i]
		}
	}
	return nil
}

func (t *tracer) set(name string) *Set {
	for i := range t.d.Table.Sets {
		if t.d.Table.Sets[i].Name == name {
			return &t.d.Table.Sets[i]
		}
	}
	panic("trace: no set " + name)
}

// rule evaluates one rule. cont are the states that go on with the next rule
// of the chain; ret those that leave the chain (a goto that came back).
func (t *tracer) rule(text, origin, chain string, st traceState, depth int) (cont, ret []traceState) {
	toks := tokenize(text)
	for len(toks) > 0 {
		var val, key string
		var n int
		switch {
		case toks[0] == "comment":
			toks = toks[2:]
			continue
		case toks[0] == "jump" || toks[0] == "goto":
			st.steps = append(slices.Clip(st.steps), Step{Chain: chain, Rule: origin, To: toks[1]})
			back := t.run(toks[1], st, depth+1)
			// An accept or drop ends the packet's way, whatever called.
			var final []traceState
			back = slices.DeleteFunc(back, func(s traceState) bool {
				if s.final() {
					final = append(final, s)
				}
				return s.final()
			})
			if toks[0] == "goto" {
				return nil, append(back, final...)
			}
			// Everything after a jump in the same rule is not used here.
			return back, final
		case toks[0] == "return":
			return nil, []traceState{st}
		case toks[0] == "accept":
			st.accepted = true
			st.steps = append(slices.Clip(st.steps), Step{Chain: chain, Rule: origin, To: "accept"})
			return nil, []traceState{st}
		case toks[0] == "drop" || toks[0] == "reject":
			st.dropped = true
			st.steps = append(slices.Clip(st.steps), Step{Chain: chain, Rule: origin, To: "drop"})
			return nil, []traceState{st}
		case toks[0] == "counter" && len(toks) >= 5 && toks[1] == "name" && toks[3] == "map":
			// counter name iifname map @wan_rx: counts, decides nothing.
			toks = toks[5:]
			continue
		case toks[0] == "counter":
			toks = toks[1:]
			continue
		case toks[0] == "masquerade":
			return []traceState{st}, nil
		case toks[0] == "numgen" || toks[0] == "jhash":
			// numgen random mod N vmap @map / jhash ip saddr mod N seed S vmap @map
			i := slices.Index(toks, "mod")
			mod, _ := strconv.Atoi(toks[i+1])
			v := slices.Index(toks, "vmap")
			return t.branch(toks[v+1], origin, chain, mod, st, depth)
		}
		key, val, n = t.selector(toks, st)
		toks = toks[n:]
		// Optional "and MASK".
		if len(toks) > 1 && toks[0] == "and" {
			v := parseNum(val) & parseNum(toks[1])
			val = "0x" + strconv.FormatUint(uint64(v), 16)
			toks = toks[2:]
		}
		switch {
		case toks[0] == "set":
			// "ct mark set ct mark and A or B" / "... or B"
			_, cur, m := t.selector(toks[1:], st)
			v := parseNum(cur)
			rest := toks[1+m:]
			for len(rest) > 1 && (rest[0] == "and" || rest[0] == "or") {
				if rest[0] == "and" {
					v &= parseNum(rest[1])
				} else {
					v |= parseNum(rest[1])
				}
				rest = rest[2:]
			}
			if key == "ct mark" {
				st.ctmark = v
			} else {
				st.mark = v
			}
			toks = rest
		case toks[0] == "vmap":
			verdict, ok := t.lookup(toks[1], val)
			if !ok {
				return []traceState{st}, nil
			}
			return t.rule(verdict, origin, chain, st, depth)
		default:
			neg := false
			if toks[0] == "!=" {
				neg, toks = true, toks[1:]
			} else if toks[0] == "==" {
				toks = toks[1:]
			}
			var match bool
			if strings.HasPrefix(toks[0], "@") || strings.HasPrefix(toks[0], "{") {
				_, match = t.lookup(toks[0], val)
			} else {
				match = val == toks[0] || (isNum(val) && isNum(toks[0]) && parseNum(val) == parseNum(toks[0]))
			}
			if match == neg {
				return []traceState{st}, nil
			}
			toks = toks[1:]
		}
	}
	return []traceState{st}, nil
}

// selector reads the value of the expression at the start of toks.
func (t *tracer) selector(toks []string, st traceState) (key, val string, n int) {
	p := t.p
	two := strings.Join(toks[:min(2, len(toks))], " ")
	switch two {
	case "ct mark":
		return two, fmt.Sprintf("%#x", st.ctmark), 2
	case "meta mark":
		return two, fmt.Sprintf("%#x", st.mark), 2
	case "ct state":
		if !p.Established {
			return two, "new", 2
		}
		return two, "established", 2
	case "ip saddr", "ip6 saddr":
		return two, famAddr(two, p.Src), 2
	case "ip daddr", "ip6 daddr":
		return two, famAddr(two, p.Dst), 2
	case "meta l4proto":
		return two, p.Proto, 2
	case "meta nfproto":
		if p.Dst.Is4() {
			return two, "ipv4", 2
		}
		return two, "ipv6", 2
	case "th sport":
		return two, fmt.Sprint(p.SrcPort), 2
	case "th dport":
		return two, fmt.Sprint(p.DstPort), 2
	case "socket wildcard":
		// Forwarded packets have no local socket: the expression does
		// not match either value.
		if !p.Local() {
			return two, "\x00", 2
		}
		if p.Wildcard {
			return two, "1", 2
		}
		return two, "0", 2
	}
	switch toks[0] {
	case "iifname":
		return "iifname", quote(p.IIF), 1
	case "oifname":
		return "oifname", quote(t.oif), 1
	case "fib": // fib daddr type
		if p.ToRouter {
			return "fib", "local", 3
		}
		return "fib", "unicast", 3
	}
	panic("trace: cannot read " + strings.Join(toks, " "))
}

// famAddr returns the address when it is of the selector's family, or a
// value that matches nothing (nft does not match ip saddr on IPv6 packets).
func famAddr(sel string, a netip.Addr) string {
	if strings.HasPrefix(sel, "ip6") != a.Is6() {
		return "\x00"
	}
	return a.String()
}

// lookup finds val in a named set (@name) or an anonymous map ({ ... }).
func (t *tracer) lookup(ref, val string) (string, bool) {
	var els []Element
	if name, ok := strings.CutPrefix(ref, "@"); ok {
		els = t.set(name).Elements
	} else {
		els = anonElements(ref)
	}
	for _, e := range els {
		if elementMatches(e.Key, val) {
			return e.Value, true
		}
	}
	return "", false
}

func elementMatches(key, val string) bool {
	if key == val {
		return true
	}
	if a, err := netip.ParseAddr(val); err == nil {
		if p, err := netip.ParsePrefix(key); err == nil {
			return p.Contains(a)
		}
		if k, err := netip.ParseAddr(key); err == nil {
			return k == a
		}
		return false
	}
	if isNum(val) {
		lo, hi, ok := strings.Cut(key, "-")
		if !ok {
			hi = lo
		}
		if isNum(lo) && isNum(hi) {
			v := parseNum(val)
			return parseNum(lo) <= v && v <= parseNum(hi)
		}
	}
	return false
}

// branch follows every element of a random or hashed verdict map, each with
// its probability.
func (t *tracer) branch(ref, origin, chain string, mod int, st traceState, depth int) (cont, ret []traceState) {
	els := anonElements(ref)
	if name, ok := strings.CutPrefix(ref, "@"); ok {
		els = t.set(name).Elements
	}
	for _, e := range els {
		lo, hi, ok := strings.Cut(e.Key, "-")
		if !ok {
			hi = lo
		}
		width := parseNum(hi) - parseNum(lo) + 1
		s := st
		s.prob = st.prob * float64(width) / float64(mod)
		c, r := t.rule(e.Value, origin, chain, s, depth)
		cont = append(cont, c...)
		ret = append(ret, r...)
	}
	return cont, ret
}

func anonElements(block string) []Element {
	block = strings.TrimSuffix(strings.TrimPrefix(block, "{"), "}")
	var els []Element
	for _, part := range strings.Split(block, ",") {
		// " : " and not ":": IPv6 keys are full of colons.
		k, v, _ := strings.Cut(part, " : ")
		els = append(els, Element{Key: strings.TrimSpace(k), Value: strings.TrimSpace(v)})
	}
	return els
}

// tokenize splits an nft rule into words, keeping "{ ... }" blocks and
// quoted strings whole.
func tokenize(s string) []string {
	var toks []string
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		end := strings.IndexByte(s, ' ')
		switch s[0] {
		case '{':
			end = strings.IndexByte(s, '}') + 1
		case '"':
			end = strings.IndexByte(s[1:], '"') + 2
		}
		if end <= 0 {
			end = len(s)
		}
		toks = append(toks, s[:end])
		s = s[end:]
	}
	return toks
}

func isNum(s string) bool {
	_, err := strconv.ParseUint(s, 0, 32)
	return err == nil
}

func parseNum(s string) uint32 {
	v, err := strconv.ParseUint(s, 0, 32)
	if err != nil {
		panic("trace: not a number: " + s)
	}
	return uint32(v)
}
