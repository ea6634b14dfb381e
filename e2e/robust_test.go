package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multiwan/multiwan/internal/lab"
)

// The control plane left alone for months: other programs break its
// state, it is killed, reloaded in storms, probed by hostile clients and
// given abusive hooks.

// stateOf is what of multiwan's kernel state a repair must bring back:
// its ip rules and routes, and its nft table as nft lists it.
type stateOf struct {
	rules, routes []string
	table         string
}

func kernelState(t *testing.T, l *lab.Lab) stateOf {
	t.Helper()
	var s stateOf
	s.rules = ourRules(t, l)
	for _, line := range strings.Split(execIn(t, l, lab.NSRouter, "ip", "route", "show", "table", "all", "proto", "77"), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			s.routes = append(s.routes, line)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, _ := l.Exec(ctx, lab.NSRouter, "nft", "list", "table", "inet", "multiwan")
	s.table = string(out)
	return s
}

func (s stateOf) equal(o stateOf) bool {
	return slices.Equal(s.rules, o.rules) && slices.Equal(s.routes, o.routes) && s.table == o.table
}

// TestRepairs: `nft flush ruleset`, deleted rules (what systemd-networkd
// does on restart) and a flushed WAN table are each put back within 1 s,
// by notification, while an established download survives all three.
func TestRepairs(t *testing.T) {
	l := newLab(t, 2)
	s := setup{isps: 2, probe: fastProbe, policies: failover12, deflt: "failover"}
	r := startRouter(t, l, s.yaml(t))
	r.waitState("isp1", "up", 10*time.Second)
	want := kernelState(t, l)
	if len(want.rules) == 0 || len(want.routes) == 0 || !strings.Contains(want.table, "chain steer") {
		t.Fatalf("nothing installed: %+v", want)
	}
	finished := startDownload(t, l, 8, 100)

	var prios []string
	for _, rule := range want.rules {
		prios = append(prios, strings.TrimSuffix(strings.Fields(rule)[0], ":"))
	}
	breakers := []struct {
		name string
		argv [][]string
	}{
		{"nft flush ruleset", [][]string{{"nft", "flush", "ruleset"}}},
		{"nft flush table inet multiwan", [][]string{{"nft", "flush", "table", "inet", "multiwan"}}},
		// In one burst, as systemd-networkd does when it restarts.
		{"every multiwan ip rule deleted", func() [][]string {
			script := ""
			for _, p := range prios {
				script += "ip rule del priority " + p + "; "
			}
			return [][]string{{"sh", "-c", script}}
		}()},
		{"ip route flush table 101", [][]string{{"ip", "route", "flush", "table", "101"}}},
	}
	for _, b := range breakers {
		repairs := strings.Count(r.proc.Output(), "repaired state another program removed")
		start := time.Now()
		for _, argv := range b.argv {
			execIn(t, l, lab.NSRouter, argv...)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := l.WaitFor(ctx, func() error {
			if got := kernelState(t, l); !got.equal(want) {
				return fmt.Errorf("not repaired: %+v", got)
			}
			return nil
		})
		cancel()
		took := time.Since(start)
		if err != nil {
			t.Fatalf("%s: %v\n%s", b.name, err, r.proc.Output())
		}
		t.Logf("%s: repaired within %v", b.name, took.Round(time.Millisecond))
		if took > time.Second {
			t.Errorf("%s: repaired after %v, want within 1 s", b.name, took)
		}
		// Logged only when something had to be put back: this also
		// proves the breaker broke something.
		ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
		err = l.WaitFor(ctx, func() error {
			if n := strings.Count(r.proc.Output(), "repaired state another program removed"); n <= repairs {
				return fmt.Errorf("no repair logged")
			}
			return nil
		})
		cancel()
		if err != nil {
			t.Errorf("%s: %v", b.name, err)
		}
		if got := seenFrom(t, l, lab.NSClient, service); got != isp1Seen {
			t.Errorf("%s: after the repair new connections are seen from %s, want %s", b.name, got, isp1Seen)
		}
	}
	st := r.status()
	_ = st
	finished()
}

// repairBurstE2E is the daemon's repairBurst: repairs within a minute
// before it slows down.
const repairBurstE2E = 10

// TestRepairsBackOffAgainstALoop: a program deleting the table in a tight
// loop is not fought at full speed: the daemon slows its repairs and says
// so, and repairs at once again when it stops.
func TestRepairsBackOffAgainstALoop(t *testing.T) {
	l := newLab(t, 2)
	r := startRouter(t, l, labConfig(t, 2, failover12, "", "failover"))
	deadline := time.Now().Add(15 * time.Second)
	deletions := 0
	for deletions < 3*repairBurstE2E && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if _, err := l.Exec(ctx, lab.NSRouter, "nft", "delete", "table", "inet", "multiwan"); err == nil {
			deletions++
		}
		cancel()
		time.Sleep(20 * time.Millisecond)
	}
	out := r.proc.Output()
	repairs := strings.Count(out, "repaired state another program removed")
	t.Logf("%d deletions, %d repairs", deletions, repairs)
	if !strings.Contains(out, "something keeps removing multiwan's state") {
		t.Fatalf("the daemon did not say it slows repairs down:\n%s", out)
	}
	if repairs > repairBurstE2E+5 {
		t.Errorf("%d repairs for %d deletions: not slowed down", repairs, deletions)
	}
	var st struct {
		Daemon struct {
			RepairBackoff string `json:"repair_backoff"`
		} `json:"daemon"`
	}
	r.statusInto(&st)
	if !strings.Contains(st.Daemon.RepairBackoff, "nft table removed") {
		t.Errorf("status does not show the slowed repairs: %+v", st)
	}
	// The table comes back once the loop stopped (the next delayed repair).
	ctx, cancel := context.WithTimeout(context.Background(), 70*time.Second)
	defer cancel()
	if err := l.WaitFor(ctx, func() error {
		if !strings.Contains(execIn(t, l, lab.NSRouter, "nft", "list", "tables"), "table inet multiwan") {
			return fmt.Errorf("table still missing")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestKill9Cycles: fifteen kill -9 and restarts during a download; each
// restart adopts the state without duplicates, the download completes, and
// the final stop restores the sysctls as they were before multiwan first
// ran — which only the state file, not memory, still knows.
func TestKill9Cycles(t *testing.T) {
	l := newLab(t, 2)
	sysctls := []string{"net/ipv4/conf/wan1/rp_filter", "net/ipv4/fwmark_reflect", "net/ipv4/tcp_fwmark_accept"}
	read := func() []string {
		var vals []string
		for _, k := range sysctls {
			vals = append(vals, strings.TrimSpace(execIn(t, l, lab.NSRouter, "cat", "/proc/sys/"+k)))
		}
		return vals
	}
	execIn(t, l, lab.NSRouter, "sysctl", "-qw", "net.ipv4.conf.wan1.rp_filter=1", "net.ipv4.fwmark_reflect=0", "net.ipv4.tcp_fwmark_accept=0")
	before := read()
	r := startRouter(t, l, labConfig(t, 2, failover12, "", "failover"))
	want := kernelState(t, l)
	if changed := read(); slices.Equal(changed, before) {
		t.Fatalf("multiwan changed none of %v", sysctls)
	}
	finished := startDownload(t, l, 15, 100)
	for i := range 15 {
		r.kill9()
		r.start()
		if got := kernelState(t, l); !got.equal(want) {
			t.Fatalf("cycle %d: the adopted state differs:\n%+v\nwant\n%+v", i, got, want)
		}
		if n := strings.Count(execIn(t, l, lab.NSRouter, "nft", "list", "tables"), "table inet multiwan\n"); n != 1 {
			t.Fatalf("cycle %d: %d multiwan tables", i, n)
		}
	}
	finished()
	if got := seenFrom(t, l, lab.NSClient, service); got != isp1Seen {
		t.Fatalf("after 15 restarts: seen from %s, want %s", got, isp1Seen)
	}
	r.stop()
	r.assertClean()
	if after := read(); !slices.Equal(after, before) {
		t.Errorf("sysctls after the final stop %v, want them as before the first run %v", after, before)
	}
}

// TestReloadStorm: 100 reloads alternating good and bad configs, half of
// them by SIGHUP, while the daemon probes and serves status. Bad ones are
// refused with their FILE:LINE:COL errors and change nothing; the daemon
// ends in the last good config's state with no more open files than it
// started with.
func TestReloadStorm(t *testing.T) {
	l := newLab(t, 2)
	s := setup{isps: 2, probe: fastProbe, policies: failover12 + balanced11, deflt: "failover"}
	good := s.yaml(t)
	r := startRouter(t, l, good)
	r.waitState("isp1", "up", 10*time.Second)
	other := strings.Replace(good, "default_policy: failover", "default_policy: balanced", 1)
	bad := good + "bogus_key: 1\n"
	fds := func() int {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", r.daemonPid()))
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	fdsBefore := fds()
	refusals := 0
	for i := range 100 {
		text := []string{other, bad, good, bad}[i%4]
		if err := os.WriteFile(r.cfg, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if err := r.proc.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			continue
		}
		out, err := r.cli("reload")
		if text == bad {
			if err == nil || !regexp.MustCompile(`multiwan.yaml:\d+:\d+: `).MatchString(out) {
				t.Fatalf("reload %d of a bad config: %v\n%s", i, err, out)
			}
			refusals++
		} else if err != nil {
			t.Fatalf("reload %d: %v\n%s", i, err, out)
		}
	}
	// A SIGHUP reload reads the file whenever it gets to it; the last word
	// is a reload of the good config that the CLI waits for.
	if err := os.WriteFile(r.cfg, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := r.cli("reload"); err != nil {
		t.Fatalf("final reload: %v\n%s", err, out)
	}
	final := r.status()
	if final.state("isp1") != "up" || len(final.Policies) == 0 {
		t.Fatalf("after the storm: %+v", final)
	}
	if !strings.Contains(r.proc.Output(), "reload refused") {
		t.Error("no refusal logged")
	}
	if got := seenFrom(t, l, lab.NSClient, service); got != isp1Seen {
		t.Errorf("after the storm: seen from %s, want %s (failover)", got, isp1Seen)
	}
	if after := fds(); after > fdsBefore+4 {
		t.Errorf("open files grew from %d to %d over 100 reloads", fdsBefore, after)
	}
	t.Logf("100 reloads (%d refused by the CLI, 50 by SIGHUP), fds %d → %d", refusals, fdsBefore, fds())
}

const balanced11 = `  - name: balanced
    members:
      - {wan: isp1}
      - {wan: isp2}
`

// TestHostileControlClients: 300 connections that send nothing, a
// slowloris and garbage do not keep `multiwan status` from answering
// within a second, nor `use` from working.
func TestHostileControlClients(t *testing.T) {
	l := newLab(t, 2)
	r := startRouter(t, l, labConfig(t, 2, failover12, "", "failover"))
	sock := r.socket()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 300 {
		c, err := net.DialTimeout("unix", sock, 2*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	slow, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	go func() {
		for _, b := range []byte("GET /v1/status HTTP/1.1\r\nHost: x\r\n") {
			if _, err := slow.Write([]byte{b}); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	for _, junk := range []string{"\x00\x01\x02garbage\r\n\r\n", "GET / HTTP/0.9\r\n\r\n", strings.Repeat("A", 1<<20)} {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Write([]byte(junk))
			c.Close()
		}
	}
	for i := range 5 {
		start := time.Now()
		out, err := r.cli("status")
		took := time.Since(start)
		if err != nil {
			t.Fatalf("status %d with 300 idle connections open: %v\n%s", i, err, out)
		}
		t.Logf("status %d answered in %v with 300 idle connections open", i, took.Round(time.Millisecond))
		// The CLI's own process start and `ip netns exec` are in it too.
		if took > time.Second {
			t.Errorf("status took %v", took)
		}
	}
	if out, err := r.cli("use", "isp2"); err != nil {
		t.Fatalf("use isp2: %v\n%s", err, out)
	}
	eventually(t, l, lab.NSClient, service, lab.ISPPublicAddr(2), 5*time.Second)
}

// TestAbusiveHooks: hooks that flood output, never exit, leave a child
// holding their pipe, or fail, delay no switch, are killed at their
// timeout with their children, and leave no zombie behind.
func TestAbusiveHooks(t *testing.T) {
	l := newLab(t, 2)
	dir := t.TempDir()
	hook := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	hooks := []string{
		hook("flood", "yes 'multiwan hook flood'"),
		hook("forever", "sleep 3600"),
		hook("escape", "(sleep 3599 &) ; exit 0"),
		hook("fail", "echo failing >&2; exit 3"),
		hook("stdin", "cat"),
	}
	s := healthSetup("")
	s.extra = "hooks: [" + strings.Join(hooks, ", ") + "]\nhook_timeout: 2s\n"
	r := startRouter(t, l, s.yaml(t))
	r.waitState("isp1", "up", 10*time.Second)
	if err := l.CutUpstream(1); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	eventually(t, l, lab.NSClient, service, lab.ISPPublicAddr(2), 5*time.Second)
	t.Logf("switched to isp2 %v after the cut, with five abusive hooks", time.Since(start).Round(time.Millisecond))
	if err := l.RestoreUpstream(1); err != nil {
		t.Fatal(err)
	}
	eventually(t, l, lab.NSClient, service, isp1Seen, 10*time.Second)
	// Four events (down, switch, up, switch) for each hook, each run of
	// the stuck ones killed after 2 s: then everything a hook started is
	// gone.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pid := r.daemonPid()
	if err := l.WaitFor(ctx, func() error {
		if kids := descendants(pid); len(kids) > 0 {
			return fmt.Errorf("the daemon still has children: %v", kids)
		}
		// Not a child any more: it was reparented when its hook exited.
		if leftover := execIn(t, l, lab.NSRouter, "sh", "-c", "pgrep -f 'sleep [3]599' || true"); strings.TrimSpace(leftover) != "" {
			return fmt.Errorf("a process a hook left in the background still runs: %s", leftover)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if rss := rssKB(pid); rss > 80<<10 {
		t.Errorf("daemon RSS %d KB after flooding hooks", rss)
	}
	out := r.proc.Output()
	for _, want := range []string{"killed", "exit status 3"} {
		if !strings.Contains(out, want) {
			t.Errorf("the log does not say %q about the hooks", want)
		}
	}
	if n := strings.Count(out, "multiwan hook flood"); n > 20000 {
		t.Errorf("%d lines of flood output logged: not bounded", n)
	}
}

// descendants lists the processes below pid (children, and theirs), with
// their state, zombies included.
func descendants(pid int) []string {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	parent := map[int]int{}
	state := map[int]string{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parens.
		rest := string(b[strings.LastIndexByte(string(b), ')')+2:])
		f := strings.Fields(rest)
		if len(f) < 2 {
			continue
		}
		pp, _ := strconv.Atoi(f[1])
		parent[p], state[p] = pp, f[0]
	}
	var out []string
	for p := range parent {
		for q := parent[p]; q > 1; q = parent[q] {
			if q == pid {
				out = append(out, fmt.Sprintf("%d(%s)", p, state[p]))
				break
			}
		}
	}
	return out
}

func rssKB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	return 0
}
