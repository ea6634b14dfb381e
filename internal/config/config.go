// Package config reads, defaults and validates multiwan's YAML configuration.
//
// Every problem found in a file is reported with its position
// (FILE:LINE:COL), and all of them are reported, not only the first:
// a user fixing a config should not have to run check once per mistake.
// Nothing in this package touches the kernel.
//
// The daemon parses a reload with the same code as `multiwan check`, so a
// hostile or broken file must never make parsing hang or exhaust memory:
// files are read only if regular and within a size limit (read.go), the
// YAML is checked against limits of nesting, values and length before the
// YAML library sees it (prescan.go), and what aliases expand to is bounded
// (maxNodes, maxAliasDepth).
package config

import (
	"net/netip"
	"strings"
	"time"
)

// DefaultPath is where the CLI looks for the config when -c is not given.
const DefaultPath = "/etc/multiwan/multiwan.yaml"

// Defaults. They are written down here and nowhere else; the README's config
// reference repeats them.
const (
	DefaultMarkMask      uint32 = 0xff00
	DefaultTableBase            = 100 // WAN i (1-based, in file order) gets table DefaultTableBase+i
	DefaultRulePriority         = 1000
	DefaultSocket               = "/run/multiwan/multiwan.sock"
	DefaultSocketMode    uint32 = 0o600
	DefaultStateDir             = "/run/multiwan"
	DefaultHookTimeout          = 10 * time.Second
	DefaultProbeMethod          = "icmp"
	DefaultProbeInterval        = 500 * time.Millisecond
	DefaultProbeTimeout         = 1 * time.Second
	DefaultProbeDown            = 3
	DefaultProbeUp              = 3
	DefaultReliability          = 1
	DefaultNAT                  = "masquerade"
	DefaultNAT6                 = "none"
	DefaultLastResort           = "unreachable"
	DefaultSticky               = "flow"
	DefaultWeight               = 1
	DefaultTier                 = 1
	DefaultLocalTraffic         = true
)

// Pos is a position in a config file, 1-based.
type Pos struct {
	Line, Col int
}

// Config is a validated configuration. Every field holds its effective value:
// defaults are already filled in.
type Config struct {
	// File is the path the config was read from, used in messages.
	File string

	// MarkMask is the set of fwmark/ctmark bits multiwan owns.
	MarkMask uint32
	// RulePriority is the lowest ip rule priority multiwan uses; its rules
	// occupy RulePriority .. RulePriority+599.
	RulePriority int
	WANs         []WAN
	Policies     []Policy
	Rules        []Rule
	// DefaultPolicy names the policy for traffic no rule matches.
	DefaultPolicy string
	// LocalTraffic steers the router's own connections too.
	LocalTraffic bool
	Control      Control
	// HTTP is the opt-in network listener (dashboard, metrics, read-only
	// API); its zero value means none.
	HTTP HTTP
	// Hooks are executables run on every state change; HookTimeout bounds
	// each run.
	Hooks       []string
	HookTimeout time.Duration
	// StateDir is the directory where the daemon keeps what must survive
	// its crash, such as the sysctl values it changed, to be restored by
	// the next run.
	StateDir string
	// ResolvFile is where the daemon writes the resolver list (the
	// resolvers of usable WANs first) when some WAN has resolvers.
	ResolvFile string
}

// WAN is one uplink.
type WAN struct {
	Name      string
	Interface string
	// Gateway is the next hop; invalid (zero) when GatewayAuto is set or the
	// link is point-to-point.
	Gateway     netip.Addr
	GatewayAuto bool
	// Table is the routing table holding this WAN's routes.
	Table int
	// NAT is "masquerade" or "none", for IPv4.
	NAT string
	// IPv6 is set when the WAN carries IPv6 (gateway6 is configured).
	IPv6 bool
	// Gateway6 is the IPv6 next hop, often link-local; invalid when
	// Gateway6Auto is set (learned from the kernel: router advertisements,
	// DHCPv6 clients) or the link is point-to-point.
	Gateway6     netip.Addr
	Gateway6Auto bool
	// NAT6 is "masquerade" (NAT66) or "none" (routed prefixes).
	NAT6 string
	// Prefixes6 are IPv6 prefixes routed to this WAN without NAT
	// (delegated prefixes): traffic from them always leaves by this WAN.
	Prefixes6 []netip.Prefix
	// Endpoints are, for a WAN whose interface is a tunnel, the addresses
	// (and ports; 0: any) its encrypted outer packets go to. A packet to
	// one of them must never enter the tunnel itself: it would loop.
	Endpoints []netip.AddrPort
	// Underlays are, for a tunnel WAN (an overlay), the WANs its outer
	// packets may ride, in order of preference: they are pinned to the
	// first usable one, and the tunnel is down when none is (underlay.go).
	Underlays []string
	// TunnelMark is the fwmark the tunnel's software puts on its outer
	// packets (WireGuard's FwMark, OpenVPN's --mark, Tailscale's bypass
	// mark); 0 when none is configured. It lies outside MarkMask.
	TunnelMark uint32
	Probe      Probe
	Pos        Pos
	// DNS are the WAN's configured resolvers (dns:), in order: queries to
	// them always leave by this WAN. With DNSAuto, resolvers learned from
	// the WAN's DHCP lease and router advertisements come too, before
	// DNS[DNSAutoAt] (where `auto` was written in the list).
	DNS       []netip.Addr
	DNSAuto   bool
	DNSAutoAt int
	// LeaseFile is where the learned resolvers are read; empty: the DHCP
	// clients' usual places (see internal/resolv).
	LeaseFile string
}

