package kernel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/multiwan/multiwan/internal/plan"
)

// Routing installs multiwan's policy-routing rules and routes over netlink.
// It owns exactly the rules and routes whose protocol is plan.RouteProtocol:
// it adds, replaces and deletes those, and never changes anyone else's. Every
// delete request carries that protocol too, so the kernel itself refuses to
// match a rule or route that is not multiwan's. The zero value is ready to
// use.
type Routing struct {
	// nl sends rule changes over sockets opened once, in the network
	// namespace of the thread that made it (NewRouting); nil opens a
	// socket per request in the calling thread's namespace.
	nl *netlink.Handle
}

// routingTimeout bounds each request on a Routing's lasting sockets: the
// kernel answers within the send, so a longer wait means something is
// badly wrong, and the apply fails and is retried rather than hang.
const routingTimeout = 2 * time.Second

// NewRouting returns a Routing whose rule changes go over lasting netlink
// sockets, opened here in the calling thread's network namespace: a
// switch moves a rule, and a socket opened and closed per request costs
// as much again as the change itself.
func NewRouting() (Routing, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return Routing{}, fmt.Errorf("open a netlink socket: %w", err)
	}
	if err := h.SetSocketTimeout(routingTimeout); err != nil {
		h.Close()
		return Routing{}, err
	}
	return Routing{nl: h}, nil
}

// link returns the handle rule changes go through.
func (r Routing) link() *netlink.Handle {
	if r.nl != nil {
		return r.nl
	}
	return &netlink.Handle{} // a socket per request, like the package's functions
}

// dumpAttempts bounds the retries of a dump the kernel reports as
// interrupted (the list changed while it was being read). Acting on a
// partial list could add duplicates or miss stale entries, so after this
// many attempts the apply fails and the caller retries later.
const dumpAttempts = 5

