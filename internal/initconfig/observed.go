// Package initconfig proposes a first multiwan config for the box it runs
// on, from what the kernel shows: its links, their addresses and the
// default routes through them (`multiwan init`).
//
// It is split in two: [Observe] reads the current network namespace over
// netlink and never changes anything; [Propose] is a pure function from
// what was observed to the YAML text of a config, with a report for the
// user. Tests feed Propose synthetic boxes.
package initconfig

import (
	"net/netip"
	"strconv"
)

// Observed is what init saw of a box.
type Observed struct {
	Links []Link `json:"links"`
	// Routes are the default routes (0.0.0.0/0 and ::/0) of every routing
	// table, both families, unicast only; a multipath route is one entry
	// per next hop.
	Routes []Route `json:"routes"`
}

// Link is a network interface.
type Link struct {
	Index int    `json:"index"`
	Name  string `json:"name"`
	// Kind is the netlink link type: "device" (a NIC), "veth", "bridge",
	// "vlan", "bond", "ppp", "wireguard", "tun", ...
	Kind         string `json:"kind,omitempty"`
	Loopback     bool   `json:"loopback,omitempty"`
	PointToPoint bool   `json:"point_to_point,omitempty"`
	// Up is the administrative state; Carrier whether it can pass packets.
	Up      bool `json:"up,omitempty"`
	Carrier bool `json:"carrier,omitempty"`
	// Master is the bridge or bond this link is a port of, if any.
	Master string `json:"master,omitempty"`
	Addrs  []Addr `json:"addrs,omitempty"`
	// DHCPClient names a DHCP client program running for this link in the
	// same network namespace (dhclient, udhcpc, dhcpcd), if one was seen.
	DHCPClient string `json:"dhcp_client,omitempty"`
}

// Addr is an address of a link.
type Addr struct {
	Prefix netip.Prefix `json:"prefix"`
	// Dynamic is set for an address with a finite lifetime: leased by
	// DHCP or made by SLAAC, rather than configured.
	Dynamic bool `json:"dynamic,omitempty"`
}

// Route is a default route.
type Route struct {
	Family int `json:"family"` // 4 or 6
	// Dev is the name of the link it leaves by.
	Dev string `json:"dev"`
	// Gateway is the next hop; invalid when the route has none (a
	// point-to-point link: "default dev ppp0").
	Gateway netip.Addr `json:"gateway,omitzero"`
	Table   int        `json:"table"`
	Metric  int        `json:"metric"`
	// Protocol says who installed the route, as ip-route(8) names it:
	// "boot" (ip route add, ifupdown, pppd, most DHCP client scripts),
	// "static" (networkd, NetworkManager: configured), "dhcp" (networkd,
	// NetworkManager, dhcpcd: leased), "ra" (router advertisements),
	// "kernel", a routing daemon ("bird", "zebra", "bgp", ...), "multiwan"
	// (multiwan's own, protocol 77), or the number.
	Protocol string `json:"protocol"`
}

// mainTable is the kernel's main routing table.
const mainTable = 254

// protocolNames are the route protocols of linux/rtnetlink.h and
// /etc/iproute2/rt_protos, by number.
var protocolNames = map[int]string{
	0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static",
	8: "gated", 9: "ra", 10: "mrt", 11: "zebra", 12: "bird", 13: "dnrouted",
	14: "xorp", 15: "ntk", 16: "dhcp", 17: "mrouted", 18: "keepalived",
	42: "babel", 77: "multiwan", 99: "openr", 186: "bgp", 187: "isis",
	188: "ospf", 189: "rip", 192: "eigrp",
}

// ProtocolName names a route protocol number as ip-route(8) does, or
// returns the number.
func ProtocolName(n int) string {
	if s, ok := protocolNames[n]; ok {
		return s
	}
	return strconv.Itoa(n)
}
