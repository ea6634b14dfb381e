package hooks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// logs records everything logged, for tests to wait on and inspect.
type logs struct {
	mu      sync.Mutex
	recs    []rec
	changed chan struct{} // closed and replaced at every record
}

type rec struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func newLogs() (*logs, *slog.Logger) {
	l := &logs{changed: make(chan struct{})}
	return l, slog.New(handler{l: l})
}

type handler struct {
	l     *logs
	attrs []slog.Attr
}

func (h handler) Enabled(context.Context, slog.Level) bool { return true }
func (h handler) WithGroup(string) slog.Handler            { return h }
func (h handler) WithAttrs(as []slog.Attr) slog.Handler {
	return handler{l: h.l, attrs: append(slices.Clip(h.attrs), as...)}
}

func (h handler) Handle(_ context.Context, r slog.Record) error {
	rc := rec{level: r.Level, msg: r.Message, attrs: map[string]string{}}
	for _, a := range h.attrs {
		rc.attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		rc.attrs[a.Key] = a.Value.String()
		return true
	})
	h.l.mu.Lock()
	h.l.recs = append(h.l.recs, rc)
	close(h.l.changed)
	h.l.changed = make(chan struct{})
	h.l.mu.Unlock()
	return nil
}

// match returns the records with message msg whose attributes include want.
func (l *logs) match(msg string, want map[string]string) []rec {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []rec
next:
	for _, r := range l.recs {
		if r.msg != msg {
			continue
		}
		for k, v := range want {
			if r.attrs[k] != v {
				continue next
			}
		}
		out = append(out, r)
	}
	return out
}

// waitFor waits until a record with message msg and attributes want has
// been logged, and returns it.
func (l *logs) waitFor(t *testing.T, msg string, want map[string]string) rec {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		l.mu.Lock()
		changed := l.changed
		l.mu.Unlock()
		if m := l.match(msg, want); len(m) > 0 {
			return m[0]
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("no log %q %v; have:\n%s", msg, want, l)
		}
	}
}

func (l *logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, r := range l.recs {
		fmt.Fprintf(&b, "%s %s %v\n", r.level, r.msg, r.attrs)
	}
	return b.String()
}

// script writes an executable shell script into a fresh directory.
func script(t *testing.T, name, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func wait(t *testing.T, r *Runner) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Wait(ctx); err != nil {
		t.Fatalf("hooks still running: %v", err)
	}
}

