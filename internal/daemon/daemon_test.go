package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/multiwan/multiwan/internal/config"
	"github.com/multiwan/multiwan/internal/hooks"
	"github.com/multiwan/multiwan/internal/plan"
	"github.com/multiwan/multiwan/internal/probe"
)

type fakeKernel struct {
	applied     *plan.Desired
	applies     int
	invalidated int
	removed     bool
	fail        error
}

func (k *fakeKernel) Apply(_ context.Context, d *plan.Desired, _ *slog.Logger) error {
	if k.fail != nil {
		return k.fail
	}
	k.applied = d
	k.applies++
	return nil
}
func (k *fakeKernel) Remove(context.Context, *slog.Logger) error { k.removed = true; return nil }
func (k *fakeKernel) Invalidate()                                { k.invalidated++ }
func (k *fakeKernel) Compact(context.Context) error              { return nil }
func (k *fakeKernel) Recheck(context.Context)                    {}

type deletion struct{ mark, mask uint32 }

type fakeFlows struct{ deleted []deletion }

func (f *fakeFlows) DeleteByMarkFamily(mark, mask uint32, family int) error {
	f.deleted = append(f.deleted, deletion{mark, mask})
	return nil
}

type fakeHooks struct{ events []hooks.Event }

func (h *fakeHooks) Run(_ context.Context, _ *slog.Logger, _ []string, ev hooks.Event) {
	h.events = append(h.events, ev)
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
hooks: [/bin/true]
`

type harness struct {
	t     *testing.T
	d     *Daemon
	k     *fakeKernel
	flows *fakeFlows
	hooks *fakeHooks
	links plan.Links
	now   time.Time
	seq   uint64
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(testConfig))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, k: &fakeKernel{}, flows: &fakeFlows{}, hooks: &fakeHooks{},
		now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	h.links = plan.Links{
		"isp1": {Exists: true, Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.2/26")}},
		"isp2": {Exists: true, Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.66/26")}},
	}
	h.d = New(cfg, Options{
		Kernel:   h.k,
		Flows:    h.flows,
		Hooks:    h.hooks,
		Snapshot: func(*config.Config) (plan.Links, error) { return clone(h.links), nil },
		Now:      func() time.Time { return h.now },
		Load:     func() (*config.Config, error) { return config.Parse("test.yaml", []byte(testConfig)) },
	})
	h.d.mu.Lock()
	if err := h.d.refreshLinks(); err != nil {
		t.Fatal(err)
	}
	if err := h.d.reconcile(context.Background(), true, "start", nil); err != nil {
		t.Fatal(err)
	}
	h.d.mu.Unlock()
	return h
}

func clone(l plan.Links) plan.Links {
	c := plan.Links{}
	for k, v := range l {
		c[k] = v
	}
	return c
}

// round feeds one probe round for wan.
func (h *harness) round(wan string, ok bool) {
	h.now = h.now.Add(100 * time.Millisecond)
	h.seq++
	res := probe.Result{Target: "203.0.113.20", OK: ok, RTT: time.Millisecond}
	if !ok {
		res = probe.Result{Target: "203.0.113.20", Err: "timeout"}
	}
	h.d.observe(context.Background(), probe.Round{WAN: wan, Seq: h.seq, Start: h.now, Results: []probe.Result{res}})
}

func (h *harness) rounds(wan string, ok bool, n int) {
	for range n {
		h.round(wan, ok)
	}
}

func (h *harness) carrier(wan string, up bool) {
	l := h.links[wan]
	l.Up = up
	h.links[wan] = l
	h.d.mu.Lock()
	h.d.linksChanged(context.Background(), false, "netlink event")
	h.d.mu.Unlock()
}

func (h *harness) active() string {
	p := h.k.applied.Policy("failover")
	if len(p.Active) == 0 {
		return "last resort " + p.LastResort
	}
	return p.Active[0].WAN
}

func TestFailoverAndCleanup(t *testing.T) {
	h := newHarness(t)
	h.rounds("isp1", true, 3)
	h.rounds("isp2", true, 3)
	if h.active() != "isp1" {
		t.Fatalf("active %s", h.active())
	}
	m1 := h.k.applied.Marks["isp1"]
	h.rounds("isp1", false, 2)
	if h.active() != "isp1" || len(h.flows.deleted) != 0 {
		t.Fatalf("switched before down rounds: %s %v", h.active(), h.flows.deleted)
	}
	h.round("isp1", false)
	if h.active() != "isp2" {
		t.Fatalf("after 3 bad rounds: %s", h.active())
	}
	if want := (deletion{m1, h.k.applied.IDMask}); len(h.flows.deleted) != 1 || h.flows.deleted[0] != want {
		t.Fatalf("deleted %v, want exactly %v", h.flows.deleted, want)
	}
	kinds := []string{}
	for _, ev := range h.hooks.events {
		kinds = append(kinds, ev.Kind+":"+ev.WAN)
	}
	if got := strings.Join(kinds, " "); got != "up:isp1 up:isp2 down:isp1 switch:isp2" {
		t.Fatalf("hook events %q", got)
	}

	// Recovery: new connections return; isp2's movable flows follow, its
	// other connections stay.
	h.flows.deleted = nil
	h.rounds("isp1", true, 3)
	if h.active() != "isp1" {
		t.Fatalf("after recovery: %s", h.active())
	}
	m2 := h.k.applied.Marks["isp2"]
	mov := h.k.applied.MovableBit
	if want := (deletion{m2 | mov, h.k.applied.IDMask | mov}); len(h.flows.deleted) != 1 || h.flows.deleted[0] != want {
		t.Fatalf("deleted %v, want only isp2's movable flows %v", h.flows.deleted, want)
	}
}

func TestCarrierLossIsImmediate(t *testing.T) {
	h := newHarness(t)
	h.rounds("isp1", true, 3)
	h.rounds("isp2", true, 3)
	h.carrier("isp1", false)
	if h.active() != "isp2" {
		t.Fatalf("after carrier loss: %s", h.active())
	}
	if st := h.d.Status(); st.WANs[0].State != "down" {
		t.Fatalf("status %+v", st.WANs[0])
	}
	h.carrier("isp1", true)
	if h.active() != "isp2" {
		t.Fatalf("carrier back but no good rounds yet: %s", h.active())
	}
	h.rounds("isp1", true, 3)
	if h.active() != "isp1" {
		t.Fatalf("after good rounds: %s", h.active())
	}
}

func TestUseOverride(t *testing.T) {
	h := newHarness(t)
	h.rounds("isp1", true, 3)
	h.rounds("isp2", true, 3)
	if err := h.d.Use("isp2"); err != nil {
		t.Fatal(err)
	}
	if h.active() != "isp2" || h.d.Status().Override != "isp2" {
		t.Fatalf("use isp2: %s %q", h.active(), h.d.Status().Override)
	}
	if err := h.d.Use("nope"); err == nil || !strings.Contains(err.Error(), "isp1, isp2") {
		t.Fatalf("use nope: %v", err)
	}
	// The override survives a reload.
	if err := h.d.Reload(); err != nil {
		t.Fatal(err)
	}
	if h.active() != "isp2" {
		t.Fatalf("after reload: %s", h.active())
	}
	// A dead override is not used.
	h.rounds("isp2", false, 3)
	if h.active() != "isp1" {
		t.Fatalf("override down: %s", h.active())
	}
	if err := h.d.Use("auto"); err != nil {
		t.Fatal(err)
	}
	if h.d.Status().Override != "" {
		t.Fatal("override not cleared")
	}
}

func TestReloadRefusedChangesNothing(t *testing.T) {
	h := newHarness(t)
	before := h.k.applies
	h.d.opt.Load = func() (*config.Config, error) { return config.Parse("bad.yaml", []byte("wans: [\n")) }
	if err := h.d.Reload(); err == nil {
		t.Fatal("bad reload accepted")
	}
	if h.k.applies != before {
		t.Fatal("a refused reload applied something")
	}
}

// TestRandomOrder replays random sequences of probe rounds, carrier changes
// and overrides, and checks after every step that the kernel holds exactly
// the plan of the daemon's current state, and that no cleanup ever asks to
// delete unmarked or foreign connections.
func TestRandomOrder(t *testing.T) {
	for seed := range uint64(30) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			h := newHarness(t)
			rng := rand.New(rand.NewPCG(seed, 0))
			wans := []string{"isp1", "isp2"}
			for step := range 400 {
				wan := wans[rng.IntN(2)]
				switch n := rng.IntN(20); {
				case n < 14:
					h.round(wan, rng.IntN(3) > 0)
				case n < 17:
					h.carrier(wan, rng.IntN(2) == 0)
				case n < 19:
					if err := h.d.Use([]string{"isp1", "isp2", "auto"}[rng.IntN(3)]); err != nil {
						t.Fatal(err)
					}
				default:
					if err := h.d.Reload(); err != nil {
						t.Fatal(err)
					}
				}
				h.d.mu.Lock()
				want := plan.Plan(h.d.cfg, h.d.health(), h.d.links, h.d.override).String()
				h.d.mu.Unlock()
				if got := h.k.applied.String(); got != want {
					t.Fatalf("step %d: kernel does not hold the current plan", step)
				}
				for _, del := range h.flows.deleted {
					if del.mask == 0 || del.mark == 0 || del.mark&^del.mask != 0 {
						t.Fatalf("step %d: bad deletion %+v", step, del)
					}
				}
			}
		})
	}
}

// TestBackupDownIsCleaned: a WAN that carries no new connections (a backup)
// going down changes nothing in the kernel, yet its connections (inbound
// ones, say) are deleted and status shows it down.
func TestBackupDownIsCleaned(t *testing.T) {
	h := newHarness(t)
	h.rounds("isp1", true, 3)
	h.rounds("isp2", true, 3)
	applies := h.k.applies
	h.rounds("isp2", false, 3)
	if h.k.applies != applies {
		t.Errorf("the kernel was rewritten although the plan did not change")
	}
	m2 := h.k.applied.Marks["isp2"]
	if want := (deletion{m2, h.k.applied.IDMask}); len(h.flows.deleted) != 1 || h.flows.deleted[0] != want {
		t.Fatalf("deleted %v, want %v", h.flows.deleted, want)
	}
	if st := h.d.Status(); st.WANs[1].State != "down" {
		t.Fatalf("status %+v", st.WANs[1])
	}
}
