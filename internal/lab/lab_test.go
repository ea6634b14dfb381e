package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// requireE2E fails (rather than skips) when the lab cannot run, so a CI job
// that silently lost root does not look green. MULTIWAN_SKIP_E2E=1 is the
// explicit opt-out for unprivileged unit-test runs.
func requireE2E(t *testing.T) {
	t.Helper()
	if os.Getenv("MULTIWAN_SKIP_E2E") == "1" {
		t.Skip("MULTIWAN_SKIP_E2E=1")
	}
	if os.Geteuid() != 0 {
		t.Fatal("lab tests need root to create network namespaces; run as root, or set MULTIWAN_SKIP_E2E=1 to skip them")
	}
	for _, tool := range []string{"ip", "nft", "curl", "sysctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("lab tests need %s: %v", tool, err)
		}
	}
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
	l, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
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
