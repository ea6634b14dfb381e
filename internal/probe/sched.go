package probe

import (
	"net/netip"
	"slices"
	"time"
)

const (
	// minConfirmGap is the least time between the starts of two
	// confirmation rounds (see scheduler.gap).
	minConfirmGap = 5 * time.Millisecond
	// confirmDivisor: confirmation rounds start at least Interval /
	// confirmDivisor apart.
	confirmDivisor = 10
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
	// judgedAt is when the round was judged: its last answer, or its
	// deadline.
	judgedAt time.Time
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
	// poll hands fn the answers already waiting in the transport's
	// sockets, without blocking, each with the time the kernel received
	// it. The scheduler calls it before it judges a round at its
	// deadline: an answer that arrived in time then counts even when the
	// process was too busy to read it before the deadline passed.
	poll(fn func(event))
	// close stops every goroutine of the transport and releases its
	// sockets; it returns when they are gone.
	close()
}

// verdict is what the scheduler believes the tracker concluded: it mirrors
// the hysteresis (Spec.Down bad rounds in a row make down, Spec.Up good
// ones up) so that it knows when a streak is being confirmed.
type verdict uint8

const (
	verdictUnknown verdict = iota
	verdictUp
	verdictDown
)

// scheduler is the single state machine of a Run: it starts rounds,
// matches answers to flights, judges rounds and queues reports in order.
// It never blocks and takes the time as an argument, so it can be driven
// by a test with a synthetic clock.
//
// Rhythm: a round starts every interval, at the instants of a grid that
// all schedulers of the process share (see rhythmEpoch), while the latest
// rounds agree with the verdict. When they disagree (a bad round while
// up, a good one while down, any round while unknown) the scheduler
// confirms: the next round starts as soon as the latest one is judged and
// delivered, but no sooner than gap after it started, until the streak
// reaches its threshold (the verdict changes) or a round agrees again
// (the streak is broken); then the normal rhythm resumes at the next
// instant of the grid. Rounds stay distinct and consecutive: a
// confirmation round starts only once the previous round's outcome is
// known.
type scheduler struct {
	wan     string
	targets []*target
	gateway func() netip.Addr
	// iface is the zone of a link-local gateway.
	iface string
	tr    transport
	// clock gives each probe its send time (time.Now; tests fake it).
	clock         func() time.Time
	interval, gap time.Duration
	timeout       time.Duration
	// reliability decides whether a round is good, clamped to
	// 1..len(targets) so that a mistaken value cannot make it probe fast
	// forever; down and up are the hysteresis thresholds (at least 1).
	reliability, down, up int

	seq uint64
	// epoch anchors the rhythm: rounds at the normal rhythm start at
	// epoch + k×interval (see onGrid).
	epoch time.Time
	// nextStart is when the next round is due; lastStart is when the
	// latest round started.
	nextStart, lastStart time.Time
	// hold: a confirmation round waits for the latest round's outcome.
	hold bool

	// The mirror of the hysteresis, fed in Seq order as rounds are
	// delivered: the verdict, the good and bad streaks (a late report
	// resets the bad one, as it does in the tracker), and burst, the
	// confirmation rounds started in a row.
	verdict   verdict
	good, bad int
	burst     int

	// open holds started rounds not yet delivered, in seq order.
	open []*round
	// flights in flight by id, and in order of expiry (FIFO: they all live
	// for the same timeout). Answered flights leave the map at once;
	// expired ones leave both at the next step, without a wake-up of
	// their own: an answer after its flight's expiry is dropped anyway.
	flights map[uint64]*flight
	fifo    []*flight
	nextID  uint64
	// ests is scratch space for startRound.
	ests []*rttEstimator

	// outbox holds reports for the consumer, in order.
	outbox []Round
}

