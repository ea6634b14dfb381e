package probe

import (
	"container/heap"
	"net/netip"
	"time"
)

// Path is a simulated network path for Simulate: given the target and the
// time a probe is sent, it says whether the probe is answered and after
// how long.
type Path func(target netip.Addr, sent time.Time) (rtt time.Duration, ok bool)

// SimStats counts what a simulation did.
type SimStats struct {
	Rounds, Late, Probes int
}

// Simulate runs the scheduler of spec (icmp targets) on a synthetic clock
// from start for d, answering its probes as path says, and hands every
// report to observe with the time it was made, in order, as Run's consumer
// would see them. It is the real scheduler: only the sockets and the
// clock are simulated.
func Simulate(spec Spec, start time.Time, d time.Duration, path Path, observe func(Round, time.Time)) SimStats {
	sim := newSim(spec, start, path)
	var st SimStats
	sim.run(start.Add(d), func(r Round, at time.Time) {
		if r.Late {
			st.Late++
		} else {
			st.Rounds++
		}
		observe(r, at)
	})
	st.Probes = sim.probes
	return st
}

// sim drives a scheduler with a synthetic clock and a simulated path.
type sim struct {
	s    *scheduler
	tr   *recordingTransport
	path Path
	now  time.Time
	// answers are pending replies, earliest first.
	answers answerHeap
	// probes counts the probes sent.
	probes int
}

type recordingTransport struct{ sent []*flight }

func (r *recordingTransport) send(f *flight) error { r.sent = append(r.sent, f); return nil }
func (r *recordingTransport) close()               {}
func (r *recordingTransport) poll(func(event))     {}

type answer struct {
	at time.Time
	f  *flight
}

type answerHeap []answer

func (h answerHeap) Len() int           { return len(h) }
func (h answerHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h answerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *answerHeap) Push(x any)        { *h = append(*h, x.(answer)) }
func (h *answerHeap) Pop() any {
	old := *h
	a := old[len(old)-1]
	*h = old[:len(old)-1]
	return a
}

func newSim(spec Spec, start time.Time, path Path) *sim {
	if spec.WAN == "" {
		spec.WAN = "sim"
	}
	_, targets, err := parseSpec(spec)
	if err != nil {
		panic(err)
	}
	tr := &recordingTransport{}
	sm := &sim{tr: tr, path: path, now: start}
	sm.s = newScheduler(spec, targets, tr, start)
	sm.s.epoch = start
	sm.s.clock = func() time.Time { return sm.now }
	return sm
}

// run advances the clock event by event until end: the scheduler's own
// wake-ups and the answers, as Run's loop does (answers first, then step).
func (sm *sim) run(end time.Time, observe func(Round, time.Time)) {
	flush := func() {
		for len(sm.s.outbox) > 0 {
			observe(sm.s.outbox[0], sm.now)
			sm.s.pop()
		}
	}
	sm.s.step(sm.now)
	for {
		sm.schedule()
		flush()
		next := sm.s.wake()
		reply := len(sm.answers) > 0 && (next.IsZero() || !sm.answers[0].at.After(next))
		if reply {
			next = sm.answers[0].at
		}
		if next.IsZero() || next.After(end) {
			return
		}
		if next.After(sm.now) {
			sm.now = next
		}
		if reply {
			a := heap.Pop(&sm.answers).(answer)
			sm.s.handle(event{icmp: true, seq: uint16(a.f.id), src: a.f.addr, at: a.at, ok: true})
		}
		sm.s.step(sm.now)
	}
}

// schedule asks the path about the probes sent since the last call.
func (sm *sim) schedule() {
	for i, f := range sm.tr.sent {
		if rtt, ok := sm.path(f.addr, f.sent); ok {
			heap.Push(&sm.answers, answer{at: f.sent.Add(rtt), f: f})
		}
		sm.tr.sent[i] = nil
	}
	sm.probes += len(sm.tr.sent)
	sm.tr.sent = sm.tr.sent[:0]
}
