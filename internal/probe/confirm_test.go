package probe

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

// Scheduler tests on a synthetic clock with a simulated path (export_test.go):
// the deadline follows the RTT distribution, changes are confirmed fast
// both ways, a dead WAN is not probed fast forever, and rounds stay
// consecutive.

var simStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// fastSpec is the fast setting: interval 100ms, timeout 200ms,
// down 3, up 3, two targets, one of which must answer.
func fastSpec() Spec {
	return Spec{WAN: "isp1", Targets: []string{"198.51.100.1", "198.51.100.2"}, Interval: 100 * ms, Timeout: 200 * ms,
		Reliability: 1, Down: 3, Up: 3}
}

// simRound is a report with the time the consumer got it and the
// scheduler's mirror right after.
type simRound struct {
	Round
	at      time.Time
	verdict verdict
	bad     int
}

// simulate runs spec's scheduler over path for d and returns every report.
func simulate(t *testing.T, spec Spec, d time.Duration, path Path) ([]simRound, *sim) {
	t.Helper()
	sm := newSim(spec, simStart, path)
	var out []simRound
	sm.run(simStart.Add(d), func(r Round, at time.Time) {
		out = append(out, simRound{Round: r, at: at, verdict: sm.s.verdict, bad: sm.s.bad})
	})
	checkConsecutive(t, sm.s, out)
	return out, sm
}

// checkConsecutive checks the invariants of every schedule: reports in
// Seq order (a late report after its round), each round judged after it
// started and at most Timeout later, and a round that starts half an
// interval or less after the previous one (a confirmation round; rounds
// at the normal rhythm are more than that apart) starts only once the
// previous one was judged, and at least the confirmation gap after it.
func checkConsecutive(t *testing.T, s *scheduler, out []simRound) {
	t.Helper()
	var prev *simRound
	for i := range out {
		r := &out[i]
		if r.Late {
			if prev == nil || r.Seq > prev.Seq {
				t.Fatalf("late report for round %d before the round", r.Seq)
			}
			continue
		}
		if r.Judged.Before(r.Start) || r.Judged.Sub(r.Start) > s.timeout {
			t.Fatalf("round %d judged %v after its start", r.Seq, r.Judged.Sub(r.Start))
		}
		if prev != nil {
			if r.Seq != prev.Seq+1 {
				t.Fatalf("round %d after round %d", r.Seq, prev.Seq)
			}
			if gap := r.Start.Sub(prev.Start); gap <= s.interval/2 {
				if r.Start.Before(prev.Judged) {
					t.Fatalf("round %d started %v after round %d, before that one was judged (%v)",
						r.Seq, gap, prev.Seq, prev.Judged.Sub(prev.Start))
				}
				if gap < s.gap {
					t.Fatalf("round %d started %v after round %d: less than the gap %v", r.Seq, gap, prev.Seq, s.gap)
				}
			}
		}
		prev = r
	}
}

// flat answers every probe after rtt.
func flat(rtt time.Duration) Path {
	return func(netip.Addr, time.Time) (time.Duration, bool) { return rtt, true }
}

// cutBetween is path, except that nothing is answered for probes sent in
// [from, to).
func cutBetween(path Path, from, to time.Duration) Path {
	return func(a netip.Addr, sent time.Time) (time.Duration, bool) {
		if at := sent.Sub(simStart); at >= from && at < to {
			return 0, false
		}
		return path(a, sent)
	}
}

// roundsIn returns the rounds (not late reports) that started in [from, to).
func roundsIn(out []simRound, from, to time.Duration) []simRound {
	var rs []simRound
	for _, r := range out {
		if at := r.Start.Sub(simStart); !r.Late && at >= from && at < to {
			rs = append(rs, r)
		}
	}
	return rs
}

func TestDeadlineFollowsRTTDistribution(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	for _, tc := range []struct {
		name     string
		sample   func() time.Duration
		min, max time.Duration
	}{
		// A veth: far below a millisecond, so the floor decides.
		{"lab", func() time.Duration { return 80 * time.Microsecond }, minDeadline, minDeadline},
		// A steady 20ms path: twice 20ms, and little variation.
		{"steady 20ms", func() time.Duration { return 20 * ms }, 40 * ms, 41 * ms},
		// A slow server: anything between 1 and 40ms. The deadline
		// covers the jitter with room to spare, yet stays far below a
		// 1s timeout.
		{"jitter 1-40ms", func() time.Duration { return time.Duration(1+rng.IntN(40)) * ms }, 80 * ms, 160 * ms},
	} {
		var e rttEstimator
		for range 1000 {
			e.update(tc.sample())
		}
		got := roundDeadline([]*rttEstimator{&e}, time.Second)
		t.Logf("%s: deadline %v (peak %v, srtt %v, rttvar %v)", tc.name, got, e.peak, e.srtt, e.rttvar)
		if got < tc.min || got > tc.max {
			t.Errorf("%s: deadline %v, want within [%v, %v]", tc.name, got, tc.min, tc.max)
		}
	}
}

