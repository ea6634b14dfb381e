package daemon

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/multiwan/multiwan/internal/control"
	"github.com/multiwan/multiwan/internal/kernel"
	"github.com/multiwan/multiwan/internal/links"
	"github.com/multiwan/multiwan/internal/plan"
)

// These tests drive Run itself, with fakes for the kernel, the probers, the
// links and the watchers; run them with -race.

func TestFailoverAndCleanup(t *testing.T) {
	h := startHarness(t, testConfig+"hooks: [/bin/true]\n")
	h.rounds("isp1", true, 3)
	h.rounds("isp2", true, 3)
	if h.active() != "isp1" {
		t.Fatalf("active %s", h.active())
	}
	d := h.k.holds()
	m1, m2, mov, ids := d.Marks["isp1"], d.Marks["isp2"], d.MovableBit, d.IDMask
	h.rounds("isp1", false, 2)
	if h.active() != "isp1" || len(h.flows.take()) != 0 {
		t.Fatalf("switched before down rounds: %s", h.active())
	}
	h.round("isp1", false)
	if h.active() != "isp2" {
		t.Fatalf("after 3 bad rounds: %s", h.active())
	}
	if got, want := h.flows.take(), (deletion{m1, ids, 4}); len(got) != 1 || got[0] != want {
		t.Fatalf("deleted %v, want exactly %v", got, want)
	}
	if got := h.hooks.kinds(); got != "up:isp1 up:isp2 down:isp1 switch:isp2" {
		t.Fatalf("hook events %q", got)
	}
	// Recovery: new connections return; isp2's movable flows follow, its
	// other connections stay.
	h.rounds("isp1", true, 3)
	if h.active() != "isp1" {
		t.Fatalf("after recovery: %s", h.active())
	}
	if got, want := h.flows.take(), (deletion{m2 | mov, ids | mov, 4}); len(got) != 1 || got[0] != want {
		t.Fatalf("deleted %v, want only isp2's movable flows %v", got, want)
	}
	kinds := map[string]int{}
	for _, ev := range h.status().Events {
		kinds[ev.Kind]++
	}
	if kinds["state"] < 4 || kinds["switch"] != 2 || kinds["flows-deleted"] != 2 || kinds["start"] != 1 {
		t.Fatalf("events %v", kinds)
	}
	h.consistent("end")
}

func TestCarrierLossIsImmediate(t *testing.T) {
	h := startHarness(t, testConfig)
	h.rounds("isp1", true, 3)
	h.rounds("isp2", true, 3)
	h.setCarrier("isp1", false)
	if h.active() != "isp2" {
		t.Fatalf("after carrier loss: %s", h.active())
	}
	if st := h.status(); st.WANs[0].State != "down" {
		t.Fatalf("status %+v", st.WANs[0])
	}
	h.setCarrier("isp1", true)
	if h.active() != "isp2" {
		t.Fatalf("carrier back but no good rounds yet: %s", h.active())
	}
	h.rounds("isp1", true, 3)
	if h.active() != "isp1" {
		t.Fatalf("after good rounds: %s", h.active())
	}
}

