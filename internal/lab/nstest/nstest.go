// Package nstest gives tests network namespaces of their own, so that code
// which changes the kernel's network state (nft tables, ip rules and
// routes, sysctls, links, conntrack) can be tested for real without ever
// touching the host's namespace.
//
// The safety rules it enforces:
//
//   - Tests that need root fail when they do not have it ([RequireRoot]);
//     only MULTIWAN_SKIP_E2E=1 turns that into a skip, so a CI job that lost
//     its privileges cannot look green.
//   - Every namespace a test creates is deleted when the test ends, also
//     when it fails ([NewNS]); [Main] reports any left behind and deletes
//     those of earlier test processes that died (mwt<pid>-..., pid gone).
//   - A thread only ever enters a test namespace from the host's namespace
//     (the one the process started in), and goes back there before anyone
//     else may run on it ([Do], [NS.Do], [Enter]). A thread that cannot go
//     back stays locked to its goroutine, which makes the Go runtime end it
//     rather than reuse it in the wrong namespace; a thread that is not in
//     the host's namespace to begin with is refused, since "going back"
//     would then not return to the host.
//   - [Enter] checks, before the test changes anything, that the thread and
//     the children it forks (ip, nft) are in the new namespace.
//   - [Main] compares a snapshot of the host namespace's state before and
//     after all tests, and [Enter] after each test, and fails the run if
//     anything differs.
//
// The package is not a _test.go file so that the tests of several packages
// can share it; it does not import the testing package, so that it costs
// non-test binaries that link it (the lab, through [Do]) nothing.
package nstest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/vishvananda/netns"
)

// TB is the part of testing.TB this package uses.
type TB interface {
	Helper()
	Cleanup(func())
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Skip(args ...any)
}

// hostNetns names the namespace the process started in, as net:[inode]. It
// is read while the package is initialised, on the main thread, before any
// test could have moved a thread elsewhere.
var hostNetns, hostNetnsErr = os.Readlink("/proc/thread-self/ns/net")

// RequireRoot fails the test unless the process is root and every tool in
// tools is installed. MULTIWAN_SKIP_E2E=1 skips it instead when not root:
// the explicit opt-out of unprivileged unit-test runs.
func RequireRoot(tb TB, tools ...string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("MULTIWAN_SKIP_E2E") == "1" {
			tb.Skip("not root and MULTIWAN_SKIP_E2E=1")
		}
		tb.Fatalf("this test needs root to create network namespaces; run it as root, or set MULTIWAN_SKIP_E2E=1 to skip it")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			tb.Fatalf("this test needs %s: %v (install it, or set MULTIWAN_SKIP_E2E=1 and run as non-root to skip)", tool, err)
		}
	}
}

// Prefix starts the names of this process's test namespaces, e.g. "mwt4242-".
func Prefix() string { return fmt.Sprintf("mwt%d-", os.Getpid()) }

var nsSeq atomic.Int32

// NS is a named network namespace (ip netns) of one test.
type NS struct {
	// Name is the namespace's name, for `ip netns exec NAME` and `ip -n NAME`.
	Name string
}

// NewNS creates a namespace named <Prefix><n>-<role> with its loopback up,
// and deletes it when the test ends. It fails the test when not root (see
// [RequireRoot]).
func NewNS(tb TB, role string) *NS {
	tb.Helper()
	RequireRoot(tb, "ip")
	name := fmt.Sprintf("%s%d-%s", Prefix(), nsSeq.Add(1), role)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		tb.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	tb.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			tb.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	n := &NS{Name: name}
	n.Run(tb, "ip", "link", "set", "lo", "up")
	return n
}

