package probe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fakeTransport records the probes a scheduler sends.
type fakeTransport struct {
	sent []*flight
	// fail makes send fail for these addresses.
	fail map[netip.Addr]error
	// waiting are answers poll hands out.
	waiting []event
}

func (f *fakeTransport) send(fl *flight) error {
	if err := f.fail[fl.addr]; err != nil {
		return err
	}
	f.sent = append(f.sent, fl)
	return nil
}

func (f *fakeTransport) close() {}

// poll hands out the answers queued in waiting, as if the kernel had
// received them and the reader had not run yet.
func (f *fakeTransport) poll(fn func(event)) {
	for _, ev := range f.waiting {
		fn(ev)
	}
	f.waiting = nil
}

// testSched drives a scheduler with a synthetic clock.
type testSched struct {
	t   *testing.T
	s   *scheduler
	tr  *fakeTransport
	now time.Time
	t0  time.Time
}

func newTestSched(t *testing.T, spec Spec) *testSched {
	t.Helper()
	if spec.Interval == 0 {
		spec.Interval = 100 * ms
	}
	if spec.Timeout == 0 {
		spec.Timeout = time.Second
	}
	if spec.Reliability == 0 {
		spec.Reliability = 1
	}
	spec.WAN = "isp1"
	_, targets, err := parseSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ts := &testSched{t: t, tr: &fakeTransport{}, now: t0, t0: t0}
	ts.s = newScheduler(spec, targets, ts.tr, t0)
	ts.s.epoch = t0
	ts.s.clock = func() time.Time { return ts.now }
	return ts
}

// at moves the clock to t0+d and runs what is due.
func (ts *testSched) at(d time.Duration) {
	ts.now = ts.t0.Add(d)
	ts.s.step(ts.now)
}

// reply answers probe i (index into sent) at t0+d, as the ICMP reader
// would.
func (ts *testSched) reply(i int, d time.Duration) {
	f := ts.tr.sent[i]
	ts.s.handle(event{icmp: true, seq: uint16(f.id), src: f.addr, at: ts.t0.Add(d), ok: true})
}

// take empties the outbox.
func (ts *testSched) take() []Round {
	out := ts.s.outbox
	ts.s.outbox = nil
	return out
}

func describeRounds(rs []Round) string {
	s := ""
	for _, r := range rs {
		s += fmt.Sprintf("[seq %d late %v", r.Seq, r.Late)
		for _, res := range r.Results {
			s += fmt.Sprintf(" %s:%v/%v/%q", res.Target, res.OK, res.RTT, res.Err)
		}
		s += "] "
	}
	return s
}

func TestRoundJudgedWhenEveryTargetAnswered(t *testing.T) {
	ts := newTestSched(t, Spec{Targets: []string{"198.51.100.1", "198.51.100.2"}})
	ts.at(0)
	if len(ts.tr.sent) != 2 {
		t.Fatalf("sent %d probes, want 2", len(ts.tr.sent))
	}
	ts.reply(1, 3*ms)
	if out := ts.take(); len(out) != 0 {
		t.Fatalf("round judged before every target answered: %s", describeRounds(out))
	}
	ts.reply(0, 5*ms)
	out := ts.take()
	if len(out) != 1 || out[0].Seq != 1 || out[0].Late || out[0].WAN != "isp1" || !out[0].Start.Equal(ts.t0) {
		t.Fatalf("got %s", describeRounds(out))
	}
	want := []Result{{Target: "198.51.100.1", OK: true, RTT: 5 * ms}, {Target: "198.51.100.2", OK: true, RTT: 3 * ms}}
	for i, w := range want {
		if out[0].Results[i] != w {
			t.Errorf("result %d = %+v, want %+v", i, out[0].Results[i], w)
		}
	}
	if len(ts.s.flights) != 0 {
		t.Errorf("%d flights left after every answer", len(ts.s.flights))
	}
}

