package probe

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// ICMPv6 differs from ICMP on a raw socket in three ways: the kernel
// strips the IPv6 header before delivery (the source comes with recvfrom,
// a link-local one with the index of the interface it came in by); it
// computes the checksum of what is sent, over a pseudo-header with both
// addresses; and it verifies the checksum of what it delivers, which the
// reader could not do without the destination address.
const (
	icmp6EchoRequest = 128
	icmp6EchoReply   = 129
	// echo6Min is the shortest reply accepted: the header and our nonce.
	echo6Min = 16
)

// filterSocket6 makes the kernel deliver only echo replies (ICMP6_FILTER)
// carrying our identifier (a socket filter, which sees the ICMPv6 message
// without the IPv6 header) to the reader.
func filterSocket6(conn *net.IPConn, rc syscall.RawConn, id uint16) error {
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeEchoReply)
	if err := ipv6.NewPacketConn(conn).SetICMPFilter(&f); err != nil {
		return err
	}
	prog, err := bpf.Assemble([]bpf.Instruction{
		// Loads beyond the end of the packet drop it.
		bpf.LoadAbsolute{Off: 0, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: icmp6EchoReply, SkipFalse: 3},
		bpf.LoadAbsolute{Off: 4, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(id), SkipFalse: 1},
		bpf.RetConstant{Val: 0xffff},
		bpf.RetConstant{Val: 0},
	})
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) { serr = attachFilter(int(fd), prog) })
	if err != nil {
		return err
	}
	return serr
}

// marshalEcho6 writes an ICMPv6 echo request into b (echoLen bytes),
// with the same payload as an ICMP one. The checksum is left 0: the
// kernel fills it in.
func marshalEcho6(b []byte, id, seq uint16, nonce uint64, sent time.Time) {
	marshalEcho(b, id, seq, nonce, sent)
	b[0] = icmp6EchoRequest
	b[2], b[3] = 0, 0
}

// sourceAddr6 is the source of a packet read from a raw ICMPv6 socket: a
// link-local one with the index of the interface it came by as its zone,
// which is how send names the zone of the address it pinged.
func sourceAddr6(sa unix.Sockaddr) netip.Addr {
	s, ok := sa.(*unix.SockaddrInet6)
	if !ok {
		return netip.Addr{}
	}
	a := netip.AddrFrom16(s.Addr)
	if a.IsLinkLocalUnicast() && s.ZoneId != 0 {
		a = a.WithZone(strconv.FormatUint(uint64(s.ZoneId), 10))
	}
	return a
}

// acceptReply6 is the IPv6 reader's filter: an echo reply from a valid
// source carrying our identifier and echoing our nonce. The scheduler
// then requires its sequence number to belong to a probe in flight and
// its source (with its zone, for a link-local one) to be that probe's
// target.
func acceptReply6(msg []byte, src netip.Addr, id uint16, nonce uint64) (echo, bool) {
	e, n, ok := parseEchoReply6(msg, src)
	if !ok || e.id != id || n != nonce {
		return echo{}, false
	}
	return e, true
}

// parseEchoReply6 parses an ICMPv6 message as read from a raw ICMPv6
// socket (no IPv6 header; the kernel has verified the checksum) from src,
// and returns it with the nonce it echoes if it is an echo reply. The
// input is untrusted: anything short, of another type, or from an
// address that cannot have sent it, is rejected.
func parseEchoReply6(msg []byte, src netip.Addr) (echo, uint64, bool) {
	if len(msg) < echo6Min || msg[0] != icmp6EchoReply || msg[1] != 0 {
		return echo{}, 0, false
	}
	if !src.Is6() || src.Is4In6() || src.IsUnspecified() || src.IsMulticast() {
		return echo{}, 0, false
	}
	return echo{
		src: src,
		id:  binary.BigEndian.Uint16(msg[4:6]),
		seq: binary.BigEndian.Uint16(msg[6:8]),
	}, binary.BigEndian.Uint64(msg[8:16]), true
}