func TestUseOverride(t *testing.T) {
	h := startHarness(t, testConfig)
	ctx := ctxT(t)
	h.rounds("isp1", true, 3)
	h.rounds("isp2", true, 3)
	if err := h.d.Use(ctx, "isp2"); err != nil {
		t.Fatal(err)
	}
	if h.active() != "isp2" || h.status().Override != "isp2" {
		t.Fatalf("use isp2: %s %q", h.active(), h.status().Override)
	}
	err := h.d.Use(ctx, "nope")
	var refused *control.Refused
	if !errors.As(err, &refused) || !strings.Contains(err.Error(), "isp1, isp2") {
		t.Fatalf("use nope: %v", err)
	}
	// The override survives a reload.
	if err := h.d.Reload(ctx); err != nil {
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
	if err := h.d.Use(ctx, "auto"); err != nil {
		t.Fatal(err)
	}
	if h.status().Override != "" {
		t.Fatal("override not cleared")
	}
}

// TestUseFailingPartWay: the kernel takes the nft table but an earlier
// stage fails. The override stays what the user asked for, the request
// says the kernel is not there yet, status shows the error, and the retry
// (a full rewrite) makes the kernel hold the plan — not the 30 s resync.
func TestUseFailingPartWay(t *testing.T) {
	h := startHarness(t, testConfig)
	ctx := ctxT(t)
	h.rounds("isp1", true, 3)
	h.rounds("isp2", true, 3)
	_, inv0 := h.k.counts()
	h.k.mu.Lock()
	h.k.failNext = 2
	h.k.mu.Unlock()
	err := h.d.Use(ctx, "isp2")
	if err == nil || !strings.Contains(err.Error(), "injected") || !strings.Contains(err.Error(), "retries") {
		t.Fatalf("use with a failing kernel: %v", err)
	}
	st := h.status()
	if st.Override != "isp2" || st.Daemon == nil || !strings.Contains(st.Daemon.ApplyError, "injected") || st.Daemon.ApplyFailures == 0 {
		t.Fatalf("status after a failed apply: override %q daemon %+v", st.Override, st.Daemon)
	}
	// Retries (5 ms, then 10 ms) rewrite everything until one succeeds.
	h.waitInput("retry", 2)
	h.waitFor("the apply to succeed", func() bool { return h.status().Daemon.ApplyError == "" })
	if _, inv := h.k.counts(); inv < inv0+2 {
		t.Fatalf("a failed apply must invalidate the kernel adapter's caches: %d invalidations", inv-inv0)
	}
	if h.active() != "isp2" {
		t.Fatalf("after the retry: %s", h.active())
	}
	h.consistent("after retry")
	kinds := ""
	for _, ev := range h.status().Events {
		kinds += ev.Kind + " "
	}
	if !strings.Contains(kinds, "apply-failed apply-failed apply-recovered") {
		t.Fatalf("events %s", kinds)
	}
}

func TestReloadRefusedChangesNothing(t *testing.T) {
	h := startHarness(t, testConfig)
	ctx := ctxT(t)
	before, _ := h.k.counts()
	h.setConfig("wans: [\n")
	err := h.d.Reload(ctx)
	var refused *control.Refused
	if !errors.As(err, &refused) || !strings.Contains(err.Error(), "test.yaml:") {
		t.Fatalf("bad reload: %v", err)
	}
	if after, _ := h.k.counts(); after != before {
		t.Fatal("a refused reload applied something")
	}
	if ev := h.status().Events; ev[len(ev)-1].Kind != "reload-refused" {
		t.Fatalf("last event %+v", ev[len(ev)-1])
	}
}

// TestReloadFailingApplyRestartsProbers: a valid config whose apply fails
// still takes effect for the probers (the old code skipped them), and the
// kernel follows at the retry.
func TestReloadFailingApplyRestartsProbers(t *testing.T) {
	h := startHarness(t, testConfig)
	ctx := ctxT(t)
	h.k.mu.Lock()
	h.k.failNext = 1
	h.k.mu.Unlock()
	// A new target for isp1 (probers only) and a new rule (the plan).
	next := strings.Replace(testConfig, "targets: [203.0.113.20], down: 3", "targets: [203.0.113.30], down: 3", 1)
	h.setConfig(strings.Replace(next, "movable: true}\n", "movable: true}\n  - {name: dns, proto: udp, dst_port: [53], wan: isp2}\n", 1))
	if err := h.d.Reload(ctx); err == nil || !strings.Contains(err.Error(), "accepted") {
		t.Fatalf("reload with a failing apply: %v", err)
	}
	h.waitFor("isp1's prober to restart with the new target", func() bool {
		h.probers.mu.Lock()
		defer h.probers.mu.Unlock()
		return len(h.probers.specs["isp1"].Targets) == 1 && h.probers.specs["isp1"].Targets[0] == "203.0.113.30"
	})
	h.probers.mu.Lock()
	if n := h.probers.starts["isp2"]; n != 1 {
		t.Errorf("isp2's prober, whose settings did not change, was restarted: %d starts", n)
	}
	h.probers.mu.Unlock()
	h.waitFor("the retry", func() bool { return h.status().Daemon.ApplyError == "" })
	h.consistent("after retry")
}

// TestReloadStormWithAutoGatewayProbers reproduces the deadlock of the
// old daemon: reloads waited for probers that were waiting for the
// daemon's lock to read their gateway. Probers of gateway: auto WANs here
// read it continuously while reloads, link events and status requests
// come in from other goroutines.
func TestReloadStormWithAutoGatewayProbers(t *testing.T) {
	h := startHarness(t, autoConfig, func(h *harness) { h.probers.spin = true })
	ctx := ctxT(t)
	other := strings.Replace(autoConfig, "interval: 10ms, down: 3", "interval: 20ms, down: 3", 1)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				_ = h.d.Status()
			}
		}
	})
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			h.mu.Lock()
			l := h.links["isp1"]
			l.Gateway = netip.AddrFrom4([4]byte{192, 0, 2, byte(1 + i%2)})
			h.links["isp1"] = l
			h.mu.Unlock()
			h.watch.mu.Lock()
			fn := h.watch.links
			h.watch.mu.Unlock()
			fn(links.Change{})
			time.Sleep(time.Millisecond)
		}
	})
	for i := range 200 {
		if i%2 == 0 {
			h.setConfig(other)
		} else {
			h.setConfig(autoConfig)
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := h.d.Reload(rctx)
		cancel()
		if err != nil {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("reload %d: %v\n%s", i, err, buf[:n])
		}
	}
	close(stop)
	wg.Wait()
	h.consistent("after the storm")
	h.probers.mu.Lock()
	starts := h.probers.starts["isp1"]
	h.probers.mu.Unlock()
	if starts < 100 {
		t.Fatalf("isp1's prober started %d times; every reload changed its interval", starts)
	}
}

