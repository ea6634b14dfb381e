// Package health turns one WAN's probe rounds and carrier events into its
// state — up, degraded, down or unknown — with hysteresis.
//
// A Tracker does no I/O, starts no goroutines and never reads the clock:
// every call carries the time, so the same inputs always give the same
// transitions and tests replay hours of probing in milliseconds.
//
// # Up and down
//
// A round is good when at least Reliability targets answered in time. A
// WAN goes down after Down consecutive bad rounds, from any state, and
// comes back (from down or unknown) after Up consecutive good rounds. A
// late report (answers that arrived after their round was judged) is not a
// good round, but it proves the path still carries packets, so it resets
// the bad-round streak: a slow path is degraded, not down.
//
// Carrier loss takes a WAN down at once; while the carrier is gone rounds
// are ignored (they could only fail). When it returns the WAN stays down and
// the probes decide again from empty streaks. The quality window keeps
// its rounds: a line that was lossy before a blink is likely lossy after.
//
// # Degraded
//
// Quality is judged over a sliding window of the last 20 rounds, per
// target probe:
//
//   - loss is the share of probes in the window that got no answer within
//     the probe timeout. A late answer amends its round in the window: the
//     probe was answered, only after the round's verdict. Counting it as
//     lost would report "loss 100%" for a path that loses nothing and would
//     punish slowness twice; slowness is what max_rtt is for.
//   - the RTT statistic is the median RTT of the answered probes in the
//     window, late answers included (without them a path slower than the
//     round deadline would show no RTT at all). The median ignores a few
//     spikes, so one slow answer does not degrade a WAN, yet it follows a
//     sustained change within half a window.
//
// An up WAN becomes degraded as soon as, with at least 5 rounds in the
// window, loss > max_loss or median RTT > max_rtt (where set). It returns to
// up only after the condition has been false for Up consecutive rounds, so a
// statistic hovering at the threshold does not flap. Down dominates
// degraded; a WAN coming back from down (or unknown) while the condition
// holds comes back degraded.
//
// # Flap damping
//
// Hysteresis alone lets a path that is alternately dead and alive for Up
// rounds at a time change state every Up rounds. So a WAN that has left
// down (for up, degraded or unknown) more than 3 times within 60 s needs
// twice Up consecutive good rounds to become up or degraded, and a carrier
// that returns then leaves it down, for the probes to decide. A path
// flapping every 300 ms thus makes at most ten transitions in a minute
// (fourteen when its carrier flaps), then stays down until it holds still.
package health

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/multiwan/multiwan/internal/config"
	"github.com/multiwan/multiwan/internal/plan"
	"github.com/multiwan/multiwan/internal/probe"
)

const (
	// windowRounds is how many rounds the quality statistics cover: 10 s at
	// the default interval, enough probes (40 with two targets) for a loss
	// percentage that 5 % random loss does not push past a 20 % threshold.
	windowRounds = 20
	// minWindowRounds is how many rounds the window needs before quality
	// may degrade a WAN: fewer give a statistic one probe can swing.
	minWindowRounds = 5
	// flapPeriod and flapLimit define flapping: more than flapLimit
	// recoveries from down within flapPeriod.
	flapPeriod = 60 * time.Second
	flapLimit  = 3
)

// Status is a WAN's health as shown by `multiwan status`.
type Status struct {
	State plan.State
	// Since is when State was entered (or the tracker made).
	Since time.Time
	// RTT is the median RTT of the answered probes in the window; zero when
	// none answered.
	RTT time.Duration
	// Loss is the share of unanswered probes in the window, 0..1.
	Loss float64
	// Carrier is the link's carrier as last reported; assumed present
	// until told otherwise.
	Carrier bool
	// LastRound is when the last round was observed; zero before the
	// first.
	LastRound time.Time
}

// Transition is a change of a WAN's state.
type Transition struct {
	WAN      string
	From, To plan.State
	At       time.Time
	// Cause says why, for the log and hooks, e.g. "3 rounds failed:
	// 203.0.113.20 timeout, 203.0.113.30 timeout".
	Cause string
}

// Tracker follows one WAN's health. It is not safe for concurrent use: the
// daemon owns it under its lock.
type Tracker struct {
	wan     string
	p       config.Probe
	state   plan.State
	since   time.Time
	carrier bool
	last    time.Time // last round observed

	good, bad int // consecutive good and bad rounds
	// fine counts consecutive rounds after which the quality condition
	// was false: the way out of degraded.
	fine int
	win  window
	// st is the window's statistics as of the last round or late report:
	// Status is read for every WAN after every round, so it is computed
	// once per change rather than once per read.
	st stats
	// recoveries are the times the WAN left down, oldest first, pruned to
	// flapPeriod.
	recoveries []time.Time
}

