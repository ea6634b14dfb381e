package plan

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/multiwan/multiwan/internal/config"
)

// Query is a new connection to explain: its first packet.
type Query struct {
	Src      netip.Addr `json:"src"`
	Dst      netip.Addr `json:"dst"`
	Proto    string     `json:"proto,omitempty"`
	SrcPort  uint16     `json:"sport,omitempty"`
	DstPort  uint16     `json:"dport,omitempty"`
	IIF      string     `json:"iif,omitempty"`
	Local    bool       `json:"local,omitempty"`
	Wildcard bool       `json:"-"`
}

// Packet is the query as the tracer takes it. A local query from an
// unspecified source is an unbound socket, which the kernel gives the best
// WAN's address.
func (q Query) packet(d *Desired, links Links) Packet {
	p := Packet{IIF: q.IIF, Src: q.Src, Dst: q.Dst, Proto: q.Proto, SrcPort: q.SrcPort, DstPort: q.DstPort,
		Wildcard: q.Wildcard}
	if q.Local {
		p.IIF = ""
		if !p.Src.IsValid() || p.Src.IsUnspecified() {
			best := d.Best
			if q.Dst.Is6() {
				best = d.Best6
			}
			p.Src = firstAddr(links[best], q.Dst.Is6())
			p.Wildcard = true
		}
	}
	return p
}

// Path is one way a new connection can go (a balanced policy has one per
// WAN), explained.
type Path struct {
	Share   float64 `json:"share"`
	Verdict string  `json:"verdict"` // route, unreachable, blackhole, no route, dropped, accepted
	WAN     string  `json:"wan,omitempty"`
	// Why says what decided, in words: a rule, the default policy, an
	// identification (arrived on a WAN, bound to its address...).
	Why    string `json:"why"`
	Rule   string `json:"rule,omitempty"`   // the steering rule that matched
	Policy string `json:"policy,omitempty"` // the policy that chose
	// Chains are the nft chains the packet goes through.
	Chains []string `json:"chains"`
	// IPRule is the ip rule that decided its routing, Table its table,
	// Route the route taken.
	IPRule string `json:"ip_rule,omitempty"`
	Table  string `json:"table,omitempty"`
	Route  string `json:"route,omitempty"`
	// Source is its source address after NAT.
	Source string `json:"source,omitempty"`
	Mark   string `json:"mark"`
}

// Explanation is where a new connection goes and why, and where it would go
// if its WAN went down.
type Explanation struct {
	Query Query  `json:"query"`
	Paths []Path `json:"paths"`
	// IfDown holds, for each WAN a path goes by, the paths with that WAN
	// down.
	IfDown map[string][]Path `json:"if_down,omitempty"`
	// Notes says what the explanation assumed.
	Notes []string `json:"notes,omitempty"`
}

// Explain traces q through the plan of cfg with health, links and override,
// and again with each WAN it goes by down. main is the main table's routes
// (LAN, link and VPN routes win over the WAN tables).
func Explain(cfg *config.Config, health Health, links Links, override string, q Query, main []Route) Explanation {
	d := Plan(cfg, health, links, override)
	ex := Explanation{Query: q, Paths: explainPaths(cfg, d, links, q, main)}
	for _, path := range ex.Paths {
		if path.WAN == "" {
			continue
		}
		if ex.IfDown == nil {
			ex.IfDown = map[string][]Path{}
		}
		if _, done := ex.IfDown[path.WAN]; done {
			continue
		}
		down := Health{}
		for k, v := range health {
			down[k] = v
		}
		down[path.WAN], down[Key6(path.WAN)] = StateDown, StateDown
		d2 := Plan(cfg, down, links, override)
		ex.IfDown[path.WAN] = explainPaths(cfg, d2, links, q, main)
	}
	return ex
}

func explainPaths(cfg *config.Config, d *Desired, links Links, q Query, main []Route) []Path {
	p := q.packet(d, links)
	var out []Path
	for _, o := range d.Trace(p, main) {
		path := Path{Share: o.Prob, Verdict: o.Verdict, WAN: o.WAN, Chains: o.Chains, Mark: fmt.Sprintf("%#x", o.Mark)}
		path.Why, path.Rule, path.Policy = why(o.Steps, q.Local)
		if o.Rule != nil {
			path.IPRule = o.Rule.String()
			if o.Rule.Action == "lookup" {
				path.Table = tableName(o.Rule.Table)
			}
		}
		if o.Route != nil {
			path.Route = strings.TrimPrefix(strings.TrimPrefix(o.Route.String(), "ip -6 route replace "), "ip route replace ")
			path.Source = sourceAfterNAT(cfg, links, p, o)
		}
		if w := arrivedOn(o.Steps); w != "" && o.WAN != w && o.Verdict == "route" {
			// An inbound connection, to the router or to a LAN host
			// behind a port forward: its first packet is delivered by
			// the main table, not by a WAN; what multiwan decides is the
			// WAN of its replies, which carry the connection's mark.
			reply := d.route(Packet{Src: p.Dst, Dst: p.Src, Proto: p.Proto, SrcPort: p.DstPort, DstPort: p.SrcPort,
				Established: true}, o.Mark, main)
			path.Verdict, path.WAN, path.IPRule, path.Table, path.Route = reply.Verdict, reply.WAN, "", "", ""
			if reply.Rule != nil {
				path.IPRule = reply.Rule.String()
				if reply.Rule.Action == "lookup" {
					path.Table = tableName(reply.Rule.Table)
				}
			}
			if reply.Route != nil {
				path.Route = strings.TrimPrefix(strings.TrimPrefix(reply.Route.String(), "ip -6 route replace "), "ip route replace ")
			}
			// The replies come from the address the connection came to
			// (conntrack undoes a port forward's DNAT).
			path.Source = p.Dst.String()
		}
		out = append(out, path)
	}
	return out
}

