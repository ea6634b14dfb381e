// Package daemon is multiwan's control loop. It owns the running state —
// config, per-WAN health trackers, observed links, the manual override — and
// turns every change of it into a new plan, which it hands to the kernel
// adapters when it differs from what is installed. Probe rounds, netlink
// events, control requests and reloads all arrive here; data flows one way:
// observations → plan → kernel.
//
// One goroutine, the loop, owns all of that state; nothing else reads or
// writes it, so there is no lock to forget or to hold while waiting. Other
// goroutines talk to the loop by message:
//
//   - probers send rounds on a channel; the loop hands them what they need
//     from its state (a learned gateway) through atomic values, so a prober
//     never waits for the loop;
//   - watchers (links, routes, rules, the nft table) drop changes into
//     inboxes that coalesce bursts, and wake the loop;
//   - control requests (use, reload) are messages with a reply channel;
//     status reads a snapshot the loop publishes after every change, so it
//     answers at once even while the loop is busy applying.
//
// The files split the loop by job: loop.go (lifecycle and dispatch),
// apply.go (the one path to the kernel, with retry and repair), flows.go
// (which connections a change made stale), probers.go, events.go (logs,
// events and hooks) and control.go (the control API's side).
package daemon

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/multiwan/multiwan/internal/config"
	"github.com/multiwan/multiwan/internal/control"
	"github.com/multiwan/multiwan/internal/health"
	"github.com/multiwan/multiwan/internal/hooks"
	"github.com/multiwan/multiwan/internal/kernel"
	"github.com/multiwan/multiwan/internal/links"
	"github.com/multiwan/multiwan/internal/metrics"
	"github.com/multiwan/multiwan/internal/plan"
	"github.com/multiwan/multiwan/internal/probe"
	"github.com/multiwan/multiwan/internal/wireguard"
)

// Kernel applies a desired state to the kernel and removes it again.
// *kernel.Kernel is the real one; tests use a fake. Only the loop calls it.
type Kernel interface {
	Apply(ctx context.Context, d *plan.Desired, log *slog.Logger) error
	Remove(ctx context.Context, log *slog.Logger) error
	// Invalidate makes the next Apply rewrite everything, after a failure
	// or a repair.
	Invalidate()
	// Recheck makes the next Apply compare everything with the kernel
	// again, rewriting only what differs, for when the kernel may have
	// changed behind multiwan's back.
	Recheck(ctx context.Context)
	// Compact removes what fast updates left behind (old rules no packet
	// reaches); the daemon calls it after a quiet moment.
	Compact(ctx context.Context) error
	// Ours reports whether nft generation gen was committed by this
	// Kernel, to tell its own changes of the table from other programs';
	// OursRange whether every generation after since up to gen was.
	Ours(gen uint32) bool
	OursRange(since, gen uint32) bool
	// GuardDrops reads how many packets the loop guard dropped, per
	// tunnel WAN.
	GuardDrops() (map[string]uint64, error)
	// LastChanges says what the last Apply changed in the routing: after
	// a notification that a rule or route of multiwan's was deleted, it
	// tells a removal by someone else (Apply put it back) from the echo of
	// multiwan's own deletion of a stale one.
	LastChanges() kernel.Changes
}

// Flows deletes conntrack entries by mark, in the kernel, for one address
// family (4 or 6) or both (0); *conntrack.Cleaner.
type Flows interface {
	DeleteByMarkFamily(mark, mask uint32, family int) error
}

// Hooks runs the user's hooks for an event without blocking; *hooks.Runner.
type Hooks interface {
	Run(ctx context.Context, log *slog.Logger, paths []string, timeout time.Duration, ev hooks.Event)
}