// Probe configures health probing of a WAN.
type Probe struct {
	Method string // icmp, tcp, http, dns
	// Targets are as written: IP addresses for icmp, IP:port for tcp,
	// http(s) URLs for http, IP or IP:port (53 implied) for dns. Empty only
	// for icmp, meaning the gateway is probed.
	Targets     []string
	Interval    time.Duration
	Timeout     time.Duration
	Down        int
	Up          int
	Reliability int
	// MaxLoss is a fraction in [0,1]; negative when unset.
	MaxLoss float64
	// MaxRTT is zero when unset.
	MaxRTT time.Duration
}

// Policy chooses WANs for new connections.
type Policy struct {
	Name    string
	Members []Member
	// LastResort is what happens when no member is usable:
	// "unreachable", "blackhole" or "main".
	LastResort string
	// Sticky is "flow" (each connection keeps its WAN) or "source" (one LAN
	// host keeps one WAN).
	Sticky string
	// Implicit marks a one-member policy made for a rule's `wan:` shorthand.
	Implicit bool
	Pos      Pos
}

// Member is a WAN's place in a policy.
type Member struct {
	WAN    string
	Tier   int
	Weight int
}

// Rule steers matching new connections to a policy. Rules are tried in order;
// the first match wins.
type Rule struct {
	Name string
	// Src and Dst are prefixes (single addresses are /32 or /128): the
	// inline lists and the list files together.
	Src, Dst []netip.Prefix
	// SrcFile and DstFile are the list files read, if any, as resolved
	// paths.
	SrcFile, DstFile string
	// Proto is empty (any), or a protocol name such as tcp, udp, icmp.
	// Numbers in the config become names where there is one (6 → tcp);
	// others stay decimal ("99"). Either form is valid after nft's
	// `meta l4proto`.
	Proto string
	// SrcPort and DstPort are port ranges; empty means any.
	SrcPort, DstPort []PortRange
	// IIF lists incoming interface names; empty means any.
	IIF []string
	// Policy is the policy name; for the `wan:` shorthand it names the
	// implicit policy of that WAN.
	Policy  string
	Movable bool
	Pos     Pos
}

// PortRange is an inclusive range of ports; a single port has First == Last.
type PortRange struct {
	First, Last uint16
}

// HTTP configures the network listener.
type HTTP struct {
	// Listen is the address and port ("198.18.0.1:9731"); empty: no
	// listener.
	Listen netip.AddrPort
	// TokenFile names a file holding the token that allows use and auto
	// from the dashboard; empty: read-only.
	TokenFile string
}

// Control configures the control socket.
type Control struct {
	Socket string
	// Mode is the socket's file mode.
	Mode uint32
}

// WANByName returns the WAN with the given name.
func (c *Config) WANByName(name string) (*WAN, bool) {
	for i := range c.WANs {
		if c.WANs[i].Name == name {
			return &c.WANs[i], true
		}
	}
	return nil, false
}

// PolicyByName returns the policy with the given name.
func (c *Config) PolicyByName(name string) (*Policy, bool) {
	for i := range c.Policies {
		if c.Policies[i].Name == name {
			return &c.Policies[i], true
		}
	}
	return nil, false
}

// ImplicitPolicyName is the name of the one-member policy a rule's `wan: NAME`
// shorthand refers to. The colon keeps it apart from user policy names, which
// cannot contain one.
func ImplicitPolicyName(wan string) string { return "wan:" + wan }

// NFTName is name as it appears in nft identifiers (set and chain names):
// '-' becomes '_'. Names of one kind that differ only there would share an
// nft object, so the config refuses them.
func NFTName(name string) string { return strings.ReplaceAll(name, "-", "_") }