// NewTracker returns the tracker of a WAN probed as p, in state unknown
// since now. Up, Down and Reliability are taken as at least 1, 1 and 0.
func NewTracker(wan string, p config.Probe, now time.Time) *Tracker {
	p.Up = max(p.Up, 1)
	p.Down = max(p.Down, 1)
	p.Reliability = max(p.Reliability, 0)
	return &Tracker{wan: wan, p: p, state: plan.StateUnknown, since: now, carrier: true}
}

// Reliability is how many targets must answer for a round to be good.
func (t *Tracker) Reliability() int { return t.p.Reliability }

// Status returns the current state and statistics.
func (t *Tracker) Status() Status {
	return Status{State: t.state, Since: t.since, RTT: t.st.rtt, Loss: t.st.loss, Carrier: t.carrier, LastRound: t.last}
}

// Observe takes one probe round (or a late report) seen at now and returns
// the transition it caused, if any.
func (t *Tracker) Observe(r probe.Round, now time.Time) (Transition, bool) {
	if !t.carrier {
		return Transition{}, false
	}
	if r.Late {
		t.win.amend(r)
		t.st = t.win.stats()
		t.bad = 0
		return Transition{}, false
	}
	t.last = now
	t.win.add(r)
	t.st = t.win.stats()
	if r.Good(t.p.Reliability) {
		t.good++
		t.bad = 0
	} else {
		t.bad++
		t.good = 0
	}
	st := t.st
	poor, why := t.poor(st)
	if poor {
		t.fine = 0
	} else {
		t.fine++
	}

	if t.bad >= t.p.Down && t.state != plan.StateDown {
		return t.move(plan.StateDown, now, fmt.Sprintf("%d rounds failed: %s", t.bad, failures(r, t.p.Reliability)))
	}
	switch t.state {
	case plan.StateUnknown, plan.StateDown:
		need, damped := t.need(now)
		if t.good < need {
			return Transition{}, false
		}
		cause := fmt.Sprintf("%d rounds good", t.good)
		if st.rtt > 0 {
			cause += " (rtt " + ms(st.rtt) + ")"
		}
		if damped {
			cause += fmt.Sprintf("; flap damping: left down %d times in %.0fs", len(t.recoveries), flapPeriod.Seconds())
		}
		if poor {
			return t.move(plan.StateDegraded, now, cause+", but "+why)
		}
		return t.move(plan.StateUp, now, cause)
	case plan.StateUp:
		if poor {
			return t.move(plan.StateDegraded, now, why)
		}
	case plan.StateDegraded:
		if t.fine >= t.p.Up {
			return t.move(plan.StateUp, now, fmt.Sprintf("quality good for %d rounds: %s", t.fine, summary(st)))
		}
	}
	return Transition{}, false
}

// Carrier takes the link's carrier as reported by the kernel at now.
// Repeated reports of the same carrier change nothing.
func (t *Tracker) Carrier(up bool, now time.Time) (Transition, bool) {
	if up == t.carrier {
		return Transition{}, false
	}
	t.carrier = up
	// Whatever the streaks were building towards, the link under them
	// changed: the probes start over.
	t.good, t.bad, t.fine = 0, 0, 0
	if !up {
		if t.state == plan.StateDown {
			return Transition{}, false
		}
		return t.move(plan.StateDown, now, "carrier lost")
	}
	// The WAN stays down until its probes pass (Up good rounds, more when
	// damped): offering it traffic the moment its carrier returns would
	// make every blink of a flapping link a switch. The return counts as a
	// recovery for flap damping: a link whose carrier blinks is flapping.
	t.recoveries = append(t.recoveries, now)
	return Transition{}, false
}

// move enters state to at now (or at Since, should the caller's clock step
// back, so that Since never decreases).
func (t *Tracker) move(to plan.State, now time.Time, cause string) (Transition, bool) {
	at := now
	if at.Before(t.since) {
		at = t.since
	}
	tr := Transition{WAN: t.wan, From: t.state, To: to, At: at, Cause: cause}
	if t.state == plan.StateDown {
		t.recoveries = append(t.recoveries, at)
	}
	t.state, t.since = to, at
	return tr, true
}

// need returns how many consecutive good rounds bring the WAN out of down
// or unknown now, and whether flap damping raised it.
func (t *Tracker) need(now time.Time) (int, bool) {
	i := 0
	for i < len(t.recoveries) && now.Sub(t.recoveries[i]) >= flapPeriod {
		i++
	}
	t.recoveries = t.recoveries[i:]
	if len(t.recoveries) > flapLimit {
		return 2 * t.p.Up, true
	}
	return t.p.Up, false
}

