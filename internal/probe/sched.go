package probe

import (
	"net/netip"
	"time"
)

const (
	// minFastInterval bounds the round rate while a failure is being
	// confirmed.
	minFastInterval = 10 * time.Millisecond
	// maxOutbox is how many reports may wait for the consumer before new
	// rounds are held back: a consumer that stops reading slows probing
	// down instead of growing memory.
	maxOutbox = 32
	// seqSpace is the number of distinct ICMP sequence numbers; a probe
	// still in flight when its number comes round again is given up.
	seqSpace = 1 << 16
)

// target is one thing a Run probes, with its RTT estimate.
type target struct {
	// name is Result.Target.
	name string
	// addr is where icmp probes go (and whence replies must come), with
	// the zone of the WAN's interface if it is link-local.
	addr netip.Addr
	// ap is the tcp or dns endpoint.
	ap netip.AddrPort
	// url is the http target; host is its host when that is an address.
	url  string
	host netip.Addr
	// gateway: addr is refreshed from Spec.Gateway every round.
	gateway bool
	est     rttEstimator
}

// round is a round from its start until it has been handed to the
// transport's owner.
type round struct {
	seq      uint64
	start    time.Time
	deadline time.Time
	results  []Result
	// done[i] is set once results[i] is final.
	done    []bool
	pending int
	judged  bool
	// delivered: the Round is in the outbox (or sent).
	delivered bool
	// late holds late answers that came while the round was judged but
	// not yet delivered (an earlier round was still open).
	late []Result
}

// flight is one probe waiting for its answer. Flights are only touched by
// the scheduler's goroutine; other goroutines refer to them by id.
type flight struct {
	id  uint64
	r   *round
	idx int
	t   *target
	// name is the Result.Target of the probe, kept here because the
	// round's results belong to the consumer once delivered.
	name string
	// addr is the address probed (icmp: the only accepted reply source).
	addr netip.Addr
	// from, when valid, is addr as the transport sees reply sources: a
	// link-local address with its zone as an interface index rather than
	// a name. The transport sets it when it sends.
	from    netip.Addr
	sent    time.Time
	expires time.Time
}

// event is an answer, from the ICMP reader or a dialing goroutine.
type event struct {
	// id names the flight (dialed probes).
	id uint64
	// icmp events name their flight by seq and must come from its addr.
	icmp bool
	seq  uint16
	src  netip.Addr
	// at is when the answer arrived, taken as close to the socket as
	// possible: the scheduler may see the event later.
	at  time.Time
	ok  bool
	err string
}

// transport sends probes of one method. Answers come back as events.
type transport interface {
	// send starts probe f without blocking; an error fails the probe at
	// once (e.g. "network is unreachable": no route with this mark).
	send(f *flight) error
	// close stops every goroutine of the transport and releases its
	// sockets; it returns when they are gone.
	close()
}

// scheduler is the single state machine of a Run: it starts rounds,
// matches answers to flights, judges rounds and queues reports in order.
// It never blocks and takes the time as an argument, so it can be driven
// by a test with a synthetic clock.
type scheduler struct {
	wan     string
	targets []*target
	gateway func() netip.Addr
	// iface is the zone of a link-local gateway.
	iface string
	tr    transport
	// clock gives each probe its send time (time.Now; tests fake it).
	clock                  func() time.Time
	interval, fastInterval time.Duration
	timeout                time.Duration
	// reliability decides fast confirmation, clamped to 1..len(targets)
	// so that a mistaken value cannot make it probe fast forever.
	reliability int

	seq uint64
	// nextStart is when the next round is due; lastScheduled is when the
	// previous one was due (rounds keep their rhythm despite timer lag).
	nextStart, lastScheduled time.Time
	// fast is set while the most recent judged round was not good.
	fast       bool
	lastJudged uint64

	// open holds started rounds not yet delivered, in seq order.
	open []*round
	// flights in flight by id, and in order of expiry (FIFO: they all live
	// for the same timeout). Answered flights leave the map at once and the
	// FIFO at their expiry.
	flights map[uint64]*flight
	fifo    []*flight
	nextID  uint64

	// outbox holds reports for the consumer, in order.
	outbox []Round
}