// Options are the daemon's collaborators. Only Kernel and Load are
// required.
type Options struct {
	Log    *slog.Logger
	Kernel Kernel
	// Flows may be nil: no conntrack cleanup (tests of other parts).
	Flows Flows
	// Hooks may be nil.
	Hooks Hooks
	// Load reads the config for a reload. It runs on the caller's
	// goroutine, never on the loop's: a slow disk does not stall health.
	Load func() (*config.Config, error)
	// Snapshot reads the links; links.Snapshot when nil.
	Snapshot func(*config.Config) (plan.Links, error)
	// Probe runs the probes of one WAN; probe.Run when nil. Tests replace
	// it to feed synthetic rounds.
	Probe func(ctx context.Context, spec probe.Spec, out chan<- probe.Round) error
	// WatchLinks follows link, address, route and rule changes until ctx
	// ends; links.Watch when nil.
	WatchLinks func(ctx context.Context, log *slog.Logger, fn func(links.Change))
	// WatchTable follows the nft commits that touch multiwan's table until
	// ctx ends; kernel.WatchTable when nil.
	WatchTable func(ctx context.Context, table string, log *slog.Logger, fn func(kernel.TableChange))
	// Now is the clock of health and status; time.Now when nil. Timers
	// (retries, resync) use real time.
	Now func() time.Time
	// Notify tells the service manager (systemd's sd_notify protocol) how
	// the daemon is: READY=1 once the first plan is installed, a STATUS=
	// line whenever the WANs or policies change ("isp1 up, isp2 down;
	// failover → isp1"), RELOADING=1 and READY=1 around a reload,
	// STOPPING=1, and WATCHDOG=1. It is called from several goroutines and
	// must not block for long. nil: nothing is sent.
	Notify func(state string)
	// Watchdog is how often the loop itself sends WATCHDOG=1 (half the
	// service manager's WatchdogSec): a loop that hangs stops the pings
	// and is restarted. 0: no pings.
	Watchdog time.Duration
	// Metrics records what happens (probes, transitions, applies,
	// repairs, reloads); nil: nothing.
	Metrics *metrics.Metrics
	// Counters reads multiwan's nft counters (traffic per WAN, with the
	// network listener); nil: no traffic sampled. It is called from the
	// sampler's goroutine.
	Counters func() (map[string]kernel.Count, error)
	// CountFlows counts conntrack entries by mark under mask, for the
	// connections-per-WAN metric; nil: not counted. Called from the
	// sampler's goroutine every few seconds.
	CountFlows func(mask uint32) (map[uint32]int, error)
	// Tunnels reads what tunnel WANs' interfaces say about their outer
	// traffic (tunnels.go); a *wireguard.Reader when nil.
	Tunnels TunnelReader
}

// Timing of the loop's own work.
const (
	// resync is how often the daemon re-reads the links and compares the
	// kernel with its plan even without an event: the backstop for drift
	// no notification told it about.
	resync = 30 * time.Second
	// compactAfter is how long after the last change the daemon tidies
	// the nft table: long enough that a burst of switches is over, short
	// enough that stale rules do not pile up.
	compactAfter = 2 * time.Second
	// retryMin and retryMax bound the wait before a failed apply is tried
	// again; it doubles with each failure in a row.
	retryMin = 100 * time.Millisecond
	retryMax = 10 * time.Second
	// A kind of state (the nft table, the routing) repaired repairBurst
	// times within repairWindow is being removed by something on purpose:
	// further repairs wait, doubling up to repairMaxDelay, so that
	// multiwan and that program do not fight in a loop. A burst of
	// removals (a networkd restart deleting rules one by one) costs one to
	// three repairs (see repairGap).
	repairBurst    = 10
	repairWindow   = time.Minute
	repairMaxDelay = time.Minute
	// pastEvents is how many events the daemon remembers for status and
	// for `multiwan events`.
	pastEvents = 200
	// statusEvents is how many of them status shows.
	statusEvents = 50
)

