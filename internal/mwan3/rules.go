package mwan3

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/multiwan/multiwan/internal/config"
)

// famSet is a set of address families: bit 4 and bit 6.
type famSet uint8

const (
	fam4   famSet = 1 << 0
	fam6   famSet = 1 << 1
	famAny        = fam4 | fam6
)

func famOf(f int) famSet {
	if f == 6 {
		return fam6
	}
	return fam4
}

func (s famSet) has(f int) bool { return s&famOf(f) != 0 }

func (s famSet) String() string {
	switch s {
	case fam4:
		return "IPv4"
	case fam6:
		return "IPv6"
	case famAny:
		return "IPv4 and IPv6"
	}
	return "no family"
}

// rule is a `config rule`.
type rule struct {
	sec              *Section
	label            string // how comments name it
	name             string
	src, dst         []string
	proto            string
	srcPort, dstPort []string
	iif              []string
	fams             famSet
	target           string // use_policy
	targetAt         Pos
	sticky           bool
	timeout          int
	ipset            string
	notes            []string
	// skip is why the rule is written commented out; "" if it is live.
	skip string
	// broken is set for a rule mwan3 could not apply at all (it matches
	// nothing there).
	broken   bool
	catchAll bool
	// policy is the rule's policy when use_policy names one.
	policy *policy
	// fold is set for a catch-all that became default_policy.
	fold bool
	// restrict is set when the rule must be limited to one family by a
	// catch-all prefix (family ipv4 without addresses).
	restrict famSet
}

// builtin reports whether use_policy names one of mwan3's built-in
// policies.
func (r *rule) builtin() bool {
	return r.target == "default" || r.target == "unreachable" || r.target == "blackhole"
}

// protoNames maps iptables protocol names to multiwan's.
var protoNames = map[string]string{
	"tcp": "tcp", "udp": "udp", "icmp": "icmp", "icmpv6": "icmpv6", "ipv6-icmp": "icmpv6",
	"sctp": "sctp", "udplite": "udplite", "gre": "gre", "esp": "esp", "ah": "51",
	"igmp": "2", "ipip": "4", "ipv6": "41", "ospf": "89", "vrrp": "112",
}

