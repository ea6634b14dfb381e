package plan

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// RouteProtocol is the rtm_protocol value on every ip rule and route multiwan
// installs. It is how the kernel adapters tell multiwan's own entries from
// everyone else's, so that adopting, replacing and removing never touches
// what another program installed.
const RouteProtocol = 77

// Desired is the complete kernel state multiwan wants: one nft table, the
// policy-routing rules, the routes of the WAN tables and the sysctls.
// Applying the same Desired twice changes nothing.
type Desired struct {
	Table   Table
	Rules   []Rule
	Routes  []Route
	Sysctls []Sysctl

	// What follows is the decision itself, kept for status, logs and the
	// tracer; the kernel adapters do not read it.

	// Marks maps each WAN to its mark value (inside the WAN-id bits of
	// the mark mask).
	Marks map[string]uint32
	// States is each WAN's state as the plan used it: the health given,
	// except that a WAN without a route (link missing or down, no
	// gateway) is down.
	States map[string]State
	// Mask is the configured mark_mask, IDMask the part of it that holds
	// WAN ids, MovableBit the one bit that flags movable flows.
	Mask, IDMask, MovableBit uint32
	// Special marks for a policy with no usable member.
	UnreachableMark, BlackholeMark, MainMark uint32
	// Policies are the per-policy decisions for IPv4, in config order
	// (implicit one-WAN policies included).
	Policies []PolicyChoice
	// Best is the WAN the router's own unmarked traffic takes its source
	// address from: the default policy's preferred active WAN. Empty when
	// no WAN is usable.
	Best string
	// IPv6 is set when some WAN carries IPv6 (gateway6); then Policies6
	// and Best6 are the same for IPv6. Without it multiwan leaves IPv6
	// alone: it is routed by the main table as if multiwan were not there.
	IPv6      bool
	Policies6 []PolicyChoice
	Best6     string
	// Overlays says, for each tunnel WAN (one with underlays), in config
	// order, which underlay its outer traffic rides and how that traffic
	// is recognised (underlay.go).
	Overlays []Overlay
	// Causes says why a WAN (or a WAN's IPv6, under Key6) is down in
	// States whatever its probes say, when that is not its own doing:
	// "underlay starlink1 down".
	Causes map[string]string
	// Resolvers is the resolver list for resolv_file, usable WANs' first
	// (see dns.go); empty when no WAN has resolvers.
	Resolvers []Resolver
}

// PolicyChoice is where a policy sends new connections now.
type PolicyChoice struct {
	Name string
	// Active lists the WANs that take new connections, with their shares.
	Active []Share
	// Tier lists every member of the tier Active was chosen from, usable
	// or not: `sticky: source` keeps each host's bucket on its WAN while
	// that WAN is active.
	Tier []Share
	// LastResort is set (unreachable, blackhole, main) when no member is
	// usable and Active is empty.
	LastResort string
	Sticky     string
}

// Share is one WAN's part of a policy's new connections.
type Share struct {
	WAN    string  `json:"wan"`
	Weight int     `json:"-"`
	Share  float64 `json:"share"`
}

// Table is an nft table in a form that is both printable as nft syntax and
// easy to hand to an nft transaction.
type Table struct {
	Family string // always "inet"
	Name   string
	// Counters are named counter objects (a map of type "counter" refers
	// to them by name).
	Counters []string
	Sets     []Set
	Chains   []Chain
}

// Set is an nft set, or a map when Map is non-empty.
type Set struct {
	Name string
	// Type is the key type, e.g. "ipv4_addr" or "ifname".
	Type string
	// TypeOf, instead of Type, gives the key type by an expression of that
	// type, e.g. "numgen random mod 10" (nft's typeof).
	TypeOf string
	// Map is the value type of a map ("verdict", "mark"); empty for a set.
	Map      string
	Flags    []string
	Elements []Element
	Comment  string
}

// Element is a set element, or a map element when Value is non-empty.
type Element struct {
	Key, Value string
}

