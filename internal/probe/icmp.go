package probe

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

const (
	icmpEchoReply   = 0
	icmpEchoRequest = 8
	// icmpFilter is ICMP_FILTER from linux/icmp.h (level SOL_RAW): a
	// bitmask of the ICMP types the raw socket does not want.
	icmpFilter = 1
	// echoLen is the length of our echo requests: the 8-byte header and a
	// 16-byte payload (run nonce, send time) that is only informative.
	echoLen = 24
	// readBuf fits any echo reply to our requests, IP options included.
	// Longer packets are not ours and arrive truncated, which the parser
	// rejects.
	readBuf = 512
)

// Echo identifiers in use by the Runs of this process. A raw ICMP socket
// sees every echo reply of the namespace, so each Run needs its own. A Run
// with both an IPv4 and an IPv6 socket uses its identifier on both.
var (
	idMu    sync.Mutex
	idInUse = map[uint16]bool{}
)

func allocID() (uint16, error) {
	idMu.Lock()
	defer idMu.Unlock()
	if len(idInUse) >= 1<<16-1 {
		return 0, errors.New("no free ICMP echo identifier")
	}
	for {
		id := uint16(rand.Uint32())
		if id != 0 && !idInUse[id] {
			idInUse[id] = true
			return id, nil
		}
	}
}

func freeID(id uint16) {
	idMu.Lock()
	delete(idInUse, id)
	idMu.Unlock()
}

// icmpTransport pings over one raw socket per Run and family: one reader
// goroutine per socket for all targets and rounds, and sends straight from
// the scheduler.
type icmpTransport struct {
	// v4 and v6 are the sockets; nil for a family the Run does not probe,
	// or could not open a socket for (err4, err6 then say why).
	v4, v6     *icmpSocket
	err4, err6 error
	id         uint16
	nonce      uint64
	buf        [echoLen]byte

	ctx    context.Context
	cancel context.CancelFunc
}

// icmpSocket is one raw socket and its reader.
type icmpSocket struct {
	v6   bool
	conn *net.IPConn
	rc   syscall.RawConn
	done chan struct{}
	// pollBuf and pollOOB are poll's buffers (the reader has its own).
	pollBuf []byte
	pollOOB []byte
}

// newICMPTransport opens the sockets of the families asked for. When it
// is asked for both (a gateway Run), one is enough: the kernel may have no
// IPv6.
func newICMPTransport(mark uint32, v4, v6 bool, events chan<- event, ns nsFunc) (*icmpTransport, error) {
	id, err := allocID()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	t := &icmpTransport{id: id, nonce: rand.Uint64(), ctx: ctx, cancel: cancel}
	if v4 {
		t.v4, t.err4 = openICMP(false, mark, id, ns)
	}
	if v6 {
		t.v6, t.err6 = openICMP(true, mark, id, ns)
	}
	if t.v4 == nil && t.v6 == nil {
		err := t.err4
		if err == nil {
			err = t.err6
		}
		cancel()
		freeID(id)
		return nil, err
	}
	for _, s := range []*icmpSocket{t.v4, t.v6} {
		if s != nil {
			go t.read(s, events)
		}
	}
	return t, nil
}

// openICMP opens a raw ICMP (v6: ICMPv6) socket with the mark and the
// filters, in the namespace of ns.
func openICMP(v6 bool, mark uint32, id uint16, ns nsFunc) (*icmpSocket, error) {
	network, laddr := "ip4:icmp", "0.0.0.0"
	if v6 {
		network, laddr = "ip6:ipv6-icmp", "::"
	}
	// The mark is set when the socket is created, before anything is
	// sent on it.
	lc := net.ListenConfig{Control: markControl(mark)}
	var pc net.PacketConn
	err := ns.do(func() error {
		var err error
		pc, err = lc.ListenPacket(context.Background(), network, laddr)
		return err
	})
	if err != nil {
		return nil, err
	}
	conn := pc.(*net.IPConn)
	rc, err := conn.SyscallConn()
	if err == nil {
		if v6 {
			err = filterSocket6(conn, rc, id)
		} else {
			err = filterSocket(rc, id)
		}
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	// The kernel stamps each reply with its arrival time (see
	// arrival). Without (a kernel before 5.1), the time of the read
	// serves; so it does for the replies of the first moment after the
	// first such socket of the system opens, before the kernel has
	// turned stamping on (it defers that to a work queue).
	rc.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS_NEW, 1)
	})
	return &icmpSocket{v6: v6, conn: conn, rc: rc, done: make(chan struct{}),
		pollBuf: make([]byte, readBuf), pollOOB: make([]byte, oobBuf)}, nil
}

