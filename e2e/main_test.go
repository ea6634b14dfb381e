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
	"testing"

	"github.com/multiwan/multiwan/internal/lab"
)

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
	for _, tool := range []string{"ip", "nft", "curl", "conntrack", "ping"} {
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
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
