package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/multiwan/multiwan/internal/config"
	"github.com/multiwan/multiwan/internal/control"
	"github.com/multiwan/multiwan/internal/hooks"
	"github.com/multiwan/multiwan/internal/kernel"
	"github.com/multiwan/multiwan/internal/links"
	"github.com/multiwan/multiwan/internal/plan"
	"github.com/multiwan/multiwan/internal/probe"
)

// fakeKernel records what the daemon applies. It can be told to fail the
// next applies part-way: then it takes the nft table (the stage that moves
// traffic) but reports an earlier stage's error, as the real adapter does.
type fakeKernel struct {
	mu          sync.Mutex
	inKernel    *plan.Desired // what the kernel holds now
	applies     int
	invalidated int
	rechecks    int
	compacts    int
	removed     bool
	failNext    int // applies still to fail
	gens        map[uint32]bool
	changes     kernel.Changes // what the next applies report they changed
}

var errInjected = errors.New("rules: add priority 1101: injected failure")

func (k *fakeKernel) Apply(_ context.Context, d *plan.Desired, _ *slog.Logger) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.applies++
	k.inKernel = d // nft succeeds either way
	if k.failNext > 0 {
		k.failNext--
		return errInjected
	}
	return nil
}
func (k *fakeKernel) Remove(context.Context, *slog.Logger) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.removed = true
	return nil
}
func (k *fakeKernel) Invalidate() { k.mu.Lock(); k.invalidated++; k.mu.Unlock() }
func (k *fakeKernel) Compact(context.Context) error {
	k.mu.Lock()
	k.compacts++
	k.mu.Unlock()
	return nil
}
func (k *fakeKernel) Recheck(context.Context) { k.mu.Lock(); k.rechecks++; k.mu.Unlock() }
func (k *fakeKernel) Ours(gen uint32) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.gens[gen]
}

func (k *fakeKernel) OursRange(since, gen uint32) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	for g := since + 1; g <= gen; g++ {
		if !k.gens[g] {
			return false
		}
	}
	return since < gen
}

func (k *fakeKernel) GuardDrops() (map[string]uint64, error) { return nil, nil }

func (k *fakeKernel) LastChanges() kernel.Changes {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.changes
}

func (k *fakeKernel) holds() *plan.Desired {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.inKernel
}

func (k *fakeKernel) counts() (applies, invalidated int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.applies, k.invalidated
}

type deletion struct {
	mark, mask uint32
	family     int
}

type fakeFlows struct {
	mu      sync.Mutex
	deleted []deletion
}

func (f *fakeFlows) DeleteByMarkFamily(mark, mask uint32, family int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deleted = append(f.deleted, deletion{mark, mask, family})
	return nil
}

func (f *fakeFlows) take() []deletion {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.deleted
	f.deleted = nil
	return d
}

type fakeHooks struct {
	mu     sync.Mutex
	events []hooks.Event
}

func (h *fakeHooks) Run(_ context.Context, _ *slog.Logger, _ []string, _ time.Duration, ev hooks.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, ev)
}

func (h *fakeHooks) kinds() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := ""
	for i, ev := range h.events {
		if i > 0 {
			s += " "
		}
		s += ev.Kind + ":" + ev.WAN
	}
	return s
}

// fakeProbers stands in for probe.Run: the test scripts each WAN's rounds
// through a channel per health key; a prober with no targets reads its
// gateway every round, as the real one does.
type fakeProbers struct {
	mu     sync.Mutex
	feeds  map[string]chan bool // health key → outcome of the next round
	specs  map[string]probe.Spec
	starts map[string]int
	seq    uint64
	// spin makes probers of gateway-only WANs call Gateway in a tight
	// loop while they wait, to shake out lock inversions.
	spin bool
}

func newFakeProbers() *fakeProbers {
	return &fakeProbers{feeds: map[string]chan bool{}, specs: map[string]probe.Spec{}, starts: map[string]int{}}
}

func (p *fakeProbers) feed(key string) chan bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	ch := p.feeds[key]
	if ch == nil {
		ch = make(chan bool)
		p.feeds[key] = ch
	}
	return ch
}

