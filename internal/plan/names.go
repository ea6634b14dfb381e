package plan

import (
	"strconv"
	"strings"

	"github.com/multiwan/multiwan/internal/config"
)

// The nft vocabulary of table inet multiwan: the names of its chains, sets
// and maps. The planner builds the objects under these names, the tracer
// starts from them, and a trace (Outcome.Chains) shows them to users, so
// they are shared here rather than spelled out where they are used. Chains
// and sets live in separate nft namespaces: the map wan_mark and the chain
// of a WAN named "mark" (wan_mark) do not clash.

// Base chains: hooked into the kernel, every packet meets them.
const (
	// ChainPrerouting classifies forwarded and inbound packets (filter
	// hook prerouting, priority mangle): a known connection's packet gets
	// its WAN back from the connection mark, a new connection is sent to
	// ChainIdentify and then ChainSteer.
	ChainPrerouting = "prerouting"
	// ChainOutput does the same for the router's own packets (route hook
	// output, priority mangle, so a changed mark reroutes the packet);
	// it steers them only with `local_traffic: true`.
	ChainOutput = "output"
	// ChainInside clears the WAN of a new connection that neither came
	// from a WAN nor leaves by one (LAN to LAN, router to LAN) at
	// postrouting, so a dead WAN's conntrack cleanup never cuts it.
	ChainInside = "inside"
	// ChainPostrouting masquerades on the WANs with `nat: masquerade`
	// (and, for IPv6, `nat6: masquerade`).
	ChainPostrouting = "postrouting"
)

// Regular chains reached from the base chains.
const (
	// ChainIdentify gives a new connection the WAN it is already tied to,
	// before any rule: a packet that carries a WAN's mark (a probe), one
	// that arrived on a WAN, a router socket bound to a WAN's address, a
	// destination on a WAN's own subnet, an IPv6 source in a prefix a WAN
	// routes without NAT.
	ChainIdentify = "identify"
	// ChainBound maps the router's WAN addresses to their WANs (a verdict
	// map per family, BoundMap, whose elements change at every failover:
	// the best WAN's address is let through).
	ChainBound = "bound"
	// ChainGuard is the last line of defence against a tunnel carrying
	// its own outer packets (filter hook postrouting): a packet to a
	// tunnel WAN's endpoint that is about to leave by that tunnel is
	// counted and dropped. Present only when some WAN names endpoints.
	ChainGuard = "loop_guard"
	// ChainSteer holds the steering rules in order, each a goto to its
	// policy's chain, and ends with a goto to the default policy's chain.
	ChainSteer = "steer"
	// ChainUnderlay pins the router's own outer packets of tunnel WANs
	// (recognised by the tunnel's mark, its listen port or its peers'
	// endpoints) to the first usable underlay, each a goto to that
	// WAN's chain, or fails them when none is usable. Reached from
	// ChainOutput after ChainIdentify, before ChainBound and ChainSteer;
	// present only when some WAN has underlays. Its rules look the
	// verdict up in each tunnel's UnderlayMap, whose elements change at a
	// failover.
	ChainUnderlay = "underlay"
	// ChainNoUnderlay fails an outer packet of a tunnel none of whose
	// underlays is usable: it gets the unreachable mark and is accepted,
	// to fail at routing rather than enter a tunnel or follow the main
	// table.
	ChainNoUnderlay = "no_underlay"
)

// UnderlayMap names a tunnel WAN's verdict map in ChainUnderlay (keyed by
// family): its underlay's chain, or ChainNoUnderlay.
func UnderlayMap(wan string) string { return "underlay_" + config.NFTName(wan) }

// Named sets and maps.
const (
	// MapRestore maps a connection's WAN id (ct mark) to the WAN's
	// RestoreChain, which copies it onto the packet.
	MapRestore = "restore"
	// MapWANMark maps a packet's WAN id (meta mark: a probe's SO_MARK,
	// or another table's mark) to the WAN's WANChain.
	MapWANMark = "wan_mark"
	// MapWANIIF maps a WAN's interface to its WANChain: a connection that
	// arrived on a WAN is answered through it.
	MapWANIIF = "wan_iif"
	// MapWANNet maps the IPv4 subnets of the WANs' interfaces to the
	// WAN's WANChain: the ISP's own subnet (its router, its DNS) is
	// reached directly.
	MapWANNet = "wan_net"
	// MapWANNet6 is MapWANNet for IPv6; present only when a WAN carries
	// IPv6.
	MapWANNet6 = "wan_net6"
	// MapWANSrc6 maps the IPv6 prefixes a WAN routes without NAT
	// (prefixes6) to its WANChain: no other WAN can carry those sources.
	// Present only when a WAN carries IPv6.
	MapWANSrc6 = "wan_src6"
	// SetWANIfs is every WAN interface (ChainInside).
	SetWANIfs = "wan_ifs"
	// SetNATOIF is the WAN interfaces that masquerade IPv4.
	SetNATOIF = "nat_oif"
	// SetNAT6OIF is the WAN interfaces that masquerade IPv6 (NAT66);
	// present only when a WAN carries IPv6.
	SetNAT6OIF = "nat6_oif"
	// SetNoIPv6Ifs is the interfaces of WANs that carry no IPv6 (no
	// gateway6) while another WAN does: their IPv6 is left to the main
	// table, untouched. Present only when a WAN carries IPv6.
	SetNoIPv6Ifs = "nov6_ifs"
	// MapWANRX and MapWANTX send each packet received from, and sent to, a
	// WAN's interface to its named counter (CounterRX, CounterTX): bytes
	// and packets per WAN and direction, one map lookup a packet. Present
	// only with the network listener (metrics, dashboard).
	MapWANRX = "wan_rx"
	MapWANTX = "wan_tx"
)