// poor reports whether the window's quality is past a configured
// threshold, and says how.
func (t *Tracker) poor(st stats) (bool, string) {
	if st.rounds < minWindowRounds {
		return false, ""
	}
	var why []string
	if t.p.MaxLoss >= 0 && st.loss > t.p.MaxLoss {
		why = append(why, fmt.Sprintf("loss %s over %d rounds > max %s", pct(st.loss), st.rounds, pct(t.p.MaxLoss)))
	}
	if t.p.MaxRTT > 0 && st.rtt > t.p.MaxRTT {
		why = append(why, fmt.Sprintf("median rtt %s > max %s", ms(st.rtt), ms(t.p.MaxRTT)))
	}
	return len(why) > 0, strings.Join(why, "; ")
}

// summary describes the window's quality, for the way back to up.
func summary(st stats) string {
	s := fmt.Sprintf("loss %s over %d rounds", pct(st.loss), st.rounds)
	if st.rtt > 0 {
		s += ", median rtt " + ms(st.rtt)
	}
	return s
}

// failures lists a bad round's failed probes, e.g. "203.0.113.20 timeout,
// 203.0.113.30 timeout", and, when some targets did answer, how many
// against how many were needed.
func failures(r probe.Round, reliability int) string {
	var failed []string
	answered := 0
	for _, res := range r.Results {
		if res.OK {
			answered++
			continue
		}
		why := res.Err
		if why == "" {
			why = "no answer"
		}
		failed = append(failed, res.Target+" "+why)
	}
	if len(r.Results) == 0 {
		return "no target to probe"
	}
	s := strings.Join(failed, ", ")
	if answered > 0 {
		s += fmt.Sprintf(" (%d of %d answered, %d needed)", answered, len(r.Results), reliability)
	}
	return s
}

// pct formats a fraction as a percentage with at most one decimal: "35%",
// "2.5%".
func pct(f float64) string {
	return strconv.FormatFloat(math.Round(f*1000)/10, 'f', -1, 64) + "%"
}

// ms rounds a duration to what a reader of the log can use: "412ms",
// "1.2ms", "85µs".
func ms(d time.Duration) string {
	switch {
	case d >= 100*time.Millisecond:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	default:
		return d.Round(time.Microsecond).String()
	}
}

// window holds the probe outcomes of the last windowRounds rounds.
type window struct {
	rounds [windowRounds]sample
	next   int // where the next round goes
	n      int // rounds held
	// rtts is scratch space for stats.
	rtts []time.Duration
}

type sample struct {
	seq    uint64
	probes []probe.Result
}

// add puts a round into the window, replacing the oldest when full. The
// sample's slice is reused: the window allocates only while filling.
func (w *window) add(r probe.Round) {
	s := &w.rounds[w.next]
	s.seq = r.Seq
	s.probes = append(s.probes[:0], r.Results...)
	w.next = (w.next + 1) % windowRounds
	w.n = min(w.n+1, windowRounds)
}

// amend records a late report's answers in the round they belong to. A
// round that has already left the window is outside the statistics anyway.
func (w *window) amend(r probe.Round) {
	for k := 1; k <= w.n; k++ {
		s := &w.rounds[(w.next-k+windowRounds)%windowRounds]
		if s.seq != r.Seq {
			continue
		}
		for _, late := range r.Results {
			if !late.OK {
				continue
			}
			for i := range s.probes {
				if s.probes[i].Target == late.Target && !s.probes[i].OK {
					s.probes[i].OK, s.probes[i].RTT, s.probes[i].Err = true, late.RTT, ""
					break
				}
			}
		}
		return
	}
}

type stats struct {
	rounds int
	loss   float64
	rtt    time.Duration // median of answered probes; 0 when none
}

func (w *window) stats() stats {
	st := stats{rounds: w.n}
	var sent, lost int
	// At most windowRounds × targets values: small enough to sort each
	// round.
	rtts := w.rtts[:0]
	defer func() { w.rtts = rtts[:0] }()
	for i := range w.n {
		for _, p := range w.rounds[i].probes {
			sent++
			if p.OK {
				rtts = append(rtts, p.RTT)
			} else {
				lost++
			}
		}
	}
	if sent > 0 {
		st.loss = float64(lost) / float64(sent)
	}
	if n := len(rtts); n > 0 {
		slices.Sort(rtts)
		st.rtt = (rtts[(n-1)/2] + rtts[n/2]) / 2
	}
	return st
}