func (p *fakeProbers) run(ctx context.Context, spec probe.Spec, out chan<- probe.Round) error {
	p.mu.Lock()
	p.specs[spec.WAN] = spec
	p.starts[spec.WAN]++
	p.mu.Unlock()
	feed := p.feed(spec.WAN)
	var spinTick <-chan time.Time
	if p.spin && len(spec.Targets) == 0 {
		t := time.NewTicker(50 * time.Microsecond)
		defer t.Stop()
		spinTick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-spinTick:
			_ = spec.Gateway()
		case ok := <-feed:
			if len(spec.Targets) == 0 {
				_ = spec.Gateway()
			}
			p.mu.Lock()
			p.seq++
			seq := p.seq
			p.mu.Unlock()
			res := probe.Result{Target: "203.0.113.20", OK: ok, RTT: time.Millisecond}
			if !ok {
				res = probe.Result{Target: "203.0.113.20", Err: "timeout"}
			}
			select {
			case out <- probe.Round{WAN: spec.WAN, Seq: seq, Start: time.Now(), Results: []probe.Result{res}}:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// fakeWatchers lets a test report link and nft changes as the watchers
// would.
type fakeWatchers struct {
	mu    sync.Mutex
	links func(links.Change)
	table func(kernel.TableChange)
	ready chan struct{}
	once  sync.Once
	n     int
}

func newFakeWatchers() *fakeWatchers { return &fakeWatchers{ready: make(chan struct{})} }

func (w *fakeWatchers) registered() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n++
	if w.n == 2 {
		w.once.Do(func() { close(w.ready) })
	}
}

func (w *fakeWatchers) watchLinks(ctx context.Context, _ *slog.Logger, fn func(links.Change)) {
	w.mu.Lock()
	w.links = fn
	w.mu.Unlock()
	w.registered()
	<-ctx.Done()
}

func (w *fakeWatchers) watchTable(ctx context.Context, _ string, _ *slog.Logger, fn func(kernel.TableChange)) {
	w.mu.Lock()
	w.table = fn
	w.mu.Unlock()
	w.registered()
	<-ctx.Done()
}

// harness runs a Daemon with fakes for everything that touches the
// system.
type harness struct {
	t       *testing.T
	d       *Daemon
	k       *fakeKernel
	flows   *fakeFlows
	hooks   *fakeHooks
	probers *fakeProbers
	watch   *fakeWatchers
	inputs  chan string // kinds of input the loop handled
	cancel  context.CancelFunc
	runErr  chan error

	mu       sync.Mutex
	counts   map[string]int
	links    plan.Links
	cfgText  string
	linksErr error
	reads    int // of the links (snapshot)
}

const testConfig = `wans:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, probe: {targets: [203.0.113.20], down: 3, up: 3}}
  - {name: isp2, interface: wan2, gateway: 192.0.2.65, probe: {targets: [203.0.113.20], down: 3, up: 3}}
policies:
  - name: failover
    members: [{wan: isp1, tier: 1}, {wan: isp2, tier: 2}]
rules:
  - {name: udp, proto: udp, policy: failover, movable: true}
default_policy: failover
`

// autoConfig has two WANs whose gateways are learned and which probe only
// their gateways: their probers read the gateway every round.
const autoConfig = `wans:
  - {name: isp1, interface: wan1, gateway: auto, probe: {interval: 10ms, down: 3, up: 3}}
  - {name: isp2, interface: wan2, gateway: auto, probe: {interval: 10ms, down: 3, up: 3}}
policies:
  - name: failover
    members: [{wan: isp1, tier: 1}, {wan: isp2, tier: 2}]
default_policy: failover
`

func parse(t testing.TB, text string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startHarness runs a daemon on cfgText until the test ends.
func startHarness(t *testing.T, cfgText string, tweak ...func(*harness)) *harness {
	t.Helper()
	h := &harness{t: t, k: &fakeKernel{gens: map[uint32]bool{}}, flows: &fakeFlows{}, hooks: &fakeHooks{},
		probers: newFakeProbers(), watch: newFakeWatchers(), inputs: make(chan string, 1), cfgText: cfgText,
		counts: map[string]int{}}
	h.links = plan.Links{
		"isp1": {Exists: true, Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.2/26")},
			Gateway: netip.MustParseAddr("192.0.2.1")},
		"isp2": {Exists: true, Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.66/26")},
			Gateway: netip.MustParseAddr("192.0.2.65")},
	}
	cfg := parse(t, cfgText)
	h.d = New(cfg, Options{
		Kernel:     h.k,
		Flows:      h.flows,
		Hooks:      h.hooks,
		Snapshot:   h.snapshot,
		Probe:      h.probers.run,
		WatchLinks: h.watch.watchLinks,
		WatchTable: h.watch.watchTable,
		Load: func() (*config.Config, error) {
			h.mu.Lock()
			text := h.cfgText
			h.mu.Unlock()
			return config.Parse("test.yaml", []byte(text))
		},
	})
	h.d.afterInput = func(kind string) {
		h.mu.Lock()
		h.counts[kind]++
		h.mu.Unlock()
		select {
		case h.inputs <- kind:
		default:
		}
	}
	h.d.retryMin, h.d.retryMax = 5*time.Millisecond, 40*time.Millisecond
	for _, f := range tweak {
		f(h)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.runErr = make(chan error, 1)
	go func() { h.runErr <- h.d.Run(ctx, nil) }()
	t.Cleanup(h.stop)
	select {
	case <-h.watch.ready:
	case err := <-h.runErr:
		t.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the daemon did not start its watchers")
	}
	h.waitFor("the first apply", func() bool {
		select {
		case err := <-h.runErr:
			t.Fatalf("Run: %v", err)
		default:
		}
		st := h.status()
		return st.Daemon != nil && st.Daemon.LastApply != nil
	})
	return h
}

// stop ends Run and checks it removed its state.
func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.runErr:
		if err != nil {
			h.t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		h.t.Fatal("Run did not return after its context ended")
	}
	h.k.mu.Lock()
	defer h.k.mu.Unlock()
	if !h.k.removed {
		h.t.Error("Run returned without removing its kernel state")
	}
}

func (h *harness) snapshot(*config.Config) (plan.Links, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reads++
	if h.linksErr != nil {
		return nil, h.linksErr
	}
	c := plan.Links{}
	for k, v := range h.links {
		c[k] = v
	}
	return c, nil
}

// onLoop runs fn on the daemon's loop, bounded in time.
func (h *harness) onLoop(fn func()) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.d.call(ctx, fn); err != nil {
		h.t.Fatalf("the loop did not answer: %v", err)
	}
}

// round feeds one probe round for the health key and waits until the loop
// handled it.
func (h *harness) round(key string, ok bool) {
	h.t.Helper()
	n := h.handled("round")
	select {
	case h.probers.feed(key) <- ok:
	case <-time.After(10 * time.Second):
		h.t.Fatalf("prober %s does not take rounds", key)
	}
	h.waitInput("round", n+1)
}

// handled is how many inputs of kind the loop handled so far.
func (h *harness) handled(kind string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.counts[kind]
}

// waitInput waits until the loop handled n inputs of kind.
func (h *harness) waitInput(kind string, n int) {
	h.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		h.mu.Lock()
		got := h.counts[kind]
		h.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-h.inputs:
		case <-deadline:
			h.t.Fatalf("timed out waiting for input %d of kind %s (handled %d)", n, kind, got)
		}
	}
}