// TestForeignTableChangeIsRepaired: a commit to multiwan's nft table that
// is not the daemon's own (a `flush ruleset`) makes it rewrite the table
// at once; its own commits do not.
func TestForeignTableChangeIsRepaired(t *testing.T) {
	h := startHarness(t, testConfig)
	applies, inv := h.k.counts()
	h.k.mu.Lock()
	h.k.gens[41] = true
	h.k.mu.Unlock()
	h.tableEvent(kernel.TableChange{Gen: 41, Summary: "12 rules added"})
	if a, i := h.k.counts(); a != applies || i != inv {
		t.Fatalf("the daemon's own commit caused a repair: %d applies, %d invalidations", a-applies, i-inv)
	}
	h.repaired(func() {
		h.tableEvent(kernel.TableChange{Gen: 42, PID: 4242, Comm: "nft", Summary: "table deleted", Deleted: true})
	})
	a, i := h.k.counts()
	if a != applies+1 || i <= inv {
		t.Fatalf("a foreign deletion was not repaired by a full rewrite: %d applies, %d invalidations", a-applies, i-inv)
	}
	st := h.status()
	if st.Daemon.Repairs != 1 || !strings.Contains(st.Daemon.LastRepair, "table deleted by nft (pid 4242)") {
		t.Fatalf("status %+v", st.Daemon)
	}
	// The echo of the daemon's own deletion of a stale rule: checked,
	// nothing to put back, not a repair.
	h.repaired(func() { h.linkEvent(links.Change{Repair: true, What: "ip rule 1500 deleted"}) })
	if a2, _ := h.k.counts(); a2 != a+1 {
		t.Fatalf("a deletion notice must make the daemon check the routing")
	}
	if h.status().Daemon.Repairs != 1 {
		t.Fatalf("an echo of the daemon's own deletion counted as a repair: %+v", h.status().Daemon)
	}
	// Someone else's deletion: the apply puts the rule back.
	h.k.mu.Lock()
	h.k.changes = kernel.Changes{RulesAdded: 1}
	h.k.mu.Unlock()
	h.repaired(func() { h.linkEvent(links.Change{Repair: true, What: "ip rule 1101 deleted"}) })
	if st := h.status().Daemon; st.Repairs != 2 || !strings.Contains(st.LastRepair, "ip rule 1101 deleted (1 rules, 0 routes put back)") {
		t.Fatalf("status %+v", st)
	}
	h.consistent("after repairs")
}

