package probe

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"
)

// ipPacket wraps an ICMP message in an IPv4 header (with opts, a multiple
// of 4 bytes) as a raw socket reads it.
func ipPacket(src netip.Addr, opts, icmpMsg []byte) []byte {
	hl := 20 + len(opts)
	p := make([]byte, hl+len(icmpMsg))
	p[0] = 0x40 | byte(hl/4)
	binary.BigEndian.PutUint16(p[2:4], uint16(len(p)))
	p[8] = 64
	p[9] = 1
	s := src.As4()
	copy(p[12:16], s[:])
	copy(p[16:20], []byte{198, 51, 100, 5})
	copy(p[20:], opts)
	copy(p[hl:], icmpMsg)
	binary.BigEndian.PutUint16(p[10:12], checksum(p[:hl]))
	return p
}

// icmpMsg builds an ICMP message with a correct checksum.
func icmpMsg(typ, code byte, id, seq uint16, payload []byte) []byte {
	m := make([]byte, 8+len(payload))
	m[0], m[1] = typ, code
	binary.BigEndian.PutUint16(m[4:6], id)
	binary.BigEndian.PutUint16(m[6:8], seq)
	copy(m[8:], payload)
	binary.BigEndian.PutUint16(m[2:4], checksum(m))
	return m
}

var target1 = netip.MustParseAddr("203.0.113.20")

func reply(src netip.Addr, id, seq uint16) []byte {
	return ipPacket(src, nil, icmpMsg(icmpEchoReply, 0, id, seq, make([]byte, 16)))
}

