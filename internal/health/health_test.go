package health

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/multiwan/multiwan/internal/config"
	"github.com/multiwan/multiwan/internal/plan"
	"github.com/multiwan/multiwan/internal/probe"
)

var (
	targets = []string{"203.0.113.20", "203.0.113.30"}
	t0      = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
)

// defaults is a probe config as config.Parse fills it in when the file
// says nothing.
func defaults() config.Probe {
	return config.Probe{
		Method: config.DefaultProbeMethod, Targets: targets,
		Interval: config.DefaultProbeInterval, Timeout: config.DefaultProbeTimeout,
		Down: config.DefaultProbeDown, Up: config.DefaultProbeUp, Reliability: config.DefaultReliability,
		MaxLoss: -1,
	}
}

// sim drives a Tracker with synthetic rounds one interval apart and checks,
// at every step, that transitions chain and agree with Status.
type sim struct {
	t   *testing.T
	tr  *Tracker
	p   config.Probe
	now time.Time
	seq uint64
	trs []Transition
}

func newSim(t *testing.T, p config.Probe) *sim {
	return &sim{t: t, tr: NewTracker("isp1", p, t0), p: p, now: t0}
}

func (s *sim) record(tr Transition, changed bool, from plan.State) {
	s.t.Helper()
	st := s.tr.Status()
	if !changed {
		if st.State != from {
			s.t.Fatalf("state changed from %s to %s without a transition", from, st.State)
		}
		return
	}
	if tr.From != from || tr.To != st.State || tr.WAN != "isp1" || tr.Cause == "" || !tr.At.Equal(st.Since) {
		s.t.Fatalf("transition %+v does not match the tracker (was %s, now %+v)", tr, from, st)
	}
	s.trs = append(s.trs, tr)
}

// round observes one round with the given per-target RTTs; a negative RTT
// is a timeout.
func (s *sim) round(rtts ...time.Duration) {
	s.t.Helper()
	s.now = s.now.Add(s.p.Interval)
	s.seq++
	r := probe.Round{WAN: "isp1", Seq: s.seq, Start: s.now}
	for i, d := range rtts {
		res := probe.Result{Target: targets[i], OK: d >= 0, RTT: d}
		if d < 0 {
			res.RTT, res.Err = 0, "timeout"
		}
		r.Results = append(r.Results, res)
	}
	from := s.tr.Status().State
	tr, changed := s.tr.Observe(r, s.now)
	s.record(tr, changed, from)
}

// late reports that both targets answered the last round after all.
func (s *sim) late(rtt time.Duration) {
	s.t.Helper()
	r := probe.Round{WAN: "isp1", Seq: s.seq, Late: true}
	for _, tg := range targets {
		r.Results = append(r.Results, probe.Result{Target: tg, OK: true, RTT: rtt})
	}
	from := s.tr.Status().State
	tr, changed := s.tr.Observe(r, s.now.Add(s.p.Interval/2))
	s.record(tr, changed, from)
}

func (s *sim) carrier(up bool) {
	s.t.Helper()
	from := s.tr.Status().State
	tr, changed := s.tr.Carrier(up, s.now)
	s.record(tr, changed, from)
}

const (
	fast  = 10 * time.Millisecond
	slow  = 400 * time.Millisecond
	lost  = -1
	tardy = 800 * time.Millisecond // answers past the round deadline, within the timeout
)

// play runs a script, one character per event:
//
//	g  both targets answer in 10ms       b  both time out
//	1  only the first target answers     s  both answer in 400ms
//	L  both time out, then answer late   c  carrier lost    C  carrier back
//
// Spaces are for the reader.
func (s *sim) play(script string) {
	s.t.Helper()
	for _, c := range script {
		switch c {
		case 'g':
			s.round(fast, fast)
		case 'b':
			s.round(lost, lost)
		case '1':
			s.round(fast, lost)
		case 's':
			s.round(slow, slow)
		case 'L':
			s.round(lost, lost)
			s.late(tardy)
		case 'c':
			s.carrier(false)
		case 'C':
			s.carrier(true)
		case ' ':
		default:
			s.t.Fatalf("bad script character %q", c)
		}
	}
}

func (s *sim) states() string {
	var out []string
	for _, tr := range s.trs {
		out = append(out, string(tr.To))
	}
	return strings.Join(out, " ")
}

