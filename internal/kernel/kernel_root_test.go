package kernel

// Root tests: they apply real state to a real kernel, each inside a network
// namespace of its own (nstest.Enter: the test's goroutine, locked to its
// thread, unshares a fresh namespace; netlink sockets, /proc/sys/net and the
// nft and ip children all follow the thread), and check it with the ip and
// nft tools. nstest.Main compares the host's namespace before and after all
// tests, and Enter after each one.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/multiwan/multiwan/internal/config"
	"github.com/multiwan/multiwan/internal/lab/nstest"
	"github.com/multiwan/multiwan/internal/plan"
)

func TestMain(m *testing.M) { nstest.Main(m) }

// run executes a command from the test's thread, so in its namespace.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Lab addresses, from documentation ranges and unlike the host's.
var (
	wanAddr4 = netip.MustParsePrefix("198.51.100.2/26")
	wanGW4   = netip.MustParseAddr("198.51.100.1")
	wanAddr6 = netip.MustParsePrefix("2001:db8:1::2/64")
	wanGW6   = netip.MustParseAddr("2001:db8:1::1")
)

// setupWAN creates the veth pair wan1/peer1 in the test namespace, with
// wan1 addressed as a WAN whose gateway is on peer1's side.
func setupWAN(t *testing.T) {
	t.Helper()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "wan1"}, PeerName: "peer1"}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	wan1, err := netlink.LinkByName("wan1")
	if err != nil {
		t.Fatal(err)
	}
	peer1, err := netlink.LinkByName("peer1")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []netip.Prefix{wanAddr4, wanAddr6} {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
		if p.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(wan1, addr); err != nil {
			t.Fatalf("address %s on wan1: %v", p, err)
		}
	}
	for _, l := range []netlink.Link{wan1, peer1} {
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
}

// labDesired is a small plan with one of each kind of object. changed
// moves the marked traffic to table 102, turns the last resort from
// unreachable into blackhole, drops a set, a rule and a route.
func labDesired(changed bool) *plan.Desired {
	wanTable := 101
	lastResort := "unreachable"
	restore := "0x100"
	if changed {
		wanTable, lastResort, restore = 102, "blackhole", "0x200"
	}
	d := &plan.Desired{
		Table: plan.Table{
			Family: "inet",
			Name:   "multiwan",
			Sets: []plan.Set{
				{Name: "restore", Type: "mark", Map: "verdict", Comment: "WAN chains by mark",
					Elements: []plan.Element{{Key: restore, Value: "goto wan_isp1"}}},
				// An interval verdict map with a goto: nft 1.0.6 needs its
				// chain added before the map.
				{Name: "wan_net", Type: "ipv4_addr", Map: "verdict", Flags: []string{"interval"},
					Elements: []plan.Element{{Key: "198.51.100.0/26", Value: "goto wan_isp1"}}},
			},
			Chains: []plan.Chain{
				{Name: "wan_isp1", Rules: []string{"meta mark set meta mark and 0xffff00ff or 0x100", "ct mark set meta mark"}},
				{Name: "prerouting", Type: "filter", Hook: "prerouting", Priority: "mangle",
					Rules: []string{"ct mark and 0xff00 vmap @restore", "ip daddr vmap @wan_net"}},
				{Name: "postrouting", Type: "nat", Hook: "postrouting", Priority: "srcnat",
					Rules: []string{`oifname "wan1" masquerade`}},
			},
		},
		Rules: []plan.Rule{
			{Family: 4, Priority: 1000, Action: "lookup", Table: plan.TableMain, SuppressPrefixLen: 0},
			{Family: 4, Priority: 1001, Mark: 0x100, Mask: 0xff00, Action: "lookup", Table: wanTable, SuppressPrefixLen: -1},
			{Family: 4, Priority: 1099, Mark: 0x7f00, Mask: 0xff00, Action: lastResort, SuppressPrefixLen: -1},
			{Family: 6, Priority: 1000, Action: "lookup", Table: plan.TableMain, SuppressPrefixLen: 0},
			{Family: 6, Priority: 1001, Mark: 0x100, Mask: 0xff00, Action: "lookup", Table: 101, SuppressPrefixLen: -1},
		},
		Routes: []plan.Route{
			{Family: 4, Table: wanTable, Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: wanGW4, Dev: "wan1"},
			{Family: 6, Table: 101, Dst: netip.MustParsePrefix("::/0"), Gateway: wanGW6, Dev: "wan1"},
		},
		Sysctls: []plan.Sysctl{
			{Key: "net/ipv4/conf/wan1/rp_filter", Value: "2", Comment: "loose: replies may leave by another WAN's table"},
			{Key: "net/ipv4/conf/wan1/src_valid_mark", Value: "1", Comment: "rp_filter must see the fwmark"},
		},
	}
	if !changed {
		d.Table.Sets = append(d.Table.Sets, plan.Set{Name: "steer4", Type: "ipv4_addr", Flags: []string{"interval"},
			Elements: []plan.Element{{Key: "198.18.0.0/15"}, {Key: "203.0.113.0/24"}}})
		d.Table.Chains[1].Rules = append(d.Table.Chains[1].Rules, "ip daddr @steer4 goto wan_isp1")
		d.Rules = append(d.Rules, plan.Rule{Family: 4, Priority: 1002, Src: netip.MustParsePrefix("198.51.100.2/32"),
			Action: "lookup", Table: 101, SuppressPrefixLen: -1})
	}
	return d
}