func TestJitteryPathNeverDown(t *testing.T) {
	// 1 to 40ms at random, for a simulated hour at the fast setting: no
	// bad round once the first answers are in (the deadline covers the
	// jitter), and never a streak of bad rounds.
	rng := rand.New(rand.NewPCG(2, 2))
	jitter := func(netip.Addr, time.Time) (time.Duration, bool) {
		return time.Millisecond + time.Duration(rng.Int64N(int64(39*ms))), true
	}
	out, _ := simulate(t, fastSpec(), time.Hour, jitter)
	bad, late := 0, 0
	for _, r := range out {
		if r.verdict == verdictDown {
			t.Fatalf("round %d: a jittery path confirmed down", r.Seq)
		}
		if r.Late {
			late++
		} else if !r.Good(1) {
			bad++
		}
	}
	t.Logf("%d reports in a simulated hour: %d bad rounds, %d late reports", len(out), bad, late)
	// The first round waits the full timeout; the next ones know the
	// path. A bad round would be both targets beyond twice the largest
	// of their last 32 RTTs: impossible here.
	if bad > 0 {
		t.Fatalf("%d bad rounds on a path that always answers within 40ms", bad)
	}
	if n := len(roundsIn(out, 0, time.Hour)); n < 35_900 || n > 36_100 {
		t.Fatalf("%d rounds in an hour at 10Hz", n)
	}
}

func TestSlowerPathIsLateNotDown(t *testing.T) {
	// A path that suddenly becomes slower than its deadline (but answers
	// within the timeout): its rounds are judged bad, but a late answer
	// breaks the streak if it comes before the streak completes, that is
	// within (Down-1) confirmation gaps plus a deadline of the first bad
	// round's start (25ms at the fast setting on a 1ms path, 105ms at the
	// defaults); the deadline then covers the new RTT. A path whose RTT
	// jumps further at once looks dead until its answers come: that is
	// the price of confirming within milliseconds, and README says so.
	for _, tc := range []struct {
		name     string
		interval time.Duration
		timeout  time.Duration
		slower   time.Duration
		down     bool
	}{
		{"fast, 1ms to 20ms", 100 * ms, 200 * ms, 20 * ms, false},
		{"defaults, 1ms to 100ms", 500 * ms, time.Second, 100 * ms, false},
		{"fast, 1ms to 150ms", 100 * ms, 200 * ms, 150 * ms, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := fastSpec()
			spec.Interval, spec.Timeout = tc.interval, tc.timeout
			path := func(_ netip.Addr, sent time.Time) (time.Duration, bool) {
				if sent.Sub(simStart) < 10*time.Second {
					return ms, true
				}
				return tc.slower, true
			}
			out, _ := simulate(t, spec, 30*time.Second, path)
			bad, maxBad, down := 0, 0, false
			for _, r := range out {
				down = down || r.verdict == verdictDown
				maxBad = max(maxBad, r.bad)
				if !r.Late && !r.Good(1) {
					bad++
				}
			}
			t.Logf("after the step: %d bad rounds, longest streak %d, down %v", bad, maxBad, down)
			if down != tc.down {
				t.Fatalf("down %v, want %v", down, tc.down)
			}
			for _, r := range roundsIn(out, 15*time.Second, 30*time.Second) {
				if !r.Good(1) || r.verdict != verdictUp {
					t.Fatalf("round %d still bad (verdict %v) 5s after the path became slower", r.Seq, r.verdict)
				}
			}
		})
	}
}

func TestConfirmDownFast(t *testing.T) {
	spec := fastSpec()
	const cut = 2*time.Second + 37*time.Millisecond
	out, sm := simulate(t, spec, 15*time.Second, cutBetween(flat(200*time.Microsecond), cut, time.Hour))
	after := roundsIn(out, cut, time.Hour)
	if len(after) < 3 || after[0].Good(1) || after[1].Good(1) || after[2].Good(1) {
		t.Fatalf("rounds after the cut: %+v", after[:min(3, len(after))])
	}
	// The first bad round is judged at its deadline, the floor on this
	// path; each confirmation round starts as soon as the previous is
	// judged, and no sooner than the gap (10ms) after it started.
	first := after[0]
	if d := first.Judged.Sub(first.Start); d != minDeadline {
		t.Fatalf("first bad round judged after %v, want %v", d, minDeadline)
	}
	for i := 1; i < 3; i++ {
		want := first.Start.Add(time.Duration(i) * sm.s.gap)
		if !after[i].Start.Equal(want) {
			t.Fatalf("confirmation round %d started %v after the first, want %v", i, after[i].Start.Sub(first.Start), want.Sub(first.Start))
		}
	}
	confirmed := after[2].Judged.Sub(first.Start)
	if after[2].verdict != verdictDown || confirmed != 2*sm.s.gap+minDeadline {
		t.Fatalf("down confirmed %v after the first bad round (verdict %v), want %v", confirmed, after[2].verdict, 2*sm.s.gap+minDeadline)
	}
	t.Logf("cut at %v: first bad round starts %v later, down confirmed %v after that", cut,
		first.Start.Sub(simStart.Add(cut)), confirmed)
	// Dead and confirmed: the normal rhythm again, not fast probing.
	later := after[3:]
	for i := 1; i < len(later); i++ {
		if g := later[i].Start.Sub(later[i-1].Start); g != spec.Interval {
			t.Fatalf("a dead WAN probed %v apart (round %d)", g, later[i].Seq)
		}
	}
	if len(later) < 120 {
		t.Fatalf("only %d rounds in 12s while dead", len(later))
	}
}

