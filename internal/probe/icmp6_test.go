package probe

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// icmp6Msg builds an ICMPv6 message as a raw ICMPv6 socket reads it (no
// IPv6 header, checksum left to the kernel).
func icmp6Msg(typ, code byte, id, seq uint16, payload []byte) []byte {
	m := make([]byte, 8+len(payload))
	m[0], m[1] = typ, code
	binary.BigEndian.PutUint16(m[4:6], id)
	binary.BigEndian.PutUint16(m[6:8], seq)
	copy(m[8:], payload)
	return m
}

// reply6 is the reply of a target to our request id/seq of run nonce.
func reply6(id, seq uint16, nonce uint64) []byte {
	var req [echoLen]byte
	marshalEcho6(req[:], id, seq, nonce, time.Unix(1, 0))
	req[0] = icmp6EchoReply
	return req[:]
}

// from6 is the source address a raw ICMPv6 socket reads with a packet.
func from6(a string, zoneID uint32) netip.Addr {
	return sourceAddr6(&unix.SockaddrInet6{Addr: netip.MustParseAddr(a).As16(), ZoneId: zoneID})
}

var (
	target6  = netip.MustParseAddr("2001:db8:ffff::20")
	target6b = netip.MustParseAddr("2001:db8:ffff::21")
)

func TestMarshalEcho6(t *testing.T) {
	var b [echoLen]byte
	sent := time.Unix(0, 123456789)
	marshalEcho6(b[:], 0xbeef, 42, 0x0102030405060708, sent)
	if b[0] != icmp6EchoRequest || b[1] != 0 || b[2] != 0 || b[3] != 0 {
		t.Fatalf("header % x: want type 128, code 0, checksum left to the kernel", b[:4])
	}
	if binary.BigEndian.Uint16(b[4:]) != 0xbeef || binary.BigEndian.Uint16(b[6:]) != 42 ||
		binary.BigEndian.Uint64(b[8:]) != 0x0102030405060708 || binary.BigEndian.Uint64(b[16:]) != uint64(sent.UnixNano()) {
		t.Fatalf("fields % x", b)
	}
}

func TestSourceAddr6(t *testing.T) {
	for _, tc := range []struct {
		sa   unix.Sockaddr
		want string
	}{
		{&unix.SockaddrInet6{Addr: target6.As16(), ZoneId: 3}, "2001:db8:ffff::20"}, // no zone on a global address
		{&unix.SockaddrInet6{Addr: netip.MustParseAddr("fe80::1").As16(), ZoneId: 3}, "fe80::1%3"},
		{&unix.SockaddrInet6{Addr: netip.MustParseAddr("fe80::1").As16()}, "fe80::1"},
		{&unix.SockaddrInet4{Addr: [4]byte{203, 0, 113, 20}}, "invalid IP"},
		{nil, "invalid IP"},
	} {
		if got := sourceAddr6(tc.sa).String(); got != tc.want {
			t.Errorf("sourceAddr6(%+v) = %s, want %s", tc.sa, got, tc.want)
		}
	}
}

func TestParseEchoReply6(t *testing.T) {
	const nonce = 0x1122334455667788
	good := reply6(0x1234, 7, nonce)
	if e, n, ok := parseEchoReply6(good, target6); !ok || e != (echo{src: target6, id: 0x1234, seq: 7}) || n != nonce {
		t.Fatalf("good reply: %+v %x %v", e, n, ok)
	}
	ll := from6("fe80::1", 4)
	if e, _, ok := parseEchoReply6(good, ll); !ok || e.src != ll || e.src.Zone() != "4" {
		t.Fatalf("link-local reply: %+v %v", e, ok)
	}
	// A reply longer than our request (a target padding its echo) is
	// still an answer; only header and nonce are required.
	if _, _, ok := parseEchoReply6(append(append([]byte(nil), good...), 1, 2, 3), target6); !ok {
		t.Error("longer reply rejected")
	}
	if _, _, ok := parseEchoReply6(good[:echo6Min], target6); !ok {
		t.Error("reply with header and nonce only rejected")
	}

	// An ICMPv6 error carries the invoking packet after 4 unused bytes:
	// the IPv6 header of our request, then our request itself.
	var req [echoLen]byte
	marshalEcho6(req[:], 0x1234, 7, nonce, time.Now())
	invoking := make([]byte, 40+echoLen)
	invoking[0] = 0x60
	binary.BigEndian.PutUint16(invoking[4:6], echoLen)
	invoking[6], invoking[7] = 58, 64
	copy(invoking[40:], req[:])
	errMsg := func(typ, code byte) []byte {
		m := make([]byte, 8, 8+len(invoking))
		m[0], m[1] = typ, code
		return append(m, invoking...)
	}
	mutate := func(f func(p []byte)) []byte {
		p := append([]byte(nil), good...)
		f(p)
		return p
	}
	for name, tc := range map[string]struct {
		msg []byte
		src netip.Addr
	}{
		"empty":          {nil, target6},
		"header only":    {good[:8], target6},
		"no nonce":       {good[:echo6Min-1], target6},
		"echo request":   {req[:], target6},
		"nonzero code":   {mutate(func(p []byte) { p[1] = 1 }), target6},
		"unreachable":    {errMsg(1, 4), target6},
		"too big":        {errMsg(2, 0), target6},
		"time exceeded":  {errMsg(3, 0), target6},
		"ICMP echo type": {mutate(func(p []byte) { p[0] = icmpEchoReply }), target6},
		"no source":      {good, netip.Addr{}},
		"IPv4 source":    {good, target1},
		"mapped source":  {good, netip.MustParseAddr("::ffff:203.0.113.20")},
		"unspecified":    {good, netip.IPv6Unspecified()},
		"multicast":      {good, netip.MustParseAddr("ff02::1")},
	} {
		if e, _, ok := parseEchoReply6(tc.msg, tc.src); ok {
			t.Errorf("%s: accepted as %+v", name, e)
		}
	}
}

