package links

// Root tests of Watch, each in a named namespace of its own
// (nstest.NewNS): Watch runs on a thread locked in it (NS.Do, for as long
// as it watches), rules and routes are changed in it through
// `ip netns exec`. nstest.Main checks the host namespace afterwards.

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/multiwan/multiwan/internal/lab/nstest"
	"github.com/multiwan/multiwan/internal/plan"
)

func TestMain(m *testing.M) { nstest.Main(m) }

type watch struct {
	t       *testing.T
	ns      *nstest.NS
	changes chan Change
}

// startWatch runs Watch inside a new namespace until the test ends, and
// returns once it is subscribed: it deletes a marker rule of ours until
// the deletion is reported (the rule subscription is the last one made).
func startWatch(t *testing.T) *watch {
	t.Helper()
	ns := nstest.NewNS(t, "links")
	w := &watch{t: t, ns: ns, changes: make(chan Change, 1000)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- ns.Do(func() error {
			Watch(ctx, slog.New(slog.DiscardHandler), func(c Change) {
				select {
				case w.changes <- c:
				default:
					t.Errorf("more than %d changes", cap(w.changes))
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
			t.Error("Watch did not return within 5 s of its context ending")
		}
	})
	for range 50 {
		ns.Run(t, "ip", "rule", "add", "priority", "1999", "lookup", "199", "protocol", "77")
		ns.Run(t, "ip", "rule", "del", "priority", "1999")
		deadline := time.After(100 * time.Millisecond)
	wait:
		for {
			select {
			case c := <-w.changes:
				if c.Repair && strings.HasPrefix(c.What, "ip rule 1999 deleted") {
					w.drain()
					return w
				}
			case <-deadline:
				break wait
			}
		}
	}
	t.Fatal("the watcher reported none of 50 marker rule deletions within 5 s")
	return nil
}

// drain discards what arrives within 50 ms.
func (w *watch) drain() {
	for {
		select {
		case <-w.changes:
		case <-time.After(50 * time.Millisecond):
			return
		}
	}
}

// repairs says what the repairs reported within d were.
func (w *watch) repairs(d time.Duration) []string {
	var whats []string
	for _, c := range w.changesWithin(d) {
		whats = append(whats, c.What)
	}
	return whats
}

// changesWithin collects the repairs reported within d.
func (w *watch) changesWithin(d time.Duration) []Change {
	var out []Change
	deadline := time.After(d)
	for {
		select {
		case c := <-w.changes:
			if c.Repair {
				out = append(out, c)
			} else if c.What != "" {
				w.t.Errorf("a change that is no repair says %q", c.What)
			}
		case <-deadline:
			return out
		}
	}
}

func TestRootWatchRules(t *testing.T) {
	w := startWatch(t)
	ns := w.ns
	ns.Run(t, "ip", "rule", "add", "priority", "1101", "fwmark", "0x100/0xff00", "lookup", "101", "protocol", "77")
	ns.Run(t, "ip", "-6", "rule", "add", "priority", "1201", "from", "2001:db8:1::/48", "lookup", "102", "protocol", "77")
	ns.Run(t, "ip", "rule", "add", "priority", "500", "fwmark", "0x1/0x1", "lookup", "300") // someone else's
	if got := w.repairs(200 * time.Millisecond); len(got) != 0 {
		t.Errorf("adding rules reported repairs %q", got)
	}

	ns.Run(t, "ip", "rule", "del", "priority", "1101")
	ns.Run(t, "ip", "-6", "rule", "del", "priority", "1201")
	ns.Run(t, "ip", "rule", "add", "priority", "1300", "fwmark", "0x300/0x7f00", "unreachable", "protocol", "77")
	ns.Run(t, "ip", "rule", "del", "priority", "1300")
	var got []string
	var deleted []plan.Rule
	for _, c := range w.changesWithin(time.Second) {
		got = append(got, c.What)
		if c.Rule == nil {
			t.Errorf("%q: no rule", c.What)
			continue
		}
		deleted = append(deleted, *c.Rule)
	}
	want := []string{"ip rule 1101 deleted (fwmark 0x100/0xff00 lookup 101)",
		"ip -6 rule 1201 deleted (from 2001:db8:1::/48 lookup 102)", "ip rule 1300 deleted (fwmark 0x300/0x7f00 unreachable)"}
	if !slices.Equal(got, want) {
		t.Errorf("repairs %q, want %q", got, want)
	}
	// The deleted rules as a plan has them (SuppressPrefixLen and
	// comments are not in the kernel's message): RuleWanted finds each in
	// a plan's rules, and not once its table differs.
	planned := []plan.Rule{
		{Family: 4, Priority: 1101, Mark: 0x100, Mask: 0xff00, Action: "lookup", Table: 101, SuppressPrefixLen: -1, Comment: "isp1"},
		{Family: 6, Priority: 1201, Src: netip.MustParsePrefix("2001:db8:1::/48"), Action: "lookup", Table: 102, SuppressPrefixLen: -1},
		{Family: 4, Priority: 1300, Mark: 0x300, Mask: 0x7f00, Action: "unreachable", SuppressPrefixLen: -1},
	}
	for i, r := range deleted {
		if !RuleWanted(planned, r) {
			t.Errorf("deleted rule %+v not found among the planned ones", r)
		}
		moved := slices.Clone(planned)
		moved[i].Table++
		if RuleWanted(moved, r) {
			t.Errorf("deleted rule %+v found among planned ones that differ", r)
		}
	}

	ns.Run(t, "ip", "rule", "del", "priority", "500")
	if got := w.repairs(300 * time.Millisecond); len(got) != 0 {
		t.Errorf("deleting someone else's rule reported repairs %q", got)
	}
}

// TestRootWatchRouteFlush: `ip route flush table 101` takes our routes
// away; each is reported.
func TestRootWatchRouteFlush(t *testing.T) {
	w := startWatch(t)
	ns := w.ns
	ns.Run(t, "ip", "link", "add", "wan1", "type", "veth", "peer", "name", "peer1")
	ns.Run(t, "ip", "link", "set", "peer1", "up")
	ns.Run(t, "ip", "link", "set", "wan1", "up")
	ns.Run(t, "ip", "addr", "add", "198.51.100.2/26", "dev", "wan1")
	ns.Run(t, "ip", "route", "add", "default", "via", "198.51.100.1", "dev", "wan1", "table", "101", "proto", "77")
	ns.Run(t, "ip", "route", "add", "203.0.113.0/24", "via", "198.51.100.1", "dev", "wan1", "table", "101", "proto", "77")
	ns.Run(t, "ip", "route", "add", "198.18.0.0/15", "via", "198.51.100.1", "dev", "wan1", "table", "101") // someone else's
	w.drain()

	ns.Run(t, "ip", "route", "flush", "table", "101")
	got := w.repairs(time.Second)
	slices.Sort(got)
	want := []string{"route 203.0.113.0/24 table 101 deleted", "route default table 101 deleted"}
	if !slices.Equal(got, want) {
		t.Errorf("repairs %q, want %q", got, want)
	}
}
