package daemon

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/multiwan/multiwan/internal/config"
	"github.com/multiwan/multiwan/internal/control"
	"github.com/multiwan/multiwan/internal/kernel"
	"github.com/multiwan/multiwan/internal/metrics"
	"github.com/multiwan/multiwan/internal/plan"
	"github.com/multiwan/multiwan/internal/probe"
)

// Sizes of the history: an hour of seconds, a day of minutes. About 100
// KB per WAN and family.
const (
	secondSlots = 3600
	minuteSlots = 1440
)

// history keeps the recent past for the dashboard, in memory: per health
// key, RTT, loss and state, one slot a second for an hour and one a
// minute for a day; per WAN, traffic the same. Its own lock guards it, held
// only for memory operations: the loop records rounds, the sampler records
// traffic, HTTP requests read.
type history struct {
	mu      sync.Mutex
	health  map[string]*healthSeries
	traffic map[string]*trafficSeries
}

// healthPoint is what one slot learned of a WAN's health.
type healthPoint struct {
	t          int64 // the slot's unix second, or minute; 0: empty
	rttSum     float64
	rttN       int32
	sent, lost int32
	state      plan.State // for a minute: the worst state seen in it
}

type healthSeries struct {
	sec [secondSlots]healthPoint
	min [minuteSlots]healthPoint
}

type trafficPoint struct {
	t             int64
	inBps, outBps float64 // sums, for a minute
	n             int32
}

type trafficSeries struct {
	sec [secondSlots]trafficPoint
	min [minuteSlots]trafficPoint
}