// Run runs a command inside the namespace (ip netns exec) and returns its
// combined output; it fails the test when the command fails.
func (n *NS) Run(tb TB, argv ...string) string {
	tb.Helper()
	args := append([]string{"netns", "exec", n.Name}, argv...)
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Do runs fn on a thread switched into the namespace; see [Do].
func (n *NS) Do(fn func() error) error { return Do(n.Name, fn) }

// Do runs fn on an OS thread switched into the named namespace, then
// switches the thread back to the host's namespace. Sockets fn opens stay
// in the namespace for their whole life, whichever thread uses them later:
// the way to open listeners, raw and netlink sockets inside. fn must not
// rely on goroutines it starts being in the namespace: only its own thread
// is. A fn that blocks keeps the thread in the namespace until it returns
// (a watcher that must resubscribe in the namespace runs this way).
//
// A fresh goroutine is used, so the caller's thread is never touched, even
// when the caller has locked itself to a thread in another namespace.
func Do(name string, fn func() error) error {
	target, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", name, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// On every early return before the switch the thread is where it
		// started and can be handed back; after it, only a verified
		// return to the host unlocks it.
		if err := inHost(); err != nil {
			// A thread that leaked out of another namespace: never run
			// anything on it, and let it die with this goroutine.
			errc <- err
			return
		}
		host, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open the host namespace: %w", err)
			return
		}
		defer host.Close()
		if host.Equal(target) {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("namespace %s is the host's own", name)
			return
		}
		if err := netns.Set(target); err != nil {
			// setns failed, so the thread is still in the host.
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter namespace %s: %w", name, err)
			return
		}
		var ferr error
		if cur, err := netns.Get(); err != nil || !cur.Equal(target) {
			ferr = fmt.Errorf("the thread is not in namespace %s after setns (%v)", name, err)
			cur.Close()
		} else {
			cur.Close()
			ferr = fn()
		}
		if err := back(host); err != nil {
			errc <- errors.Join(ferr, err)
			return // still locked: the thread dies with the goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// inHost reports an error unless the calling thread is in the host's
// namespace.
func inHost() error {
	if hostNetnsErr != nil {
		return fmt.Errorf("the host namespace is unknown: %w", hostNetnsErr)
	}
	cur, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		return fmt.Errorf("read the thread's namespace: %w", err)
	}
	if cur != hostNetns {
		return fmt.Errorf("the thread is in %s, not in the host namespace %s: refusing to switch it", cur, hostNetns)
	}
	return nil
}

// back switches the calling thread to host and checks that it is the host
// namespace the process started in.
func back(host netns.NsHandle) error {
	if err := netns.Set(host); err != nil {
		return fmt.Errorf("back to the host namespace: %w (the thread stays locked and dies with its goroutine)", err)
	}
	if err := inHost(); err != nil {
		return fmt.Errorf("back to the host namespace: %w (the thread stays locked and dies with its goroutine)", err)
	}
	return nil
}

// Enter moves the test, locked to its OS thread, into a new unnamed network
// namespace for the rest of the test. Everything the test does on its own
// goroutine then acts on that namespace: netlink sockets opened by the
// thread, /proc/sys/net read or written by it, and processes it forks (ip,
// nft). Other goroutines, and subtests, are elsewhere: a subtest may call
// Enter itself. When the test ends the thread goes back to the host and is
// unlocked; the namespace disappears with its last reference, taking its
// links, rules, routes and nft tables along. If [Main] took a snapshot,
// the host is compared with it then, which names the test that leaked,
// should one ever do so.
func Enter(tb TB) {
	tb.Helper()
	RequireRoot(tb, "ip", "nft")
	runtime.LockOSThread()
	if err := inHost(); err != nil {
		// Nested use, or a thread that leaked out of a test namespace:
		// switching "back" would not return to the host.
		runtime.UnlockOSThread()
		tb.Fatalf("Enter: %v", err)
	}
	host, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		tb.Fatalf("open the host namespace: %v", err)
	}
	ns, err := netns.New()
	if err != nil {
		// The unshare may have happened before the error: only a thread
		// that is back in the host namespace may be handed back.
		if back(host) == nil {
			runtime.UnlockOSThread()
		}
		host.Close()
		tb.Fatalf("new network namespace: %v", err)
	}
	tb.Cleanup(func() {
		defer host.Close()
		defer ns.Close()
		if err := back(host); err != nil {
			tb.Errorf("%v", err)
			return
		}
		runtime.UnlockOSThread()
		if before := mainSnapshot.Load(); before != nil {
			if now := Snapshot(); now != *before {
				tb.Errorf("the host namespace changed:\n%s\nwas:\n%s", now, *before)
			}
		}
	})
	testLink, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		tb.Fatalf("read the test namespace: %v", err)
	}
	if testLink == hostNetns || ns.Equal(host) {
		tb.Fatalf("still in the host namespace %s after unshare", hostNetns)
	}
	out, err := exec.Command("readlink", "/proc/self/ns/net").Output()
	if child := strings.TrimSpace(string(out)); err != nil || child != testLink {
		tb.Fatalf("a child process runs in %q (%v), not in the test namespace %s: nft and ip would change the host", child, err, testLink)
	}
	tb.Logf("test namespace %s (host %s)", testLink, hostNetns)
}

