package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/multiwan/multiwan/internal/control"
)

// TestCheckExamples runs `multiwan check` on every shipped example.
func TestCheckExamples(t *testing.T) {
	files, err := filepath.Glob("../../examples/*.yaml")
	if err != nil || len(files) < 5 {
		t.Fatalf("examples: %v %v", files, err)
	}
	for _, f := range files {
		var out, errs bytes.Buffer
		if code := run([]string{"check", "-c", f}, &out, &errs); code != 0 || out.String() != "ok\n" {
			t.Errorf("check %s: exit %d, stdout %q, stderr:\n%s", f, code, out.String(), errs.String())
		}
	}
}

func TestCheckReportsEveryError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	bad := `wans:
  - name: isp1
    interface: wan1
    gateway: 192.0.2.300
  - name: isp1
    interface: wan1
    gateway: auto
policies:
  - name: p
    members: [{wan: nope}]
default_policy: p
`
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errs bytes.Buffer
	if code := run([]string{"check", "-c", path}, &out, &errs); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	lines := strings.Split(strings.TrimSpace(errs.String()), "\n")
	if len(lines) < 4 {
		t.Fatalf("want every error (bad gateway, duplicate name, interface reused, unknown WAN), got:\n%s", errs.String())
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, path+":") || strings.Count(l, ":") < 3 {
			t.Errorf("not FILE:LINE:COL: message: %q", l)
		}
	}
	if out.Len() != 0 {
		t.Errorf("stdout %q, want nothing", out.String())
	}
}

func TestPlanDown(t *testing.T) {
	f := "../../examples/seed000-dual-wan-failover.yaml"
	var up, down, errs bytes.Buffer
	if code := run([]string{"plan", "-c", f}, &up, &errs); code != 0 {
		t.Fatalf("plan: exit %d: %s", code, errs.String())
	}
	if code := run([]string{"plan", "-c", f, "--down", "isp1"}, &down, &errs); code != 0 {
		t.Fatalf("plan --down: exit %d: %s", code, errs.String())
	}
	if !strings.Contains(up.String(), "# policy failover: isp1 100%") ||
		!strings.Contains(down.String(), "# policy failover: isp2 100%") {
		t.Fatalf("policy lines wrong:\n%s\n---\n%s", up.String(), down.String())
	}
	for _, want := range []string{"table inet multiwan {", "ip rule add priority 1000 from all lookup main suppress_prefixlength 0", "ip route replace default via 192.0.2.1 dev brwan1 table 101"} {
		if !strings.Contains(up.String(), want) {
			t.Errorf("plan lacks %q", want)
		}
	}
	if code := run([]string{"plan", "-c", f, "--down", "nope"}, &up, &errs); code != 1 {
		t.Errorf("--down nope: exit %d, want 1", code)
	}
}

// fakeDaemon answers the control API like a daemon would.
type fakeDaemon struct {
	mu       sync.Mutex
	status   control.Status
	override string
	reload   error
	past     []control.Event
	live     chan control.Event // closed by the test to end streams
}

func (d *fakeDaemon) Status() control.Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.status
	st.Override = d.override
	return st
}

func (d *fakeDaemon) Use(_ context.Context, wan string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch wan {
	case "auto", "":
		d.override = ""
	case "isp1", "isp2":
		d.override = wan
	default:
		return &control.Refused{Msg: fmt.Sprintf("unknown WAN %q", wan)}
	}
	return nil
}

func (d *fakeDaemon) Reload(context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.reload
}

func (d *fakeDaemon) Subscribe(n int) ([]control.Event, <-chan control.Event, func()) {
	return d.past[max(0, len(d.past)-n):], d.live, func() {}
}

// startDaemon serves d on a socket named in a config file, whose path it
// returns.
func startDaemon(t *testing.T, d *fakeDaemon) string {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "mw.sock")
	cfg := filepath.Join(dir, "multiwan.yaml")
	// Not a valid config: client commands read only the socket from it.
	if err := os.WriteFile(cfg, []byte("control:\n  socket: "+sock+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := control.Listen(sock, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, d, nil) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Serve did not stop")
		}
		srv.Close()
	})
	return cfg
}

func newFakeDaemon() *fakeDaemon {
	return &fakeDaemon{
		status: control.Status{
			WANs: []control.WANStatus{
				{Name: "isp1", Interface: "wan1", State: "down", LossPct: 100, Gateway: "192.0.2.1", Address: "192.0.2.2"},
				{Name: "isp2", Interface: "wan2", State: "up", RTTms: 0.1, Gateway: "192.0.2.65", Address: "192.0.2.66"},
			},
			Policies: []control.PolicyStatus{{Name: "failover", Active: []control.Share{{WAN: "isp2", Share: 1}}}},
		},
		live: make(chan control.Event, 10),
	}
}

