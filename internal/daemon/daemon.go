// Package daemon is multiwan's control loop. It owns the running state —
// config, per-WAN health trackers, observed links, the manual override — and
// turns every change of it into a new plan, which it hands to the kernel
// adapters when it differs from what is installed. Probe rounds, netlink
// events, control requests and reloads all arrive here; data flows one way:
// observations → plan → kernel.
package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/multiwan/multiwan/internal/config"
	"github.com/multiwan/multiwan/internal/health"
	"github.com/multiwan/multiwan/internal/hooks"
	"github.com/multiwan/multiwan/internal/links"
	"github.com/multiwan/multiwan/internal/plan"
	"github.com/multiwan/multiwan/internal/probe"
)

// Kernel applies a desired state to the kernel and removes it again.
// kernel.Kernel is the real one; tests use a fake.
type Kernel interface {
	Apply(ctx context.Context, d *plan.Desired, log *slog.Logger) error
	Remove(ctx context.Context, log *slog.Logger) error
	// Invalidate makes the next Apply rewrite everything, after a failure.
	Invalidate()
	// Recheck makes the next Apply compare everything with the kernel
	// again, rewriting only what differs, for when the kernel may have
	// changed behind multiwan's back.
	Recheck(ctx context.Context)
	// Compact removes what fast updates left behind (old rules no packet
	// reaches); the daemon calls it after a quiet moment.
	Compact(ctx context.Context) error
}

// compactAfter is how long after the last change the daemon tidies the
// nft table: long enough that a burst of switches is over, short enough
// that stale rules do not pile up.
const compactAfter = 2 * time.Second

// Flows deletes conntrack entries by mark, in the kernel, for one address
// family (4 or 6) or both (0); *conntrack.Cleaner.
type Flows interface {
	DeleteByMarkFamily(mark, mask uint32, family int) error
}

// Hooks runs the user's hooks for an event without blocking; *hooks.Runner.
type Hooks interface {
	Run(ctx context.Context, log *slog.Logger, paths []string, ev hooks.Event)
}

// resync is how often the daemon re-reads the links and re-applies even
// without an event, to repair drift it was not told about.
const resync = 30 * time.Second