// oobBuf holds the control data of one read: the arrival time.
const oobBuf = 64

// recv reads one datagram from fd (flags: 0, or MSG_DONTWAIT), and says
// where it came from (IPv6 only: the kernel strips the IPv6 header) and
// when the kernel received it.
func (s *icmpSocket) recv(fd uintptr, buf, oob []byte, flags int) (n int, from unix.Sockaddr, at time.Time, err error) {
	var oobn int
	if s.v6 {
		n, oobn, _, from, err = unix.Recvmsg(int(fd), buf, oob, flags)
	} else {
		n, oobn, err = rawRecvmsg(fd, buf, oob, flags)
	}
	if err != nil {
		return 0, nil, time.Time{}, err
	}
	return n, from, arrival(oob[:oobn], time.Now()), nil
}

// maxStampAge bounds how far back a kernel timestamp may place an
// arrival; anything older (or in the future) means the wall clock was
// stepped between the arrival and the read, and the read's time serves.
const maxStampAge = 10 * time.Second

// arrival returns when the kernel received the datagram whose control
// data is oob, on now's monotonic clock: the kernel stamps with the wall
// clock, so the stamp's age by the wall clock is taken off now. Without a
// stamp it returns now. Taking the time from the kernel rather than from
// the read is what lets an answer that came in time count as in time when
// the process was busy and read it late.
func arrival(oob []byte, now time.Time) time.Time {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return now
	}
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SO_TIMESTAMPNS_NEW || len(m.Data) < 16 {
			continue
		}
		sec := int64(binary.NativeEndian.Uint64(m.Data))
		nsec := int64(binary.NativeEndian.Uint64(m.Data[8:]))
		age := now.Round(0).Sub(time.Unix(sec, nsec))
		if age < 0 || age > maxStampAge {
			return now
		}
		return now.Add(-age)
	}
	return now
}

// filterSocket makes the kernel drop what is not an echo reply with our
// identifier before it wakes the reader: several Runs share the namespace,
// and so may every ping on the machine. The reader still checks
// everything; the filters only save work.
func filterSocket(rc syscall.RawConn, id uint16) error {
	prog, err := bpf.Assemble([]bpf.Instruction{
		// X = length of the IP header; the packet starts with it.
		bpf.LoadMemShift{Off: 0},
		// A = ICMP identifier.
		bpf.LoadIndirect{Off: 4, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(id), SkipFalse: 1},
		bpf.RetConstant{Val: 0xffff},
		bpf.RetConstant{Val: 0},
	})
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		// Every type but echo reply is filtered out.
		// The kernel reads the filter as 32 bits; int32 keeps the
		// constant valid on 32-bit builds.
		filter := ^uint32(1 << icmpEchoReply)
		serr = unix.SetsockoptInt(int(fd), unix.SOL_RAW, icmpFilter, int(int32(filter)))
		if serr != nil {
			serr = fmt.Errorf("ICMP_FILTER: %w", serr)
			return
		}
		serr = attachFilter(int(fd), prog)
	})
	if err != nil {
		return err
	}
	return serr
}

