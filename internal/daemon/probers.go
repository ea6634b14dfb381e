package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/multiwan/multiwan/internal/config"
	"github.com/multiwan/multiwan/internal/plan"
	"github.com/multiwan/multiwan/internal/probe"
)

// proberRound is a round tagged with the prober that sent it, so that the
// last rounds of a prober a reload replaced are not taken for its
// successor's.
type proberRound struct {
	key string
	id  uint64
	probe.Round
}

// proberSet is the running probers, one per WAN and address family. The
// loop starts and stops them; they never wait for the loop: a prober sends
// its rounds with its own context as the way out, and reads its gateway
// from a cell the loop fills.
type proberSet struct {
	running  map[string]*prober
	gateways map[string]*gatewayCell // per health key, for gateway: auto
	nextID   uint64
	wg       sync.WaitGroup
}

type prober struct {
	id     uint64
	spec   string // what it was started with, to tell whether a reload changed it
	cancel context.CancelFunc
}

func (s *proberSet) init() {
	s.running = map[string]*prober{}
	s.gateways = map[string]*gatewayCell{}
}

// current reports whether id is the running prober of key.
func (s *proberSet) current(key string, id uint64) bool {
	p := s.running[key]
	return p != nil && p.id == id
}

// stopAll cancels every prober and waits until they returned; they do
// promptly, since they never wait for the loop without their context.
func (s *proberSet) stopAll() {
	for key, p := range s.running {
		p.cancel()
		delete(s.running, key)
	}
	s.wg.Wait()
}

// updateGateways hands the learned gateways to the probers of WANs whose
// gateway is auto.
func (s *proberSet) updateGateways(cfg *config.Config, links plan.Links) {
	for _, w := range cfg.WANs {
		for _, pf := range probeFamilies(w) {
			if !gatewayAuto(w, pf.family) {
				continue
			}
			cell := s.gateways[pf.key]
			if cell == nil {
				cell = &gatewayCell{}
				s.gateways[pf.key] = cell
			}
			l := links[w.Name]
			if pf.family == 6 {
				cell.store(l.Gateway6)
			} else {
				cell.store(l.Gateway)
			}
		}
	}
}

func gatewayAuto(w config.WAN, family int) bool {
	if family == 6 {
		return w.Gateway6Auto
	}
	return w.GatewayAuto
}

// restartProbers makes the running probers match the config: a prober
// whose settings (and mark) did not change keeps running, so that its RTT
// estimate and rhythm survive a reload; others are replaced or stopped.
func (d *Daemon) restartProbers() {
	s := &d.probers
	want := map[string]bool{}
	marks := map[string]uint32{}
	if d.planned != nil {
		marks = d.planned.Marks
	}
	for _, w := range d.cfg.WANs {
		for _, pf := range probeFamilies(w) {
			want[pf.key] = true
			spec := probe.Spec{
				WAN:         pf.key,
				Mark:        marks[w.Name],
				Method:      pf.probe.Method,
				Targets:     pf.probe.Targets,
				Interval:    pf.probe.Interval,
				Timeout:     pf.probe.Timeout,
				Reliability: pf.probe.Reliability,
				Down:        pf.probe.Down,
				Up:          pf.probe.Up,
				Interface:   w.Interface,
			}
			if gatewayAuto(w, pf.family) {
				cell := s.gateways[pf.key]
				if cell == nil {
					cell = &gatewayCell{}
					s.gateways[pf.key] = cell
				}
				spec.Gateway = cell.load
			} else {
				gw := w.Gateway
				if pf.family == 6 {
					gw = w.Gateway6
				}
				spec.Gateway = func() netip.Addr { return gw }
			}
			fingerprint := fmt.Sprintf("%+v auto=%v gw4=%s gw6=%s", probe.Spec{WAN: spec.WAN, Mark: spec.Mark,
				Method: spec.Method, Targets: spec.Targets, Interval: spec.Interval, Timeout: spec.Timeout,
				Reliability: spec.Reliability, Down: spec.Down, Up: spec.Up, Interface: spec.Interface}, gatewayAuto(w, pf.family), w.Gateway, w.Gateway6)
			if p := s.running[pf.key]; p != nil {
				if p.spec == fingerprint {
					continue
				}
				p.cancel()
			}
			d.startProber(pf.key, spec, fingerprint)
		}
	}
	for key, p := range s.running {
		if !want[key] {
			p.cancel()
			delete(s.running, key)
			delete(s.gateways, key)
		}
	}
}

// startProber runs one prober and the goroutine that tags its rounds.
// Both end when ctx does; the prober set's WaitGroup counts them.
func (d *Daemon) startProber(key string, spec probe.Spec, fingerprint string) {
	s := &d.probers
	s.nextID++
	id := s.nextID
	ctx, cancel := context.WithCancel(d.runCtx)
	s.running[key] = &prober{id: id, spec: fingerprint, cancel: cancel}
	out := make(chan probe.Round)
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		defer close(out)
		if err := d.opt.Probe(ctx, spec, out); err != nil && ctx.Err() == nil {
			d.log.Error("prober stopped", "wan", spec.WAN, "err", err)
		}
	}()
	go func() {
		defer s.wg.Done()
		for r := range out {
			select {
			case d.rounds <- proberRound{key: key, id: id, Round: r}:
			case <-ctx.Done():
				// Keep draining until the prober returns.
			}
		}
	}()
}

// probeFamily is what one prober of a WAN watches: one address family.
type probeFamily struct {
	key    string // health key: the WAN's name, or plan.Key6 of it
	family int
	probe  config.Probe
}

// probeFamilies splits a WAN's probe settings by address family: IPv4
// always, IPv6 when the WAN carries it. A family without targets of its own
// probes its gateway with ICMP.
func probeFamilies(w config.WAN) []probeFamily {
	var t4, t6 []string
	for _, t := range w.Probe.Targets {
		if f, err := probe.Family([]string{t}, w.Probe.Method); err == nil && f == 6 {
			t6 = append(t6, t)
		} else {
			t4 = append(t4, t)
		}
	}
	split := func(key string, family int, targets []string) probeFamily {
		p := w.Probe
		p.Targets = slices.Clone(targets)
		if len(targets) == 0 {
			p.Method = "icmp"
		}
		p.Reliability = max(1, min(p.Reliability, len(targets)))
		return probeFamily{key: key, family: family, probe: p}
	}
	out := []probeFamily{split(w.Name, 4, t4)}
	if w.IPv6 {
		out = append(out, split(plan.Key6(w.Name), 6, t6))
	}
	return out
}