// retryDump runs dump again while the kernel says its answer may be
// inconsistent.
func retryDump[T any](dump func() (T, error)) (T, error) {
	var (
		v   T
		err error
	)
	for range dumpAttempts {
		v, err = dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, fmt.Errorf("dump interrupted %d times in a row: %w", dumpAttempts, err)
}

// ruleKey is a rule reduced to the fields multiwan sets. A desired rule and
// an installed one have equal keys exactly when nothing needs to change,
// which is what makes re-applying (and adopting after a restart) a no-op
// instead of a delete and add.
type ruleKey struct {
	family   int // unix.AF_INET or unix.AF_INET6
	priority int
	action   uint8 // unix.RTN_UNICAST (lookup), RTN_UNREACHABLE, RTN_BLACKHOLE
	table    int   // 0 unless action is lookup
	mark     uint32
	mask     uint32 // 0: no fwmark match
	src      netip.Prefix
	suppress int // suppress_prefixlength, -1 for none
	// other describes matches multiwan never sets (iif, dport, ...); a
	// kernel rule with any of them is never equal to a desired one.
	other string
}

// kernelRule is one of our rules as the kernel reported it.
type kernelRule struct {
	key ruleKey
	// rule holds every field the kernel reported, so that RuleDel finds
	// exactly this rule and not a sibling that differs only in a field
	// multiwan does not use.
	rule netlink.Rule
}

// ApplyRules makes multiwan's rules, in both families, exactly desired. It
// adds the missing ones before deleting the stale ones, so that a change
// never leaves a moment without a rule for a mark. Invalid desired rules
// fail the whole call before anything is changed; errors on single rules
// are joined and the others are still applied.
func (r Routing) ApplyRules(desired []plan.Rule) (added, deleted int, err error) {
	want, err := ruleKeys(desired)
	if err != nil {
		return 0, 0, err
	}
	have, err := ourRules()
	if err != nil {
		return 0, 0, err
	}
	add, del := diffRules(want, have)
	added, addErr := r.addRules(add)
	deleted, delErr := r.deleteRules(del)
	return added, deleted, errors.Join(addErr, delErr)
}

// ApplyRuleChanges turns the rules from, which the kernel is known to
// hold, into to without reading the kernel's rules first: it adds what to
// has more and deletes what it has less, in that order. A switch moves one
// rule (the router's own sockets follow the best WAN), and two rule dumps
// would cost more than the move. A rule already present, or already gone,
// meets the goal; anything else someone changed behind multiwan's back is
// found by the next full ApplyRules (a repair, or the periodic recheck).
func (r Routing) ApplyRuleChanges(from, to []plan.Rule) (added, deleted int, err error) {
	want, err := ruleKeys(to)
	if err != nil {
		return 0, 0, err
	}
	have, err := ruleKeys(from)
	if err != nil {
		return 0, 0, err
	}
	var add []ruleKey
	var del []kernelRule
	for _, k := range want {
		if !slices.Contains(have, k) {
			add = append(add, k)
		}
	}
	for _, k := range have {
		if !slices.Contains(want, k) {
			del = append(del, kernelRule{key: k, rule: *k.netlink()})
		}
	}
	added, addErr := r.addRules(add)
	deleted, delErr := r.deleteRules(del)
	return added, deleted, errors.Join(addErr, delErr)
}

// RemoveAll deletes every rule and route that is ours, in both families
// and all tables: the rules first, so that no rule points at a table while
// it is being emptied.
func (r Routing) RemoveAll() error {
	_, rulesErr := r.removeRules()
	_, routesErr := r.removeRoutes()
	return errors.Join(rulesErr, routesErr)
}

// removeRules deletes every rule that is ours.
func (r Routing) removeRules() (int, error) {
	have, err := ourRules()
	if err != nil {
		return 0, err
	}
	return r.deleteRules(have)
}

// addRules adds each rule. One already there (added by a concurrent
// apply of an earlier daemon, or between a dump and the add) meets the
// goal and is not counted.
func (r Routing) addRules(keys []ruleKey) (int, error) {
	var (
		added int
		errs  []error
	)
	for _, k := range keys {
		switch err := r.link().RuleAdd(k.netlink()); {
		case err == nil:
			added++
		case errors.Is(err, unix.EEXIST):
		default:
			errs = append(errs, fmt.Errorf("add %s: %w", k, err))
		}
	}
	return added, errors.Join(errs...)
}

// deleteRules deletes each rule. One already gone meets the goal and is
// not counted.
func (r Routing) deleteRules(rules []kernelRule) (int, error) {
	var (
		deleted int
		errs    []error
	)
	for _, kr := range rules {
		kr.rule.Protocol = plan.RouteProtocol
		err := r.link().RuleDel(&kr.rule)
		switch {
		case err == nil:
			deleted++
		case errors.Is(err, unix.ENOENT):
			// Already gone, e.g. removed by hand meanwhile: the goal is met.
		default:
			errs = append(errs, fmt.Errorf("delete %s: %w", kr.key, err))
		}
	}
	return deleted, errors.Join(errs...)
}

// diffRules returns the desired rules that are missing and the installed
// ones to delete: those not desired, and duplicates of desired ones.
func diffRules(want []ruleKey, have []kernelRule) (add []ruleKey, del []kernelRule) {
	wanted := make(map[ruleKey]bool, len(want))
	for _, k := range want {
		wanted[k] = true
	}
	present := make(map[ruleKey]bool, len(have))
	for _, r := range have {
		if wanted[r.key] && !present[r.key] {
			present[r.key] = true
			continue
		}
		del = append(del, r)
	}
	for _, k := range want {
		if !present[k] {
			present[k] = true // add a rule listed twice once
			add = append(add, k)
		}
	}
	return add, del
}

// ruleKeys validates and converts the desired rules.
func ruleKeys(rules []plan.Rule) ([]ruleKey, error) {
	keys := make([]ruleKey, 0, len(rules))
	var errs []error
	for _, r := range rules {
		k, err := ruleKeyOf(r)
		if err != nil {
			errs = append(errs, fmt.Errorf("rule %q: %w", r.String(), err))
			continue
		}
		keys = append(keys, k)
	}
	return keys, errors.Join(errs...)
}

func ruleKeyOf(r plan.Rule) (ruleKey, error) {
	fam, err := addressFamily(r.Family)
	if err != nil {
		return ruleKey{}, err
	}
	if r.Priority < 0 {
		return ruleKey{}, fmt.Errorf("negative priority %d", r.Priority)
	}
	k := ruleKey{family: fam, priority: r.Priority, suppress: -1}
	switch r.Action {
	case "lookup":
		if r.Table <= 0 {
			return ruleKey{}, fmt.Errorf("lookup needs a table, got %d", r.Table)
		}
		k.action, k.table = unix.RTN_UNICAST, r.Table
		if r.SuppressPrefixLen >= 0 {
			if r.Table > 255 {
				// vishvananda/netlink sends suppress_prefixlength only
				// for tables that fit the 8-bit header field; it would be
				// dropped silently and re-added on every apply.
				return ruleKey{}, fmt.Errorf("suppress_prefixlength needs a table below 256, got %d", r.Table)
			}
			k.suppress = r.SuppressPrefixLen
		}
	case "unreachable":
		k.action = unix.RTN_UNREACHABLE
	case "blackhole":
		k.action = unix.RTN_BLACKHOLE
	default:
		return ruleKey{}, fmt.Errorf("unknown action %q", r.Action)
	}
	if r.Mask != 0 {
		k.mark, k.mask = r.Mark, r.Mask
	}
	if r.Src.IsValid() {
		if r.Src.Addr().Is4() != (fam == unix.AF_INET) {
			return ruleKey{}, fmt.Errorf("source %s is not IPv%d", r.Src, r.Family)
		}
		k.src = r.Src.Masked()
	}
	return k, nil
}

func addressFamily(f int) (int, error) {
	switch f {
	case 4:
		return unix.AF_INET, nil
	case 6:
		return unix.AF_INET6, nil
	}
	return 0, fmt.Errorf("family %d, want 4 or 6", f)
}

// netlink returns the rule to add for k.
func (k ruleKey) netlink() *netlink.Rule {
	r := netlink.NewRule()
	r.Family = k.family
	r.Priority = k.priority
	r.Type = k.action
	r.Table = k.table
	if k.mask != 0 {
		mask := k.mask
		r.Mark, r.Mask = k.mark, &mask
	}
	r.Src = ipNet(k.src)
	r.SuppressPrefixlen = k.suppress
	r.Protocol = plan.RouteProtocol
	return r
}

// String renders k as `ip rule` would, for error messages.
func (k ruleKey) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "rule %d: from ", k.priority)
	if k.src.IsValid() {
		b.WriteString(k.src.String())
	} else {
		b.WriteString("all")
	}
	if k.mask != 0 {
		fmt.Fprintf(&b, " fwmark %#x/%#x", k.mark, k.mask)
	}
	if k.other != "" {
		b.WriteString(" " + k.other)
	}
	switch k.action {
	case unix.RTN_UNICAST:
		fmt.Fprintf(&b, " lookup %d", k.table)
	case unix.RTN_UNREACHABLE:
		b.WriteString(" unreachable")
	case unix.RTN_BLACKHOLE:
		b.WriteString(" blackhole")
	default:
		fmt.Fprintf(&b, " action %d table %d", k.action, k.table)
	}
	if k.suppress >= 0 {
		fmt.Fprintf(&b, " suppress_prefixlength %d", k.suppress)
	}
	if k.family == unix.AF_INET6 {
		b.WriteString(" (IPv6)")
	}
	return b.String()
}

