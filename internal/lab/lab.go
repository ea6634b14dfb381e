package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Timeouts that bound the lab's own housekeeping commands.
const (
	cmdTimeout     = 15 * time.Second // one ip/nft/sysctl invocation
	killWait       = 5 * time.Second  // for a killed process to be reaped
	defaultExecTTL = 2 * time.Minute  // Exec without a context deadline
)

// Options configures [New].
type Options struct {
	// ISPs is the number of ISPs, 2 or 3; 0 means 2.
	ISPs int
	// Logf receives lab events and the output of processes started with
	// [Lab.Start]. Nil discards them.
	Logf func(format string, args ...any)
	// DHCP gives the router's WAN interfaces no static IPv4 address:
	// each ISP runs a DHCP server (dnsmasq) on its link to the router and
	// the router runs one DHCP client (dhclient) per WAN interface, which
	// sets the address and a default route via the ISP's gateway in the
	// main table (metric 100+k). [New] returns once every WAN has a lease.
	// See [Lab.DHCPLease] and [Lab.SetDHCPPool].
	DHCP bool
	// IPv6 makes the lab dual stack, with addresses from 2001:db8::/32
	// (see [ServiceAddr6], [WANAddr6], [ClientAddr6]): static addresses
	// everywhere (also with DHCP), ISPs that forward and masquerade IPv6,
	// IPv6 services in the internet namespace, and no IPv6 default route
	// on the router (unless RA).
	IPv6 bool
	// RA (requires IPv6) makes the router learn its IPv6 default routes
	// from router advertisements, for `gateway6: auto`: each ISP runs a
	// router advertisement daemon (dnsmasq, RA only: no DNS, no DHCPv6)
	// on its link to the router, advertising its link-local address as
	// router every [RAInterval] s with a lifetime of [RALifetime] s, and
	// the router's WAN interfaces accept advertisements although it
	// forwards (accept_ra=2) but make no SLAAC address (autoconf=0; their
	// static addresses stay). The kernel installs "default via fe80::...
	// dev wanK proto ra" in the main table. [New] returns once the router
	// has such a route through every WAN (at most 10 s); [Lab.RAGateway]
	// reads it. Deleting, re-creating and renaming WAN links keep this
	// and wait for the route again.
	RA bool
	// P2PISP, if not 0, is the number k of an ISP whose link to the
	// router is point-to-point, as PPP links and tunnels are: a pair of
	// tun devices (wanK in the router, custK in the ISP) instead of the
	// veth, with addresses like PPP's (see [Lab.SetP2PDown] and
	// tunwan.go). IPv4 only: it cannot be combined with IPv6, RA or DHCP.
	P2PISP int
}

// Lab is a running test network. All methods are safe for concurrent use.
type Lab struct {
	prefix string
	isps   int
	dhcp   bool
	ipv6   bool
	ra     bool
	p2p    int      // Options.P2PISP
	tun    *tunPair // the p2p ISP's link; set during setup
	logf   func(format string, args ...any)
	quiet  atomic.Bool // set once Close finished: t.Logf panics after a test ends

	// dyn serializes the operations that change WAN links and DHCP
	// (SetDHCPPool, DeleteWANLink, RecreateWANLink, RenameWANLink).
	dyn  sync.Mutex
	wans [MaxISPs + 1]wanState // by ISP number; guarded by dyn

	// dir holds the lab's files (DHCP scripts, leases, pid files of the
	// DHCP and RA daemons); it is created by New when needed and removed
	// by Close.
	dir string

	mu      sync.Mutex
	closed  bool
	created []string // real namespace names, in creation order
	procs   []*Proc
	closers []io.Closer
	names   [MaxISPs + 1]string // current names of the router's WAN interfaces
	// hosts are the namespaces added behind the internet after setup
	// (AddHost: the VPS, a road warrior), by logical name.
	hosts map[string]bool

	closeOnce sync.Once
	closeErr  error
}

var labSeq atomic.Int64

// New builds the lab. On error everything created so far is removed.
func New(opts Options) (*Lab, error) {
	isps := opts.ISPs
	if isps == 0 {
		isps = 2
	}
	if isps < 2 || isps > MaxISPs {
		return nil, fmt.Errorf("lab: ISPs must be 2 or 3, got %d", opts.ISPs)
	}
	if opts.RA && !opts.IPv6 {
		return nil, errors.New("lab: Options.RA needs Options.IPv6")
	}
	if err := checkP2P(opts, isps); err != nil {
		return nil, err
	}
	l := &Lab{
		prefix: fmt.Sprintf("mwl%d-%d-", os.Getpid(), labSeq.Add(1)),
		isps:   isps,
		dhcp:   opts.DHCP,
		ipv6:   opts.IPv6,
		ra:     opts.RA,
		p2p:    opts.P2PISP,
		logf:   opts.Logf,
	}
	for k := 1; k <= isps; k++ {
		l.names[k] = WANIface(k)
		l.wans[k].ispAddrs = []string{ISPGateway(k)}
		l.wans[k].pool = dhcpPool{first: DHCPPoolFirst(k), last: DHCPPoolLast(k), gateway: ISPGateway(k)}
	}
	// Register before the first namespace exists so a signal arriving in
	// the middle of setup still cleans up.
	if err := register(l); err != nil {
		return nil, err
	}
	start := time.Now()
	if err := l.setup(); err != nil {
		if cerr := l.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return nil, fmt.Errorf("lab: setup: %w", err)
	}
	l.log("lab %s up with %d ISPs%s in %v", l.prefix, isps, l.features(), time.Since(start).Round(time.Millisecond))
	return l, nil
}

