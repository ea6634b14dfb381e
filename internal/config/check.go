package config

import (
	"cmp"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
)

// check runs the checks that span several parts of the config: unique
// names, references between sections, routing table ids, the number of
// WANs and their IPv6 prefixes, and the size of the mark mask. It also
// appends the implicit policies that rules' `wan:` shorthand refers to.
//
// Names are compared even when they failed their own syntax check, so a
// reference to a misspelt-but-defined name is not reported a second time
// as unknown.
func (d *decoder) check(c *Config, src *sources) {
	wans := d.checkWANs(c, src)
	d.checkPrefixes6(c, src)
	policies := d.checkPolicies(c, src, wans)
	d.checkRules(c, src, wans, policies)

	if dp := src.defaultPolicy; dp.given() && c.DefaultPolicy != "" {
		if _, ok := policies[c.DefaultPolicy]; !ok {
			dp.errorf("unknown policy %q", c.DefaultPolicy)
		}
	}
	d.checkMarkMask(c, src)
	d.checkUnderlays(c, src, wans)
	d.checkDNS(c, src)
}

// names finds names of one kind ("WAN", "policy", "rule") that are equal,
// or equal in nft, where '-' becomes '_' (see NFTName): two such objects
// would share an nft set or chain.
type names struct {
	kind  string
	byNFT map[string]named // by NFTName
	pos   map[string]Pos   // every name added, as written
}

type named struct {
	name string
	pos  Pos
}

func newNames(kind string) *names {
	return &names{kind: kind, byNFT: map[string]named{}, pos: map[string]Pos{}}
}

// add reports name, at pos, if it clashes with one added before.
func (n *names) add(d *decoder, name string, pos Pos) {
	if name == "" {
		return
	}
	first, dup := n.byNFT[NFTName(name)]
	switch {
	case !dup:
		n.byNFT[NFTName(name)] = named{name, pos}
		n.pos[name] = pos
	case first.name == name:
		d.addError(pos, "duplicate %s name %q (first at %d:%d)", n.kind, name, first.pos.Line, first.pos.Col)
	default:
		d.addError(pos, "%s name %q is the same as %q (%d:%d) in nft, where '-' becomes '_'", n.kind, name, first.name, first.pos.Line, first.pos.Col)
		if _, ok := n.pos[name]; !ok {
			n.pos[name] = pos // defined, for references to it
		}
	}
}

// checkWANs checks that names, interfaces and tables are not shared and
// that there are not too many WANs, and returns the WAN names with their
// positions.
func (d *decoder) checkWANs(c *Config, src *sources) map[string]Pos {
	names := newNames("WAN")
	ifaces := map[string]string{} // interface → WAN
	tables := map[int]int{}       // table → index of the WAN using it
	for i, w := range c.WANs {
		s := src.wan[i]
		names.add(d, w.Name, s.name.pos)
		if i == maxWANs {
			d.addError(w.Pos, "at most %d WANs (ip rule priorities are allocated in bands of 100)", maxWANs)
		}
		if w.Interface != "" {
			if other, dup := ifaces[w.Interface]; dup {
				d.addError(s.iface.pos, "interface %q is already used by WAN %q", w.Interface, other)
			} else {
				ifaces[w.Interface] = w.Name
			}
		}
		if w.Table == 0 {
			continue // invalid, already reported
		}
		if !s.table.given() {
			if what, reserved := reservedTables[int64(w.Table)]; reserved {
				d.addError(w.Pos, "the default table %d of this WAN is reserved for the kernel's %s table; set table", w.Table, what)
				continue
			}
		}
		j, clash := tables[w.Table]
		if !clash {
			tables[w.Table] = i
			continue
		}
		// Two defaults never clash, so one of the pair is explicit: report
		// there, as that is the value to change.
		at, other := i, j
		if !s.table.given() {
			at, other = j, i
		}
		msg := fmt.Sprintf("table %d of WAN %q clashes with WAN %q", w.Table, c.WANs[at].Name, c.WANs[other].Name)
		if !src.wan[other].table.given() {
			msg += fmt.Sprintf(" (its default table: %d + %d)", DefaultTableBase, other+1)
		}
		d.addError(src.wan[at].table.pos, "%s", msg)
	}
	return names.pos
}