// ourRules lists the rules of both families whose protocol is ours.
func ourRules() ([]kernelRule, error) {
	var ours []kernelRule
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		rules, err := retryDump(func() ([]kernelRule, error) { return dumpRules(fam) })
		if errors.Is(err, unix.EAFNOSUPPORT) {
			continue // IPv6 disabled: there can be no rules of ours there
		}
		if err != nil {
			return nil, fmt.Errorf("list rules: %w", err)
		}
		for _, r := range rules {
			if r.rule.Protocol == plan.RouteProtocol {
				ours = append(ours, r)
			}
		}
	}
	return ours, nil
}

// dumpRules lists the rules of one family. It parses the dump itself
// because netlink.RuleList drops the rule's action, and an unreachable rule
// must not be mistaken for a blackhole one.
func dumpRules(family int) ([]kernelRule, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETRULE, unix.NLM_F_DUMP)
	// An all-zero header but for the family is what strict dump checking
	// accepts.
	req.AddData(&nl.RtMsg{RtMsg: unix.RtMsg{Family: uint8(family)}})
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWRULE)
	if err != nil {
		return nil, err
	}
	rules := make([]kernelRule, 0, len(msgs))
	for _, m := range msgs {
		r, err := parseRule(m)
		if err != nil {
			return nil, err
		}
		rules = append(rules, r)
	}
	return rules, nil
}