// Options are the daemon's collaborators.
type Options struct {
	Log    *slog.Logger
	Kernel Kernel
	// Flows may be nil: no conntrack cleanup (tests of other parts).
	Flows Flows
	// Hooks may be nil.
	Hooks Hooks
	// Load reads the config for a reload.
	Load func() (*config.Config, error)
	// Snapshot reads the links; links.Snapshot when nil.
	Snapshot func(*config.Config) (plan.Links, error)
	// Probe runs the probes of one WAN; probe.Run when nil. Tests replace
	// it to feed synthetic rounds.
	Probe func(ctx context.Context, spec probe.Spec, out chan<- probe.Round) error
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Daemon holds the running state. Its methods are safe for concurrent use:
// the control socket calls Status, Use and Reload from its own goroutines.
type Daemon struct {
	opt    Options
	log    *slog.Logger
	rounds chan probe.Round
	wake   chan struct{} // kicks the loop after a control request changed state

	mu       sync.Mutex
	cfg      *config.Config
	override string
	trackers map[string]*health.Tracker
	links    plan.Links
	applied  *plan.Desired // last plan installed; nil before the first
	text     string        // applied.String(), to tell a changed plan
	// linkStates is what was last logged about each WAN's link.
	linkStates map[string]string
	// probing cancels the running probers; probers is their WaitGroup.
	probing context.CancelFunc
	probers sync.WaitGroup
	// runCtx is Run's context, for probers started by a reload.
	runCtx context.Context
	// compactDue is set when an apply may have left old rules behind.
	compactDue bool
}

// New returns a daemon for cfg.
func New(cfg *config.Config, opt Options) *Daemon {
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	if opt.Snapshot == nil {
		opt.Snapshot = links.Snapshot
	}
	if opt.Probe == nil {
		opt.Probe = probe.Run
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	d := &Daemon{
		opt:        opt,
		log:        opt.Log,
		rounds:     make(chan probe.Round, 64),
		wake:       make(chan struct{}, 1),
		cfg:        cfg,
		trackers:   map[string]*health.Tracker{},
		linkStates: map[string]string{},
	}
	d.syncTrackers(nil)
	return d
}

// Run installs the plan, starts the probes, then follows probe rounds, link
// events, reloads and a periodic resync until ctx ends; then it stops the
// probes and removes everything it installed. It returns an error only when
// the first installation fails (after removing what it did install).
func (d *Daemon) Run(ctx context.Context, reload <-chan struct{}) error {
	d.mu.Lock()
	d.runCtx = ctx
	err := d.refreshLinks()
	if err == nil {
		err = d.reconcile(ctx, true, "start", nil)
	}
	if err != nil {
		d.mu.Unlock()
		d.shutdown()
		return err
	}
	d.startProbers()
	d.mu.Unlock()

	events := make(chan bool, 1) // coalesced: true when a repair is due
	watchCtx, stopWatch := context.WithCancel(ctx)
	var watching sync.WaitGroup
	watching.Add(1)
	go func() {
		defer watching.Done()
		links.Watch(watchCtx, d.log, func(repair bool) { notify(events, repair) })
	}()
	tick := time.NewTicker(resync)
	defer tick.Stop()
	compact := time.NewTimer(time.Hour)
	compact.Stop()
	defer compact.Stop()
	for {
		d.mu.Lock()
		if d.compactDue {
			d.compactDue = false
			compact.Reset(compactAfter)
		}
		d.mu.Unlock()
		select {
		case <-ctx.Done():
			stopWatch()
			watching.Wait()
			d.mu.Lock()
			d.stopProbers()
			d.mu.Unlock()
			d.shutdown()
			return nil
		case r := <-d.rounds:
			d.observe(ctx, r)
		case repair := <-events:
			d.mu.Lock()
			d.linksChanged(ctx, repair, "netlink event")
			d.mu.Unlock()
		case <-tick.C:
			d.mu.Lock()
			d.linksChanged(ctx, true, "resync")
			d.mu.Unlock()
		case <-reload:
			if err := d.Reload(); err != nil {
				d.log.Error("reload refused, keeping the running config", "err", oneLine(err))
			}
		case <-d.wake:
		case <-compact.C:
			d.mu.Lock()
			if err := d.opt.Kernel.Compact(ctx); err != nil {
				d.log.Warn("tidying the nft table failed; the next change rewrites it", "err", err)
				d.opt.Kernel.Invalidate()
				d.text = ""
			}
			d.mu.Unlock()
		}
	}
}

// notify puts repair on a one-slot channel without blocking; a pending
// plain event must not swallow a repair.
func notify(ch chan bool, repair bool) {
	select {
	case ch <- repair:
		return
	default:
	}
	if !repair {
		return
	}
	select {
	case <-ch:
	default:
	}
	select {
	case ch <- true:
	default:
	}
}

// observe feeds a probe round to its WAN's tracker and replans on a
// transition.
func (d *Daemon) observe(ctx context.Context, r probe.Round) {
	d.mu.Lock()
	defer d.mu.Unlock()
	tr := d.trackers[r.WAN]
	if tr == nil {
		return // a prober of a WAN removed by a reload, still winding down
	}
	tr2, changed := tr.Observe(r, d.opt.Now())
	if !changed {
		return
	}
	d.reconcileLogged(ctx, false, "health", []health.Transition{tr2})
}

// linksChanged re-reads the links, tells the trackers about carrier changes
// and replans. Called with d.mu held.
func (d *Daemon) linksChanged(ctx context.Context, repair bool, why string) {
	old := d.links
	if err := d.refreshLinks(); err != nil {
		d.log.Error("reading links failed; will retry on the next event", "err", err)
		return
	}
	var trs []health.Transition
	now := d.opt.Now()
	for _, w := range d.cfg.WANs {
		was, is := carrier(old[w.Name]), carrier(d.links[w.Name])
		if was == is {
			continue
		}
		for _, pf := range probeFamilies(w) {
			if tr, changed := d.trackers[pf.key].Carrier(is, now); changed {
				trs = append(trs, tr)
			}
		}
	}
	if repair {
		d.opt.Kernel.Recheck(ctx)
	}
	d.reconcileLogged(ctx, repair, why, trs)
}

func carrier(l plan.Link) bool { return l.Exists && l.Up }

// refreshLinks reads the links. Called with d.mu held.
func (d *Daemon) refreshLinks() error {
	obs, err := d.opt.Snapshot(d.cfg)
	if err != nil {
		return fmt.Errorf("read links: %w", err)
	}
	d.links = obs
	return nil
}

func (d *Daemon) reconcileLogged(ctx context.Context, repair bool, why string, trs []health.Transition) {
	if err := d.reconcile(ctx, repair, why, trs); err != nil {
		d.log.Error("apply failed; will retry on the next event", "cause", why, "err", err)
		// Whatever half of it reached the kernel, the next attempt must
		// not assume the old state.
		d.opt.Kernel.Invalidate()
		d.text = ""
	}
}

// health returns the trackers' states. Called with d.mu held.
func (d *Daemon) health() plan.Health {
	h := plan.Health{}
	for name, tr := range d.trackers {
		h[name] = tr.Status().State
	}
	return h
}

// reconcile plans from the current state and applies the plan if it
// changed (or always, when repair is set); then it cleans up the conntrack
// entries the change made stale, logs, and runs hooks. Called with d.mu held.
func (d *Daemon) reconcile(ctx context.Context, repair bool, why string, trs []health.Transition) error {
	decided := d.opt.Now()
	for _, tr := range trs {
		d.logTransition(tr)
	}
	desired := plan.Plan(d.cfg, d.health(), d.links, d.override)
	text := desired.String()
	var took time.Duration
	if text != d.text || repair {
		if err := d.opt.Kernel.Apply(ctx, desired, d.log); err != nil {
			return err
		}
		took = d.opt.Now().Sub(decided)
		d.compactDue = true
	}
	// Even when the kernel needs nothing new (a backup WAN that carries no
	// policy went down), the decision changed: its connections are cleaned
	// up, and status reports what was decided.
	old := d.applied
	d.applied, d.text = desired, text
	d.cleanFlows(old, desired)
	switched := d.logChanges(old, desired, why, took)
	d.runHooks(trs, switched)
	return nil
}

// cleanFlows deletes the conntrack entries that the change from old to cur
// made stale: every entry of a WAN that can no longer carry traffic (its
// clients reconnect through a live WAN at once instead of waiting for TCP
// to give up), and the movable entries of a WAN that lost new connections
// in some policy (their next packet is classified again and NAT is redone).
func (d *Daemon) cleanFlows(old, cur *plan.Desired) {
	if d.opt.Flows == nil || old == nil {
		return
	}
	for _, w := range d.cfg.WANs {
		mark, ok := old.Marks[w.Name]
		if !ok {
			continue
		}
		if curMark := cur.Marks[w.Name]; curMark != mark {
			// Renumbered by a reload: its connections carry a mark that
			// now means something else.
			d.deleteFlows(w.Name, mark, old.IDMask, 0, "the WAN's mark changed")
			continue
		}
		fams := []struct {
			family        int
			key           string
			before, after []plan.PolicyChoice
		}{{4, w.Name, old.Policies, cur.Policies}}
		if cur.IPv6 {
			fams = append(fams, struct {
				family        int
				key           string
				before, after []plan.PolicyChoice
			}{6, plan.Key6(w.Name), old.Policies6, cur.Policies6})
		}
		for _, f := range fams {
			was, is := old.States[f.key], cur.States[f.key]
			switch {
			case was != "" && was != plan.StateDown && is == plan.StateDown:
				d.deleteFlows(w.Name, mark, cur.IDMask, f.family, "WAN down")
			case lostActive(f.before, f.after, w.Name):
				d.deleteFlows(w.Name, mark|cur.MovableBit, cur.IDMask|cur.MovableBit, f.family, "movable flows follow the switch")
			}
		}
	}
}

// lostActive reports whether wan took new connections of some policy in
// before but not in after.
func lostActive(before, after []plan.PolicyChoice, wan string) bool {
	uses := func(p plan.PolicyChoice) bool {
		return slices.ContainsFunc(p.Active, func(s plan.Share) bool { return s.WAN == wan })
	}
	for _, p := range before {
		if !uses(p) {
			continue
		}
		i := slices.IndexFunc(after, func(q plan.PolicyChoice) bool { return q.Name == p.Name })
		if i < 0 || !uses(after[i]) {
			return true
		}
	}
	return false
}

func (d *Daemon) deleteFlows(wan string, mark, mask uint32, family int, why string) {
	start := d.opt.Now()
	fam := map[int]string{0: "both", 4: "ipv4", 6: "ipv6"}[family]
	if err := d.opt.Flows.DeleteByMarkFamily(mark, mask, family); err != nil {
		d.log.Error("deleting conntrack entries failed", "wan", wan, "family", fam, "mark", fmt.Sprintf("%#x/%#x", mark, mask), "err", err)
		return
	}
	d.log.Info("conntrack entries deleted", "wan", wan, "family", fam, "mark", fmt.Sprintf("%#x/%#x", mark, mask),
		"cause", why, "took", d.opt.Now().Sub(start).Round(time.Microsecond))
}

func (d *Daemon) logTransition(tr health.Transition) {
	level := slog.LevelInfo
	if tr.To == plan.StateDown || tr.To == plan.StateDegraded {
		level = slog.LevelWarn
	}
	wan, family := splitKey(tr.WAN)
	attrs := []any{"wan", wan, "from", string(tr.From), "to", string(tr.To), "cause", tr.Cause}
	if family == "ipv6" {
		attrs = append(attrs, "family", family)
	}
	d.log.Log(context.Background(), level, "wan state", attrs...)
}

// logChanges says, one line per policy, where new connections go now and
// why, and one line per WAN whose link appeared or vanished. It returns the
// policies whose choice changed.
func (d *Daemon) logChanges(old, cur *plan.Desired, why string, took time.Duration) []switchEvent {
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
			if old != nil {
				switched = append(switched, switchEvent{p, f.name})
			}
			attrs := []any{"policy", p.Name, "new connections", p.String(), "cause", why, "took", took.Round(time.Microsecond)}
			if f.name == "ipv6" {
				attrs = append(attrs, "family", f.name)
			}
			d.log.Info("policy", attrs...)
		}
	}
	return switched
}

