package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/multiwan/multiwan/internal/lab"
)

// notifySocket is a service manager's end of the sd_notify protocol: a
// unix datagram socket that records every message with when it came.
type notifySocket struct {
	path string
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []notifyMsg
}

type notifyMsg struct {
	at   time.Time
	text string
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n := &notifySocket{path: path, conn: conn}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, notifyMsg{time.Now(), string(buf[:k])})
			n.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return n
}

// since returns the messages received after t that contain sub.
func (n *notifySocket) since(t time.Time, sub string) []notifyMsg {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []notifyMsg
	for _, m := range n.msgs {
		if !m.at.Before(t) && strings.Contains(m.text, sub) {
			out = append(out, m)
		}
	}
	return out
}

func (n *notifySocket) wait(t *testing.T, l *lab.Lab, sub string, timeout time.Duration) notifyMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var m notifyMsg
	if err := l.WaitFor(ctx, func() error {
		got := n.since(time.Time{}, sub)
		if len(got) == 0 {
			return fmt.Errorf("no %q yet", sub)
		}
		m = got[len(got)-1]
		return nil
	}); err != nil {
		n.mu.Lock()
		defer n.mu.Unlock()
		t.Fatalf("waiting for %q: %v; got %v", sub, err, n.msgs)
	}
	return m
}

// TestSystemdNotify runs the daemon as systemd would (NOTIFY_SOCKET,
// WATCHDOG_USEC) and checks the protocol: READY=1 only once the first plan
// is installed, STATUS= follows a failover, RELOADING=1/READY=1 around a
// reload, WATCHDOG=1 pings that stop while the loop hangs in an apply (an
// nft that does not return) and come back after, STOPPING=1 at the end.
func TestSystemdNotify(t *testing.T) {
	l := newLab(t, 2)
	n := newNotifySocket(t)
	dir := t.TempDir()
	// An nft that hangs while the flag file exists, then does its job.
	flag := filepath.Join(dir, "hang")
	realNFT, err := exec.LookPath("nft")
	if err != nil {
		t.Fatal(err)
	}
	wrapper := fmt.Sprintf("#!/bin/sh\nwhile [ -e %s ]; do sleep 0.02; done\nexec %s \"$@\"\n", flag, realNFT)
	if err := os.WriteFile(filepath.Join(dir, "nft"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	s := setup{isps: 2, probe: fastProbe, policies: failover12, deflt: "failover"}
	cfgPath := filepath.Join(dir, "multiwan.yaml")
	cfg := s.yaml(t) + "state_dir: " + filepath.Join(dir, "state") + "\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	const watchdogUsec = 200_000 // WatchdogSec=200ms: pings every 100ms
	started := time.Now()
	p, err := l.Start(lab.NSRouter, "env", "NOTIFY_SOCKET="+n.path, fmt.Sprintf("WATCHDOG_USEC=%d", watchdogUsec),
		"PATH="+dir+":"+os.Getenv("PATH"), multiwanBin, "run", "-c", cfgPath, "--log-level", "debug")
	if err != nil {
		t.Fatal(err)
	}
	r := &router{t: t, lab: l, cfg: cfgPath, proc: p}
	t.Cleanup(func() {
		os.Remove(flag)
		if !p.Exited() {
			r.stop()
		}
	})

	ready := n.wait(t, l, "READY=1", 10*time.Second)
	r.waitLog("msg=installed", 5*time.Second)
	// The plan is installed before READY=1 is sent: by then the table
	// exists, and the log said so first.
	installed := strings.Index(p.Output(), "msg=installed")
	if installed < 0 || !strings.Contains(ready.text, "STATUS=") {
		t.Fatalf("READY=1 %q without an installed plan", ready.text)
	}
	if early := n.since(started, "READY=1"); len(early) != 1 {
		t.Fatalf("READY=1 sent %d times at start", len(early))
	}
	t.Logf("READY=1 %v after start: %q", ready.at.Sub(started).Round(time.Millisecond), ready.text)

	r.waitState("isp1", "up", 10*time.Second)
	if err := l.CutUpstream(1); err != nil {
		t.Fatal(err)
	}
	st := n.wait(t, l, "failover → isp2", 10*time.Second)
	t.Logf("after the cut: %q", st.text)

	before := time.Now()
	if out, err := r.cli("reload"); err != nil {
		t.Fatalf("reload: %v\n%s", err, out)
	}
	if len(n.since(before, "RELOADING=1")) != 1 || len(n.since(before, "READY=1")) != 1 {
		t.Fatalf("reload: RELOADING=1 %d, READY=1 %d", len(n.since(before, "RELOADING=1")), len(n.since(before, "READY=1")))
	}

	// Pings come every 100ms.
	from := time.Now()
	n.wait(t, l, "WATCHDOG=1", time.Second)
	time.Sleep(500 * time.Millisecond)
	if pings := len(n.since(from, "WATCHDOG=1")); pings < 3 {
		t.Fatalf("%d watchdog pings in 500ms, want about 5", pings)
	}

	// Stall: the next apply hangs in nft; the pings stop.
	if err := os.WriteFile(flag, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// A config with one more rule: its apply must run nft.
	changed := strings.Replace(cfg, "default_policy:", "rules:\n  - {name: extra, proto: udp, dst_port: [5353], wan: isp2}\ndefault_policy:", 1)
	if err := os.WriteFile(cfgPath, []byte(changed), 0o600); err != nil {
		t.Fatal(err)
	}
	go r.cli("reload") // answered only once nft returns
	time.Sleep(100 * time.Millisecond)
	stall := time.Now()
	time.Sleep(600 * time.Millisecond)
	if pings := n.since(stall, "WATCHDOG=1"); len(pings) != 0 {
		t.Fatalf("%d watchdog pings while the loop hangs in an apply", len(pings))
	}
	t.Logf("no watchdog ping for 600ms while nft hangs: systemd (WatchdogSec=200ms) would restart the daemon")
	os.Remove(flag)
	resumed := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.WaitFor(ctx, func() error {
		if len(n.since(resumed, "WATCHDOG=1")) == 0 {
			return fmt.Errorf("no ping yet")
		}
		return nil
	}); err != nil {
		t.Fatalf("no watchdog ping after the stall: %v", err)
	}

	r.stop()
	if len(n.since(started, "STOPPING=1")) != 1 {
		t.Fatal("no STOPPING=1")
	}
}
