package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/multiwan/multiwan/internal/config"
	"github.com/multiwan/multiwan/internal/conntrack"
	"github.com/multiwan/multiwan/internal/control"
	"github.com/multiwan/multiwan/internal/health"
	"github.com/multiwan/multiwan/internal/plan"
)

// Tunnel WANs (overlays, plan/underlay.go) on the daemon's side:
//
//   - what their interfaces say about their outer traffic (WireGuard's
//     listen port, fwmark, peers' endpoints) is read by a goroutine of its
//     own, never by the loop: a userspace implementation answers over a
//     socket, and a stopped one must not stall health. The loop asks for
//     a read whenever it re-reads the links (netlink events, the periodic
//     resync, reloads); the reader hands back what it read, and the loop
//     replans only when that changed. Endpoints roam, so this is how a
//     roamed endpoint is followed. The first read, at start, is made
//     before the first plan, so that the outer traffic is pinned from the
//     first packet on.
//   - a tunnel that is down because its underlays are (not by its own
//     probes) is announced like a health transition, with that cause;
//   - when a tunnel moves between two usable underlays, its outer flow's
//     conntrack entries are deleted (by mark and tuple), so that its next
//     packet is classified, and NATed, again. When the old underlay died,
//     the dead WAN's cleanup has deleted them already.

// TunnelReader reads what a tunnel interface of the daemon's namespace says
// about its outer traffic; *wireguard.Reader. An interface it cannot read
// is an error (wireguard.ErrNotWireGuard for one that is no WireGuard).
type TunnelReader interface {
	Read(ctx context.Context, iface string) (*plan.TunnelInfo, error)
}

// OuterFlows deletes the few conntrack entries of one tunnel's outer flow,
// by mark and tuple; *conntrack.Cleaner. Flows that do not implement it
// leave outer flows to their timeout when a tunnel moves between usable
// underlays.
type OuterFlows interface {
	DeleteSelected(mark, mask uint32, family int, sels []conntrack.Selector) (int, error)
}

// Bounds of tunnel reads: one interface, and all of them at start (the
// read before the first plan).
const (
	tunnelReadTimeout  = 500 * time.Millisecond
	tunnelStartTimeout = time.Second
)

// tunnelTarget is one interface to read.
type tunnelTarget struct{ wan, iface string }

// tunnelResult is what one read gave.
type tunnelResult struct {
	info *plan.TunnelInfo
	err  string
}

// tunnelState is the daemon's tunnel state. want and wake are shared with
// the reader goroutine (under mu); the rest is the loop's.
type tunnelState struct {
	mu   sync.Mutex
	want []tunnelTarget
	wake chan struct{}
	// box carries readings to the loop.
	box inbox[map[string]tunnelResult]

	// The loop's: the last reading per WAN, whether the first read (at
	// start) was made, and when each tunnel (health key) last went down
	// or came back with its underlays.
	read    map[string]tunnelResult
	started bool
	since   map[string]time.Time
}

func (t *tunnelState) init() {
	t.wake = make(chan struct{}, 1)
	t.box.init(4)
}

// tunnelTargets are the interfaces of WANs with underlays.
func tunnelTargets(cfg *config.Config) []tunnelTarget {
	var out []tunnelTarget
	for _, w := range cfg.WANs {
		if len(w.Underlays) > 0 {
			out = append(out, tunnelTarget{w.Name, w.Interface})
		}
	}
	return out
}

// readTunnels asks the reader for every target, each bounded.
func (d *Daemon) readTunnels(ctx context.Context, targets []tunnelTarget) map[string]tunnelResult {
	out := map[string]tunnelResult{}
	for _, t := range targets {
		if ctx.Err() != nil {
			break
		}
		rctx, cancel := context.WithTimeout(ctx, tunnelReadTimeout)
		info, err := d.opt.Tunnels.Read(rctx, t.iface)
		cancel()
		r := tunnelResult{info: info}
		if err != nil {
			r.info, r.err = nil, err.Error()
		}
		out[t.wan] = r
	}
	return out
}

// tunnelReader is the reader goroutine: it reads what the loop last asked
// for, each time the loop asks, until ctx ends.
func (d *Daemon) tunnelReader(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.tun.wake:
		}
		d.tun.mu.Lock()
		targets := slices.Clone(d.tun.want)
		d.tun.mu.Unlock()
		d.tun.box.put(d.readTunnels(ctx, targets))
	}
}

