package daemon

import (
	"fmt"
	"slices"
	"time"

	"github.com/multiwan/multiwan/internal/control"
	"github.com/multiwan/multiwan/internal/plan"
)

// flowDeletion names the conntrack entries to delete: those whose mark,
// under mask, equals mark, of one address family (4, 6) or both (0).
type flowDeletion struct {
	wan        string
	mark, mask uint32
	family     int
	cause      string
}

// staleFlows lists the conntrack entries that the change from old to cur
// made stale, as a pure function of the two plans:
//
//   - every entry of a WAN that went down (per family): its clients
//     reconnect through a live WAN at once instead of waiting for TCP to
//     give up;
//   - the movable entries of a WAN that lost new connections in some
//     policy: their next packet is classified again and NAT is redone;
//   - every entry of a WAN whose mark changed or that left the config
//     (a reload renumbered or removed it): its mark now means something
//     else, or nothing.
//
// Nothing is deleted before the first plan was installed (old == nil):
// connections that survived a restart keep their WAN.
func staleFlows(old, cur *plan.Desired) []flowDeletion {
	if old == nil || cur == nil {
		return nil
	}
	var out []flowDeletion
	names := make([]string, 0, len(old.Marks))
	for name := range old.Marks {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		mark := old.Marks[name]
		curMark, ok := cur.Marks[name]
		switch {
		case !ok:
			out = append(out, flowDeletion{name, mark, old.IDMask, 0, "the WAN left the config"})
			continue
		case curMark != mark:
			out = append(out, flowDeletion{name, mark, old.IDMask, 0, "the WAN's mark changed"})
			continue
		}
		fams := []struct {
			family        int
			key           string
			before, after []plan.PolicyChoice
		}{{4, name, old.Policies, cur.Policies}}
		if cur.IPv6 {
			fams = append(fams, struct {
				family        int
				key           string
				before, after []plan.PolicyChoice
			}{6, plan.Key6(name), old.Policies6, cur.Policies6})
		}
		for _, f := range fams {
			was, is := old.States[f.key], cur.States[f.key]
			switch {
			case was != "" && was != plan.StateDown && is == plan.StateDown:
				out = append(out, flowDeletion{name, mark, cur.IDMask, f.family, "WAN down"})
			case lostActive(f.before, f.after, name):
				out = append(out, flowDeletion{name, mark | cur.MovableBit, cur.IDMask | cur.MovableBit, f.family,
					"movable flows follow the switch"})
			}
		}
	}
	return out
}

// lostActive reports whether wan took new connections of some policy in
// before but not in after.
func lostActive(before, after []plan.PolicyChoice, wan string) bool {
	uses := func(p plan.PolicyChoice) bool {
		return slices.ContainsFunc(p.Active, func(s plan.Share) bool { return s.WAN == wan })
	}
	for _, p := range before {
		if !uses(p) {
			continue
		}
		i := slices.IndexFunc(after, func(q plan.PolicyChoice) bool { return q.Name == p.Name })
		if i < 0 || !uses(after[i]) {
			return true
		}
	}
	return false
}

var familyNames = map[int]string{0: "both", 4: "ipv4", 6: "ipv6"}

// deleteFlows carries the deletions out, in the kernel, one netlink
// request each.
func (d *Daemon) deleteFlows(dels []flowDeletion) {
	if d.opt.Flows == nil {
		return
	}
	for _, del := range dels {
		start := time.Now()
		fam := familyNames[del.family]
		mark := fmt.Sprintf("%#x/%#x", del.mark, del.mask)
		if err := d.opt.Flows.DeleteByMarkFamily(del.mark, del.mask, del.family); err != nil {
			d.log.Error("deleting conntrack entries failed", "wan", del.wan, "family", fam, "mark", mark, "err", err)
			continue
		}
		took := time.Since(start).Round(time.Microsecond)
		d.log.Info("conntrack entries deleted", "wan", del.wan, "family", fam, "mark", mark, "cause", del.cause, "took", took)
		d.event(control.Event{Kind: "flows-deleted", WAN: del.wan, Family: familyName(del.family), Cause: del.cause,
			Message: fmt.Sprintf("conntrack entries of %s deleted (%s, mark %s, %s)", del.wan, del.cause, mark, took)})
	}
}

func familyName(f int) string {
	if f == 0 {
		return ""
	}
	return familyNames[f]
}
