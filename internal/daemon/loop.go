package daemon

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/multiwan/multiwan/internal/config"
	"github.com/multiwan/multiwan/internal/control"
	"github.com/multiwan/multiwan/internal/health"
	"github.com/multiwan/multiwan/internal/links"
	"github.com/multiwan/multiwan/internal/plan"
)

// Run installs the plan, starts the probes and the watchers, then follows
// probe rounds, kernel events, control requests, reloads (a receive on
// reload, e.g. SIGHUP) and a periodic resync until ctx ends; then it stops
// every goroutine it started and removes everything it installed. It
// returns an error only when the first installation fails (after removing
// what it did install).
func (d *Daemon) Run(ctx context.Context, reload <-chan struct{}) error {
	d.runCtx = ctx
	defer close(d.done)

	// Every goroutine Run starts ends before Run returns. The watchers
	// start before the first apply, so that nothing another program
	// removes after it goes unnoticed until the resync.
	var owned sync.WaitGroup
	watchCtx, stopWatching := context.WithCancel(ctx)
	defer func() {
		d.opt.Notify("STOPPING=1\nSTATUS=removing multiwan's state")
		stopWatching()
		owned.Wait()
		d.probers.stopAll()
		d.shutdown()
	}()
	owned.Go(func() {
		d.opt.WatchLinks(watchCtx, d.log, d.linkBox.put)
	})
	owned.Go(func() {
		d.opt.WatchTable(watchCtx, plan.TableName, d.log, d.nftBox.put)
	})
	owned.Go(func() { d.sampler(watchCtx) })
	owned.Go(func() { d.tunnelReader(watchCtx) })
	if err := d.start(ctx); err != nil {
		return err
	}
	d.startDNS(watchCtx, &owned)
	// Only now: the service manager may declare the network online once
	// the first plan is in the kernel.
	d.opt.Notify("READY=1\nSTATUS=" + d.statusLine)
	owned.Go(func() {
		for {
			select {
			case <-watchCtx.Done():
				return
			case <-reload:
				// Reported through logs and events by the loop.
				_ = d.Reload(watchCtx)
			}
		}
	})
	d.loop(ctx)
	return nil
}

// start reads the links, installs the first plan and starts the probers.
func (d *Daemon) start(ctx context.Context) error {
	d.learnDNSNow()
	if err := d.refreshLinks(); err != nil {
		return err
	}
	if err := d.sync(ctx, "start", nil, true); err != nil {
		return err
	}
	d.restartProbers()
	d.event(control.Event{Kind: "start", Message: fmt.Sprintf("multiwan started with %s", d.cfg.File)})
	return nil
}

// loop handles one input at a time until ctx ends.
func (d *Daemon) loop(ctx context.Context) {
	tick := time.NewTicker(resync)
	defer tick.Stop()
	compact := newTimer()
	defer compact.Stop()
	// The watchdog pings come from this loop and nowhere else: a loop that
	// hangs (an apply that never returns) stops them, and the service
	// manager restarts the daemon, which adopts the kernel state.
	var watchdog <-chan time.Time
	if d.opt.Watchdog > 0 {
		t := time.NewTicker(d.opt.Watchdog)
		defer t.Stop()
		watchdog = t.C
		d.opt.Notify("WATCHDOG=1")
	}
	for {
		if d.compactDue {
			d.compactDue = false
			compact.Reset(compactAfter)
		}
		var kind string
		select {
		case <-ctx.Done():
			return
		case r := <-d.rounds:
			d.observe(ctx, r)
			kind = "round"
		case <-d.linkBox.wake:
			d.linkChanges(ctx)
			kind = "links"
		case <-d.nftBox.wake:
			d.tableChanges(ctx)
			kind = "nft"
		case <-d.dns.box.wake:
			d.dnsChanges(ctx)
			kind = "dns"
		case <-d.tun.box.wake:
			d.tunnelReadings(ctx)
			kind = "tunnels"
		case req := <-d.requests:
			// Rounds already waiting happened before the request was
			// made: take them first, so that a request sees their effect.
			d.drainRounds(ctx)
			req.reply <- d.handle(ctx, req)
			kind = "request"
		case <-tick.C:
			d.resync(ctx, "resync")
			kind = "resync"
		case <-d.retry.timer.C():
			d.retryApply(ctx)
			kind = "retry"
		case <-d.repair.timer.C():
			d.repairDue(ctx)
			kind = "repair"
		case <-watchdog:
			d.opt.Notify("WATCHDOG=1")
			kind = "watchdog"
		case <-compact.C():
			compact.fired()
			if err := d.opt.Kernel.Compact(ctx); err != nil {
				d.log.Warn("tidying the nft table failed; the next change rewrites it", "err", err)
				d.opt.Kernel.Invalidate()
				d.dirty = true
			}
			kind = "compact"
		}
		if d.afterInput != nil {
			d.afterInput(kind)
		}
	}
}