// TestUnwantedRuleDeletion: the deletion of a rule the plan does not want
// (the echo of the daemon's own move of a rule on a switch) is neither
// repaired nor a reason to read the links again; the deletion of one it
// wants is checked.
func TestUnwantedRuleDeletion(t *testing.T) {
	h := startHarness(t, testConfig)
	var wanted plan.Rule
	h.onLoop(func() { wanted = h.d.applied.Rules[1] })
	wanted.SuppressPrefixLen, wanted.Comment = 0, "" // not in the kernel's notice
	moved := wanted
	moved.Table += 50
	reads := func() int {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.reads
	}
	applies, _ := h.k.counts()
	before := reads()
	h.repaired(func() { h.linkEvent(links.Change{Repair: true, What: "ip rule moved", Rule: &moved}) })
	if a, _ := h.k.counts(); a != applies || reads() != before {
		t.Fatalf("an unwanted rule's deletion: %d applies, %d reads of the links", a-applies, reads()-before)
	}
	h.repaired(func() { h.linkEvent(links.Change{Repair: true, What: "ip rule wanted", Rule: &wanted}) })
	if a, _ := h.k.counts(); a != applies+1 || reads() == before {
		t.Fatalf("a wanted rule's deletion was not checked: %d applies, %d reads of the links", a-applies, reads()-before)
	}
	h.consistent("after the deletions")
}

// TestRepairBurstIsOneRepair: networkd deletes its foreign rules one by
// one; the burst of notifications makes one repair, not one per rule (which
// would soon look like a fight and be slowed down).
func TestRepairBurstIsOneRepair(t *testing.T) {
	h := startHarness(t, testConfig)
	h.k.mu.Lock()
	h.k.changes = kernel.Changes{RulesAdded: 11}
	h.k.mu.Unlock()
	h.repaired(func() {
		h.watch.mu.Lock()
		fn := h.watch.links
		h.watch.mu.Unlock()
		for p := range 11 {
			fn(links.Change{Repair: true, What: fmt.Sprintf("ip rule %d deleted", 1000+p)})
		}
	})
	// The first notice is repaired at once; those that came while it ran
	// wait for repairGap and go together. Whether the loop saw the first
	// alone depends on scheduling: one repair, or two.
	st := h.status().Daemon
	switch {
	case st.Repairs == 1 && strings.Contains(st.LastRepair, "ip rule 1000 deleted; ip rule 1001 deleted") &&
		strings.Contains(st.LastRepair, "and 7 more"):
	case st.Repairs == 2 && (strings.Contains(st.LastRepair, "ip rule 1010 deleted") || strings.Contains(st.LastRepair, " more (")):
	default:
		t.Fatalf("a burst of 11 notices: want one or two repairs, status %+v", st)
	}
}