func newScheduler(spec Spec, targets []*target, tr transport, now time.Time) *scheduler {
	rel := min(max(spec.Reliability, 1), max(len(targets), 1))
	return &scheduler{
		wan:         spec.WAN,
		targets:     targets,
		gateway:     spec.Gateway,
		iface:       spec.Interface,
		tr:          tr,
		clock:       time.Now,
		interval:    spec.Interval,
		gap:         confirmGap(spec.Interval),
		timeout:     spec.Timeout,
		reliability: rel,
		down:        threshold(spec.Down),
		up:          threshold(spec.Up),
		epoch:       rhythmEpoch,
		nextStart:   now,
		flights:     make(map[uint64]*flight),
		nextID:      1,
		ests:        make([]*rttEstimator, 0, len(targets)),
	}
}

// confirmGap is the least time between the starts of two confirmation
// rounds: Interval/10, at least minConfirmGap, at most Interval. Rounds a
// few microseconds apart would test the same instant of the path; this
// spreads `down` rounds over at least (down-1)×gap.
func confirmGap(interval time.Duration) time.Duration {
	return min(max(interval/confirmDivisor, minConfirmGap), interval)
}

// rhythmEpoch is the origin of every Run's rhythm in this process: the
// rounds of all WANs with the same interval start together, so that one
// wake-up of the process serves them all rather than one each (at 4 WANs
// × 10 Hz, wake-ups, not probes, are most of the daemon's CPU time). It is
// the time the process started, not a round instant of the wall clock, so
// that routers across the internet do not probe a shared target in
// lockstep.
var rhythmEpoch = time.Now()

// onGrid returns the latest instant at or before t of the rhythm:
// epoch + k×interval.
func (s *scheduler) onGrid(t time.Time) time.Time {
	off := t.Sub(s.epoch) % s.interval
	if off < 0 {
		off += s.interval
	}
	return t.Add(-off)
}

// threshold is a Spec.Down or Spec.Up as the scheduler uses it: 0 (not
// given) is multiwan's default, 3.
func threshold(n int) int {
	if n <= 0 {
		return 3
	}
	return n
}

// step does what is due at now: drop expired flights, judge rounds whose
// deadline passed, deliver judged rounds, start a round.
func (s *scheduler) step(now time.Time) {
	for len(s.fifo) > 0 && !s.fifo[0].expires.After(now) {
		f := s.fifo[0]
		s.fifo[0] = nil
		s.fifo = s.fifo[1:]
		if s.flights[f.id] == f {
			delete(s.flights, f.id)
		}
	}
	if slices.ContainsFunc(s.open, func(r *round) bool { return !r.judged && !r.deadline.After(now) }) {
		// Only a round some target has not answered in time gets here:
		// the socket is read once more before it is judged.
		s.tr.poll(s.handle)
	}
	for _, r := range s.open {
		if !r.judged && !r.deadline.After(now) {
			s.judge(r, now)
		}
	}
	s.deliver()
	if len(s.outbox) < maxOutbox && !s.hold && !now.Before(s.nextStart) {
		s.startRound(now)
		s.deliver()
	}
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
	if len(s.outbox) < maxOutbox && !s.hold {
		earlier(s.nextStart)
	}
	for _, r := range s.open {
		if !r.judged {
			earlier(r.deadline)
		}
	}
	return w
}

// confirming reports whether the latest rounds disagree with the verdict
// and the disagreement is still short of its threshold.
func (s *scheduler) confirming() bool {
	return (s.verdict != verdictUp && s.good > 0) || (s.verdict != verdictDown && s.bad > 0)
}

// fast reports whether the next round is a confirmation round. A burst of
// them is bounded: in up or down a disagreement ends within Down or Up
// rounds anyway, but a path that alternates while the verdict is unknown
// would otherwise be probed fast for as long as it alternates.
func (s *scheduler) fast() bool {
	return s.confirming() && s.burst < s.down+s.up
}

// note takes the outcome of the next round, in Seq order, into the
// mirror of the hysteresis.
func (s *scheduler) note(good bool) {
	if good {
		s.good++
		s.bad = 0
	} else {
		s.bad++
		s.good = 0
	}
	switch {
	case s.bad >= s.down:
		s.verdict = verdictDown
	case s.good >= s.up:
		s.verdict = verdictUp
	}
}

