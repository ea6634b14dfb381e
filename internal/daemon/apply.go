package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/multiwan/multiwan/internal/control"
	"github.com/multiwan/multiwan/internal/health"
	"github.com/multiwan/multiwan/internal/plan"
)

// sync is the one path from the daemon's state to the kernel: it plans
// from the current state and applies the plan when it differs from what
// the kernel was last given (or when force or an earlier failure says the
// kernel cannot be trusted to have it). Health transitions trs are logged,
// published and handed to hooks whatever happens next: they did happen.
// That, and all else that is not the kernel's (gaps in the config, the
// resolver list), is done once the kernel has the plan, or failed to take
// it: the time from a decision to the kernel is planning and applying
// alone.
//
// Success is decided at the end (kube-proxy's habit): any failure leaves
// the daemon believing nothing about the kernel — the caches are dropped,
// the next sync applies everything, and a retry is scheduled with backoff.
// What followed an apply (conntrack cleanup, switch events and hooks)
// happens only once the kernel really changed, so it happens exactly once.
func (d *Daemon) sync(ctx context.Context, why string, trs []health.Transition, force bool) error {
	defer d.publishStatus()
	decided := time.Now()
	desired := plan.Plan(d.cfg, d.health(), d.links, d.override)
	d.planned = desired
	apply := force || d.dirty || d.applied == nil || !desired.SameKernelState(d.applied)
	var err error
	var took time.Duration
	if apply {
		if err = d.opt.Kernel.Apply(ctx, desired, d.log); err == nil {
			d.kernelAt = time.Now()
			took = d.kernelAt.Sub(decided)
		}
	}
	for _, tr := range trs {
		d.transition(ctx, tr)
	}
	d.checkNotes()
	d.resolvers(ctx, desired, why)
	if err != nil {
		d.applyFailed(why, err)
		return err
	}
	if apply {
		d.opt.Metrics.Applied(took)
		d.dirty = false
		d.compactDue = true
		d.applySucceeded()
	}
	old := d.applied
	d.applied = desired
	d.deleteFlows(staleFlows(old, desired))
	d.moveOuterFlows(old, desired)
	d.overlaysChanged(ctx, old, desired, trs)
	switched := d.announce(ctx, old, desired, why, took)
	d.runSwitchHooks(ctx, switched)
	return nil
}

// checkNotes logs each gap of the config on this box when it first
// appears (at start, on reload, when a link starts carrying IPv6).
func (d *Daemon) checkNotes() {
	notes := plan.Notes(d.cfg, d.links)
	for _, n := range notes {
		if !slices.Contains(d.notes, n) {
			d.log.Warn("gap in the config", "wan", n.WAN, "note", n.Msg)
		}
	}
	d.notes = notes
}

// retryState is what the daemon knows of failed applies.
type retryState struct {
	timer    timer
	failures int // in a row
	lastErr  string
	lastAt   time.Time
	next     time.Time
}

// applyFailed forgets what the kernel is believed to hold and schedules a
// full retry.
func (d *Daemon) applyFailed(why string, err error) {
	d.opt.Kernel.Invalidate()
	d.dirty = true
	d.opt.Metrics.ApplyFailed()
	d.scheduleRetry(err)
	msg := oneLine(err)
	level := slog.LevelWarn
	if d.retry.failures == 1 || msg != d.retry.lastErr {
		level = slog.LevelError
	}
	d.retry.lastErr, d.retry.lastAt = msg, d.opt.Now()
	d.log.Log(context.Background(), level, "apply failed; retrying", "cause", why, "failures", d.retry.failures,
		"retry_in", time.Until(d.retry.next).Round(time.Millisecond), "err", msg)
	d.event(control.Event{Kind: "apply-failed", Cause: why,
		Message: fmt.Sprintf("applying the plan failed (%d in a row): %s", d.retry.failures, msg)})
}

// scheduleRetry arms the retry timer with the next backoff.
func (d *Daemon) scheduleRetry(err error) {
	d.retry.failures++
	wait := d.retryMin << min(d.retry.failures-1, 16)
	if wait > d.retryMax || wait <= 0 {
		wait = d.retryMax
	}
	d.retry.next = time.Now().Add(wait)
	d.retry.timer.Reset(wait)
	if d.retry.lastErr == "" && err != nil {
		d.retry.lastErr, d.retry.lastAt = oneLine(err), d.opt.Now()
	}
}

// applySucceeded clears the failure state after a successful apply.
func (d *Daemon) applySucceeded() {
	if d.retry.failures > 0 {
		d.log.Info("kernel matches the plan again", "after_failures", d.retry.failures)
		d.event(control.Event{Kind: "apply-recovered",
			Message: fmt.Sprintf("the kernel matches the plan again after %d failed attempts", d.retry.failures)})
	}
	d.retry.timer.Stop()
	d.retry = retryState{}
	d.lastApply = d.opt.Now()
}

