package plan

import (
	"flag"
	"math"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/multiwan/multiwan/internal/config"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func load(t testing.TB, name string) *config.Config {
	t.Helper()
	cfg, err := config.Load(filepath.Join("..", "..", "examples", name))
	if err != nil {
		t.Fatalf("load %s: %v", name, err)
	}
	return cfg
}

// upLinks returns every WAN's link present and up; WAN i gets the address
// given in addrs[i] (a prefix) when there is one.
func upLinks(cfg *config.Config, addrs ...string) Links {
	l := Links{}
	for i, w := range cfg.WANs {
		link := Link{Exists: true, Up: true, PointToPoint: w.GatewayAuto}
		if i < len(addrs) {
			link.Addrs = []netip.Prefix{netip.MustParsePrefix(addrs[i])}
		}
		l[w.Name] = link
	}
	return l
}

func allUp(cfg *config.Config, down ...string) Health {
	h := Health{}
	for _, w := range cfg.WANs {
		h[w.Name] = StateUp
	}
	for _, d := range down {
		h[d] = StateDown
	}
	return h
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./internal/plan -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from the golden file; diff it with go test -update && git diff\ngot:\n%s", path, got)
	}
}

// TestGolden pins the whole plan of every example, with all WANs up and with
// the first one down.
func TestGolden(t *testing.T) {
	cases := []struct {
		file  string
		addrs []string
	}{
		{"seed000-dual-wan-failover.yaml", []string{"192.0.2.10/24", "198.51.100.10/24"}},
		{"seed002-active-active.yaml", []string{"192.0.2.36/24", "198.51.100.31/24"}},
		{"seed002-active-passive.yaml", nil},
		{"seed003-multihomed-server.yaml", []string{"203.0.113.101/32", "203.0.113.102/32"}},
		{"seed004-three-uplinks.yaml", seed004Addrs},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			cfg := load(t, c.file)
			links := upLinks(cfg, c.addrs...)
			name := strings.TrimSuffix(c.file, ".yaml")
			golden(t, name, Plan(cfg, allUp(cfg), links, "").String())
			golden(t, name+"-down-"+cfg.WANs[0].Name,
				Plan(cfg, allUp(cfg, cfg.WANs[0].Name), links, "").String())
		})
	}
}

