package kernel

import (
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
