package links

import (
	"encoding/binary"
	"net"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/multiwan/multiwan/internal/plan"
)

func rtattr(typ uint16, v []byte) []byte {
	b := binary.NativeEndian.AppendUint16(nil, uint16(4+len(v)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func u32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

// ruleMsg builds an RTM_*RULE message body: fib_rule_hdr, then attributes.
func ruleMsg(family, srcLen, action uint8, attrs ...[]byte) []byte {
	b := []byte{family, 0, srcLen, 0, unix.RT_TABLE_UNSPEC, 0, 0, action, 0, 0, 0, 0}
	for _, a := range attrs {
		b = append(b, a...)
	}
	return b
}

func TestParseRuleMsg(t *testing.T) {
	for _, c := range []struct {
		name  string
		data  []byte
		proto uint8
		want  string
	}{
		{"fwmark lookup", ruleMsg(unix.AF_INET, 0, unix.FR_ACT_TO_TBL,
			rtattr(unix.FRA_PRIORITY, u32(1101)), rtattr(unix.FRA_FWMARK, u32(0x100)), rtattr(unix.FRA_FWMASK, u32(0xff00)),
			rtattr(unix.FRA_TABLE, u32(101)), rtattr(unix.FRA_PROTOCOL, []byte{plan.RouteProtocol})),
			plan.RouteProtocol, "ip rule 1101 deleted (fwmark 0x100/0xff00 lookup 101)"},
		{"IPv6 from", ruleMsg(unix.AF_INET6, 48, unix.FR_ACT_TO_TBL,
			rtattr(unix.FRA_PRIORITY, u32(1201)), rtattr(unix.FRA_SRC, net.ParseIP("2001:db8:1::")),
			rtattr(unix.FRA_TABLE, u32(102)), rtattr(unix.FRA_PROTOCOL, []byte{plan.RouteProtocol})),
			plan.RouteProtocol, "ip -6 rule 1201 deleted (from 2001:db8:1::/48 lookup 102)"},
		{"unreachable, priority 0, someone else's", ruleMsg(unix.AF_INET, 0, unix.FR_ACT_UNREACHABLE,
			rtattr(unix.FRA_PROTOCOL, []byte{unix.RTPROT_BOOT})),
			unix.RTPROT_BOOT, "ip rule 0 deleted (unreachable)"},
		{"no protocol", ruleMsg(unix.AF_INET, 0, unix.FR_ACT_BLACKHOLE, rtattr(unix.FRA_PRIORITY, u32(7))),
			0, "ip rule 7 deleted (blackhole)"},
	} {
		ev, err := parseRuleMsg(c.data)
		if err != nil || ev.protocol != c.proto || ev.String() != c.want {
			t.Errorf("%s: %q, protocol %d, %v; want %q, protocol %d", c.name, ev, ev.protocol, err, c.want, c.proto)
		}
	}
	for name, data := range map[string][]byte{
		"short header":        {unix.AF_INET, 0, 0},
		"attribute too long":  append(ruleMsg(unix.AF_INET, 0, 1), 40, 0, 6, 0, 1, 0, 0, 0),
		"attribute too short": append(ruleMsg(unix.AF_INET, 0, 1), 2, 0, 6, 0),
	} {
		if ev, err := parseRuleMsg(data); err == nil {
			t.Errorf("%s: accepted as %v", name, ev)
		}
	}
}

func FuzzParseRuleMsg(f *testing.F) {
	f.Add(ruleMsg(unix.AF_INET, 0, unix.FR_ACT_TO_TBL, rtattr(unix.FRA_PRIORITY, u32(1101)), rtattr(unix.FRA_PROTOCOL, []byte{77})))
	f.Add(ruleMsg(unix.AF_INET6, 64, unix.FR_ACT_TO_TBL, rtattr(unix.FRA_SRC, net.ParseIP("2001:db8::"))))
	f.Fuzz(func(t *testing.T, data []byte) {
		if ev, err := parseRuleMsg(data); err == nil {
			_ = ev.String()
		}
	})
}

func TestRouteDeleted(t *testing.T) {
	_, n24, _ := net.ParseCIDR("203.0.113.0/24")
	_, def6, _ := net.ParseCIDR("::/0")
	for _, c := range []struct {
		r    netlink.Route
		want string
	}{
		{netlink.Route{Family: unix.AF_INET, Table: 101}, "route default table 101 deleted"},
		{netlink.Route{Family: unix.AF_INET, Table: 101, Dst: n24}, "route 203.0.113.0/24 table 101 deleted"},
		{netlink.Route{Family: unix.AF_INET6, Table: 102, Dst: def6}, "route default table 102 deleted (IPv6)"},
	} {
		if got := routeDeleted(c.r); got != c.want {
			t.Errorf("%q, want %q", got, c.want)
		}
	}
}
