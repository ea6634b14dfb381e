package probe

import "time"

const (
	// minDeadline keeps a round on a very fast path (a veth, a LAN
	// gateway) from being judged before scheduling noise settles: a
	// healthy reply that is merely a few milliseconds late must not look
	// like a loss.
	minDeadline = 50 * time.Millisecond
	// deadlineSlack is added to twice the path's retransmission timeout to
	// absorb the prober's own wake-up latency.
	deadlineSlack = 25 * time.Millisecond
)

// rttEstimator smooths one target's round-trip times the way TCP does
// (RFC 6298, alpha 1/8, beta 1/4), so that a round can be judged as soon
// as an answer is overdue for this path rather than after the configured
// Timeout: that is what detects a dead uplink quickly.
type rttEstimator struct {
	srtt, rttvar time.Duration
	// ok is set once the first sample arrived.
	ok bool
}

// update feeds one measured round-trip time.
func (e *rttEstimator) update(rtt time.Duration) {
	if rtt < 0 {
		rtt = 0
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

// rto is srtt + 4*rttvar, the time after which an answer is overdue; ok
// is false while there is no sample.
func (e *rttEstimator) rto() (time.Duration, bool) {
	return e.srtt + 4*e.rttvar, e.ok
}

// roundDeadline is how long a round waits for its answers: twice the
// largest rto of its targets plus deadlineSlack, clamped to
// [minDeadline, timeout]. Targets without a sample do not count, so one
// target that never answered does not slow down the judgement of the
// others; with no sample at all the round waits the full timeout.
func roundDeadline(ests []*rttEstimator, timeout time.Duration) time.Duration {
	var worst time.Duration
	have := false
	for _, e := range ests {
		if r, ok := e.rto(); ok {
			have = true
			worst = max(worst, r)
		}
	}
	if !have {
		return timeout
	}
	d := 2*worst + deadlineSlack
	return min(max(d, minDeadline), timeout)
}
