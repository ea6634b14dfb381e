package initconfig

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Observe reads the links, addresses and default routes of the network
// namespace of the calling thread over netlink, and which links have a
// DHCP client running for them. It changes nothing.
func Observe() (Observed, error) {
	var obs Observed
	links, err := retry(netlink.LinkList)
	if err != nil {
		return obs, fmt.Errorf("list links: %w", err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	addrs, err := retry(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, unix.AF_UNSPEC) })
	if err != nil {
		return obs, fmt.Errorf("list addresses: %w", err)
	}
	byLink := map[int][]Addr{}
	for _, a := range addrs {
		if a.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		p := netip.PrefixFrom(ip.Unmap(), ones)
		if !p.IsValid() {
			continue
		}
		byLink[a.LinkIndex] = append(byLink[a.LinkIndex], Addr{Prefix: p, Dynamic: a.Flags&unix.IFA_F_PERMANENT == 0})
	}
	clients := dhcpClients()
	for _, l := range links {
		a := l.Attrs()
		link := Link{
			Index:        a.Index,
			Name:         a.Name,
			Kind:         l.Type(),
			Loopback:     a.Flags&net.FlagLoopback != 0,
			PointToPoint: a.Flags&net.FlagPointToPoint != 0,
			Up:           a.Flags&net.FlagUp != 0,
			Carrier:      carrier(a),
			Master:       names[a.MasterIndex],
			Addrs:        byLink[a.Index],
			DHCPClient:   clients[a.Name],
		}
		obs.Links = append(obs.Links, link)
	}
	routes, err := retry(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(unix.AF_UNSPEC, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return obs, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if r.Type != unix.RTN_UNICAST || r.Table == unix.RT_TABLE_LOCAL {
			continue
		}
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		family := 4
		if r.Family == unix.AF_INET6 {
			family = 6
		}
		hops := []*netlink.NexthopInfo{{LinkIndex: r.LinkIndex, Gw: r.Gw}}
		if len(r.MultiPath) > 0 {
			hops = r.MultiPath
		}
		for _, h := range hops {
			dev, ok := names[h.LinkIndex]
			if !ok {
				continue
			}
			var gw netip.Addr
			if g, ok := netip.AddrFromSlice(h.Gw); ok {
				gw = g.Unmap()
			}
			obs.Routes = append(obs.Routes, Route{
				Family:   family,
				Dev:      dev,
				Gateway:  gw,
				Table:    r.Table,
				Metric:   r.Priority,
				Protocol: ProtocolName(int(r.Protocol)),
			})
		}
	}
	return obs, nil
}

// retry calls f until it does not fail with netlink.ErrDumpInterrupted
// (a dump that raced a change), at most five times; the last partial
// result is then used.
func retry[T any](f func() (T, error)) (T, error) {
	var v T
	var err error
	for range 5 {
		v, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, nil
}

// carrier reports whether the link can pass packets ("unknown" is what
// many virtual links report while working).
func carrier(a *netlink.LinkAttrs) bool {
	switch a.OperState {
	case netlink.OperDown, netlink.OperLowerLayerDown, netlink.OperNotPresent:
		return false
	}
	return a.RawFlags&unix.IFF_LOWER_UP != 0 || a.OperState == netlink.OperUp || a.OperState == netlink.OperUnknown
}

// dhcpClientPrograms are DHCP clients whose routes carry protocol "boot",
// like a configured route's: that one of them runs for a link tells a
// leased gateway from a configured one.
var dhcpClientPrograms = []string{"dhclient", "udhcpc", "dhcpcd", "pump", "dhcp6c", "odhcpc", "odhcp6c"}

// dhcpClients maps link names to the DHCP client program running for them
// in this network namespace, found in /proc: a client process whose
// command line names the link. Processes of other namespaces (other
// containers, other lab routers) are skipped. What cannot be read is
// skipped too: this is a hint, not a requirement.
func dhcpClients() map[string]string {
	out := map[string]string{}
	self, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		return out
	}
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, d := range dirs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		dir := filepath.Join("/proc", d.Name())
		comm, err := os.ReadFile(filepath.Join(dir, "comm"))
		if err != nil {
			continue
		}
		prog := strings.TrimSpace(string(comm))
		if !slices.Contains(dhcpClientPrograms, prog) {
			continue
		}
		if ns, err := os.Readlink(filepath.Join(dir, "ns", "net")); err != nil || ns != self {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline"))
		if err != nil {
			continue
		}
		for _, arg := range strings.Split(string(cmdline), "\x00") {
			arg = strings.TrimPrefix(arg, "-i") // udhcpc -ieth0
			if arg != "" && out[arg] == "" {
				out[arg] = prog
			}
		}
	}
	return out
}