func TestDest6(t *testing.T) {
	ifindex := func(zone string) (uint32, error) {
		if zone == "wb" {
			return 7, nil
		}
		return 0, errors.New("no such device")
	}
	sa, from, err := dest6(target6, ifindex)
	if err != nil || sa.Addr != target6.As16() || sa.ZoneId != 0 || from != target6 {
		t.Fatalf("global: %+v %v %v", sa, from, err)
	}
	sa, from, err = dest6(netip.MustParseAddr("fe80::1%wb"), ifindex)
	if err != nil || sa.ZoneId != 7 || from != from6("fe80::1", 7) {
		t.Fatalf("link-local: %+v %v %v", sa, from, err)
	}
	if _, _, err := dest6(netip.MustParseAddr("fe80::1"), ifindex); err == nil {
		t.Error("link-local without zone: no error")
	}
	if _, _, err := dest6(netip.MustParseAddr("fe80::1%gone"), ifindex); err == nil {
		t.Error("link-local on a missing interface: no error")
	}
}

// TestReplyMatching6 feeds replies the way the IPv6 reader does (its
// filter, then the scheduler) to probes sent the way the transport sends
// them.
func TestReplyMatching6(t *testing.T) {
	const id, nonce = 0x4242, 0xfeedface
	ts := newTestSched(t, Spec{Targets: []string{target6.String(), target6b.String(), "fe80::1"}, Interface: "wb"})
	ts.at(0)
	if len(ts.tr.sent) != 3 {
		t.Fatalf("sent %d probes", len(ts.tr.sent))
	}
	ifindex := func(zone string) (uint32, error) {
		if zone != "wb" {
			t.Fatalf("zone %q, want the WAN's interface", zone)
		}
		return 7, nil
	}
	for _, f := range ts.tr.sent {
		var err error
		if _, f.from, err = dest6(f.addr, ifindex); err != nil {
			t.Fatal(err)
		}
	}
	f0, f1, fl := ts.tr.sent[0], ts.tr.sent[1], ts.tr.sent[2]
	feed := func(msg []byte, src netip.Addr, at time.Duration) {
		if e, ok := acceptReply6(msg, src, id, nonce); ok {
			ts.s.handle(event{icmp: true, seq: e.seq, src: e.src, at: ts.t0.Add(at), ok: true})
		}
	}
	for name, tc := range map[string]struct {
		msg []byte
		src netip.Addr
	}{
		"wrong id":                   {reply6(id+1, uint16(f0.id), nonce), target6},
		"wrong nonce":                {reply6(id, uint16(f0.id), nonce+1), target6},
		"wrong source":               {reply6(id, uint16(f0.id), nonce), target6b},
		"other target's seq":         {reply6(id, uint16(f1.id), nonce), target6},
		"unknown seq":                {reply6(id, 999, nonce), target6},
		"link-local, wrong zone":     {reply6(id, uint16(fl.id), nonce), from6("fe80::1", 8)},
		"link-local, no zone":        {reply6(id, uint16(fl.id), nonce), from6("fe80::1", 0)},
		"link-local, wrong address":  {reply6(id, uint16(fl.id), nonce), from6("fe80::2", 7)},
		"global for link-local seq":  {reply6(id, uint16(fl.id), nonce), target6},
		"truncated":                  {reply6(id, uint16(f0.id), nonce)[:12], target6},
		"malformed":                  {[]byte{icmp6EchoReply, 0, 0xff}, target6},
		"request with our id":        {icmp6Msg(icmp6EchoRequest, 0, id, uint16(f0.id), reply6(id, uint16(f0.id), nonce)[8:]), target6},
		"unreachable quoting ours":   {append(icmp6Msg(1, 3, 0, 0, nil), quoted6(id, uint16(f0.id), nonce)...), target6},
		"unreachable, id in unused":  {icmp6Msg(1, 3, id, uint16(f0.id), quoted6(id, uint16(f0.id), nonce)), target6},
		"too big quoting ours":       {icmp6Msg(2, 0, 0, 1280, quoted6(id, uint16(f0.id), nonce)), target6},
		"parameter problem, our ids": {icmp6Msg(4, 0, id, uint16(f1.id), quoted6(id, uint16(f1.id), nonce)), target6b},
	} {
		feed(tc.msg, tc.src, ms)
		if out := ts.take(); len(out) != 0 || len(ts.s.flights) != 3 {
			t.Fatalf("%s matched: %s, %d flights", name, describeRounds(out), len(ts.s.flights))
		}
	}
	feed(reply6(id, uint16(f0.id), nonce), target6, 2*ms)
	feed(reply6(id, uint16(fl.id), nonce), from6("fe80::1", 7), 3*ms)
	feed(reply6(id, uint16(fl.id), nonce), from6("fe80::1", 7), 4*ms) // duplicate
	feed(reply6(id, uint16(f1.id), nonce), target6b, 5*ms)
	out := ts.take()
	if len(out) != 1 || out[0].Results[0] != (Result{Target: target6.String(), OK: true, RTT: 2 * ms}) ||
		out[0].Results[1] != (Result{Target: target6b.String(), OK: true, RTT: 5 * ms}) ||
		out[0].Results[2] != (Result{Target: "fe80::1", OK: true, RTT: 3 * ms}) {
		t.Fatalf("got %s", describeRounds(out))
	}
}

