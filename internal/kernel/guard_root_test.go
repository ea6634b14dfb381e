package kernel

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/multiwan/multiwan/internal/lab/nstest"
	"github.com/multiwan/multiwan/internal/plan"
)

// TestRootGuardDrops reads the loop guard's counters back per WAN.
func TestRootGuardDrops(t *testing.T) {
	nstest.Enter(t)
	n := NewNFTFromInterface(nil, "multiwan")
	if got, err := n.GuardDrops(); err != nil || len(got) != 0 {
		t.Fatalf("no table: %v %v", got, err)
	}
	ruleset := `table inet multiwan {
	set guard_wg1_4 { type ipv4_addr; elements = { 198.51.100.200 } }
	set guard_wg2_4 { type ipv4_addr; elements = { 198.51.100.201 } }
	chain ` + plan.ChainGuard + ` {
		type filter hook postrouting priority mangle; policy accept;
		oifname "wg1" ip daddr @guard_wg1_4 counter packets 7 bytes 700 drop comment "loop: wg1's outer packet into wg1"
		oifname "wg2" ip daddr @guard_wg2_4 counter drop comment "loop: wg2's outer packet into wg2"
	}
	chain other {
		counter packets 9 bytes 9 comment "loop: wg3's outer packet into wg3"
	}
}`
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v\n%s", err, out)
	}
	got, err := n.GuardDrops()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["wg1"] != 7 || got["wg2"] != 0 {
		t.Fatalf("drops %v, want wg1: 7, wg2: 0", got)
	}
}

// TestRootCounters: the traffic counters of a plan with the network
// listener are installed and read back in-process.
func TestRootCounters(t *testing.T) {
	nstest.Enter(t)
	k, err := New("multiwan")
	if err != nil {
		t.Fatal(err)
	}
	d := &plan.Desired{Table: plan.Table{Family: "inet", Name: "multiwan",
		Counters: []string{"rx_isp1", "tx_isp1"},
		Sets:     []plan.Set{{Name: "wan_rx", Type: "ifname", Map: "counter", Elements: []plan.Element{{Key: `"lo"`, Value: `"rx_isp1"`}}}},
		Chains: []plan.Chain{{Name: "pre", Type: "filter", Hook: "prerouting", Priority: "mangle",
			Rules: []string{"counter name iifname map @wan_rx"}}},
	}}
	if err := k.NFT.Apply(context.Background(), &d.Table); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v\n%s", err, out)
	}
	if out, err := exec.Command("ping", "-c", "2", "-i", "0.2", "127.0.0.1").CombinedOutput(); err != nil {
		t.Fatalf("ping: %v\n%s", err, out)
	}
	got, err := k.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if got["rx_isp1"].Packets < 4 || got["rx_isp1"].Bytes == 0 || len(got) != 2 {
		t.Fatalf("counters %+v", got)
	}
}