// setup builds the topology and, with DHCP, starts the DHCP servers and
// clients and waits for every lease; with RA it starts the router
// advertisement daemons and waits for the router's default routes.
func (l *Lab) setup() error {
	if l.dhcp || l.ra {
		if err := l.makeDir(); err != nil {
			return err
		}
	}
	if err := l.build(); err != nil {
		return err
	}
	if l.ra {
		if err := l.startRA(); err != nil {
			return err
		}
	}
	if l.dhcp {
		if err := l.startDHCP(); err != nil {
			return err
		}
	}
	if l.ra {
		return l.waitAllRA()
	}
	return nil
}

// makeDir creates the lab's directory. Its name starts with the lab's
// prefix so that SweepStale can recognise the leftovers of a killed
// process. It is created under l.mu so a concurrent Close either removes
// it or makes this fail.
func (l *Lab) makeDir() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errors.New("lab: closed")
	}
	dir, err := os.MkdirTemp("", l.prefix+"files-")
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	l.dir = dir
	return nil
}

func (l *Lab) features() string {
	var f []string
	if l.dhcp {
		f = append(f, "DHCP")
	}
	if l.ipv6 {
		f = append(f, "IPv6")
	}
	if l.ra {
		f = append(f, "RA")
	}
	if l.p2p != 0 {
		f = append(f, fmt.Sprintf("ISP %d point-to-point", l.p2p))
	}
	if len(f) == 0 {
		return ""
	}
	return " (" + strings.Join(f, ", ") + ")"
}

// TB is the subset of testing.TB that [NewForTest] needs; it keeps the
// testing package out of non-test binaries such as the demo.
type TB interface {
	Helper()
	Cleanup(func())
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// NewForTest builds a lab, fails the test if that is impossible, and closes
// the lab when the test and its subtests finish (also when they fail or
// panic). A nil opts.Logf logs through tb.
func NewForTest(tb TB, opts Options) *Lab {
	tb.Helper()
	if opts.Logf == nil {
		opts.Logf = tb.Logf
	}
	l, err := New(opts)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Cleanup(func() {
		if err := l.Close(); err != nil {
			tb.Errorf("lab close: %v", err)
		}
	})
	return l
}

// Prefix returns the prefix shared by the names of all of the lab's
// namespaces, e.g. "mwl4242-1-".
func (l *Lab) Prefix() string { return l.prefix }

// ISPs returns the number of ISPs.
func (l *Lab) ISPs() int { return l.isps }

// NS returns the real (ip netns) name of a logical namespace name such as
// "router", "client", "client2", "internet" or "isp1", for use with
// "ip netns exec" or "ip -n". It returns "" for names the lab does not have.
func (l *Lab) NS(name string) string {
	if !l.hasLogical(name) {
		return ""
	}
	return l.prefix + name
}

// Namespaces returns the real names of all namespaces the lab has created
// and not yet deleted.
func (l *Lab) Namespaces() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	return append([]string(nil), l.created...)
}

func (l *Lab) logicalNames() []string {
	names := []string{NSInternet}
	for k := 1; k <= l.isps; k++ {
		names = append(names, ISPNS(k))
	}
	return append(names, NSRouter, NSClient, NSClient2)
}

func (l *Lab) hasLogical(name string) bool {
	for _, n := range l.logicalNames() {
		if n == name {
			return true
		}
	}
	return l.isHost(name)
}

// real maps a logical name to an existing lab namespace. Every command the
// lab runs goes through it, which is what keeps the host namespace out of
// reach: an unknown or not yet created name is an error, never "".
func (l *Lab) real(name string) (string, error) {
	if !l.hasLogical(name) {
		return "", fmt.Errorf("lab: no namespace %q", name)
	}
	r := l.prefix + name
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return "", errors.New("lab: closed")
	}
	for _, c := range l.created {
		if c == r {
			return r, nil
		}
	}
	return "", fmt.Errorf("lab: namespace %q not created yet", name)
}

func (l *Lab) checkISP(k int) error {
	if k < 1 || k > l.isps {
		return fmt.Errorf("lab: no ISP %d (lab has %d)", k, l.isps)
	}
	return nil
}

