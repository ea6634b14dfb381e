package lab

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"time"
)

// Default limits for helpers whose context has no deadline.
const (
	defaultWait  = 30 * time.Second
	defaultCurl  = 10 * time.Second
	defaultProbe = 3 * time.Second
	pollInterval = 20 * time.Millisecond
)

// WaitFor calls cond every 20ms until it returns nil or ctx ends, and then
// returns nil or an error wrapping the last failure. Without a ctx deadline
// it gives up after 30s.
func WaitFor(ctx context.Context, cond func() error) error {
	ctx, cancel := withDefaultTimeout(ctx, defaultWait)
	defer cancel()
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lab: condition not met: %w (last error: %v)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

// WaitFor is the package-level [WaitFor], for convenience in tests.
func (l *Lab) WaitFor(ctx context.Context, cond func() error) error {
	return WaitFor(ctx, cond)
}

// Curl runs curl in namespace ns and returns the trimmed response body.
// curl's --max-time is derived from ctx (10s without a deadline) and any
// proxy settings are ignored. extraArgs go before the URL; IPv6 literals
// work as usual ("http://[2001:db8:ffff::10]/"). A failure
// reported by curl is an error that includes curl's stderr; an HTTP error
// status is not, unless extraArgs contain --fail.
func (l *Lab) Curl(ctx context.Context, ns, url string, extraArgs ...string) (string, error) {
	ctx, cancel := withDefaultTimeout(ctx, defaultCurl)
	defer cancel()
	dl, _ := ctx.Deadline()
	// Leave curl a little less time than ctx so it reports its own timeout
	// instead of being killed.
	maxTime := max(time.Until(dl)-100*time.Millisecond, 100*time.Millisecond)
	argv := []string{"curl", "-sS", "--noproxy", "*",
		"--max-time", strconv.FormatFloat(maxTime.Seconds(), 'f', 3, 64)}
	if strings.Contains(url, "://[") {
		// An IPv6 literal, not one of curl's [a-b] URL globs.
		argv = append(argv, "--globoff")
	}
	argv = append(argv, extraArgs...)
	argv = append(argv, url)
	var stdout, stderr bytes.Buffer
	if err := l.execTo(ctx, ns, argv, &stdout, &stderr); err != nil {
		return strings.TrimSpace(stdout.String()), fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// UDPEcho sends one datagram to dst ("ip:port", or "[ipv6]:port") from a
// socket created in namespace ns, bound to srcAddr ("" for any, "ip" or
// "ip:port"), and returns the first reply that comes from dst, trimmed. It
// gives up when ctx ends (3s without a deadline).
func (l *Lab) UDPEcho(ctx context.Context, ns, srcAddr, dst string) (string, error) {
	ctx, cancel := withDefaultTimeout(ctx, defaultProbe)
	defer cancel()
	host, _, err := net.SplitHostPort(dst)
	if err != nil {
		return "", err
	}
	network, anyAddr := "udp4", "0.0.0.0"
	if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		network, anyAddr = "udp6", "::"
	}
	raddr, err := net.ResolveUDPAddr(network, dst)
	if err != nil {
		return "", err
	}
	laddr := srcAddr
	if laddr == "" {
		laddr = net.JoinHostPort(anyAddr, "0")
	} else if _, _, err := net.SplitHostPort(laddr); err != nil {
		laddr = net.JoinHostPort(laddr, "0")
	}
	pc, err := l.listenPacket(ns, network, laddr)
	if err != nil {
		return "", err
	}
	defer pc.Close()
	stop := context.AfterFunc(ctx, func() { pc.SetDeadline(time.Now()) })
	defer stop()
	dl, _ := ctx.Deadline()
	pc.SetDeadline(dl)

	if _, err := pc.WriteTo([]byte("ping"), raddr); err != nil {
		return "", err
	}
	buf := make([]byte, 2048)
	for range 64 { // stray datagrams are possible but must not spin forever
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return "", fmt.Errorf("lab: udp echo %s -> %s in %s: %w", pc.LocalAddr(), dst, ns, err)
		}
		if u, ok := from.(*net.UDPAddr); ok && u.IP.Equal(raddr.IP) && u.Port == raddr.Port {
			return strings.TrimSpace(string(buf[:n])), nil
		}
	}
	return "", fmt.Errorf("lab: udp echo %s in %s: no reply from %s", dst, ns, dst)
}

// Ping sends ICMP echo requests from namespace ns to dst (an IPv4 or IPv6
// address) every 200ms until one is answered or ctx ends (3s without a
// deadline). src, if not "", is the local address to send from, like
// ping -I. It exists because the lab must not depend on a ping binary
// being installed.
func (l *Lab) Ping(ctx context.Context, ns, src, dst string) error {
	ctx, cancel := withDefaultTimeout(ctx, defaultProbe)
	defer cancel()
	dip := net.ParseIP(dst)
	if dip == nil {
		return fmt.Errorf("lab: ping: bad IP address %q", dst)
	}
	network, anyAddr, reqType, replyType := "ip4:icmp", "0.0.0.0", byte(8), byte(0)
	if v4 := dip.To4(); v4 != nil {
		dip = v4
	} else {
		// The kernel fills in the checksum of ICMPv6 raw sockets.
		network, anyAddr, reqType, replyType = "ip6:ipv6-icmp", "::", 128, 129
	}
	if src == "" {
		src = anyAddr
	}
	pc, err := l.listenPacket(ns, network, src)
	if err != nil {
		return err
	}
	defer pc.Close()
	stop := context.AfterFunc(ctx, func() { pc.SetDeadline(time.Now()) })
	defer stop()

	id := uint16(rand.Uint32())
	buf := make([]byte, 1500)
	for seq := uint16(1); ; seq++ {
		if ctx.Err() != nil {
			return fmt.Errorf("lab: ping %s from %s in %s: no reply: %w", dst, src, ns, ctx.Err())
		}
		if _, err := pc.WriteTo(echoRequest(reqType, id, seq), &net.IPAddr{IP: dip}); err != nil {
			// e.g. "network is unreachable": the answer is no, for now.
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		// Read until this attempt's slot ends; the raw socket also sees
		// unrelated ICMP traffic, which is skipped.
		pc.SetReadDeadline(earliest(ctx, time.Now().Add(200*time.Millisecond)))
		for range 256 {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				break
			}
			if isEchoReply(buf[:n], replyType, id) && from.(*net.IPAddr).IP.Equal(dip) {
				return nil
			}
		}
	}
}

func earliest(ctx context.Context, t time.Time) time.Time {
	if dl, ok := ctx.Deadline(); ok && dl.Before(t) {
		return dl
	}
	return t
}

// echoRequest builds an ICMP (type 8) or ICMPv6 (type 128) echo request.
// ICMPv6 leaves the checksum 0: the kernel computes it for raw sockets.
func echoRequest(typ byte, id, seq uint16) []byte {
	b := make([]byte, 16)
	b[0] = typ
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	copy(b[8:], "mwlab\x00\x00\x00")
	if typ == 8 {
		binary.BigEndian.PutUint16(b[2:], icmpChecksum(b))
	}
	return b
}

func isEchoReply(b []byte, typ byte, id uint16) bool {
	return len(b) >= 8 && b[0] == typ && b[1] == 0 && binary.BigEndian.Uint16(b[4:]) == id
}

func icmpChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