func newKernel(t *testing.T) *Kernel {
	t.Helper()
	k, err := New("multiwan")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writeSysctl(t *testing.T, key, value string) {
	t.Helper()
	if err := os.WriteFile("/proc/sys/"+key, []byte(value), 0); err != nil {
		t.Fatal(err)
	}
}

func readSysctl(t *testing.T, key string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/" + key)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// wantLines fails unless every pattern matches a line of out.
func wantLines(t *testing.T, what, out string, patterns ...string) {
	t.Helper()
	for _, p := range patterns {
		if !regexp.MustCompile(`(?m)` + p).MatchString(out) {
			t.Errorf("%s: no line matches %q in:\n%s", what, p, out)
		}
	}
}

// noLines fails if any pattern matches a line of out.
func noLines(t *testing.T, what, out string, patterns ...string) {
	t.Helper()
	for _, p := range patterns {
		if regexp.MustCompile(`(?m)` + p).MatchString(out) {
			t.Errorf("%s: a line matches %q in:\n%s", what, p, out)
		}
	}
}

func TestRootApplyAdoptChangeRemove(t *testing.T) {
	nstest.Enter(t)
	setupWAN(t)
	ctx := context.Background()
	const rpFilter, validMark = "net/ipv4/conf/wan1/rp_filter", "net/ipv4/conf/wan1/src_valid_mark"
	writeSysctl(t, rpFilter, "1")
	writeSysctl(t, validMark, "0")

	// First apply.
	k := newKernel(t)
	var logs logRecords
	if err := k.Apply(ctx, labDesired(false), logs.logger()); err != nil {
		t.Fatal(err)
	}
	summary := lastRecord(t, logs.all(t), "kernel routing updated")
	for key, want := range map[string]float64{"rules_added": 6, "rules_deleted": 0, "routes_added": 2, "routes_deleted": 0} {
		if summary[key] != want {
			t.Errorf("first apply: %s = %v, want %v", key, summary[key], want)
		}
	}
	rules4 := run(t, "ip", "-4", "rule")
	wantLines(t, "ip -4 rule", rules4,
		`^1000:\s+from all lookup main suppress_prefixlength 0 proto 77\s*$`,
		`^1001:\s+from all fwmark 0x100/0xff00 lookup 101 proto 77\s*$`,
		`^1002:\s+from 198\.51\.100\.2 lookup 101 proto 77\s*$`,
		`^1099:\s+from all fwmark 0x7f00/0xff00 unreachable proto 77\s*$`)
	wantLines(t, "ip -6 rule", run(t, "ip", "-6", "rule"),
		`^1000:\s+from all lookup main suppress_prefixlength 0 proto 77\s*$`,
		`^1001:\s+from all fwmark 0x100/0xff00 lookup 101 proto 77\s*$`)
	wantLines(t, "ip route show table 101", run(t, "ip", "-4", "route", "show", "table", "101"),
		`^default via 198\.51\.100\.1 dev wan1 proto 77\s*$`)
	wantLines(t, "ip -6 route show table 101", run(t, "ip", "-6", "route", "show", "table", "101"),
		`^default via 2001:db8:1::1 dev wan1 proto 77 metric 1024`)
	table := run(t, "nft", "list", "table", "inet", "multiwan")
	wantLines(t, "nft list table", table,
		`type filter hook prerouting priority mangle; policy accept;`,
		`type nat hook postrouting priority srcnat; policy accept;`,
		`ct mark & 0x0000ff00 vmap @restore`,
		`ip daddr @steer4 goto wan_isp1`,
		`elements = \{ 0x00000100 : goto wan_isp1 \}`,
		`elements = \{ 198\.51\.100\.0/26 : goto wan_isp1 \}`,
		`set steer4 \{`)
	if readSysctl(t, rpFilter) != "2" || readSysctl(t, validMark) != "1" {
		t.Errorf("sysctls not set: rp_filter=%s src_valid_mark=%s", readSysctl(t, rpFilter), readSysctl(t, validMark))
	}

	// Applying again, and adopting with a new Kernel as a daemon
	// restarted after kill -9 does, changes nothing.
	if a, d, err := k.ApplyRules(labDesired(false).Rules); a != 0 || d != 0 || err != nil {
		t.Errorf("ApplyRules again: added %d, deleted %d, %v", a, d, err)
	}
	if a, d, err := k.ApplyRoutes(labDesired(false).Routes); a != 0 || d != 0 || err != nil {
		t.Errorf("ApplyRoutes again: added %d, deleted %d, %v", a, d, err)
	}
	adopter := newKernel(t)
	if exists, err := adopter.Current(ctx); err != nil || !exists {
		t.Errorf("Current = %v, %v; want the table found", exists, err)
	}
	if err := adopter.Apply(ctx, labDesired(false), logs.logger()); err != nil {
		t.Fatal(err)
	}
	for _, rec := range logs.all(t) {
		if rec["level"] != "DEBUG" {
			t.Errorf("adopting logged %v", rec)
		}
	}
	if got := run(t, "ip", "-4", "rule"); got != rules4 {
		t.Errorf("adopting changed the rules:\n%s\nwas:\n%s", got, rules4)
	}
	if got := run(t, "nft", "list", "table", "inet", "multiwan"); got != table {
		t.Errorf("adopting changed the table:\n%s\nwas:\n%s", got, table)
	}

	// Someone else's rule, route in our table, and nft table.
	run(t, "ip", "rule", "add", "priority", "500", "fwmark", "0x1/0x1", "lookup", "300")
	run(t, "ip", "route", "add", "203.0.113.0/24", "via", wanGW4.String(), "dev", "wan1", "table", "101")
	run(t, "nft", "add table inet other; add chain inet other input { type filter hook input priority 0; }")

	if err := k.Apply(ctx, labDesired(true), logs.logger()); err != nil {
		t.Fatal(err)
	}
	summary = lastRecord(t, logs.all(t), "kernel routing updated")
	for key, want := range map[string]float64{"rules_added": 2, "rules_deleted": 3, "routes_added": 1, "routes_deleted": 1} {
		if summary[key] != want {
			t.Errorf("changed apply: %s = %v, want %v", key, summary[key], want)
		}
	}
	rules4 = run(t, "ip", "-4", "rule")
	wantLines(t, "ip -4 rule after change", rules4,
		`^500:\s+from all fwmark 0x1/0x1 lookup 300\s*$`,
		`^1001:\s+from all fwmark 0x100/0xff00 lookup 102 proto 77\s*$`,
		`^1099:\s+from all fwmark 0x7f00/0xff00 blackhole proto 77\s*$`)
	noLines(t, "ip -4 rule after change", rules4, `lookup 101`, `unreachable`, `^1002:`)
	routes101 := run(t, "ip", "-4", "route", "show", "table", "101")
	wantLines(t, "table 101 after change", routes101, `^203\.0\.113\.0/24 via 198\.51\.100\.1 dev wan1\s*$`)
	noLines(t, "table 101 after change", routes101, `proto 77`)
	wantLines(t, "table 102 after change", run(t, "ip", "-4", "route", "show", "table", "102"),
		`^default via 198\.51\.100\.1 dev wan1 proto 77\s*$`)
	table = run(t, "nft", "list", "table", "inet", "multiwan")
	wantLines(t, "nft table after change", table, `elements = \{ 0x00000200 : goto wan_isp1 \}`)
	noLines(t, "nft table after change", table, `steer4`)
	wantLines(t, "nft list tables", run(t, "nft", "list", "tables"), `^table inet other$`, `^table inet multiwan$`)

	// Remove takes away ours only and restores the sysctls.
	if err := k.Remove(ctx, logs.logger()); err != nil {
		t.Fatal(err)
	}
	for _, fam := range []string{"-4", "-6"} {
		noLines(t, "ip "+fam+" rule after Remove", run(t, "ip", fam, "rule"), `proto 77`)
		if got := run(t, "ip", fam, "route", "show", "table", "all", "proto", "77"); got != "" {
			t.Errorf("ip %s route: ours left after Remove:\n%s", fam, got)
		}
	}
	wantLines(t, "ip rule after Remove", run(t, "ip", "-4", "rule"), `^500:\s+from all fwmark 0x1/0x1 lookup 300\s*$`)
	wantLines(t, "table 101 after Remove", run(t, "ip", "-4", "route", "show", "table", "101"), `^203\.0\.113\.0/24 via`)
	if got := run(t, "nft", "list", "tables"); got != "table inet other\n" {
		t.Errorf("nft tables after Remove:\n%s", got)
	}
	if readSysctl(t, rpFilter) != "1" || readSysctl(t, validMark) != "0" {
		t.Errorf("sysctls not restored: rp_filter=%s src_valid_mark=%s", readSysctl(t, rpFilter), readSysctl(t, validMark))
	}
	if err := k.Remove(ctx, nil); err != nil {
		t.Errorf("a second Remove: %v", err)
	}
}

// lastRecord returns the last record with message msg.
func lastRecord(t *testing.T, recs []map[string]any, msg string) map[string]any {
	t.Helper()
	for i := len(recs) - 1; i >= 0; i-- {
		if recs[i]["msg"] == msg {
			return recs[i]
		}
	}
	t.Fatalf("no %q in the log: %v", msg, recs)
	return nil
}

func TestRootMissingInterfaceFailsOnlyItsRoute(t *testing.T) {
	nstest.Enter(t)
	setupWAN(t)
	var r Routing
	routes := []plan.Route{
		{Family: 4, Table: 101, Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: wanGW4, Dev: "wan1"},
		{Family: 4, Table: 102, Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("203.0.113.1"), Dev: "wan9"},
	}
	added, deleted, err := r.ApplyRoutes(routes)
	if err == nil || !strings.Contains(err.Error(), "wan9") {
		t.Errorf("ApplyRoutes error = %v, want one about wan9", err)
	}
	if added != 1 || deleted != 0 {
		t.Errorf("added %d, deleted %d; want 1, 0", added, deleted)
	}
	wantLines(t, "table 101", run(t, "ip", "-4", "route", "show", "table", "101"), `^default via 198\.51\.100\.1 dev wan1 proto 77`)

	// Gateway change: replaced in place, nothing deleted.
	routes[0].Gateway = netip.MustParseAddr("198.51.100.3")
	added, deleted, err = r.ApplyRoutes(routes[:1])
	if err != nil || added != 1 || deleted != 0 {
		t.Errorf("gateway change: added %d, deleted %d, %v; want 1, 0, nil", added, deleted, err)
	}
	got := run(t, "ip", "-4", "route", "show", "table", "101")
	if got != "default via 198.51.100.3 dev wan1 proto 77 \n" {
		t.Errorf("table 101 after gateway change:\n%q", got)
	}
	if err := r.RemoveAll(); err != nil {
		t.Fatal(err)
	}
	if got := run(t, "ip", "-4", "route", "show", "table", "all", "proto", "77"); got != "" {
		t.Errorf("left after RemoveAll:\n%s", got)
	}
}

// TestRootBadTableKeepsOldOne checks the transaction with the real nft: a
// table that nft refuses leaves the installed one exactly as it was.
func TestRootBadTableKeepsOldOne(t *testing.T) {
	nstest.Enter(t)
	ctx := context.Background()
	n, err := NewNFT("multiwan")
	if err != nil {
		t.Fatal(err)
	}
	good := labDesired(false).Table
	if err := n.Apply(ctx, &good); err != nil {
		t.Fatal(err)
	}
	before := run(t, "nft", "list", "table", "inet", "multiwan")
	bad := labDesired(true).Table
	bad.Chains[1].Rules = append(bad.Chains[1].Rules, "this is not nft")
	if err := n.Apply(ctx, &bad); err == nil {
		t.Fatal("nft accepted a bad rule")
	}
	if after := run(t, "nft", "list", "table", "inet", "multiwan"); after != before {
		t.Errorf("a failed Apply changed the table:\n%s\nwas:\n%s", after, before)
	}
	if err := n.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if exists, err := n.Current(ctx); err != nil || exists {
		t.Errorf("Current after Remove = %v, %v", exists, err)
	}
}

// TestRootExamplePlans applies what the planner makes of every example
// config, with every WAN up, to a namespace that has the WANs' interfaces:
// the real nft and kernel must take it, a second apply must change nothing,
// and Remove must leave nothing of ours.
func TestRootExamplePlans(t *testing.T) {
	files, err := filepath.Glob("../../examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example configs (%v)", err)
	}
	for _, f := range files {
		// Each subtest runs on its own goroutine and enters its own
		// namespace.
		t.Run(filepath.Base(f), func(t *testing.T) { applyExample(t, f) })
	}
}

func applyExample(t *testing.T, file string) {
	nstest.Enter(t)
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	links, health := plan.Links{}, plan.Health{}
	for i, w := range cfg.WANs {
		addr := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i + 1), 2}), 24)
		links[w.Name] = plan.Link{Exists: true, Up: true, PointToPoint: w.GatewayAuto, Addrs: []netip.Prefix{addr}}
		health[w.Name] = plan.StateUp
	}
	d := plan.Plan(cfg, health, links, "")
	for i, r := range d.Routes {
		addWANLink(t, r, fmt.Sprintf("peer%d", i))
	}

	ctx := context.Background()
	k, err := New(d.Table.Name)
	if err != nil {
		t.Fatal(err)
	}
	var logs logRecords
	if err := k.Apply(ctx, d, logs.logger()); err != nil {
		t.Fatalf("apply: %v", err)
	}
	logs.all(t)
	if err := k.Apply(ctx, d, logs.logger()); err != nil {
		t.Fatalf("apply again: %v", err)
	}
	for _, rec := range logs.all(t) {
		if rec["level"] != "DEBUG" {
			t.Errorf("second apply logged %v", rec)
		}
	}
	if err := k.Remove(ctx, nil); err != nil {
		t.Fatalf("remove: %v", err)
	}
	for _, fam := range []string{"-4", "-6"} {
		noLines(t, "ip "+fam+" rule after Remove", run(t, "ip", fam, "rule"), `proto 77`)
		if got := run(t, "ip", fam, "route", "show", "table", "all", "proto", "77"); got != "" {
			t.Errorf("ip %s route: ours left after Remove:\n%s", fam, got)
		}
	}
	if got := run(t, "nft", "list", "tables"); got != "" {
		t.Errorf("nft tables left after Remove:\n%s", got)
	}
}

// addWANLink creates the interface route r leaves by, unless it exists,
// as one end of a veth pair, with an address next to r's gateway.
func addWANLink(t *testing.T, r plan.Route, peer string) {
	t.Helper()
	if _, err := netlink.LinkByName(r.Dev); err == nil {
		return
	}
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: r.Dev}, PeerName: peer}); err != nil {
		t.Fatalf("veth %s: %v", r.Dev, err)
	}
	for _, name := range []string{r.Dev, peer} {
		l, err := netlink.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	if !r.Gateway.IsValid() {
		return // a point-to-point WAN: its route names the device only
	}
	// Gateways end in .1 or .254 (or ::1): take a neighbour in the /24
	// (/64), so that the gateway is on-link.
	ip := r.Gateway.Next()
	if s := r.Gateway.AsSlice(); s[len(s)-1] >= 128 {
		ip = r.Gateway.Prev()
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(24, 32)}}
	if ip.Is6() {
		addr.Mask, addr.Flags = net.CIDRMask(64, 128), unix.IFA_F_NODAD
	}
	l, err := netlink.LinkByName(r.Dev)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrAdd(l, addr); err != nil && !errors.Is(err, unix.EEXIST) {
		t.Fatalf("address on %s: %v", r.Dev, err)
	}
}