// retryApply is the retry timer's work: links re-read, everything
// compared and rewritten where it differs.
func (d *Daemon) retryApply(ctx context.Context) {
	d.retry.timer.fired()
	d.opt.Kernel.Invalidate()
	d.refreshAndSync(ctx, true, "retry")
}

// What a repair puts back.
const (
	repairNFT     = "nft table"
	repairRouting = "routing"
)

// Repair pacing. The first notice of a removal is repaired at once (the
// WAN's probes would otherwise fail on the missing rules and declare it
// down); the rest of a burst (networkd deletes its foreign rules one by
// one, a flushed table reports each route) waits until repairGap after
// the last repair, and is repaired in one go.
const repairGap = 25 * time.Millisecond

// repairState keeps, per kind of state, what is waiting to be put back and
// when it was last repaired, so that something removing it again and again
// is noticed and not fought in a loop.
type repairState struct {
	init    bool
	timer   timer                  // the next waiting repair
	waiting map[string][]string    // per kind, what waits
	due     map[string]time.Time   // per kind, when the waiting repair runs
	lastAt  map[string]time.Time   // per kind, the last repair
	recent  map[string][]time.Time // per kind, the repairs within the window
	// backoff says, per kind, why its repairs are slowed; status shows it
	// until a window passes without the state being removed.
	backoff map[string]string
	count   int // repairs that put something back, since start
	last    string
	lastTS  time.Time
	// routesBack is when a repair last put back rules or routes someone
	// else removed (see probeBlind).
	routesBack time.Time
}

// blindWindow bounds how long before a routing repair a failed probe round
// is taken for a consequence of the removal rather than of the uplink: the
// removal's notice, the repair's own reading of the kernel and its apply
// take ~100–300 ms.
const blindWindow = time.Second

// probeBlind reports whether a round judged at judged failed because
// multiwan's own rules or routes were missing: probes leave by the WAN's
// mark and table, and while someone else's `ip route flush table 101`
// stands they fail at send, whatever the uplink does. Such rounds, judged
// before the routing repair that put the state back, are not evidence:
// with fast confirmation three of them fit in the repair's window and
// would take the WAN down, and its cleanup would cut every connection on
// it.
func (d *Daemon) probeBlind(judged time.Time) bool {
	back := d.repair.routesBack
	return !judged.IsZero() && !back.IsZero() && !judged.After(back) && back.Sub(judged) < blindWindow
}

// requestRepair notes that state of kind was removed (what says how): it
// is repaired at once, or, within a burst or while repairs of that kind
// are slowed down, once its wait is over.
func (d *Daemon) requestRepair(ctx context.Context, kind string, whats ...string) {
	r := &d.repair
	if !r.init {
		r.init = true
		r.waiting, r.due, r.lastAt = map[string][]string{}, map[string]time.Time{}, map[string]time.Time{}
		r.recent, r.backoff = map[string][]time.Time{}, map[string]string{}
	}
	for _, what := range whats {
		if len(r.waiting[kind]) < 64 {
			r.waiting[kind] = append(r.waiting[kind], what)
		}
	}
	if _, waiting := r.due[kind]; waiting {
		return // its repair is scheduled and takes this too
	}
	if next := r.lastAt[kind].Add(repairGap); time.Now().Before(next) {
		r.due[kind] = next
		d.armRepairTimer()
		return
	}
	d.repairKind(ctx, kind)
}

// repairDue runs the waiting repairs whose time came.
func (d *Daemon) repairDue(ctx context.Context) {
	r := &d.repair
	r.timer.fired()
	now := time.Now()
	for _, kind := range []string{repairNFT, repairRouting} {
		if due, ok := r.due[kind]; ok && !now.Before(due) {
			delete(r.due, kind)
			d.repairKind(ctx, kind)
		}
	}
	d.armRepairTimer()
}

func (d *Daemon) armRepairTimer() {
	var first time.Time
	for _, due := range d.repair.due {
		if first.IsZero() || due.Before(first) {
			first = due
		}
	}
	if first.IsZero() {
		d.repair.timer.Stop()
		return
	}
	d.repair.timer.Reset(time.Until(first))
}