func TestRoundsDeliveredInSeqOrder(t *testing.T) {
	ts := newTestSched(t, Spec{Targets: []string{"198.51.100.1"}})
	ts.at(0) // round 1: no sample, deadline 1s
	// Round 2 has a sample (seeded here) and a 5ms deadline; it is
	// judged long before round 1 but must not overtake it.
	ts.s.targets[0].est.update(ms)
	ts.at(100 * ms)
	if len(ts.tr.sent) != 2 {
		t.Fatalf("sent %d probes, want 2", len(ts.tr.sent))
	}
	ts.reply(1, 101*ms)
	if !ts.s.open[1].judged {
		t.Fatal("round 2 not judged when its only target answered")
	}
	if out := ts.take(); len(out) != 0 {
		t.Fatalf("round 2 delivered before round 1: %s", describeRounds(out))
	}
	// Round 1's answer after round 2 was judged: on time for round 1.
	ts.reply(0, 150*ms)
	out := ts.take()
	if len(out) != 2 || out[0].Seq != 1 || out[1].Seq != 2 || !out[0].Results[0].OK || !out[1].Results[0].OK {
		t.Fatalf("got %s, want rounds 1 and 2 in order", describeRounds(out))
	}
	if out[0].Results[0].RTT != 150*ms || out[1].Results[0].RTT != ms {
		t.Fatalf("RTTs %v %v", out[0].Results[0].RTT, out[1].Results[0].RTT)
	}
}

func TestRoundDeadlineAdapts(t *testing.T) {
	ts := newTestSched(t, Spec{Targets: []string{"198.51.100.1", "198.51.100.2"}, Reliability: 2, Interval: 10 * time.Second})
	ts.at(0)
	ts.reply(0, 2*ms)
	// No sample before round 1: it waits the whole timeout.
	ts.at(999 * ms)
	if out := ts.take(); len(out) != 0 {
		t.Fatalf("round 1 judged before its deadline: %s", describeRounds(out))
	}
	ts.at(time.Second)
	out := ts.take()
	if len(out) != 1 || !out[0].Results[0].OK || out[0].Results[1].OK || out[0].Results[1].Err != "timeout" ||
		!out[0].Judged.Equal(ts.t0.Add(time.Second)) {
		t.Fatalf("round 1: %s", describeRounds(out))
	}
	// Round 1 was bad (reliability 2) while nothing was confirmed yet: the
	// next round starts at once. Its deadline follows target 0's 2ms RTT:
	// 2×2 + 4×1 = 8ms; target 1, never heard from, does not count.
	if len(ts.s.open) != 1 || !ts.s.open[0].start.Equal(ts.now) {
		t.Fatalf("no confirmation round at once: %d open, started %v", len(ts.s.open), ts.s.open[0].start.Sub(ts.t0))
	}
	if got := ts.s.open[0].deadline.Sub(ts.now); got != 8*ms {
		t.Fatalf("deadline with a 2ms sample: %v, want 8ms", got)
	}
}