// why reads the steps of a trace: the steering rule that matched (its
// comment "rule NAME"), the policy that chose, or what identified the
// connection's WAN before any rule.
func why(steps []Step, local bool) (reason, rule, policy string) {
	for _, s := range steps {
		if s.Chain == ChainSteer && strings.Contains(s.Rule, `comment "rule `) {
			i := strings.Index(s.Rule, `comment "rule `) + len(`comment "rule `)
			rule = strings.TrimSuffix(s.Rule[i:], `"`)
		}
		if p, ok := strings.CutPrefix(s.To, "policy_"); ok {
			policy = p
		}
		if w, ok := strings.CutPrefix(s.To, "pin_"); ok {
			policy = config.ImplicitPolicyName(w)
		}
	}
	last := Step{}
	for _, s := range steps {
		if _, isWAN := WANOfChain(s.To); isWAN || strings.HasPrefix(s.To, "restore_") {
			last = s
		}
	}
	if why := dnsWhy(steps); why != "" && (last.Chain == ChainDNS || last == Step{}) {
		return why, "", ""
	}
	if reason, ok := tunnelWhy(steps); ok {
		return reason, "", ""
	}
	switch {
	case last.Chain == ChainIdentify && strings.Contains(last.Rule, "@"+MapWANMark):
		return "the packet already carries the WAN's mark (SO_MARK: a probe, ping -m)", "", ""
	case last.Chain == ChainIdentify && strings.Contains(last.Rule, "@"+MapWANIIF):
		return "the connection arrived on this WAN: its replies leave by it", "", ""
	case last.Chain == ChainIdentify && (strings.Contains(last.Rule, "@"+MapWANNet) || strings.Contains(last.Rule, "@"+MapWANNet6)):
		return "the destination is on the WAN's own subnet", "", ""
	case last.Chain == ChainIdentify && strings.Contains(last.Rule, "@"+MapWANSrc6):
		return "the source is in a prefix only this WAN routes (prefixes6)", "", ""
	case last.Chain == ChainBound:
		return "the router's socket is bound to the WAN's address", "", ""
	case strings.HasPrefix(last.To, "restore_"):
		return "a known connection: it keeps its WAN (the connection mark)", "", ""
	case rule != "":
		return fmt.Sprintf("rule %s matched; its policy %s chose", rule, policy), rule, policy
	case policy != "":
		what := "the default policy " + policy
		if local {
			what += " (no rule matched the router's own connection)"
		} else {
			what += " (no rule matched)"
		}
		return what + " chose", "", policy
	}
	return "multiwan leaves it alone (no WAN decision)", "", ""
}

// arrivedOn is the WAN a traced connection was identified by because it
// arrived on its interface, or "".
func arrivedOn(steps []Step) string {
	for _, s := range steps {
		if s.Chain == ChainIdentify && strings.Contains(s.Rule, "@"+MapWANIIF) {
			if w, ok := WANOfChain(s.To); ok {
				return w
			}
		}
	}
	return ""
}

// sourceAfterNAT is the connection's source once it leaves by o's route:
// the WAN's address when the WAN masquerades, its own otherwise.
func sourceAfterNAT(cfg *config.Config, links Links, p Packet, o Outcome) string {
	wan, ok := cfg.WANByName(o.WAN)
	if !ok || o.Route == nil {
		return p.Src.String()
	}
	masq := wan.NAT == "masquerade"
	if p.Dst.Is6() {
		masq = wan.NAT6 == "masquerade"
	}
	if !masq {
		return p.Src.String() + " (no NAT)"
	}
	if a := firstAddr(links[wan.Name], p.Dst.Is6()); a.IsValid() {
		return a.String() + " (masquerade on " + wan.Interface + ")"
	}
	return "the address of " + wan.Interface + " (masquerade)"
}