func newScheduler(spec Spec, targets []*target, tr transport, now time.Time) *scheduler {
	rel := min(max(spec.Reliability, 1), max(len(targets), 1))
	return &scheduler{
		wan:          spec.WAN,
		targets:      targets,
		gateway:      spec.Gateway,
		iface:        spec.Interface,
		tr:           tr,
		clock:        time.Now,
		interval:     spec.Interval,
		fastInterval: max(spec.Interval/4, minFastInterval),
		timeout:      spec.Timeout,
		reliability:  rel,
		nextStart:    now,
		flights:      make(map[uint64]*flight),
		nextID:       1,
	}
}

// step does what is due at now: expire flights, judge rounds whose
// deadline passed, start a round, move judged rounds to the outbox.
func (s *scheduler) step(now time.Time) {
	for len(s.fifo) > 0 && !s.fifo[0].expires.After(now) {
		f := s.fifo[0]
		s.fifo[0] = nil
		s.fifo = s.fifo[1:]
		if s.flights[f.id] == f {
			delete(s.flights, f.id)
		}
	}
	for _, r := range s.open {
		if !r.judged && !r.deadline.After(now) {
			s.judge(r)
		}
	}
	if len(s.outbox) < maxOutbox && !now.Before(s.nextStart) {
		s.startRound(now)
	}
	s.deliver()
}

// wake is when step must run next; zero when only an event can change
// anything.
func (s *scheduler) wake() time.Time {
	var w time.Time
	earlier := func(t time.Time) {
		if w.IsZero() || t.Before(w) {
			w = t
		}
	}
	if len(s.outbox) < maxOutbox {
		earlier(s.nextStart)
	}
	for _, r := range s.open {
		if !r.judged {
			earlier(r.deadline)
		}
	}
	if len(s.fifo) > 0 {
		earlier(s.fifo[0].expires)
	}
	return w
}

// startRound probes every target once.
func (s *scheduler) startRound(now time.Time) {
	gap := s.gap()
	// A round that starts late by more than a fraction of the gap (the
	// consumer held us back, the machine was busy) restarts the rhythm
	// from now rather than firing a burst of catch-up rounds.
	if now.Sub(s.nextStart) >= gap/4 {
		s.lastScheduled = now
	} else {
		s.lastScheduled = s.nextStart
	}
	s.nextStart = s.lastScheduled.Add(gap)

	s.seq++
	n := len(s.targets)
	r := &round{
		seq:     s.seq,
		start:   now,
		results: make([]Result, n),
		done:    make([]bool, n),
	}
	ests := make([]*rttEstimator, 0, n)
	for i, t := range s.targets {
		if t.gateway {
			a := probeAddr(s.gateway(), s.iface)
			if a != t.addr {
				// Another gateway is another path: its RTT is unknown.
				t.addr, t.est = a, rttEstimator{}
				t.name = "gateway"
				if a.IsValid() {
					t.name = a.String()
				}
			}
			if !a.IsValid() || needsZone(a) {
				r.results[i] = Result{Target: t.name, Err: "no gateway"}
				if a.IsValid() {
					r.results[i].Err = "link-local gateway and no interface"
				}
				r.done[i] = true
				continue
			}
		}
		ests = append(ests, &t.est)
	}
	r.deadline = now.Add(roundDeadline(ests, s.timeout))
	s.open = append(s.open, r)

	for i, t := range s.targets {
		if r.done[i] {
			continue
		}
		r.results[i].Target = t.name
		id := s.nextID
		s.nextID++
		// The ICMP sequence number is the id's low 16 bits: give up the
		// flight that used it last, so that no two live flights share it.
		if id > seqSpace {
			delete(s.flights, id-seqSpace)
		}
		sent := s.clock()
		f := &flight{id: id, r: r, idx: i, t: t, name: t.name, addr: t.addr, sent: sent, expires: sent.Add(s.timeout)}
		if err := s.tr.send(f); err != nil {
			r.results[i].Err = err.Error()
			r.done[i] = true
			continue
		}
		s.flights[id] = f
		s.fifo = append(s.fifo, f)
		r.pending++
	}
	if r.pending == 0 {
		s.judge(r)
	}
}

