package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/multiwan/multiwan/internal/lab"
)

// fastProbe probes both lab targets ten times a second.
const fastProbe = "{targets: [203.0.113.20, 203.0.113.30], interval: 100ms, timeout: 1s, down: 3, up: 3}"

// movableUDP sends UDP through the failover policy as movable flows.
const movableUDP = `  - name: udp-follows
    proto: udp
    policy: failover
    movable: true
`

func healthSetup(rules string) setup {
	return setup{isps: 2, probe: fastProbe, policies: failover12, rules: rules, deflt: "failover"}
}

// startDownload starts a long download from the client; the returned
// function waits for it and checks it received about everything.
func startDownload(t *testing.T, l *lab.Lab, seconds, rateKB int) func() {
	t.Helper()
	dl, err := l.Start(lab.NSClient, "curl", "-sS", "--noproxy", "*", "--max-time", "60", "-o", "/dev/null",
		"-w", "%{size_download}\n", fmt.Sprintf("%sstream?seconds=%d&rate=%d", service, seconds, rateKB))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.WaitFor(ctx, func() error {
		out, _ := l.Exec(ctx, lab.NSRouter, "conntrack", "-L", "-p", "tcp", "--orig-src", lab.ClientAddr,
			"--orig-dst", lab.ServiceAddr, "--state", "ESTABLISHED")
		if !strings.Contains(string(out), "dport=80") {
			return fmt.Errorf("download not established yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		if err := dl.Wait(time.Duration(seconds+20) * time.Second); err != nil {
			t.Fatalf("download interrupted: %v\n%s", err, dl.Output())
		}
		if got, want := atoi(strings.TrimSpace(dl.Output())), seconds*rateKB*1024; got < want*9/10 {
			t.Fatalf("download got %d bytes, want about %d", got, want)
		}
	}
}

// TestFailoverOnUpstreamCut: ISP1's upstream dies while its link stays up;
// the probes see it and new connections go through ISP2. A download started
// on ISP2 survives ISP1's recovery, while new connections return to ISP1.
func TestFailoverOnUpstreamCut(t *testing.T) {
	l := newLab(t, 2)
	r := startRouter(t, l, healthSetup("").yaml(t))
	r.waitState("isp1", "up", 5*time.Second)
	r.waitState("isp2", "up", 5*time.Second)
	if got := seenFrom(t, l, lab.NSClient, service); got != isp1Seen {
		t.Fatalf("seen from %s, want %s", got, isp1Seen)
	}

	if err := l.CutUpstream(1); err != nil {
		t.Fatal(err)
	}
	eventually(t, l, lab.NSClient, service, isp2Seen, 5*time.Second)
	r.waitState("isp1", "down", 5*time.Second)
	r.waitLog(`msg="conntrack entries deleted" wan=isp1`, 5*time.Second)

	finished := startDownload(t, l, 4, 100)
	if err := l.RestoreUpstream(1); err != nil {
		t.Fatal(err)
	}
	r.waitState("isp1", "up", 5*time.Second)
	eventually(t, l, lab.NSClient, service, isp1Seen, 5*time.Second)
	finished()
	if st := r.status(); len(st.Policies) == 0 || st.Policies[0].Active[0].WAN != "isp1" {
		t.Fatalf("status policies: %+v", st.Policies)
	}
}

// TestMovableUDPFollows: a UDP flow from one client socket, steered by a
// movable rule, keeps getting answers after ISP1's upstream is cut, now
// through ISP2: its conntrack entry was deleted, so NAT was redone.
func TestMovableUDPFollows(t *testing.T) {
	l := newLab(t, 2)
	r := startRouter(t, l, healthSetup(movableUDP).yaml(t))
	r.waitState("isp1", "up", 5*time.Second)
	src := lab.ClientAddr + ":40123"
	dst := fmt.Sprintf("%s:%d", lab.ServiceAddr, lab.UDPEchoPort)
	echo := func() (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		return l.UDPEcho(ctx, lab.NSClient, src, dst)
	}
	got, err := echo()
	if err != nil || !strings.HasPrefix(got, isp1Seen+":") {
		t.Fatalf("before the cut: %q %v, want an answer via %s", got, err, isp1Seen)
	}
	if err := l.CutUpstream(1); err != nil {
		t.Fatal(err)
	}
	r.waitState("isp1", "down", 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.WaitFor(ctx, func() error {
		got, err = echo()
		if err != nil {
			return err
		}
		if !strings.HasPrefix(got, isp2Seen+":") {
			return fmt.Errorf("answer %q", got)
		}
		return nil
	}); err != nil {
		t.Fatalf("the same UDP flow after the cut: %v (last %q)", err, got)
	}
}

// TestCarrierLossImmediate: carrier loss on WAN1 makes it down at once,
// without waiting for probes, even with slow probing.
func TestCarrierLossImmediate(t *testing.T) {
	l := newLab(t, 2)
	s := healthSetup("")
	s.probe = "{targets: [203.0.113.20], interval: 5s, timeout: 1s, down: 3, up: 1}"
	r := startRouter(t, l, s.yaml(t))
	r.waitState("isp1", "up", 10*time.Second)
	if err := l.SetLinkDown(1, true); err != nil {
		t.Fatal(err)
	}
	eventually(t, l, lab.NSClient, service, isp2Seen, 2*time.Second)
	r.waitState("isp1", "down", time.Second)
	r.waitLog("cause=\"carrier lost\"", time.Second)
}

// TestDegradedByRTT: targets that answer slowly make the WAN degraded by
// max_rtt; the failover policy then prefers the healthy backup.
func TestDegradedByRTT(t *testing.T) {
	l := newLab(t, 2)
	slow := "{method: http, targets: [\"http://203.0.113.10/slow?ms=300\"], interval: 100ms, timeout: 2s, max_rtt: 150ms}"
	fast := "{method: http, targets: [\"http://203.0.113.10/\"], interval: 100ms, timeout: 2s, max_rtt: 150ms}"
	cfg := fmt.Sprintf("wans:\n%s%spolicies:\n%sdefault_policy: failover\ncontrol: {socket: %s}\n",
		wanYAML(1, slow), wanYAML(2, fast), failover12, filepath.Join(t.TempDir(), "mw.sock"))
	r := startRouter(t, l, cfg)
	r.waitState("isp1", "degraded", 10*time.Second)
	r.waitState("isp2", "up", 5*time.Second)
	eventually(t, l, lab.NSClient, service, isp2Seen, 3*time.Second)
	st := r.status()
	for _, w := range st.WANs {
		if w.Name == "isp1" && w.RTTms < 150 {
			t.Errorf("isp1 rtt_ms %.1f, want above 150", w.RTTms)
		}
	}
}

// TestDegradedByLoss: 30 % loss at ISP1 (both directions, so about half the
// probes are lost) makes it degraded by max_loss, not down: with four
// targets a round still counts as good.
func TestDegradedByLoss(t *testing.T) {
	l := newLab(t, 2)
	s := healthSetup("")
	s.probe = "{targets: [203.0.113.10, 203.0.113.20, 203.0.113.30, 203.0.113.50], interval: 50ms, timeout: 1s, down: 5, up: 3, max_loss: 20%}"
	r := startRouter(t, l, s.yaml(t))
	r.waitState("isp1", "up", 5*time.Second)
	if err := l.SetLoss(1, 30); err != nil {
		t.Fatal(err)
	}
	r.waitState("isp1", "degraded", 10*time.Second)
	st := r.status()
	for _, w := range st.WANs {
		if w.Name == "isp1" && (w.LossPct < 20 || w.LossPct > 80) {
			t.Errorf("isp1 loss_pct %.1f, want about 50", w.LossPct)
		}
	}
	if strings.Contains(r.proc.Output(), "wan=isp1 from=up to=down") || strings.Contains(r.proc.Output(), "wan=isp1 from=degraded to=down") {
		t.Errorf("isp1 went down under loss:\n%s", r.proc.Output())
	}
	if err := l.SetLoss(1, 0); err != nil {
		t.Fatal(err)
	}
	r.waitState("isp1", "up", 10*time.Second)
}

// TestFlappingSettles: a link flapping every 300 ms for 10 s settles
// without a storm of switches.
func TestFlappingSettles(t *testing.T) {
	l := newLab(t, 2)
	r := startRouter(t, l, healthSetup("").yaml(t))
	r.waitState("isp1", "up", 5*time.Second)
	before := strings.Count(r.proc.Output(), "msg=policy")
	deadline := time.Now().Add(10 * time.Second)
	down := true
	for flaps := 0; time.Now().Before(deadline) && flaps < 40; flaps++ {
		if err := l.SetLinkDown(1, down); err != nil {
			t.Fatal(err)
		}
		down = !down
		time.Sleep(300 * time.Millisecond) // the flapping itself is what is tested
	}
	if err := l.SetLinkDown(1, false); err != nil {
		t.Fatal(err)
	}
	r.waitState("isp1", "up", 10*time.Second)
	switches := strings.Count(r.proc.Output(), "msg=policy") - before
	t.Logf("%d policy switches during 10 s of flapping every 300 ms", switches)
	// Each carrier loss moves new connections off at once (down is never
	// delayed); coming back needs `up` good rounds, and flap damping
	// doubles that after three returns a minute.
	if switches > 14 {
		t.Errorf("%d switches: a storm", switches)
	}
	if got := seenFrom(t, l, lab.NSClient, service); got != isp1Seen {
		t.Errorf("after flapping: seen from %s, want %s", got, isp1Seen)
	}
}

// TestHooks: hooks run with the event in their environment, mwan3-style
// variables included.
func TestHooks(t *testing.T) {
	l := newLab(t, 2)
	dir := t.TempDir()
	hook := filepath.Join(dir, "hook")
	// Written aside and renamed, so that the test never reads a file the
	// hook is still writing.
	script := "#!/bin/sh\nf=\"" + dir + "/event.$MULTIWAN_EVENT.$MULTIWAN_WAN\"\n" +
		"env | grep -E '^(MULTIWAN_|ACTION=|INTERFACE=|DEVICE=)' | sort > \"$f.tmp\" && mv \"$f.tmp\" \"$f\"\n"
	if err := os.WriteFile(hook, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	s := healthSetup("")
	s.extra = "hooks: [" + hook + "]\n"
	r := startRouter(t, l, s.yaml(t))
	r.waitState("isp1", "up", 5*time.Second)
	if err := l.CutUpstream(1); err != nil {
		t.Fatal(err)
	}
	r.waitState("isp1", "down", 5*time.Second)
	read := func(name string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var data []byte
		if err := l.WaitFor(ctx, func() error {
			var err error
			data, err = os.ReadFile(filepath.Join(dir, name))
			return err
		}); err != nil {
			t.Fatalf("hook did not write %s: %v\n%s", name, err, r.proc.Output())
		}
		return string(data)
	}
	down := read("event.down.isp1")
	for _, want := range []string{"MULTIWAN_EVENT=down", "MULTIWAN_WAN=isp1", "MULTIWAN_INTERFACE=wan1",
		"MULTIWAN_STATE=down", "MULTIWAN_PREVIOUS=up", "ACTION=ifdown", "INTERFACE=isp1", "DEVICE=wan1"} {
		if !strings.Contains(down, want+"\n") {
			t.Errorf("down event lacks %s:\n%s", want, down)
		}
	}
	sw := read("event.switch.isp2")
	for _, want := range []string{"MULTIWAN_EVENT=switch", "MULTIWAN_POLICY=failover", "MULTIWAN_ACTIVE=isp2 100%"} {
		if !strings.Contains(sw, want+"\n") {
			t.Errorf("switch event lacks %s:\n%s", want, sw)
		}
	}
}

// TestUseAndAuto: `multiwan use isp2` moves new connections and movable
// flows to ISP2 and keeps an established TCP download on ISP1; status shows
// the override; `use auto` returns to ISP1.
func TestUseAndAuto(t *testing.T) {
	l := newLab(t, 2)
	r := startRouter(t, l, healthSetup(movableUDP).yaml(t))
	r.waitState("isp1", "up", 5*time.Second)
	src := lab.ClientAddr + ":40124"
	dst := fmt.Sprintf("%s:%d", lab.ServiceAddr, lab.UDPEchoPort)
	echo := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		got, err := l.UDPEcho(ctx, lab.NSClient, src, dst)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := echo(); !strings.HasPrefix(got, isp1Seen+":") {
		t.Fatalf("udp before: %q", got)
	}
	finished := startDownload(t, l, 3, 100)
	if out, err := r.cli("use", "isp2"); err != nil {
		t.Fatalf("use isp2: %v\n%s", err, out)
	}
	if got := seenFrom(t, l, lab.NSClient, service); got != isp2Seen {
		t.Errorf("after use isp2: seen from %s", got)
	}
	if got := echo(); !strings.HasPrefix(got, isp2Seen+":") {
		t.Errorf("movable udp after use isp2: %q", got)
	}
	if st := r.status(); st.Override != "isp2" {
		t.Errorf("status override %q", st.Override)
	}
	finished() // the TCP download stayed on ISP1 and completed
	if out, err := r.cli("use", "nope"); err == nil {
		t.Errorf("use nope succeeded: %s", out)
	}
	if out, err := r.cli("use", "auto"); err != nil {
		t.Fatalf("use auto: %v\n%s", err, out)
	}
	if got := seenFrom(t, l, lab.NSClient, service); got != isp1Seen {
		t.Errorf("after use auto: seen from %s", got)
	}
	if st := r.status(); st.Override != "" {
		t.Errorf("status override %q after auto", st.Override)
	}
}

// TestReloadBadConfigChangesNothing: a reload with an invalid file is
// refused with FILE:LINE:COL errors, exits non-zero, and the running state
// (rules, table, status) is exactly as before; a valid one is applied.
func TestReloadBadConfigChangesNothing(t *testing.T) {
	l := newLab(t, 2)
	good := healthSetup("").yaml(t)
	r := startRouter(t, l, good)
	r.waitState("isp1", "up", 5*time.Second)
	table := func() string { return execIn(t, l, lab.NSRouter, "nft", "list", "table", "inet", "multiwan") }
	rulesBefore, tableBefore := ourRules(t, l), table()

	bad := strings.Replace(good, "default_policy: failover", "default_policy: nope\nbogus_key: 1", 1)
	if err := os.WriteFile(r.cfg, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := r.cli("reload")
	if err == nil {
		t.Fatalf("reload of a bad config succeeded:\n%s", out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 2 {
		t.Errorf("want both errors, got:\n%s", out)
	}
	for _, line := range lines {
		if !strings.HasPrefix(line, r.cfg+":") {
			t.Errorf("not FILE:LINE:COL: %q", line)
		}
	}
	if got := ourRules(t, l); strings.Join(got, "\n") != strings.Join(rulesBefore, "\n") {
		t.Errorf("rules changed by a refused reload")
	}
	if table() != tableBefore {
		t.Errorf("nft table changed by a refused reload")
	}
	if got := seenFrom(t, l, lab.NSClient, service); got != isp1Seen {
		t.Errorf("after refused reload: seen from %s", got)
	}

	// A valid change: isp2 preferred.
	swapped := strings.Replace(good, "{wan: isp1, tier: 1}", "{wan: isp1, tier: 3}", 1)
	if err := os.WriteFile(r.cfg, []byte(swapped), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := r.cli("reload"); err != nil {
		t.Fatalf("valid reload: %v\n%s", err, out)
	}
	if got := seenFrom(t, l, lab.NSClient, service); got != isp2Seen {
		t.Errorf("after reload: seen from %s, want %s", got, isp2Seen)
	}
}