// Chain is an nft chain; a base chain when Hook is set.
type Chain struct {
	Name     string
	Type     string // filter, nat, route; base chains only
	Hook     string // prerouting, output, postrouting, ...
	Priority string // e.g. "mangle", "srcnat"
	Rules    []string
	Comment  string
	// Terminal promises that every packet entering the chain leaves it
	// through a verdict of its rules (goto, return, or a verdict map that
	// covers every key it can meet, or no rule matches at all for packets
	// the chain does not decide), never by falling through from a deciding
	// rule to a later one. A new version of a terminal chain's rules can
	// therefore be inserted ahead of the old ones, which then are never
	// reached: an nft transaction that only adds, and so costs the kernel
	// no RCU grace period, which a flush would (about 15 ms). The old rules
	// are removed later, off the decision's path.
	Terminal bool
}

// Rule is one policy-routing rule (`ip rule`).
type Rule struct {
	Family   int // 4 or 6
	Priority int
	// Mark and Mask match the fwmark when Mask is non-zero.
	Mark, Mask uint32
	// Src matches the source address when valid.
	Src netip.Prefix
	// Action is "lookup", "unreachable" or "blackhole".
	Action string
	// Table is the table looked up when Action is "lookup".
	Table int
	// SuppressPrefixLen, when ≥ 0, rejects lookup results whose prefix is
	// that long or shorter (0: ignore default routes).
	SuppressPrefixLen int
	Comment           string
}

// Route is one route in a WAN's table.
type Route struct {
	Family  int
	Table   int
	Dst     netip.Prefix
	Gateway netip.Addr // invalid for a point-to-point link
	Dev     string
	Comment string
}

// Sysctl is one kernel setting, by its path under /proc/sys.
type Sysctl struct {
	Key     string // e.g. "net/ipv4/conf/wan1/rp_filter"
	Value   string
	Comment string
	// Loosen marks a reverse-path filter: only a strict filter (1, on the
	// key or on its `all` sibling, the kernel using the larger) is changed
	// to Value (2, loose). Off (0) is left alone: as permissive, and
	// cheaper, since every packet from the WAN would otherwise cost a
	// reverse route lookup.
	Loosen bool
}

// Well-known routing table ids.
const (
	TableMain = 254
)

func tableName(id int) string {
	if id == TableMain {
		return "main"
	}
	return fmt.Sprint(id)
}

// String renders the rule as `ip rule add` arguments would be written.
func (r Rule) String() string {
	var b strings.Builder
	if r.Family == 6 {
		b.WriteString("ip -6 rule add")
	} else {
		b.WriteString("ip rule add")
	}
	fmt.Fprintf(&b, " priority %d", r.Priority)
	if r.Src.IsValid() {
		fmt.Fprintf(&b, " from %s", r.Src.Masked())
	} else {
		b.WriteString(" from all")
	}
	if r.Mask != 0 {
		fmt.Fprintf(&b, " fwmark %#x/%#x", r.Mark, r.Mask)
	}
	switch r.Action {
	case "lookup":
		fmt.Fprintf(&b, " lookup %s", tableName(r.Table))
	default:
		b.WriteString(" " + r.Action)
	}
	if r.SuppressPrefixLen >= 0 {
		fmt.Fprintf(&b, " suppress_prefixlength %d", r.SuppressPrefixLen)
	}
	fmt.Fprintf(&b, " proto %d", RouteProtocol)
	return b.String()
}

// AnyPrefix is the default route's prefix of the route's family.
func (r Route) AnyPrefix() netip.Prefix {
	if r.Family == 6 {
		return netip.MustParsePrefix("::/0")
	}
	return netip.MustParsePrefix("0.0.0.0/0")
}

// String renders the route as `ip route replace` arguments would be written.
func (r Route) String() string {
	var b strings.Builder
	if r.Family == 6 {
		b.WriteString("ip -6 route replace")
	} else {
		b.WriteString("ip route replace")
	}
	if r.Dst.Bits() == 0 {
		b.WriteString(" default")
	} else {
		b.WriteString(" " + r.Dst.String())
	}
	if r.Gateway.IsValid() {
		b.WriteString(" via " + r.Gateway.String())
	}
	fmt.Fprintf(&b, " dev %s table %s proto %d", r.Dev, tableName(r.Table), RouteProtocol)
	return b.String()
}

// String renders the sysctl as `sysctl -w` takes it.
func (s Sysctl) String() string {
	if s.Loosen {
		return "sysctl -w " + s.Key + "=" + s.Value + " (only if strict)"
	}
	return "sysctl -w " + s.Key + "=" + s.Value
}