func (d *Daemon) drainRounds(ctx context.Context) {
	for {
		select {
		case r := <-d.rounds:
			d.observe(ctx, r)
			if d.afterInput != nil {
				d.afterInput("round")
			}
		default:
			return
		}
	}
}

// timer is a time.Timer whose channel is nil while it is not armed, so
// that a select on it blocks instead of firing on a stale value.
type timer struct {
	t     *time.Timer
	armed bool
}

func newTimer() *timer { return &timer{} }

// C returns the channel to select on: nil unless armed.
func (t *timer) C() <-chan time.Time {
	if t == nil || !t.armed {
		return nil
	}
	return t.t.C
}

// Reset arms the timer to fire after d, replacing any earlier arming.
func (t *timer) Reset(d time.Duration) {
	if t.t == nil {
		t.t = time.NewTimer(d)
	} else {
		t.t.Reset(d)
	}
	t.armed = true
}

// Stop disarms the timer.
func (t *timer) Stop() {
	if t.t != nil {
		t.t.Stop()
	}
	t.armed = false
}

// fired must be called when the timer's channel delivered.
func (t *timer) fired() { t.armed = false }

// observe feeds a probe round to its WAN's tracker and replans on a
// transition.
func (d *Daemon) observe(ctx context.Context, r proberRound) {
	if !d.probers.current(r.key, r.id) {
		return // a prober replaced by a reload, winding down
	}
	tr := d.trackers[r.key]
	if tr == nil {
		return
	}
	if d.probeBlind(r.Judged) && !r.Round.Good(tr.Reliability()) {
		d.log.Debug("probe round ignored: judged while multiwan's rules or routes were missing", "wan", r.key, "round", r.Seq)
		return
	}
	t, changed := tr.Observe(r.Round, d.opt.Now())
	wan, family := splitKey(r.key)
	d.opt.Metrics.Round(wan, family, r.Round)
	d.hist.round(r.key, time.Now(), r.Round, tr.Status().State)
	if !changed {
		d.publishStatus() // RTT and loss moved
		return
	}
	decided := time.Now()
	_ = d.sync(ctx, "health", []health.Transition{t}, false)
	if !r.Judged.IsZero() {
		// Where a switch's time goes: the prober judging the round, the
		// loop taking it, the kernel taking the new plan, and what
		// follows (conntrack cleanup, events, hooks started).
		attrs := []any{"wan", wan, "round", r.Seq, "judged_to_loop", decided.Sub(r.Judged)}
		if d.kernelAt.After(decided) {
			attrs = append(attrs, "loop_to_kernel", d.kernelAt.Sub(decided))
		}
		d.log.Debug("health decision", append(attrs, "loop_to_done", time.Since(decided))...)
	}
}