// Daemon is multiwan's running state. Create it with New and run it with
// Run; Status, Use, Reload and Subscribe may be called from any goroutine
// (they are the control socket's Handler).
type Daemon struct {
	opt Options
	log *slog.Logger

	// Channels into the loop.
	rounds   chan proberRound
	requests chan request
	linkBox  inbox[links.Change]
	nftBox   inbox[kernel.TableChange]
	// done is closed when the loop has stopped taking requests.
	done chan struct{}

	// Read by any goroutine, written by the loop.
	status atomic.Pointer[control.Status]
	events bus
	// What the sampler publishes, and the history it keeps with the loop.
	sampled
	// reloading serialises reloads, so that two of them cannot apply
	// their files in the opposite order to the one they read them in.
	// The loop never takes it.
	reloading chan struct{}

	// The loop's state: only the loop goroutine touches what follows
	// (New sets it up before the loop exists).
	cfg      *config.Config
	override string
	trackers map[string]*health.Tracker
	links    plan.Links
	// planned is the latest plan, applied or not; applied is the last one
	// the kernel took without error (nil before the first); dirty forces
	// the next sync to apply even an unchanged plan (after a failure).
	planned, applied *plan.Desired
	dirty            bool
	// kernelAt is when the kernel last took a plan, by the real clock
	// (lastApply is by Options.Now, for status): decisions are timed
	// with it.
	kernelAt   time.Time
	linkStates map[string]string
	probers    proberSet
	retry      retryState
	repair     repairState
	compactDue bool
	runCtx     context.Context
	// afterInput, when set (tests), is called by the loop after it
	// handled each input, with the input's kind.
	afterInput func(kind string)
	// Delays, variables so that tests can shorten them.
	retryMin, retryMax, repairWindow, repairBaseDelay, repairMaxDelay time.Duration
	// lastApply is when the kernel last took a plan.
	lastApply time.Time
	// notes are the config's gaps on this box, as last logged.
	notes []plan.Note
	// guardDrops is what the loop guard dropped, per tunnel WAN, as last
	// read.
	guardDrops map[string]uint64
	// statusLine is the STATUS= text last sent to the service manager.
	statusLine string
	// dns learns resolvers and keeps the resolver list (dns.go).
	dns dnsState
	// tun is what is known of tunnel WANs' interfaces (tunnels.go).
	tun tunnelState
}

// New returns a daemon for cfg. Nothing is touched until Run.
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
	if opt.WatchLinks == nil {
		opt.WatchLinks = links.Watch
	}
	if opt.WatchTable == nil {
		opt.WatchTable = kernel.WatchTable
	}
	if opt.Tunnels == nil {
		opt.Tunnels = &wireguard.Reader{}
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Notify == nil {
		opt.Notify = func(string) {}
	}
	d := &Daemon{
		opt:             opt,
		log:             opt.Log,
		rounds:          make(chan proberRound, 64),
		requests:        make(chan request),
		done:            make(chan struct{}),
		reloading:       make(chan struct{}, 1),
		cfg:             cfg,
		trackers:        map[string]*health.Tracker{},
		linkStates:      map[string]string{},
		retryMin:        retryMin,
		retryMax:        retryMax,
		repairWindow:    repairWindow,
		repairBaseDelay: time.Second,
		repairMaxDelay:  repairMaxDelay,
	}
	d.linkBox.init(256)
	d.nftBox.init(256)
	d.events.init(pastEvents)
	d.hist.init()
	d.probers.init()
	d.initDNS()
	d.tun.init()
	d.syncTrackers(nil)
	d.publishStatus()
	return d
}

// gatewayCell hands a WAN's learned gateway to its prober: the loop stores,
// the prober loads, neither waits for the other.
type gatewayCell struct{ v atomic.Value }

func (g *gatewayCell) store(a netip.Addr) { g.v.Store(a) }

func (g *gatewayCell) load() netip.Addr {
	a, _ := g.v.Load().(netip.Addr)
	return a
}

// inbox collects changes from a watcher goroutine for the loop: put never
// blocks (beyond a short critical section) and wakes the loop; a burst of
// changes is taken in one go. Past its capacity it keeps only the fact
// that changes were lost.
type inbox[T any] struct {
	mu       sync.Mutex
	items    []T
	max      int
	overflow bool
	wake     chan struct{}
}

func (b *inbox[T]) init(max int) {
	b.max = max
	b.wake = make(chan struct{}, 1)
}

func (b *inbox[T]) put(v T) {
	b.mu.Lock()
	if len(b.items) < b.max {
		b.items = append(b.items, v)
	} else {
		b.overflow = true
	}
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// take returns what was put since the last take, and whether some of it
// was lost.
func (b *inbox[T]) take() ([]T, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	items, lost := b.items, b.overflow
	b.items, b.overflow = nil, false
	return items, lost
}
