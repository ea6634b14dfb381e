package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/multiwan/multiwan/internal/control"
	"github.com/multiwan/multiwan/internal/health"
	"github.com/multiwan/multiwan/internal/hooks"
	"github.com/multiwan/multiwan/internal/plan"
)

// bus keeps the last events and hands new ones to subscribers. Its lock is
// held only for memory operations: a subscriber that does not keep up is
// dropped (its channel closed), never waited for.
type bus struct {
	mu   sync.Mutex
	ring []control.Event
	next int  // where the next event goes
	full bool // the ring wrapped
	subs map[*subscriber]struct{}
}

type subscriber struct {
	ch chan control.Event
}

// subscriberBuffer is how many events a subscriber may lag behind before
// it is dropped.
const subscriberBuffer = 256

func (b *bus) init(n int) {
	b.ring = make([]control.Event, n)
	b.subs = map[*subscriber]struct{}{}
}

func (b *bus) publish(ev control.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ring[b.next] = ev
	b.next = (b.next + 1) % len(b.ring)
	if b.next == 0 {
		b.full = true
	}
	for s := range b.subs {
		select {
		case s.ch <- ev:
		default:
			close(s.ch)
			delete(b.subs, s)
		}
	}
}

// last returns the last n events, oldest first.
func (b *bus) last(n int) []control.Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	var all []control.Event
	if b.full {
		all = append(all, b.ring[b.next:]...)
	}
	all = append(all, b.ring[:b.next]...)
	if n < len(all) {
		all = all[len(all)-n:]
	}
	return slices.Clone(all)
}

func (b *bus) subscribe(n int) ([]control.Event, <-chan control.Event, func()) {
	past := b.last(max(n, 0))
	s := &subscriber{ch: make(chan control.Event, subscriberBuffer)}
	b.mu.Lock()
	if b.subs == nil { // closed: the daemon stopped
		b.mu.Unlock()
		close(s.ch)
		return past, s.ch, func() {}
	}
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	var once sync.Once
	cancel := func() {
		once.Do(func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			if _, ok := b.subs[s]; ok {
				delete(b.subs, s)
				close(s.ch)
			}
		})
	}
	return past, s.ch, cancel
}

// closeAll ends every subscription; later ones end at once.
func (b *bus) closeAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		close(s.ch)
	}
	b.subs = nil
}

// event stamps and publishes ev.
func (d *Daemon) event(ev control.Event) {
	if ev.Time.IsZero() {
		ev.Time = d.opt.Now().UTC()
	}
	d.events.publish(ev)
}

// transition logs a WAN's health change, publishes it and runs the hooks.
func (d *Daemon) transition(ctx context.Context, tr health.Transition) {
	level := slog.LevelInfo
	if tr.To == plan.StateDown || tr.To == plan.StateDegraded {
		level = slog.LevelWarn
	}
	wan, family := splitKey(tr.WAN)
	d.opt.Metrics.Transition(wan, family, string(tr.From), string(tr.To))
	attrs := []any{"wan", wan, "from", string(tr.From), "to", string(tr.To), "cause", tr.Cause}
	if family == "ipv6" {
		attrs = append(attrs, "family", family)
	}
	d.log.Log(ctx, level, "wan state", attrs...)
	name := wan
	if family == "ipv6" {
		name += " (ipv6)"
	}
	d.event(control.Event{Kind: "state", WAN: wan, Family: family, From: string(tr.From), To: string(tr.To), Cause: tr.Cause,
		Message: fmt.Sprintf("%s %s → %s: %s", name, tr.From, tr.To, tr.Cause)})
	if tr.To == plan.StateUnknown || !d.hooksOn() {
		return // carrier back: the probes decide next
	}
	w, _ := d.cfg.WANByName(wan)
	iface := ""
	if w != nil {
		iface = w.Interface
	}
	d.opt.Hooks.Run(ctx, d.log, d.cfg.Hooks, d.cfg.HookTimeout, hooks.Event{Kind: string(tr.To), WAN: wan,
		Interface: iface, State: string(tr.To), Previous: string(tr.From), Family: family})
}