// TestRepairsBackOff: something that deletes the table again and again is
// not fought in a loop: after repairBurst repairs within the window, the
// next ones wait, and status says so.
func TestRepairsBackOff(t *testing.T) {
	h := startHarness(t, testConfig, func(h *harness) {
		h.d.repairWindow = time.Hour
		h.d.repairBaseDelay, h.d.repairMaxDelay = 500*time.Millisecond, 5*time.Second
	})
	applies, _ := h.k.counts()
	for gen := range uint32(repairBurst) {
		h.repaired(func() {
			h.tableEvent(kernel.TableChange{Gen: 100 + gen, Comm: "nft", PID: 7, Summary: "table deleted"})
		})
	}
	if a, _ := h.k.counts(); a != applies+repairBurst {
		t.Fatalf("the first %d removals must be repaired: %d applies", repairBurst, a-applies)
	}
	// Three more: the first waits 500 ms; the others join the same wait.
	for gen := range uint32(3) {
		h.tableEvent(kernel.TableChange{Gen: 200 + gen, Comm: "nft", PID: 7, Summary: "table deleted"})
	}
	if a, _ := h.k.counts(); a != applies+repairBurst {
		t.Fatalf("repairs past the burst must wait: %d applies", a-applies)
	}
	if note := h.status().Daemon.RepairBackoff; !strings.Contains(note, "nft table removed again and again") {
		t.Fatalf("status does not say repairs are slowed: %q", note)
	}
	n := h.handled("repair")
	h.waitInput("repair", n+1)
	if a, _ := h.k.counts(); a != applies+repairBurst+1 {
		t.Fatalf("the delayed repair must run once for the three removals: %d applies", a-applies)
	}
	h.consistent("after the delayed repair")
}

