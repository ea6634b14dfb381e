package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// nftFamilies returns the nft table families of ISP rulesets that family
// (0 for all, 4 or 6) selects.
func (l *Lab) nftFamilies(family int) ([]string, error) {
	switch family {
	case 0:
		if l.ipv6 {
			return []string{"ip", "ip6"}, nil
		}
		return []string{"ip"}, nil
	case 4:
		return []string{"ip"}, nil
	case 6:
		if !l.ipv6 {
			return nil, fmt.Errorf("lab: IPv6 is not enabled (Options.IPv6)")
		}
		return []string{"ip6"}, nil
	}
	return nil, fmt.Errorf("lab: address family %d is neither 4 nor 6", family)
}

// setChain replaces the rules of chain (cut or loss) of ISP k's tables of
// the given families with rule ("" for none), in one transaction.
func (l *Lab) setChain(k, family int, chain, rule string) error {
	if err := l.checkISP(k); err != nil {
		return err
	}
	fams, err := l.nftFamilies(family)
	if err != nil {
		return err
	}
	var b strings.Builder
	for _, f := range fams {
		fmt.Fprintf(&b, "flush chain %s isp %s\n", f, chain)
		if rule != "" {
			fmt.Fprintf(&b, "add rule %s isp %s %s\n", f, chain, rule)
		}
	}
	return l.nft(ISPNS(k), b.String())
}

// CutUpstream makes ISP k stop forwarding between the router and the
// internet in both directions, like a broken uplink behind a modem that is
// still powered: the router's link stays up and the ISP still answers for
// its own addresses (ping to [ISPGateway](k) keeps working), but its own
// traffic to the internet (its resolver's, see [Lab.StartDNS]) is cut too.
// With IPv6 it cuts both address families.
func (l *Lab) CutUpstream(k int) error {
	return l.setChain(k, 0, "cut", "drop")
}

// RestoreUpstream undoes [Lab.CutUpstream] (for both address families).
func (l *Lab) RestoreUpstream(k int) error {
	return l.setChain(k, 0, "cut", "")
}

// CutUpstreamFamily is [Lab.CutUpstream] for one address family only
// (family 4 or 6), so a WAN can be up for one family and down for the
// other.
func (l *Lab) CutUpstreamFamily(k, family int) error {
	if family != 4 && family != 6 {
		return fmt.Errorf("lab: address family %d is neither 4 nor 6", family)
	}
	return l.setChain(k, family, "cut", "drop")
}

// RestoreUpstreamFamily undoes [Lab.CutUpstreamFamily] for family (4 or 6).
func (l *Lab) RestoreUpstreamFamily(k, family int) error {
	if family != 4 && family != 6 {
		return fmt.Errorf("lab: address family %d is neither 4 nor 6", family)
	}
	return l.setChain(k, family, "cut", "")
}

// SetLoss makes ISP k drop pct percent (0..100) of the packets it forwards,
// at random, in both directions (IPv4 and, with IPv6, IPv6). 0 removes the
// loss.
func (l *Lab) SetLoss(k, pct int) error {
	if err := l.checkISP(k); err != nil {
		return err
	}
	if pct < 0 || pct > 100 {
		return fmt.Errorf("lab: loss %d%% out of range 0..100", pct)
	}
	rule := ""
	switch {
	case pct == 100:
		// numgen values are 0..99, so "< 100" is not a valid expression.
		rule = "drop"
	case pct > 0:
		rule = fmt.Sprintf("numgen random mod 100 < %d drop", pct)
	}
	return l.setChain(k, 0, "loss", rule)
}

// SetLinkDown sets ISP k's end of the link to the router down (or back
// up), so the router sees carrier loss on its wan interface. For the
// point-to-point ISP ([Options].P2PISP) it switches the carrier of the
// router's tun device off (or on), which stays administratively up.
func (l *Lab) SetLinkDown(k int, down bool) error {
	if err := l.checkISP(k); err != nil {
		return err
	}
	if k == l.p2p {
		return l.setTunCarrier(!down)
	}
	if down {
		return l.ip(ISPNS(k), "link", "set", "dev", "cust", "down")
	}
	cmds := []string{"link set dev cust up"}
	if l.ipv6 {
		// Setting a link down removes its IPv6 addresses and the routes
		// through it; put the ISP's back.
		cmds = append(cmds, fmt.Sprintf("addr replace %s/64 dev cust nodad", ISPGateway6(k)))
		cmds = append(cmds, ispRoutes6(k)...)
	}
	return l.ipBatch(ISPNS(k), cmds)
}

