package lab

import (
	"fmt"
	"time"
)

// Logical namespace names accepted by the methods of [Lab]. ISP namespaces
// are named by [ISPNS].
const (
	NSInternet = "internet"
	NSRouter   = "router"
	NSClient   = "client"
	NSClient2  = "client2"
)

// MaxISPs is the largest number of ISPs a lab can have.
const MaxISPs = 3

// Addresses and ports of the lab's services.
const (
	ServiceAddr = "203.0.113.10" // HTTP and UDP echo in the internet namespace
	ProbeAddr1  = "203.0.113.20" // ping target
	ProbeAddr2  = "203.0.113.30" // ping target
	PortalAddr  = "203.0.113.50" // a second service address

	HTTPPort    = 80
	UDPEchoPort = 7000

	// Ports each ISP forwards from its public address to the router.
	FwdTCPPort1 = 8080
	FwdTCPPort2 = 9090
	FwdUDPPort  = 7000
)

// LAN addressing.
const (
	LAN1Addr    = "198.51.100.1" // router on lan1
	LAN1Subnet  = "198.51.100.0/25"
	LAN2Addr    = "198.51.100.129" // router on lan2
	LAN2Subnet  = "198.51.100.128/25"
	ClientAddr  = "198.51.100.10" // primary address of client
	Client2Addr = "198.51.100.130"

	// ClientExtraAddrs is how many secondary addresses client has, see
	// [ClientExtraAddr].
	ClientExtraAddrs = 50
)

// ISPNS returns the logical namespace name of ISP k ("isp1", ...).
func ISPNS(k int) string { return fmt.Sprintf("isp%d", k) }

// WANIface returns the name of the router's interface towards ISP k.
func WANIface(k int) string { return fmt.Sprintf("wan%d", k) }

// ISPGateway returns ISP k's address on its link to the router, which is the
// router's next hop for that WAN (192.0.2.1, 192.0.2.65, 192.0.2.129).
func ISPGateway(k int) string { return fmt.Sprintf("192.0.2.%d", 1+64*(k-1)) }

// WANAddr returns the router's address on its link to ISP k (192.0.2.2,
// 192.0.2.66, 192.0.2.130).
func WANAddr(k int) string { return fmt.Sprintf("192.0.2.%d", 2+64*(k-1)) }

// WANSubnet returns the /26 of the link between ISP k and the router.
func WANSubnet(k int) string { return fmt.Sprintf("192.0.2.%d/26", 64*(k-1)) }

// ISPPublicAddr returns ISP k's address towards the internet; everything the
// ISP masquerades appears to come from it (198.18.k.2).
func ISPPublicAddr(k int) string { return fmt.Sprintf("198.18.%d.2", k) }

// InternetPeerAddr returns the internet namespace's address on its link to
// ISP k (198.18.k.1), the source seen by forwarded inbound connections.
func InternetPeerAddr(k int) string { return fmt.Sprintf("198.18.%d.1", k) }

// ClientExtraAddr returns the i-th secondary address of client, i in
// 1..[ClientExtraAddrs] (198.51.100.11 .. 198.51.100.60).
func ClientExtraAddr(i int) string { return fmt.Sprintf("198.51.100.%d", 10+i) }

// internetAddrs lists every address the internet namespace owns, so services
// can bind each one: a UDP reply must leave from the address the request was
// sent to, or NAT on the way back cannot match it.
func internetAddrs(isps int) []string {
	addrs := []string{ServiceAddr, ProbeAddr1, ProbeAddr2, PortalAddr}
	for k := 1; k <= isps; k++ {
		addrs = append(addrs, InternetPeerAddr(k))
	}
	return addrs
}

// IPv6 addresses of the lab's services (with [Options].IPv6), on the
// internet namespace's loopback. The HTTP and UDP echo services answer on
// ServiceAddr6 (and every other IPv6 address of the internet namespace)
// with the client's IPv6 address.
const (
	ServiceAddr6 = "2001:db8:ffff::10" // HTTP and UDP echo
	ProbeAddr6a  = "2001:db8:ffff::20" // ping target
	ProbeAddr6b  = "2001:db8:ffff::30" // ping target
	PortalAddr6  = "2001:db8:ffff::50" // a second service address
)

// IPv6 LAN addressing (with [Options].IPv6).
const (
	LAN1Addr6    = "2001:db8:100::1" // router on lan1
	LAN1Subnet6  = "2001:db8:100::/64"
	LAN2Addr6    = "2001:db8:200::1" // router on lan2
	LAN2Subnet6  = "2001:db8:200::/64"
	ClientAddr6  = "2001:db8:100::10" // primary IPv6 address of client
	Client2Addr6 = "2001:db8:200::10"

	// ClientExtraAddrs6 is how many more IPv6 addresses client has, see
	// [ClientExtraAddr6].
	ClientExtraAddrs6 = 10
)

// ISPGateway6 returns ISP k's IPv6 address on its link to the router
// (2001:db8:k::1), the router's IPv6 next hop for that WAN.
func ISPGateway6(k int) string { return fmt.Sprintf("2001:db8:%d::1", k) }

// WANAddr6 returns the router's IPv6 address on its link to ISP k
// (2001:db8:k::2). It is static even when the lab uses DHCP for IPv4.
func WANAddr6(k int) string { return fmt.Sprintf("2001:db8:%d::2", k) }

// WANSubnet6 returns the /64 of the link between ISP k and the router.
func WANSubnet6(k int) string { return fmt.Sprintf("2001:db8:%d::/64", k) }

// ISPPublicAddr6 returns ISP k's IPv6 address towards the internet
// (2001:db8:f0k::2); the ISP masquerades IPv6 leaving it (NAT66), so the
// internet sees every IPv6 connection through ISP k coming from it.
func ISPPublicAddr6(k int) string { return fmt.Sprintf("2001:db8:f0%d::2", k) }

// InternetPeerAddr6 returns the internet namespace's IPv6 address on its
// link to ISP k (2001:db8:f0k::1).
func InternetPeerAddr6(k int) string { return fmt.Sprintf("2001:db8:f0%d::1", k) }

// ClientExtraAddr6 returns the i-th additional IPv6 address of client, i in
// 1..[ClientExtraAddrs6] (2001:db8:100::11 .. 2001:db8:100::20).
func ClientExtraAddr6(i int) string { return fmt.Sprintf("2001:db8:100::%d", 10+i) }

// internetAddrs6 lists the internet namespace's IPv6 addresses.
func internetAddrs6(isps int) []string {
	addrs := []string{ServiceAddr6, ProbeAddr6a, ProbeAddr6b, PortalAddr6}
	for k := 1; k <= isps; k++ {
		addrs = append(addrs, InternetPeerAddr6(k))
	}
	return addrs
}

// DHCP pools (with [Options].DHCP): ISP k hands out an address from
// DHCPPoolFirst(k)..DHCPPoolLast(k) (192.0.2.10..30 + 64(k-1)) with
// [ISPGateway](k) as router, until [Lab.SetDHCPPool] changes that.
func DHCPPoolFirst(k int) string { return fmt.Sprintf("192.0.2.%d", 10+64*(k-1)) }

// DHCPPoolLast is the last address of ISP k's initial DHCP pool.
func DHCPPoolLast(k int) string { return fmt.Sprintf("192.0.2.%d", 30+64*(k-1)) }

// DHCPLeaseTime is the lease time ISPs' DHCP servers give (dnsmasq's
// minimum); clients renew after about half of it.
const DHCPLeaseTime = 2 * time.Minute
