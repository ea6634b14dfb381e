package kernel

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/multiwan/multiwan/internal/lab/nstest"
)

// TestRootAnchorSurvivesFlushRuleset: the owned table stays through a
// foreign `nft flush ruleset` and delete, and goes with its socket.
func TestRootAnchorSurvivesFlushRuleset(t *testing.T) {
	nstest.Enter(t)
	a, err := OpenAnchor("multiwan_anchor")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := OpenAnchor("multiwan_anchor"); err == nil {
		t.Fatal("a second owner was given the same table")
	}
	nft := func(args ...string) (string, error) {
		out, err := exec.Command("nft", args...).CombinedOutput()
		return string(out), err
	}
	if out, err := nft("flush", "ruleset"); err != nil {
		t.Fatalf("flush ruleset: %v\n%s", err, out)
	}
	// The ct rule prints as an empty line; -a shows its handle.
	out, _ := nft("-a", "list", "ruleset")
	if !strings.Contains(out, "table inet multiwan_anchor") || !strings.Contains(out, "type nat hook postrouting") ||
		!regexp.MustCompile(`\n\s*# handle \d+\n`).MatchString(out) {
		t.Fatalf("the anchor did not survive a foreign flush ruleset:\n%s", out)
	}
	if _, err := nft("delete", "table", "inet", "multiwan_anchor"); err == nil {
		t.Fatal("another program deleted the owned table")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if out, _ := nft("list", "ruleset"); strings.Contains(out, "multiwan_anchor") {
		t.Fatalf("the anchor outlived its socket:\n%s", out)
	}
}