func TestLateAnswers(t *testing.T) {
	ts := newTestSched(t, Spec{Targets: []string{"198.51.100.1", "198.51.100.2"}})
	ts.s.verdict = verdictUp
	ts.s.targets[0].est.update(ms)
	ts.s.targets[1].est.update(ms)
	ts.at(0) // deadline: 2×1 + 4×0.5 = 4ms, raised to 5ms
	ts.at(5 * ms)
	out := ts.take()
	if len(out) != 1 || out[0].Late || out[0].Good(1) {
		t.Fatalf("round 1 at its deadline: %s", describeRounds(out))
	}
	if ts.s.bad != 1 || !ts.s.fast() || !ts.s.nextStart.Equal(ts.t0.Add(10*ms)) {
		t.Fatalf("after a bad round: bad %d fast %v next %v", ts.s.bad, ts.s.fast(), ts.s.nextStart.Sub(ts.t0))
	}
	before := ts.s.targets[0].est.srtt
	ts.reply(0, 7*ms)
	ts.reply(1, 8*ms)
	out = ts.take()
	// Both late answers are queued before the consumer takes them: one
	// report.
	if len(out) != 1 || !out[0].Late || out[0].Seq != 1 || len(out[0].Results) != 2 ||
		out[0].Results[0] != (Result{Target: "198.51.100.1", OK: true, RTT: 7 * ms}) ||
		out[0].Results[1] != (Result{Target: "198.51.100.2", OK: true, RTT: 8 * ms}) {
		t.Fatalf("late report: %s", describeRounds(out))
	}
	if ts.s.targets[0].est.srtt <= before || ts.s.targets[0].est.peak != 7*ms {
		t.Error("a late answer did not update the estimate")
	}
	// The path works, slowly: the streak is broken, the normal rhythm
	// resumes, and the next deadline covers the late answers.
	if ts.s.bad != 0 || ts.s.fast() || !ts.s.nextStart.Equal(ts.t0.Add(100*ms)) {
		t.Fatalf("after a late report: bad %d fast %v next %v", ts.s.bad, ts.s.fast(), ts.s.nextStart.Sub(ts.t0))
	}
	ts.at(100 * ms)
	if d := ts.s.open[0].deadline.Sub(ts.now); d < 16*ms {
		t.Fatalf("deadline %v after 8ms answers", d)
	}
	// An answer after Timeout is dropped, and so is the flight.
	ts.at(100*ms + time.Second)
	ts.take()
	ts.reply(2, 100*ms+time.Second+ms)
	if out := ts.take(); len(out) != 0 {
		t.Fatalf("answer after Timeout reported: %s", describeRounds(out))
	}
	if ts.s.flights[ts.tr.sent[2].id] != nil || ts.s.flights[ts.tr.sent[3].id] != nil {
		t.Fatal("flights left after their Timeout")
	}
}

func TestLateAnswerWaitsForItsRound(t *testing.T) {
	ts := newTestSched(t, Spec{Targets: []string{"198.51.100.1"}})
	ts.at(0) // round 1: deadline 1s
	ts.s.targets[0].est.update(ms)
	ts.at(100 * ms) // round 2: deadline 5ms
	ts.at(105 * ms)
	ts.reply(1, 170*ms) // late for round 2, which waits behind round 1
	if out := ts.take(); len(out) != 0 {
		t.Fatalf("reports before round 1: %s", describeRounds(out))
	}
	ts.reply(0, 180*ms)
	out := ts.take()
	if len(out) != 3 || out[0].Seq != 1 || out[0].Late || out[1].Seq != 2 || out[1].Late || out[1].Good(1) ||
		out[2].Seq != 2 || !out[2].Late || !out[2].Results[0].OK {
		t.Fatalf("got %s, want round 1, round 2 (bad), late report for 2", describeRounds(out))
	}
	// The mirror saw them in that order: good, bad, late.
	if ts.s.good != 0 || ts.s.bad != 0 {
		t.Fatalf("streaks good %d bad %d after good, bad, late", ts.s.good, ts.s.bad)
	}
}

func TestAnswerBeforeDeadlineSeenAfter(t *testing.T) {
	// The scheduler may see an answer after the deadline passed, yet the
	// answer's own arrival time decides.
	ts := newTestSched(t, Spec{Targets: []string{"198.51.100.1"}})
	ts.s.targets[0].est.update(ms)
	ts.at(0)
	ts.now = ts.t0.Add(70 * ms) // no step: the timer has not fired
	ts.reply(0, 4*ms)
	out := ts.take()
	if len(out) != 1 || !out[0].Results[0].OK || !out[0].Judged.Equal(ts.t0.Add(4*ms)) {
		t.Fatalf("got %s", describeRounds(out))
	}
}

func TestSendErrorFailsAtOnce(t *testing.T) {
	ts := newTestSched(t, Spec{Targets: []string{"198.51.100.1", "198.51.100.2"}})
	ts.tr.fail = map[netip.Addr]error{
		netip.MustParseAddr("198.51.100.1"): errors.New("network is unreachable"),
		netip.MustParseAddr("198.51.100.2"): errors.New("network is unreachable"),
	}
	ts.at(0)
	out := ts.take()
	if len(out) != 1 || out[0].Results[0].Err != "network is unreachable" || out[0].Results[1].OK {
		t.Fatalf("got %s", describeRounds(out))
	}
	if len(ts.s.flights) != 0 {
		t.Fatal("failed sends left flights")
	}
}

