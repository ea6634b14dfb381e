package kernel

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/multiwan/multiwan/internal/plan"
)

func TestRuleKeyOf(t *testing.T) {
	tests := []struct {
		name string
		in   plan.Rule
		want ruleKey
	}{
		{
			name: "suppress main",
			in:   plan.Rule{Family: 4, Priority: 1000, Action: "lookup", Table: plan.TableMain, SuppressPrefixLen: 0},
			want: ruleKey{family: unix.AF_INET, priority: 1000, action: unix.RTN_UNICAST, table: 254, suppress: 0},
		},
		{
			name: "fwmark",
			in:   plan.Rule{Family: 6, Priority: 1001, Mark: 0x100, Mask: 0xff00, Action: "lookup", Table: 101, SuppressPrefixLen: -1},
			want: ruleKey{family: unix.AF_INET6, priority: 1001, action: unix.RTN_UNICAST, table: 101, mark: 0x100, mask: 0xff00, suppress: -1},
		},
		{
			name: "mark without mask matches nothing",
			in:   plan.Rule{Family: 4, Priority: 1, Mark: 0x100, Action: "lookup", Table: 101, SuppressPrefixLen: -1},
			want: ruleKey{family: unix.AF_INET, priority: 1, action: unix.RTN_UNICAST, table: 101, suppress: -1},
		},
		{
			name: "source, masked",
			in:   plan.Rule{Family: 4, Priority: 1002, Src: netip.MustParsePrefix("198.51.100.7/24"), Action: "lookup", Table: 300, SuppressPrefixLen: -1},
			want: ruleKey{family: unix.AF_INET, priority: 1002, action: unix.RTN_UNICAST, table: 300, src: netip.MustParsePrefix("198.51.100.0/24"), suppress: -1},
		},
		{
			// The zero SuppressPrefixLen of an unreachable rule means
			// nothing and must not make it differ from the kernel's.
			name: "unreachable ignores table and suppress",
			in:   plan.Rule{Family: 4, Priority: 1003, Mark: 0x7f00, Mask: 0xff00, Action: "unreachable", Table: 101},
			want: ruleKey{family: unix.AF_INET, priority: 1003, action: unix.RTN_UNREACHABLE, mark: 0x7f00, mask: 0xff00, suppress: -1},
		},
		{
			name: "blackhole",
			in:   plan.Rule{Family: 6, Priority: 1004, Action: "blackhole", SuppressPrefixLen: -1},
			want: ruleKey{family: unix.AF_INET6, priority: 1004, action: unix.RTN_BLACKHOLE, suppress: -1},
		},
	}
	for _, tt := range tests {
		got, err := ruleKeyOf(tt.in)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if got != tt.want {
			t.Errorf("%s: ruleKeyOf = %+v\nwant %+v", tt.name, got, tt.want)
		}
	}
}

func rules0() plan.Rule {
	return plan.Rule{Family: 4, Priority: 1000, Action: "lookup", Table: plan.TableMain, SuppressPrefixLen: 0}
}

func TestRuleKeyOfRejects(t *testing.T) {
	bad := map[string]plan.Rule{
		"family":         {Family: 5, Action: "lookup", Table: 101},
		"action":         {Family: 4, Action: "prohibit"},
		"no table":       {Family: 4, Action: "lookup"},
		"priority":       {Family: 4, Priority: -2, Action: "lookup", Table: 101},
		"src family":     {Family: 6, Src: netip.MustParsePrefix("198.51.100.1/32"), Action: "lookup", Table: 101, SuppressPrefixLen: -1},
		"suppress ≥ 256": {Family: 4, Action: "lookup", Table: 300, SuppressPrefixLen: 0},
	}
	for name, r := range bad {
		if _, err := ruleKeyOf(r); err == nil {
			t.Errorf("%s: ruleKeyOf(%+v) accepted", name, r)
		}
	}
	if _, err := ruleKeys([]plan.Rule{rules0(), bad["action"]}); err == nil {
		t.Error("ruleKeys accepted a list with an invalid rule")
	}
}