// CounterRX and CounterTX name the counters of what a WAN received and
// sent, e.g. "rx_isp1".
func CounterRX(wan string) string { return "rx_" + config.NFTName(wan) }
func CounterTX(wan string) string { return "tx_" + config.NFTName(wan) }

// Prefixes of the derived names, kept in one place for the functions below
// and their inverse WANOfChain.
const (
	wanChainPrefix     = "wan_"
	restoreChainPrefix = "restore_"
	pinChainPrefix     = "pin_"
	policyChainPrefix  = "policy_"
	ruleSetPrefix      = "r_"
)

// WANChain names the chain that gives a new connection to the WAN: it
// writes the WAN's id into the connection mark (keeping the movable bit and
// every bit outside the mask) and into the packet mark. Every decision that
// picks a WAN (maps of ChainIdentify, policy chains) ends in a goto to it.
func WANChain(wan string) string { return wanChainPrefix + wan }

// WANOfChain is the inverse of WANChain: the WAN a chain name gives
// connections to, and whether it is such a chain at all.
func WANOfChain(chain string) (string, bool) {
	return strings.CutPrefix(chain, wanChainPrefix)
}

// RestoreChain names the chain that copies the WAN's id from a known
// connection's mark onto its packet (reached through MapRestore).
func RestoreChain(wan string) string { return restoreChainPrefix + wan }

// PinChain names the chain of the implicit one-member policy that a rule's
// `wan: NAME` shorthand refers to (config.ImplicitPolicyName).
func PinChain(wan string) string { return pinChainPrefix + wan }

// PolicyChain names the chain that renders a policy's decision (one WAN, a
// weighted random or source-hashed choice, or the last resort). Implicit
// policies ("wan:NAME", see config.ImplicitPolicyName) get PinChain(NAME);
// policy names cannot contain a colon, so the two never clash.
func PolicyChain(policy string) string {
	if wan, ok := strings.CutPrefix(policy, "wan:"); ok {
		return PinChain(wan)
	}
	return policyChainPrefix + policy
}

// PolicyMap names the verdict map that holds a policy's current decision
// for one family (4 or 6), e.g. PolicyMap("balanced", 4) is
// "policy_balanced_4" and PolicyMap("wan:isp1", 4) is "pin_isp1_4". Maps
// and chains live in separate nft namespaces; the suffix keeps the names
// apart for people.
func PolicyMap(policy string, family int) string {
	return PolicyChain(policy) + "_" + strconv.Itoa(family)
}

// BoundMap names the verdict map of ChainBound for one family (4 or 6):
// the router's WAN addresses to their WANs.
func BoundMap(family int) string { return "bound_" + strconv.Itoa(family) }

// LastResortChain names the chain that marks a packet of a policy without
// a usable WAN for its last resort (unreachable, blackhole, main).
func LastResortChain(kind string) string { return "last_resort_" + kind }

// Suffixes of the match sets of a steering rule (RuleSet).
const (
	// RuleSetIIF is the rule's incoming interfaces (iif).
	RuleSetIIF = "iif"
	// RuleSetSrcPort and RuleSetDstPort are its ports (src_port,
	// dst_port), interval sets.
	RuleSetSrcPort = "sport"
	RuleSetDstPort = "dport"
	// RuleSetSrc4, RuleSetDst4, RuleSetSrc6 and RuleSetDst6 are its
	// addresses and prefixes (src, dst and their list files) per family,
	// interval sets.
	RuleSetSrc4 = "src4"
	RuleSetDst4 = "dst4"
	RuleSetSrc6 = "src6"
	RuleSetDst6 = "dst6"
)

// GuardSet names the set of a tunnel WAN's endpoint addresses of one
// family (4 or 6) that ChainGuard checks, e.g. GuardSet("wg1", 4) is
// "guard_wg1_4".
func GuardSet(wan string, family int) string {
	return "guard_" + config.NFTName(wan) + "_" + strconv.Itoa(family)
}

// RuleSet names the match set of a steering rule that suffix (RuleSetIIF,
// RuleSetSrc4, ...) says, e.g. RuleSet("isp2-portal", RuleSetDst4) is
// "r_isp2_portal_dst4".
func RuleSet(rule, suffix string) string {
	// config refuses rules whose names are equal this way.
	return ruleSetPrefix + config.NFTName(rule) + "_" + suffix
}
