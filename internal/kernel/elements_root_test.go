package kernel

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/multiwan/multiwan/internal/config"
	"github.com/multiwan/multiwan/internal/lab/nstest"
	"github.com/multiwan/multiwan/internal/plan"
)

// TestRootFastPathMatchesNFT: for every example config, health states and
// overrides replayed in random order go to the kernel by the in-process
// path (map elements over netlink), and after each the table listed by nft
// is the one nft itself installs from the same plan.
func TestRootFastPathMatchesNFT(t *testing.T) {
	files, err := filepath.Glob("../../examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example configs (%v)", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) { replayStates(t, f) })
	}
}

func replayStates(t *testing.T, file string) {
	nstest.Enter(t)
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	links := plan.Links{}
	for i, w := range cfg.WANs {
		addr := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i + 1), 2}), 24)
		links[w.Name] = plan.Link{Exists: true, Up: true, PointToPoint: w.GatewayAuto, Addrs: []netip.Prefix{addr}}
	}
	states := []plan.State{plan.StateUp, plan.StateDown, plan.StateDegraded, plan.StateUnknown}
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	t.Logf("seed %d", seed)
	ctx := context.Background()
	full, err := NewNFT(plan.TableName)
	if err != nil {
		t.Fatal(err)
	}
	n, err := NewNFT(plan.TableName)
	if err != nil {
		t.Fatal(err)
	}
	fast := 0
	for step := range 40 {
		health := plan.Health{}
		var say []string
		for _, w := range cfg.WANs {
			health[w.Name] = states[rng.IntN(len(states))]
			say = append(say, w.Name+"="+string(health[w.Name]))
		}
		override := ""
		if rng.IntN(4) == 0 {
			override = cfg.WANs[rng.IntN(len(cfg.WANs))].Name
			say = append(say, "use "+override)
		}
		d := plan.Plan(cfg, health, links, override)
		if err := n.Apply(ctx, &d.Table); err != nil {
			t.Fatalf("step %d (%s): apply: %v", step, strings.Join(say, " "), err)
		}
		switch n.Via() {
		case "netlink":
			fast++
		case "nft":
			// Health and overrides change map elements only: after the
			// first install, nft is a fallback that must not be needed.
			if step > 0 {
				t.Fatalf("step %d (%s): applied through nft, not in-process", step, strings.Join(say, " "))
			}
		}
		got := listTable(t)
		// The reference: nft installs the same table whole.
		full.Invalidate()
		if err := full.Apply(ctx, &d.Table); err != nil {
			t.Fatalf("step %d: full apply: %v", step, err)
		}
		if want := listTable(t); got != want {
			t.Fatalf("step %d (%s): the in-process path left\n%s\nnft installs\n%s", step, strings.Join(say, " "), got, want)
		}
		// The next step starts from what the in-process path knows,
		// which the full apply has just rewritten identically.
	}
	if fast == 0 {
		t.Fatalf("no apply took the in-process path")
	}
	t.Logf("%d of 40 applies in-process", fast)
}

var elementsRe = regexp.MustCompile(`(?s)elements = \{ (.*?) \}`)

// listTable lists table inet multiwan without counters, each map's
// elements sorted: a hash map lists in its hash order, which differs
// between two sets with the same elements.
func listTable(t *testing.T) string {
	t.Helper()
	out := run(t, "nft", "-s", "list", "table", "inet", plan.TableName)
	return elementsRe.ReplaceAllStringFunc(out, func(m string) string {
		body := elementsRe.FindStringSubmatch(m)[1]
		var els []string
		for _, e := range strings.Split(body, ",") {
			els = append(els, strings.Join(strings.Fields(e), " "))
		}
		slices.Sort(els)
		return "elements = { " + strings.Join(els, ", ") + " }"
	})
}

// TestRootFastPathFallsBack: when the kernel refuses the in-process
// transaction (here: the table was deleted behind the adapter's back),
// nothing of it is applied and the table is installed whole through nft
// in the same Apply.
func TestRootFastPathFallsBack(t *testing.T) {
	nstest.Enter(t)
	cfg, err := config.Load("../../examples/seed000-dual-wan-failover.yaml")
	if err != nil {
		t.Fatal(err)
	}
	links := plan.Links{}
	health := plan.Health{}
	for i, w := range cfg.WANs {
		addr := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i + 1), 2}), 24)
		links[w.Name] = plan.Link{Exists: true, Up: true, Addrs: []netip.Prefix{addr}}
		health[w.Name] = plan.StateUp
	}
	ctx := context.Background()
	n, err := NewNFT(plan.TableName)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Apply(ctx, &plan.Plan(cfg, health, links, "").Table); err != nil {
		t.Fatal(err)
	}
	use := plan.Plan(cfg, health, links, cfg.WANs[1].Name)
	if err := n.Apply(ctx, &use.Table); err != nil || n.Via() != "netlink" {
		t.Fatalf("a switch: %v, via %q", err, n.Via())
	}
	run(t, "nft", "delete", "table", "inet", plan.TableName)
	back := plan.Plan(cfg, health, links, "")
	if err := n.Apply(ctx, &back.Table); err != nil {
		t.Fatalf("apply after the table was deleted: %v", err)
	}
	if n.Via() != "nft" {
		t.Errorf("via %q, want nft (the in-process write must have failed)", n.Via())
	}
	got := listTable(t)
	full, _ := NewNFT(plan.TableName)
	if err := full.Apply(ctx, &back.Table); err != nil {
		t.Fatal(err)
	}
	if want := listTable(t); got != want {
		t.Fatalf("after the fallback:\n%s\nwant\n%s", got, want)
	}
}