// lan is the main table of a router with a LAN on 203.0.113.0/24... for the
// seed-000 example: the LAN, the WANs' connected subnets and a DHCP default
// route that must be ignored.
var seed000Main = []Route{
	{Table: TableMain, Dst: netip.MustParsePrefix("10.100.0.0/24"), Dev: "brlan"},
	{Table: TableMain, Dst: netip.MustParsePrefix("192.0.2.0/24"), Dev: "brwan1"},
	{Table: TableMain, Dst: netip.MustParsePrefix("198.51.100.0/24"), Dev: "brwan2"},
	{Table: TableMain, Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("192.0.2.1"), Dev: "brwan1"},
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// only asserts that the packet has one outcome and returns it.
func only(t *testing.T, outs []Outcome) Outcome {
	t.Helper()
	if len(outs) != 1 {
		t.Fatalf("want one outcome, got %v", outs)
	}
	return outs[0]
}

func TestSeed000Scenarios(t *testing.T) {
	cfg := load(t, "seed000-dual-wan-failover.yaml")
	links := upLinks(cfg, "192.0.2.10/24", "198.51.100.10/24")
	up := Plan(cfg, allUp(cfg), links, "")
	isp1Down := Plan(cfg, allUp(cfg, "isp1"), links, "")
	web := Packet{IIF: "brlan", Src: addr("10.100.0.20"), Dst: addr("203.0.113.80"), Proto: "tcp", SrcPort: 40000, DstPort: 443}

	t.Run("LAN traffic leaves by the primary", func(t *testing.T) {
		o := only(t, up.Trace(web, seed000Main))
		if o.WAN != "isp1" || o.CtMark != up.Marks["isp1"] {
			t.Fatalf("got %v", o)
		}
	})
	t.Run("primary down: new connections take the backup", func(t *testing.T) {
		if o := only(t, isp1Down.Trace(web, seed000Main)); o.WAN != "isp2" {
			t.Fatalf("got %v", o)
		}
	})
	t.Run("an established connection keeps its WAN after a switch", func(t *testing.T) {
		p := web
		p.Established, p.CtMark = true, up.Marks["isp1"]
		if o := only(t, isp1Down.Trace(p, seed000Main)); o.WAN != "isp1" {
			t.Fatalf("got %v", o)
		}
	})
	t.Run("pinned host never fails over", func(t *testing.T) {
		p := web
		p.Src = addr("203.0.113.53")
		if o := only(t, up.Trace(p, seed000Main)); o.WAN != "isp1" {
			t.Fatalf("up: got %v", o)
		}
		if o := only(t, isp1Down.Trace(p, seed000Main)); o.Verdict != "unreachable" || o.CtMark != 0 {
			t.Fatalf("down: got %v", o)
		}
	})
	t.Run("UDP is movable", func(t *testing.T) {
		p := web
		p.Proto = "udp"
		o := only(t, up.Trace(p, seed000Main))
		if o.WAN != "isp1" || o.CtMark != up.Marks["isp1"]|up.MovableBit {
			t.Fatalf("got %v", o)
		}
	})
	t.Run("inbound on the backup is answered by the backup", func(t *testing.T) {
		in := Packet{IIF: "brwan2", Src: addr("203.0.113.99"), Dst: addr("198.51.100.10"), Proto: "tcp", DstPort: 22}
		o := only(t, up.Trace(in, seed000Main))
		if o.CtMark != up.Marks["isp2"] {
			t.Fatalf("inbound: got %v", o)
		}
		reply := Packet{Src: addr("198.51.100.10"), Dst: addr("203.0.113.99"), Proto: "tcp", SrcPort: 22,
			Established: true, CtMark: o.CtMark}
		if o := only(t, up.Trace(reply, seed000Main)); o.WAN != "isp2" {
			t.Fatalf("reply: got %v", o)
		}
	})
	t.Run("marked traffic (a probe) leaves by its WAN whatever the policy", func(t *testing.T) {
		probe := Packet{Src: addr("198.51.100.10"), Dst: addr("203.0.113.20"), Proto: "icmp", Mark: up.Marks["isp2"]}
		if o := only(t, up.Trace(probe, seed000Main)); o.WAN != "isp2" {
			t.Fatalf("got %v", o)
		}
		probe.Mark = isp1Down.Marks["isp1"]
		if o := only(t, isp1Down.Trace(probe, seed000Main)); o.WAN != "isp1" {
			t.Fatalf("probe of a down WAN: got %v", o)
		}
	})
	t.Run("socket bound to the backup's address leaves by the backup", func(t *testing.T) {
		p := Packet{Src: addr("198.51.100.10"), Dst: addr("203.0.113.80"), Proto: "tcp", DstPort: 80}
		if o := only(t, up.Trace(p, seed000Main)); o.WAN != "isp2" {
			t.Fatalf("got %v", o)
		}
	})
	t.Run("router's unbound socket (best WAN's source) follows the rules", func(t *testing.T) {
		p := Packet{Src: addr("192.0.2.10"), Dst: addr("203.0.113.80"), Proto: "tcp", DstPort: 80}
		if o := only(t, up.Trace(p, seed000Main)); o.WAN != "isp1" {
			t.Fatalf("policy: got %v", o)
		}
		p.Proto = "udp" // movable rule: same WAN, movable bit set
		if o := only(t, up.Trace(p, seed000Main)); o.WAN != "isp1" || o.CtMark&up.MovableBit == 0 {
			t.Fatalf("rule: got %v", o)
		}
		p.Src = addr("198.51.100.10") // isp1 down: isp2 is best, its address the unbound source
		if o := only(t, isp1Down.Trace(p, seed000Main)); o.WAN != "isp2" || o.CtMark&up.MovableBit == 0 {
			t.Fatalf("isp1 down: got %v", o)
		}
	})
	t.Run("the ISP router's own subnet is reached directly", func(t *testing.T) {
		p := web
		p.Dst = addr("198.51.100.1")
		o := only(t, up.Trace(p, seed000Main))
		if o.Route == nil || o.Route.Dev != "brwan2" || o.CtMark != up.Marks["isp2"] {
			t.Fatalf("got %v", o)
		}
	})
	t.Run("LAN-bound traffic is routed by main, not the WAN table", func(t *testing.T) {
		p := Packet{IIF: "brwan1", Src: addr("203.0.113.99"), Dst: addr("10.100.0.20"), Proto: "tcp", DstPort: 22000}
		if o := only(t, up.Trace(p, seed000Main)); o.Route == nil || o.Route.Dev != "brlan" {
			t.Fatalf("got %v", o)
		}
	})
	t.Run("router's own unmarked sockets take the best WAN's table", func(t *testing.T) {
		var local *Rule
		for i := range isp1Down.Rules {
			if isp1Down.Rules[i].Priority == cfg.RulePriority+prioLocal {
				local = &isp1Down.Rules[i]
			}
		}
		w, _ := cfg.WANByName("isp2")
		if local == nil || local.Table != w.Table {
			t.Fatalf("catch-all rule: %+v", local)
		}
	})
	t.Run("manual override", func(t *testing.T) {
		d := Plan(cfg, allUp(cfg), links, "isp2")
		if o := only(t, d.Trace(web, seed000Main)); o.WAN != "isp2" {
			t.Fatalf("got %v", o)
		}
		p := web
		p.Src = addr("203.0.113.53") // pinned to isp1: the override does not apply
		if o := only(t, d.Trace(p, seed000Main)); o.WAN != "isp1" {
			t.Fatalf("pinned: got %v", o)
		}
	})
	t.Run("link missing: WAN down whatever health says", func(t *testing.T) {
		l := upLinks(cfg)
		l["isp1"] = Link{}
		d := Plan(cfg, allUp(cfg), l, "")
		if o := only(t, d.Trace(web, seed000Main)); o.WAN != "isp2" {
			t.Fatalf("got %v", o)
		}
	})
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestBalancedShares(t *testing.T) {
	main := []Route{{Table: TableMain, Dst: netip.MustParsePrefix("10.0.0.0/8"), Dev: "lan"}}
	flow := Packet{IIF: "lan", Src: addr("10.0.0.5"), Dst: addr("203.0.113.80"), Proto: "tcp", DstPort: 80}

	cfg := load(t, "seed002-active-active.yaml")
	d := Plan(cfg, allUp(cfg), upLinks(cfg), "")
	s := Shares(d.Trace(flow, main))
	if !near(s["isp1"], 0.6) || !near(s["isp2"], 0.4) {
		t.Errorf("seed002 60/40: got %v", s)
	}
	ssh := flow
	ssh.IIF, ssh.DstPort = "enp8s0", 22
	if o := only(t, d.Trace(ssh, main)); o.WAN != "isp2" {
		t.Errorf("seed002 ssh from enp8s0: got %v", o)
	}

	cfg = load(t, "seed003-multihomed-server.yaml")
	d = Plan(cfg, allUp(cfg), upLinks(cfg), "")
	if s := Shares(d.Trace(flow, main)); !near(s["isp1"], 0.8) || !near(s["isp2"], 0.2) {
		t.Errorf("seed003 8:2: got %v", s)
	}
	smtp := flow
	smtp.DstPort = 587
	if o := only(t, d.Trace(smtp, main)); o.WAN != "isp1" {
		t.Errorf("seed003 smtp: got %v", o)
	}
	portal := flow
	portal.Dst = addr("198.51.100.80")
	if o := only(t, d.Trace(portal, main)); o.WAN != "isp2" {
		t.Errorf("seed003 portal: got %v", o)
	}
	vpn := flow
	vpn.Dst, vpn.Proto, vpn.DstPort = addr("203.0.113.7"), "udp", 1130
	if o := only(t, d.Trace(vpn, main)); o.WAN != "isp1" {
		t.Errorf("seed003 vpn: got %v", o)
	}
	d = Plan(cfg, allUp(cfg, "isp1"), upLinks(cfg), "")
	if o := only(t, d.Trace(vpn, main)); o.WAN != "isp2" {
		t.Errorf("seed003 vpn with isp1 down: got %v", o)
	}
	if o := only(t, d.Trace(smtp, main)); o.Verdict != "unreachable" {
		t.Errorf("seed003 smtp with isp1 down: got %v", o)
	}

	cfg = load(t, "seed004-three-uplinks.yaml") // the LAN rides the tunnels
	d = Plan(cfg, allUp(cfg), upLinks(cfg), "")
	s = Shares(d.Trace(flow, main))
	for _, w := range []string{"wg1", "wg2", "wg3"} {
		if !near(s[w], 1.0/3) {
			t.Errorf("seed004 %s: got %v", w, s)
		}
	}
	d = Plan(cfg, allUp(cfg, "wg2"), upLinks(cfg), "")
	if s := Shares(d.Trace(flow, main)); !near(s["wg1"], 0.5) || !near(s["wg3"], 0.5) {
		t.Errorf("seed004 wg2 down: got %v", s)
	}
	d = Plan(cfg, allUp(cfg, "wg1", "wg2", "wg3"), upLinks(cfg), "")
	if o := only(t, d.Trace(flow, main)); o.Verdict != "unreachable" {
		t.Errorf("seed004 all down: got %v", o)
	}
}

func TestTierPreference(t *testing.T) {
	cfg := load(t, "seed000-dual-wan-failover.yaml")
	links := upLinks(cfg)
	cases := []struct {
		health Health
		want   string
	}{
		{Health{"isp1": StateUp, "isp2": StateUp}, "isp1"},
		{Health{"isp1": StateDegraded, "isp2": StateUp}, "isp2"},
		{Health{"isp1": StateUnknown, "isp2": StateUp}, "isp1"},
		{Health{"isp1": StateUnknown, "isp2": StateUnknown}, "isp1"},
		{Health{"isp1": StateDegraded, "isp2": StateDown}, "isp1"},
		{Health{"isp1": StateDown, "isp2": StateDegraded}, "isp2"},
		{Health{}, "isp1"}, // nothing known yet: keep the preferred tier
		{Health{"isp1": StateDown, "isp2": StateDown}, ""},
	}
	for _, c := range cases {
		d := Plan(cfg, c.health, links, "")
		p := d.Policy("failover")
		got := ""
		if len(p.Active) > 0 {
			got = p.Active[0].WAN
		}
		if got != c.want || (got == "" && p.LastResort != "unreachable") {
			t.Errorf("health %v: active %v last resort %q, want %q", c.health, p.Active, p.LastResort, c.want)
		}
	}
}

func TestDeposit(t *testing.T) {
	cases := []struct{ v, mask, want uint32 }{
		{1, 0xff00, 0x100},
		{2, 0xff00, 0x200},
		{3, 0x0f0f, 0x0003},
		{0x1f, 0x0f0f, 0x010f},
		{1, 0x8001_0000, 0x0001_0000},
	}
	for _, c := range cases {
		if got := deposit(c.v, c.mask); got != c.want {
			t.Errorf("deposit(%#x, %#x) = %#x, want %#x", c.v, c.mask, got, c.want)
		}
	}
}

func TestNestedOut(t *testing.T) {
	in := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("10.1.0.0/16"),
		netip.MustParsePrefix("192.0.2.7/32"), netip.MustParsePrefix("192.0.2.7/32"),
		netip.MustParsePrefix("192.0.2.0/30"), netip.MustParsePrefix("198.51.100.0/24"),
	}
	var got []string
	for _, p := range nestedOut(in) {
		got = append(got, p.String())
	}
	want := "10.0.0.0/8 192.0.2.0/30 192.0.2.7/32 198.51.100.0/24"
	if strings.Join(got, " ") != want {
		t.Errorf("got %v, want %s", got, want)
	}
}

// TestDeterministic: the same inputs give byte-identical plans, whatever
// the order of map iteration.
func TestDeterministic(t *testing.T) {
	cfg := load(t, "seed004-three-uplinks.yaml")
	links := upLinks(cfg, "198.18.1.2/24", "198.18.2.2/24", "198.18.3.2/24")
	first := Plan(cfg, allUp(cfg), links, "").String()
	for range 20 {
		if got := Plan(cfg, allUp(cfg), links, "").String(); got != first {
			t.Fatal("plan differs between runs")
		}
	}
}

// bucketsOf returns, per hash bucket, the WAN the sticky policy's chain
// sends it to, read back from the rendered nft rule.
func bucketsOf(t *testing.T, d *Desired, policy string) []string {
	t.Helper()
	var rule string
	for _, c := range d.Table.Chains {
		if c.Name == PolicyChain(policy) {
			rule = c.Rules[0]
		}
	}
	if !strings.Contains(rule, "jhash ip saddr mod 1024 seed 0x6d77616e vmap") {
		t.Fatalf("%s is not a source hash: %q", PolicyChain(policy), rule)
	}
	var els []Element
	for _, s := range d.Table.Sets {
		if s.Name == PolicyMap(policy, 4) {
			els = s.Elements
		}
	}
	if !strings.HasSuffix(rule, "vmap @"+PolicyMap(policy, 4)) {
		t.Fatalf("%s does not look its decision up in %s: %q", PolicyChain(policy), PolicyMap(policy, 4), rule)
	}
	owner := make([]string, Buckets)
	for _, e := range els {
		lo, hi, ok := strings.Cut(e.Key, "-")
		if !ok {
			hi = lo
		}
		wan, ok := WANOfChain(strings.TrimPrefix(e.Value, "goto "))
		if !ok {
			t.Fatalf("bucket %s: %q is not a WAN's chain", e.Key, e.Value)
		}
		for b := parseNum(lo); b <= parseNum(hi); b++ {
			owner[b] = wan
		}
	}
	for b, o := range owner {
		if o == "" {
			t.Fatalf("bucket %d has no WAN", b)
		}
	}
	return owner
}

func TestStickySource(t *testing.T) {
	cfg, err := config.Parse("sticky.yaml", []byte(`wans:
  - {name: a, interface: wan1, gateway: 192.0.2.1}
  - {name: b, interface: wan2, gateway: 192.0.2.65}
  - {name: c, interface: wan3, gateway: 192.0.2.129}
policies:
  - name: sticky
    sticky: source
    members: [{wan: a, weight: 2}, {wan: b, weight: 1}, {wan: c, weight: 1}]
default_policy: sticky
`))
	if err != nil {
		t.Fatal(err)
	}
	links := upLinks(cfg)
	all := bucketsOf(t, Plan(cfg, allUp(cfg), links, ""), "sticky")
	count := map[string]int{}
	for _, o := range all {
		count[o]++
	}
	if count["a"] != 512 || count["b"] != 256 || count["c"] != 256 {
		t.Fatalf("buckets by weight 2:1:1: %v", count)
	}
	bDown := bucketsOf(t, Plan(cfg, allUp(cfg, "b"), links, ""), "sticky")
	count = map[string]int{}
	for i, o := range bDown {
		count[o]++
		if all[i] != "b" && o != all[i] {
			t.Fatalf("bucket %d moved from %s to %s although %s is still up", i, all[i], o, all[i])
		}
	}
	// b's 256 buckets are shared 2:1 between a and c.
	if count["b"] != 0 || count["a"] != 512+170 || count["c"] != 256+86 {
		t.Fatalf("after b down: %v", count)
	}
	// A host is traced to one WAN per hash: the tracer sees every bucket.
	main := []Route{{Table: TableMain, Dst: netip.MustParsePrefix("10.0.0.0/8"), Dev: "lan"}}
	s := Shares(Plan(cfg, allUp(cfg), links, "").Trace(Packet{IIF: "lan", Src: addr("10.0.0.9"), Dst: addr("203.0.113.80"), Proto: "tcp", DstPort: 80}, main))
	if !near(s["a"], 0.5) || !near(s["b"], 0.25) || !near(s["c"], 0.25) {
		t.Fatalf("traced shares %v", s)
	}
}

func TestDualStack(t *testing.T) {
	cfg := load(t, "dual-stack.yaml")
	links := Links{
		"isp1": {Exists: true, Up: true, Gateway: addr("192.0.2.1"), Gateway6: addr("fe80::1"),
			Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.2/26"), netip.MustParsePrefix("2001:db8:1::2/64"), netip.MustParsePrefix("fe80::2/64")}},
		"isp2": {Exists: true, Up: true,
			Addrs: []netip.Prefix{netip.MustParsePrefix("198.51.100.2/24"), netip.MustParsePrefix("2001:db8:2::2/64"), netip.MustParsePrefix("fe80::2/64")}},
	}
	health := Health{"isp1": StateUp, "isp2": StateUp, Key6("isp1"): StateUp, Key6("isp2"): StateUp}
	main := []Route{
		{Table: TableMain, Dst: netip.MustParsePrefix("198.51.100.128/25"), Dev: "lan"},
		{Table: TableMain, Dst: netip.MustParsePrefix("2001:db8:100::/64"), Dev: "lan"},
	}
	web4 := Packet{IIF: "lan", Src: addr("198.51.100.130"), Dst: addr("203.0.113.80"), Proto: "tcp", DstPort: 443}
	web6 := Packet{IIF: "lan", Src: addr("2001:db8:200::10"), Dst: addr("2001:db8:ffff::80"), Proto: "tcp", DstPort: 443}
	delegated := web6
	delegated.Src = addr("2001:db8:100::10")

	d := Plan(cfg, health, links, "")
	golden(t, "dual-stack", d.String())
	if o := only(t, d.Trace(web4, main)); o.WAN != "isp1" {
		t.Errorf("v4: %v", o)
	}
	if o := only(t, d.Trace(web6, main)); o.WAN != "isp1" || o.Route.Gateway != addr("fe80::1") {
		t.Errorf("v6: %v", o)
	}

	// IPv6 dead on isp1, IPv4 fine: the families fail over apart.
	health[Key6("isp1")] = StateDown
	d = Plan(cfg, health, links, "")
	if o := only(t, d.Trace(web4, main)); o.WAN != "isp1" {
		t.Errorf("v4 with isp1 v6 down: %v", o)
	}
	if o := only(t, d.Trace(web6, main)); o.WAN != "isp2" {
		t.Errorf("v6 with isp1 v6 down: %v", o)
	}
	// A host numbered from isp1's delegated prefix can only use isp1,
	// whatever its health: no other WAN can carry that source address.
	if o := only(t, d.Trace(delegated, main)); o.WAN != "isp1" || o.CtMark != d.Marks["isp1"] {
		t.Errorf("delegated prefix with isp1 v6 down: %v", o)
	}
	health[Key6("isp1")] = StateUp
	d = Plan(cfg, health, links, "")
	if o := only(t, d.Trace(delegated, main)); o.WAN != "isp1" {
		t.Errorf("delegated prefix: %v", o)
	}
	if got := d.Policies6[0].String(); got != "isp1 100%" {
		t.Errorf("policies6 %q", got)
	}
	// The router's own socket bound to isp2's IPv6 address keeps isp2,
	// although the policy prefers isp1: the tracer reads IPv6 keys of the
	// bound chain's inline map whole (they are full of colons).
	bound6 := Packet{Src: addr("2001:db8:2::2"), Dst: addr("2001:db8:ffff::80"), Proto: "tcp", DstPort: 443}
	if o := only(t, d.Trace(bound6, main)); o.WAN != "isp2" || !slices.Contains(o.Chains, ChainBound) {
		t.Errorf("socket bound to isp2's IPv6 address: %v", o)
	}
	// The NAT66 set has isp2 only; IPv4 NAT both.
	for _, s := range d.Table.Sets {
		if s.Name == SetNAT6OIF && (len(s.Elements) != 1 || s.Elements[0].Key != `"wan2"`) {
			t.Errorf("%s %v", SetNAT6OIF, s.Elements)
		}
	}
	// No IPv6 on any WAN: IPv6 is not classified at all.
	v4only := load(t, "seed000-dual-wan-failover.yaml")
	if d := Plan(v4only, allUp(v4only), upLinks(v4only), ""); d.IPv6 || len(d.Policies6) != 0 {
		t.Errorf("IPv4-only config plans IPv6")
	}
}

// TestSurprisingLinks: observations are untrusted; odd ones plan without a
// crash and keep the LAN reachable.
func TestSurprisingLinks(t *testing.T) {
	cfg := load(t, "seed002-active-passive.yaml") // both gateways auto
	lanMain := []Route{{Table: TableMain, Dst: netip.MustParsePrefix("10.100.0.0/24"), Dev: "lan"}}
	toLAN := Packet{IIF: "enp1s0", Src: addr("203.0.113.9"), Dst: addr("10.100.0.20"), Proto: "tcp", DstPort: 22}
	cases := map[string]Links{
		"no gateway learned": {"primary": {Exists: true, Up: true}, "secondary": {Exists: true, Up: true}},
		"link-local IPv4 gateway": {"primary": {Exists: true, Up: true, Gateway: addr("169.254.1.1")},
			"secondary": {Exists: true, Up: true, Gateway: addr("192.0.2.65")}},
		"WAN address inside the LAN's prefix": {
			"primary":   {Exists: true, Up: true, Gateway: addr("10.100.0.1"), Addrs: []netip.Prefix{netip.MustParsePrefix("10.100.0.77/24")}},
			"secondary": {Exists: true, Up: true, Gateway: addr("192.0.2.65"), Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.66/26")}}},
		"both WANs on one subnet": {
			"primary":   {Exists: true, Up: true, Gateway: addr("192.0.2.1"), Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.2/24")}},
			"secondary": {Exists: true, Up: true, Gateway: addr("192.0.2.1"), Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.3/24")}}},
		"IPv6 address only": {"primary": {Exists: true, Up: true, Gateway: addr("192.0.2.1"),
			Addrs: []netip.Prefix{netip.MustParsePrefix("2001:db8::5/64")}}},
	}
	for name, links := range cases {
		t.Run(name, func(t *testing.T) {
			d := Plan(cfg, Health{}, links, "")
			if o := only(t, d.Trace(toLAN, lanMain)); o.Route == nil || o.Route.Dev != "lan" {
				t.Fatalf("LAN unreachable: %v", o)
			}
			if strings.Count(d.String(), "table inet "+TableName) != 1 {
				t.Fatal("no table")
			}
		})
	}
}

// TestSameKernelState: SameKernelState, which the daemon asks on every
// decision instead of rendering plans, tells exactly what comparing the
// rendered plans tells, over every example and every combination of
// health states, overrides and link addresses drawn at random.
func TestSameKernelState(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "examples", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples (%v)", err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	states := []State{StateUp, StateDown, StateDegraded, StateUnknown}
	for _, f := range files {
		cfg := load(t, filepath.Base(f))
		var plans []*Desired
		for range 30 {
			h := Health{}
			for _, w := range cfg.WANs {
				h[w.Name] = states[rng.IntN(len(states))]
			}
			override := ""
			if rng.IntN(3) == 0 {
				override = cfg.WANs[rng.IntN(len(cfg.WANs))].Name
			}
			links := upLinks(cfg, "198.18.1.2/24", "198.18.2.2/24", "198.18.3.2/24", "198.18.4.2/24")
			if rng.IntN(3) == 0 {
				links = upLinks(cfg)
			}
			plans = append(plans, Plan(cfg, h, links, override))
		}
		same := 0
		for i, a := range plans {
			for _, b := range plans[i:] {
				text := a.String() == b.String()
				if got := a.SameKernelState(b); got != text {
					t.Fatalf("%s: SameKernelState %v, rendered plans equal %v:\n%s\n---\n%s", f, got, text, a, b)
				}
				if text {
					same++
				}
			}
		}
		if same <= len(plans) || same == len(plans)*(len(plans)+1)/2 {
			t.Errorf("%s: %d equal pairs of %d plans: the draw tells nothing", f, same, len(plans))
		}
	}
}

// TestSameKernelStateEachPart: a change in any one part of a plan is seen.
func TestSameKernelStateEachPart(t *testing.T) {
	cfg := load(t, "seed000-dual-wan-failover.yaml")
	links := upLinks(cfg, "198.18.1.2/24", "198.18.2.2/24")
	changes := map[string]func(d *Desired){
		"a rule":         func(d *Desired) { d.Rules[len(d.Rules)-1].Table++ },
		"a route":        func(d *Desired) { d.Routes[0].Dev += "x" },
		"a sysctl":       func(d *Desired) { d.Sysctls[0].Value += "1" },
		"an element":     func(d *Desired) { d.Table.Sets[0].Elements[0].Value += "x" },
		"a chain's rule": func(d *Desired) { d.Table.Chains[0].Rules[0] += " counter" },
		"a set's flags":  func(d *Desired) { d.Table.Sets[0].Flags = append(d.Table.Sets[0].Flags, "interval") },
		"a counter":      func(d *Desired) { d.Table.Counters = append(d.Table.Counters, "c") },
	}
	for what, change := range changes {
		a, b := Plan(cfg, allUp(cfg), links, ""), Plan(cfg, allUp(cfg), links, "")
		if !a.SameKernelState(b) {
			t.Fatal("two plans of the same inputs differ")
		}
		change(b)
		if a.SameKernelState(b) || b.SameKernelState(a) {
			t.Errorf("%s changed, not seen", what)
		}
		if a.String() == b.String() {
			t.Errorf("%s changed, and the rendered plans are the same: the test changes nothing", what)
		}
	}
}