// switchEvent is a policy whose choice changed, for one family.
type switchEvent struct {
	plan.PolicyChoice
	family string
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

// runHooks starts the hooks for WAN transitions and policy switches.
func (d *Daemon) runHooks(trs []health.Transition, switched []switchEvent) {
	if d.opt.Hooks == nil || len(d.cfg.Hooks) == 0 {
		return
	}
	for _, tr := range trs {
		if tr.To == plan.StateUnknown {
			continue // carrier back; the probes decide next
		}
		name, family := splitKey(tr.WAN)
		w, _ := d.cfg.WANByName(name)
		d.opt.Hooks.Run(d.hookCtx(), d.log, d.cfg.Hooks, hooks.Event{Kind: string(tr.To), WAN: name,
			Interface: w.Interface, State: string(tr.To), Previous: string(tr.From), Family: family})
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
				ev.State = string(d.trackers[key].Status().State)
			}
		}
		d.opt.Hooks.Run(d.hookCtx(), d.log, d.cfg.Hooks, ev)
	}
}

// splitKey turns a health key into the WAN's name and the family.
func splitKey(key string) (wan, family string) {
	if name, ok := strings.CutSuffix(key, plan.Key6("")); ok {
		return name, "ipv6"
	}
	return key, "ipv4"
}