func TestTransitions(t *testing.T) {
	tests := []struct {
		name   string
		conf   func(*config.Probe)
		script string
		want   string // the states entered, in order
		cause  string // if set, the last transition's cause
	}{
		{name: "clean failure", script: "ggg bbb", want: "up down",
			cause: "3 rounds failed: 203.0.113.20 timeout, 203.0.113.30 timeout"},
		{name: "two bad rounds are not enough", script: "ggg bb ggg bb", want: "up"},
		{name: "recovery", script: "ggg bbb gg g", want: "up down up", cause: "3 rounds good (rtt 10ms)"},
		{name: "unknown to down", script: "bbb", want: "down"},
		{name: "down needs consecutive good rounds", script: "bbb gbgbgb ggbgg", want: "down"},
		{name: "alternating from unknown", script: strings.Repeat("gb", 200), want: ""},
		{name: "alternating from up", script: "ggg" + strings.Repeat("bg", 200), want: "up"},
		{name: "alternating from down", script: "bbb" + strings.Repeat("gb", 200), want: "down"},
		{name: "one target dead, reliability 1", script: strings.Repeat("1", 30), want: "up"},
		{name: "one target dead, reliability 2", conf: func(p *config.Probe) { p.Reliability = 2 },
			script: "ggg 111", want: "up down",
			cause: "3 rounds failed: 203.0.113.30 timeout (1 of 2 answered, 2 needed)"},
		{name: "carrier loss and return", script: "ggg c C ggg", want: "up down up"},
		{name: "carrier loss is immediate", script: "ggg c", want: "up down", cause: "carrier lost"},
		{name: "carrier back: still down until the probes pass", script: "ggg c C gg", want: "up down"},
		{name: "carrier back, probes pass", script: "ggg c C ggg", want: "up down up"},
		{name: "rounds ignored without carrier", script: "ggg c bbbbbb gggggg", want: "up down"},
		{name: "repeated carrier reports", script: "ggg cc CC ggg", want: "up down up"},
		{name: "carrier back, probes fail", script: "ggg c C bbb", want: "up down"},
		{name: "carrier lost while down", script: "bbb c C", want: "down"},
		{name: "late answers reset the bad streak", script: "ggg bL bL bL bL b", want: "up"},
		{name: "late answers come too late", script: "ggg bbL", want: "up down"},
		{name: "late is not a good round", script: "bbb LLLLLL", want: "down"},
		{name: "without late answers", script: "ggg bbb", want: "up down"},
		{name: "slow targets", conf: func(p *config.Probe) { p.MaxRTT = 300 * time.Millisecond },
			script: "ggg sss s", want: "up degraded", cause: "median rtt 400ms > max 300ms"},
		{name: "slow targets and back", conf: func(p *config.Probe) { p.MaxRTT = 300 * time.Millisecond },
			script: "ggg ssss" + strings.Repeat("g", 20), want: "up degraded up",
			cause: "quality good for 3 rounds: loss 0% over 10 rounds, median rtt 10ms"},
		{name: "slow late answers degrade, not down", conf: func(p *config.Probe) { p.MaxRTT = 500 * time.Millisecond },
			script: "ggg LLLLLLLLLL", want: "up degraded", cause: "median rtt 800ms > max 500ms"},
		{name: "one slow spike is not degraded", conf: func(p *config.Probe) { p.MaxRTT = 300 * time.Millisecond },
			script: "ggggg s ggggg s ggggg", want: "up"},
		{name: "too few rounds to judge", conf: func(p *config.Probe) { p.MaxRTT = 300 * time.Millisecond },
			script: "ssss", want: "up"},
		{name: "judged from the fifth round", conf: func(p *config.Probe) { p.MaxRTT = 300 * time.Millisecond },
			script: "sss s s", want: "up degraded"},
		{name: "from unknown straight to degraded", conf: func(p *config.Probe) { p.Up = 5; p.MaxRTT = 300 * time.Millisecond },
			script: "sssss", want: "degraded", cause: "5 rounds good (rtt 400ms), but median rtt 400ms > max 300ms"},
		{name: "loss 30% over max 20%", conf: func(p *config.Probe) { p.MaxLoss = 0.2 },
			script: "gggg" + strings.Repeat("1g11g1g11g", 2), want: "up degraded",
			cause: "loss 20.8% over 12 rounds > max 20%"},
		{name: "loss 30% steady", conf: func(p *config.Probe) { p.MaxLoss = 0.2 },
			script: "gggggggggggggggggggg" + strings.Repeat("1g11g1g11g", 4), want: "up degraded",
			cause: "loss 22.5% over 20 rounds > max 20%"},
		{name: "loss 15% under max 20%", conf: func(p *config.Probe) { p.MaxLoss = 0.2 },
			script: "ggg" + strings.Repeat("1gg1ggg1gg", 10), want: "up"},
		{name: "back from down degraded", conf: func(p *config.Probe) { p.MaxLoss = 0.2 },
			script: "ggg bbb ggg", want: "up degraded down degraded",
			cause: "3 rounds good (rtt 10ms), but loss 33.3% over 9 rounds > max 20%"},
		{name: "down dominates degraded", conf: func(p *config.Probe) { p.MaxLoss = 0.2 },
			script: "ggggg 1111 bbb", want: "up degraded down"},
		// The median drops below the threshold in the 5th fast round;
		// up follows two rounds later.
		{name: "degraded needs Up fine rounds to leave", conf: func(p *config.Probe) { p.MaxRTT = 300 * time.Millisecond },
			script: "sssss gggg g g", want: "up degraded"},
		{name: "degraded left after Up fine rounds", conf: func(p *config.Probe) { p.MaxRTT = 300 * time.Millisecond },
			script: "sssss gggg g g g", want: "up degraded up"},
		{name: "flap damping", conf: func(p *config.Probe) { p.Interval = 100 * time.Millisecond },
			script: strings.Repeat("ggg bbb ", 8) + "ggg", want: "up down up down up down up down up down"},
		{name: "flap damping needs twice Up", conf: func(p *config.Probe) { p.Interval = 100 * time.Millisecond },
			script: strings.Repeat("ggg bbb ", 8) + "gggggg", want: "up down up down up down up down up down up",
			cause: "6 rounds good (rtt 10ms); flap damping: left down 4 times in 60s"},
		{name: "flapping carrier", conf: func(p *config.Probe) { p.Interval = 100 * time.Millisecond },
			script: strings.Repeat("c C g ", 10) + "ggg",
			want:   "down"},
		{name: "flapping carrier, then steady", conf: func(p *config.Probe) { p.Interval = 100 * time.Millisecond },
			script: strings.Repeat("c C g ", 10) + "gggggg",
			want:   "down up"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := defaults()
			if tt.conf != nil {
				tt.conf(&p)
			}
			s := newSim(t, p)
			s.play(tt.script)
			if got := s.states(); got != tt.want {
				t.Fatalf("states %q, want %q\ntransitions: %+v", got, tt.want, s.trs)
			}
			if tt.cause != "" {
				if got := s.trs[len(s.trs)-1].Cause; got != tt.cause {
					t.Errorf("cause %q, want %q", got, tt.cause)
				}
			}
		})
	}
}