// quoted6 is our request as an ICMPv6 error quotes it: its IPv6 header,
// then the echo request.
func quoted6(id, seq uint16, nonce uint64) []byte {
	p := make([]byte, 40+echoLen)
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:6], echoLen)
	p[6], p[7] = 58, 64
	marshalEcho6(p[40:], id, seq, nonce, time.Unix(1, 0))
	return p
}

func TestParseSpecIPv6(t *testing.T) {
	_, targets, err := parseSpec(Spec{Targets: []string{"2001:db8::1", "fe80::1"}, Interface: "wan0", Interval: 1, Timeout: 1})
	if err != nil {
		t.Fatal(err)
	}
	if targets[0].addr.String() != "2001:db8::1" || targets[1].addr.String() != "fe80::1%wan0" || targets[1].name != "fe80::1" {
		t.Fatalf("targets %v (%s), %v (%s)", targets[0].addr, targets[0].name, targets[1].addr, targets[1].name)
	}
	// Interface is for link-local icmp targets only.
	_, targets, err = parseSpec(Spec{Targets: []string{"::ffff:203.0.113.20", "198.51.100.1"}, Interface: "wan0", Interval: 1, Timeout: 1})
	if err != nil || targets[0].addr != netip.MustParseAddr("203.0.113.20") || targets[1].addr.Zone() != "" {
		t.Fatalf("IPv4: %v %v", targets, err)
	}
	// tcp, dns and http targets of both families may share a prober.
	_, targets, err = parseSpec(Spec{Method: "tcp", Targets: []string{"[2001:db8::1]:80", "198.51.100.1:80"}, Interval: 1, Timeout: 1})
	if err != nil || targets[0].ap.String() != "[2001:db8::1]:80" {
		t.Fatalf("tcp: %v %v", targets, err)
	}
	_, _, err = parseSpec(Spec{Targets: []string{"2001:db8::1", "198.51.100.1"}, Interval: 1, Timeout: 1})
	if err == nil || err.Error() != "probe : one family per prober: split IPv4 and IPv6 targets" {
		t.Fatalf("mixed: %v", err)
	}
}