// checkPrefixes6 checks that no two prefixes6, of one WAN or of two,
// overlap: traffic from the overlap would have two WANs to leave by. Each
// overlap is reported at the prefix written later.
func (d *decoder) checkPrefixes6(c *Config, src *sources) {
	type entry struct {
		p   netip.Prefix
		wan int
		pos Pos
	}
	var all []entry
	for i, w := range c.WANs {
		for k, p := range w.Prefixes6 {
			all = append(all, entry{p, i, src.wan[i].prefixes6[k]})
		}
	}
	// Sorted by address, then the shorter prefix first, a prefix
	// overlaps an earlier one only if the earlier contains it; the stack
	// holds the chain of prefixes containing the current one.
	slices.SortFunc(all, func(a, b entry) int {
		return cmp.Or(a.p.Addr().Compare(b.p.Addr()), cmp.Compare(a.p.Bits(), b.p.Bits()))
	})
	var stack []entry
	for _, e := range all {
		for len(stack) > 0 && !stack[len(stack)-1].p.Contains(e.p.Addr()) {
			stack = stack[:len(stack)-1]
		}
		if len(stack) > 0 {
			outer := stack[len(stack)-1]
			at, other := e, outer
			if before(at.pos, other.pos) {
				at, other = other, at
			}
			whose := fmt.Sprintf("WAN %q", c.WANs[other.wan].Name)
			if other.wan == at.wan {
				whose = "this WAN"
			}
			d.addError(at.pos, "prefixes6: %s overlaps %s of %s (%d:%d)", at.p, other.p, whose, other.pos.Line, other.pos.Col)
		}
		stack = append(stack, e)
	}
}

// before reports whether a comes before b in the file.
func before(a, b Pos) bool {
	return a.Line < b.Line || a.Line == b.Line && a.Col < b.Col
}

// checkPolicies checks policy names and members, and returns the names of
// the user's policies.
func (d *decoder) checkPolicies(c *Config, src *sources, wans map[string]Pos) map[string]Pos {
	names := newNames("policy")
	for i, p := range c.Policies {
		s := src.policy[i]
		names.add(d, p.Name, s.name.pos)
		members := map[string]bool{}
		for k, m := range p.Members {
			wan := s.members[k]
			if m.WAN == "" {
				continue
			}
			if _, ok := wans[m.WAN]; !ok {
				wan.errorf("unknown WAN %q", m.WAN)
			}
			if members[m.WAN] {
				wan.errorf("WAN %q is already a member of this policy", m.WAN)
			}
			members[m.WAN] = true
		}
	}
	return names.pos
}

// checkRules checks rule names and what rules refer to, and appends one
// implicit policy per WAN named by a rule's `wan:`, in order of first use.
func (d *decoder) checkRules(c *Config, src *sources, wans, policies map[string]Pos) {
	names := newNames("rule")
	implicit := map[string]bool{}
	for i, r := range c.Rules {
		s := src.rule[i]
		names.add(d, r.Name, s.name.pos)
		if s.policy.given() && s.policyName != "" {
			if _, ok := policies[s.policyName]; !ok {
				s.policy.errorf("unknown policy %q", s.policyName)
			}
		}
		if !s.wan.given() || s.wanName == "" {
			continue
		}
		if _, ok := wans[s.wanName]; !ok {
			s.wan.errorf("unknown WAN %q", s.wanName)
			continue
		}
		if s.policy.given() || implicit[s.wanName] {
			continue
		}
		implicit[s.wanName] = true
		c.Policies = append(c.Policies, Policy{
			Name:       ImplicitPolicyName(s.wanName),
			Members:    []Member{{WAN: s.wanName, Tier: DefaultTier, Weight: DefaultWeight}},
			LastResort: DefaultLastResort,
			Sticky:     DefaultSticky,
			Implicit:   true,
			Pos:        s.wan.pos,
		})
	}
}

// checkMarkMask checks that the mask can hold what multiwan stores in it:
// a WAN id 1..N, the three last-resort marks N+1..N+3, and one bit flagging
// movable flows.
func (d *decoder) checkMarkMask(c *Config, src *sources) {
	if c.MarkMask == 0 {
		return // reported where decoded
	}
	n := len(c.WANs)
	need := bits.Len(uint(n+3)) + 1
	have := bits.OnesCount32(c.MarkMask)
	if have >= need {
		return
	}
	msg := fmt.Sprintf("mark_mask %#x has %d %s; %d %s at least %d",
		c.MarkMask, have, plural(have, "bit", "bits"), n, plural(n, "WAN needs", "WANs need"), need)
	if src.markMask.given() {
		d.addError(src.markMask.pos, "%s", msg)
	} else {
		d.addError(src.wans.pos, "the default %s", msg)
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