// repairKind puts back what is waiting for kind. Only what the apply
// really had to put back counts as a repair: the link watcher also
// reports multiwan's own deletions of stale rules and routes. Past
// repairBurst repairs within the window, the next repair of the kind
// waits, twice as long each time, and the daemon says so loudly,
// so that multiwan and a program that keeps deleting its state (a
// firewall reload in a loop) do not fight at full speed.
func (d *Daemon) repairKind(ctx context.Context, kind string) {
	r := &d.repair
	what := summarize(r.waiting[kind])
	delete(r.waiting, kind)
	now := time.Now()
	r.lastAt[kind] = now
	if kind == repairNFT {
		d.opt.Kernel.Invalidate()
		d.dirty = true
	}
	d.refreshAndSync(ctx, true, "repair")
	if kind == repairRouting {
		c := d.opt.Kernel.LastChanges()
		if c.RulesAdded+c.RoutesAdded == 0 {
			d.log.Debug("routing checked after a deletion; nothing was missing", "deleted", what)
			return
		}
		what = fmt.Sprintf("%s (%d rules, %d routes put back)", what, c.RulesAdded, c.RoutesAdded)
		r.routesBack = time.Now()
	}
	r.count++
	d.opt.Metrics.Repaired(kind)
	r.last, r.lastTS = kind+": "+what, d.opt.Now()
	d.log.Warn("repaired state another program removed", "what", kind, "missing", what,
		"took", time.Since(now).Round(time.Microsecond))
	d.event(control.Event{Kind: "repair", Cause: what, Message: fmt.Sprintf("repaired %s: %s", kind, what)})
	defer d.publishStatus()

	recent := r.recent[kind][:0]
	for _, t := range r.recent[kind] {
		if now.Sub(t) < d.repairWindow {
			recent = append(recent, t)
		}
	}
	r.recent[kind] = append(recent, now)
	n := len(r.recent[kind])
	if n < repairBurst {
		delete(r.backoff, kind)
		return
	}
	delay := min(d.repairBaseDelay<<min(n-repairBurst, 10), d.repairMaxDelay)
	r.lastAt[kind] = now.Add(delay - repairGap) // the next repair waits for delay
	r.backoff[kind] = fmt.Sprintf("%s removed again and again (%d repairs within %s); the next repair waits %s",
		kind, n, d.repairWindow, delay)
	d.log.Error("something keeps removing multiwan's state; slowing repairs down",
		"what", kind, "repairs", n, "within", d.repairWindow, "next_repair_after", delay, "last", what,
		"hint", repairHint(kind))
	d.event(control.Event{Kind: "repair", Cause: what,
		Message: fmt.Sprintf("%s removed again and again; the next repair waits %s", kind, delay)})
}

// repairHint says where the usual culprits are configured.
func repairHint(kind string) string {
	if kind == repairNFT {
		return "a ruleset loaded with `flush ruleset` (nftables.service, firewalld reload) deletes every table; flush only your own tables (see README: Living with other programs)"
	}
	return "systemd-networkd deletes foreign ip rules unless ManageForeignRoutingPolicyRules=no (see README: Living with other programs)"
}

// tableChanges looks at the commits that touched multiwan's nft table:
// its own are expected; anyone else's (a `flush ruleset`, a deleted rule)
// is repaired by replacing the table whole.
func (d *Daemon) tableChanges(ctx context.Context) {
	changes, lost := d.nftBox.take()
	var foreign []string
	for _, c := range changes {
		switch {
		case c.Lost && d.opt.Kernel.OursRange(c.Since, c.Gen):
			// The daemon's own big commit overflowed the socket: nothing
			// else happened in between.
		case c.Lost:
			foreign = append(foreign, c.Summary)
		case !d.opt.Kernel.Ours(c.Gen):
			by := c.Comm
			if by == "" {
				by = "unknown process"
			}
			foreign = append(foreign, fmt.Sprintf("%s by %s (pid %d)", c.Summary, by, c.PID))
		}
	}
	if lost {
		foreign = append(foreign, "nft notifications lost")
	}
	if len(foreign) > 0 {
		d.requestRepair(ctx, repairNFT, foreign...)
	}
}

// summarize joins what a burst of changes reported, bounded.
func summarize(whats []string) string {
	seen := map[string]bool{}
	var uniq []string
	for _, w := range whats {
		if w != "" && !seen[w] {
			seen[w] = true
			uniq = append(uniq, w)
		}
	}
	const most = 4
	s := strings.Join(uniq[:min(len(uniq), most)], "; ")
	if len(uniq) > most {
		s += fmt.Sprintf("; and %d more", len(uniq)-most)
	}
	if s == "" {
		s = "unspecified change"
	}
	return s
}

// shutdown removes everything multiwan installed.
func (d *Daemon) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d.event(control.Event{Kind: "stop", Message: "multiwan stopping; removing its state"})
	defer d.events.closeAll()
	if err := d.opt.Kernel.Remove(ctx, d.log); err != nil {
		d.log.Error("removing multiwan's kernel state", "err", err)
		return
	}
	d.log.Info("removed everything multiwan installed")
}

func oneLine(err error) string {
	if err == nil {
		return ""
	}
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}
