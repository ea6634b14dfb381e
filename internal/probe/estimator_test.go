package probe

import (
	"testing"
	"time"
)

const ms = time.Millisecond

func TestEstimatorRFC6298(t *testing.T) {
	var e rttEstimator
	if _, ok := e.rto(); ok {
		t.Fatal("rto without a sample")
	}
	e.update(100 * ms)
	if e.srtt != 100*ms || e.rttvar != 50*ms {
		t.Fatalf("first sample: srtt %v rttvar %v, want 100ms 50ms", e.srtt, e.rttvar)
	}
	if r, ok := e.rto(); !ok || r != 300*ms {
		t.Fatalf("rto %v %v, want 300ms", r, ok)
	}
	// rttvar = 3/4*50 + 1/4*|100-200| = 62.5; srtt = 7/8*100 + 1/8*200 = 112.5.
	e.update(200 * ms)
	if e.srtt != 112500*time.Microsecond || e.rttvar != 62500*time.Microsecond {
		t.Fatalf("second sample: srtt %v rttvar %v, want 112.5ms 62.5ms", e.srtt, e.rttvar)
	}
	// A steady path converges: the variance decays towards zero.
	for range 200 {
		e.update(10 * ms)
	}
	if r, _ := e.rto(); r < 10*ms || r > 11*ms {
		t.Fatalf("rto after a steady 10ms: %v", r)
	}
	e.update(-time.Second) // clock oddity: treated as 0, never negative
	if e.srtt < 0 || e.rttvar < 0 {
		t.Fatalf("negative estimate %v %v", e.srtt, e.rttvar)
	}
}

func TestRecentPeak(t *testing.T) {
	var e rttEstimator
	if _, ok := e.wait(); ok {
		t.Fatal("wait without a sample")
	}
	e.update(40 * ms)
	for range recentRTTs - 1 {
		e.update(ms)
	}
	if e.peak != 40*ms {
		t.Fatalf("peak %v with a 40ms sample among the last %d, want 40ms", e.peak, recentRTTs)
	}
	// The 40ms sample leaves the window: the peak follows.
	e.update(2 * ms)
	if e.peak != 2*ms {
		t.Fatalf("peak %v once the 40ms sample left the window, want 2ms", e.peak)
	}
	e.update(-ms) // clock oddity: a zero sample
	if e.peak != 2*ms || e.recent[(e.next+recentRTTs-1)%recentRTTs] != 0 {
		t.Fatalf("peak %v after a negative sample", e.peak)
	}
}

func TestRoundDeadline(t *testing.T) {
	est := func(samples ...time.Duration) *rttEstimator {
		e := &rttEstimator{}
		for _, s := range samples {
			e.update(s)
		}
		return e
	}
	for _, tc := range []struct {
		name    string
		ests    []*rttEstimator
		timeout time.Duration
		want    time.Duration
	}{
		{"no targets", nil, time.Second, time.Second},
		{"no sample", []*rttEstimator{est(), est()}, time.Second, time.Second},
		// 2×0.1 + 4×0.05 = 0.4ms → raised to the 5ms floor.
		{"fast path floor", []*rttEstimator{est(100 * time.Microsecond)}, time.Second, minDeadline},
		// 2×20 + 4×10 = 80.
		{"one sample", []*rttEstimator{est(20 * ms)}, time.Second, 80 * ms},
		// The peak, not the average: 2×40 + 4×rttvar.
		{"jitter", []*rttEstimator{est(ms, 40*ms, ms, ms)}, time.Second, 80*ms + 4*est(ms, 40*ms, ms, ms).rttvar},
		// The slowest sampled target decides; one without a sample does
		// not hold the round to the timeout.
		{"max over targets", []*rttEstimator{est(ms), est(20 * ms), est()}, time.Second, 80 * ms},
		// 2×400 + 4×200 → capped.
		{"timeout cap", []*rttEstimator{est(400 * ms)}, time.Second, time.Second},
		{"timeout below floor", []*rttEstimator{est(100 * time.Microsecond)}, 3 * ms, 3 * ms},
	} {
		if got := roundDeadline(tc.ests, tc.timeout); got != tc.want {
			t.Errorf("%s: deadline %v, want %v", tc.name, got, tc.want)
		}
	}
}