func TestGatewayTarget(t *testing.T) {
	gw := netip.Addr{}
	ts := newTestSched(t, Spec{Gateway: func() netip.Addr { return gw }})
	ts.at(0)
	out := ts.take()
	if len(out) != 1 || out[0].Results[0] != (Result{Target: "gateway", Err: "no gateway"}) {
		t.Fatalf("no gateway: %s", describeRounds(out))
	}
	if len(ts.tr.sent) != 0 {
		t.Fatal("probed an invalid gateway")
	}
	gw = netip.MustParseAddr("198.51.100.1")
	ts.at(25 * ms) // fast: the last round was bad
	ts.reply(0, 26*ms)
	out = ts.take()
	if len(out) != 1 || out[0].Results[0] != (Result{Target: "198.51.100.1", OK: true, RTT: ms}) {
		t.Fatalf("gateway: %s", describeRounds(out))
	}
	// A new gateway is a new path: its estimate starts over.
	gw = netip.MustParseAddr("198.51.100.9")
	ts.at(125 * ms)
	if ts.s.targets[0].est.ok {
		t.Fatal("estimate kept across a gateway change")
	}
	if ts.tr.sent[1].addr != gw {
		t.Fatalf("probed %v, want the new gateway", ts.tr.sent[1].addr)
	}
	// An IPv6 gateway is probed like an IPv4 one; a link-local one needs
	// the WAN's interface as its zone.
	gw = netip.MustParseAddr("2001:db8::1")
	ts.at(1125 * ms)
	if f := ts.tr.sent[len(ts.tr.sent)-1]; f.addr != gw || ts.s.targets[0].name != "2001:db8::1" {
		t.Fatalf("IPv6 gateway: probed %v as %q", f.addr, ts.s.targets[0].name)
	}
	ts.reply(len(ts.tr.sent)-1, 1127*ms)
	if out := ts.take(); len(out) == 0 || out[len(out)-1].Results[0] != (Result{Target: "2001:db8::1", OK: true, RTT: 2 * ms}) {
		t.Fatalf("IPv6 gateway: %s", describeRounds(out))
	}
	gw = netip.MustParseAddr("fe80::1")
	ts.at(1225 * ms)
	ts.at(1300 * ms)
	out = ts.take()
	if last := out[len(out)-1]; last.Results[0] != (Result{Target: "fe80::1", Err: "link-local gateway and no interface"}) {
		t.Fatalf("link-local gateway without interface: %s", describeRounds(out))
	}
	ts.s.iface = "wan0"
	n := len(ts.tr.sent)
	ts.at(1400 * ms)
	if len(ts.tr.sent) != n+1 || ts.tr.sent[n].addr != gw.WithZone("wan0") || ts.s.targets[0].name != "fe80::1%wan0" {
		t.Fatalf("link-local gateway: probed %v", ts.tr.sent[n:])
	}
	// A zone from Gateway gives way to the WAN's interface; a global
	// address loses its zone.
	gw = netip.MustParseAddr("fe80::1%other")
	ts.at(1500 * ms)
	gw = netip.MustParseAddr("2001:db8::1%wan0")
	ts.at(1600 * ms)
	if a, b := ts.tr.sent[n+1].addr, ts.tr.sent[n+2].addr; a != netip.MustParseAddr("fe80::1%wan0") || b != netip.MustParseAddr("2001:db8::1") {
		t.Fatalf("zones: probed %v and %v", a, b)
	}
}