// tunnelsRefreshed runs on the loop after every read of the links: it puts
// what is known of the tunnels into the links the planner sees, and asks
// for a new read. The first time (at start, before the first plan and
// before the loop runs) it reads at once.
func (d *Daemon) tunnelsRefreshed() {
	targets := tunnelTargets(d.cfg)
	if len(targets) == 0 && len(d.tun.read) == 0 {
		return
	}
	if !d.tun.started {
		d.tun.started = true
		ctx, cancel := context.WithTimeout(context.Background(), tunnelStartTimeout)
		d.tunnelsRead(d.readTunnels(ctx, targets))
		cancel()
	} else {
		d.tun.mu.Lock()
		d.tun.want = targets
		d.tun.mu.Unlock()
		select {
		case d.tun.wake <- struct{}{}:
		default:
		}
	}
	d.mergeTunnels()
}

// mergeTunnels puts the last reading into d.links.
func (d *Daemon) mergeTunnels() {
	for wan, r := range d.tun.read {
		l, ok := d.links[wan]
		if !ok {
			continue
		}
		l.Tunnel = r.info
		d.links[wan] = l
	}
}

// tunnelReadings takes what the reader read and replans if it changed.
func (d *Daemon) tunnelReadings(ctx context.Context) {
	readings, _ := d.tun.box.take()
	if len(readings) == 0 {
		return
	}
	if !d.tunnelsRead(readings[len(readings)-1]) {
		return
	}
	d.mergeTunnels()
	_ = d.sync(ctx, "tunnel interfaces read", nil, false)
}

// tunnelsRead records a reading, logs what changed, and reports whether
// anything did. Readings of WANs no longer configured are dropped.
func (d *Daemon) tunnelsRead(r map[string]tunnelResult) bool {
	changed := false
	for wan, res := range r {
		if _, ok := d.cfg.WANByName(wan); !ok {
			continue
		}
		old, had := d.tun.read[wan]
		if had && reflect.DeepEqual(old, res) {
			continue
		}
		changed = true
		if d.tun.read == nil {
			d.tun.read = map[string]tunnelResult{}
		}
		d.tun.read[wan] = res
		switch {
		case res.err != "" && (!had || old.err != res.err):
			d.log.Warn("cannot read the tunnel interface; its outer traffic is recognised by endpoint and tunnel_mark only",
				"wan", wan, "err", res.err)
		case res.info != nil:
			d.log.Info("tunnel interface read", "wan", wan, "kind", res.info.Kind, "listen_port", res.info.ListenPort,
				"fwmark", fmt.Sprintf("%#x", res.info.FwMark), "endpoints", endpointList(res.info.Endpoints), "peers", res.info.Peers)
		}
	}
	for wan := range d.tun.read {
		if _, ok := d.cfg.WANByName(wan); !ok {
			delete(d.tun.read, wan)
			changed = true
		}
	}
	return changed
}

func endpointList(eps []netip.AddrPort) string {
	s := make([]string, len(eps))
	for i, ep := range eps {
		s[i] = ep.String()
	}
	return strings.Join(s, ",")
}

