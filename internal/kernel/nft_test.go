package kernel

import (
	"context"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"

	"github.com/multiwan/multiwan/internal/plan"
)

// sampleTable has one of everything the planner produces: a set with
// flags, a verdict map whose values jump to a chain, base chains with named
// priorities and a regular chain.
func sampleTable() *plan.Table {
	return &plan.Table{
		Family: "inet",
		Name:   "multiwan",
		Sets: []plan.Set{
			{
				Name: "steer4", Type: "ipv4_addr", Flags: []string{"interval"}, Comment: "rule steer",
				Elements: []plan.Element{{Key: "198.18.0.0/15"}, {Key: "203.0.113.0/24"}},
			},
			{
				Name: "restore", Type: "mark", Map: "verdict",
				Elements: []plan.Element{{Key: "0x100", Value: "goto wan_isp1"}},
			},
		},
		Chains: []plan.Chain{
			{
				Name: "prerouting", Type: "filter", Hook: "prerouting", Priority: "mangle",
				Rules: []string{"ct mark and 0xff00 vmap @restore", "ip daddr @steer4 goto wan_isp1"},
			},
			{
				Name:  "wan_isp1",
				Rules: []string{"meta mark set meta mark and 0xffff00ff or 0x100", "ct mark set meta mark"},
			},
			{
				Name: "postrouting", Type: "nat", Hook: "postrouting", Priority: "srcnat",
				Rules: []string{`oifname "wan1" masquerade`},
			},
		},
	}
}

const sampleDump = `add table inet multiwan
add chain inet multiwan postrouting { type nat hook postrouting priority 100 ; }
add chain inet multiwan prerouting { type filter hook prerouting priority -150 ; }
add chain inet multiwan wan_isp1
add set inet multiwan steer4 { type ipv4_addr ; flags interval ; comment "rule steer" ; }
add map inet multiwan restore { type mark : verdict ; }
add rule inet multiwan postrouting oifname "wan1" masquerade
add rule inet multiwan prerouting ct mark and 0xff00 vmap @restore
add rule inet multiwan prerouting ip daddr @steer4 goto wan_isp1
add rule inet multiwan wan_isp1 meta mark set meta mark and 0xffff00ff or 0x100
add rule inet multiwan wan_isp1 ct mark set meta mark
add element inet multiwan steer4 { 198.18.0.0/15 }
add element inet multiwan steer4 { 203.0.113.0/24 }
add element inet multiwan restore { 0x100 : goto wan_isp1 }
`

func newFakeNFT() (*NFT, *knftables.Fake) {
	fake := knftables.NewFake(knftables.InetFamily, "multiwan")
	return NewNFTFromInterface(fake, "multiwan"), fake
}

func TestNFTApplyInstallsEverything(t *testing.T) {
	n, fake := newFakeNFT()
	if err := n.Apply(context.Background(), sampleTable()); err != nil {
		t.Fatal(err)
	}
	if got := fake.Dump(); got != sampleDump {
		t.Errorf("table after Apply:\n%s\nwant:\n%s", got, sampleDump)
	}
	tx := fake.LastTransaction.String()
	const replace = "add table inet multiwan\ndelete table inet multiwan\nadd table inet multiwan\n"
	if !strings.HasPrefix(tx, replace) {
		t.Errorf("transaction does not start by replacing the table:\n%s", tx)
	}
	if strings.Contains(tx, "flush") || strings.Contains(tx, "ruleset") {
		t.Errorf("transaction flushes something:\n%s", tx)
	}
}

func TestNFTApplyTwiceIsStable(t *testing.T) {
	n, fake := newFakeNFT()
	ctx := context.Background()
	for range 2 {
		if err := n.Apply(ctx, sampleTable()); err != nil {
			t.Fatal(err)
		}
	}
	if got := fake.Dump(); got != sampleDump {
		t.Errorf("table after two Applies:\n%s\nwant:\n%s", got, sampleDump)
	}
}