func (h *harness) rounds(key string, ok bool, n int) {
	h.t.Helper()
	for range n {
		h.round(key, ok)
	}
}

// setCarrier changes a link's carrier and reports it as the watcher would.
func (h *harness) setCarrier(wan string, up bool) {
	h.t.Helper()
	h.mu.Lock()
	l := h.links[wan]
	l.Up = up
	h.links[wan] = l
	h.mu.Unlock()
	h.linkEvent(links.Change{})
}

// linkEvent reports a change as the link watcher would, and waits until
// the loop took it.
func (h *harness) linkEvent(c links.Change) {
	h.t.Helper()
	h.watch.mu.Lock()
	fn := h.watch.links
	h.watch.mu.Unlock()
	n := h.handled("links")
	fn(c)
	h.waitInput("links", n+1)
}

// tableEvent reports an nft commit as the table watcher would, and waits
// until the loop took it.
func (h *harness) tableEvent(c kernel.TableChange) {
	h.t.Helper()
	h.watch.mu.Lock()
	fn := h.watch.table
	h.watch.mu.Unlock()
	n := h.handled("nft")
	fn(c)
	h.waitInput("nft", n+1)
}

// repaired reports a removal (through report) and waits until no repair
// waits any more (one may be slowed down: then until it ran).
func (h *harness) repaired(report func()) {
	h.t.Helper()
	report()
	h.waitFor("the repairs", func() bool {
		idle := false
		h.onLoop(func() {
			// Notices still in the inbox have not reached the repair
			// machinery yet: the loop may serve this request first.
			h.d.linkBox.mu.Lock()
			pending := len(h.d.linkBox.items)
			h.d.linkBox.mu.Unlock()
			h.d.nftBox.mu.Lock()
			pending += len(h.d.nftBox.items)
			h.d.nftBox.mu.Unlock()
			idle = pending == 0 && len(h.d.repair.due) == 0 && len(h.d.repair.waiting) == 0
		})
		return idle
	})
}

// waitFor polls cond (each poll is a round trip through the loop, not a
// sleep) until it holds, for at most 10 s.
func (h *harness) waitFor(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// active is the failover policy's choice in the kernel.
func (h *harness) active() string {
	h.t.Helper()
	d := h.k.holds()
	if d == nil {
		return "nothing installed"
	}
	p := d.Policy("failover")
	if len(p.Active) == 0 {
		return "last resort " + p.LastResort
	}
	return p.Active[0].WAN
}

// consistent checks the invariant every test relies on: once the loop is
// idle and no apply is failing, the kernel holds exactly the plan of the
// daemon's current state.
func (h *harness) consistent(step string) {
	h.t.Helper()
	var want string
	var failing bool
	h.onLoop(func() {
		want = plan.Plan(h.d.cfg, h.d.health(), h.d.links, h.d.override).String()
		failing = h.d.retry.failures > 0
	})
	if failing {
		return
	}
	if got := h.k.holds(); got == nil || got.String() != want {
		h.t.Fatalf("%s: the kernel does not hold the current plan", step)
	}
}

func (h *harness) status() control.Status { return h.d.Status() }

func (h *harness) setConfig(text string) {
	h.mu.Lock()
	h.cfgText = text
	h.mu.Unlock()
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var _ = fmt.Sprint