// String renders the table in `nft -f` syntax.
func (t *Table) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table %s %s {\n", t.Family, t.Name)
	for _, c := range t.Counters {
		fmt.Fprintf(&b, "\tcounter %s {\n\t}\n", c)
	}
	for _, s := range t.Sets {
		kind, typ := "set", "type "+s.Type
		if s.TypeOf != "" {
			typ = "typeof " + s.TypeOf
		}
		if s.Map != "" {
			kind = "map"
			typ += " : " + s.Map
		}
		fmt.Fprintf(&b, "\t%s %s {\n\t\t%s\n", kind, s.Name, typ)
		if len(s.Flags) > 0 {
			fmt.Fprintf(&b, "\t\tflags %s\n", strings.Join(s.Flags, ", "))
		}
		if s.Comment != "" {
			fmt.Fprintf(&b, "\t\tcomment %q\n", s.Comment)
		}
		if len(s.Elements) > 0 {
			els := make([]string, len(s.Elements))
			for i, e := range s.Elements {
				els[i] = e.String()
			}
			fmt.Fprintf(&b, "\t\telements = { %s }\n", strings.Join(els, ",\n\t\t\t     "))
		}
		b.WriteString("\t}\n")
	}
	for _, c := range t.Chains {
		fmt.Fprintf(&b, "\tchain %s {\n", c.Name)
		if c.Comment != "" {
			fmt.Fprintf(&b, "\t\tcomment %q\n", c.Comment)
		}
		if c.Hook != "" {
			fmt.Fprintf(&b, "\t\ttype %s hook %s priority %s; policy accept;\n", c.Type, c.Hook, c.Priority)
		}
		for _, r := range c.Rules {
			fmt.Fprintf(&b, "\t\t%s\n", r)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// String renders the element as nft writes it inside `elements = { }`.
func (e Element) String() string {
	if e.Value == "" {
		return e.Key
	}
	return e.Key + " : " + e.Value
}

// String renders the whole desired state: the nft table, then the rules,
// routes and sysctls, in the order the daemon applies them.
func (d *Desired) String() string {
	var b strings.Builder
	b.WriteString("# nft table (replaced atomically)\n")
	b.WriteString(d.Table.String())
	b.WriteString("\n# routes\n")
	for _, r := range d.Routes {
		fmt.Fprintf(&b, "%s\n", r)
	}
	b.WriteString("\n# rules\n")
	for _, r := range d.Rules {
		if r.Comment != "" {
			fmt.Fprintf(&b, "%-80s # %s\n", r, r.Comment)
		} else {
			fmt.Fprintf(&b, "%s\n", r)
		}
	}
	b.WriteString("\n# sysctls\n")
	for _, s := range d.Sysctls {
		if s.Comment != "" {
			fmt.Fprintf(&b, "%-60s # %s\n", s, s.Comment)
		} else {
			fmt.Fprintf(&b, "%s\n", s)
		}
	}
	return b.String()
}

// SameKernelState reports whether d and o ask the same of the kernel: the
// same table, rules, routes and sysctls. It is what comparing their
// String forms tells, without rendering them: the daemon asks it on every
// decision, before it may apply.
func (d *Desired) SameKernelState(o *Desired) bool {
	return d.Table.Equal(&o.Table) && slices.Equal(d.Rules, o.Rules) && slices.Equal(d.Routes, o.Routes) &&
		slices.Equal(d.Sysctls, o.Sysctls)
}

// Equal reports whether t and o are the same table, field by field.
func (t *Table) Equal(o *Table) bool {
	return t.Family == o.Family && t.Name == o.Name && slices.Equal(t.Counters, o.Counters) &&
		slices.EqualFunc(t.Sets, o.Sets, Set.Equal) && slices.EqualFunc(t.Chains, o.Chains, Chain.Equal)
}

// Equal reports whether s and o are the same set, elements included.
func (s Set) Equal(o Set) bool {
	return s.Name == o.Name && s.Type == o.Type && s.TypeOf == o.TypeOf && s.Map == o.Map && s.Comment == o.Comment &&
		slices.Equal(s.Flags, o.Flags) && slices.Equal(s.Elements, o.Elements)
}

// Equal reports whether c and o are the same chain, rules included.
func (c Chain) Equal(o Chain) bool {
	return c.Name == o.Name && c.Type == o.Type && c.Hook == o.Hook && c.Priority == o.Priority &&
		c.Comment == o.Comment && c.Terminal == o.Terminal && slices.Equal(c.Rules, o.Rules)
}
