package lab

import "fmt"

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