func TestDampingExpires(t *testing.T) {
	p := defaults()
	p.Interval = 100 * time.Millisecond
	s := newSim(t, p)
	s.play(strings.Repeat("ggg bbb ", 5))
	if got, want := s.states(), "up down up down up down up down up down"; got != want {
		t.Fatalf("states %q, want %q", got, want)
	}
	// A minute after the first recovery only three remain in the period:
	// Up good rounds are enough again.
	s.now = t0.Add(61 * time.Second)
	s.play("ggg")
	if st := s.tr.Status().State; st != plan.StateUp {
		t.Fatalf("state %s after damping expired, want up", st)
	}
}

func TestStatus(t *testing.T) {
	p := defaults()
	s := newSim(t, p)
	st := s.tr.Status()
	if st.State != plan.StateUnknown || !st.Since.Equal(t0) || !st.Carrier || !st.LastRound.IsZero() || st.RTT != 0 || st.Loss != 0 {
		t.Fatalf("new tracker status %+v", st)
	}
	s.play("ggg 1")
	st = s.tr.Status()
	if st.State != plan.StateUp || !st.Since.Equal(t0.Add(3*p.Interval)) || !st.LastRound.Equal(t0.Add(4*p.Interval)) {
		t.Fatalf("status %+v", st)
	}
	if st.RTT != fast || st.Loss != 1.0/8 {
		t.Fatalf("rtt %v loss %v, want %v and 0.125", st.RTT, st.Loss, fast)
	}
	s.play("c")
	if st := s.tr.Status(); st.Carrier || st.State != plan.StateDown {
		t.Fatalf("status after carrier loss %+v", st)
	}
}