// gap is the time between two round starts.
func (s *scheduler) gap() time.Duration {
	if s.fast {
		return s.fastInterval
	}
	return s.interval
}

// judge closes round r: targets without an answer failed.
func (s *scheduler) judge(r *round) {
	for i := range r.results {
		if !r.done[i] {
			r.results[i].Err = "timeout"
			r.done[i] = true
		}
	}
	r.judged = true
	if r.seq <= s.lastJudged {
		// An older round judged late says nothing about the present.
		return
	}
	s.lastJudged = r.seq
	good := Round{Results: r.results}.Good(s.reliability)
	if s.fast == !good {
		return
	}
	// Fast confirmation: a failure is confirmed or refuted after a
	// quarter interval; back to the normal rhythm once a round is good.
	s.fast = !good
	s.nextStart = s.lastScheduled.Add(s.gap())
}

// deliver moves the judged rounds at the head of open to the outbox, each
// followed by the late answers it collected meanwhile.
func (s *scheduler) deliver() {
	for len(s.open) > 0 && s.open[0].judged {
		r := s.open[0]
		s.open[0] = nil
		s.open = s.open[1:]
		r.delivered = true
		s.outbox = append(s.outbox, Round{WAN: s.wan, Seq: r.seq, Start: r.start, Results: r.results})
		if len(r.late) > 0 {
			s.outbox = append(s.outbox, Round{WAN: s.wan, Seq: r.seq, Start: r.start, Results: r.late, Late: true})
			r.late = nil
		}
	}
}

// lookupSeq finds the live flight whose ICMP sequence number is seq: the
// most recent id with those low 16 bits.
func (s *scheduler) lookupSeq(seq uint16) *flight {
	last := s.nextID - 1
	back := uint64(uint16(last) - seq)
	if back >= last {
		return nil
	}
	return s.flights[last-back]
}

// replySource is the only source an echo reply to f may come from.
func (f *flight) replySource() netip.Addr {
	if f.from.IsValid() {
		return f.from
	}
	return f.addr
}

// handle takes one answer. Anything that does not match a flight in
// flight (unknown, expired or already answered probe, wrong source) is
// ignored.
func (s *scheduler) handle(ev event) {
	var f *flight
	if ev.icmp {
		f = s.lookupSeq(ev.seq)
		if f == nil || f.replySource() != ev.src {
			return
		}
	} else {
		f = s.flights[ev.id]
		if f == nil {
			return
		}
	}
	delete(s.flights, f.id)
	if ev.at.After(f.expires) {
		return
	}
	rtt := max(ev.at.Sub(f.sent), 0)
	r := f.r
	if ev.ok && f.t.addr == f.addr {
		// Late answers count too: they are how the estimate catches up
		// with a path that became slower.
		f.t.est.update(rtt)
	}
	res := Result{Target: f.name, OK: ev.ok, Err: ev.err}
	if ev.ok {
		res.RTT = rtt
	}
	if !r.judged {
		if !ev.at.After(r.deadline) {
			r.results[f.idx] = res
			r.done[f.idx] = true
			r.pending--
			if r.pending == 0 {
				s.judge(r)
				s.deliver()
			}
			return
		}
		// The deadline passed before the answer came; the timer just
		// has not fired yet.
		s.judge(r)
	}
	if !ev.ok {
		// A failure after the deadline tells nothing the round did not.
		return
	}
	s.addLate(r, res)
	s.deliver()
}

// addLate reports a late answer for a judged round.
func (s *scheduler) addLate(r *round, res Result) {
	if !r.delivered {
		r.late = append(r.late, res)
		return
	}
	if n := len(s.outbox); n > 0 && s.outbox[n-1].Late && s.outbox[n-1].Seq == r.seq {
		// Not handed out yet: one report per round is enough.
		s.outbox[n-1].Results = append(s.outbox[n-1].Results, res)
		return
	}
	s.outbox = append(s.outbox, Round{WAN: s.wan, Seq: r.seq, Start: r.start, Results: []Result{res}, Late: true})
}

// pop removes the report just sent.
func (s *scheduler) pop() {
	s.outbox[0] = Round{}
	s.outbox = s.outbox[1:]
}