func (c *conv) readRule(s *Section) {
	r := &rule{sec: s, fams: famAny, timeout: defRuleTimeout}
	r.label = "rule " + q(s.Name)
	if s.Name == "" {
		// As `uci show` names an anonymous section.
		r.label = fmt.Sprintf("rule @rule[%d]", len(c.rules))
	}
	c.rules = append(c.rules, r)
	if len(s.Name) > maxMWAN3Name {
		r.notes = append(r.notes, fmt.Sprintf("mwan3 ignored this rule (its name is longer than %d characters); converted as written.", maxMWAN3Name))
		c.warnf(s.Pos, "mwan3 ignores %s (name longer than %d characters); it is converted as written", r.label, maxMWAN3Name)
	}
	if v, at, ok := s.Value("family"); ok {
		switch v {
		case "any":
		case "ipv4":
			r.fams = fam4
		case "ipv6":
			r.fams = fam6
		default:
			c.errorf(at, "option family: %s is not ipv4, ipv6 or any", q(v))
		}
	}
	var ok bool
	if r.src, ok = c.addresses(r, "src_ip"); !ok {
		return
	}
	if r.dst, ok = c.addresses(r, "dest_ip"); !ok {
		return
	}
	for _, a := range append(append([]string(nil), r.src...), r.dst...) {
		if p := netip.MustParsePrefix(a); p.Addr().Is4() {
			r.fams &= fam4
		} else {
			r.fams &= fam6
		}
	}
	if r.fams == 0 {
		r.skip = "its addresses and family do not agree (an IPv4 and an IPv6 address, or an address of another family than `family`), so mwan3 never applied it."
		r.broken = true
		c.warnf(s.Pos, "%s: its addresses and family do not agree; mwan3 never applied it", r.label)
		return
	}
	if v, at, ok := s.Value("proto"); ok && v != "all" {
		p, known := protoNames[strings.ToLower(v)]
		if n, err := strconv.Atoi(v); err == nil && n >= 0 && n <= 255 {
			p, known = strconv.Itoa(n), true
		}
		if !known {
			r.skip = fmt.Sprintf("proto %s is not a protocol this converter knows; write it as a number (proto: N).", q(v))
			c.warnf(at, "%s: unknown proto %s: the rule is written commented out", r.label, q(v))
			return
		}
		r.proto = p
	}
	if r.srcPort, ok = c.ports(r, "src_port"); !ok {
		return
	}
	if r.dstPort, ok = c.ports(r, "dest_port"); !ok {
		return
	}
	if (len(r.srcPort) > 0 || len(r.dstPort) > 0) && r.proto != "tcp" && r.proto != "udp" {
		proto := r.proto
		if proto == "" {
			proto = "all"
		}
		r.notes = append(r.notes, fmt.Sprintf("src_port/dest_port: mwan3 ignored the ports, proto %s being neither tcp nor udp, and so does the conversion (set proto to match them).", q(proto)))
		c.warnf(s.Pos, "%s: mwan3 ignores its ports (proto %s is not tcp or udp), so the rule matches every port", r.label, q(proto))
		r.srcPort, r.dstPort = nil, nil
	}
	if v, _, ok := s.Value("src_iface"); ok {
		r.iif = []string{v}
		r.notes = append(r.notes, fmt.Sprintf("TODO: src_iface %s is an OpenWrt logical interface; iif needs its Linux device (e.g. br-lan for lan).", q(v)))
	}
	r.sticky = c.boolean(s, "sticky", false)
	r.timeout, _, _ = c.number(s, "timeout", defRuleTimeout, 1, 1<<30)
	if v, _, ok := s.Value("ipset"); ok {
		r.ipset = v
	}
	for _, o := range s.Options {
		switch o.Name {
		case "family", "src_ip", "dest_ip", "proto", "src_port", "dest_port", "src_iface", "sticky", "timeout", "ipset", "use_policy":
		case "logging":
			r.notes = append(r.notes, "logging: multiwan does not log packets (an nft rule with `log` does); `multiwan events` shows its decisions.")
		default:
			r.notes = append(r.notes, fmt.Sprintf("option %s %s is not an mwan3 rule option: not carried over.", o.Name, q(strings.Join(o.Values, " "))))
			c.warnf(o.Pos, "unknown rule option %s: not carried over", o.Name)
		}
	}
	v, at, ok := s.Value("use_policy")
	if !ok {
		r.skip = "it has no use_policy, so mwan3 ignored it."
		r.broken = true
		return
	}
	r.target, r.targetAt = v, at
	if r.ipset != "" {
		r.skip = fmt.Sprintf("ipset %s: multiwan matches address lists from files (dst_file), not ipsets, which it can neither read nor follow (dnsmasq may fill them by domain name). Write the set's addresses to a file, one per line (ipset list %s | sed '1,/^Members:/d' > /etc/multiwan/%s.txt), then uncomment the rule.", q(r.ipset), r.ipset, r.ipset)
		c.warnf(s.Pos, "%s matches ipset %s, which multiwan cannot read: the rule is written commented out, so that traffic goes by later rules until you give it a list file", r.label, q(r.ipset))
	}
	r.catchAll = r.proto == "" && len(r.srcPort) == 0 && len(r.dstPort) == 0 && len(r.iif) == 0 && r.ipset == "" &&
		allDefault(r.src) && allDefault(r.dst)
}

// allDefault reports whether every prefix is a /0.
func allDefault(ps []string) bool {
	for _, p := range ps {
		if netip.MustParsePrefix(p).Bits() != 0 {
			return false
		}
	}
	return true
}