// ruleMessage builds an RTM_NEWRULE message as the kernel sends it in a
// dump: a fib_rule_hdr and attributes, FRA_TABLE, FRA_SUPPRESS_PREFIXLEN and
// FRA_PROTOCOL always included.
func ruleMessage(hdr unix.RtMsg, attrs ...*nl.RtAttr) []byte {
	b := (&nl.RtMsg{RtMsg: hdr}).Serialize()
	for _, a := range attrs {
		b = append(b, a.Serialize()...)
	}
	return b
}

func u32attr(typ int, v uint32) *nl.RtAttr {
	return nl.NewRtAttr(typ, nl.Uint32Attr(v))
}

func TestParseRuleKeepsAction(t *testing.T) {
	unreachable := ruleMessage(
		unix.RtMsg{Family: unix.AF_INET, Type: unix.FR_ACT_UNREACHABLE},
		u32attr(unix.FRA_PRIORITY, 1003),
		u32attr(unix.FRA_FWMARK, 0x7f00),
		u32attr(unix.FRA_FWMASK, 0xff00),
		u32attr(unix.FRA_TABLE, 0),
		u32attr(unix.FRA_SUPPRESS_PREFIXLEN, 0xffffffff),
		nl.NewRtAttr(unix.FRA_PROTOCOL, []byte{plan.RouteProtocol}),
	)
	got, err := parseRule(unreachable)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := ruleKeyOf(plan.Rule{Family: 4, Priority: 1003, Mark: 0x7f00, Mask: 0xff00, Action: "unreachable"})
	if got.key != want {
		t.Errorf("parsed %+v\nwant   %+v", got.key, want)
	}
	if got.rule.Protocol != plan.RouteProtocol || got.rule.Type != unix.RTN_UNREACHABLE {
		t.Errorf("parsed rule %+v lost its protocol or action", got.rule)
	}

	lookup := ruleMessage(
		unix.RtMsg{Family: unix.AF_INET6, Src_len: 64, Type: unix.FR_ACT_TO_TBL, Table: 252},
		u32attr(unix.FRA_PRIORITY, 1100),
		nl.NewRtAttr(unix.FRA_SRC, netip.MustParseAddr("2001:db8:1::").AsSlice()),
		u32attr(unix.FRA_TABLE, 1000),
		u32attr(unix.FRA_SUPPRESS_PREFIXLEN, 0xffffffff),
		nl.NewRtAttr(unix.FRA_PROTOCOL, []byte{plan.RouteProtocol}),
	)
	got, err = parseRule(lookup)
	if err != nil {
		t.Fatal(err)
	}
	want, _ = ruleKeyOf(plan.Rule{Family: 6, Priority: 1100, Src: netip.MustParsePrefix("2001:db8:1::/64"), Action: "lookup", Table: 1000, SuppressPrefixLen: -1})
	if got.key != want {
		t.Errorf("parsed %+v\nwant   %+v", got.key, want)
	}

	withIif := ruleMessage(
		unix.RtMsg{Family: unix.AF_INET, Type: unix.FR_ACT_TO_TBL, Table: 101},
		u32attr(unix.FRA_PRIORITY, 1100),
		nl.NewRtAttr(unix.FRA_IIFNAME, []byte("lan0\x00")),
		u32attr(unix.FRA_TABLE, 101),
		nl.NewRtAttr(unix.FRA_PROTOCOL, []byte{plan.RouteProtocol}),
	)
	got, err = parseRule(withIif)
	if err != nil {
		t.Fatal(err)
	}
	if got.key.other != "iif lan0" || got.rule.IifName != "lan0" {
		t.Errorf("a rule with an iif match parsed as %+v", got)
	}
}

