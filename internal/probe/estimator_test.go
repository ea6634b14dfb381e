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
		// (1 + 4*0.5)*2 + 25 = 31 → raised to the 50ms floor.
		{"fast path floor", []*rttEstimator{est(ms)}, time.Second, 50 * ms},
		// (20 + 4*10)*2 + 25 = 145.
		{"one sample", []*rttEstimator{est(20 * ms)}, time.Second, 145 * ms},
		// The slowest sampled target decides; one without a sample does
		// not hold the round to the timeout.
		{"max over targets", []*rttEstimator{est(ms), est(20 * ms), est()}, time.Second, 145 * ms},
		// (400 + 800)*2 + 25 → capped.
		{"timeout cap", []*rttEstimator{est(400 * ms)}, time.Second, time.Second},
		{"timeout below floor", []*rttEstimator{est(ms)}, 30 * ms, 30 * ms},
	} {
		if got := roundDeadline(tc.ests, tc.timeout); got != tc.want {
			t.Errorf("%s: deadline %v, want %v", tc.name, got, tc.want)
		}
	}
}