// TestStatusAnswersWhileTheLoopIsBusy: status is a published snapshot; a
// loop stuck in a slow apply does not hold it up.
func TestStatusAnswersWhileTheLoopIsBusy(t *testing.T) {
	h := startHarness(t, testConfig)
	block := make(chan struct{})
	entered := make(chan struct{})
	go func() {
		_ = h.d.call(context.Background(), func() { close(entered); <-block })
	}()
	<-entered
	start := time.Now()
	st := h.status()
	if took := time.Since(start); took > 100*time.Millisecond || len(st.WANs) != 2 {
		t.Fatalf("status took %v while the loop was busy: %+v", took, st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := h.d.Use(ctx, "isp2"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a request to a busy loop must end with its context: %v", err)
	}
	close(block)
}

// TestBackupDownIsCleaned: a WAN that carries no new connections (a backup)
// going down changes nothing in the kernel, yet its connections (inbound
// ones, say) are deleted and status shows it down.
func TestBackupDownIsCleaned(t *testing.T) {
	h := startHarness(t, testConfig)
	h.rounds("isp1", true, 3)
	h.rounds("isp2", true, 3)
	applies, _ := h.k.counts()
	h.flows.take()
	h.rounds("isp2", false, 3)
	if a, _ := h.k.counts(); a != applies {
		t.Errorf("the kernel was rewritten although the plan did not change")
	}
	d := h.k.holds()
	if got, want := h.flows.take(), (deletion{d.Marks["isp2"], d.IDMask, 4}); len(got) != 1 || got[0] != want {
		t.Fatalf("deleted %v, want %v", got, want)
	}
	if st := h.status(); st.WANs[1].State != "down" {
		t.Fatalf("status %+v", st.WANs[1])
	}
}

// TestSubscribe: live events reach a subscriber; one that does not read is
// dropped rather than waited for.
func TestSubscribe(t *testing.T) {
	h := startHarness(t, testConfig)
	// The start event is published by the loop once it runs, which may
	// be just after the harness has seen the first apply.
	h.waitFor("the start event", func() bool {
		past, _, cancel := h.d.Subscribe(10)
		cancel()
		return len(past) > 0
	})
	past, live, cancel := h.d.Subscribe(10)
	defer cancel()
	if len(past) == 0 || past[0].Kind != "start" {
		t.Fatalf("past events %+v", past)
	}
	_, stuck, cancelStuck := h.d.Subscribe(0)
	defer cancelStuck()
	h.rounds("isp1", true, 3)
	select {
	case ev := <-live:
		if ev.Kind != "state" || ev.WAN != "isp1" {
			t.Fatalf("first live event %+v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no live event")
	}
	for i := range subscriberBuffer + 1 {
		h.d.event(control.Event{Kind: "test", Message: fmt.Sprint(i)})
	}
	n := 0
	for range stuck {
		n++
	}
	if n != subscriberBuffer {
		t.Fatalf("a stuck subscriber got %d events before being dropped, want %d", n, subscriberBuffer)
	}
}

// TestRandomOrder replays random sequences of probe rounds, carrier
// changes, overrides, reloads, failing applies and repairs, and checks
// after every step that the kernel holds exactly the plan of the daemon's
// current state (once no apply is failing), and that no cleanup ever asks
// to delete unmarked or foreign connections.
func TestRandomOrder(t *testing.T) {
	for seed := range uint64(12) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			h := startHarness(t, testConfig)
			ctx := ctxT(t)
			rng := rand.New(rand.NewPCG(seed, 0))
			wans := []string{"isp1", "isp2"}
			for step := range 150 {
				wan := wans[rng.IntN(2)]
				switch n := rng.IntN(24); {
				case n < 14:
					h.round(wan, rng.IntN(3) > 0)
				case n < 17:
					h.setCarrier(wan, rng.IntN(2) == 0)
				case n < 19:
					if err := h.d.Use(ctx, []string{"isp1", "isp2", "auto"}[rng.IntN(3)]); err != nil {
						t.Fatal(err)
					}
				case n < 20:
					if err := h.d.Reload(ctx); err != nil {
						t.Fatal(err)
					}
				case n < 21:
					h.k.mu.Lock()
					h.k.failNext = 1 + rng.IntN(2)
					h.k.mu.Unlock()
					// A deletion notice always makes the daemon apply (a
					// routing check is never slowed down).
					h.repaired(func() { h.linkEvent(links.Change{Repair: true, What: "route default table 101 deleted"}) })
					h.waitFor("the retries to succeed", func() bool { return h.status().Daemon.ApplyError == "" })
				case n < 22:
					h.repaired(func() {
						h.tableEvent(kernel.TableChange{Gen: uint32(1000 + step), Comm: "nft", Summary: "table deleted"})
					})
				default:
					h.repaired(func() { h.linkEvent(links.Change{Repair: true, What: "route default table 101 deleted"}) })
				}
				h.consistent(fmt.Sprintf("step %d", step))
				h.flows.mu.Lock()
				for _, del := range h.flows.deleted {
					if del.mask == 0 || del.mark == 0 || del.mark&^del.mask != 0 {
						t.Fatalf("step %d: bad deletion %+v", step, del)
					}
				}
				h.flows.mu.Unlock()
			}
		})
	}
}

// TestStaleFlows pins the pure cleanup decision.
func TestStaleFlows(t *testing.T) {
	cfg := parse(t, testConfig)
	up := plan.Health{"isp1": plan.StateUp, "isp2": plan.StateUp}
	l := plan.Links{"isp1": {Exists: true, Up: true, Gateway: netip.MustParseAddr("192.0.2.1")},
		"isp2": {Exists: true, Up: true}}
	before := plan.Plan(cfg, up, l, "")
	if got := staleFlows(nil, before); got != nil {
		t.Fatalf("first plan: %v", got)
	}
	if got := staleFlows(before, before); got != nil {
		t.Fatalf("no change: %v", got)
	}
	down := plan.Plan(cfg, plan.Health{"isp1": plan.StateDown, "isp2": plan.StateUp}, l, "")
	got := staleFlows(before, down)
	if len(got) != 1 || got[0].wan != "isp1" || got[0].mask != before.IDMask || got[0].cause != "WAN down" {
		t.Fatalf("isp1 down: %+v", got)
	}
	used := plan.Plan(cfg, up, l, "isp2")
	got = staleFlows(before, used)
	if len(got) != 1 || got[0].wan != "isp1" || got[0].mark != before.Marks["isp1"]|before.MovableBit {
		t.Fatalf("use isp2: %+v", got)
	}
	fewer := parse(t, strings.Replace(testConfig, "members: [{wan: isp1, tier: 1}, {wan: isp2, tier: 2}]", "members: [{wan: isp1, tier: 1}]", 1))
	_ = fewer
	one := parse(t, `wans:
  - {name: isp2, interface: wan2, gateway: 192.0.2.65}
policies:
  - {name: failover, members: [{wan: isp2}]}
default_policy: failover
`)
	got = staleFlows(before, plan.Plan(one, up, l, ""))
	if len(got) != 2 || got[0].wan != "isp1" || got[0].cause != "the WAN left the config" ||
		got[1].wan != "isp2" || got[1].cause != "the WAN's mark changed" {
		t.Fatalf("reload renumbering: %+v", got)
	}
}