func TestNFTApplyReplacesWholeTable(t *testing.T) {
	n, fake := newFakeNFT()
	ctx := context.Background()
	if err := n.Apply(ctx, sampleTable()); err != nil {
		t.Fatal(err)
	}
	smaller := &plan.Table{
		Family: "inet", Name: "multiwan",
		Chains: []plan.Chain{{Name: "prerouting", Type: "filter", Hook: "prerouting", Priority: "mangle", Rules: []string{"meta mark set ct mark"}}},
	}
	if err := n.Apply(ctx, smaller); err != nil {
		t.Fatal(err)
	}
	want := `add table inet multiwan
add chain inet multiwan prerouting { type filter hook prerouting priority -150 ; }
add rule inet multiwan prerouting meta mark set ct mark
`
	if got := fake.Dump(); got != want {
		t.Errorf("table after replacing:\n%s\nwant:\n%s", got, want)
	}
}

func TestNFTLeavesOtherTablesAlone(t *testing.T) {
	n, fake := newFakeNFT()
	ctx := context.Background()
	other := &knftables.FakeTable{Table: knftables.Table{Family: knftables.InetFamily, Name: "other"}}
	fake.Tables = map[knftables.Family]map[string]*knftables.FakeTable{
		knftables.InetFamily: {"other": other},
	}
	if err := n.Apply(ctx, sampleTable()); err != nil {
		t.Fatal(err)
	}
	if err := n.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if got := fake.Tables[knftables.InetFamily]["other"]; got == nil {
		t.Error("table inet other is gone")
	}
	if fake.Table != nil {
		t.Error("table inet multiwan is still there after Remove")
	}
}

func TestNFTRemoveAndCurrent(t *testing.T) {
	n, fake := newFakeNFT()
	ctx := context.Background()
	if err := n.Remove(ctx); err != nil {
		t.Fatalf("Remove of an absent table: %v", err)
	}
	if exists, err := n.Current(ctx); err != nil || exists {
		t.Fatalf("Current before Apply = %v, %v; want false, nil", exists, err)
	}
	if err := n.Apply(ctx, sampleTable()); err != nil {
		t.Fatal(err)
	}
	if exists, err := n.Current(ctx); err != nil || !exists {
		t.Fatalf("Current after Apply = %v, %v; want true, nil", exists, err)
	}
	if err := n.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if exists, err := n.Current(ctx); err != nil || exists {
		t.Fatalf("Current after Remove = %v, %v; want false, nil", exists, err)
	}
	if fake.Dump() != "" {
		t.Errorf("something left after Remove:\n%s", fake.Dump())
	}
}

func TestNFTRejectsBadTable(t *testing.T) {
	tests := map[string]func(*plan.Table){
		"other name":         func(t *plan.Table) { t.Name = "firewall" },
		"other family":       func(t *plan.Table) { t.Family = "ip" },
		"unknown hook":       func(t *plan.Table) { t.Chains[0].Hook = "prerouting2" },
		"unknown type":       func(t *plan.Table) { t.Chains[0].Type = "mangle" },
		"unknown priority":   func(t *plan.Table) { t.Chains[0].Priority = "early" },
		"hookless with type": func(t *plan.Table) { t.Chains[1].Type = "filter" },
		"element w/o key":    func(t *plan.Table) { t.Sets[0].Elements[0].Key = "" },
		"map elem w/o value": func(t *plan.Table) { t.Sets[1].Elements[0].Value = "" },
		"set elem w/ value":  func(t *plan.Table) { t.Sets[0].Elements[0].Value = "accept" },
		"rule to no chain":   func(t *plan.Table) { t.Chains[0].Rules[1] = "goto nowhere" },
	}
	for name, spoil := range tests {
		t.Run(name, func(t *testing.T) {
			n, fake := newFakeNFT()
			ctx := context.Background()
			if err := n.Apply(ctx, sampleTable()); err != nil {
				t.Fatal(err)
			}
			bad := sampleTable()
			spoil(bad)
			if err := n.Apply(ctx, bad); err == nil {
				t.Fatal("Apply accepted a bad table")
			}
			if got := fake.Dump(); got != sampleDump {
				t.Errorf("a rejected Apply changed the table:\n%s", got)
			}
		})
	}
}