// attachFilter attaches a socket filter (SO_ATTACH_FILTER).
func attachFilter(fd int, prog []bpf.RawInstruction) error {
	filter := make([]unix.SockFilter, len(prog))
	for i, ins := range prog {
		filter[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); err != nil {
		return fmt.Errorf("SO_ATTACH_FILTER: %w", err)
	}
	return nil
}

// send pings f.addr with sequence number f.id's low 16 bits, from the
// socket of its family. It never blocks the scheduler: a full send buffer
// fails the probe.
func (t *icmpTransport) send(f *flight) error {
	if f.addr.Is4() {
		if t.v4 == nil {
			return noSocket("IPv4", t.err4)
		}
		marshalEcho(t.buf[:], t.id, uint16(f.id), t.nonce, f.sent)
		return t.v4.sendto4(t.buf[:], f.addr.As4())
	}
	if t.v6 == nil {
		return noSocket("IPv6", t.err6)
	}
	sa, from, err := dest6(f.addr, t.v6.ifindex)
	if err != nil {
		return err
	}
	f.from = from
	marshalEcho6(t.buf[:], t.id, uint16(f.id), t.nonce, f.sent)
	return t.v6.sendto(t.buf[:], sa)
}

// dest6 is where a probe of the IPv6 address a is sent, and the source
// its reply must come from as sourceAddr6 gives it: for a link-local a,
// the zone becomes the index of its interface, which ifindex tells.
func dest6(a netip.Addr, ifindex func(zone string) (uint32, error)) (*unix.SockaddrInet6, netip.Addr, error) {
	sa := &unix.SockaddrInet6{Addr: a.As16()}
	if !a.IsLinkLocalUnicast() {
		return sa, a.WithZone(""), nil
	}
	if a.Zone() == "" {
		return nil, netip.Addr{}, errors.New("link-local address without an interface")
	}
	idx, err := ifindex(a.Zone())
	if err != nil {
		return nil, netip.Addr{}, err
	}
	sa.ZoneId = idx
	return sa, a.WithZone(strconv.FormatUint(uint64(idx), 10)), nil
}

func noSocket(family string, err error) error {
	if err == nil {
		return fmt.Errorf("not an %s prober", family)
	}
	return fmt.Errorf("no %s ICMP socket: %w", family, err)
}

// sendto4 is sendto for IPv4, as a raw system call (see rawSendto4).
func (s *icmpSocket) sendto4(b []byte, to [4]byte) error {
	var serr error
	err := s.rc.Write(func(fd uintptr) bool {
		serr = rawSendto4(fd, b, to)
		return true
	})
	if err != nil {
		return err
	}
	return serr
}

func (s *icmpSocket) sendto(b []byte, sa unix.Sockaddr) error {
	var serr error
	err := s.rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), b, unix.MSG_DONTWAIT, sa)
		return true
	})
	if err != nil {
		return err
	}
	return serr
}

// ifindex is the index of the interface named zone in the socket's
// network namespace (asked through the socket itself, so that it holds
// whichever thread asks); a zone that names no interface but is a number
// is an index already. It is asked at every probe: an interface that
// comes back (a PPP link redialled) may have a new index.
func (s *icmpSocket) ifindex(zone string) (uint32, error) {
	ifr, err := unix.NewIfreq(zone)
	if err == nil {
		var serr error
		err = s.rc.Control(func(fd uintptr) {
			serr = unix.IoctlIfreq(int(fd), unix.SIOCGIFINDEX, ifr)
		})
		if err == nil {
			err = serr
		}
		if err == nil {
			return ifr.Uint32(), nil
		}
	}
	if n, nerr := strconv.ParseUint(zone, 10, 32); nerr == nil && n > 0 {
		return uint32(n), nil
	}
	return 0, fmt.Errorf("interface %s: %w", zone, err)
}

// read passes echo replies with our identifier to the scheduler until the
// socket is closed, each with the time the kernel received it.
func (t *icmpTransport) read(s *icmpSocket, events chan<- event) {
	defer close(s.done)
	buf := make([]byte, readBuf)
	oob := make([]byte, oobBuf)
	for {
		var n int
		var from unix.Sockaddr
		var at time.Time
		var rerr error
		err := s.rc.Read(func(fd uintptr) bool {
			n, from, at, rerr = s.recv(fd, buf, oob, 0)
			return rerr != unix.EAGAIN
		})
		if err != nil {
			return // closed
		}
		if rerr != nil {
			// ENOBUFS and the like: the next read may work. Wait a
			// little so that a persistent error cannot spin.
			select {
			case <-time.After(10 * time.Millisecond):
				continue
			case <-t.ctx.Done():
				return
			}
		}
		ev, ok := t.event(s, buf[:n], from, at)
		if !ok {
			continue
		}
		select {
		case events <- ev:
		case <-t.ctx.Done():
			return
		}
	}
}