func TestFamily(t *testing.T) {
	for _, tc := range []struct {
		method  string
		targets []string
		want    int
		err     string
	}{
		{"", []string{"203.0.113.20", "198.51.100.1"}, 4, ""},
		{"icmp", []string{"2001:db8::1", "fe80::1"}, 6, ""},
		{"icmp", []string{"::ffff:203.0.113.20"}, 4, ""},
		{"icmp", []string{"203.0.113.20", "2001:db8::1"}, 0, "one family per prober"},
		{"icmp", []string{"example.com"}, 0, "not an IP address"},
		{"icmp", []string{"fe80::1%eth0"}, 0, "has a zone"},
		{"icmp", nil, 0, "no targets"},
		{"tcp", []string{"[2001:db8::1]:443", "[2001:db8::2]:80"}, 6, ""},
		{"tcp", []string{"203.0.113.20:443"}, 4, ""},
		{"tcp", []string{"[::ffff:203.0.113.20]:443"}, 4, ""},
		{"tcp", []string{"203.0.113.20:443", "[2001:db8::1]:443"}, 0, "one family per prober"},
		{"tcp", []string{"2001:db8::1"}, 0, "not an address:port"},
		{"dns", []string{"2001:db8::53", "[2001:db8::54]:5353"}, 6, ""},
		{"dns", []string{"198.51.100.53"}, 4, ""},
		{"dns", []string{"198.51.100.53", "2001:db8::53"}, 0, "one family per prober"},
		{"http", []string{"http://[2001:db8::80]/", "https://[2001:db8::443]:8443/x"}, 6, ""},
		{"http", []string{"http://203.0.113.80:8080/"}, 4, ""},
		{"http", []string{"http://203.0.113.80/", "http://[2001:db8::80]/"}, 0, "one family per prober"},
		{"http", []string{"http://example.com/"}, 0, "names a host"},
		{"http", []string{"ftp://203.0.113.80/"}, 0, "not an http"},
		{"smtp", []string{"203.0.113.25"}, 0, "unknown probe method"},
	} {
		got, err := Family(tc.targets, tc.method)
		if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("Family(%q, %q) = %d, %v; want %d, error %q", tc.targets, tc.method, got, err, tc.want, tc.err)
		}
	}
	if _, err := Family([]string{"http://example.com/"}, "http"); !errors.Is(err, ErrNoFamily) {
		t.Errorf("host name: %v does not wrap ErrNoFamily", err)
	}
}

func FuzzParseEchoReply6(f *testing.F) {
	f.Add(reply6(1, 2, 3), target6.AsSlice(), uint32(0))
	f.Add(reply6(1, 2, 3), netip.MustParseAddr("fe80::1").AsSlice(), uint32(7))
	f.Add(reply6(1, 2, 3)[:12], target6.AsSlice(), uint32(0))
	f.Add(icmp6Msg(1, 0, 1, 2, quoted6(1, 2, 3)), target6.AsSlice(), uint32(0))
	f.Add([]byte{icmp6EchoReply}, []byte{1, 2, 3, 4}, uint32(1))
	f.Fuzz(func(t *testing.T, msg, addr []byte, zoneID uint32) {
		var sa unix.Sockaddr
		if len(addr) == 16 {
			sa = &unix.SockaddrInet6{Addr: [16]byte(addr), ZoneId: zoneID}
		} else if len(addr) == 4 {
			sa = &unix.SockaddrInet4{Addr: [4]byte(addr)}
		}
		src := sourceAddr6(sa)
		e, nonce, ok := parseEchoReply6(msg, src)
		if !ok {
			return
		}
		if len(msg) < echo6Min || msg[0] != icmp6EchoReply || msg[1] != 0 {
			t.Fatalf("accepted a message that is not an echo reply: % x", msg)
		}
		if len(addr) != 16 || !e.src.Is6() || e.src.Is4In6() || e.src.IsMulticast() || e.src.IsUnspecified() {
			t.Fatalf("accepted a reply from %v (% x)", e.src, addr)
		}
		if e.src.As16() != [16]byte(addr) || (e.src.Zone() != "") != (e.src.IsLinkLocalUnicast() && zoneID != 0) {
			t.Fatalf("source %v from % x zone %d", e.src, addr, zoneID)
		}
		if e.id != binary.BigEndian.Uint16(msg[4:]) || e.seq != binary.BigEndian.Uint16(msg[6:]) || nonce != binary.BigEndian.Uint64(msg[8:]) {
			t.Fatalf("wrong fields %+v %x from % x", e, nonce, msg)
		}
		if got, ok := acceptReply6(msg, src, e.id, nonce); !ok || got != e {
			t.Fatalf("acceptReply6 disagrees: %+v %v", got, ok)
		}
		if _, ok := acceptReply6(msg, src, e.id+1, nonce); ok {
			t.Fatal("acceptReply6 took another identifier")
		}
	})
}
