package lab

// Hosts behind the internet, and tunnels through the ISPs to them: seed
// 004's VPS, which carries a WireGuard tunnel per ISP, and seed 000's road
// warrior, which reaches a WireGuard server on the router through an ISP's
// port forward. Everything is in namespaces of the lab, with addresses
// from 198.19.0.0/16, which the rest of the lab leaves alone:
//
//	internet ──vps── 198.19.0.1/24 ... 198.19.0.2/24 "up" of the VPS (its public
//	                 address, the tunnels' endpoint), plus 198.19.0.11..13: the
//	                 source the VPS gives the traffic of tunnel 1..3 towards
//	                 the internet, so a server tells which tunnel carried it
//	internet ──rw──  198.19.10.1/24 ... 198.19.10.2/24 the road warrior
//
//	tunnel k (1..3): router 198.19.k.2/24 ─ VPS 198.19.k.1/24, both ends
//	                 listening on UDP 30000+k (seed 004's ports)
//	router's WireGuard server: 198.19.100.1/24, UDP 51820 on all addresses;
//	                 the road warrior is 198.19.100.2
//
// A tunnel's outer packets go from the router by whichever ISP routing
// picks (multiwan's job) to the VPS; each ISP counts, per tunnel, the outer
// packets it forwards ([Lab.OuterPackets]).

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Namespaces and addresses of the hosts behind the internet.
const (
	NSVPS         = "vps"
	NSRoadWarrior = "rw"

	VPSAddr          = "198.19.0.2" // the VPS's public address: the tunnels' endpoint
	vpsPeerAddr      = "198.19.0.1" // the internet's end of the VPS's link
	RoadWarriorAddr  = "198.19.10.2"
	roadWarriorPeer  = "198.19.10.1"
	WGServerPort     = 51820          // the router's WireGuard server, on all addresses
	WGServerAddr     = "198.19.100.1" // its tunnel address
	RoadWarriorInner = "198.19.100.2" // the road warrior's tunnel address
)

// TunnelPort is the UDP port of tunnel k at both ends (30001..30003).
func TunnelPort(k int) int { return 30000 + k }

// TunnelRouterAddr is the router's address in tunnel k (198.19.k.2).
func TunnelRouterAddr(k int) string { return fmt.Sprintf("198.19.%d.2", k) }

// TunnelVPSAddr is the VPS's address in tunnel k (198.19.k.1): a probe
// target through the tunnel.
func TunnelVPSAddr(k int) string { return fmt.Sprintf("198.19.%d.1", k) }

// TunnelSource is the source the VPS gives tunnel k's traffic to the
// internet (198.19.0.11..13): what a server sees of a connection that
// went through tunnel k.
func TunnelSource(k int) string { return fmt.Sprintf("198.19.0.%d", 10+k) }

// isHost reports whether name is a host namespace added by AddHost.
func (l *Lab) isHost(name string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.hosts[name]
}

// addHost adds namespace name behind the internet: a veth named name in
// the internet namespace with peerAddr/24, "up" in the host with addr/24
// (and more /24 addresses), default route via the internet, forwarding
// on, reverse-path filters off; the internet forwards from then on.
func (l *Lab) addHost(name, addr, peerAddr string, more ...string) error {
	l.mu.Lock()
	if l.hosts[name] {
		l.mu.Unlock()
		return fmt.Errorf("lab: host %s already added", name)
	}
	if l.hosts == nil {
		l.hosts = map[string]bool{}
	}
	l.hosts[name] = true
	l.mu.Unlock()
	if err := l.addNS(name); err != nil {
		return err
	}
	if err := l.sysctl(name, "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"); err != nil {
		return err
	}
	// The internet routes between the ISPs and its hosts.
	if err := l.sysctl(NSInternet, "net.ipv4.ip_forward=1"); err != nil {
		return err
	}
	if err := l.ip(NSInternet, "link", "add", name, "type", "veth", "peer", "name", "up", "netns", l.NS(name)); err != nil {
		return err
	}
	if err := l.ipBatch(NSInternet, []string{"addr add " + peerAddr + "/24 dev " + name, "link set dev " + name + " up"}); err != nil {
		return err
	}
	cmds := []string{"link set dev lo up", "addr add " + addr + "/24 dev up"}
	for _, a := range more {
		cmds = append(cmds, "addr add "+a+"/24 dev up")
	}
	cmds = append(cmds, "link set dev up up", "route add default via "+peerAddr+" dev up")
	return l.ipBatch(name, cmds)
}

// VPS is seed 004's VPS: a host behind the internet that ends a
// WireGuard tunnel per ISP and sends each tunnel's traffic to the internet
// from an address of its own (TunnelSource).
type VPS struct {
	l       *Lab
	tunnels map[int]*Tunnel
}

