package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// linkWait bounds waiting for links to come up.
const linkWait = 10 * time.Second

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
	if l.ipv6 {
		// IPv6 on, and no duplicate address detection, so addresses are
		// usable as soon as their link is up. Forwarding where IPv4 has it.
		for _, n := range l.logicalNames() {
			settings := []string{
				"net.ipv6.conf.all.disable_ipv6=0", "net.ipv6.conf.default.disable_ipv6=0",
				"net.ipv6.conf.lo.disable_ipv6=0",
				"net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
			}
			if n == NSRouter || strings.HasPrefix(n, "isp") {
				settings = append(settings, "net.ipv6.conf.all.forwarding=1")
			}
			if err := l.sysctl(n, settings...); err != nil {
				return err
			}
		}
	}

	// Links: each veth is created inside one lab namespace with its peer
	// placed directly into another, so no interface ever exists on the host.
	for k := 1; k <= l.isps; k++ {
		if err := l.ip(NSInternet, "link", "add", ISPNS(k), "type", "veth",
			"peer", "name", "up", "netns", l.NS(ISPNS(k))); err != nil {
			return err
		}
		if k == l.p2p {
			if err := l.startTunPair(k); err != nil {
				return err
			}
		} else if err := l.ip(ISPNS(k), "link", "add", "cust", "type", "veth",
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

	// With RA the router's WAN interfaces take router advertisements
	// (although it forwards) from the moment they come up, so they
	// solicit one at once.
	if l.ra {
		var settings []string
		for k := 1; k <= l.isps; k++ {
			settings = append(settings, raSysctls(WANIface(k))...)
		}
		if err := l.sysctl(NSRouter, settings...); err != nil {
			return err
		}
	}

	// Addresses and routes. Interfaces are brought up before gateway
	// routes are added because a gateway must be on a live connected route.
	inet := []string{"link set dev lo up"}
	for _, a := range []string{ServiceAddr, ProbeAddr1, ProbeAddr2, PortalAddr} {
		inet = append(inet, "addr add "+a+"/32 dev lo")
	}
	if l.ipv6 {
		for _, a := range []string{ServiceAddr6, ProbeAddr6a, ProbeAddr6b, PortalAddr6} {
			inet = append(inet, "addr add "+a+"/128 dev lo")
		}
	}
	for k := 1; k <= l.isps; k++ {
		inet = append(inet, fmt.Sprintf("addr add %s/24 dev %s", InternetPeerAddr(k), ISPNS(k)))
		if l.ipv6 {
			inet = append(inet, fmt.Sprintf("addr add %s/64 dev %s nodad", InternetPeerAddr6(k), ISPNS(k)))
		}
		inet = append(inet, fmt.Sprintf("link set dev %s up", ISPNS(k)))
	}
	if err := l.ipBatch(NSInternet, inet); err != nil {
		return err
	}

	for k := 1; k <= l.isps; k++ {
		isp := []string{
			"link set dev lo up",
			fmt.Sprintf("addr add %s/24 dev up", ISPPublicAddr(k)),
		}
		if l.ipv6 {
			isp = append(isp, fmt.Sprintf("addr add %s/64 dev up nodad", ISPPublicAddr6(k)))
		}
		isp = append(isp, "link set dev up up")
		isp = append(isp, l.custAddrs(k)...)
		isp = append(isp,
			"link set dev "+l.custIface(k)+" up",
			fmt.Sprintf("route add default via %s dev up", InternetPeerAddr(k)))
		if l.ipv6 {
			isp = append(isp, fmt.Sprintf("route add default via %s dev up", InternetPeerAddr6(k)))
			isp = append(isp, ispRoutes6(k)...)
		}
		if err := l.ipBatch(ISPNS(k), isp); err != nil {
			return err
		}
		if err := l.nft(ISPNS(k), l.ispRuleset(k)); err != nil {
			return err
		}
	}

	router := []string{"link set dev lo up"}
	for k := 1; k <= l.isps; k++ {
		router = append(router, l.wanAddrs(k, WANIface(k))...)
		router = append(router, fmt.Sprintf("link set dev %s up", WANIface(k)))
	}
	router = append(router,
		"addr add "+LAN1Addr+"/25 dev lan1", "link set dev lan1 up",
		"addr add "+LAN2Addr+"/25 dev lan2", "link set dev lan2 up")
	if l.ipv6 {
		router = append(router,
			"addr add "+LAN1Addr6+"/64 dev lan1 nodad",
			"addr add "+LAN2Addr6+"/64 dev lan2 nodad")
	}
	if err := l.ipBatch(NSRouter, router); err != nil {
		return err
	}

	client := []string{"link set dev lo up", "addr add " + ClientAddr + "/25 dev eth0"}
	for i := 1; i <= ClientExtraAddrs; i++ {
		// Same prefix as the primary, so these become secondaries and the
		// primary stays the default source address.
		client = append(client, "addr add "+ClientExtraAddr(i)+"/25 dev eth0")
	}
	if l.ipv6 {
		client = append(client, "addr add "+ClientAddr6+"/64 dev eth0 nodad")
		for i := 1; i <= ClientExtraAddrs6; i++ {
			// Deprecated (preferred_lft 0), so the kernel never picks them
			// as source: the primary stays the default source address.
			client = append(client, "addr add "+ClientExtraAddr6(i)+"/64 dev eth0 nodad preferred_lft 0")
		}
	}
	client = append(client, "link set dev eth0 up", "route add default via "+LAN1Addr+" dev eth0")
	if l.ipv6 {
		client = append(client, "route add default via "+LAN1Addr6+" dev eth0")
	}
	if err := l.ipBatch(NSClient, client); err != nil {
		return err
	}
	client2 := []string{
		"link set dev lo up",
		"addr add " + Client2Addr + "/25 dev eth0",
	}
	if l.ipv6 {
		client2 = append(client2, "addr add "+Client2Addr6+"/64 dev eth0 nodad")
	}
	client2 = append(client2, "link set dev eth0 up", "route add default via "+LAN2Addr+" dev eth0")
	if l.ipv6 {
		client2 = append(client2, "route add default via "+LAN2Addr6+" dev eth0")
	}
	if err := l.ipBatch(NSClient2, client2); err != nil {
		return err
	}

	if l.ipv6 {
		// IPv6 starts neighbour discovery on a link only once the kernel
		// has processed its carrier (linkwatch, up to a second later);
		// a solicitation sent before is lost and costs a 1 s retry.
		if err := l.waitAllLinksUp(); err != nil {
			return err
		}
	}

	return l.startInternetServices()
}

// custAddrs returns the ip commands that give ISP k's end of its link to
// the router its addresses: the gateway (and any gateway added by
// SetDHCPPool) and, with IPv6, the IPv6 gateway. dyn or setup must be held.
func (l *Lab) custAddrs(k int) []string {
	if k == l.p2p {
		return p2pAddrs(ISPGateway(k), WANAddr(k), l.custIface(k))
	}
	var cmds []string
	for _, a := range l.wans[k].ispAddrs {
		cmds = append(cmds, fmt.Sprintf("addr add %s/26 dev cust", a))
	}
	if l.ipv6 {
		cmds = append(cmds, fmt.Sprintf("addr replace %s/64 dev cust nodad", ISPGateway6(k)))
	}
	return cmds
}

// wanAddrs returns the ip commands that give the router's interface to ISP
// k (named name) its static addresses: IPv4 unless DHCP provides it, IPv6
// if enabled.
func (l *Lab) wanAddrs(k int, name string) []string {
	if k == l.p2p {
		return p2pAddrs(WANAddr(k), ISPGateway(k), name)
	}
	var cmds []string
	if !l.dhcp {
		cmds = append(cmds, fmt.Sprintf("addr add %s/26 dev %s", WANAddr(k), name))
	}
	return append(cmds, l.wanAddrs6(k, name)...)
}

// wanAddrs6 is the IPv6 part of wanAddrs.
func (l *Lab) wanAddrs6(k int, name string) []string {
	if !l.ipv6 {
		return nil
	}
	return []string{fmt.Sprintf("addr replace %s/64 dev %s nodad", WANAddr6(k), name)}
}

// ispRoutes6 returns the ip commands for ISP k's IPv6 routes to the LAN
// prefixes, via the router: IPv6 LANs are routed, not translated, so the
// ISP must know the way back (the ISP's NAT66 towards the internet hides
// them from the internet).
func ispRoutes6(k int) []string {
	return []string{
		fmt.Sprintf("route replace %s via %s dev cust", LAN1Subnet6, WANAddr6(k)),
		fmt.Sprintf("route replace %s via %s dev cust", LAN2Subnet6, WANAddr6(k)),
	}
}

// ispRuleset is ISP k's nftables ruleset. The forward chain jumps to two
// chains that start empty and are refilled by the fault controls, so faults
// never disturb NAT state or each other; so does the output chain for the
// ISP's own traffic to the internet (its resolver's, with StartDNS), so a
// cut upstream cuts that too. With IPv6 a table "ip6 isp" of the same shape
// masquerades and filters IPv6.
func (l *Lab) ispRuleset(k int) string {
	s := ispRuleset(k)
	if l.ipv6 {
		s += `table ip6 isp {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "up" masquerade
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		jump cut
		jump loss
	}
	chain output {
		type filter hook output priority filter; policy accept;
		oifname "up" jump cut
		oifname "up" jump loss
	}
	chain cut {
	}
	chain loss {
	}
}
`
	}
	return s
}

func ispRuleset(k int) string {
	return `table ip isp {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
` + forwardRules(k, WANAddr(k)) + `	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "up" masquerade
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		jump cut
		jump loss
	}
	chain output {
		type filter hook output priority filter; policy accept;
		oifname "up" jump cut
		oifname "up" jump loss
	}
	chain cut {
	}
	chain loss {
	}
}
`
}

// forwardRules are ISP k's port forwards to the router's address wan, one
// rule a line.
func forwardRules(k int, wan string) string {
	pub := ISPPublicAddr(k)
	return `		iifname "up" ip daddr ` + pub + ` tcp dport { ` + strconv.Itoa(FwdTCPPort1) + `, ` + strconv.Itoa(FwdTCPPort2) + ` } dnat to ` + wan + `
		iifname "up" ip daddr ` + pub + ` udp dport ` + strconv.Itoa(FwdUDPPort) + ` dnat to ` + wan + `
`
}

// retargetForwards points ISP k's port forwards at the router's address
// wan (its DHCP lease), in one transaction.
func (l *Lab) retargetForwards(k int, wan string) error {
	var b strings.Builder
	b.WriteString("flush chain ip isp prerouting\n")
	for _, line := range strings.Split(strings.TrimSpace(forwardRules(k, wan)), "\n") {
		b.WriteString("add rule ip isp prerouting " + strings.TrimSpace(line) + "\n")
	}
	return l.nft(ISPNS(k), b.String())
}

// labLinks lists the interfaces of every namespace, but loopbacks.
func (l *Lab) labLinks() map[string][]string {
	m := map[string][]string{NSClient: {"eth0"}, NSClient2: {"eth0"}}
	l.mu.Lock()
	router := []string{"lan1", "lan2"}
	for k := 1; k <= l.isps; k++ {
		router = append(router, l.names[k])
	}
	l.mu.Unlock()
	m[NSRouter] = router
	for k := 1; k <= l.isps; k++ {
		m[NSInternet] = append(m[NSInternet], ISPNS(k))
		m[ISPNS(k)] = []string{"up", "cust"}
	}
	return m
}

// waitAllLinksUp waits until every lab link is operationally up.
func (l *Lab) waitAllLinksUp() error {
	ctx, cancel := context.WithTimeout(context.Background(), linkWait)
	defer cancel()
	for ns, ifaces := range l.labLinks() {
		if err := l.waitOperUp(ctx, ns, ifaces...); err != nil {
			return err
		}
	}
	return nil
}

// waitOperUp waits until the interfaces of namespace ns are operationally
// up (carrier processed by the kernel) or ctx ends.
func (l *Lab) waitOperUp(ctx context.Context, ns string, ifaces ...string) error {
	return WaitFor(ctx, func() error {
		out, err := l.ipOut(ns, "-j", "link", "show")
		if err != nil {
			return err
		}
		var links []struct {
			Name  string `json:"ifname"`
			State string `json:"operstate"`
		}
		if err := json.Unmarshal(out, &links); err != nil {
			return fmt.Errorf("ip -j link show in %s: %w", ns, err)
		}
		state := map[string]string{}
		for _, ln := range links {
			state[ln.Name] = ln.State
		}
		for _, i := range ifaces {
			if state[i] != "UP" {
				return fmt.Errorf("%s in %s is %q", i, ns, state[i])
			}
		}
		return nil
	})
}
