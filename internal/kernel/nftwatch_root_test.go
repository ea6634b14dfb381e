package kernel

// Root tests of the nftables watcher, each in a named namespace of its own
// (nstest.NewNS): the watcher runs on a thread locked in it (NS.Do, for as
// long as it watches), nft commands run in it through `ip netns exec`.

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/multiwan/multiwan/internal/lab/nstest"
	"github.com/multiwan/multiwan/internal/plan"
)

// tableWatch is a WatchTable running in a test namespace.
type tableWatch struct {
	t       *testing.T
	ns      *nstest.NS
	changes chan TableChange
}

// startWatch runs WatchTable(table) inside ns until the test ends, and
// returns once it is subscribed: it commits a marker change to the table
// until one is reported (a commit before the subscription is not).
func startWatch(t *testing.T, ns *nstest.NS, table string, fn func(TableChange)) *tableWatch {
	t.Helper()
	w := &tableWatch{t: t, ns: ns, changes: make(chan TableChange, 1000)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var logs logRecords
	log := logs.logger()
	go func() {
		done <- ns.Do(func() error {
			WatchTable(ctx, table, log, func(c TableChange) {
				select {
				case w.changes <- c:
				default:
					t.Errorf("more than %d changes", cap(w.changes))
				}
				if fn != nil {
					fn(c)
				}
			})
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("watcher: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("WatchTable did not return within 5 s of its context ending")
		}
	})
	for i := range 50 {
		ns.Run(t, "nft", fmt.Sprintf("add table inet %s; delete table inet %s", table, table))
		select {
		case <-w.changes:
			w.drain()
			t.Logf("watching after %d marker commits", i+1)
			return w
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatal("the watcher reported none of 50 marker commits within 5 s")
	return nil
}

// next returns the next change, failing the test after a second: the
// repair the daemon bases on it is due within a second.
func (w *tableWatch) next(what string) TableChange {
	w.t.Helper()
	select {
	case c := <-w.changes:
		return c
	case <-time.After(time.Second):
		w.t.Fatalf("%s: no change reported within 1 s", what)
		return TableChange{}
	}
}

// drain discards what arrives within 50 ms.
func (w *tableWatch) drain() {
	for {
		select {
		case <-w.changes:
		case <-time.After(50 * time.Millisecond):
			return
		}
	}
}

// generation reads the ruleset generation of the test namespace.
func (w *tableWatch) generation() uint32 {
	w.t.Helper()
	var g uint32
	if err := w.ns.Do(func() (err error) { g, err = Generation(); return err }); err != nil {
		w.t.Fatal(err)
	}
	return g
}

func TestRootWatchTableFlushRuleset(t *testing.T) {
	ns := nstest.NewNS(t, "nftw")
	w := startWatch(t, ns, "multiwan", nil)

	ns.Run(t, "nft", `add table inet multiwan; add chain inet multiwan steer; add rule inet multiwan steer counter
		add table inet filter; add chain inet filter input { type filter hook input priority 0; }`)
	c := w.next("tables added")
	if want := "table inet multiwan added or its flags changed; chain steer added; 1 rule added (chain steer)"; c.Summary != want || c.Deleted || c.Lost {
		t.Errorf("adding: %+v, want summary %q", c, want)
	}
	if g := w.generation(); c.Gen != g {
		t.Errorf("change of generation %d, the ruleset is at %d", c.Gen, g)
	}

	// What nftables.service does on reload with seed 000's nftables.conf.
	ns.Run(t, "nft", `flush ruleset
		add table inet filter; add chain inet filter input { type filter hook input priority 0; }`)
	c = w.next("flush ruleset")
	if !c.Deleted || c.Lost || !strings.Contains(c.Summary, "table inet multiwan deleted") {
		t.Errorf("flush ruleset: %+v, want Deleted and the table named", c)
	}
	if c.Comm != "nft" || c.PID == 0 {
		t.Errorf("committed by %q (pid %d), want nft", c.Comm, c.PID)
	}
	if g := w.generation(); c.Gen != g {
		t.Errorf("change of generation %d, the ruleset is at %d", c.Gen, g)
	}
	w.drain()
}

func TestRootWatchTableDeletions(t *testing.T) {
	ns := nstest.NewNS(t, "nftw")
	w := startWatch(t, ns, "multiwan", nil)
	ns.Run(t, "nft", `add table inet multiwan
		add chain inet multiwan steer
		add chain inet multiwan identify
		add set inet multiwan r_x_dst4 { type ipv4_addr; elements = { 198.51.100.1, 198.51.100.2, 198.51.100.3, 203.0.113.9 }; }
		add rule inet multiwan steer counter
		add rule inet multiwan steer counter
		add rule inet multiwan steer ip daddr @r_x_dst4 counter
		add rule inet multiwan identify counter`)
	w.next("setup")

	for _, c := range []struct{ cmd, want string }{
		{"flush chain inet multiwan steer", "3 rules deleted (chain steer)"},
		{"delete element inet multiwan r_x_dst4 { 198.51.100.1, 198.51.100.2, 203.0.113.9 }", "set r_x_dst4: 3 elements deleted"},
		{"flush chain inet multiwan identify; delete chain inet multiwan steer", "chain steer deleted; 1 rule deleted (chain identify)"},
	} {
		ns.Run(t, "nft", c.cmd)
		got := w.next(c.cmd)
		if got.Summary != c.want || !got.Deleted || got.Lost {
			t.Errorf("%s: %+v, want a deletion %q", c.cmd, got, c.want)
		}
	}

	// Changes elsewhere, including a table of the same name in another
	// family, are not reported; the marker commit after them is the next
	// change.
	ns.Run(t, "nft", `add table inet filter; add chain inet filter c; add rule inet filter c counter
		add table ip multiwan; add chain ip multiwan steer; add rule ip multiwan steer counter`)
	ns.Run(t, "nft", `flush chain inet filter c; delete table ip multiwan; delete table inet filter`)
	ns.Run(t, "nft", "add chain inet multiwan marker")
	if got := w.next("marker"); got.Summary != "chain marker added" {
		t.Errorf("after changes of other tables: %+v, want only the marker", got)
	}
	w.drain()
}

// TestRootGeneration: every commit moves the generation by one, whoever
// makes it and whatever table it touches.
func TestRootGeneration(t *testing.T) {
	ns := nstest.NewNS(t, "gen")
	w := &tableWatch{t: t, ns: ns}
	g0 := w.generation()
	ns.Run(t, "nft", "add table inet a")
	ns.Run(t, "nft", "add table ip b; add chain ip b c")
	ns.Run(t, "nft", "delete table inet a")
	if g := w.generation(); g != g0+3 {
		t.Errorf("generation %d after 3 commits from %d", g, g0)
	}
	ns.Run(t, "nft", "list ruleset")
	if g := w.generation(); g != g0+3 {
		t.Errorf("generation %d after a list, want %d", g, g0+3)
	}
}

// TestRootWatchTableOverflow: notifications dropped for a full receive
// buffer are reported as Lost, and the watch goes on.
func TestRootWatchTableOverflow(t *testing.T) {
	saved := nftReadBuffer
	nftReadBuffer = 4096
	t.Cleanup(func() { nftReadBuffer = saved })
	ns := nstest.NewNS(t, "nftw")
	release := make(chan struct{})
	var once sync.Once
	blocked := false
	w := startWatch(t, ns, "multiwan", func(c TableChange) {
		if !blocked && strings.Contains(c.Summary, "chain held") {
			blocked = true
			<-release // the daemon, busy: the socket is not read
		}
	})
	// Runs before startWatch's cleanup, which waits for the watcher.
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	ns.Run(t, "nft", "add table inet multiwan; add chain inet multiwan held")
	w.next("hold")
	var elems []string
	for i := range 200 {
		elems = append(elems, fmt.Sprintf("198.18.%d.%d", i/250, i%250))
	}
	ns.Run(t, "nft", "add set inet multiwan s { type ipv4_addr; }")
	for range 5 {
		ns.Run(t, "nft", "add element inet multiwan s { "+strings.Join(elems, ", ")+" }; flush set inet multiwan s")
	}
	once.Do(func() { close(release) })
	lost := false
	for !lost {
		c := w.next("after the overflow")
		if lost = c.Lost; lost && (c.Summary != lostOverflow || c.Since == 0 || int32(c.Gen-c.Since) < 1) {
			t.Errorf("lost: %+v, want %q and the generations of the commits that may have been missed", c, lostOverflow)
		}
	}
	w.drain()
	ns.Run(t, "nft", "add chain inet multiwan after")
	if c := w.next("after Lost"); c.Summary != "chain after added" {
		t.Errorf("after Lost: %+v", c)
	}
}

// TestRootNFTOurs: the adapter's own commits are recognised when their
// notifications arrive; someone else's are not.
func TestRootNFTOurs(t *testing.T) {
	ns := nstest.NewNS(t, "ours")
	w := startWatch(t, ns, "multiwan", nil)
	var n *NFT
	in := func(fn func() error) {
		t.Helper()
		if err := ns.Do(fn); err != nil {
			t.Fatal(err)
		}
	}
	in(func() (err error) { n, err = NewNFT("multiwan"); return err })
	ctx := context.Background()
	table := labDesired(false).Table
	in(func() error { return n.Apply(ctx, &table) })
	c := w.next("apply")
	if !n.Ours(c.Gen) || c.Summary != "table inet multiwan replaced" {
		t.Errorf("own apply: %+v, Ours %v (generation error %v)", c, n.Ours(c.Gen), n.GenerationError())
	}
	changed := labDesired(true).Table
	in(func() error { return n.Apply(ctx, &changed) })
	if c := w.next("fast update"); !n.Ours(c.Gen) || c.Deleted == false {
		t.Errorf("own update: %+v, Ours %v", c, n.Ours(c.Gen))
	}
	// A change of map elements alone goes in-process, and learns its
	// commit's generation from the kernel's echo rather than by reading
	// it around the commit.
	bound := func(key string) plan.Table {
		t := labDesired(true).Table
		t.Sets = append(t.Sets, plan.Set{Name: "bound", Type: "ipv4_addr", Map: "verdict",
			Elements: []plan.Element{{Key: key, Value: "goto wan_isp1"}}})
		return t
	}
	reshaped, moved := bound("198.51.100.2"), bound("198.51.100.66")
	in(func() error { return n.Apply(ctx, &reshaped) })
	w.next("a map added")
	in(func() error { return n.Apply(ctx, &moved) })
	if c := w.next("in-process update"); !n.Ours(c.Gen) || !strings.Contains(c.Summary, "set bound") {
		t.Errorf("own in-process update: %+v, Ours %v", c, n.Ours(c.Gen))
	}
	if n.Via() != "netlink" || n.readGenerations {
		t.Errorf("the update went by %q (reading generations: %v), want netlink with the echoed generation",
			n.Via(), n.readGenerations)
	}

	ns.Run(t, "nft", "flush chain inet multiwan prerouting")
	if c := w.next("foreign flush"); n.Ours(c.Gen) || !c.Deleted {
		t.Errorf("foreign commit: %+v taken for ours", c)
	}
	in(func() error { return n.Remove(ctx) })
	if c := w.next("remove"); !n.Ours(c.Gen) || c.Summary != "table inet multiwan deleted" {
		t.Errorf("own remove: %+v, Ours %v", c, n.Ours(c.Gen))
	}
	w.drain()
}

// TestRootNFTOwnOverflow: a commit of the adapter's own that overflows
// the receive buffer is reported as Lost with a range of generations that
// OursRange recognises, so that it causes no repair (which would commit as
// much again).
func TestRootNFTOwnOverflow(t *testing.T) {
	saved := nftReadBuffer
	nftReadBuffer = 4096
	t.Cleanup(func() { nftReadBuffer = saved })
	ns := nstest.NewNS(t, "ours")
	release := make(chan struct{})
	var once sync.Once
	blocked := false
	w := startWatch(t, ns, "multiwan", func(c TableChange) {
		if !blocked && strings.Contains(c.Summary, "chain held") {
			blocked = true
			<-release
		}
	})
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	var n *NFT
	in := func(fn func() error) {
		t.Helper()
		if err := ns.Do(fn); err != nil {
			t.Fatal(err)
		}
	}
	in(func() (err error) { n, err = NewNFT("multiwan"); return err })
	ns.Run(t, "nft", "add table inet multiwan; add chain inet multiwan held")
	w.next("hold")

	table := labDesired(false).Table
	table.Sets[2].Elements = nil // steer4, an interval set
	for i := range 2000 {
		table.Sets[2].Elements = append(table.Sets[2].Elements, plan.Element{Key: fmt.Sprintf("198.18.%d.%d", i/250, i%250)})
	}
	in(func() error { return n.Apply(context.Background(), &table) })
	once.Do(func() { close(release) })
	for {
		c := w.next("after the overflow")
		if !c.Lost {
			if !n.Ours(c.Gen) {
				t.Errorf("a foreign change: %+v", c)
			}
			continue
		}
		if !n.OursRange(c.Since, c.Gen) {
			t.Errorf("lost %+v: the range is not recognised as ours (generation error %v)", c, n.GenerationError())
		}
		break
	}
	w.drain()
}