func TestBackpressure(t *testing.T) {
	ts := newTestSched(t, Spec{Targets: []string{"198.51.100.1"}, Interval: 10 * ms})
	for i := range 1000 {
		ts.at(time.Duration(i) * 10 * ms)
		if n := len(ts.tr.sent); n > 0 {
			ts.reply(n-1, time.Duration(i)*10*ms+ms)
		}
	}
	if len(ts.s.outbox) > maxOutbox || ts.s.seq > maxOutbox {
		t.Fatalf("outbox %d, %d rounds started with nobody reading", len(ts.s.outbox), ts.s.seq)
	}
	if w := ts.s.wake(); !w.IsZero() {
		t.Fatalf("scheduler wants to wake at %v with nothing to do", w)
	}
	// The consumer reads again: probing resumes at once.
	ts.take()
	ts.at(10*time.Second + 5*ms)
	if ts.s.seq != maxOutbox+1 {
		t.Fatalf("no round after the outbox drained (seq %d)", ts.s.seq)
	}
}

func TestFlightsBounded(t *testing.T) {
	// A dead target at 10ms with a long timeout: flights pile up only
	// until their Timeout, and sequence numbers never alias.
	ts := newTestSched(t, Spec{Targets: []string{"198.51.100.1", "198.51.100.2"}, Interval: 10 * ms, Timeout: 2 * time.Second})
	for i := range 1000 {
		ts.at(time.Duration(i) * 10 * ms)
		ts.take()
	}
	// 2 targets × 2s / 10ms.
	if n := len(ts.s.flights); n > 402 || len(ts.s.fifo) > 402 {
		t.Fatalf("%d flights, %d in fifo", n, len(ts.s.fifo))
	}
}

func TestSeqWraps(t *testing.T) {
	ts := newTestSched(t, Spec{Targets: []string{"198.51.100.1"}})
	ts.s.nextID = seqSpace*3 - 1 // the next ids cross a 16-bit boundary
	ts.at(0)
	ts.s.targets[0].est.update(ms)
	ts.at(100 * ms)
	if ids := []uint64{ts.tr.sent[0].id, ts.tr.sent[1].id}; uint16(ids[1]) != 0 {
		t.Fatalf("ids %v do not wrap", ids)
	}
	ts.reply(1, 101*ms)
	ts.reply(0, 102*ms)
	out := ts.take()
	if len(out) != 2 || !out[0].Results[0].OK || !out[1].Results[0].OK {
		t.Fatalf("got %s", describeRounds(out))
	}
	// An id that has not been used yet and one from the previous cycle
	// of the same 16 bits are unknown.
	if f := ts.s.lookupSeq(5); f != nil {
		t.Fatal("found a flight for an unused sequence number")
	}
	ts.s.nextID = 1
	if f := ts.s.lookupSeq(0); f != nil {
		t.Fatal("lookup before any probe")
	}
}

func TestRhythmSharedAcrossSchedulers(t *testing.T) {
	// Two WANs whose probers start 37ms apart, and a third whose rounds
	// fall behind: once their changes are confirmed they all start their
	// rounds at the same instants (one wake-up of the process for all),
	// and the laggard rejoins without a burst of catch-up rounds.
	spec := Spec{Targets: []string{"198.51.100.1"}, Interval: 100 * ms, Timeout: time.Second, Reliability: 1}
	a, b := newTestSched(t, spec), newTestSched(t, spec)
	b.t0 = a.t0.Add(37 * ms)
	for _, ts := range []*testSched{a, b} {
		ts.s.verdict = verdictUp
		ts.s.good = 3
		ts.s.targets[0].est.update(ms)
	}
	starts := func(ts *testSched, from, to time.Duration) []time.Duration {
		var got []time.Duration
		for d := from; d < to; d += ms {
			n := len(ts.tr.sent)
			ts.now = a.t0.Add(d) // both on a's clock
			ts.s.step(ts.now)
			if len(ts.tr.sent) > n {
				got = append(got, d)
				ts.s.handle(event{icmp: true, seq: uint16(ts.tr.sent[n].id), src: ts.tr.sent[n].addr, at: ts.now, ok: true})
			}
			ts.take()
		}
		return got
	}
	sa := starts(a, 0, time.Second)
	sb := starts(b, 37*ms, time.Second)
	if sb[0] != 37*ms {
		t.Fatalf("b's first round at %v, want at once (37ms)", sb[0])
	}
	if !slices.Equal(sa[1:], sb[1:]) {
		t.Fatalf("rounds not aligned: a %v, b %v", sa, sb)
	}
	for i := 1; i < len(sa); i++ {
		if sa[i]%(100*ms) != 0 {
			t.Fatalf("a round at %v, off the grid", sa[i])
		}
	}
	// b is held back for 420ms (its consumer, a busy machine): one round
	// when it is free, then the grid again.
	late := starts(b, 1420*ms, 2*time.Second)
	if late[0] != 1420*ms || late[1] != 1500*ms || late[2] != 1600*ms {
		t.Fatalf("after a 420ms stall: rounds at %v, want 1.42s, 1.5s, 1.6s", late)
	}
}

