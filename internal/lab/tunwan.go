package lab

// A point-to-point WAN ([Options].P2PISP): the link between ISP k and the
// router is not a veth but two tun devices, wanK in the router and custK in
// the ISP, whose packets the lab copies from one to the other. A tun device
// (IFF_TUN, no packet information) is what PPP interfaces and layer-3
// tunnels look like to the kernel and to the daemon: flags
// POINTOPOINT,NOARP, no link-layer address, no neighbours, and addressing
// like PPP's, one /32 address with the peer's address:
//
//	router  ip addr add 192.0.2.2 peer 192.0.2.1 dev wan1  (WANAddr(k) peer ISPGateway(k))
//	isp1    ip addr add 192.0.2.1 peer 192.0.2.2 dev cust1 (the reverse)
//
// The router has no route through it but the connected route to the peer
// (a daemon with `gateway: auto` routes "default dev wanK"); the ISP has the
// same ruleset as the others (forwarding, masquerade on "up", port forwards
// to the router's address, the fault chains).
//
// Each tun device belongs to an open file descriptor of this process: it is
// created by opening /dev/net/tun and TUNSETIFF on a thread switched into
// its namespace ([Lab.InNS]), since the kernel creates the device in the
// namespace of the thread that opened the file. Closing the descriptor
// deletes the device, so nothing outlives the lab: Close closes both (and
// waits for the copying goroutines), and if the process dies the kernel
// closes them.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// tunBufSize is the buffer of each copying direction: one packet at a time,
// larger than any packet a tun device without offloads hands out (its MTU
// is at most 64 KiB).
const tunBufSize = 64 << 10

// checkP2P validates [Options].P2PISP for a lab of isps ISPs.
func checkP2P(opts Options, isps int) error {
	k := opts.P2PISP
	if k == 0 {
		return nil
	}
	if k < 1 || k > isps {
		return fmt.Errorf("lab: Options.P2PISP %d: no such ISP (lab has %d)", k, isps)
	}
	if opts.DHCP || opts.IPv6 || opts.RA {
		return errors.New("lab: Options.P2PISP is IPv4 with static addresses only: not with DHCP, IPv6 or RA")
	}
	return nil
}

// custIface returns the name of ISP k's interface towards the router:
// "cust", or "custK" for the point-to-point ISP.
func (l *Lab) custIface(k int) string {
	if k == l.p2p {
		return fmt.Sprintf("cust%d", k)
	}
	return "cust"
}

// p2pAddrs returns the ip commands that give dev the address local with
// peer as the other end of the point-to-point link, as pppd does.
func p2pAddrs(local, peer, dev string) []string {
	return []string{fmt.Sprintf("addr add %s peer %s dev %s", local, peer, dev)}
}

// notP2P refuses operation op on the point-to-point ISP's link.
func (l *Lab) notP2P(k int, op string) error {
	if k == l.p2p {
		return fmt.Errorf("lab: %s: ISP %d's link is point-to-point (tun), which %s does not support", op, k, op)
	}
	return nil
}

// tunPair copies packets between two tun devices, in both directions.
type tunPair struct {
	router, isp    *os.File // wanK in the router, custK in the ISP
	toISP, toRoute atomic.Uint64
	logf           func(format string, args ...any)
	wg             sync.WaitGroup
	done           chan struct{} // closed when both goroutines have returned
	once           sync.Once
	err            error
}

// startTunPair creates ISP k's point-to-point link (both tun devices, down
// and without addresses) and starts copying. The lab closes it on Close.
func (l *Lab) startTunPair(k int) error {
	router, err := l.openTunIn(NSRouter, WANIface(k))
	if err != nil {
		return err
	}
	isp, err := l.openTunIn(ISPNS(k), l.custIface(k))
	if err != nil {
		router.Close()
		return err
	}
	p := &tunPair{router: router, isp: isp, logf: l.log, done: make(chan struct{})}
	p.wg.Add(2)
	go p.copy(p.isp, p.router, &p.toISP, WANIface(k))
	go p.copy(p.router, p.isp, &p.toRoute, l.custIface(k))
	go func() {
		p.wg.Wait()
		close(p.done)
	}()
	if err := l.track(p); err != nil { // closes p if the lab is closed
		return err
	}
	l.mu.Lock()
	l.tun = p
	l.mu.Unlock()
	l.log("lab: point-to-point link %s (router) <-> %s (%s) is a tun pair", WANIface(k), l.custIface(k), ISPNS(k))
	return nil
}

// openTunIn creates tun device name in lab namespace ns and returns the
// file that keeps it alive.
func (l *Lab) openTunIn(ns, name string) (*os.File, error) {
	var f *os.File
	err := l.inNS(ns, func() error {
		var err error
		f, err = openTun(name)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("lab: tun device %s in %s: %w", name, ns, err)
	}
	return f, nil
}

// openTun creates tun device name (IFF_TUN|IFF_NO_PI) in the network
// namespace of the calling thread, which must be locked to it.
func openTun(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF: %w", err)
	}
	if got := ifr.Name(); got != name {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF made %q, not %q", got, name)
	}
	// Non-blocking, so the file uses the runtime's poller and Close
	// interrupts a pending Read.
	return os.NewFile(uintptr(fd), "/dev/net/tun:"+name), nil
}

