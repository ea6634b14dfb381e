package config

import (
	"fmt"
	"math/bits"
)

// check runs the checks that span several parts of the config: unique
// names, references between sections, routing table ids and the size of
// the mark mask. It also appends the implicit policies that rules' `wan:`
// shorthand refers to.
//
// Names are compared even when they failed their own syntax check, so a
// reference to a misspelt-but-defined name is not reported a second time
// as unknown.
func (d *decoder) check(c *Config, src *sources) {
	wans := d.checkWANs(c, src)
	policies := d.checkPolicies(c, src, wans)
	d.checkRules(c, src, wans, policies)

	if dp := src.defaultPolicy; dp.given() && c.DefaultPolicy != "" {
		if _, ok := policies[c.DefaultPolicy]; !ok {
			dp.errorf("unknown policy %q", c.DefaultPolicy)
		}
	}
	d.checkMarkMask(c, src)
}

// checkWANs checks that names, interfaces and tables are not shared, and
// returns the WAN names with their positions.
func (d *decoder) checkWANs(c *Config, src *sources) map[string]Pos {
	names := map[string]Pos{}
	ifaces := map[string]string{} // interface → WAN
	tables := map[int]int{}       // table → index of the WAN using it
	for i, w := range c.WANs {
		s := src.wan[i]
		if w.Name != "" {
			if first, dup := names[w.Name]; dup {
				d.addError(s.name.pos, "duplicate WAN name %q (first at %d:%d)", w.Name, first.Line, first.Col)
			} else {
				names[w.Name] = s.name.pos
			}
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
	return names
}

// checkPolicies checks policy names and members, and returns the names of
// the user's policies.
func (d *decoder) checkPolicies(c *Config, src *sources, wans map[string]Pos) map[string]Pos {
	names := map[string]Pos{}
	for i, p := range c.Policies {
		s := src.policy[i]
		if p.Name != "" {
			if first, dup := names[p.Name]; dup {
				d.addError(s.name.pos, "duplicate policy name %q (first at %d:%d)", p.Name, first.Line, first.Col)
			} else {
				names[p.Name] = s.name.pos
			}
		}
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
	return names
}

// checkRules checks rule names and what rules refer to, and appends one
// implicit policy per WAN named by a rule's `wan:`, in order of first use.
func (d *decoder) checkRules(c *Config, src *sources, wans, policies map[string]Pos) {
	names := map[string]Pos{}
	implicit := map[string]bool{}
	for i, r := range c.Rules {
		s := src.rule[i]
		if r.Name != "" {
			if first, dup := names[r.Name]; dup {
				d.addError(s.name.pos, "duplicate rule name %q (first at %d:%d)", r.Name, first.Line, first.Col)
			} else {
				names[r.Name] = s.name.pos
			}
		}
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