// parseRule decodes one RTM_NEWRULE message (a struct fib_rule_hdr, which
// has the layout of struct rtmsg, then attributes).
func parseRule(m []byte) (kernelRule, error) {
	if len(m) < unix.SizeofRtMsg {
		return kernelRule{}, fmt.Errorf("short rule message (%d bytes)", len(m))
	}
	hdr := nl.DeserializeRtMsg(m)
	attrs, err := nl.ParseRouteAttr(m[hdr.Len():])
	if err != nil {
		return kernelRule{}, fmt.Errorf("parse rule: %w", err)
	}
	r := netlink.NewRule()
	r.Priority = 0 // the kernel omits FRA_PRIORITY for priority 0
	r.Family = int(hdr.Family)
	r.Tos = uint(hdr.Tos)
	r.Type = hdr.Type // fib_rule_hdr.action
	r.Table = int(hdr.Table)
	r.Invert = hdr.Flags&netlink.FibRuleInvert != 0
	var other []string
	native := nl.NativeEndian()
	u32 := func(b []byte) uint32 {
		if len(b) < 4 {
			return 0
		}
		return native.Uint32(b)
	}
	for _, a := range attrs {
		v := a.Value
		switch a.Attr.Type {
		case unix.FRA_PRIORITY:
			r.Priority = int(u32(v))
		case unix.FRA_TABLE:
			r.Table = int(u32(v))
		case unix.FRA_SRC:
			r.Src = &net.IPNet{IP: v, Mask: net.CIDRMask(int(hdr.Src_len), 8*len(v))}
		case unix.FRA_DST:
			r.Dst = &net.IPNet{IP: v, Mask: net.CIDRMask(int(hdr.Dst_len), 8*len(v))}
			other = append(other, "to "+r.Dst.String())
		case unix.FRA_FWMARK:
			r.Mark = u32(v)
		case unix.FRA_FWMASK:
			mask := u32(v)
			r.Mask = &mask
		case unix.FRA_SUPPRESS_PREFIXLEN:
			r.SuppressPrefixlen = int(int32(u32(v)))
		case unix.FRA_SUPPRESS_IFGROUP:
			if g := int(int32(u32(v))); g != -1 {
				r.SuppressIfgroup = g
				other = append(other, fmt.Sprintf("suppress_ifgroup %d", g))
			}
		case unix.FRA_PROTOCOL:
			if len(v) > 0 {
				r.Protocol = v[0]
			}
		case unix.FRA_IIFNAME:
			r.IifName = unix.ByteSliceToString(v)
			other = append(other, "iif "+r.IifName)
		case unix.FRA_OIFNAME:
			r.OifName = unix.ByteSliceToString(v)
			other = append(other, "oif "+r.OifName)
		case unix.FRA_GOTO:
			r.Goto = int(u32(v))
			other = append(other, fmt.Sprintf("goto %d", r.Goto))
		case unix.FRA_FLOW:
			r.Flow = int(u32(v))
			other = append(other, fmt.Sprintf("realms %d", r.Flow))
		case unix.FRA_TUN_ID:
			if len(v) >= 8 {
				r.TunID = uint(native.Uint64(v))
			}
			other = append(other, fmt.Sprintf("tun_id %d", r.TunID))
		case unix.FRA_IP_PROTO:
			if len(v) > 0 {
				r.IPProto = int(v[0])
			}
			other = append(other, fmt.Sprintf("ipproto %d", r.IPProto))
		case unix.FRA_SPORT_RANGE, unix.FRA_DPORT_RANGE:
			if len(v) >= 4 {
				pr := netlink.NewRulePortRange(native.Uint16(v), native.Uint16(v[2:]))
				if a.Attr.Type == unix.FRA_SPORT_RANGE {
					r.Sport = pr
				} else {
					r.Dport = pr
				}
				other = append(other, fmt.Sprintf("port range %d-%d", pr.Start, pr.End))
			}
		case unix.FRA_UID_RANGE:
			if len(v) >= 8 {
				r.UIDRange = netlink.NewRuleUIDRange(native.Uint32(v), native.Uint32(v[4:]))
				other = append(other, fmt.Sprintf("uidrange %d-%d", r.UIDRange.Start, r.UIDRange.End))
			}
		case unix.FRA_L3MDEV:
			// netlink.Rule cannot express it, so a delete request is
			// less precise for such a rule; multiwan never sets it.
			other = append(other, "l3mdev")
		}
	}
	if r.Tos != 0 {
		other = append(other, fmt.Sprintf("tos %#x", r.Tos))
	}
	if r.Invert {
		other = append(other, "not")
	}
	return kernelRule{key: keyOfKernelRule(r, strings.Join(other, " ")), rule: *r}, nil
}

func keyOfKernelRule(r *netlink.Rule, other string) ruleKey {
	k := ruleKey{
		family:   r.Family,
		priority: r.Priority,
		action:   r.Type,
		table:    r.Table,
		mark:     r.Mark,
		src:      prefixOf(r.Src),
		suppress: r.SuppressPrefixlen,
		other:    other,
	}
	if r.Mask != nil {
		k.mask = *r.Mask
	}
	if k.mask == 0 {
		k.mark = 0
	}
	if k.action != unix.RTN_UNICAST {
		// Only lookup rules have a meaningful suppress_prefixlength; the
		// library never sends one for table 0, nor do we expect one.
		k.suppress = -1
	}
	return k
}

// prefixOf converts a netlink address and mask, nil meaning none.
func prefixOf(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	addr, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}
	}
	ones, bits := n.Mask.Size()
	if addr.Is4In6() {
		// net.IPv4zero and friends are 16 bytes long; the mask says
		// which form the length counts in.
		addr = addr.Unmap()
		if bits == 128 {
			ones = max(ones-96, 0)
		}
	}
	return netip.PrefixFrom(addr, ones).Masked()
}

// ipNet is the inverse of prefixOf.
func ipNet(p netip.Prefix) *net.IPNet {
	if !p.IsValid() {
		return nil
	}
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