// Tunnel is tunnel k between the router and the VPS.
type Tunnel struct {
	K      int
	Router *WG // in the router namespace
	VPS    *WG // in the VPS namespace
	// vpsKnew is the router's endpoint the VPS knew when its peer was
	// stopped, to be given back on StartPeer.
	vpsKnew string
}

// AddVPS adds the VPS behind the internet. It has no tunnel yet (see
// [VPS.AddTunnel]).
func (l *Lab) AddVPS() (*VPS, error) {
	var more []string
	for k := 1; k <= MaxISPs; k++ {
		more = append(more, TunnelSource(k))
	}
	if err := l.addHost(NSVPS, VPSAddr, vpsPeerAddr, more...); err != nil {
		return nil, err
	}
	if err := l.nft(NSVPS, "table ip vps {\n\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t}\n}\n"); err != nil {
		return nil, err
	}
	// Each ISP counts the outer packets it forwards to the VPS, per
	// tunnel (one named counter each, filled in by AddTunnel).
	for k := 1; k <= l.isps; k++ {
		if err := l.nft(ISPNS(k), "table ip outer {\n\tchain forward {\n\t\ttype filter hook forward priority filter - 1; policy accept;\n\t}\n}\n"); err != nil {
			return nil, err
		}
	}
	return &VPS{l: l, tunnels: map[int]*Tunnel{}}, nil
}

// AddTunnel creates tunnel k (1..3): a wireguard-go interface at each end,
// listening on TunnelPort(k), the router's with the VPS as its peer's
// endpoint (persistent keepalive 1 s), the VPS's learning the router's
// endpoint from its packets; and the VPS's NAT of the tunnel's traffic.
// The router's interface is named [Tunnel.Router].Iface: a name of this
// lab's, for the daemon's config.
func (v *VPS) AddTunnel(k int) (*Tunnel, error) {
	l := v.l
	if k < 1 || k > MaxISPs {
		return nil, fmt.Errorf("lab: tunnel %d: 1..%d", k, MaxISPs)
	}
	if v.tunnels[k] != nil {
		return nil, fmt.Errorf("lab: tunnel %d exists", k)
	}
	r, err := l.startWG(NSRouter, l.wgName('r', k), TunnelPort(k), TunnelRouterAddr(k)+"/24")
	if err != nil {
		return nil, err
	}
	s, err := l.startWG(NSVPS, l.wgName('v', k), TunnelPort(k), TunnelVPSAddr(k)+"/24")
	if err != nil {
		return nil, err
	}
	if err := s.SetPeer(r.Pub, "allowed-ips", TunnelRouterAddr(k)+"/32"); err != nil {
		return nil, err
	}
	if err := r.SetPeer(s.Pub, "endpoint", VPSAddr+":"+strconv.Itoa(TunnelPort(k)), "allowed-ips", "0.0.0.0/0",
		"persistent-keepalive", "1"); err != nil {
		return nil, err
	}
	if err := l.nft(NSVPS, fmt.Sprintf("add rule ip vps postrouting iifname %q oifname \"up\" snat to %s\n", s.Iface, TunnelSource(k))); err != nil {
		return nil, err
	}
	var b strings.Builder
	for i := 1; i <= l.isps; i++ {
		fmt.Fprintf(&b, "add counter ip outer t%d\n", k)
		fmt.Fprintf(&b, "add rule ip outer forward ip daddr %s udp dport %d counter name \"t%d\"\n", VPSAddr, TunnelPort(k), k)
		if err := l.nft(ISPNS(i), b.String()); err != nil {
			return nil, err
		}
		b.Reset()
	}
	t := &Tunnel{K: k, Router: r, VPS: s}
	v.tunnels[k] = t
	return t, nil
}

// StopPeer makes the VPS stop answering tunnel k, as a VPS whose
// WireGuard peer is gone: the router's peer is removed from the VPS's
// interface, whose packets it then drops.
func (v *VPS) StopPeer(k int) error {
	t := v.tunnels[k]
	if t == nil {
		return fmt.Errorf("lab: no tunnel %d", k)
	}
	ep, err := t.VPS.PeerEndpoint(t.Router.Pub)
	if err != nil {
		return err
	}
	t.vpsKnew = ep
	return t.VPS.RemovePeer(t.Router.Pub)
}