func TestPriority(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"mangle", "mangle", true},
		{"srcnat", "srcnat", true},
		{"dstnat", "dstnat", true},
		{"-150", "-150", true},
		{"mangle - 1", "mangle-1", true},
		{"filter+10", "filter+10", true},
		{"early", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, err := priority(tt.in)
		if (err == nil) != tt.ok || string(got) != tt.want {
			t.Errorf("priority(%q) = %q, %v; want %q, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

// TestNFTApplyUpdatesOnlyWhatChanged: a switch (same shape, other chain
// rules and map elements) flushes and refills just those, and the result is
// the same table a full replace would give.
func TestNFTApplyUpdatesOnlyWhatChanged(t *testing.T) {
	n, fake := newFakeNFT()
	ctx := context.Background()
	if err := n.Apply(ctx, sampleTable()); err != nil {
		t.Fatal(err)
	}
	switched := sampleTable()
	switched.Chains[1].Rules = []string{"meta mark set meta mark and 0xffff00ff or 0x200", "ct mark set meta mark"}
	switched.Sets[0].Elements = []plan.Element{{Key: "198.18.0.0/15"}}
	if err := n.Apply(ctx, switched); err != nil {
		t.Fatal(err)
	}
	tx := fake.LastTransaction.String()
	for _, want := range []string{"flush chain inet multiwan wan_isp1", "flush set inet multiwan steer4"} {
		if !strings.Contains(tx, want) {
			t.Errorf("update lacks %q:\n%s", want, tx)
		}
	}
	for _, unwanted := range []string{"delete table", "prerouting", "postrouting", "restore"} {
		if strings.Contains(tx, unwanted) {
			t.Errorf("update touches %q although it did not change:\n%s", unwanted, tx)
		}
	}
	full, fullFake := newFakeNFT()
	if err := full.Apply(ctx, switched); err != nil {
		t.Fatal(err)
	}
	if got, want := fake.Dump(), fullFake.Dump(); got != want {
		t.Errorf("updated table:\n%s\nwant (full replace):\n%s", got, want)
	}

	// Nothing changed: no transaction at all.
	before := fake.LastTransaction
	if err := n.Apply(ctx, switched); err != nil {
		t.Fatal(err)
	}
	if fake.LastTransaction != before {
		t.Errorf("re-applying the same table ran a transaction:\n%s", fake.LastTransaction)
	}
	// After Invalidate the whole table is replaced again.
	n.Invalidate()
	if err := n.Apply(ctx, switched); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(fake.LastTransaction.String(), "delete table") {
		t.Errorf("after Invalidate the table was not replaced:\n%s", fake.LastTransaction)
	}
}

// TestNFTTerminalChainFastPath: a changed terminal chain gets its new rules
// inserted ahead of the old ones (no flush, no deletion), and Compact later
// leaves only the current rules.
func TestNFTTerminalChainFastPath(t *testing.T) {
	n, fake := newFakeNFT()
	ctx := context.Background()
	table := func(target string) *plan.Table {
		t := sampleTable()
		t.Chains = append(t.Chains, plan.Chain{Name: "policy_p", Terminal: true, Rules: []string{"goto " + target}})
		return t
	}
	if err := n.Apply(ctx, table("wan_isp1")); err != nil {
		t.Fatal(err)
	}
	if err := n.Apply(ctx, table("prerouting")); err != nil {
		t.Fatal(err)
	}
	tx := fake.LastTransaction.String()
	if strings.Contains(tx, "flush") || strings.Contains(tx, "delete") || !strings.Contains(tx, "insert rule inet multiwan policy_p goto prerouting") {
		t.Fatalf("fast update is not a pure insertion:\n%s", tx)
	}
	dump := fake.Dump()
	if i, j := strings.Index(dump, "policy_p goto prerouting"), strings.Index(dump, "policy_p goto wan_isp1"); i < 0 || j < 0 || i > j {
		t.Fatalf("new rule not ahead of the old one:\n%s", dump)
	}
	if !n.Stale() {
		t.Fatal("not marked stale")
	}
	if err := n.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if n.Stale() || strings.Contains(fake.Dump(), "policy_p goto wan_isp1") {
		t.Fatalf("compact left old rules:\n%s", fake.Dump())
	}
	full, fullFake := newFakeNFT()
	if err := full.Apply(ctx, table("prerouting")); err != nil {
		t.Fatal(err)
	}
	if fake.Dump() != fullFake.Dump() {
		t.Fatalf("after compact:\n%s\nwant:\n%s", fake.Dump(), fullFake.Dump())
	}
}

// TestRecheckRestoresADeletedTable: someone deleted the table behind
// multiwan's back; after Recheck the next Apply puts it back whole, while a
// present table is left alone.
func TestRecheckRestoresADeletedTable(t *testing.T) {
	n, fake := newFakeNFT()
	k := &Kernel{NFT: *n}
	k.NFT.nft = fake
	ctx := context.Background()
	if err := k.NFT.Apply(ctx, sampleTable()); err != nil {
		t.Fatal(err)
	}
	k.Recheck(ctx)
	before := fake.LastTransaction
	if err := k.NFT.Apply(ctx, sampleTable()); err != nil {
		t.Fatal(err)
	}
	if fake.LastTransaction != before {
		t.Fatalf("table present, yet rewritten:\n%s", fake.LastTransaction)
	}
	tx := fake.NewTransaction()
	tx.Delete(&knftables.Table{})
	if err := fake.Run(ctx, tx); err != nil {
		t.Fatal(err)
	}
	k.Recheck(ctx)
	if err := k.NFT.Apply(ctx, sampleTable()); err != nil {
		t.Fatal(err)
	}
	if got := fake.Dump(); got != sampleDump {
		t.Errorf("table not restored:\n%s", got)
	}
}

// TestNFTOwnCommitsWithoutEcho: on a kernel that does not echo an
// in-process commit's generation, that commit is not taken for ours (its
// notification costs one repair), and the next ones are recorded by
// reading the generation around them, as nft's are; with the echo, no
// generation is read at all.
func TestNFTOwnCommitsWithoutEcho(t *testing.T) {
	for _, echo := range []bool{true, false} {
		n, _ := newFakeNFT()
		gen, reads := uint32(10), 0
		n.generation = func() (uint32, error) { reads++; return gen, nil }
		n.writeElements = func([]elementChange) (uint32, error) {
			gen++
			if echo {
				return gen, nil
			}
			return 0, nil
		}
		table := func(addr string) *plan.Table {
			t := sampleTable()
			t.Sets = append(t.Sets, plan.Set{Name: "bound_4", Type: "ipv4_addr", Map: "verdict",
				Elements: []plan.Element{{Key: addr, Value: "goto wan_isp1"}}})
			return t
		}
		ctx := context.Background()
		if err := n.Apply(ctx, table("198.51.100.2")); err != nil {
			t.Fatal(err)
		}
		reads = 0
		var gens []uint32
		for _, addr := range []string{"198.51.100.3", "198.51.100.4", "198.51.100.5"} {
			if err := n.Apply(ctx, table(addr)); err != nil || n.Via() != "netlink" {
				t.Fatalf("echo %v: apply %s: %v, via %q", echo, addr, err, n.Via())
			}
			gens = append(gens, gen)
		}
		switch {
		case echo && (reads != 0 || !n.Ours(gens[0]) || !n.Ours(gens[1]) || !n.Ours(gens[2])):
			t.Errorf("with the echo: %d generation reads, ours %v %v %v", reads, n.Ours(gens[0]), n.Ours(gens[1]), n.Ours(gens[2]))
		case !echo && (n.Ours(gens[0]) || !n.Ours(gens[1]) || !n.Ours(gens[2]) || reads != 4):
			t.Errorf("without the echo: %d generation reads, ours %v %v %v; want 4 reads, the first commit not ours and the next two ours",
				reads, n.Ours(gens[0]), n.Ours(gens[1]), n.Ours(gens[2]))
		}
	}
}