// overlayTransitions are the health transitions a plan made by itself: a
// tunnel down because its underlays are, or back because one is usable
// again. Families whose tracker moved in the same sync (trs) are left to
// the tracker's own transition.
func overlayTransitions(old, cur *plan.Desired, trs []health.Transition) []health.Transition {
	if old == nil || cur == nil {
		return nil
	}
	var out []health.Transition
	keys := make([]string, 0, len(cur.States))
	for k := range cur.States {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, key := range keys {
		was, is := old.States[key], cur.States[key]
		if was == "" || was == is || slices.ContainsFunc(trs, func(t health.Transition) bool { return t.WAN == key }) {
			continue
		}
		wan, _ := splitKey(key)
		switch {
		case cur.Causes[key] != "":
			out = append(out, health.Transition{WAN: key, From: was, To: is, Cause: cur.Causes[key]})
		case old.Causes[key] != "":
			cause := "an underlay is usable again"
			if o := cur.Overlay(wan); o != nil && o.Underlay != "" {
				cause = "underlay " + o.Underlay + " usable again"
			}
			out = append(out, health.Transition{WAN: key, From: was, To: is, Cause: cause})
		}
	}
	return out
}

// overlaysChanged announces the tunnels the plan took down or brought back
// with their underlays, like health transitions (logs, events, hooks), and
// remembers when, for status.
func (d *Daemon) overlaysChanged(ctx context.Context, old, cur *plan.Desired, trs []health.Transition) {
	for _, tr := range overlayTransitions(old, cur, trs) {
		if d.tun.since == nil {
			d.tun.since = map[string]time.Time{}
		}
		d.tun.since[tr.WAN] = d.opt.Now()
		d.transition(ctx, tr)
	}
}

// outerMove is a tunnel whose outer flow must leave an underlay that is
// still usable.
type outerMove struct {
	wan, from, to string
	mark, mask    uint32
	sels          []conntrack.Selector
}

// staleOuterFlows lists the outer flows that the change from old to cur
// moved between two usable underlays, as a pure function of the plans.
// The selectors are what old knew of the outer flow: its endpoints and
// its listen port.
func staleOuterFlows(old, cur *plan.Desired) []outerMove {
	if old == nil || cur == nil {
		return nil
	}
	var out []outerMove
	for _, o := range cur.Overlays {
		prev := old.Overlay(o.WAN)
		if prev == nil || prev.Underlay == "" || prev.Underlay == o.Underlay || cur.States[prev.Underlay] == plan.StateDown {
			continue
		}
		mark, ok := old.Marks[prev.Underlay]
		if !ok || cur.Marks[prev.Underlay] != mark {
			continue // renumbered: its entries are deleted whole
		}
		var sels []conntrack.Selector
		for _, ep := range prev.Endpoints {
			sels = append(sels, conntrack.Selector{Proto: 17, Dst: ep.Addr(), DstPort: ep.Port()})
		}
		if prev.ListenPort != 0 {
			sels = append(sels, conntrack.Selector{Proto: 17, SrcPort: prev.ListenPort})
		}
		out = append(out, outerMove{wan: o.WAN, from: prev.Underlay, to: o.Underlay, mark: mark, mask: old.IDMask, sels: sels})
	}
	return out
}

// moveOuterFlows announces underlay switches and deletes the outer flows
// that a switch between usable underlays left on the old one.
func (d *Daemon) moveOuterFlows(old, cur *plan.Desired) {
	if old != nil {
		for _, o := range cur.Overlays {
			prev := old.Overlay(o.WAN)
			if prev == nil || prev.Underlay == o.Underlay {
				continue
			}
			d.log.Info("tunnel underlay", "wan", o.WAN, "from", orNone(prev.Underlay), "to", orNone(o.Underlay))
			d.event(control.Event{Kind: "underlay", WAN: o.WAN, From: prev.Underlay, To: o.Underlay,
				Message: fmt.Sprintf("the outer traffic of %s rides %s (was %s)", o.WAN, orNone(o.Underlay), orNone(prev.Underlay))})
		}
	}
	del, ok := d.opt.Flows.(OuterFlows)
	if !ok || d.opt.Flows == nil {
		return
	}
	for _, m := range staleOuterFlows(old, cur) {
		if len(m.sels) == 0 {
			d.log.Warn("the tunnel moved to another underlay, but its outer flow is not known (no endpoint, no listen port): it keeps the old one until it ends",
				"wan", m.wan, "from", m.from, "to", m.to)
			continue
		}
		start := time.Now()
		n, err := del.DeleteSelected(m.mark, m.mask, 0, m.sels)
		took := time.Since(start).Round(time.Microsecond)
		if err != nil {
			d.log.Error("deleting a tunnel's outer flow failed", "wan", m.wan, "underlay", m.from, "err", err)
			continue
		}
		d.log.Info("conntrack entries deleted", "wan", m.from, "tunnel", m.wan, "entries", n,
			"cause", "the outer flow of "+m.wan+" moves to "+m.to, "took", took)
		d.event(control.Event{Kind: "flows-deleted", WAN: m.from, Cause: "outer flow of " + m.wan + " moves to " + m.to,
			Message: fmt.Sprintf("%d conntrack entries of %s's outer flow deleted from %s (it moves to %s, %s)", n, m.wan, m.from, m.to, took)})
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// tunnelStatus fills in what status says of a tunnel WAN: why it is down
// when that is not its probes' doing, the underlay its outer traffic
// rides, and what was read from its interface.
func (d *Daemon) tunnelStatus(ws *control.WANStatus, name string) {
	if d.applied == nil {
		return
	}
	ws.Cause = d.applied.Causes[name]
	if at, ok := d.tun.since[name]; ok && at.After(ws.Since) {
		// Down (or back) with its underlays: since then, not since its
		// probes last changed their mind.
		ws.Since = at.UTC()
	}
	o := d.applied.Overlay(name)
	if o == nil {
		return
	}
	ts := &control.TunnelStatus{Underlay: o.Underlay, Underlays: o.Underlays, ListenPort: int(o.ListenPort), Error: o.Problem}
	for _, m := range o.Marks {
		ts.Marks = append(ts.Marks, fmt.Sprintf("%#x", m))
	}
	for _, ep := range o.Endpoints {
		s := ep.Addr().String()
		if ep.Port() != 0 {
			s = ep.String()
		}
		ts.Endpoints = append(ts.Endpoints, s)
	}
	if r, ok := d.tun.read[name]; ok {
		if r.info != nil {
			ts.Kind = r.info.Kind
			ts.Peers = r.info.Peers
		}
		if r.err != "" && ts.Error == "" {
			ts.ReadError = r.err
		}
	}
	ws.Tunnel = ts
}