func TestConfirmUpFast(t *testing.T) {
	spec := fastSpec()
	const back = 5*time.Second + 61*time.Millisecond
	out, sm := simulate(t, spec, 10*time.Second, cutBetween(flat(200*time.Microsecond), time.Second, back))
	after := roundsIn(out, back, time.Hour)
	if len(after) < 3 || after[0].verdict != verdictDown {
		t.Fatalf("not down before the path came back: %+v", after[:min(1, len(after))])
	}
	first := after[0]
	for i := 1; i < 3; i++ {
		if want := first.Start.Add(time.Duration(i) * sm.s.gap); !after[i].Start.Equal(want) {
			t.Fatalf("good round %d started %v after the first, want %v", i+1, after[i].Start.Sub(first.Start), want.Sub(first.Start))
		}
	}
	if after[2].verdict != verdictUp {
		t.Fatalf("not up after three good rounds: %v", after[2].verdict)
	}
	t.Logf("path back at %v: first good round %v later, up confirmed %v after it", back,
		first.Start.Sub(simStart.Add(back)), after[2].Judged.Sub(first.Start))
	for i := 4; i < len(after); i++ {
		if g := after[i].Start.Sub(after[i-1].Start); g != spec.Interval {
			t.Fatalf("healthy WAN probed %v apart after its recovery (round %d)", g, after[i].Seq)
		}
	}
}

func TestNoEndlessFastProbing(t *testing.T) {
	spec := fastSpec()
	spec.Targets = spec.Targets[:1]
	n := 0
	alternate := func(netip.Addr, time.Time) (time.Duration, bool) {
		n++
		return ms, n%2 == 0
	}
	lossy := rand.New(rand.NewPCG(3, 3))
	for _, tc := range []struct {
		name string
		path Path
		// most rounds in 60s at 10Hz
		most int
	}{
		// Dead from the start: three fast rounds confirm it, then the
		// normal rhythm.
		{"dead", func(netip.Addr, time.Time) (time.Duration, bool) { return 0, false }, 603},
		// Good and bad in turn: the verdict stays unknown for ever, and
		// after one bounded burst the rhythm is normal.
		{"alternating", alternate, 607},
		// Half the probes lost while up: each bad round is followed by
		// one fast round, so at most twice the rate, in bursts.
		{"50% loss", func(netip.Addr, time.Time) (time.Duration, bool) { return ms, lossy.IntN(2) == 0 }, 1200},
	} {
		out, _ := simulate(t, spec, time.Minute, tc.path)
		rounds := len(roundsIn(out, 0, time.Minute))
		t.Logf("%s: %d rounds in 60s", tc.name, rounds)
		if rounds > tc.most || rounds < 590 {
			t.Errorf("%s: %d rounds in 60s, want 590..%d", tc.name, rounds, tc.most)
		}
	}
}

func TestOverlappingRoundsStayConsecutive(t *testing.T) {
	// Answers take 350ms with a 1s timeout and a 100ms interval: rounds
	// overlap (four in flight), and are judged out of order when the path
	// dies. Their outcomes reach the mirror, and the consumer, in Seq
	// order, and confirmation rounds still wait for the previous one.
	spec := fastSpec()
	spec.Timeout = time.Second
	path := cutBetween(flat(350*ms), 3*time.Second, 6*time.Second)
	out, _ := simulate(t, spec, 10*time.Second, path)
	downs, ups := 0, 0
	last := verdictUnknown
	for _, r := range out {
		if r.verdict != last {
			if r.verdict == verdictDown {
				downs++
			} else {
				ups++
			}
			last = r.verdict
		}
	}
	if downs != 1 || ups != 2 || last != verdictUp {
		t.Fatalf("verdicts: %d downs, %d ups, last %v; want up, down, up", downs, ups, last)
	}
}