// copy moves packets from src to dst until src is closed or fails (e.g.
// its device was deleted). A packet dst refuses (its device is down) is
// lost, as on a wire.
func (p *tunPair) copy(dst, src *os.File, n *atomic.Uint64, from string) {
	defer p.wg.Done()
	buf := make([]byte, tunBufSize)
	for {
		m, err := src.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				p.logf("lab: tun %s: read: %v; copying from it stopped", from, err)
			}
			return
		}
		if _, err := dst.Write(buf[:m]); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			continue
		}
		n.Add(1)
	}
}

// Close deletes both devices (by closing their files) and waits for the
// copying goroutines.
func (p *tunPair) Close() error {
	p.once.Do(func() {
		p.err = errors.Join(p.router.Close(), p.isp.Close())
		select {
		case <-p.done:
		case <-time.After(killWait):
			p.err = errors.Join(p.err, errors.New("lab: tun copying goroutines still running after close"))
		}
		p.logf("lab: point-to-point link closed after %d packets to the ISP, %d to the router",
			p.toISP.Load(), p.toRoute.Load())
	})
	return p.err
}

// tunLink returns the point-to-point link, or an error if there is none.
func (l *Lab) tunLink() (*tunPair, error) {
	if l.p2p == 0 {
		return nil, errors.New("lab: no point-to-point ISP (Options.P2PISP)")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errors.New("lab: closed")
	}
	if l.tun == nil {
		return nil, errors.New("lab: point-to-point link not created yet")
	}
	return l.tun, nil
}

// setTunCarrier switches the carrier of the router's tun device on or off
// (TUNSETCARRIER) and waits until the router's kernel reports it.
func (l *Lab) setTunCarrier(on bool) error {
	p, err := l.tunLink()
	if err != nil {
		return err
	}
	rc, err := p.router.SyscallConn()
	if err != nil {
		return err
	}
	v := 0
	if on {
		v = 1
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		ierr = unix.IoctlSetPointerInt(int(fd), unix.TUNSETCARRIER, v)
	}); err != nil {
		return fmt.Errorf("lab: tun carrier: %w", err)
	}
	if ierr != nil {
		return fmt.Errorf("lab: TUNSETCARRIER %d: %w", v, ierr)
	}
	name := l.wanName(l.p2p)
	if err := l.waitTunState(name, on); err != nil {
		return err
	}
	l.log("lab: carrier of %s %s", name, map[bool]string{true: "on", false: "off"}[on])
	return nil
}

// SetP2PDown takes the router's end of the point-to-point link
// ([Options].P2PISP) administratively down ("ip link set dev wanK down"),
// or up again: for the daemon the link has no carrier, and the kernel
// removes the routes through it (the connected peer route comes back with
// the link; the address stays). It returns when the router's kernel
// reports the new state (at most 10 s). [Lab.SetLinkDown] of that ISP
// instead drops the carrier of a device that stays up.
func (l *Lab) SetP2PDown(down bool) error {
	if _, err := l.tunLink(); err != nil {
		return err
	}
	name := l.wanName(l.p2p)
	state := "up"
	if down {
		state = "down"
	}
	if err := l.ip(NSRouter, "link", "set", "dev", name, state); err != nil {
		return err
	}
	if err := l.waitTunState(name, !down); err != nil {
		return err
	}
	l.log("lab: %s set %s", name, state)
	return nil
}

// waitTunState waits until the router's device name is usable (up, with
// carrier, operational state up or unknown, as tun devices report) or,
// for !usable, is not (no LOWER_UP and operational state down).
func (l *Lab) waitTunState(name string, usable bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), linkWait)
	defer cancel()
	return WaitFor(ctx, func() error {
		flags, oper, err := l.linkState(NSRouter, name)
		if err != nil {
			return err
		}
		lower := false
		for _, f := range flags {
			lower = lower || f == "LOWER_UP"
		}
		if usable && lower && (oper == "UP" || oper == "UNKNOWN") {
			return nil
		}
		if !usable && !lower && oper == "DOWN" {
			return nil
		}
		return fmt.Errorf("%s in %s: flags %v, state %s", name, NSRouter, flags, oper)
	})
}

// linkState returns the flags and operational state of interface name in
// lab namespace ns, as "ip -j link show" gives them.
func (l *Lab) linkState(ns, name string) (flags []string, oper string, err error) {
	out, err := l.ipOut(ns, "-j", "link", "show", "dev", name)
	if err != nil {
		return nil, "", err
	}
	var links []struct {
		Flags []string `json:"flags"`
		State string   `json:"operstate"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		return nil, "", fmt.Errorf("lab: ip -j link show dev %s in %s: %v (%d links)", name, ns, err, len(links))
	}
	return links[0].Flags, links[0].State, nil
}