// event makes the event of a datagram read from s, if it is an echo reply
// to this transport.
func (t *icmpTransport) event(s *icmpSocket, pkt []byte, from unix.Sockaddr, at time.Time) (event, bool) {
	var e echo
	var ok bool
	if s.v6 {
		e, ok = acceptReply6(pkt, sourceAddr6(from), t.id, t.nonce)
	} else {
		e, ok = acceptReply(pkt, t.id)
	}
	return event{icmp: true, seq: e.seq, src: e.src, at: at, ok: true}, ok
}

// maxPoll bounds the datagrams one poll takes from a socket.
const maxPoll = 64

// poll takes the replies waiting in the sockets without blocking. It runs
// on the scheduler's goroutine while the readers may be reading too: each
// datagram goes to one of them.
func (t *icmpTransport) poll(fn func(event)) {
	for _, s := range []*icmpSocket{t.v4, t.v6} {
		if s == nil {
			continue
		}
		s.rc.Control(func(fd uintptr) {
			for range maxPoll {
				n, from, at, err := s.recv(fd, s.pollBuf, s.pollOOB, unix.MSG_DONTWAIT)
				if err != nil {
					return
				}
				if ev, ok := t.event(s, s.pollBuf[:n], from, at); ok {
					fn(ev)
				}
			}
		})
	}
}

func (t *icmpTransport) close() {
	t.cancel()
	for _, s := range []*icmpSocket{t.v4, t.v6} {
		if s != nil {
			s.conn.Close()
			<-s.done
		}
	}
	freeID(t.id)
}

// echo is a parsed echo reply.
type echo struct {
	src     netip.Addr
	id, seq uint16
}

// acceptReply is the reader's filter: an intact echo reply carrying our
// identifier. The scheduler then requires its sequence number to belong to
// a probe in flight and its source to be that probe's target.
func acceptReply(pkt []byte, id uint16) (echo, bool) {
	e, ok := parseEchoReply(pkt)
	if !ok || e.id != id {
		return echo{}, false
	}
	return e, true
}

// parseEchoReply parses an IPv4 datagram as read from a raw ICMP socket
// (header included) and returns it if it is an intact ICMP echo reply.
// The input is untrusted: anything short, truncated, fragmented, of
// another protocol or type, or with a bad checksum is rejected.
func parseEchoReply(pkt []byte) (echo, bool) {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return echo{}, false
	}
	hl := int(pkt[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(pkt[2:4]))
	if hl < 20 || total < hl+8 || total > len(pkt) {
		return echo{}, false
	}
	// The kernel reassembles before raw delivery; a fragment here is odd.
	if binary.BigEndian.Uint16(pkt[6:8])&0x3fff != 0 || pkt[9] != syscall.IPPROTO_ICMP {
		return echo{}, false
	}
	m := pkt[hl:total]
	// The kernel does not verify ICMP checksums before raw delivery.
	if m[0] != icmpEchoReply || m[1] != 0 || checksum(m) != 0 {
		return echo{}, false
	}
	return echo{
		src: netip.AddrFrom4([4]byte(pkt[12:16])),
		id:  binary.BigEndian.Uint16(m[4:6]),
		seq: binary.BigEndian.Uint16(m[6:8]),
	}, true
}

// marshalEcho writes an echo request into b (echoLen bytes).
func marshalEcho(b []byte, id, seq uint16, nonce uint64, sent time.Time) {
	b[0], b[1] = icmpEchoRequest, 0
	b[2], b[3] = 0, 0
	binary.BigEndian.PutUint16(b[4:6], id)
	binary.BigEndian.PutUint16(b[6:8], seq)
	// The payload is for whoever reads a packet capture; the RTT comes
	// from the send time kept locally, never from the reply.
	binary.BigEndian.PutUint64(b[8:16], nonce)
	binary.BigEndian.PutUint64(b[16:24], uint64(sent.UnixNano()))
	binary.BigEndian.PutUint16(b[2:4], checksum(b[:echoLen]))
}

// checksum is the Internet checksum (RFC 1071) of b; it is 0 over a
// message whose checksum field is correct.
func checksum(b []byte) uint16 {
	var sum uint32
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
