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
// The internet namespace serves HTTP on port 80 (see [Lab.ServeWhoami] for
// the endpoints) and a UDP echo on port 7000 on all of its addresses. These
// servers run inside the test process: sockets are created in the namespace
// by [Lab.Listen] and [Lab.ListenPacket] and keep living there.
package lab
