package lab

import (
	"fmt"
	"strconv"
)

// build creates namespaces, links, addresses, ISP rulesets and services.
func (l *Lab) build() error {
	for _, n := range l.logicalNames() {
		if err := l.addNS(n); err != nil {
			return err
		}
	}

	// Sysctls first: a new interface copies conf/default, and rp_filter
	// defaults are inherited from the host, so they must be pinned before
	// any link exists. The router keeps its defaults apart from forwarding:
	// its policy is the daemon's business.
	if err := l.sysctl(NSInternet,
		"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
		"net.ipv4.icmp_echo_ignore_all=0"); err != nil {
		return err
	}
	for k := 1; k <= l.isps; k++ {
		if err := l.sysctl(ISPNS(k), "net.ipv4.ip_forward=1",
			"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"); err != nil {
			return err
		}
	}
	if err := l.sysctl(NSRouter, "net.ipv4.ip_forward=1"); err != nil {
		return err
	}

	// Links: each veth is created inside one lab namespace with its peer
	// placed directly into another, so no interface ever exists on the host.
	for k := 1; k <= l.isps; k++ {
		if err := l.ip(NSInternet, "link", "add", ISPNS(k), "type", "veth",
			"peer", "name", "up", "netns", l.NS(ISPNS(k))); err != nil {
			return err
		}
		if err := l.ip(ISPNS(k), "link", "add", "cust", "type", "veth",
			"peer", "name", WANIface(k), "netns", l.NS(NSRouter)); err != nil {
			return err
		}
	}
	if err := l.ip(NSRouter, "link", "add", "lan1", "type", "veth",
		"peer", "name", "eth0", "netns", l.NS(NSClient)); err != nil {
		return err
	}
	if err := l.ip(NSRouter, "link", "add", "lan2", "type", "veth",
		"peer", "name", "eth0", "netns", l.NS(NSClient2)); err != nil {
		return err
	}

	// Addresses and routes. Interfaces are brought up before gateway
	// routes are added because a gateway must be on a live connected route.
	inet := []string{"link set dev lo up"}
	for _, a := range []string{ServiceAddr, ProbeAddr1, ProbeAddr2, PortalAddr} {
		inet = append(inet, "addr add "+a+"/32 dev lo")
	}
	for k := 1; k <= l.isps; k++ {
		inet = append(inet,
			fmt.Sprintf("addr add %s/24 dev %s", InternetPeerAddr(k), ISPNS(k)),
			fmt.Sprintf("link set dev %s up", ISPNS(k)))
	}
	if err := l.ipBatch(NSInternet, inet); err != nil {
		return err
	}

	for k := 1; k <= l.isps; k++ {
		if err := l.ipBatch(ISPNS(k), []string{
			"link set dev lo up",
			fmt.Sprintf("addr add %s/24 dev up", ISPPublicAddr(k)),
			"link set dev up up",
			fmt.Sprintf("addr add %s/26 dev cust", ISPGateway(k)),
			"link set dev cust up",
			fmt.Sprintf("route add default via %s dev up", InternetPeerAddr(k)),
		}); err != nil {
			return err
		}
		if err := l.nft(ISPNS(k), ispRuleset(k)); err != nil {
			return err
		}
	}

	router := []string{"link set dev lo up"}
	for k := 1; k <= l.isps; k++ {
		router = append(router,
			fmt.Sprintf("addr add %s/26 dev %s", WANAddr(k), WANIface(k)),
			fmt.Sprintf("link set dev %s up", WANIface(k)))
	}
	router = append(router,
		"addr add "+LAN1Addr+"/25 dev lan1", "link set dev lan1 up",
		"addr add "+LAN2Addr+"/25 dev lan2", "link set dev lan2 up")
	if err := l.ipBatch(NSRouter, router); err != nil {
		return err
	}

	client := []string{"link set dev lo up", "addr add " + ClientAddr + "/25 dev eth0"}
	for i := 1; i <= ClientExtraAddrs; i++ {
		// Same prefix as the primary, so these become secondaries and the
		// primary stays the default source address.
		client = append(client, "addr add "+ClientExtraAddr(i)+"/25 dev eth0")
	}
	client = append(client, "link set dev eth0 up", "route add default via "+LAN1Addr+" dev eth0")
	if err := l.ipBatch(NSClient, client); err != nil {
		return err
	}
	if err := l.ipBatch(NSClient2, []string{
		"link set dev lo up",
		"addr add " + Client2Addr + "/25 dev eth0",
		"link set dev eth0 up",
		"route add default via " + LAN2Addr + " dev eth0",
	}); err != nil {
		return err
	}

	return l.startInternetServices()
}

// ispRuleset is ISP k's nftables table. The forward chain jumps to two
// chains that start empty and are refilled by the fault controls, so faults
// never disturb NAT state or each other.
func ispRuleset(k int) string {
	pub, wan := ISPPublicAddr(k), WANAddr(k)
	return `table ip isp {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		iifname "up" ip daddr ` + pub + ` tcp dport { ` + strconv.Itoa(FwdTCPPort1) + `, ` + strconv.Itoa(FwdTCPPort2) + ` } dnat to ` + wan + `
		iifname "up" ip daddr ` + pub + ` udp dport ` + strconv.Itoa(FwdUDPPort) + ` dnat to ` + wan + `
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "up" masquerade
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		jump cut
		jump loss
	}
	chain cut {
	}
	chain loss {
	}
}
`
}
