package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multiwan/multiwan/internal/lab/nstest"
)

// TestMain checks that the host's namespace is the same after the tests:
// the lab is never connected to it.
func TestMain(m *testing.M) { nstest.Main(m) }

// requireE2E fails (rather than skips) when the lab cannot run, so a CI job
// that silently lost root does not look green. MULTIWAN_SKIP_E2E=1 is the
// explicit opt-out for unprivileged unit-test runs.
func requireE2E(t *testing.T) {
	t.Helper()
	if os.Getenv("MULTIWAN_SKIP_E2E") == "1" {
		t.Skip("MULTIWAN_SKIP_E2E=1")
	}
	nstest.RequireRoot(t, "ip", "nft", "curl", "sysctl")
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// netnsWithPrefix lists the host's named namespaces that start with prefix.
func netnsWithPrefix(t *testing.T, prefix string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("ip netns list: %v", err)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], prefix) {
			names = append(names, f[0])
		}
	}
	return names
}

func mustExec(t *testing.T, l *Lab, ns string, argv ...string) string {
	t.Helper()
	out, err := l.Exec(ctxFor(t, 10*time.Second), ns, argv...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

func wantCurl(t *testing.T, l *Lab, ns, url, want string, extra ...string) {
	t.Helper()
	got, err := l.Curl(ctxFor(t, 5*time.Second), ns, url, extra...)
	if err != nil {
		t.Fatalf("curl %s from %s: %v", url, ns, err)
	}
	if got != want {
		t.Fatalf("curl %s from %s = %q, want %q", url, ns, got, want)
	}
}

// TestAddressPlan needs no privileges.
func TestAddressPlan(t *testing.T) {
	for k, want := range map[int][4]string{
		1: {"192.0.2.1", "192.0.2.2", "192.0.2.0/26", "198.18.1.2"},
		2: {"192.0.2.65", "192.0.2.66", "192.0.2.64/26", "198.18.2.2"},
		3: {"192.0.2.129", "192.0.2.130", "192.0.2.128/26", "198.18.3.2"},
	} {
		got := [4]string{ISPGateway(k), WANAddr(k), WANSubnet(k), ISPPublicAddr(k)}
		if got != want {
			t.Errorf("ISP %d: got %v, want %v", k, got, want)
		}
	}
	if got := ClientExtraAddr(ClientExtraAddrs); got != "198.51.100.60" {
		t.Errorf("last client address = %s", got)
	}
	// Checksum of a known echo request (type 8, id 1, seq 1, no payload).
	if got := icmpChecksum([]byte{8, 0, 0, 0, 0, 1, 0, 1}); got != 0xf7fd {
		t.Errorf("icmpChecksum = %#x, want 0xf7fd", got)
	}
	if _, err := New(Options{ISPs: 4}); err == nil {
		t.Error("New accepted 4 ISPs")
	}
}

func TestTopology(t *testing.T) {
	requireE2E(t)
	l := NewForTest(t, Options{})

	if got := netnsWithPrefix(t, l.Prefix()); len(got) != 6 {
		t.Fatalf("namespaces %v, want 6", got)
	}
	if l.NS("isp3") != "" || l.NS("host") != "" {
		t.Fatal("NS returned a name for a namespace the lab does not have")
	}
	if _, err := l.Exec(ctxFor(t, time.Second), "host", "true"); err == nil {
		t.Fatal("Exec accepted an unknown namespace")
	}

	// The router must start with connected routes only.
	for _, line := range strings.Split(strings.TrimSpace(mustExec(t, l, NSRouter, "ip", "-4", "route", "show", "table", "all", "type", "unicast")), "\n") {
		if !strings.Contains(line, "proto kernel") {
			t.Errorf("router has a non-connected route: %q", line)
		}
	}
	if out := mustExec(t, l, NSClient, "ip", "-4", "-o", "addr", "show", "dev", "eth0"); strings.Count(out, "inet ") != 1+ClientExtraAddrs {
		t.Errorf("client addresses:\n%s", out)
	}

	t.Run("isp reaches internet", func(t *testing.T) {
		wantCurl(t, l, "isp2", "http://203.0.113.10/", "198.18.2.2")
		wantCurl(t, l, "isp1", "http://203.0.113.50/", "198.18.1.2")
		wantCurl(t, l, "isp1", "http://203.0.113.10/slow?ms=50", "198.18.1.2")
		for _, a := range []string{ProbeAddr1, ProbeAddr2} {
			if err := l.Ping(ctxFor(t, 3*time.Second), "isp1", "", a); err != nil {
				t.Error(err)
			}
		}
		got, err := l.UDPEcho(ctxFor(t, 3*time.Second), "isp2", "", PortalAddr+":7000")
		if err != nil || !strings.HasPrefix(got, "198.18.2.2:") {
			t.Errorf("udp echo = %q, %v", got, err)
		}
		n, err := l.Curl(ctxFor(t, 5*time.Second), "isp1", "http://203.0.113.10/bytes?n=100000",
			"-o", "/dev/null", "-w", "%{size_download}")
		if err != nil || n != "100000" {
			t.Errorf("/bytes downloaded %q, %v", n, err)
		}
		n, err = l.Curl(ctxFor(t, 5*time.Second), "isp1", "http://203.0.113.10/stream?seconds=1&rate=100",
			"-o", "/dev/null", "-w", "%{size_download}")
		if size, _ := strconv.Atoi(n); err != nil || size < 50*1024 || size > 200*1024 {
			t.Errorf("/stream for 1s at 100 KiB/s downloaded %q, %v", n, err)
		}
	})

	t.Run("port forward to router", func(t *testing.T) {
		if _, err := l.ServeWhoami(NSRouter, ":8080"); err != nil {
			t.Fatal(err)
		}
		pc, err := l.ListenPacket(NSRouter, "udp4", WANAddr(1)+":7000")
		if err != nil {
			t.Fatal(err)
		}
		go serveUDPEcho(pc)
		// Without a route back the router cannot answer (the daemon's job).
		if _, err := l.Curl(ctxFor(t, 500*time.Millisecond), NSInternet, "http://198.18.1.2:8080/"); err == nil {
			t.Fatal("router answered without a route back")
		}
		mustExec(t, l, NSRouter, "ip", "route", "add", "198.18.1.0/24", "via", ISPGateway(1))
		defer mustExec(t, l, NSRouter, "ip", "route", "del", "198.18.1.0/24")
		wantCurl(t, l, NSInternet, "http://198.18.1.2:8080/", "198.18.1.1")
		got, err := l.UDPEcho(ctxFor(t, 3*time.Second), NSInternet, "198.18.1.1", "198.18.1.2:7000")
		if err != nil || !strings.HasPrefix(got, "198.18.1.1:") {
			t.Errorf("forwarded udp echo = %q, %v", got, err)
		}
	})

	t.Run("clients through router", func(t *testing.T) {
		// A stand-in for the daemon: default route and masquerade via wan1.
		mustExec(t, l, NSRouter, "ip", "route", "add", "default", "via", ISPGateway(1))
		defer mustExec(t, l, NSRouter, "ip", "route", "del", "default")
		if _, err := l.Exec(ctxFor(t, 5*time.Second), NSRouter, "nft",
			`add table ip labtest; add chain ip labtest post { type nat hook postrouting priority srcnat; }; add rule ip labtest post oifname "wan1" masquerade`); err != nil {
			t.Fatal(err)
		}
		defer mustExec(t, l, NSRouter, "nft", "delete table ip labtest")

		wantCurl(t, l, NSClient, "http://203.0.113.10/", "198.18.1.2")
		wantCurl(t, l, NSClient, "http://203.0.113.10/", "198.18.1.2", "--interface", ClientExtraAddr(23))
		wantCurl(t, l, NSClient2, "http://203.0.113.50/", "198.18.1.2")
		if err := l.Ping(ctxFor(t, 3*time.Second), NSClient, ClientExtraAddr(5), ProbeAddr1); err != nil {
			t.Error(err)
		}
		got, err := l.UDPEcho(ctxFor(t, 3*time.Second), NSClient, ClientExtraAddr(7), ServiceAddr+":7000")
		if err != nil || !strings.HasPrefix(got, "198.18.1.2:") {
			t.Errorf("udp echo from client = %q, %v", got, err)
		}
	})
}

func TestFaults(t *testing.T) {
	requireE2E(t)
	l := NewForTest(t, Options{ISPs: 3})
	// One internet address per ISP so each path can be checked separately.
	targets := map[int]string{1: ServiceAddr, 2: ProbeAddr1, 3: ProbeAddr2}
	for k, a := range targets {
		mustExec(t, l, NSRouter, "ip", "route", "add", a, "via", ISPGateway(k))
	}
	viaISP := func(k int) error {
		got, err := l.Curl(ctxFor(t, time.Second), NSRouter, "http://"+targets[k]+"/")
		if err != nil {
			return err
		}
		if got != ISPPublicAddr(k) {
			return fmt.Errorf("via ISP %d: seen as %q", k, got)
		}
		return nil
	}
	for k := 1; k <= 3; k++ {
		if err := viaISP(k); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("cut upstream", func(t *testing.T) {
		for range 2 { // idempotent
			if err := l.CutUpstream(1); err != nil {
				t.Fatal(err)
			}
		}
		if viaISP(1) == nil {
			t.Error("ISP 1 still forwards after CutUpstream")
		}
		if err := viaISP(2); err != nil {
			t.Errorf("ISP 2 affected by cutting ISP 1: %v", err)
		}
		if err := l.Ping(ctxFor(t, 2*time.Second), "isp1", "", WANAddr(1)); err != nil {
			t.Errorf("isp1 -> router: %v", err)
		}
		if err := l.Ping(ctxFor(t, 2*time.Second), NSRouter, "", ISPGateway(1)); err != nil {
			t.Errorf("router -> isp1: %v", err)
		}
		for range 2 {
			if err := l.RestoreUpstream(1); err != nil {
				t.Fatal(err)
			}
		}
		if err := l.WaitFor(ctxFor(t, 5*time.Second), func() error { return viaISP(1) }); err != nil {
			t.Error(err)
		}
	})

	t.Run("loss", func(t *testing.T) {
		if err := l.SetLoss(2, 100); err != nil {
			t.Fatal(err)
		}
		if viaISP(2) == nil {
			t.Error("ISP 2 forwards with 100% loss")
		}
		if err := l.SetLoss(2, 30); err != nil {
			t.Fatal(err)
		}
		if out := mustExec(t, l, "isp2", "nft", "list", "chain", "ip", "isp", "loss"); !strings.Contains(out, "numgen random mod 100 < 30") {
			t.Errorf("loss chain:\n%s", out)
		}
		// A round trip crosses the ISP twice, so about 49% of 30 echoes
		// should come back; the bounds are many standard deviations wide.
		ok := 0
		for range 30 {
			if _, err := l.UDPEcho(ctxFor(t, 100*time.Millisecond), NSRouter, "", targets[2]+":7000"); err == nil {
				ok++
			}
		}
		if ok < 3 || ok > 27 {
			t.Errorf("%d of 30 echoes answered with 30%% loss each way", ok)
		}
		if err := l.SetLoss(2, 0); err != nil {
			t.Fatal(err)
		}
		if err := l.WaitFor(ctxFor(t, 5*time.Second), func() error { return viaISP(2) }); err != nil {
			t.Error(err)
		}
		if l.SetLoss(2, 101) == nil || l.SetLoss(4, 10) == nil {
			t.Error("SetLoss accepted bad arguments")
		}
	})

	t.Run("slow echo", func(t *testing.T) {
		// Through ISP 1 (its own route to the internet), every reply from
		// a ping target takes at least the least delay; the kernel's own
		// immediate reply never gets out.
		undo, err := l.SlowEcho(30*time.Millisecond, 40*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range []string{ProbeAddr1, ProbeAddr2} {
			for range 3 {
				t0 := time.Now()
				if err := l.Ping(ctxFor(t, 2*time.Second), "isp1", "", a); err != nil {
					t.Fatalf("ping %s with slow echo: %v", a, err)
				}
				if d := time.Since(t0); d < 30*time.Millisecond {
					t.Fatalf("ping %s answered after %v, want at least 30ms", a, d)
				}
			}
		}
		if err := l.Ping(ctxFor(t, 2*time.Second), "isp1", "", ServiceAddr); err != nil {
			t.Errorf("ping %s, which is not a slow server: %v", ServiceAddr, err)
		}
		if err := undo(); err != nil {
			t.Fatal(err)
		}
		// The kernel answers again.
		if err := l.Ping(ctxFor(t, 2*time.Second), "isp1", "", ProbeAddr1); err != nil {
			t.Errorf("ping after undo: %v", err)
		}
		if out := mustExec(t, l, NSInternet, "nft", "list", "tables"); strings.Contains(out, "slowecho") {
			t.Errorf("slow echo table left after undo:\n%s", out)
		}
		if _, err := l.SlowEcho(2*time.Millisecond, time.Millisecond); err == nil {
			t.Error("SlowEcho accepted an empty range")
		}
	})

	t.Run("link down", func(t *testing.T) {
		link := func() string { return mustExec(t, l, NSRouter, "ip", "link", "show", "dev", "wan3") }
		for range 2 {
			if err := l.SetLinkDown(3, true); err != nil {
				t.Fatal(err)
			}
		}
		err := l.WaitFor(ctxFor(t, 5*time.Second), func() error {
			if s := link(); !strings.Contains(s, "NO-CARRIER") || !(strings.Contains(s, "state LOWERLAYERDOWN") || strings.Contains(s, "state DOWN")) {
				return fmt.Errorf("wan3 still has carrier: %s", s)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if viaISP(3) == nil {
			t.Error("traffic passes a link that is down")
		}
		if err := l.SetLinkDown(3, false); err != nil {
			t.Fatal(err)
		}
		err = l.WaitFor(ctxFor(t, 5*time.Second), func() error {
			if s := link(); !strings.Contains(s, "LOWER_UP") || !strings.Contains(s, "state UP") {
				return fmt.Errorf("wan3 not up: %s", s)
			}
			return viaISP(3)
		})
		if err != nil {
			t.Error(err)
		}
	})
}

func TestExecAndProc(t *testing.T) {
	requireE2E(t)
	l := NewForTest(t, Options{})

	start := time.Now()
	_, err := l.Exec(ctxFor(t, 300*time.Millisecond), NSClient, "sleep", "10")
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 3*time.Second {
		t.Errorf("Exec with a 300ms deadline: %v after %v", err, time.Since(start))
	}
	if out := mustExec(t, l, NSClient2, "ip", "-4", "-o", "addr", "show", "dev", "eth0"); !strings.Contains(out, Client2Addr+"/25") {
		t.Errorf("client2 address:\n%s", out)
	}

	p, err := l.Start(NSClient, "sh", "-c", `trap 'echo bye; exit 3' TERM; echo hello; echo oops >&2; while :; do sleep 0.05; done`)
	if err != nil {
		t.Fatal(err)
	}
	err = l.WaitFor(ctxFor(t, 5*time.Second), func() error {
		if out := p.Output(); !strings.Contains(out, "hello") || !strings.Contains(out, "oops") {
			return fmt.Errorf("output so far %q", out)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(10 * time.Millisecond); err == nil {
		t.Fatal("Wait returned nil for a running process")
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var ee *exec.ExitError
	if err := p.Wait(5 * time.Second); !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("Wait after SIGTERM = %v, want exit status 3", err)
	}
	if !strings.Contains(p.Output(), "bye") {
		t.Errorf("output %q lacks the trap's message", p.Output())
	}

	p2, err := l.Start(NSRouter, "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	if err := p2.Kill(); err != nil || !p2.Exited() {
		t.Errorf("Kill: %v, exited %v", err, p2.Exited())
	}
	if err := p2.Kill(); err != nil {
		t.Errorf("second Kill: %v", err)
	}
}

func TestClose(t *testing.T) {
	requireE2E(t)
	l, err := New(Options{ISPs: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	if got := netnsWithPrefix(t, l.Prefix()); len(got) != 7 {
		t.Fatalf("namespaces %v, want 7", got)
	}
	p, err := l.Start(NSRouter, "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := l.Listen(NSClient, "tcp4", ClientAddr+":9090")
	if err != nil {
		t.Fatal(err)
	}
	// A stray process the lab did not start must not keep a namespace alive.
	stray := exec.Command("ip", "netns", "exec", l.NS(NSClient2), "sleep", "60")
	if err := stray.Start(); err != nil {
		t.Fatal(err)
	}
	strayDone := make(chan error, 1)
	go func() { strayDone <- stray.Wait() }()

	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if got := netnsWithPrefix(t, l.Prefix()); len(got) != 0 {
		t.Fatalf("namespaces left after Close: %v", got)
	}
	if !p.Exited() {
		t.Error("process still running after Close")
	}
	select {
	case <-strayDone:
	case <-time.After(5 * time.Second):
		stray.Process.Kill()
		t.Error("stray process still running after Close")
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v", err)
	}
	if _, err := l.Exec(ctxFor(t, time.Second), NSRouter, "true"); err == nil {
		t.Error("Exec works after Close")
	}
	if _, err := l.Listen(NSRouter, "tcp4", ":1"); err == nil {
		t.Error("Listen works after Close")
	}
	if err := l.CutUpstream(1); err == nil {
		t.Error("CutUpstream works after Close")
	}
}

func TestSweepStale(t *testing.T) {
	requireE2E(t)
	l := NewForTest(t, Options{})
	// A pid above pid_max can never belong to a running process.
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Fatal(err)
	}
	pidMax, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	stale := fmt.Sprintf("mwl%d-1-stale", pidMax+1)
	if out, err := exec.Command("ip", "netns", "add", stale).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() {
		if len(netnsWithPrefix(t, stale)) > 0 {
			exec.Command("ip", "netns", "del", stale).Run()
		}
	})

	deleted, err := SweepStale()
	if err != nil {
		t.Fatal(err)
	}
	// Leftovers of earlier crashed runs may legitimately be swept too.
	if !slices.Contains(deleted, stale) {
		t.Errorf("SweepStale deleted %v, want %s among them", deleted, stale)
	}
	if got := netnsWithPrefix(t, stale); len(got) != 0 {
		t.Errorf("%s still exists", stale)
	}
	if got := netnsWithPrefix(t, l.Prefix()); len(got) != 6 {
		t.Errorf("SweepStale touched a live lab: %v left", got)
	}
}

// TestHelperLabProcess is the child of TestSignalCleanup: it opens a lab,
// prints its prefix and waits to be signalled.
func TestHelperLabProcess(t *testing.T) {
	if os.Getenv("MULTIWAN_LAB_HELPER") != "1" {
		t.Skip("helper process for TestSignalCleanup")
	}
	ra := os.Getenv("MULTIWAN_LAB_HELPER_RA") == "1"
	l, err := New(Options{DHCP: os.Getenv("MULTIWAN_LAB_HELPER_DHCP") == "1", IPv6: ra, RA: ra})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("DIR=%s\n", l.dir)
	fmt.Printf("PREFIX=%s\n", l.Prefix())
	time.Sleep(30 * time.Second)
	l.Close()
	t.Fatal("not signalled")
}

func TestSignalCleanup(t *testing.T) {
	requireE2E(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperLabProcess$", "-test.count=1")
			cmd.Env = append(os.Environ(), "MULTIWAN_LAB_HELPER=1")
			cmd.Stderr = os.Stderr
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan struct{})
			var waitErr error
			prefixc := make(chan string, 1)
			go func() {
				sc := bufio.NewScanner(stdout)
				for sc.Scan() {
					if p, ok := strings.CutPrefix(sc.Text(), "PREFIX="); ok {
						prefixc <- p
					}
				}
				waitErr = cmd.Wait()
				close(exited)
			}()
			// Whatever happens, do not leave the child or its lab behind.
			t.Cleanup(func() {
				cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-exited:
				case <-time.After(10 * time.Second):
					cmd.Process.Kill()
					<-exited
				}
				SweepStale()
			})

			var prefix string
			select {
			case prefix = <-prefixc:
			case <-exited:
				t.Fatalf("helper exited early: %v", waitErr)
			case <-time.After(20 * time.Second):
				t.Fatal("helper did not report its lab")
			}
			if got := netnsWithPrefix(t, prefix); len(got) != 6 {
				t.Fatalf("helper lab namespaces %v, want 6", got)
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			select {
			case <-exited:
			case <-time.After(20 * time.Second):
				t.Fatal("helper did not exit after the signal")
			}
			ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
			if !ws.Signaled() || ws.Signal() != sig {
				t.Errorf("helper exit: %v, want death by %v", waitErr, sig)
			}
			if got := netnsWithPrefix(t, prefix); len(got) != 0 {
				t.Errorf("namespaces left after %v: %v", sig, got)
			}
		})
	}
}

// requireDHCP is requireE2E plus the DHCP server and client.
func requireDHCP(t *testing.T) {
	t.Helper()
	requireE2E(t)
	for _, tool := range []string{"dnsmasq", "dhclient"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("DHCP lab tests need %s: %v", tool, err)
		}
	}
}

// TestAddressPlan6 needs no privileges.
func TestAddressPlan6(t *testing.T) {
	for k, want := range map[int][5]string{
		1: {"2001:db8:1::1", "2001:db8:1::2", "2001:db8:1::/64", "2001:db8:f01::2", "2001:db8:f01::1"},
		3: {"2001:db8:3::1", "2001:db8:3::2", "2001:db8:3::/64", "2001:db8:f03::2", "2001:db8:f03::1"},
	} {
		got := [5]string{ISPGateway6(k), WANAddr6(k), WANSubnet6(k), ISPPublicAddr6(k), InternetPeerAddr6(k)}
		if got != want {
			t.Errorf("ISP %d: got %v, want %v", k, got, want)
		}
	}
	if a, b := ClientExtraAddr6(1), ClientExtraAddr6(ClientExtraAddrs6); a != "2001:db8:100::11" || b != "2001:db8:100::20" {
		t.Errorf("client IPv6 extras %s..%s", a, b)
	}
	doc := netip.MustParsePrefix("2001:db8::/32")
	for _, a := range append(internetAddrs6(MaxISPs), ClientAddr6, Client2Addr6, LAN1Addr6, LAN2Addr6) {
		if !doc.Contains(netip.MustParseAddr(a)) {
			t.Errorf("%s outside 2001:db8::/32", a)
		}
	}
	for k := 1; k <= MaxISPs; k++ {
		subnet := netip.MustParsePrefix(WANSubnet(k))
		for _, a := range []string{DHCPPoolFirst(k), DHCPPoolLast(k)} {
			if !subnet.Contains(netip.MustParseAddr(a)) {
				t.Errorf("DHCP pool address %s outside %s", a, subnet)
			}
		}
	}
	// ICMPv6 echo: the kernel computes the checksum, the lab only the type.
	if b := echoRequest(128, 7, 1); b[0] != 128 || b[2] != 0 || b[3] != 0 {
		t.Errorf("ICMPv6 echo request %x", b)
	}
}

// routerLease checks the lease on WAN k: an address in the pool, default
// route via gateway in the main table with metric 100+k.
func checkLease(t *testing.T, l *Lab, k int, first, last, gateway string) string {
	t.Helper()
	addr, gw, err := l.DHCPLease(k)
	if err != nil {
		t.Fatalf("DHCPLease(%d): %v", k, err)
	}
	ip := netip.MustParseAddr(addr)
	if !netip.MustParsePrefix(WANSubnet(k)).Contains(ip) || ip.Less(netip.MustParseAddr(first)) || netip.MustParseAddr(last).Less(ip) {
		t.Errorf("wan%d lease %s, want %s..%s", k, addr, first, last)
	}
	if gw != gateway {
		t.Errorf("wan%d gateway %s, want %s", k, gw, gateway)
	}
	name := l.WANName(k)
	routes := mustExec(t, l, NSRouter, "ip", "-4", "route", "show", "table", "main", "default")
	if want := fmt.Sprintf("default via %s dev %s metric %d", gateway, name, 100+k); !strings.Contains(routes, want) {
		t.Errorf("main table has no %q:\n%s", want, routes)
	}
	addrs := mustExec(t, l, NSRouter, "ip", "-4", "-o", "addr", "show", "dev", name)
	if strings.Count(addrs, " inet ") != 1 || !strings.Contains(addrs, " inet "+addr+"/26 ") {
		t.Errorf("%s addresses, want only %s/26:\n%s", name, addr, addrs)
	}
	return addr
}

func TestDHCP(t *testing.T) {
	requireDHCP(t)
	start := time.Now()
	l := NewForTest(t, Options{DHCP: true})
	t.Logf("lab with DHCP leases on both WANs up in %v", time.Since(start).Round(time.Millisecond))

	for k := 1; k <= 2; k++ {
		checkLease(t, l, k, DHCPPoolFirst(k), DHCPPoolLast(k), ISPGateway(k))
	}
	// The main table's defaults: wan1 (metric 101) wins, like two DHCP
	// clients on one box.
	wantCurl(t, l, NSRouter, "http://"+ServiceAddr+"/", ISPPublicAddr(1))
	mustExec(t, l, NSRouter, "ip", "route", "add", ProbeAddr2+"/32", "via", ISPGateway(2))
	probe2 := func() error {
		got, err := l.Curl(ctxFor(t, 2*time.Second), NSRouter, "http://"+ProbeAddr2+"/")
		if err == nil && got != ISPPublicAddr(2) {
			err = fmt.Errorf("seen as %s", got)
		}
		return err
	}
	if err := probe2(); err != nil {
		t.Fatalf("via wan2: %v", err)
	}
	// Port forwards follow the lease.
	if _, err := l.ServeWhoami(NSRouter, ":8080"); err != nil {
		t.Fatal(err)
	}
	wantCurl(t, l, NSInternet, "http://198.18.1.2:8080/", InternetPeerAddr(1))
	if _, _, err := l.DHCPLease(3); err == nil {
		t.Error("DHCPLease(3) in a 2-ISP lab")
	}

	t.Run("SetDHCPPool", func(t *testing.T) {
		for _, bad := range [][2]string{
			{"198.51.100.40", "192.0.2.33"}, {"192.0.2.40", "192.0.2.64"}, {"192.0.2.0", "192.0.2.33"},
			{"192.0.2.33", "192.0.2.33"}, {"192.0.2.1", "192.0.2.33"}, {"nonsense", "192.0.2.33"},
		} {
			if err := l.SetDHCPPool(1, bad[0], bad[1]); err == nil {
				t.Errorf("SetDHCPPool(1, %s, %s) accepted", bad[0], bad[1])
			}
		}
		if err := l.SetDHCPPool(3, "192.0.2.170", "192.0.2.161"); err == nil {
			t.Error("SetDHCPPool(3) accepted in a 2-ISP lab")
		}
		lease2, _, _ := l.DHCPLease(2)
		start := time.Now()
		if err := l.SetDHCPPool(1, "192.0.2.40", "192.0.2.33"); err != nil {
			t.Fatal(err)
		}
		t.Logf("new lease on wan1 in %v", time.Since(start).Round(time.Millisecond))
		checkLease(t, l, 1, "192.0.2.40", "192.0.2.40", "192.0.2.33")
		if cust := mustExec(t, l, "isp1", "ip", "-4", "-o", "addr", "show", "dev", "cust"); !strings.Contains(cust, " 192.0.2.1/26 ") || !strings.Contains(cust, " 192.0.2.33/26 ") {
			t.Errorf("isp1 must keep its old gateway address and have the new one:\n%s", cust)
		}
		wantCurl(t, l, NSRouter, "http://"+ServiceAddr+"/", ISPPublicAddr(1))
		wantCurl(t, l, NSInternet, "http://198.18.1.2:8080/", InternetPeerAddr(1))
		if got, _, _ := l.DHCPLease(2); got != lease2 {
			t.Errorf("wan2 lease changed from %s to %s", lease2, got)
		}
		// Once more, back to the first gateway: repeated renumbering works.
		if err := l.SetDHCPPool(1, "192.0.2.41", ISPGateway(1)); err != nil {
			t.Fatal(err)
		}
		checkLease(t, l, 1, "192.0.2.41", "192.0.2.41", ISPGateway(1))
		wantCurl(t, l, NSRouter, "http://"+ServiceAddr+"/", ISPPublicAddr(1))
	})

	t.Run("delete and recreate", func(t *testing.T) {
		lease, _, _ := l.DHCPLease(2)
		if err := l.DeleteWANLink(2); err != nil {
			t.Fatal(err)
		}
		if out, err := l.Exec(ctxFor(t, 5*time.Second), NSRouter, "ip", "link", "show", "dev", "wan2"); err == nil {
			t.Fatalf("wan2 still exists:\n%s", out)
		}
		if out, err := l.Exec(ctxFor(t, 5*time.Second), "isp2", "ip", "link", "show", "dev", "cust"); err == nil {
			t.Fatalf("isp2's cust still exists:\n%s", out)
		}
		if _, _, err := l.DHCPLease(2); err == nil {
			t.Error("DHCPLease(2) without a link")
		}
		if err := l.DeleteWANLink(2); err == nil {
			t.Error("second DeleteWANLink(2) succeeded")
		}
		if err := l.SetDHCPPool(2, "192.0.2.100", "192.0.2.97"); err == nil {
			t.Error("SetDHCPPool on a deleted link succeeded")
		}
		start := time.Now()
		if err := l.RecreateWANLink(2); err != nil {
			t.Fatal(err)
		}
		t.Logf("wan2 recreated with a lease in %v", time.Since(start).Round(time.Millisecond))
		if got := checkLease(t, l, 2, DHCPPoolFirst(2), DHCPPoolLast(2), ISPGateway(2)); got != lease {
			t.Logf("wan2 lease %s before, %s after (the client asks for its old one)", lease, got)
		}
		if err := l.RecreateWANLink(2); err == nil {
			t.Error("RecreateWANLink of an existing link succeeded")
		}
		mustExec(t, l, NSRouter, "ip", "route", "replace", ProbeAddr2+"/32", "via", ISPGateway(2))
		if err := l.WaitFor(ctxFor(t, 5*time.Second), probe2); err != nil {
			t.Fatalf("via recreated wan2: %v", err)
		}
	})

	t.Run("rename", func(t *testing.T) {
		if err := l.RenameWANLink(2, "bad name"); err == nil {
			t.Error("RenameWANLink accepted a bad name")
		}
		if err := l.RenameWANLink(2, "wan1"); err == nil {
			t.Error("RenameWANLink to an existing name succeeded")
		}
		if got := l.WANName(2); got != "wan2" {
			t.Fatalf("failed rename left WANName(2) = %q", got)
		}
		checkLease(t, l, 2, DHCPPoolFirst(2), DHCPPoolLast(2), ISPGateway(2))
		if err := l.RenameWANLink(2, "uplink2"); err != nil {
			t.Fatal(err)
		}
		if got := l.WANName(2); got != "uplink2" {
			t.Fatalf("WANName(2) = %q", got)
		}
		checkLease(t, l, 2, DHCPPoolFirst(2), DHCPPoolLast(2), ISPGateway(2))
		mustExec(t, l, NSRouter, "ip", "route", "replace", ProbeAddr2+"/32", "via", ISPGateway(2))
		if err := l.WaitFor(ctxFor(t, 5*time.Second), probe2); err != nil {
			t.Fatalf("via renamed wan2: %v", err)
		}
		if err := l.RenameWANLink(2, "wan2"); err != nil {
			t.Fatal(err)
		}
		checkLease(t, l, 2, DHCPPoolFirst(2), DHCPPoolLast(2), ISPGateway(2))
	})
}

// TestDHCPClose: the DHCP servers and clients and the lab's files are gone
// after Close, and nothing was written outside the lab's directory.
func TestDHCPClose(t *testing.T) {
	requireDHCP(t)
	resolv, _ := os.ReadFile("/etc/resolv.conf")
	l, err := New(Options{DHCP: true, IPv6: true, ISPs: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	for k := 1; k <= 3; k++ {
		checkLease(t, l, k, DHCPPoolFirst(k), DHCPPoolLast(k), ISPGateway(k))
		// IPv6 stays static with DHCP.
		if err := l.Ping(ctxFor(t, 3*time.Second), NSRouter, "", ISPGateway6(k)); err != nil {
			t.Error(err)
		}
	}
	var pids []int
	l.dyn.Lock()
	for k := 1; k <= 3; k++ {
		pids = append(pids, l.wans[k].server.Pid(), l.wans[k].client.Pid())
	}
	l.dyn.Unlock()
	dir := l.dir
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Fatalf("lab directory %s: %v", dir, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("pid %d still exists after Close (kill 0: %v)", pid, err)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lab directory %s left after Close: %v", dir, err)
	}
	if after, _ := os.ReadFile("/etc/resolv.conf"); string(after) != string(resolv) {
		t.Errorf("/etc/resolv.conf changed")
	}
	if got := netnsWithPrefix(t, l.Prefix()); len(got) != 0 {
		t.Errorf("namespaces left: %v", got)
	}
}

func TestIPv6(t *testing.T) {
	requireE2E(t)
	l := NewForTest(t, Options{IPv6: true})
	service6 := "http://[" + ServiceAddr6 + "]/"

	t.Run("plan", func(t *testing.T) {
		if out := mustExec(t, l, NSRouter, "ip", "-6", "route", "show", "default"); strings.TrimSpace(out) != "" {
			t.Errorf("router has an IPv6 default route:\n%s", out)
		}
		for k := 1; k <= 2; k++ {
			if err := l.Ping(ctxFor(t, 3*time.Second), NSRouter, WANAddr6(k), ISPGateway6(k)); err != nil {
				t.Error(err)
			}
		}
		if err := l.Ping(ctxFor(t, 3*time.Second), NSClient, "", LAN1Addr6); err != nil {
			t.Error(err)
		}
		if err := l.Ping(ctxFor(t, 3*time.Second), NSClient2, "", LAN2Addr6); err != nil {
			t.Error(err)
		}
		if out := mustExec(t, l, NSClient, "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"); strings.Count(out, "inet6 ") != 1+ClientExtraAddrs6 || strings.Contains(out, "tentative") {
			t.Errorf("client IPv6 addresses:\n%s", out)
		}
		if out := mustExec(t, l, NSClient, "ip", "-6", "route", "get", ServiceAddr6); !strings.Contains(out, "src "+ClientAddr6+" ") {
			t.Errorf("client's IPv6 source is not %s:\n%s", ClientAddr6, out)
		}
		// The ISPs reach the internet over IPv6 with their own address.
		wantCurl(t, l, "isp1", service6, ISPPublicAddr6(1))
		wantCurl(t, l, "isp2", "http://["+PortalAddr6+"]/", ISPPublicAddr6(2))
		for _, a := range []string{ProbeAddr6a, ProbeAddr6b} {
			if err := l.Ping(ctxFor(t, 3*time.Second), "isp1", "", a); err != nil {
				t.Error(err)
			}
		}
		got, err := l.UDPEcho(ctxFor(t, 3*time.Second), "isp2", "", "["+ServiceAddr6+"]:7000")
		if err != nil || !strings.HasPrefix(got, "["+ISPPublicAddr6(2)+"]:") {
			t.Errorf("udp6 echo = %q, %v", got, err)
		}
		// IPv4 is unchanged.
		wantCurl(t, l, "isp2", "http://"+ServiceAddr+"/", ISPPublicAddr(2))
		if gw, err := l.RAGateway(1); err == nil {
			t.Errorf("RAGateway(1) = %s without Options.RA", gw)
		}
	})

	// A stand-in for the daemon: default routes via wan1 for both
	// families, IPv4 masquerade (IPv6 LANs are routed; isp1 does NAT66).
	mustExec(t, l, NSRouter, "ip", "route", "add", "default", "via", ISPGateway(1))
	mustExec(t, l, NSRouter, "ip", "-6", "route", "add", "default", "via", ISPGateway6(1), "dev", "wan1")
	mustExec(t, l, NSRouter, "nft", `add table ip labtest; add chain ip labtest post { type nat hook postrouting priority srcnat; }; add rule ip labtest post oifname "wan1" masquerade`)
	v6 := func() error {
		got, err := l.Curl(ctxFor(t, time.Second), NSClient, service6)
		if err == nil && got != ISPPublicAddr6(1) {
			err = fmt.Errorf("IPv6 seen as %s", got)
		}
		return err
	}
	v4 := func() error {
		got, err := l.Curl(ctxFor(t, time.Second), NSClient, "http://"+ServiceAddr+"/")
		if err == nil && got != ISPPublicAddr(1) {
			err = fmt.Errorf("IPv4 seen as %s", got)
		}
		return err
	}
	both := func(t *testing.T, want4, want6 bool) {
		t.Helper()
		for _, c := range []struct {
			name string
			f    func() error
			want bool
		}{{"IPv4", v4, want4}, {"IPv6", v6, want6}} {
			if c.want {
				if err := l.WaitFor(ctxFor(t, 5*time.Second), c.f); err != nil {
					t.Errorf("%s through isp1: %v", c.name, err)
				}
			} else if c.f() == nil {
				t.Errorf("%s passes isp1", c.name)
			}
		}
	}

	t.Run("through the router", func(t *testing.T) {
		wantCurl(t, l, NSClient, service6, "2001:db8:f01::2")
		wantCurl(t, l, NSClient, service6, ISPPublicAddr6(1), "--interface", ClientExtraAddr6(3))
		wantCurl(t, l, NSClient2, "http://["+PortalAddr6+"]/", ISPPublicAddr6(1))
		wantCurl(t, l, NSClient, "http://"+ServiceAddr+"/", ISPPublicAddr(1))
		got, err := l.UDPEcho(ctxFor(t, 3*time.Second), NSClient, ClientExtraAddr6(5), "["+ServiceAddr6+"]:7000")
		if err != nil || !strings.HasPrefix(got, "["+ISPPublicAddr6(1)+"]:") {
			t.Errorf("udp6 echo from client = %q, %v", got, err)
		}
		if err := l.Ping(ctxFor(t, 3*time.Second), NSClient, "", ProbeAddr6a); err != nil {
			t.Error(err)
		}
	})

	t.Run("cut one family", func(t *testing.T) {
		if err := l.CutUpstreamFamily(1, 6); err != nil {
			t.Fatal(err)
		}
		both(t, true, false)
		if out := mustExec(t, l, "isp1", "nft", "list", "chain", "ip", "isp", "cut"); strings.Contains(out, "drop") {
			t.Errorf("IPv4 cut by CutUpstreamFamily(1, 6):\n%s", out)
		}
		if err := l.RestoreUpstreamFamily(1, 6); err != nil {
			t.Fatal(err)
		}
		both(t, true, true)
		if err := l.CutUpstreamFamily(1, 4); err != nil {
			t.Fatal(err)
		}
		both(t, false, true)
		if err := l.RestoreUpstreamFamily(1, 4); err != nil {
			t.Fatal(err)
		}
		both(t, true, true)
		if l.CutUpstreamFamily(1, 5) == nil || l.CutUpstreamFamily(3, 6) == nil || l.RestoreUpstreamFamily(1, 0) == nil {
			t.Error("CutUpstreamFamily accepted bad arguments")
		}
	})

	t.Run("faults cover IPv6", func(t *testing.T) {
		if err := l.CutUpstream(1); err != nil {
			t.Fatal(err)
		}
		both(t, false, false)
		if err := l.RestoreUpstream(1); err != nil {
			t.Fatal(err)
		}
		both(t, true, true)
		if err := l.SetLoss(1, 100); err != nil {
			t.Fatal(err)
		}
		both(t, false, false)
		if err := l.SetLoss(1, 0); err != nil {
			t.Fatal(err)
		}
		both(t, true, true)
		if err := l.SetLinkDown(1, true); err != nil {
			t.Fatal(err)
		}
		both(t, false, false)
		if err := l.SetLinkDown(1, false); err != nil {
			t.Fatal(err)
		}
		both(t, true, true)
	})
}

// TestWANLinkRecreateStatic: deleting and recreating (and renaming) a WAN
// link of a static dual-stack lab restores its addresses and the ISP's
// routes.
func TestWANLinkRecreateStatic(t *testing.T) {
	requireE2E(t)
	l := NewForTest(t, Options{IPv6: true, ISPs: 3})
	check := func(name string) {
		t.Helper()
		addrs := mustExec(t, l, NSRouter, "ip", "-o", "addr", "show", "dev", name)
		for _, a := range []string{WANAddr(3) + "/26", WANAddr6(3) + "/64"} {
			if !strings.Contains(addrs, " "+a+" ") {
				t.Errorf("%s lacks %s:\n%s", name, a, addrs)
			}
		}
		if err := l.Ping(ctxFor(t, 3*time.Second), NSRouter, "", ISPGateway(3)); err != nil {
			t.Error(err)
		}
		if err := l.Ping(ctxFor(t, 3*time.Second), NSRouter, "", ISPGateway6(3)); err != nil {
			t.Error(err)
		}
		// The ISP's route to the LAN prefix is back: the router's LAN
		// address answers through it.
		if err := l.Ping(ctxFor(t, 3*time.Second), "isp3", "", LAN1Addr6); err != nil {
			t.Error(err)
		}
	}
	check("wan3")
	if err := l.DeleteWANLink(3); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Exec(ctxFor(t, 5*time.Second), NSRouter, "ip", "link", "show", "dev", "wan3"); err == nil {
		t.Fatal("wan3 still exists")
	}
	if err := l.Ping(ctxFor(t, 500*time.Millisecond), "isp3", "", LAN1Addr6); err == nil {
		t.Error("isp3 reaches the router without a link")
	}
	start := time.Now()
	if err := l.RecreateWANLink(3); err != nil {
		t.Fatal(err)
	}
	t.Logf("wan3 recreated in %v", time.Since(start).Round(time.Millisecond))
	check("wan3")
	if err := l.RenameWANLink(3, "ppp3"); err != nil {
		t.Fatal(err)
	}
	check("ppp3")
	if err := l.DeleteWANLink(3); err != nil {
		t.Fatal(err)
	}
	if err := l.RecreateWANLink(3); err != nil {
		t.Fatal(err)
	}
	check("ppp3")
	if err := l.RenameWANLink(3, "wan3"); err != nil {
		t.Fatal(err)
	}
	check("wan3")
	if err := l.SetDHCPPool(3, "192.0.2.170", "192.0.2.161"); err == nil {
		t.Error("SetDHCPPool without DHCP succeeded")
	}
}

// TestSignalCleanupDHCP: a process with a DHCP lab that dies by SIGTERM
// removes its DHCP servers, clients and files itself; one killed by
// SIGKILL cannot, but its daemons die with it (parent-death signal) and
// SweepStale removes its namespaces and files.
func TestSignalCleanupDHCP(t *testing.T) {
	requireDHCP(t)
	signalCleanupDaemons(t, "MULTIWAN_LAB_HELPER_DHCP=1", 4)
}

// signalCleanupDaemons runs TestHelperLabProcess with env and checks that
// its lab's want daemons (those with the lab's directory on their command
// line) and everything else of the lab are gone after SIGTERM, and after
// SIGKILL and SweepStale.
func signalCleanupDaemons(t *testing.T, env string, want int) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperLabProcess$", "-test.count=1")
			cmd.Env = append(os.Environ(), "MULTIWAN_LAB_HELPER=1", env)
			cmd.Stderr = os.Stderr
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan struct{})
			prefixc, dirc := make(chan string, 1), make(chan string, 1)
			go func() {
				sc := bufio.NewScanner(stdout)
				for sc.Scan() {
					if p, ok := strings.CutPrefix(sc.Text(), "PREFIX="); ok {
						prefixc <- p
					}
					if d, ok := strings.CutPrefix(sc.Text(), "DIR="); ok {
						dirc <- d
					}
				}
				cmd.Wait()
				close(exited)
			}()
			t.Cleanup(func() {
				cmd.Process.Kill()
				select {
				case <-exited:
				case <-time.After(10 * time.Second):
				}
				SweepStale()
			})
			var prefix, dir string
			select {
			case prefix = <-prefixc:
				dir = <-dirc
			case <-exited:
				t.Fatal("helper exited early")
			case <-time.After(30 * time.Second):
				t.Fatal("helper did not report its lab")
			}
			if fi, err := os.Stat(dir); err != nil || !fi.IsDir() || !strings.HasPrefix(filepath.Base(dir), prefix) {
				t.Fatalf("lab directory %q of lab %s: %v", dir, prefix, err)
			}
			daemons := func() []string {
				var found []string
				procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
				for _, p := range procs {
					b, err := os.ReadFile(p)
					if err == nil && strings.Contains(string(b), dir) {
						found = append(found, p+": "+strings.ReplaceAll(string(b), "\x00", " "))
					}
				}
				return found
			}
			if n := len(daemons()); n != want {
				t.Fatalf("%d daemons of the lab running, want %d: %v", n, want, daemons())
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			select {
			case <-exited:
			case <-time.After(20 * time.Second):
				t.Fatal("helper did not exit after the signal")
			}
			if err := WaitFor(ctxFor(t, 5*time.Second), func() error {
				if d := daemons(); len(d) > 0 {
					return fmt.Errorf("still running: %v", d)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if sig == syscall.SIGKILL {
				if _, err := SweepStale(); err != nil {
					t.Fatal(err)
				}
			}
			if got := netnsWithPrefix(t, prefix); len(got) != 0 {
				t.Errorf("namespaces left after %v: %v", sig, got)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("lab directory left after %v: %v", sig, err)
			}
		})
	}
}