// slowEchoMark marks the echo replies of [Lab.SlowEcho]'s responder, the
// only ones its nft table lets out of the served addresses.
const slowEchoMark = 0x5e40

// SlowEcho turns the internet's ping targets ([ProbeAddr1], [ProbeAddr2])
// into slow servers: each echo request is answered after its own random
// delay, uniform in [min, max], so the round trip through any ISP jitters
// over that range and replies may overtake each other. The kernel's own
// replies from those addresses are dropped (an nft table in the internet
// namespace) and a responder in this process answers instead, from raw
// sockets bound to each address. The lab's kernel has no netem, which
// would be the usual way. IPv4 only; other addresses answer as before.
//
// The returned function undoes it (the lab's Close does too); replies
// still pending are dropped.
func (l *Lab) SlowEcho(min, max time.Duration) (undo func() error, err error) {
	if min < 0 || max < min {
		return nil, fmt.Errorf("lab: slow echo delay [%v, %v] is not a range", min, max)
	}
	addrs := []string{ProbeAddr1, ProbeAddr2}
	var conns []*net.IPConn
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for _, a := range addrs {
		var c *net.IPConn
		err := l.inNS(NSInternet, func() error {
			var err error
			c, err = net.ListenIP("ip4:icmp", &net.IPAddr{IP: net.ParseIP(a)})
			return err
		})
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("lab: slow echo socket on %s: %w", a, err)
		}
		conns = append(conns, c)
		if err := setMark(c, slowEchoMark); err != nil {
			closeAll()
			return nil, err
		}
	}
	table := fmt.Sprintf(`table ip slowecho {
	chain output {
		type filter hook output priority filter; policy accept;
		ip saddr { %s } icmp type echo-reply meta mark != %#x drop
	}
}
`, strings.Join(addrs, ", "), slowEchoMark)
	if err := l.nft(NSInternet, table); err != nil {
		closeAll()
		return nil, err
	}
	e := &slowEcho{conns: conns, min: min, max: max}
	for _, c := range conns {
		e.wg.Add(1)
		go e.serve(c)
	}
	if err := l.track(e); err != nil {
		return nil, err
	}
	return func() error {
		e.Close()
		return l.nft(NSInternet, "delete table ip slowecho\n")
	}, nil
}

// setMark sets SO_MARK on c's socket.
func setMark(c *net.IPConn, mark int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_MARK, mark)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("lab: SO_MARK: %w", serr)
	}
	return nil
}

// slowEcho is SlowEcho's responder.
type slowEcho struct {
	conns    []*net.IPConn
	min, max time.Duration
	wg       sync.WaitGroup
	once     sync.Once
}

// serve answers the echo requests c receives until c is closed. Each
// reply is sent by a timer of its own, so a slow reply never holds back
// the next one.
func (e *slowEcho) serve(c *net.IPConn) {
	defer e.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		// An echo request: type 8, code 0, at least the 8-byte header.
		if n < 8 || buf[0] != 8 || buf[1] != 0 {
			continue
		}
		reply := slices.Clone(buf[:n])
		reply[0] = 0 // echo reply
		reply[2], reply[3] = 0, 0
		binary.BigEndian.PutUint16(reply[2:], icmpChecksum(reply))
		delay := e.min + rand.N(e.max-e.min+1)
		time.AfterFunc(delay, func() { c.WriteTo(reply, from) })
	}
}

// Close stops the responder and waits for its readers.
func (e *slowEcho) Close() error {
	e.once.Do(func() {
		for _, c := range e.conns {
			c.Close()
		}
		e.wg.Wait()
	})
	return nil
}