// addresses reads src_ip or dest_ip: addresses and prefixes separated by
// commas or blanks (as iptables -s/-d takes them). A malformed one makes
// the rule commented out (ok false).
func (c *conv) addresses(r *rule, name string) ([]string, bool) {
	v, at, ok := r.sec.Value(name)
	if !ok {
		return nil, true
	}
	var out []string
	for _, s := range strings.FieldsFunc(v, func(c rune) bool { return c == ',' || c == ' ' || c == '\t' }) {
		var p netip.Prefix
		var err error
		if strings.Contains(s, "/") {
			p, err = netip.ParsePrefix(s)
		} else {
			var a netip.Addr
			if a, err = netip.ParseAddr(s); err == nil {
				p = netip.PrefixFrom(a, a.BitLen())
			}
		}
		if err != nil || p.Addr().Zone() != "" {
			r.skip = fmt.Sprintf("%s %s is not an address or prefix multiwan can match (host names and ranges are not).", name, q(s))
			r.broken = true
			c.warnf(at, "%s: %s %s is not an address or prefix: the rule is written commented out", r.label, name, q(s))
			return nil, false
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
		}
		if m := p.Masked(); m != p {
			r.notes = append(r.notes, fmt.Sprintf("%s %s has host bits set; iptables matched %s.", name, s, m))
			p = m
		}
		out = append(out, p.String())
	}
	return out, true
}