// worse orders states for a minute's summary: down, degraded, unknown, up.
func worse(a, b plan.State) plan.State {
	rank := map[plan.State]int{"": 0, plan.StateUp: 1, plan.StateUnknown: 2, plan.StateDegraded: 3, plan.StateDown: 4}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

func (h *history) init() {
	h.health = map[string]*healthSeries{}
	h.traffic = map[string]*trafficSeries{}
}

// round records a probe round of the health key and the state it left.
func (h *history) round(key string, at time.Time, r probe.Round, state plan.State) {
	if r.Late {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.health[key]
	if s == nil {
		s = &healthSeries{}
		h.health[key] = s
	}
	sec, min := at.Unix(), at.Unix()/60
	for _, p := range []*healthPoint{&s.sec[sec%secondSlots], &s.min[min%minuteSlots]} {
		t := sec
		if p == &s.min[min%minuteSlots] {
			t = min
		}
		if p.t != t {
			*p = healthPoint{t: t}
		}
		for _, res := range r.Results {
			p.sent++
			if res.OK {
				p.rttSum += res.RTT.Seconds() * 1000
				p.rttN++
			} else {
				p.lost++
			}
		}
		if t == min {
			p.state = worse(p.state, state)
		} else {
			p.state = state
		}
	}
}

// rate records a second of a WAN's traffic.
func (h *history) rate(wan string, at time.Time, inBps, outBps float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.traffic[wan]
	if s == nil {
		s = &trafficSeries{}
		h.traffic[wan] = s
	}
	sec, min := at.Unix(), at.Unix()/60
	if p := &s.sec[sec%secondSlots]; p.t != sec {
		*p = trafficPoint{t: sec, inBps: inBps, outBps: outBps, n: 1}
	}
	p := &s.min[min%minuteSlots]
	if p.t != min {
		*p = trafficPoint{t: min}
	}
	p.inBps += inBps
	p.outBps += outBps
	p.n++
}

// read builds the History of window ("1h" or "24h") after since, for the
// WANs and families of the status.
func (h *history) read(window string, since, now time.Time, st control.Status) control.History {
	step, n := int64(1), int64(secondSlots)
	if window == "24h" {
		step, n = 60, minuteSlots
	}
	end := now.Unix() / step
	first := end - n + 1
	if s := since.Unix()/step + 1; !since.IsZero() && s > first {
		first = s
	}
	out := control.History{Window: window, Step: float64(step), End: time.Unix(end*step, 0).UTC(),
		WANs: []control.WANHistory{}, Traffic: []control.TrafficHistory{}}
	h.mu.Lock()
	defer h.mu.Unlock()
	health := func(wan, family, key string) {
		wh := control.WANHistory{WAN: wan, Family: family}
		s := h.health[key]
		var last plan.State
		for t := first; t <= end; t++ {
			var p healthPoint
			if s != nil {
				if step == 1 {
					p = s.sec[t%secondSlots]
				} else {
					p = s.min[t%minuteSlots]
				}
			}
			if p.t != t {
				p = healthPoint{state: last}
			}
			last = p.state
			var rtt, loss *float64
			if p.rttN > 0 {
				v := p.rttSum / float64(p.rttN)
				rtt = &v
			}
			if p.sent > 0 {
				v := 100 * float64(p.lost) / float64(p.sent)
				loss = &v
			}
			wh.RTTms = append(wh.RTTms, rtt)
			wh.LossPct = append(wh.LossPct, loss)
			wh.State = append(wh.State, string(p.state))
		}
		out.WANs = append(out.WANs, wh)
	}
	for _, w := range st.WANs {
		health(w.Name, "ipv4", w.Name)
		if w.IPv6 != nil {
			health(w.Name, "ipv6", plan.Key6(w.Name))
		}
		th := control.TrafficHistory{WAN: w.Name, InBps: []float64{}, OutBps: []float64{}}
		s := h.traffic[w.Name]
		for t := first; t <= end; t++ {
			var p trafficPoint
			if s != nil {
				if step == 1 {
					p = s.sec[t%secondSlots]
				} else {
					p = s.min[t%minuteSlots]
				}
			}
			in, outb := 0.0, 0.0
			if p.t == t && p.n > 0 {
				in, outb = p.inBps/float64(p.n), p.outBps/float64(p.n)
			}
			th.InBps = append(th.InBps, in)
			th.OutBps = append(th.OutBps, outb)
		}
		out.Traffic = append(out.Traffic, th)
	}
	return out
}

// History returns the dashboard's history (control.Historian).
func (d *Daemon) History(window string, since time.Time) (control.History, error) {
	return d.hist.read(window, since, time.Now(), *d.status.Load()), nil
}

var _ control.Historian = (*Daemon)(nil)

// shared is what the sampler needs of the loop's state, published with
// the status.
type shared struct {
	wans   []string
	marks  map[string]uint32
	idMask uint32
	// For explain: what the current plan was made of.
	cfg      *config.Config
	health   plan.Health
	links    plan.Links
	override string
}

// sampler reads multiwan's traffic counters every second (history and
// metrics) and counts connections per WAN every connsEvery (metrics),
// until ctx ends. It runs on its own goroutine and touches nothing of the
// loop's: the counters are read in-process over netlink, the WANs and
// marks come from the published snapshot.
func (d *Daemon) sampler(ctx context.Context) {
	const connsEvery = 10 * time.Second
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var prev map[string]kernel.Count
	var prevAt, connsAt time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			sh := d.shared.Load()
			if sh == nil {
				continue
			}
			if d.opt.Counters != nil {
				counts, err := d.opt.Counters()
				if err == nil {
					traffic := map[string]metrics.Traffic{}
					for _, wan := range sh.wans {
						rx, okRX := counts[plan.CounterRX(wan)]
						tx, okTX := counts[plan.CounterTX(wan)]
						if !okRX || !okTX {
							continue
						}
						traffic[wan] = metrics.Traffic{RXBytes: rx.Bytes, RXPackets: rx.Packets, TXBytes: tx.Bytes, TXPackets: tx.Packets}
						if p, ok := prev[plan.CounterRX(wan)]; ok && !prevAt.IsZero() {
							dt := now.Sub(prevAt).Seconds()
							ptx := prev[plan.CounterTX(wan)]
							// A table replaced whole starts its counters again.
							if rx.Bytes >= p.Bytes && tx.Bytes >= ptx.Bytes && dt > 0 {
								d.hist.rate(wan, now, float64(rx.Bytes-p.Bytes)*8/dt, float64(tx.Bytes-ptx.Bytes)*8/dt)
							}
						}
					}
					d.traffic.Store(&traffic)
					prev, prevAt = counts, now
				}
			}
			if d.opt.CountFlows != nil && now.Sub(connsAt) >= connsEvery {
				connsAt = now
				if byMark, err := d.opt.CountFlows(sh.idMask); err == nil {
					conns := map[string]int{}
					for _, wan := range sh.wans {
						conns[wan] = byMark[sh.marks[wan]]
					}
					d.conns.Store(&conns)
				}
			}
		}
	}
}

// Traffic is what each WAN received and sent, as last sampled
// (metrics.Source).
func (d *Daemon) Traffic() map[string]metrics.Traffic {
	if t := d.traffic.Load(); t != nil {
		return *t
	}
	return nil
}

// Connections is the conntrack entries per WAN, as last counted
// (metrics.Source).
func (d *Daemon) Connections() map[string]int {
	if c := d.conns.Load(); c != nil {
		return *c
	}
	return nil
}

var _ metrics.Source = (*Daemon)(nil)

// sampled is embedded in Daemon: what the sampler publishes.
type sampled struct {
	shared  atomic.Pointer[shared]
	traffic atomic.Pointer[map[string]metrics.Traffic]
	conns   atomic.Pointer[map[string]int]
	hist    history
}