func TestWindowSlides(t *testing.T) {
	p := defaults()
	s := newSim(t, p)
	s.play(strings.Repeat("b", windowRounds))
	if l := s.tr.Status().Loss; l != 1 {
		t.Fatalf("loss %v, want 1", l)
	}
	s.play(strings.Repeat("g", windowRounds/2))
	if l := s.tr.Status().Loss; l != 0.5 {
		t.Fatalf("loss %v, want 0.5", l)
	}
	s.play(strings.Repeat("g", windowRounds/2))
	if st := s.tr.Status(); st.Loss != 0 || st.RTT != fast {
		t.Fatalf("status %+v, want no loss, rtt %v", st, fast)
	}
	// Six rounds in ten lose one probe of two: 30%.
	s.play(strings.Repeat("1g11g1g11g", windowRounds/10))
	if l := s.tr.Status().Loss; l != 0.3 {
		t.Fatalf("loss %v, want 0.3", l)
	}
}

func TestLateAmendsItsRound(t *testing.T) {
	s := newSim(t, defaults())
	s.play("ggg")
	s.round(fast, lost)
	s.round(lost, lost)
	// A late answer for the round before last fills only that round's
	// missing probe.
	tr, changed := s.tr.Observe(probe.Round{WAN: "isp1", Seq: s.seq - 1, Late: true,
		Results: []probe.Result{{Target: targets[1], OK: true, RTT: tardy}}}, s.now)
	if changed {
		t.Fatalf("late report made a transition: %+v", tr)
	}
	st := s.tr.Status()
	if st.Loss != 2.0/10 {
		t.Fatalf("loss %v, want 0.2", st.Loss)
	}
	// Answers to rounds outside the window change nothing.
	s.tr.Observe(probe.Round{Seq: 999, Late: true, Results: []probe.Result{{Target: targets[0], OK: true, RTT: tardy}}}, s.now)
	if got := s.tr.Status().Loss; got != st.Loss {
		t.Fatalf("unmatched late report changed loss to %v", got)
	}
}

// TestRandomLoss replays 100,000 rounds at 5% independent loss per probe
// with the default settings: a WAN must not go down by chance (a round is
// bad when both probes are lost, 0.05² = 0.25%; three bad rounds in a row
// about 1.6e-8).
func TestRandomLoss(t *testing.T) {
	const rounds = 100_000
	for _, tc := range []struct {
		name    string
		maxLoss float64
		limit   int // most transitions allowed
	}{
		{"defaults", -1, 1},
		// A 40-probe window at 5% loss passes 20% (9 lost) now and
		// then; allow one such excursion (degraded and back) per
		// 10,000 rounds.
		{"max_loss 20%", 0.2, 1 + 2*rounds/10_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := defaults()
			p.MaxLoss = tc.maxLoss
			rng := rand.New(rand.NewPCG(1, 2))
			s := newSim(t, p)
			rtts := make([]time.Duration, len(targets))
			for range rounds {
				for i := range rtts {
					rtts[i] = time.Duration(8+rng.IntN(5)) * time.Millisecond
					if rng.Float64() < 0.05 {
						rtts[i] = lost
					}
				}
				s.round(rtts...)
			}
			counts := map[plan.State]int{}
			for _, tr := range s.trs {
				counts[tr.To]++
			}
			t.Logf("%d rounds at 5%% loss: %d transitions (%d down, %d degraded, %d up)",
				rounds, len(s.trs), counts[plan.StateDown], counts[plan.StateDegraded], counts[plan.StateUp])
			if counts[plan.StateDown] > 0 || len(s.trs) > tc.limit {
				t.Fatalf("false alarms: %+v", s.trs)
			}
			if s.trs[0].To != plan.StateUp {
				t.Fatalf("first transition %+v, want up", s.trs[0])
			}
		})
	}
}