// ports reads src_port or dest_port: ports and ranges (1000:2000, or
// 1000-2000) separated by commas, as iptables' multiport takes them.
func (c *conv) ports(r *rule, name string) ([]string, bool) {
	v, at, ok := r.sec.Value(name)
	if !ok {
		return nil, true
	}
	var out []string
	for _, s := range strings.FieldsFunc(v, func(c rune) bool { return c == ',' || c == ' ' || c == '\t' }) {
		lo, hi, isRange := strings.Cut(strings.ReplaceAll(s, ":", "-"), "-")
		a, err1 := strconv.Atoi(lo)
		b, err2 := a, error(nil)
		if isRange {
			b, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || a < 1 || b > 65535 || a > b {
			r.skip = fmt.Sprintf("%s %s is not a port or range multiwan can match.", name, q(s))
			r.broken = true
			c.warnf(at, "%s: %s %s is not a port or range: the rule is written commented out", r.label, name, q(s))
			return nil, false
		}
		if a == b {
			out = append(out, strconv.Itoa(a))
		} else {
			out = append(out, fmt.Sprintf("%d-%d", a, b))
		}
	}
	return out, true
}

// buildRules decides, in mwan3's order (first match wins), which rules
// carry over, which become default_policy, and which are written
// commented out, and why.
func (c *conv) buildRules() {
	ruleNames := map[string]bool{}
	caught := map[int]*rule{} // family → the catch-all rule that took all of its traffic
	var effective []*rule     // rules that took traffic in mwan3, in order
	for i, r := range c.rules {
		base := r.sec.Name
		if base == "" {
			base = fmt.Sprintf("rule%d", i+1)
		}
		r.name = config.UniqueName(base, "x", maxRuleName, ruleNames)
		if r.broken || (r.skip != "" && r.target == "") {
			continue
		}
		live := r.fams
		for _, f := range []int{4, 6} {
			if caught[f] != nil {
				live &^= famOf(f)
			}
		}
		if live == 0 {
			by := caught[4]
			if by == nil || !r.fams.has(4) {
				by = caught[6]
			}
			r.skip = fmt.Sprintf("it is never reached in mwan3: %s before it takes all of its traffic.", by.label)
			continue
		}
		if live != r.fams {
			r.notes = append(r.notes, fmt.Sprintf("only %s traffic reached it in mwan3 (a rule before it took all the rest).", live))
			r.fams = live
		}
		// A policy that does not exist is an empty chain in mwan3: the
		// rule marks nothing and traffic goes on to the next rule.
		if !r.builtin() {
			r.policy = c.policyByName[r.target]
			if r.policy == nil {
				r.skip = fmt.Sprintf("use_policy %s: there is no such policy, so mwan3 let its traffic go on to the next rule.", q(r.target))
				c.warnf(r.targetAt, "%s: use_policy %s names no policy (mwan3 lets its traffic through to the next rule)", r.label, q(r.target))
				continue
			}
		}
		if r.skip != "" {
			// ipset: the rule took traffic in mwan3 but is commented out.
			continue
		}
		effective = append(effective, r)
		if r.catchAll {
			for _, f := range []int{4, 6} {
				if live.has(f) {
					caught[f] = r
				}
			}
		}
	}

	// Catch-alls at the end of the list are what multiwan calls
	// default_policy; anything else traffic can reach unmatched went by
	// the main table in mwan3.
	tail := len(effective)
	for tail > 0 && effective[tail-1].catchAll {
		tail--
	}
	var t4, t6 *rule
	for _, r := range effective[tail:] {
		if r.fams.has(4) {
			t4 = r
		}
		if r.fams.has(6) {
			t6 = r
		}
	}
	usable := func(r *rule) bool { return r != nil && r.policy != nil && r.policy.usable() }
	switch {
	case usable(t4):
		t4.fold = true
		if t6 != nil && t6 != t4 && usable(t6) && t6.policy == t4.policy && t6.sticky == t4.sticky {
			t6.fold = true
		}
	case t4 == nil && usable(t6):
		t6.fold = true
	}
	var deflt *rule
	for _, r := range []*rule{t4, t6} {
		if r != nil && r.fold {
			deflt = r
			break
		}
	}
	for _, r := range effective {
		switch {
		case r.fold:
			r.skip = "" // written as default_policy
		case r.builtin():
			c.skipBuiltin(r)
		case !r.policy.usable():
			r.skip = fmt.Sprintf("no interface of policy %s is enabled, so mwan3 gave its traffic the policy's last resort (%s); multiwan policies need a usable member: uncomment it once a WAN of the policy is enabled.", q(r.target), r.policy.lastResort)
			c.warnf(r.targetAt, "%s: every interface of policy %s is disabled; the rule is written commented out, so its traffic goes by later rules", r.label, q(r.target))
		default:
			if r.catchAll {
				r.restrict = r.fams
			} else if len(r.src) == 0 && len(r.dst) == 0 && r.fams != famAny {
				r.restrict = r.fams
			}
		}
	}
	// Which policies need sticky, and whether default_policy is one.
	for _, r := range c.rules {
		if r.skip != "" || r.policy == nil {
			continue
		}
		if r.sticky {
			r.policy.usedSticky = true
		} else {
			r.policy.usedFlow = true
		}
	}
	if deflt == nil {
		c.synthesizeDefault(t4, t6)
		return
	}
	c.defaultPolicy = deflt.policy.name
	c.finishSticky()
	if deflt.sticky {
		c.defaultPolicy = deflt.policy.stickyFor()
	}
	what := fmt.Sprintf("%s (line %d)", deflt.label, deflt.sec.Pos.Line)
	for _, r := range []*rule{t4, t6} {
		if r != nil && r.fold && r != deflt {
			what += fmt.Sprintf(" and %s (line %d)", r.label, r.sec.Pos.Line)
		}
	}
	c.defaultNote = fmt.Sprintf("%s sent all remaining traffic to policy %s: in multiwan that is default_policy (a rule needs a match field).", what, q(deflt.policy.mwan3Name))
	if t4 != nil && t6 != nil && (!t4.fold || !t6.fold) {
		c.defaultNote += " The other family's catch-all stays a rule, matching ::/0 or 0.0.0.0/0."
	}
	for _, f := range []int{4, 6} {
		if caught[f] == nil {
			c.defaultNote += fmt.Sprintf(" mwan3 left IPv%d traffic no rule matched to the main table; multiwan sends it by default_policy too (it matters only for WANs that carry IPv%d).", f, f)
		}
	}
}

// stickyFor is the name rules with sticky use for policy p.
func (p *policy) stickyFor() string {
	if p.stickyName != "" {
		return p.stickyName
	}
	return p.name
}

// finishSticky makes policies sticky, or sticky copies of them, as their
// rules need.
func (c *conv) finishSticky() {
	for _, p := range c.policies {
		switch {
		case p.usedSticky && !p.usedFlow && (c.defaultPolicy != p.name):
			p.sticky = true
		case p.usedSticky:
			p.stickyName = config.UniqueName(p.name+"_sticky", "x", maxPolicyName, c.policyNames)
		}
	}
}

// skipBuiltin comments out a rule whose use_policy is one of mwan3's
// built-ins, which multiwan cannot express.
func (c *conv) skipBuiltin(r *rule) {
	switch r.target {
	case "default":
		r.skip = "use_policy default left this traffic to the main routing table. multiwan lets the main table's routes other than default routes win for all traffic (ip rule 1000), so traffic to a LAN, a VPN or another routed network needs no rule; traffic the main table would send by its default route is steered by multiwan: give it a policy."
		c.warnf(r.targetAt, "%s: use_policy default (the main table) has no multiwan counterpart; the rule is written commented out, so its traffic goes by later rules", r.label)
	default:
		r.skip = fmt.Sprintf("use_policy %s %s this traffic; multiwan only chooses WANs: block it with a firewall rule (nft ... %s) instead.", r.target,
			map[string]string{"unreachable": "rejected", "blackhole": "dropped"}[r.target],
			map[string]string{"unreachable": "reject", "blackhole": "drop"}[r.target])
		c.warnf(r.targetAt, "%s: use_policy %s has no multiwan counterpart; the rule is written commented out, so this traffic is no longer blocked: add a firewall rule", r.label, r.target)
	}
}

// synthesizeDefault makes the policy for traffic no rule matches when
// mwan3 had none (it used the main table) or had one multiwan cannot
// express.
func (c *conv) synthesizeDefault(t4, t6 *rule) {
	c.finishSticky()
	name := config.UniqueName("failover", "x", maxPolicyName, c.policyNames)
	p := &policy{name: name, lastResort: "main"}
	tier := 0
	for _, w := range c.wans {
		if w.enabled() {
			tier++
			p.members = append(p.members, &pmember{wan: w, tier: tier, weight: 1, enabled: true})
		}
	}
	why := "mwan3 left traffic that no rule matched to the main routing table (the default route of the uplink with the lowest metric, without health checks)."
	for _, r := range []*rule{t4, t6} {
		if r == nil || r.fold {
			continue
		}
		switch {
		case r.target == "unreachable" || r.target == "blackhole":
			why = fmt.Sprintf("%s (line %d) %s all remaining traffic (use_policy %s), which multiwan cannot express: it is routed by this policy now; block it with a firewall rule if it must stay blocked.", r.label, r.sec.Pos.Line,
				map[string]string{"unreachable": "rejected", "blackhole": "dropped"}[r.target], r.target)
			c.warnf(r.sec.Pos, "%s blocked all remaining traffic; multiwan routes it by the default policy %s: add a firewall rule to keep it blocked", r.label, name)
		case r.target == "default":
			why = fmt.Sprintf("%s (line %d) left all remaining traffic to the main routing table (use_policy default).", r.label, r.sec.Pos.Line)
		case r.policy != nil && !r.policy.usable():
			why = fmt.Sprintf("%s (line %d) sent all remaining traffic to policy %s, none of whose interfaces is enabled.", r.label, r.sec.Pos.Line, q(r.target))
		}
	}
	p.made = why + " multiwan sends it by default_policy: this failover over every enabled WAN, in the order of the mwan3 file, with the main table as last resort, is the nearest; reorder the tiers to match the metrics of your main table's default routes (lowest first)."
	c.synthesized = p
	c.defaultPolicy = name
}