// StartPeer undoes StopPeer. The VPS gets the router's endpoint back and a
// keepalive, so it starts the handshake itself rather than wait for the
// router's next attempt (up to 15 s later).
func (v *VPS) StartPeer(k int) error {
	t := v.tunnels[k]
	if t == nil {
		return fmt.Errorf("lab: no tunnel %d", k)
	}
	args := []string{"allowed-ips", TunnelRouterAddr(k) + "/32"}
	if t.vpsKnew != "" {
		args = append(args, "endpoint", t.vpsKnew, "persistent-keepalive", "1")
	}
	return t.VPS.SetPeer(t.Router.Pub, args...)
}

// OuterPackets reads how many outer packets of tunnel k ISP isp has
// forwarded to the VPS.
func (l *Lab) OuterPackets(isp, k int) (uint64, error) {
	if err := l.checkISP(isp); err != nil {
		return 0, err
	}
	return l.counter(ISPNS(isp), "outer", "t"+strconv.Itoa(k))
}

// counter reads the packets of the named counter of table ip TABLE in ns.
func (l *Lab) counter(ns, table, name string) (uint64, error) {
	out, err := l.nsRun(ns, nil, "nft", "-j", "list", "counter", "ip", table, name)
	if err != nil {
		return 0, err
	}
	var doc struct {
		Nftables []struct {
			Counter *struct {
				Packets uint64 `json:"packets"`
			} `json:"counter"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return 0, fmt.Errorf("lab: nft -j list counter ip %s %s in %s: %w", table, name, ns, err)
	}
	for _, o := range doc.Nftables {
		if o.Counter != nil {
			return o.Counter.Packets, nil
		}
	}
	return 0, fmt.Errorf("lab: no counter %s in table ip %s in %s", name, table, ns)
}

// RoadWarrior is seed 000's road warrior: a WireGuard peer on the internet
// side, reaching the router's WireGuard server through an ISP's port
// forward.
type RoadWarrior struct {
	l      *Lab
	Server *WG // in the router, on all addresses
	Peer   *WG // in the road warrior's namespace
}

// AddRoadWarrior adds the road warrior behind the internet, the router's
// WireGuard server (port WGServerPort on all addresses, no endpoint for
// its peer: it learns where the road warrior is), and in every ISP a port
// forward of UDP WGServerPort and of the extra ports from its public
// address to the router's address on its link. The road warrior has no
// endpoint yet: [RoadWarrior.Via] gives it one.
func (l *Lab) AddRoadWarrior(ports ...int) (*RoadWarrior, error) {
	if err := l.addHost(NSRoadWarrior, RoadWarriorAddr, roadWarriorPeer); err != nil {
		return nil, err
	}
	srv, err := l.startWG(NSRouter, l.wgName('s', 0), WGServerPort, WGServerAddr+"/24")
	if err != nil {
		return nil, err
	}
	peer, err := l.startWG(NSRoadWarrior, l.wgName('w', 0), WGServerPort, RoadWarriorInner+"/24")
	if err != nil {
		return nil, err
	}
	if err := srv.SetPeer(peer.Pub, "allowed-ips", RoadWarriorInner+"/32"); err != nil {
		return nil, err
	}
	for k := 1; k <= l.isps; k++ {
		var rules strings.Builder
		for _, p := range append([]int{WGServerPort}, ports...) {
			fmt.Fprintf(&rules, "\t\tiifname \"up\" ip daddr %s udp dport %d dnat to %s\n", ISPPublicAddr(k), p, WANAddr(k))
		}
		// Replies to the road warrior leaving the ISP, by source port:
		// which ISP the router's answers took.
		err := l.nft(ISPNS(k), "table ip rwfwd {\n\tcounter replies {\n\t}\n"+
			"\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat - 1; policy accept;\n"+rules.String()+"\t}\n"+
			"\tchain forward {\n\t\ttype filter hook forward priority filter - 1; policy accept;\n"+
			"\t\toifname \"up\" ip daddr "+RoadWarriorAddr+" counter name \"replies\"\n\t}\n}\n")
		if err != nil {
			return nil, err
		}
	}
	return &RoadWarrior{l: l, Server: srv, Peer: peer}, nil
}

// Via points the road warrior at the router's server through ISP k's
// port forward (ISPPublicAddr(k):WGServerPort), with a keepalive of 1 s.
func (r *RoadWarrior) Via(k int) error {
	return r.Peer.SetPeer(r.Server.Pub, "endpoint", ISPPublicAddr(k)+":"+strconv.Itoa(WGServerPort),
		"allowed-ips", WGServerAddr+"/32", "persistent-keepalive", "1")
}

// Replies reads how many packets to the road warrior ISP k has forwarded
// from the router (any protocol).
func (l *Lab) Replies(k int) (uint64, error) {
	return l.counter(ISPNS(k), "rwfwd", "replies")
}