// TestFlapping300ms flaps a path or a link every 300 ms. Without damping
// every flap would be one or two transitions (30 to 60 in the first 10 s);
// with it the WAN stays down after four recoveries, for the rest of the
// minute.
func TestFlapping300ms(t *testing.T) {
	const (
		flap     = 300 * time.Millisecond
		duration = flapPeriod
	)
	alive := func(at time.Duration) bool { return (at/flap)%2 == 0 }
	for _, tc := range []struct {
		name     string
		interval time.Duration
		carrier  bool // the link's carrier flaps, not only the path
	}{
		{"path, 100ms interval", 100 * time.Millisecond, false},
		{"path, 500ms interval", 500 * time.Millisecond, false},
		{"carrier, 100ms interval", 100 * time.Millisecond, true},
		{"carrier, 500ms interval", 500 * time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := defaults()
			p.Interval = tc.interval
			s := newSim(t, p)
			// Events in time order: rounds every interval, carrier
			// changes every flap; a carrier change at the same instant
			// as a round comes first.
			nextRound, nextFlap := time.Duration(0), flap
			for nextRound < duration {
				if tc.carrier && nextFlap <= nextRound {
					s.now = t0.Add(nextFlap)
					s.carrier(alive(nextFlap))
					nextFlap += flap
					continue
				}
				s.now = t0.Add(nextRound - p.Interval) // round() adds one interval
				if alive(nextRound) {
					s.round(fast, fast)
				} else {
					s.round(lost, lost)
				}
				nextRound += p.Interval
			}
			first := 0
			for _, tr := range s.trs {
				if tr.At.Sub(t0) < 10*time.Second {
					first++
				}
			}
			t.Logf("%d transitions in the first 10s, %d in %s: %s", first, len(s.trs), duration, s.states())
			// At most: the first verdict and the first down, then for
			// each of flapLimit+1 recoveries a way out of down
			// (through unknown too when the carrier returns) and back
			// down.
			limit := 2 + 2*(flapLimit+1)
			if tc.carrier {
				limit += flapLimit + 1
			}
			if len(s.trs) > limit {
				t.Fatalf("%d transitions in %s, want at most %d", len(s.trs), duration, limit)
			}
			if st := s.tr.Status().State; st != plan.StateDown {
				t.Fatalf("flapping WAN ends %s, want down", st)
			}
		})
	}
}

// TestRandomSequences replays random rounds, late reports and carrier
// events, with random settings, and checks the invariants that the daemon
// and `status` rely on.
func TestRandomSequences(t *testing.T) {
	valid := map[plan.State]bool{plan.StateUp: true, plan.StateDegraded: true, plan.StateDown: true, plan.StateUnknown: true}
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 7))
		p := defaults()
		p.Up, p.Down = 1+rng.IntN(5), 1+rng.IntN(5)
		p.Reliability = rng.IntN(4)
		if rng.IntN(2) == 0 {
			p.MaxLoss = rng.Float64() * 0.5
		}
		if rng.IntN(2) == 0 {
			p.MaxRTT = time.Duration(1+rng.IntN(100)) * time.Millisecond
		}
		now := t0
		tr := NewTracker("isp1", p, now)
		prev := tr.Status()
		var seq uint64
		for i := range 2000 {
			// Mostly forward in time, sometimes the same instant,
			// rarely a step back (a clock the caller got wrong).
			now = now.Add(time.Duration(rng.IntN(300)-10) * time.Millisecond)
			var got Transition
			var changed bool
			switch k := rng.IntN(20); {
			case k == 0:
				got, changed = tr.Carrier(rng.IntN(2) == 0, now)
			case k == 1:
				r := probe.Round{Seq: seq - uint64(rng.IntN(3)), Late: true}
				r.Results = append(r.Results, probe.Result{Target: targets[rng.IntN(2)], OK: true,
					RTT: time.Duration(rng.IntN(2000)) * time.Millisecond})
				got, changed = tr.Observe(r, now)
			default:
				seq++
				r := probe.Round{Seq: seq, Start: now}
				for _, tg := range targets {
					ok := rng.IntN(3) > 0
					r.Results = append(r.Results, probe.Result{Target: tg, OK: ok,
						RTT: time.Duration(rng.IntN(200)) * time.Millisecond})
				}
				got, changed = tr.Observe(r, now)
			}
			st := tr.Status()
			switch {
			case !valid[st.State]:
				t.Fatalf("seed %d step %d: state %q", seed, i, st.State)
			case st.Since.Before(prev.Since):
				t.Fatalf("seed %d step %d: since went back from %v to %v", seed, i, prev.Since, st.Since)
			case changed && (got.From != prev.State || got.To != st.State || got.From == got.To || !got.At.Equal(st.Since) || got.Cause == ""):
				t.Fatalf("seed %d step %d: transition %+v after %s, status %+v", seed, i, got, prev.State, st)
			case !changed && (st.State != prev.State || !st.Since.Equal(prev.Since)):
				t.Fatalf("seed %d step %d: state moved without a transition: %+v → %+v", seed, i, prev, st)
			case !st.Carrier && st.State != plan.StateDown:
				t.Fatalf("seed %d step %d: no carrier but %s", seed, i, st.State)
			case st.Loss < 0 || st.Loss > 1 || st.RTT < 0:
				t.Fatalf("seed %d step %d: statistics %+v", seed, i, st)
			}
			prev = st
		}
	}
}
