// Package e2e runs the real multiwan daemon in a lab of network namespaces
// (internal/lab) and drives it with real clients: curl, ping, conntrack and
// UDP sockets. It needs root and fails, never skips, without it; set
// MULTIWAN_SKIP_E2E=1 to skip it on purpose (unit runs as a normal user).
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/multiwan/multiwan/internal/lab"
)

// hostState describes what of the host's own network namespace the suite
// could touch by mistake; it must be the same before and after.
func hostState() string {
	var b strings.Builder
	for _, argv := range [][]string{
		{"nft", "list", "tables"},
		{"ip", "rule", "show"},
		{"ip", "route", "show", "table", "all", "proto", "77"},
		{"sysctl", "net.ipv4.fwmark_reflect", "net.ipv4.tcp_fwmark_accept", "net.ipv4.conf.all.src_valid_mark"},
	} {
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		fmt.Fprintf(&b, "$ %s (err=%v)\n%s", strings.Join(argv, " "), err, out)
	}
	return b.String()
}

// multiwanBin is the binary under test, built once by TestMain.
var multiwanBin string

func TestMain(m *testing.M) {
	if os.Getenv("MULTIWAN_SKIP_E2E") == "1" {
		fmt.Println("e2e: skipped because MULTIWAN_SKIP_E2E=1")
		os.Exit(0)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "e2e: FAIL: the end-to-end suite must run as root (sudo make test); set MULTIWAN_SKIP_E2E=1 to skip it on purpose")
		os.Exit(1)
	}
	for _, tool := range []string{"ip", "nft", "curl", "conntrack", "ping", "dnsmasq", "dhclient", "wireguard-go", "wg", "dig"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: FAIL: %s not found; make deps installs it\n", tool)
			os.Exit(1)
		}
	}
	if gone, err := lab.SweepStale(); err == nil && len(gone) > 0 {
		fmt.Printf("e2e: removed %d namespaces left by killed runs\n", len(gone))
	}
	dir, err := os.MkdirTemp("", "multiwan-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	multiwanBin = filepath.Join(dir, "multiwan")
	build := exec.Command("go", "build", "-o", multiwanBin, "../cmd/multiwan")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: FAIL: building multiwan:", err)
		os.Exit(1)
	}
	before := hostState()
	code := m.Run()
	os.RemoveAll(dir)
	if after := hostState(); after != before {
		fmt.Fprintf(os.Stderr, "e2e: FAIL: the host's own network namespace changed during the suite\nbefore:\n%s\nafter:\n%s", before, after)
		code = 1
	}
	os.Exit(code)
}