func (l *Lab) log(format string, args ...any) {
	if l.logf == nil || l.quiet.Load() {
		return
	}
	l.logf(format, args...)
}

// addNS creates one namespace. It holds l.mu while doing so, so that a
// concurrent Close (for example from the signal handler) either sees the
// namespace in l.created or makes the creation fail.
func (l *Lab) addNS(name string) error {
	r := l.prefix + name
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errors.New("lab: closed")
	}
	if _, err := runCmd(nil, "ip", "netns", "add", r); err != nil {
		return err
	}
	l.created = append(l.created, r)
	return nil
}

// track registers something for Close to close. If the lab is already
// closed, c is closed at once and an error returned.
func (l *Lab) track(c io.Closer) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		c.Close()
		return errors.New("lab: closed")
	}
	l.closers = append(l.closers, c)
	return nil
}

// Close kills processes started with [Lab.Start], closes the lab's
// listeners and servers, kills any other process still inside a lab
// namespace and deletes all namespaces. It is safe to call more than once
// and concurrently; later calls wait for the first and return its result.
func (l *Lab) Close() error {
	l.closeOnce.Do(func() { l.closeErr = l.close() })
	return l.closeErr
}

func (l *Lab) close() error {
	l.mu.Lock()
	l.closed = true
	procs, closers, nss, dir := l.procs, l.closers, l.created, l.dir
	l.procs, l.closers, l.created = nil, nil, nil
	l.mu.Unlock()
	defer unregister(l)

	var errs []error
	for _, p := range procs {
		if err := p.Kill(); err != nil {
			errs = append(errs, err)
		}
	}
	for i := len(closers) - 1; i >= 0; i-- {
		closers[i].Close() // errors from already-closed listeners are expected
	}
	for _, ns := range nss {
		killNSProcs(ns)
		if _, err := runCmd(nil, "ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	// Files last: every process that could write them is gone by now.
	if dir != "" {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		}
	}
	if len(nss) > 0 {
		l.log("lab %s closed", l.prefix)
	}
	// Output goroutines of killed processes have finished (Proc.Kill waits
	// for them), so nothing logs after this point.
	l.quiet.Store(true)
	return errors.Join(errs...)
}

// killNSProcs SIGKILLs every process whose network namespace is ns, except
// this process: leftovers of Exec or of commands run by tests would
// otherwise keep the namespace alive after "ip netns del".
func killNSProcs(ns string) {
	out, err := runCmd(nil, "ip", "netns", "pids", ns)
	if err != nil {
		return
	}
	self := os.Getpid()
	for _, f := range strings.Fields(string(out)) {
		var pid int
		if _, err := fmt.Sscan(f, &pid); err != nil || pid <= 1 || pid == self {
			continue
		}
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// runCmd runs a short housekeeping command with stdin, bounded by
// cmdTimeout, and returns its stdout. The error includes stderr.
func runCmd(stdin []byte, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err,
			strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// ip runs "ip -n <ns> args..." in lab namespace ns (a logical name).
func (l *Lab) ip(ns string, args ...string) error {
	r, err := l.real(ns)
	if err != nil {
		return err
	}
	_, err = runCmd(nil, "ip", append([]string{"-n", r}, args...)...)
	return err
}

// ipOut runs "ip -n <ns> args..." in lab namespace ns and returns its
// stdout.
func (l *Lab) ipOut(ns string, args ...string) ([]byte, error) {
	r, err := l.real(ns)
	if err != nil {
		return nil, err
	}
	return runCmd(nil, "ip", append([]string{"-n", r}, args...)...)
}

// ipBatch runs several ip commands in lab namespace ns with one process;
// it stops at the first failing line.
func (l *Lab) ipBatch(ns string, lines []string) error {
	r, err := l.real(ns)
	if err != nil {
		return err
	}
	_, err = runCmd([]byte(strings.Join(lines, "\n")+"\n"), "ip", "-n", r, "-batch", "-")
	return err
}

// nsRun runs argv inside lab namespace ns with stdin.
func (l *Lab) nsRun(ns string, stdin []byte, argv ...string) ([]byte, error) {
	r, err := l.real(ns)
	if err != nil {
		return nil, err
	}
	return runCmd(stdin, "ip", append([]string{"netns", "exec", r}, argv...)...)
}

// nft applies an nft script atomically inside lab namespace ns.
func (l *Lab) nft(ns, script string) error {
	_, err := l.nsRun(ns, []byte(script), "nft", "-f", "-")
	return err
}

// sysctl sets sysctls inside lab namespace ns. "ip netns exec" makes
// /proc/sys/net refer to ns, never to the host.
func (l *Lab) sysctl(ns string, settings ...string) error {
	_, err := l.nsRun(ns, nil, append([]string{"sysctl", "-q", "-w"}, settings...)...)
	return err
}
