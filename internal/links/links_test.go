package links

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/multiwan/multiwan/internal/plan"
)

func route(ifindex int, dst, gw string, metric, table int, proto netlink.RouteProtocol) netlink.Route {
	r := netlink.Route{LinkIndex: ifindex, Priority: metric, Table: table, Protocol: proto}
	if dst != "" {
		_, n, _ := net.ParseCIDR(dst)
		r.Dst = n
	}
	if gw != "" {
		r.Gw = net.ParseIP(gw)
	}
	return r
}

// TestLearnGateway: routes are untrusted input; only a default route of the
// right family through the interface, installed by someone else, counts.
func TestLearnGateway(t *testing.T) {
	routes := []netlink.Route{
		route(3, "", "192.0.2.1", 100, unix.RT_TABLE_MAIN, unix.RTPROT_DHCP),
		route(3, "0.0.0.0/0", "192.0.2.9", 50, 200, unix.RTPROT_BOOT),                     // lower metric, other table
		route(3, "0.0.0.0/0", "192.0.2.7", 10, 101, plan.RouteProtocol),                   // ours: ignored
		route(3, "198.51.100.0/24", "192.0.2.8", 1, unix.RT_TABLE_MAIN, unix.RTPROT_BOOT), // not default
		route(4, "", "192.0.2.65", 1, unix.RT_TABLE_MAIN, unix.RTPROT_DHCP),               // other link
		route(3, "", "", 1, unix.RT_TABLE_MAIN, unix.RTPROT_BOOT),                         // no gateway
		route(3, "::/0", "fe80::1", 1024, unix.RT_TABLE_MAIN, unix.RTPROT_RA),
		route(3, "::/0", "ff02::1", 1, unix.RT_TABLE_MAIN, unix.RTPROT_RA), // multicast: ignored
	}
	if got := learnGateway(routes, 3, false); got != netip.MustParseAddr("192.0.2.9") {
		t.Errorf("IPv4 gateway %v", got)
	}
	if got := learnGateway(routes, 3, true); got != netip.MustParseAddr("fe80::1") {
		t.Errorf("IPv6 gateway %v", got)
	}
	if got := learnGateway(routes, 5, false); got.IsValid() {
		t.Errorf("gateway for a link without routes: %v", got)
	}
	if got := learnGateway([]netlink.Route{route(3, "", "0.0.0.0", 1, unix.RT_TABLE_MAIN, unix.RTPROT_BOOT)}, 3, false); got.IsValid() {
		t.Errorf("unspecified gateway accepted: %v", got)
	}
}

func TestPrefixOf(t *testing.T) {
	mk := func(cidr string) netlink.Addr {
		ip, n, _ := net.ParseCIDR(cidr)
		n.IP = ip
		return netlink.Addr{IPNet: n}
	}
	for _, c := range []struct {
		in   string
		want string
	}{
		{"192.0.2.2/26", "192.0.2.2/26"},
		{"169.254.1.1/16", ""},
		{"2001:db8:1::2/64", "2001:db8:1::2/64"},
		{"fe80::2/64", "fe80::2/64"},
	} {
		p, ok := prefixOf(mk(c.in))
		if got := ""; ok {
			got = p.String()
			if got != c.want {
				t.Errorf("%s: %s, want %q", c.in, got, c.want)
			}
		} else if c.want != "" {
			t.Errorf("%s: dropped, want %s", c.in, c.want)
		}
	}
	if _, ok := prefixOf(netlink.Addr{}); ok {
		t.Error("an address without IPNet was accepted")
	}
}