// mainSnapshot is the host's snapshot taken by Main before the tests ran.
var mainSnapshot atomic.Pointer[string]

// Snapshot describes the parts of the calling thread's namespace that tests
// could change: nft tables, ip rules and routes of all tables, links, and
// the sysctls multiwan sets. Called from a goroutine that never switches
// namespaces (TestMain's), it describes the host's.
func Snapshot() string {
	var b strings.Builder
	for _, cmd := range [][]string{
		{"nft", "list", "tables"},
		{"ip", "-4", "rule"},
		{"ip", "-6", "rule"},
		{"ip", "-4", "route", "show", "table", "all"},
		{"ip", "-6", "route", "show", "table", "all"},
		{"ip", "-br", "link"},
	} {
		out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput()
		// Routes learnt from router advertisements count down.
		out = expires.ReplaceAll(out, nil)
		fmt.Fprintf(&b, "$ %s (err=%v)\n%s", strings.Join(cmd, " "), err, out)
	}
	for _, key := range []string{
		"net/ipv4/ip_forward", "net/ipv4/fwmark_reflect", "net/ipv4/tcp_fwmark_accept",
		"net/ipv4/conf/all/rp_filter", "net/ipv4/conf/all/src_valid_mark",
		"net/ipv6/conf/all/forwarding", "net/ipv6/fwmark_reflect",
	} {
		v, err := os.ReadFile("/proc/sys/" + key)
		fmt.Fprintf(&b, "%s=%s (err=%v)\n", key, strings.TrimSpace(string(v)), err)
	}
	return b.String()
}

var expires = regexp.MustCompile(` expires [0-9]+sec`)

// M is what Main needs of *testing.M.
type M interface{ Run() int }

// Main runs the tests as TestMain does, and when root fails the run if the
// host namespace differs afterwards (see [Snapshot]; extra adds
// package-specific descriptions, e.g. the host's conntrack entries in the
// test ranges) or a test namespace of this process is left behind. It first
// deletes the test namespaces of earlier test processes that no longer
// exist. It does not return.
func Main(m M, extra ...func() string) {
	root := os.Geteuid() == 0
	snapshot := func() (base, all string) {
		base = Snapshot()
		all = base
		for _, f := range extra {
			all += f()
		}
		return base, all
	}
	var before string
	if root {
		sweepStale()
		var base string
		base, before = snapshot()
		mainSnapshot.Store(&base)
	}
	code := m.Run()
	if root {
		if _, after := snapshot(); after != before {
			fmt.Fprintf(os.Stderr, "FAIL: the host network namespace changed during the tests\nbefore:\n%s\nafter:\n%s", before, after)
			code = 1
		}
		if left := namespaces(func(name string, pid int) bool { return pid == os.Getpid() }); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "FAIL: test namespaces left behind: %s\n", strings.Join(left, " "))
			code = 1
		}
	}
	os.Exit(code)
}

var nameRE = regexp.MustCompile(`^mwt(\d+)-`)

// namespaces lists the named test namespaces (of any process) for which
// keep is true.
func namespaces(keep func(name string, pid int) bool) []string {
	out, _ := exec.Command("ip", "netns", "list").Output()
	var names []string
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line) // "name (id: 3)" or "name"
		if len(f) == 0 {
			continue
		}
		m := nameRE.FindStringSubmatch(f[0])
		if m == nil {
			continue
		}
		if pid, err := strconv.Atoi(m[1]); err == nil && keep(f[0], pid) {
			names = append(names, f[0])
		}
	}
	return names
}

// sweepStale deletes the test namespaces of test processes that died
// without cleaning up (a timeout panic skips cleanups).
func sweepStale() {
	dead := func(_ string, pid int) bool {
		if pid <= 0 || pid == os.Getpid() {
			return false
		}
		err := syscall.Kill(pid, 0)
		return errors.Is(err, syscall.ESRCH)
	}
	for _, name := range namespaces(dead) {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "nstest: deleting the stale test namespace %s: %v: %s\n", name, err, out)
		}
	}
}