func (d *Daemon) hooksOn() bool { return d.opt.Hooks != nil && len(d.cfg.Hooks) > 0 }

// switchEvent is a policy whose choice changed, for one family.
type switchEvent struct {
	plan.PolicyChoice
	family string
}

// announce says, one line per policy, where new connections go now and
// why, and one line per WAN whose link appeared or vanished. It returns the
// policies whose choice changed.
func (d *Daemon) announce(ctx context.Context, old, cur *plan.Desired, why string, took time.Duration) []switchEvent {
	if old == nil {
		d.log.Info("installed", "wans", len(d.cfg.WANs), "rules", len(cur.Rules), "routes", len(cur.Routes),
			"took", took.Round(time.Microsecond))
	}
	for _, w := range d.cfg.WANs {
		l := d.links[w.Name]
		state := "up"
		switch {
		case !l.Exists:
			state = "missing"
		case !l.Up:
			state = "down"
		case w.GatewayAuto && !l.Gateway.IsValid() && !l.PointToPoint:
			state = "no gateway yet"
		}
		if d.linkStates[w.Name] != state {
			d.log.Info("link", "wan", w.Name, "interface", w.Interface, "state", state)
			if _, seen := d.linkStates[w.Name]; seen {
				d.event(control.Event{Kind: "link", WAN: w.Name, From: d.linkStates[w.Name], To: state,
					Message: fmt.Sprintf("link %s of %s: %s", w.Interface, w.Name, state)})
			}
			d.linkStates[w.Name] = state
		}
	}
	var switched []switchEvent
	for _, f := range []struct {
		name          string
		before, after []plan.PolicyChoice
	}{{"ipv4", policiesOf(old, false), cur.Policies}, {"ipv6", policiesOf(old, true), cur.Policies6}} {
		for _, p := range f.after {
			i := slices.IndexFunc(f.before, func(q plan.PolicyChoice) bool { return q.Name == p.Name })
			if i >= 0 && f.before[i].String() == p.String() {
				continue
			}
			attrs := []any{"policy", p.Name, "new connections", p.String(), "cause", why, "took", took.Round(time.Microsecond)}
			if f.name == "ipv6" {
				attrs = append(attrs, "family", f.name)
			}
			d.log.Info("policy", attrs...)
			if old == nil {
				continue
			}
			switched = append(switched, switchEvent{p, f.name})
			from := ""
			if i >= 0 {
				from = f.before[i].String()
			}
			fam := ""
			if f.name == "ipv6" {
				fam = f.name
			}
			d.event(control.Event{Kind: "switch", Policy: p.Name, Family: fam, From: from, To: p.String(), Cause: why,
				Message: fmt.Sprintf("policy %s: new connections %s (was %s; %s)", p.Name, p.String(), from, why)})
		}
	}
	return switched
}

func policiesOf(d *plan.Desired, v6 bool) []plan.PolicyChoice {
	switch {
	case d == nil:
		return nil
	case v6:
		return d.Policies6
	}
	return d.Policies
}

// runSwitchHooks starts the hooks for policy switches.
func (d *Daemon) runSwitchHooks(ctx context.Context, switched []switchEvent) {
	if !d.hooksOn() {
		return
	}
	for _, p := range switched {
		ev := hooks.Event{Kind: "switch", Policy: p.Name, Active: p.String(), Family: p.family}
		if len(p.Active) > 0 {
			ev.WAN = p.Active[0].WAN
			if w, ok := d.cfg.WANByName(ev.WAN); ok {
				ev.Interface = w.Interface
				key := w.Name
				if p.family == "ipv6" {
					key = plan.Key6(w.Name)
				}
				if tr := d.trackers[key]; tr != nil {
					ev.State = string(tr.Status().State)
				}
			}
		}
		d.opt.Hooks.Run(ctx, d.log, d.cfg.Hooks, d.cfg.HookTimeout, ev)
	}
}

// splitKey turns a health key into the WAN's name and the family.
func splitKey(key string) (wan, family string) {
	if name, ok := strings.CutSuffix(key, plan.Key6("")); ok {
		return name, "ipv6"
	}
	return key, "ipv4"
}