// hookCtx bounds hooks by the daemon's life.
func (d *Daemon) hookCtx() context.Context {
	if d.runCtx != nil {
		return d.runCtx
	}
	return context.Background()
}

// shutdown removes everything multiwan installed.
func (d *Daemon) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.opt.Kernel.Remove(ctx, d.log); err != nil {
		d.log.Error("removing multiwan's kernel state", "err", err)
		return
	}
	d.log.Info("removed everything multiwan installed")
}

// syncTrackers makes a tracker for every configured WAN and family,
// keeping the tracker (and so the health history) of a WAN whose probe
// settings did not change across a reload. Called with d.mu held (or
// before Run).
func (d *Daemon) syncTrackers(old *config.Config) {
	now := d.opt.Now()
	next := map[string]*health.Tracker{}
	for _, w := range d.cfg.WANs {
		for _, pf := range probeFamilies(w) {
			if tr, ok := d.trackers[pf.key]; ok && old != nil {
				if ow, ok := old.WANByName(w.Name); ok && probeEqual(ow.Probe, w.Probe) && ow.IPv6 == w.IPv6 {
					next[pf.key] = tr
					continue
				}
			}
			next[pf.key] = health.NewTracker(pf.key, pf.probe, now)
		}
	}
	d.trackers = next
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
		p.Targets = targets
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

func probeEqual(a, b config.Probe) bool {
	return a.Method == b.Method && slices.Equal(a.Targets, b.Targets) && a.Interval == b.Interval &&
		a.Timeout == b.Timeout && a.Down == b.Down && a.Up == b.Up && a.Reliability == b.Reliability &&
		a.MaxLoss == b.MaxLoss && a.MaxRTT == b.MaxRTT
}

// startProbers starts one prober per WAN. Called with d.mu held.
func (d *Daemon) startProbers() {
	ctx, cancel := context.WithCancel(d.runCtx)
	d.probing = cancel
	marks := d.applied.Marks
	for _, w := range d.cfg.WANs {
		for _, pf := range probeFamilies(w) {
			spec := probe.Spec{
				WAN:         pf.key,
				Mark:        marks[w.Name],
				Method:      pf.probe.Method,
				Targets:     pf.probe.Targets,
				Interval:    pf.probe.Interval,
				Timeout:     pf.probe.Timeout,
				Reliability: pf.probe.Reliability,
				Gateway:     d.gatewayOf(w, pf.family),
				Interface:   w.Interface,
			}
			d.probers.Add(1)
			go func() {
				defer d.probers.Done()
				if err := d.opt.Probe(ctx, spec, d.rounds); err != nil && ctx.Err() == nil {
					d.log.Error("prober stopped", "wan", spec.WAN, "err", err)
				}
			}()
		}
	}
}

// stopProbers cancels the probers and waits for them, draining rounds they
// may be blocked on. Called with d.mu held.
func (d *Daemon) stopProbers() {
	if d.probing == nil {
		return
	}
	d.probing()
	done := make(chan struct{})
	go func() { d.probers.Wait(); close(done) }()
	for {
		select {
		case <-done:
			d.probing = nil
			return
		case <-d.rounds:
		}
	}
}

// gatewayOf returns a function giving the WAN's current gateway of the
// family: the configured one, or the one learned from the kernel.
func (d *Daemon) gatewayOf(w config.WAN, family int) func() netip.Addr {
	gw, auto := w.Gateway, w.GatewayAuto
	if family == 6 {
		gw, auto = w.Gateway6, w.Gateway6Auto
	}
	if !auto {
		return func() netip.Addr { return gw }
	}
	name := w.Name
	return func() netip.Addr {
		d.mu.Lock()
		defer d.mu.Unlock()
		if family == 6 {
			return d.links[name].Gateway6
		}
		return d.links[name].Gateway
	}
}

// Reload re-reads the config. An invalid one is refused with its errors and
// nothing changes. The override survives when its WAN still exists.
func (d *Daemon) Reload() error {
	cfg, err := d.opt.Load()
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	old := d.cfg
	d.cfg = cfg
	d.syncTrackers(old)
	if d.override != "" {
		if _, ok := cfg.WANByName(d.override); !ok {
			d.log.Warn("override cleared: its WAN is gone from the config", "wan", d.override)
			d.override = ""
		}
	}
	if old.Control != cfg.Control {
		d.log.Warn("control socket settings changed; they take effect at the next start")
	}
	d.log.Info("config reloaded", "file", cfg.File)
	ctx := d.runCtx
	if ctx == nil {
		ctx = context.Background()
	}
	if err := d.refreshLinks(); err != nil {
		return err
	}
	if err := d.reconcile(ctx, false, "reload", nil); err != nil {
		return fmt.Errorf("config accepted but applying it failed: %w", err)
	}
	if d.runCtx != nil {
		d.stopProbers()
		d.startProbers()
	}
	d.kick()
	return nil
}

// Use sets the manual override: wan becomes the preferred member of every
// policy that contains it; "" or "auto" returns to the automatic choice.
func (d *Daemon) Use(wan string) error {
	if wan == "auto" {
		wan = ""
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if wan != "" {
		if _, ok := d.cfg.WANByName(wan); !ok {
			return fmt.Errorf("no WAN named %q (configured: %s)", wan, strings.Join(wanNames(d.cfg), ", "))
		}
	}
	if wan == d.override {
		return nil
	}
	prev := d.override
	d.override = wan
	d.log.Info("override", "wan", orAuto(wan), "previous", orAuto(prev))
	ctx := d.runCtx
	if ctx == nil {
		ctx = context.Background()
	}
	if err := d.reconcile(ctx, false, "override "+orAuto(wan), nil); err != nil {
		d.override = prev
		return err
	}
	d.kick()
	return nil
}

// kick wakes the loop after a control request changed state, so that it
// schedules the table's tidying.
func (d *Daemon) kick() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func orAuto(wan string) string {
	if wan == "" {
		return "auto"
	}
	return wan
}

func wanNames(cfg *config.Config) []string {
	var names []string
	for _, w := range cfg.WANs {
		names = append(names, w.Name)
	}
	return names
}

func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}