// linkChanges takes what the link watcher reported and replans; a change
// that removed something of multiwan's (a route, a rule) is a repair.
func (d *Daemon) linkChanges(ctx context.Context) {
	changes, lost := d.linkBox.take()
	var whats []string
	news := lost
	for _, c := range changes {
		switch {
		case !c.Repair:
			news = true
		case c.Rule != nil && d.applied != nil && !d.dirty && !links.RuleWanted(d.applied.Rules, *c.Rule):
			// A rule the plan no longer wants: mostly the echo of
			// multiwan's own move of a rule on a switch. Nothing to
			// put back, nothing to re-read.
			d.log.Debug("a rule the plan does not want was deleted", "rule", c.What)
		default:
			news = true
			whats = append(whats, c.What)
		}
	}
	if lost {
		whats = append(whats, "link events lost")
	}
	switch {
	case len(whats) > 0:
		d.requestRepair(ctx, repairRouting, whats...)
	case news:
		d.refreshAndSync(ctx, false, "netlink event")
	}
}

// refreshAndSync re-reads the links, tells the trackers about carrier
// changes and replans. recheck makes the kernel adapter compare rules and
// routes with the kernel instead of trusting what it applied last.
func (d *Daemon) refreshAndSync(ctx context.Context, recheck bool, why string) {
	old := d.links
	if err := d.refreshLinks(); err != nil {
		d.log.Error("reading links failed; will retry on the next event", "err", err)
		d.scheduleRetry(err)
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
	if recheck {
		d.opt.Kernel.Recheck(ctx)
	}
	_ = d.sync(ctx, why, trs, recheck)
}

// resync is the periodic backstop: links re-read, kernel compared; and
// the loop guard's count read.
func (d *Daemon) resync(ctx context.Context, why string) {
	d.refreshAndSync(ctx, true, why)
	d.checkGuard()
}

// checkGuard logs, once per tunnel WAN, that the loop guard dropped its
// outer packets: routing sent them into the tunnel itself, so they are not
// pinned to the underlay. Status keeps saying it, with the count.
func (d *Daemon) checkGuard() {
	if d.applied == nil || !slices.ContainsFunc(d.applied.Table.Chains, func(c plan.Chain) bool { return c.Name == plan.ChainGuard }) {
		return
	}
	drops, err := d.opt.Kernel.GuardDrops()
	if err != nil {
		d.log.Debug("reading the loop guard failed", "err", err)
		return
	}
	if d.guardDrops == nil {
		d.guardDrops = map[string]uint64{}
	}
	for wan, n := range drops {
		if n > 0 && d.guardDrops[wan] == 0 {
			d.log.Warn("loop guard dropped outer packets of a tunnel routed into the tunnel itself",
				"wan", wan, "packets", n, "hint", "pin the tunnel's outer traffic to its underlay: a rule for its endpoint, or a mark on its socket")
			d.event(control.Event{Kind: "loop-guard", WAN: wan,
				Message: fmt.Sprintf("loop guard dropped %d outer packets of %s routed into %s itself", n, wan, wan)})
		}
		d.guardDrops[wan] = n
	}
	d.publishStatus()
}

func carrier(l plan.Link) bool { return l.Exists && l.Up }

// refreshLinks reads the links and hands learned gateways to the probers.
func (d *Daemon) refreshLinks() error {
	obs, err := d.opt.Snapshot(d.cfg)
	if err != nil {
		return fmt.Errorf("read links: %w", err)
	}
	d.links = obs
	d.mergeDNS()
	d.tunnelsRefreshed()
	d.probers.updateGateways(d.cfg, d.links)
	return nil
}

// request is a control request for the loop.
type request struct {
	kind  string // "use", "reload" or "call"
	wan   string
	cfg   *config.Config
	call  func() // "call": run on the loop (tests)
	reply chan error
}

// send hands req to the loop and waits for its answer, or for ctx or the
// loop's end.
func (d *Daemon) send(ctx context.Context, req request) error {
	req.reply = make(chan error, 1) // the loop never waits to answer
	select {
	case d.requests <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-d.done:
		return errStopped
	}
	select {
	case err := <-req.reply:
		return err
	case <-ctx.Done():
		// The loop still carries the request out; only the answer is
		// lost.
		return ctx.Err()
	}
}

var errStopped = &control.Refused{Msg: "multiwan is stopping"}

// handle carries out a control request on the loop.
func (d *Daemon) handle(ctx context.Context, req request) error {
	switch req.kind {
	case "use":
		return d.use(ctx, req.wan)
	case "reload":
		return d.reload(ctx, req.cfg)
	case "call":
		req.call()
		return nil
	}
	return fmt.Errorf("unknown request %q", req.kind)
}

// use sets the manual override. The override is what the user asked for
// and stays set even when applying it fails: the apply is retried until
// the kernel has it, and the caller is told that it is not there yet.
func (d *Daemon) use(ctx context.Context, wan string) error {
	if wan == "auto" {
		wan = ""
	}
	if wan != "" {
		if _, ok := d.cfg.WANByName(wan); !ok {
			return &control.Refused{Msg: fmt.Sprintf("no WAN named %q (configured: %s)", wan, joinNames(d.cfg))}
		}
	}
	if wan == d.override {
		return nil
	}
	prev := d.override
	d.override = wan
	d.log.Info("override", "wan", orAuto(wan), "previous", orAuto(prev))
	d.event(control.Event{Kind: "override", WAN: wan, From: orAuto(prev), To: orAuto(wan),
		Message: fmt.Sprintf("override %s (was %s)", orAuto(wan), orAuto(prev))})
	if err := d.sync(ctx, "override "+orAuto(wan), nil, false); err != nil {
		return fmt.Errorf("override %s is set, but the kernel could not be updated yet; multiwan retries (see multiwan status): %w", orAuto(wan), err)
	}
	return nil
}

// reload switches to cfg, which the caller read and validated. The probers
// follow the new config whether or not the kernel takes the new plan at
// once; a failed apply is retried like any other.
func (d *Daemon) reload(ctx context.Context, cfg *config.Config) error {
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
	if old.StateDir != cfg.StateDir {
		d.log.Warn("state_dir changed; it takes effect at the next start")
	}
	if old.HTTP != cfg.HTTP {
		d.log.Warn("http listener settings changed; they take effect at the next start (the traffic counters follow at once)")
	}
	d.log.Info("config reloaded", "file", cfg.File)
	d.event(control.Event{Kind: "reload", Message: "config reloaded from " + cfg.File})
	if err := d.refreshLinks(); err != nil {
		d.log.Error("reading links failed; planning with the last known ones", "err", err)
	}
	err := d.sync(ctx, "reload", nil, false)
	d.restartProbers()
	if err != nil {
		return fmt.Errorf("config accepted but applying it failed; multiwan retries (see multiwan status): %w", err)
	}
	return nil
}

// call runs fn on the loop and waits for it: tests use it to look at the
// loop's state without racing it.
func (d *Daemon) call(ctx context.Context, fn func()) error {
	return d.send(ctx, request{kind: "call", call: fn})
}

// syncTrackers makes a tracker for every configured WAN and family,
// keeping the tracker (and so the health history) of a WAN whose probe
// settings did not change across a reload.
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

func probeEqual(a, b config.Probe) bool {
	return a.Method == b.Method && slices.Equal(a.Targets, b.Targets) && a.Interval == b.Interval &&
		a.Timeout == b.Timeout && a.Down == b.Down && a.Up == b.Up && a.Reliability == b.Reliability &&
		a.MaxLoss == b.MaxLoss && a.MaxRTT == b.MaxRTT
}

// health returns the trackers' states.
func (d *Daemon) health() plan.Health {
	h := plan.Health{}
	for name, tr := range d.trackers {
		h[name] = tr.Status().State
	}
	return h
}

func orAuto(wan string) string {
	if wan == "" {
		return "auto"
	}
	return wan
}

func joinNames(cfg *config.Config) string {
	var s string
	for i, w := range cfg.WANs {
		if i > 0 {
			s += ", "
		}
		s += w.Name
	}
	return s
}
