package probe

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
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
// sees every echo reply of the namespace, so each Run needs its own.
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

// icmpTransport pings over one raw socket per Run: one reader goroutine
// for all targets and rounds, and sends straight from the scheduler.
type icmpTransport struct {
	conn  *net.IPConn
	rc    syscall.RawConn
	id    uint16
	nonce uint64
	buf   [echoLen]byte

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

func newICMPTransport(mark uint32, events chan<- event, ns nsFunc) (*icmpTransport, error) {
	id, err := allocID()
	if err != nil {
		return nil, err
	}
	lc := net.ListenConfig{Control: markControl(mark)}
	var pc net.PacketConn
	err = ns.do(func() error {
		var err error
		pc, err = lc.ListenPacket(context.Background(), "ip4:icmp", "0.0.0.0")
		return err
	})
	if err != nil {
		freeID(id)
		return nil, err
	}
	conn := pc.(*net.IPConn)
	rc, err := conn.SyscallConn()
	if err == nil {
		err = filterSocket(rc, id)
	}
	if err != nil {
		conn.Close()
		freeID(id)
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	t := &icmpTransport{conn: conn, rc: rc, id: id, nonce: rand.Uint64(), ctx: ctx, cancel: cancel, done: make(chan struct{})}
	go t.read(events)
	return t, nil
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
	filter := make([]unix.SockFilter, len(prog))
	for i, ins := range prog {
		filter[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		// Every type but echo reply is filtered out.
		serr = unix.SetsockoptInt(int(fd), unix.SOL_RAW, icmpFilter, int(^uint32(1<<icmpEchoReply)))
		if serr != nil {
			serr = fmt.Errorf("ICMP_FILTER: %w", serr)
			return
		}
		fprog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
		if serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); serr != nil {
			serr = fmt.Errorf("SO_ATTACH_FILTER: %w", serr)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// send pings f.addr with sequence number f.id's low 16 bits. It never
// blocks the scheduler: a full send buffer fails the probe.
func (t *icmpTransport) send(f *flight) error {
	marshalEcho(t.buf[:], t.id, uint16(f.id), t.nonce, f.sent)
	sa := &unix.SockaddrInet4{Addr: f.addr.As4()}
	var serr error
	err := t.rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), t.buf[:], unix.MSG_DONTWAIT, sa)
		return true
	})
	if err != nil {
		return err
	}
	return serr
}

// read passes echo replies with our identifier to the scheduler until the
// socket is closed. The arrival time is taken here, right after the read.
func (t *icmpTransport) read(events chan<- event) {
	defer close(t.done)
	buf := make([]byte, readBuf)
	for {
		var n int
		var rerr error
		err := t.rc.Read(func(fd uintptr) bool {
			n, rerr = unix.Read(int(fd), buf)
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
		at := time.Now()
		e, ok := acceptReply(buf[:n], t.id)
		if !ok {
			continue
		}
		select {
		case events <- event{icmp: true, seq: e.seq, src: e.src, at: at, ok: true}:
		case <-t.ctx.Done():
			return
		}
	}
}

func (t *icmpTransport) close() {
	t.cancel()
	t.conn.Close()
	<-t.done
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