// TestRuleKeyNetlinkRoundTrip checks that what ApplyRules sends is what it
// will recognise when the kernel reports it back.
func TestRuleKeyNetlinkRoundTrip(t *testing.T) {
	rules := []plan.Rule{
		{Family: 4, Priority: 1000, Action: "lookup", Table: plan.TableMain, SuppressPrefixLen: 0},
		{Family: 4, Priority: 1001, Mark: 0x100, Mask: 0xff00, Action: "lookup", Table: 101, SuppressPrefixLen: -1},
		{Family: 4, Priority: 1002, Mark: 0, Mask: 0xff00, Action: "lookup", Table: 101, SuppressPrefixLen: -1},
		{Family: 6, Priority: 1003, Src: netip.MustParsePrefix("2001:db8::2/128"), Action: "lookup", Table: 102, SuppressPrefixLen: -1},
		{Family: 4, Priority: 1004, Mark: 0x7f00, Mask: 0xff00, Action: "unreachable", SuppressPrefixLen: -1},
	}
	for _, r := range rules {
		k, err := ruleKeyOf(r)
		if err != nil {
			t.Fatal(err)
		}
		nr := k.netlink()
		if nr.Protocol != plan.RouteProtocol {
			t.Errorf("%s: protocol %d", r, nr.Protocol)
		}
		if back := keyOfKernelRule(nr, ""); back != k {
			t.Errorf("%s: round trip %+v\nwant       %+v", r, back, k)
		}
	}
}

func TestDiffRules(t *testing.T) {
	a := ruleKey{family: unix.AF_INET, priority: 1000, action: unix.RTN_UNICAST, table: 254, suppress: 0}
	b := ruleKey{family: unix.AF_INET, priority: 1001, action: unix.RTN_UNICAST, table: 101, mark: 0x100, mask: 0xff00, suppress: -1}
	c := ruleKey{family: unix.AF_INET, priority: 1002, action: unix.RTN_UNREACHABLE, suppress: -1}
	bOther := b
	bOther.other = "iif lan0"
	kr := func(k ruleKey) kernelRule { return kernelRule{key: k} }

	add, del := diffRules([]ruleKey{a, b}, []kernelRule{kr(a), kr(b)})
	if len(add) != 0 || len(del) != 0 {
		t.Errorf("same set: add %v, del %v; want nothing", add, del)
	}
	add, del = diffRules([]ruleKey{a, b, b}, []kernelRule{kr(b), kr(c), kr(b), kr(bOther)})
	if len(add) != 1 || add[0] != a {
		t.Errorf("add = %v, want [%v]", add, a)
	}
	if len(del) != 3 || del[0].key != c || del[1].key != b || del[2].key != bOther {
		t.Errorf("del = %v, want the unreachable rule, the duplicate and the one with iif", del)
	}
}