func TestParseEchoReply(t *testing.T) {
	good := reply(target1, 0x1234, 7)
	if e, ok := parseEchoReply(good); !ok || e != (echo{src: target1, id: 0x1234, seq: 7}) {
		t.Fatalf("good reply: %+v %v", e, ok)
	}
	withOpts := ipPacket(target1, []byte{1, 1, 1, 0}, icmpMsg(icmpEchoReply, 0, 1, 2, nil))
	if _, ok := parseEchoReply(withOpts); !ok {
		t.Error("reply with IP options rejected")
	}
	// Link-layer padding after the datagram is not part of it.
	if _, ok := parseEchoReply(append(reply(target1, 1, 2), 0, 0, 0, 0)); !ok {
		t.Error("reply with trailing padding rejected")
	}
	// Our own request, made into a reply the way a target does, parses.
	var req [echoLen]byte
	marshalEcho(req[:], 0xbeef, 42, 99, time.Now())
	if checksum(req[:]) != 0 {
		t.Fatal("our echo request has a bad checksum")
	}
	rep := append([]byte(nil), req[:]...)
	rep[0] = icmpEchoReply
	rep[2], rep[3] = 0, 0
	binary.BigEndian.PutUint16(rep[2:4], checksum(rep))
	if e, ok := parseEchoReply(ipPacket(target1, nil, rep)); !ok || e.id != 0xbeef || e.seq != 42 {
		t.Fatalf("reply to our request: %+v %v", e, ok)
	}

	mutate := func(f func(p []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	for name, p := range map[string][]byte{
		"empty":             nil,
		"short IP header":   good[:19],
		"header only":       good[:20],
		"truncated ICMP":    good[:27],
		"truncated payload": good[:len(good)-1],
		"IPv6 version":      mutate(func(p []byte) []byte { p[0] = 0x65; return p }),
		"IHL below 5":       mutate(func(p []byte) []byte { p[0] = 0x44; return p }),
		"IHL beyond packet": mutate(func(p []byte) []byte { p[0] = 0x4f; return p }),
		"total too short":   mutate(func(p []byte) []byte { binary.BigEndian.PutUint16(p[2:4], 27); return p }),
		"total too long":    mutate(func(p []byte) []byte { binary.BigEndian.PutUint16(p[2:4], 1000); return p }),
		"fragment":          mutate(func(p []byte) []byte { p[6] = 0x20; return p }),
		"fragment offset":   mutate(func(p []byte) []byte { p[7] = 1; return p }),
		"not ICMP":          mutate(func(p []byte) []byte { p[9] = 6; return p }),
		"bad checksum":      mutate(func(p []byte) []byte { p[len(p)-1] ^= 1; return p }),
		"echo request":      ipPacket(target1, nil, icmpMsg(icmpEchoRequest, 0, 0x1234, 7, nil)),
		"nonzero code":      ipPacket(target1, nil, icmpMsg(icmpEchoReply, 1, 0x1234, 7, nil)),
		// A destination unreachable quotes our request, id and seq
		// included, at a different offset: it is not an answer.
		"unreachable": ipPacket(target1, nil, icmpMsg(3, 1, 0, 0, reply(target1, 0x1234, 7)[:28])),
	} {
		if e, ok := parseEchoReply(p); ok {
			t.Errorf("%s: accepted as %+v", name, e)
		}
	}
}

func TestReplyMatching(t *testing.T) {
	const id = 0x4242
	ts := newTestSched(t, Spec{Targets: []string{"203.0.113.20", "203.0.113.30"}})
	ts.at(0)
	f0, f1 := ts.tr.sent[0], ts.tr.sent[1]
	// feed does what the reader does: filter, then hand to the scheduler.
	feed := func(pkt []byte, at time.Duration) {
		if e, ok := acceptReply(pkt, id); ok {
			ts.s.handle(event{icmp: true, seq: e.seq, src: e.src, at: ts.t0.Add(at), ok: true})
		}
	}
	other := netip.MustParseAddr("203.0.113.30")
	feed(reply(target1, id+1, uint16(f0.id)), ms)              // another Run's identifier
	feed(reply(other, id, uint16(f0.id)), ms)                  // right seq, wrong source
	feed(reply(target1, id, uint16(f1.id)), ms)                // the other target's seq from this one
	feed(reply(target1, id, 999), ms)                          // unknown seq
	feed(reply(target1, id, uint16(f0.id))[:30], ms)           // truncated
	feed(ipPacket(target1, nil, []byte{0, 0, 0xff, 0xff}), ms) // malformed
	if out := ts.take(); len(out) != 0 || len(ts.s.flights) != 2 {
		t.Fatalf("bogus replies matched: %s, %d flights", describeRounds(out), len(ts.s.flights))
	}
	feed(reply(target1, id, uint16(f0.id)), 2*ms)
	feed(reply(target1, id, uint16(f0.id)), 3*ms) // duplicate
	feed(reply(other, id, uint16(f1.id)), 4*ms)
	feed(reply(other, id, uint16(f1.id)), 5*ms) // duplicate
	out := ts.take()
	if len(out) != 1 || out[0].Results[0] != (Result{Target: "203.0.113.20", OK: true, RTT: 2 * ms}) ||
		out[0].Results[1] != (Result{Target: "203.0.113.30", OK: true, RTT: 4 * ms}) {
		t.Fatalf("got %s", describeRounds(out))
	}
	// Duplicates of answered probes, even after the round, do nothing.
	feed(reply(target1, id, uint16(f0.id)), 500*ms)
	if out := ts.take(); len(out) != 0 {
		t.Fatalf("duplicate reported: %s", describeRounds(out))
	}
}

func TestEchoIDsDistinct(t *testing.T) {
	seen := map[uint16]bool{}
	for range 1000 {
		id, err := allocID()
		if err != nil {
			t.Fatal(err)
		}
		if seen[id] || id == 0 {
			t.Fatalf("identifier %d handed out twice", id)
		}
		seen[id] = true
	}
	for id := range seen {
		freeID(id)
	}
}

func FuzzParseEchoReply(f *testing.F) {
	f.Add(reply(target1, 1, 2))
	f.Add(ipPacket(target1, []byte{1, 1, 1, 0}, icmpMsg(icmpEchoReply, 0, 1, 2, nil)))
	f.Add(reply(target1, 1, 2)[:27])
	f.Add([]byte{0x45})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		e, ok := parseEchoReply(pkt)
		if !ok {
			return
		}
		hl := int(pkt[0]&0xf) * 4
		total := int(binary.BigEndian.Uint16(pkt[2:4]))
		if pkt[0]>>4 != 4 || hl < 20 || total > len(pkt) || total < hl+8 || pkt[9] != 1 || pkt[hl] != 0 {
			t.Fatalf("accepted a packet that is not an echo reply: % x", pkt)
		}
		if checksum(pkt[hl:total]) != 0 {
			t.Fatalf("accepted a bad checksum: % x", pkt)
		}
		if e.src != netip.AddrFrom4([4]byte(pkt[12:16])) || e.id != binary.BigEndian.Uint16(pkt[hl+4:]) || e.seq != binary.BigEndian.Uint16(pkt[hl+6:]) {
			t.Fatalf("wrong fields %+v from % x", e, pkt)
		}
	})
}