// notes records what the daemon tells the service manager.
type notes struct {
	mu   sync.Mutex
	msgs []string
	k    *fakeKernel
	// readyApplies is how many applies the kernel had seen when READY=1
	// was first sent.
	readyApplies int
}

func (n *notes) notify(state string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if strings.Contains(state, "READY=1") && n.readyApplies == 0 && n.k != nil {
		n.readyApplies, _ = n.k.counts()
		if n.readyApplies == 0 {
			n.readyApplies = -1
		}
	}
	n.msgs = append(n.msgs, state)
}

func (n *notes) count(sub string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, m := range n.msgs {
		if strings.Contains(m, sub) {
			c++
		}
	}
	return c
}

// TestNotify: READY=1 only once the first plan is in the kernel, STATUS=
// on a failover, RELOADING=1 then READY=1 around a reload, WATCHDOG=1 from
// the loop (and none while the loop is stuck), STOPPING=1 at the end.
func TestNotify(t *testing.T) {
	n := &notes{}
	h := startHarness(t, testConfig, func(h *harness) {
		n.k = h.k
		h.d.opt.Notify = n.notify
		h.d.opt.Watchdog = 5 * time.Millisecond
	})
	h.waitFor("READY=1", func() bool { return n.count("READY=1") == 1 })
	if n.readyApplies <= 0 {
		t.Fatalf("READY=1 sent before the first apply (%d applies)", n.readyApplies)
	}
	h.rounds("isp1", true, 3)
	h.rounds("isp2", true, 3)
	h.rounds("isp1", false, 3)
	h.waitFor("a STATUS line about the failover", func() bool {
		return n.count("STATUS=isp1 down, isp2 up; failover → isp2") > 0
	})
	ready := n.count("READY=1")
	if err := h.d.Reload(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	n.mu.Lock()
	i := slices.IndexFunc(n.msgs, func(m string) bool { return strings.HasPrefix(m, "RELOADING=1\nMONOTONIC_USEC=") })
	n.mu.Unlock()
	if i < 0 || n.count("READY=1") != ready+1 {
		t.Fatalf("reload: RELOADING=1 at %d, READY=1 %d times (was %d)", i, n.count("READY=1"), ready)
	}
	h.waitFor("watchdog pings", func() bool { return n.count("WATCHDOG=1") >= 3 })

	// A stuck loop sends no pings.
	entered, release := make(chan struct{}), make(chan struct{})
	go func() { _ = h.d.call(context.Background(), func() { close(entered); <-release }) }()
	<-entered
	before := n.count("WATCHDOG=1")
	time.Sleep(50 * time.Millisecond) // ten watchdog periods
	during := n.count("WATCHDOG=1") - before
	close(release)
	h.waitFor("pings after the stall", func() bool { return n.count("WATCHDOG=1") > before+during })
	if during != 0 {
		t.Fatalf("%d watchdog pings while the loop was stuck", during)
	}
	h.stop()
	if n.count("STOPPING=1") != 1 {
		t.Fatalf("STOPPING=1 sent %d times", n.count("STOPPING=1"))
	}
}
