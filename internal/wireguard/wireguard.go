// Package wireguard reads what a WireGuard interface says about its own
// outer traffic: the UDP port it sends from, the fwmark it puts on its
// packets, and its peers' endpoints. The daemon pins a tunnel WAN's outer
// traffic to its underlay by them (plan/underlay.go).
//
// Two implementations are read: the kernel's, over generic netlink with
// golang.zx2c4.com/wireguard/wgctrl, and userspace ones (wireguard-go,
// boringtun), over their UAPI socket in /var/run/wireguard. wgctrl speaks
// that socket too, but without a deadline and without a bound on what it
// reads: a stopped or hostile process on the other end would hang the
// reader or fill its memory. So the socket is read here (uapi.go), with a
// deadline and a size limit, and only what multiwan needs is kept. Which
// one an interface is, is told by its link kind: "wireguard" for the
// kernel's, a tun device with a UAPI socket for userspace.
package wireguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl"

	"github.com/multiwan/multiwan/internal/config"
	"github.com/multiwan/multiwan/internal/plan"
)

// SocketDir is where userspace WireGuard implementations put their UAPI
// sockets, one per interface: NAME.sock.
const SocketDir = "/var/run/wireguard"

// ErrNotWireGuard is returned for an interface that is not a WireGuard
// interface multiwan can read (missing, another kind of tunnel, a tun
// device without a UAPI socket).
var ErrNotWireGuard = errors.New("not a WireGuard interface")

// DefaultTimeout bounds one read when the context has no deadline.
const DefaultTimeout = 500 * time.Millisecond

// Reader reads WireGuard interfaces. The zero value is ready to use.
type Reader struct {
	// SocketDir overrides SocketDir (tests).
	SocketDir string
}

// Read reads interface iface of the calling thread's network namespace.
// The read is bounded by ctx (DefaultTimeout without a deadline); at most
// plan.MaxLearnedEndpoints endpoints are taken.
func (r *Reader) Read(ctx context.Context, iface string) (*plan.TunnelInfo, error) {
	if !config.ValidIfname(iface) {
		return nil, fmt.Errorf("%q: %w", iface, ErrNotWireGuard)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}
	link, err := netlink.LinkByName(iface)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, fmt.Errorf("%s: %w", iface, ErrNotWireGuard)
		}
		return nil, fmt.Errorf("link %s: %w", iface, err)
	}
	switch link.Type() {
	case "wireguard":
		return readKernel(iface)
	case "tuntap", "tun":
		dir := r.SocketDir
		if dir == "" {
			dir = SocketDir
		}
		return readUAPI(ctx, filepath.Join(dir, iface+".sock"))
	}
	return nil, fmt.Errorf("%s is a %s link: %w", iface, link.Type(), ErrNotWireGuard)
}

// readKernel reads a kernel WireGuard interface over generic netlink.
func readKernel(iface string) (*plan.TunnelInfo, error) {
	c, err := wgctrl.New()
	if err != nil {
		return nil, fmt.Errorf("wireguard: %w", err)
	}
	defer c.Close()
	dev, err := c.Device(iface)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", iface, ErrNotWireGuard)
	}
	if err != nil {
		return nil, fmt.Errorf("wireguard %s: %w", iface, err)
	}
	t := &plan.TunnelInfo{Kind: "wireguard", ListenPort: uint16(dev.ListenPort), FwMark: uint32(dev.FirewallMark),
		Peers: len(dev.Peers)}
	for _, p := range dev.Peers {
		if len(t.Endpoints) == plan.MaxLearnedEndpoints {
			break
		}
		if ep, ok := addrPort(p.Endpoint); ok {
			t.Endpoints = append(t.Endpoints, ep)
		}
	}
	return t, nil
}

func addrPort(a *net.UDPAddr) (netip.AddrPort, bool) {
	if a == nil {
		return netip.AddrPort{}, false
	}
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok || a.Port <= 0 || a.Port > 65535 || ip.Unmap().IsUnspecified() {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(a.Port)), true
}