// reschedule sets when the next round starts after the mirror changed or
// a round started.
func (s *scheduler) reschedule() {
	if !s.confirming() {
		s.burst = 0
	}
	if s.fast() {
		// Consecutive: wait for the latest round's outcome (delivery is
		// in Seq order, so nothing open means it is known).
		s.hold = len(s.open) > 0
		s.nextStart = s.lastStart.Add(s.gap)
		return
	}
	s.hold = false
	// The normal rhythm: the first instant of the grid more than half an
	// interval after the latest round. After a round on the grid that is
	// the next instant; after one off the grid (a confirmation round, a
	// round that started late) the gap is between half an interval and
	// one and a half, rather than a round right after the previous one.
	s.nextStart = s.onGrid(s.lastStart.Add(s.interval * 3 / 2))
}

// startRound probes every target once.
func (s *scheduler) startRound(now time.Time) {
	// A round that starts late (the consumer held us back, the machine
	// was busy) is followed by the next instant of the grid, not by a
	// burst of catch-up rounds: see reschedule.
	if s.fast() {
		s.burst++
	}
	s.lastStart = now

	s.seq++
	n := len(s.targets)
	r := &round{
		seq:     s.seq,
		start:   now,
		results: make([]Result, n),
		done:    make([]bool, n),
	}
	ests := s.ests[:0]
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
	clear(ests)
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
		s.judge(r, now)
	}
	s.reschedule()
}

// judge closes round r at now: targets without an answer failed.
func (s *scheduler) judge(r *round, now time.Time) {
	for i := range r.results {
		if !r.done[i] {
			r.results[i].Err = "timeout"
			r.done[i] = true
		}
	}
	r.judged = true
	r.judgedAt = now
}

// deliver moves the judged rounds at the head of open to the outbox, each
// followed by the late answers it collected meanwhile, and feeds their
// outcomes to the mirror of the hysteresis in that order.
func (s *scheduler) deliver() {
	if len(s.open) == 0 || !s.open[0].judged {
		return
	}
	for len(s.open) > 0 && s.open[0].judged {
		r := s.open[0]
		s.open[0] = nil
		s.open = s.open[1:]
		r.delivered = true
		rd := Round{WAN: s.wan, Seq: r.seq, Start: r.start, Judged: r.judgedAt, Results: r.results}
		s.outbox = append(s.outbox, rd)
		s.note(rd.Good(s.reliability))
		if len(r.late) > 0 {
			s.outbox = append(s.outbox, Round{WAN: s.wan, Seq: r.seq, Start: r.start, Judged: r.judgedAt, Results: r.late, Late: true})
			r.late = nil
			s.bad = 0
		}
	}
	s.reschedule()
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
				s.judge(r, ev.at)
				s.deliver()
			}
			return
		}
		// The deadline passed before the answer came; the timer just
		// has not fired yet.
		s.judge(r, r.deadline)
	}
	if !ev.ok {
		// A failure after the deadline tells nothing the round did not.
		s.deliver()
		return
	}
	s.addLate(r, res)
	s.deliver()
}

// addLate reports a late answer for a judged round. It proves the path
// carries packets, so it breaks a streak of bad rounds, in the tracker
// and in the scheduler's mirror of it.
func (s *scheduler) addLate(r *round, res Result) {
	if !r.delivered {
		r.late = append(r.late, res)
		return
	}
	s.bad = 0
	s.reschedule()
	if n := len(s.outbox); n > 0 && s.outbox[n-1].Late && s.outbox[n-1].Seq == r.seq {
		// Not handed out yet: one report per round is enough.
		s.outbox[n-1].Results = append(s.outbox[n-1].Results, res)
		return
	}
	s.outbox = append(s.outbox, Round{WAN: s.wan, Seq: r.seq, Start: r.start, Judged: r.judgedAt, Results: []Result{res}, Late: true})
}

// pop removes the report just sent.
func (s *scheduler) pop() {
	s.outbox[0] = Round{}
	s.outbox = s.outbox[1:]
}