// TestPollBeforeJudging: a round whose deadline passed while the process
// was busy (its step runs 35 ms late) is judged only after the socket is
// read once more; an answer the kernel received before the deadline then
// counts as in time, with its true RTT. With nothing waiting the round
// fails as before.
func TestPollBeforeJudging(t *testing.T) {
	for _, waiting := range []bool{true, false} {
		ts := newTestSched(t, Spec{Targets: []string{"198.51.100.1"}})
		ts.s.targets[0].est.update(ms) // a 5 ms deadline
		ts.at(0)
		f := ts.tr.sent[0]
		if waiting {
			ts.tr.waiting = []event{{icmp: true, seq: uint16(f.id), src: f.addr, at: ts.t0.Add(3 * ms), ok: true}}
		}
		ts.at(40 * ms)
		out := ts.take()
		if len(out) != 1 || out[0].Late {
			t.Fatalf("waiting %v: got %s, want one judged round", waiting, describeRounds(out))
		}
		got := out[0].Results[0]
		if waiting && (!got.OK || got.RTT != 3*ms) {
			t.Errorf("an answer received before the deadline and read after it: %+v, want OK with RTT 3ms", got)
		}
		if !waiting && got.OK {
			t.Errorf("no answer: %+v, want a failure", got)
		}
	}
}

// TestArrival: the kernel's wall-clock stamp becomes a time on the
// monotonic clock of now; a missing, garbled or implausible stamp gives
// now.
func TestArrival(t *testing.T) {
	now := time.Now()
	stamp := func(at time.Time) []byte {
		b := make([]byte, unix.CmsgSpace(16))
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		h.Level, h.Type = unix.SOL_SOCKET, unix.SO_TIMESTAMPNS_NEW
		h.SetLen(unix.CmsgLen(16))
		binary.NativeEndian.PutUint64(b[unix.CmsgLen(0):], uint64(at.Unix()))
		binary.NativeEndian.PutUint64(b[unix.CmsgLen(0)+8:], uint64(at.Nanosecond()))
		return b
	}
	if got := arrival(stamp(now.Add(-30*ms)), now); got.Sub(now) != -30*ms {
		t.Errorf("a stamp 30 ms old: %v after now, want -30ms", got.Sub(now))
	}
	if got := arrival(stamp(now.Add(-30*ms)), now); !strings.Contains(got.String(), " m=") {
		t.Error("the arrival has no monotonic reading")
	}
	other := stamp(now.Add(-30 * ms))
	(*unix.Cmsghdr)(unsafe.Pointer(&other[0])).Type = unix.SO_TIMESTAMP_NEW
	for name, oob := range map[string][]byte{
		"none":        nil,
		"other type":  other,
		"future":      stamp(now.Add(time.Second)),
		"too old":     stamp(now.Add(-time.Hour)),
		"short":       stamp(now)[:unix.CmsgLen(0)+4],
		"bad length":  append([]byte{0xff, 0xff, 0xff, 0x7f}, make([]byte, 28)...),
		"header only": make([]byte, unix.SizeofCmsghdr-1),
	} {
		if got := arrival(oob, now); got != now {
			t.Errorf("%s: %v, want now", name, got)
		}
	}
}