func TestRouteKeys(t *testing.T) {
	k, err := routeKeyOf(plan.Route{Family: 4, Table: 101, Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("198.51.100.1"), Dev: "wan1"})
	if err != nil {
		t.Fatal(err)
	}
	k.link = 7
	kernel := netlink.Route{
		Family: unix.AF_INET, Table: 101, LinkIndex: 7, Protocol: plan.RouteProtocol, Type: unix.RTN_UNICAST,
		// As vishvananda/netlink reports a default route: a 16-byte zero
		// address with a 32-bit mask.
		Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}, Gw: net.ParseIP("198.51.100.1").To4(),
	}
	if got := keyOfKernelRoute(kernel); got != k {
		t.Errorf("IPv4 default route: kernel key %+v\nwant %+v", got, k)
	}
	kernel.Src = net.ParseIP("198.51.100.2")
	if got := keyOfKernelRoute(kernel); got == k || got.other == "" {
		t.Errorf("a route with a preferred source compares equal: %+v", got)
	}

	k6, err := routeKeyOf(plan.Route{Family: 6, Table: 102, Dst: netip.MustParsePrefix("::/0"), Gateway: netip.MustParseAddr("2001:db8:1::1"), Dev: "wan2"})
	if err != nil {
		t.Fatal(err)
	}
	k6.link = 8
	kernel6 := netlink.Route{
		Family: unix.AF_INET6, Table: 102, LinkIndex: 8, Protocol: plan.RouteProtocol, Type: unix.RTN_UNICAST,
		Priority: ip6DefaultMetric, Dst: &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}, Gw: net.ParseIP("2001:db8:1::1"),
	}
	if got := keyOfKernelRoute(kernel6); got != k6 {
		t.Errorf("IPv6 default route: kernel key %+v\nwant %+v", got, k6)
	}

	p2p, err := routeKeyOf(plan.Route{Family: 4, Table: 103, Dst: netip.MustParsePrefix("0.0.0.0/0"), Dev: "ppp0"})
	if err != nil {
		t.Fatal(err)
	}
	if p2p.scope() != netlink.SCOPE_LINK || p2p.netlink().Gw != nil {
		t.Errorf("a route without gateway: %+v", p2p.netlink())
	}

	bad := map[string]plan.Route{
		"family":     {Family: 0, Table: 101, Dst: netip.MustParsePrefix("0.0.0.0/0"), Dev: "wan1"},
		"table":      {Family: 4, Dst: netip.MustParsePrefix("0.0.0.0/0"), Dev: "wan1"},
		"no dst":     {Family: 4, Table: 101, Dev: "wan1"},
		"no dev":     {Family: 4, Table: 101, Dst: netip.MustParsePrefix("0.0.0.0/0")},
		"gw family":  {Family: 4, Table: 101, Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("2001:db8::1"), Dev: "wan1"},
		"dst family": {Family: 6, Table: 101, Dst: netip.MustParsePrefix("0.0.0.0/0"), Dev: "wan1"},
	}
	for name, r := range bad {
		if _, err := routeKeyOf(r); err == nil {
			t.Errorf("%s: routeKeyOf(%+v) accepted", name, r)
		}
	}
	// Validation comes before any interface lookup, so this stays off the
	// kernel: unit tests never call netlink.
	if _, _, err := resolveRoutes([]plan.Route{bad["no dst"]}); err == nil {
		t.Error("resolveRoutes accepted an invalid route")
	}
}

func TestDiffRoutes(t *testing.T) {
	dst := netip.MustParsePrefix("0.0.0.0/0")
	a := routeKey{family: unix.AF_INET, table: 101, dst: dst, gw: netip.MustParseAddr("198.51.100.1"), link: 7}
	moved := a
	moved.gw = netip.MustParseAddr("198.51.100.3")
	stale := routeKey{family: unix.AF_INET, table: 102, dst: dst, link: 9}
	w := func(k routeKey) wantRoute { return wantRoute{key: k} }
	kr := func(k routeKey) kernelRoute { return kernelRoute{key: k} }

	add, del := diffRoutes([]wantRoute{w(a)}, []kernelRoute{kr(a)})
	if len(add) != 0 || len(del) != 0 {
		t.Errorf("same set: add %v, del %v; want nothing", add, del)
	}
	add, del = diffRoutes([]wantRoute{w(moved)}, []kernelRoute{kr(a), kr(stale)})
	if len(add) != 1 || add[0].key != moved || len(del) != 2 {
		t.Errorf("gateway change: add %v, del %v", add, del)
	}
}

func TestPrefixOf(t *testing.T) {
	tests := []struct {
		in   *net.IPNet
		want string
	}{
		{nil, "invalid Prefix"},
		{&net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}, "0.0.0.0/0"},
		{&net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, "0.0.0.0/0"},
		{&net.IPNet{IP: net.ParseIP("198.51.100.7"), Mask: net.CIDRMask(120, 128)}, "198.51.100.0/24"},
		{&net.IPNet{IP: net.ParseIP("198.51.100.7").To4(), Mask: net.CIDRMask(32, 32)}, "198.51.100.7/32"},
		{&net.IPNet{IP: net.ParseIP("2001:db8::1"), Mask: net.CIDRMask(64, 128)}, "2001:db8::/64"},
	}
	for _, tt := range tests {
		if got := prefixOf(tt.in).String(); got != tt.want {
			t.Errorf("prefixOf(%v) = %s, want %s", tt.in, got, tt.want)
		}
	}
}