func runCmd(args ...string) (code int, stdout, stderr string) {
	var out, errs bytes.Buffer
	code = run(args, &out, &errs)
	return code, out.String(), errs.String()
}

func TestStatusCommand(t *testing.T) {
	d := newFakeDaemon()
	cfg := startDaemon(t, d)
	table := `WAN          STATE  RTT    LOSS  SINCE  GATEWAY     ADDRESS     POLICIES
isp1 (wan1)  down   -      100%  -      192.0.2.1   192.0.2.2   -
isp2 (wan2)  up     0.1ms  0%    -      192.0.2.65  192.0.2.66  failover

policy failover: isp2 100%
override: none (automatic)
`
	if code, out, errs := runCmd("status", "-c", cfg); code != 0 || out != table || errs != "" {
		t.Errorf("status: exit %d, stdout:\n%s\nwant:\n%s\nstderr: %s", code, out, table, errs)
	}

	code, out, errs := runCmd("status", "-c", cfg, "--json")
	if code != 0 || errs != "" {
		t.Fatalf("status --json: exit %d: %s", code, errs)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if _, ok := st["wans"]; !ok || st["override"] != "" || !strings.HasPrefix(out, "{\n  \"wans\": [\n") {
		t.Errorf("status --json:\n%s", out)
	}

	// Problems of the daemon itself come after the override.
	at := time.Now().Add(-2 * time.Second)
	d.mu.Lock()
	d.status.Daemon = &control.DaemonStatus{Config: cfg, ApplyError: "nft: busy", ApplyFailures: 3, ApplyErrorAt: &at}
	d.mu.Unlock()
	if code, out, _ := runCmd("status", "-c", cfg); code != 0 || !strings.HasSuffix(out, "override: none (automatic)\napply: FAILED 3 times, last 2s ago: nft: busy\n") {
		t.Errorf("status with a failing apply: exit %d:\n%s", code, out)
	}
}

func TestUseCommand(t *testing.T) {
	d := newFakeDaemon()
	cfg := startDaemon(t, d)
	for _, tc := range []struct {
		args         []string
		code         int
		stdout, errs string
	}{
		{[]string{"isp2"}, 0, "new connections prefer isp2; established TCP connections stay where they are\n", ""},
		{[]string{"auto"}, 0, "automatic choice restored\n", ""},
		{[]string{"nope"}, 1, "", "multiwan use: unknown WAN \"nope\"\n"},
		{nil, 2, "", "usage: multiwan use [-c FILE] WAN|auto\n"},
		{[]string{"a", "b"}, 2, "", "usage: multiwan use [-c FILE] WAN|auto\n"},
	} {
		code, out, errs := runCmd(append([]string{"use", "-c", cfg}, tc.args...)...)
		if code != tc.code || out != tc.stdout || errs != tc.errs {
			t.Errorf("use %v: exit %d, stdout %q, stderr %q; want %d, %q, %q", tc.args, code, out, errs, tc.code, tc.stdout, tc.errs)
		}
	}
	if code, out, _ := runCmd("use", "-c", cfg, "isp1"); code != 0 || d.Status().Override != "isp1" {
		t.Errorf("use isp1: exit %d, %q; override %q", code, out, d.Status().Override)
	}
}

func TestReloadCommand(t *testing.T) {
	d := newFakeDaemon()
	cfg := startDaemon(t, d)
	if code, out, errs := runCmd("reload", "-c", cfg); code != 0 || out != "reloaded\n" || errs != "" {
		t.Errorf("reload: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	lines := "/etc/multiwan/multiwan.yaml:3:5: unknown key \"wnas\"\n/etc/multiwan/multiwan.yaml:12:14: policy \"failover\": unknown WAN \"isp3\""
	d.mu.Lock()
	d.reload = &control.Refused{Msg: lines}
	d.mu.Unlock()
	if code, out, errs := runCmd("reload", "-c", cfg); code != 1 || out != "" || errs != lines+"\n" {
		t.Errorf("refused reload: exit %d, stdout %q, stderr:\n%s\nwant:\n%s", code, out, errs, lines)
	}
}

func TestNoDaemon(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "none.sock")
	cfg := filepath.Join(dir, "multiwan.yaml")
	if err := os.WriteFile(cfg, []byte("control:\n  socket: "+sock+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	want := "multiwan: no multiwan daemon answers on " + sock + ": no such file or directory\n"
	for _, args := range [][]string{{"status"}, {"status", "--json"}, {"use", "isp1"}, {"reload"}, {"events"}} {
		var code int
		var out, errs string
		if args[0] == "events" {
			var o, e bytes.Buffer
			code = eventsUntil(context.Background(), []string{"-c", cfg}, &o, &e)
			out, errs = o.String(), e.String()
		} else {
			code, out, errs = runCmd(append([]string{args[0], "-c", cfg}, args[1:]...)...)
		}
		if code != 1 || out != "" || errs != want {
			t.Errorf("%v without a daemon: exit %d, stdout %q, stderr %q", args, code, out, errs)
		}
	}
}

func TestEventsCommand(t *testing.T) {
	d := newFakeDaemon()
	at := time.Date(2026, 3, 4, 15, 0, 0, 0, time.UTC)
	d.past = []control.Event{
		{Time: at, Kind: "start", Message: "multiwan started"},
		{Time: at.Add(time.Second), Kind: "state", WAN: "isp1", Message: "isp1 up → down: 3 rounds failed"},
	}
	d.live <- control.Event{Time: at.Add(2 * time.Second), Kind: "switch", Policy: "failover", Message: "policy failover: isp2 100%"}
	close(d.live) // then the daemon ends the stream
	cfg := startDaemon(t, d)

	var out, errs bytes.Buffer
	code := eventsUntil(context.Background(), []string{"-c", cfg, "--past", "1"}, &out, &errs)
	stamp := func(d time.Duration) string { return at.Add(d).Local().Format("2006-01-02 15:04:05") }
	want := stamp(time.Second) + "  state            isp1 up → down: 3 rounds failed\n" +
		stamp(2*time.Second) + "  switch           policy failover: isp2 100%\n"
	if code != 1 || out.String() != want || errs.String() != "multiwan events: the daemon ended the stream\n" {
		t.Errorf("events: exit %d, stdout:\n%s\nwant:\n%s\nstderr: %s", code, out.String(), want, errs.String())
	}

	out.Reset()
	errs.Reset()
	eventsUntil(context.Background(), []string{"-c", cfg, "--json", "--past", "5"}, &out, &errs)
	if lines := strings.Split(strings.TrimSpace(out.String()), "\n"); len(lines) != 2 ||
		lines[0] != `{"time":"2026-03-04T15:00:00Z","kind":"start","message":"multiwan started"}` {
		t.Errorf("events --json:\n%s", out.String())
	}

	if code := eventsUntil(context.Background(), []string{"-c", cfg, "extra"}, &out, &errs); code != 2 {
		t.Errorf("events with an argument: exit %d", code)
	}
}

// TestPositionalArgumentsRefused: `multiwan check new.yaml` used to check
// the default config and could say ok about the wrong file.
func TestPositionalArgumentsRefused(t *testing.T) {
	for _, args := range [][]string{
		{"check", "new.yaml"},
		{"plan", "-c", "../../examples/dual-stack.yaml", "extra"},
		{"run", "/etc/multiwan/new.yaml"},
		{"status", "now"},
		{"reload", "new.yaml"},
	} {
		var out, errs bytes.Buffer
		code := run(args, &out, &errs)
		if code != 2 || out.Len() != 0 || !strings.Contains(errs.String(), "unexpected argument") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out.String(), errs.String())
		}
		if strings.HasSuffix(args[len(args)-1], ".yaml") && !strings.Contains(errs.String(), "-c "+args[len(args)-1]) {
			t.Errorf("%v: no hint to use -c: %q", args, errs.String())
		}
	}
}

// TestCheckWarnsAboutGaps: a valid config with a WAN that probes only its
// gateway is ok, with a warning at that WAN.
func TestCheckWarnsAboutGaps(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gw.yaml")
	if err := os.WriteFile(path, []byte(`wans:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, probe: {targets: [203.0.113.20]}}
  - {name: isp2, interface: wan2, gateway: 198.51.100.1}
policies: [{name: p, members: [{wan: isp1}, {wan: isp2, tier: 2}]}]
default_policy: p
`), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errs bytes.Buffer
	if code := run([]string{"check", "-c", path}, &out, &errs); code != 0 || out.String() != "ok\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out.String(), errs.String())
	}
	if want := path + ":3:6: warning: isp2: probes only its gateway"; !strings.HasPrefix(errs.String(), want) || strings.Count(errs.String(), "\n") != 1 {
		t.Fatalf("stderr %q, want one line starting %q", errs.String(), want)
	}
}

// TestStatusWatch: --watch redraws the table until interrupted.
func TestStatusWatch(t *testing.T) {
	d := newFakeDaemon()
	cfg := startDaemon(t, d)
	ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
	defer cancel()
	var out, errs bytes.Buffer
	if code := statusUntil(ctx, []string{"-c", cfg, "--watch"}, &out, &errs, 50*time.Millisecond); code != 0 {
		t.Fatalf("exit %d: %s", code, errs.String())
	}
	if n := strings.Count(out.String(), "\x1b[H\x1b[2J"); n < 2 || strings.Count(out.String(), "policy failover: isp2 100%") != n {
		t.Fatalf("%d redraws:\n%q", n, out.String())
	}
	var errs2 bytes.Buffer
	if code := statusUntil(ctx, []string{"-c", cfg, "--watch", "--json"}, &out, &errs2, time.Second); code != 2 {
		t.Fatalf("--watch --json: exit %d", code)
	}
}
