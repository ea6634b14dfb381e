package probe

import "time"

const (
	// minDeadline is the shortest a round waits for its answers. It only
	// matters on paths whose round trip is far below a millisecond (a
	// veth, a LAN gateway): there, what an answer waits for is this
	// process being scheduled, which takes a few milliseconds on a busy
	// machine. An answer that misses the deadline all the same is
	// reported late and still counts for the path (see Round.Late).
	minDeadline = 5 * time.Millisecond
	// recentRTTs is how many of a target's last round-trip times the
	// deadline looks at: 3.2 s at 10 Hz, 16 s at the default 2 Hz.
	recentRTTs = 32
	// deadlineFactor multiplies the largest recent RTT: an answer as slow
	// as the slowest of the last recentRTTs, or up to twice as slow, is on
	// time.
	deadlineFactor = 2
)

// rttEstimator follows one target's round-trip times: the smoothed RTT and
// its variation the way TCP does (RFC 6298, alpha 1/8, beta 1/4), and the
// last recentRTTs samples. A round is judged as soon as an answer is
// overdue for this path rather than after the configured Timeout: that is
// what detects a dead uplink quickly.
type rttEstimator struct {
	srtt, rttvar time.Duration
	// ok is set once the first sample arrived.
	ok bool
	// recent holds the last samples (a ring; n of them are valid, next is
	// where the next one goes).
	recent  [recentRTTs]time.Duration
	n, next int
	// peak is the largest of recent.
	peak time.Duration
}

// update feeds one measured round-trip time.
func (e *rttEstimator) update(rtt time.Duration) {
	if rtt < 0 {
		rtt = 0
	}
	evicted := e.recent[e.next]
	e.recent[e.next] = rtt
	e.next = (e.next + 1) % recentRTTs
	if e.n < recentRTTs {
		e.n++
		evicted = 0
	}
	switch {
	case rtt >= e.peak:
		e.peak = rtt
	case evicted == e.peak:
		// The largest sample left the window: look again.
		e.peak = 0
		for _, r := range e.recent[:e.n] {
			e.peak = max(e.peak, r)
		}
	}
	if !e.ok {
		e.srtt, e.rttvar, e.ok = rtt, rtt/2, true
		return
	}
	d := e.srtt - rtt
	if d < 0 {
		d = -d
	}
	e.rttvar = (3*e.rttvar + d) / 4
	e.srtt = (7*e.srtt + rtt) / 8
}

// rto is srtt + 4*rttvar (RFC 6298); ok is false while there is no sample.
func (e *rttEstimator) rto() (time.Duration, bool) {
	return e.srtt + 4*e.rttvar, e.ok
}

// wait is how long a round waits for this target's answer: twice the
// largest of its last recentRTTs round-trip times plus four times the RTT
// variation. ok is false while there is no sample.
//
// The largest recent RTT rather than the smoothed one covers a path that
// jitters: answers between 1 and 40 ms give a peak near 40 ms, so none of
// them is overdue. The factor and the variation leave room for a path that
// becomes slower; one that becomes more than that slower has its answers
// reported late, which also raises the peak for the next rounds.
func (e *rttEstimator) wait() (time.Duration, bool) {
	return deadlineFactor*e.peak + 4*e.rttvar, e.ok
}

// roundDeadline is how long a round waits for its answers: the largest
// wait of its targets, clamped to [minDeadline, timeout]. Targets without
// a sample do not count, so one target that never answered does not slow
// down the judgement of the others; with no sample at all the round waits
// the full timeout.
func roundDeadline(ests []*rttEstimator, timeout time.Duration) time.Duration {
	var worst time.Duration
	have := false
	for _, e := range ests {
		if w, ok := e.wait(); ok {
			have = true
			worst = max(worst, w)
		}
	}
	if !have {
		return timeout
	}
	return min(max(worst, minDeadline), timeout)
}