func TestEnvExact(t *testing.T) {
	t.Setenv("PATH", os.Getenv("PATH")+":/multiwan-test-path")
	t.Setenv("MULTIWAN_SECRET", "must not leak")
	// The shell's own initial environment, before it adds PWD and the
	// like: exactly what the hook was given.
	hook := script(t, "env", `tr '\0' '\n' < /proc/$$/environ`+"\n")
	l, log := newLogs()
	var r Runner
	r.Run(context.Background(), log, []string{hook}, 0, Event{Kind: "switch", WAN: "isp1", Interface: "wan1",
		State: "up", Policy: "balanced", Active: "isp1 75%, isp2 25%", Family: "ipv4"})
	wait(t, &r)
	var got []string
	for _, rc := range l.match("hook output", map[string]string{"hook": hook}) {
		got = append(got, rc.attrs["line"])
	}
	want := []string{
		"PATH=" + os.Getenv("PATH"),
		"MULTIWAN_EVENT=switch",
		"MULTIWAN_WAN=isp1",
		"MULTIWAN_INTERFACE=wan1",
		"MULTIWAN_STATE=up",
		"MULTIWAN_PREVIOUS=",
		"MULTIWAN_POLICY=balanced",
		"MULTIWAN_ACTIVE=isp1 75%, isp2 25%",
		"MULTIWAN_FAMILY=ipv4",
		"MULTIWAN_DNS=",
		"MULTIWAN_DNS_USABLE=",
		"MULTIWAN_DNS_LINKS=",
		"MULTIWAN_RESOLV_FILE=",
		"ACTION=switch",
		"INTERFACE=isp1",
		"DEVICE=wan1",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("hook environment:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestEnvAction(t *testing.T) {
	for kind, action := range map[string]string{"up": "ifup", "down": "ifdown", "degraded": "degraded", "switch": "switch"} {
		env := Event{Kind: kind, WAN: "isp2", Interface: "ppp0", State: kind, Previous: "up"}.Env("/bin")
		if !slices.Contains(env, "ACTION="+action) || !slices.Contains(env, "MULTIWAN_EVENT="+kind) ||
			!slices.Contains(env, "INTERFACE=isp2") || !slices.Contains(env, "DEVICE=ppp0") ||
			!slices.Contains(env, "MULTIWAN_PREVIOUS=up") {
			t.Errorf("%s: env %q", kind, env)
		}
	}
	if env := (Event{}).Env(""); env[0] != "PATH="+defaultPath {
		t.Errorf("without a PATH: %q", env[0])
	}
}

func TestTimeout(t *testing.T) {
	// The shell waits for a child: killing only the shell would leave
	// the child running, holding the output pipe.
	hook := script(t, "slow", `sleep 30 &
echo $! > "$0.child"
wait
`)
	l, log := newLogs()
	r := Runner{Timeout: 200 * time.Millisecond}
	start := time.Now()
	r.Run(context.Background(), log, []string{hook}, 0, Event{Kind: "down", WAN: "isp1"})
	wait(t, &r)
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the hook ran %s with a timeout of 200ms", took)
	}
	rc := l.waitFor(t, "hook timed out: killed", map[string]string{"hook": hook, "timeout": "200ms"})
	if rc.level != slog.LevelWarn {
		t.Errorf("timeout logged at %s", rc.level)
	}
	// On a very busy machine the shell may be killed before it forks;
	// TestProcessGroupKilled checks the group kill without a race.
	if b, err := os.ReadFile(hook + ".child"); err == nil {
		checkDead(t, b)
	}
}

// TestProcessGroupKilled ends a hook whose child is known to be running and
// checks that the child dies with it.
func TestProcessGroupKilled(t *testing.T) {
	dir := t.TempDir()
	ready := filepath.Join(dir, "ready")
	if err := syscall.Mkfifo(ready, 0o600); err != nil {
		t.Fatal(err)
	}
	hook := script(t, "slow", fmt.Sprintf(`sleep 30 &
echo $! > %s
wait
`, ready))
	l, log := newLogs()
	var r Runner
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.Run(ctx, log, []string{hook}, 0, Event{Kind: "down", WAN: "isp1"})
	pid := readFIFO(t, ready)
	cancel() // the same kill as a timeout's
	wait(t, &r)
	l.waitFor(t, "hook killed: shutting down", map[string]string{"hook": hook})
	checkDead(t, pid)
}

// readFIFO reads what a hook writes into a named pipe, waiting for it.
func readFIFO(t *testing.T, path string) []byte {
	t.Helper()
	got := make(chan []byte, 1)
	go func() {
		b, _ := os.ReadFile(path) // opening waits for the writer
		got <- b
	}()
	select {
	case b := <-got:
		return b
	case <-time.After(10 * time.Second):
		t.Fatalf("nothing written to %s", path)
		return nil
	}
}

// checkDead fails unless the process whose pid is in b is gone.
func checkDead(t *testing.T, b []byte) {
	t.Helper()
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	// SIGKILL is sent at once, but the child may take a moment to be
	// scheduled and die.
	for deadline := time.Now().Add(5 * time.Second); alive(pid); {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the hook's child %d survived its hook", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alive reports whether pid is a running (not zombie) process.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may contain spaces, the state follows
	// its closing parenthesis.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func TestOutputLogged(t *testing.T) {
	hook := script(t, "talk", "echo first\necho 'second line' >&2\necho third\n")
	l, log := newLogs()
	var r Runner
	r.Run(context.Background(), log, []string{hook}, 0, Event{Kind: "up", WAN: "isp1"})
	wait(t, &r)
	var lines []string
	for _, rc := range l.match("hook output", map[string]string{"hook": hook, "event": "up"}) {
		if rc.level != slog.LevelInfo {
			t.Errorf("output logged at %s", rc.level)
		}
		lines = append(lines, rc.attrs["line"])
	}
	if want := []string{"first", "second line", "third"}; !slices.Equal(lines, want) {
		t.Errorf("output lines %q, want %q", lines, want)
	}
	done := l.waitFor(t, "hook done", map[string]string{"hook": hook})
	if done.level != slog.LevelInfo || done.attrs["exit"] != "0" || done.attrs["took"] == "" {
		t.Errorf("done record %+v", done)
	}
}

func TestOutputBounded(t *testing.T) {
	hook := script(t, "chatty", "head -c 100000 /dev/zero | tr '\\0' a\n")
	l, log := newLogs()
	var r Runner
	r.Run(context.Background(), log, []string{hook}, 0, Event{Kind: "up"})
	wait(t, &r)
	out := l.match("hook output", map[string]string{"hook": hook})
	if len(out) != 1 || len(out[0].attrs["line"]) != maxOutput {
		t.Fatalf("got %d output records, want one of %d bytes", len(out), maxOutput)
	}
	l.waitFor(t, "hook output truncated", map[string]string{"dropped": strconv.Itoa(100000 - maxOutput)})
	l.waitFor(t, "hook done", map[string]string{"hook": hook, "exit": "0"})
}

func TestFailures(t *testing.T) {
	dir := t.TempDir()
	failing := script(t, "fail", "echo oops\nexit 3\n")
	missing := filepath.Join(dir, "missing")
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("#!/bin/sh\necho hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, log := newLogs()
	var r Runner
	r.Run(context.Background(), log, []string{failing, missing, plain}, 0, Event{Kind: "down", WAN: "isp1"})
	wait(t, &r)
	for _, c := range []struct {
		msg  string
		want map[string]string
	}{
		{"hook failed", map[string]string{"hook": failing, "exit": "3"}},
		{"hook output", map[string]string{"hook": failing, "line": "oops"}},
		{"hook could not start", map[string]string{"hook": missing}},
		{"hook could not start", map[string]string{"hook": plain}},
	} {
		rc := l.waitFor(t, c.msg, c.want)
		if c.msg != "hook output" && rc.level != slog.LevelWarn {
			t.Errorf("%s %v logged at %s", c.msg, c.want, rc.level)
		}
	}
}

// TestQueue blocks one hook on its first event, then queues more events
// than the queue holds: the caller never waits, another hook runs
// meanwhile, the oldest queued events are dropped and the rest run in
// order.
func TestQueue(t *testing.T) {
	dir := t.TempDir()
	gate := filepath.Join(dir, "gate")
	if err := syscall.Mkfifo(gate, 0o600); err != nil {
		t.Fatal(err)
	}
	seen := filepath.Join(dir, "seen")
	blocking := script(t, "blocking", fmt.Sprintf(`echo "$MULTIWAN_STATE" >> %s
if [ "$MULTIWAN_STATE" = first ]; then read go < %s; fi
`, seen, gate))
	quick := script(t, "quick", "true\n")
	l, log := newLogs()
	r := Runner{Timeout: 10 * time.Second}
	ctx := context.Background()

	r.Run(ctx, log, []string{blocking, quick}, 0, Event{Kind: "up", State: "first"})
	l.waitFor(t, "hook start", map[string]string{"hook": blocking})
	// Hooks of one event run concurrently: quick is done while blocking
	// still waits.
	l.waitFor(t, "hook done", map[string]string{"hook": quick})

	const events = maxQueue + 4
	var slowest time.Duration
	for i := 1; i <= events; i++ {
		start := time.Now()
		r.Run(ctx, log, []string{blocking}, 0, Event{Kind: "down", State: strconv.Itoa(i)})
		slowest = max(slowest, time.Since(start))
	}
	if slowest > 5*time.Millisecond {
		t.Errorf("Run took %s while a hook was busy", slowest)
	}
	t.Logf("slowest Run while the hook was busy: %s", slowest)

	open := make(chan error, 1)
	go func() {
		f, err := os.OpenFile(gate, os.O_WRONLY, 0) // waits for the reader
		if err == nil {
			_, err = f.WriteString("go\n")
			f.Close()
		}
		open <- err
	}()
	select {
	case err := <-open:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the blocking hook never read its gate")
	}
	wait(t, &r)

	b, err := os.ReadFile(seen)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"first"}
	for i := events - maxQueue + 1; i <= events; i++ {
		want = append(want, strconv.Itoa(i))
	}
	if got := strings.Fields(string(b)); !slices.Equal(got, want) {
		t.Fatalf("hook saw %q, want %q", got, want)
	}
	if drops := l.match("hook busy: dropped its oldest queued event", map[string]string{"hook": blocking}); len(drops) != events-maxQueue {
		t.Fatalf("%d drops logged, want %d", len(drops), events-maxQueue)
	}
}

func TestCancel(t *testing.T) {
	dir := t.TempDir()
	ready := filepath.Join(dir, "ready")
	if err := syscall.Mkfifo(ready, 0o600); err != nil {
		t.Fatal(err)
	}
	hook := script(t, "slow", fmt.Sprintf("echo started > %s\nexec sleep 30\n", ready))
	l, log := newLogs()
	var r Runner
	ctx, cancel := context.WithCancel(context.Background())
	r.Run(ctx, log, []string{hook}, 0, Event{Kind: "up", State: "1"})
	r.Run(ctx, log, []string{hook}, 0, Event{Kind: "up", State: "2"})
	readFIFO(t, ready)
	cancel()
	wait(t, &r)
	l.waitFor(t, "hook killed: shutting down", map[string]string{"hook": hook})
	l.waitFor(t, "hook skipped: shutting down", map[string]string{"hook": hook})
	if n := len(l.match("hook start", nil)); n != 1 {
		t.Fatalf("%d hooks started, want 1", n)
	}
}

func TestWaitBound(t *testing.T) {
	hook := script(t, "slow", "exec sleep 30\n")
	_, log := newLogs()
	r := Runner{Timeout: 500 * time.Millisecond}
	r.Run(context.Background(), log, []string{hook}, 0, Event{Kind: "up"})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := r.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with a running hook: %v", err)
	}
	wait(t, &r) // the timeout ends it
}

func TestPackageRun(t *testing.T) {
	hook := script(t, "hello", "echo \"$MULTIWAN_WAN $ACTION\"\n")
	l, log := newLogs()
	Run(context.Background(), log, []string{hook}, Event{Kind: "down", WAN: "isp2"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := Wait(ctx); err != nil {
		t.Fatal(err)
	}
	l.waitFor(t, "hook output", map[string]string{"hook": hook, "line": "isp2 ifdown"})
}