// firstAddr is a link's first address of the family that can source
// traffic to the internet.
func firstAddr(l Link, v6 bool) netip.Addr {
	for _, a := range l.Addrs {
		if a.Addr().Is6() == v6 && !a.Addr().IsLinkLocalUnicast() {
			return a.Addr()
		}
	}
	return netip.Addr{}
}

// String says the explanation in a few lines, for the terminal.
func (e Explanation) String() string {
	var b strings.Builder
	q := e.Query
	from := "from " + q.Src.String()
	switch {
	case q.Local && (!q.Src.IsValid() || q.Src.IsUnspecified()):
		from = "from the router itself (an unbound socket)"
	case q.Local:
		from = "from the router itself, socket bound to " + q.Src.String()
	case q.IIF != "":
		from += " arriving on " + q.IIF
	}
	what := "a new connection"
	if q.Proto != "" {
		what = "a new " + q.Proto + " connection"
	}
	fmt.Fprintf(&b, "%s %s to %s", what, from, q.Dst)
	if q.DstPort != 0 {
		fmt.Fprintf(&b, " port %d", q.DstPort)
	}
	if q.SrcPort != 0 {
		fmt.Fprintf(&b, " from port %d", q.SrcPort)
	}
	b.WriteString(":\n")
	writePaths(&b, e.Paths, "  ")
	wans := make([]string, 0, len(e.IfDown))
	for w := range e.IfDown {
		wans = append(wans, w)
	}
	slices.Sort(wans)
	for _, w := range wans {
		fmt.Fprintf(&b, "if %s went down:\n", w)
		writePaths(&b, e.IfDown[w], "  ")
	}
	for _, n := range e.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	return b.String()
}

func writePaths(b *strings.Builder, paths []Path, indent string) {
	for _, p := range paths {
		head := p.Verdict
		if p.WAN != "" {
			head = "leaves by " + p.WAN
		}
		switch p.Verdict {
		case "unreachable":
			head = "fails at once: network unreachable"
		case "blackhole":
			head = "is dropped silently (last resort blackhole)"
		case "dropped":
			head = "is dropped by the loop guard"
		case "no route":
			head = "has no route"
		case "accepted":
			head = "is left alone by multiwan (routed by the main table)"
		}
		if len(paths) > 1 {
			head = fmt.Sprintf("%.1f%% %s", p.Share*100, head)
		}
		fmt.Fprintf(b, "%s%s\n", indent, head)
		fmt.Fprintf(b, "%s  why:     %s\n", indent, p.Why)
		fmt.Fprintf(b, "%s  chains:  %s\n", indent, strings.Join(p.Chains, " → "))
		if p.IPRule != "" {
			fmt.Fprintf(b, "%s  ip rule: %s\n", indent, p.IPRule)
		}
		if p.Route != "" {
			fmt.Fprintf(b, "%s  route:   %s\n", indent, p.Route)
		}
		if p.Source != "" {
			fmt.Fprintf(b, "%s  source:  %s\n", indent, p.Source)
		}
	}
}

// portProtos are the protocols whose ports a query may name.
var portProtos = map[string]bool{"tcp": true, "udp": true, "sctp": true, "udplite": true}

// knownProtos are the protocol names a query may use besides numbers.
var knownProtos = map[string]bool{"tcp": true, "udp": true, "sctp": true, "udplite": true, "icmp": true,
	"ipv6-icmp": true, "icmpv6": true, "gre": true, "esp": true, "ah": true}

// Check says what is wrong with q, naming the part: a query that cannot be
// a packet is refused, not explained.
func (q Query) Check() error {
	switch {
	case !q.Dst.IsValid():
		return fmt.Errorf("--dst: a destination address is required")
	case !q.Local && !q.Src.IsValid():
		return fmt.Errorf("--src: a source address is required (or --local for the router's own connection)")
	case q.Src.IsValid() && q.Src.Is4() != q.Dst.Is4():
		return fmt.Errorf("--src %s and --dst %s are of different address families", q.Src, q.Dst)
	case q.Dst.IsUnspecified() || q.Dst.IsMulticast():
		return fmt.Errorf("--dst %s: not an address a connection goes to", q.Dst)
	case q.Local && q.IIF != "":
		return fmt.Errorf("--iif %s with --local: the router's own connections arrive on no interface", q.IIF)
	case q.Proto != "" && !knownProtos[q.Proto] && !isNum(q.Proto):
		return fmt.Errorf("--proto %q: not a protocol name (tcp, udp, icmp, sctp, ...) or number", q.Proto)
	case (q.SrcPort != 0 || q.DstPort != 0) && !portProtos[q.Proto]:
		return fmt.Errorf("--sport/--dport need --proto tcp, udp, sctp or udplite")
	case q.IIF != "" && !config.ValidIfname(q.IIF):
		return fmt.Errorf("--iif %q: not an interface name", q.IIF)
	}
	return nil
}
