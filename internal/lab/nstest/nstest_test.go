package nstest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestMain(m *testing.M) { Main(m) }

func threadNetns(t *testing.T) string {
	t.Helper()
	l, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestNSDo: fn runs in the namespace, on a thread that comes back to the
// host; the namespace is gone after the test.
func TestNSDo(t *testing.T) {
	var name string
	t.Run("inner", func(t *testing.T) {
		ns := NewNS(t, "self")
		name = ns.Name
		if !strings.HasPrefix(name, Prefix()) {
			t.Errorf("name %s does not start with %s", name, Prefix())
		}
		var inside string
		if err := ns.Do(func() error { inside = threadNetns(t); return nil }); err != nil {
			t.Fatal(err)
		}
		if inside == hostNetns || inside == "" {
			t.Errorf("fn ran in %q, the host is %s", inside, hostNetns)
		}
		if out := ns.Run(t, "ip", "-br", "link", "show", "lo"); !strings.Contains(out, "UNKNOWN") && !strings.Contains(out, "UP") {
			t.Errorf("lo is not up: %s", out)
		}
		if err := Do(name+"-missing", func() error { return nil }); err == nil {
			t.Error("Do entered a namespace that does not exist")
		}
	})
	out, _ := exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(out), name) {
		t.Errorf("namespace %s left after its test:\n%s", name, out)
	}
}

// TestEnter: the test's thread is in a fresh namespace, other goroutines
// are not, a subtest gets one of its own; inHost, which Enter and Do check
// before switching a thread, says no inside.
func TestEnter(t *testing.T) {
	Enter(t)
	here := threadNetns(t)
	if here == hostNetns {
		t.Fatal("still in the host namespace")
	}
	if err := inHost(); err == nil {
		t.Error("inHost is true inside the test namespace")
	}
	done := make(chan string)
	go func() {
		l, _ := os.Readlink("/proc/thread-self/ns/net")
		done <- l
	}()
	if other := <-done; other != hostNetns {
		t.Errorf("another goroutine runs in %s, not the host's %s", other, hostNetns)
	}
	t.Run("sub", func(t *testing.T) {
		Enter(t)
		if threadNetns(t) == here {
			t.Error("the subtest shares its parent's namespace")
		}
	})
}
