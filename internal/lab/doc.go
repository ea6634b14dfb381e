// Package lab builds a throw-away multi-WAN test network out of Linux network
// namespaces, for end-to-end tests and for the demo program.
//
// Every namespace is named "mwl<pid>-<seq>-<role>" so that concurrent test
// processes never collide and so that [SweepStale] can recognise leftovers
// of processes that died without cleaning up. Nothing is ever configured in
// the caller's own network namespace: links are created directly inside the
// lab namespaces, and the lab is not connected to the host.
//
// Topology (shown with three ISPs; the default is two):
//
//	    +-------------------------------+
//	    | internet                      |
//	    | lo: 203.0.113.10  (services)  |
//	    |     203.0.113.20  (probe)     |
//	    |     203.0.113.30  (probe)     |
//	    |     203.0.113.50  (portal)    |
//	    +--isp1--------isp2--------isp3-+
//	198.18.1.1/24  198.18.2.1/24  198.18.3.1/24
//	      |              |              |
//	198.18.1.2/24  198.18.2.2/24  198.18.3.2/24
//	    +-up---+       +-up---+       +-up---+
//	    | isp1 |       | isp2 |       | isp3 |  masquerade on "up",
//	    +-cust-+       +-cust-+       +-cust-+  port forwards to router
//	192.0.2.1/26   192.0.2.65/26  192.0.2.129/26
//	      |              |              |
//	192.0.2.2/26   192.0.2.66/26  192.0.2.130/26
//	    +-wan1-----------wan2-----------wan3-+
//	    | router (connected routes only;     |
//	    |         the daemon adds the rest)  |
//	    +-lan1----------------------lan2-----+
//	198.51.100.1/25             198.51.100.129/25
//	      |                           |
//	    +-eth0-------------+        +-eth0-------------+
//	    | client           |        | client2          |
//	    | 198.51.100.10/25 |        | 198.51.100.130/25|
//	    | +.11 .. .60      |        | default via .129 |
//	    | default via .1   |        +------------------+
//	    +------------------+
//
// Address plan:
//
//	203.0.113.0/24    "internet" service and probe addresses (/32 on lo)
//	198.18.k.0/24     link internet <-> ISP k (internet .1, ISP .2)
//	192.0.2.0/24      ISP k <-> router links, one /26 per ISP:
//	                  192.0.2.(64(k-1))/26, ISP .1+64(k-1), router .2+64(k-1)
//	198.51.100.0/25   lan1 (router .1, client .10 with secondaries .11-.60)
//	198.51.100.128/25 lan2 (router .129, client2 .130)
//
// Each ISP forwards TCP 8080, TCP 9090 and UDP 7000 arriving at its public
// address 198.18.k.2 to the router's address on that ISP, without SNAT, the
// way a consumer ISP box does port forwarding.
//
// With [Options].DHCP the router's WAN interfaces have no static IPv4
// address: ISP k runs dnsmasq on "cust" (pool 192.0.2.10-30 + 64(k-1),
// router option [ISPGateway](k), 2 minute leases) and the router runs one
// dhclient per WAN, whose script (the lab's own, nothing of the distro's)
// sets the address and "default via <gateway> dev wanK metric 100+k" in the
// main table. Their configuration, leases and pid files live in a
// directory of the lab's own under the temporary directory; nothing of the
// host's (/etc/dnsmasq.conf, /etc/dhcp, /var/lib/dhcp, resolv.conf) is read
// or written, and DNS is off. [Lab.SetDHCPPool] renumbers a WAN,
// [Lab.DHCPLease] reads what the router has. With or without DHCP,
// [Lab.DeleteWANLink], [Lab.RecreateWANLink] and [Lab.RenameWANLink] make
// WAN links come and go.
//
// With [Options].IPv6 the lab is dual stack (all from 2001:db8::/32, DAD
// off so addresses work at once):
//
//	internet  lo 2001:db8:ffff::10 (services), ::20, ::30 (ping), ::50
//	          2001:db8:f0k::1/64 on the link to ISP k
//	ISP k     2001:db8:f0k::2/64 on "up" (NAT66: masquerades IPv6 leaving it)
//	          2001:db8:k::1/64 on "cust", routes to the LAN /64s via the router
//	router    2001:db8:k::2/64 on wanK (static, also with DHCP), no IPv6
//	          default route; lan1 2001:db8:100::1/64, lan2 2001:db8:200::1/64
//	client    2001:db8:100::10/64 (+ ::11 .. ::20, deprecated so they are
//	          used only when asked for), default via 2001:db8:100::1
//	client2   2001:db8:200::10/64, default via 2001:db8:200::1
//
// Each ISP then has a second nft table, "ip6 isp", of the same shape as
// "ip isp"; the fault controls act on both ([Lab.CutUpstreamFamily] on one).
//
// With [Options].RA as well (for `gateway6: auto`), ISP k also runs a
// second dnsmasq on "cust" that only sends router advertisements (no DNS,
// no DHCPv6; "--enable-ra --dhcp-range=::,constructor:cust,ra-only",
// router lifetime [RALifetime]), with its files in the lab's directory.
// The router's wanK accepts them although it forwards (accept_ra=2,
// autoconf=0: no SLAAC address, the static one stays), so the kernel adds
// "default via <ISP's link-local address> dev wanK proto ra" to the main
// table; [Lab.RAGateway] reads that gateway, [Lab.ISPLinkLocal6] the
// ISP's side.
//
// With [Options].P2PISP = k, ISP k's link is point-to-point, as a PPP link
// or a tunnel is: a pair of tun devices (wanK in the router, custK in the
// ISP) whose packets the lab copies between them, addressed like PPP
// (192.0.2.2 peer 192.0.2.1) with no gateway. [Lab.SetP2PDown] and
// [Lab.SetLinkDown] take it down or its carrier away.
//
// The internet namespace serves HTTP on port 80 (see [Lab.ServeWhoami] for
// the endpoints) and a UDP echo on port 7000 on all of its addresses. These
// servers run inside the test process: sockets are created in the namespace
// by [Lab.Listen] and [Lab.ListenPacket] and keep living there.
package lab
