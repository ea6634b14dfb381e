package links

// The ip rule subscription. vishvananda/netlink has none, so rule
// notifications are read with mdlayher/netlink and decoded here, minimally:
// the struct fib_rule_hdr, then the few attributes that say whose rule it
// was and which one.

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"

	mnl "github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/multiwan/multiwan/internal/plan"
)

// ruleEvent is one rule notification, reduced to what names the rule.
type ruleEvent struct {
	family     uint8  // unix.AF_INET or unix.AF_INET6
	protocol   uint8  // FRA_PROTOCOL: plan.RouteProtocol for ours
	priority   uint32 // FRA_PRIORITY, 0 when absent
	action     uint8  // fib_rule_hdr.action: unix.FR_ACT_TO_TBL, ...
	table      uint32 // FRA_TABLE, else fib_rule_hdr.table
	mark, mask uint32
	hasMark    bool
	src        netip.Prefix
}

const (
	// fibRuleHdrLen is sizeof(struct fib_rule_hdr): family, dst_len,
	// src_len, tos, table, res1, res2, action (one byte each), flags (u32).
	fibRuleHdrLen = 12
	// maxRuleAttrs bounds the attributes read per message; a rule has
	// at most a couple of dozen kinds.
	maxRuleAttrs = 64
)

// parseRuleMsg decodes the data of an RTM_NEWRULE or RTM_DELRULE message.
// Attribute headers and integer values are in host byte order.
func parseRuleMsg(data []byte) (ruleEvent, error) {
	if len(data) < fibRuleHdrLen {
		return ruleEvent{}, fmt.Errorf("rule message of %d bytes, shorter than its header", len(data))
	}
	ev := ruleEvent{family: data[0], table: uint32(data[4]), action: data[7]}
	srcLen := int(data[2])
	b := data[fibRuleHdrLen:]
	for range maxRuleAttrs {
		if len(b) < 4 {
			break
		}
		l := int(binary.NativeEndian.Uint16(b))
		t := binary.NativeEndian.Uint16(b[2:]) & 0x3fff // no NLA_F_NESTED / NET_BYTEORDER
		if l < 4 || l > len(b) {
			return ruleEvent{}, fmt.Errorf("rule attribute %d: length %d in %d bytes", t, l, len(b))
		}
		v := b[4:l]
		u32 := func() uint32 {
			if len(v) < 4 {
				return 0
			}
			return binary.NativeEndian.Uint32(v)
		}
		switch t {
		case unix.FRA_PROTOCOL:
			if len(v) > 0 {
				ev.protocol = v[0]
			}
		case unix.FRA_PRIORITY:
			ev.priority = u32()
		case unix.FRA_TABLE:
			ev.table = u32()
		case unix.FRA_FWMARK:
			ev.mark, ev.hasMark = u32(), true
		case unix.FRA_FWMASK:
			ev.mask, ev.hasMark = u32(), true
		case unix.FRA_SRC:
			if a, ok := netip.AddrFromSlice(v); ok {
				if p, err := a.Prefix(srcLen); err == nil {
					ev.src = p
				}
			}
		}
		b = b[min((l+3)&^3, len(b)):]
	}
	return ev, nil
}

// String says which rule went, the way `ip rule` shows it, e.g. "ip rule
// 1101 deleted (fwmark 0x100/0xff00 lookup 101)".
func (r ruleEvent) String() string {
	var b strings.Builder
	b.WriteString("ip ")
	if r.family == unix.AF_INET6 {
		b.WriteString("-6 ")
	}
	fmt.Fprintf(&b, "rule %d deleted (", r.priority)
	var parts []string
	if r.src.IsValid() {
		parts = append(parts, "from "+r.src.String())
	}
	if r.hasMark {
		parts = append(parts, fmt.Sprintf("fwmark %#x/%#x", r.mark, r.mask))
	}
	switch r.action {
	case unix.FR_ACT_TO_TBL:
		parts = append(parts, fmt.Sprintf("lookup %d", r.table))
	case unix.FR_ACT_BLACKHOLE:
		parts = append(parts, "blackhole")
	case unix.FR_ACT_UNREACHABLE:
		parts = append(parts, "unreachable")
	case unix.FR_ACT_PROHIBIT:
		parts = append(parts, "prohibit")
	default:
		parts = append(parts, fmt.Sprintf("action %d", r.action))
	}
	b.WriteString(strings.Join(parts, " "))
	b.WriteString(")")
	return b.String()
}

// planRule returns the rule as a plan.Rule, so that it can be looked for
// among the rules a plan wants; false for an action multiwan never uses.
// SuppressPrefixLen and Comment are not told by the kernel's message and
// are left zero.
func (r ruleEvent) planRule() (plan.Rule, bool) {
	pr := plan.Rule{Family: 4, Priority: int(r.priority), Src: r.src}
	if r.family == unix.AF_INET6 {
		pr.Family = 6
	}
	if r.hasMark {
		pr.Mark, pr.Mask = r.mark, r.mask
	}
	switch r.action {
	case unix.FR_ACT_TO_TBL:
		pr.Action, pr.Table = "lookup", int(r.table)
	case unix.FR_ACT_BLACKHOLE:
		pr.Action = "blackhole"
	case unix.FR_ACT_UNREACHABLE:
		pr.Action = "unreachable"
	default:
		return plan.Rule{}, false
	}
	return pr, true
}

// subscribeRules sends every deletion of one of multiwan's rules, in both
// families, to ch until done is closed. A failure of the subscription,
// including lost notifications (ENOBUFS) and a message that cannot be
// decoded (it may have been ours), goes to onErr, and then it stops.
func subscribeRules(ch chan<- ruleEvent, done <-chan struct{}, onErr func(error), bufSize int) error {
	c, err := mnl.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		return fmt.Errorf("rule updates: %w", err)
	}
	for _, g := range []uint32{unix.RTNLGRP_IPV4_RULE, unix.RTNLGRP_IPV6_RULE} {
		if err := c.JoinGroup(g); err != nil {
			c.Close()
			return fmt.Errorf("rule updates: join group %d: %w", g, err)
		}
	}
	if err := c.SetReadBuffer(bufSize); err != nil {
		c.Close()
		return fmt.Errorf("rule updates: %w", err)
	}
	// Closing the socket is what ends a blocked Receive.
	go func() {
		<-done
		c.Close()
	}()
	go func() {
		for {
			msgs, err := c.Receive()
			if err != nil {
				select {
				case <-done:
				default:
					onErr(fmt.Errorf("receive rule updates: %w", err))
				}
				return
			}
			for _, m := range msgs {
				if m.Header.Type != unix.RTM_DELRULE {
					continue
				}
				ev, err := parseRuleMsg(m.Data)
				if err != nil {
					onErr(err)
					return
				}
				if int(ev.protocol) != plan.RouteProtocol {
					continue
				}
				select {
				case ch <- ev:
				case <-done:
					return
				}
			}
		}
	}()
	return nil
}
