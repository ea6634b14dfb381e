package kernel

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/multiwan/multiwan/internal/plan"
)

// fakeProcSys lays out files as /proc/sys has them, under a temporary
// directory.
func fakeProcSys(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for key, value := range files {
		path := filepath.Join(root, key)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(value+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func readKey(t *testing.T, root, key string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, key))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// logRecords captures what is logged, as decoded JSON records.
type logRecords struct{ buf bytes.Buffer }

func (l *logRecords) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(&l.buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (l *logRecords) all(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(l.buf.String()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		out = append(out, rec)
	}
	l.buf.Reset()
	return out
}

const (
	forward   = "net/ipv4/ip_forward"
	rpFilter  = "net/ipv4/conf/wan1/rp_filter"
	validMark = "net/ipv4/conf/wan1/src_valid_mark"
)

func TestSysctlsApplyAndRestore(t *testing.T) {
	root := fakeProcSys(t, map[string]string{forward: "0", rpFilter: "1", validMark: "1"})
	s := &Sysctls{Root: root}
	var logs logRecords
	desired := []plan.Sysctl{
		{Key: forward, Value: "1", Comment: "routing between LAN and WANs"},
		{Key: rpFilter, Value: "2", Comment: "replies leave by their WAN"},
		{Key: validMark, Value: "1", Comment: "rp_filter sees the fwmark"},
	}
	if err := s.Apply(desired, logs.logger()); err != nil {
		t.Fatal(err)
	}
	if readKey(t, root, forward) != "1" || readKey(t, root, rpFilter) != "2" || readKey(t, root, validMark) != "1" {
		t.Fatal("values not written")
	}
	recs := logs.all(t)
	if len(recs) != 2 {
		t.Fatalf("logged %d records, want one per change (2): %v", len(recs), recs)
	}
	want := map[string]any{"level": "INFO", "msg": "sysctl set", "key": rpFilter, "from": "1", "to": "2", "reason": "replies leave by their WAN"}
	for k, v := range want {
		if recs[1][k] != v {
			t.Errorf("log record %v: %s = %v, want %v", recs[1], k, recs[1][k], v)
		}
	}

	// Applying again changes and logs nothing, and does not take the
	// values it set for originals.
	if err := s.Apply(desired, logs.logger()); err != nil {
		t.Fatal(err)
	}
	if recs := logs.all(t); len(recs) != 0 {
		t.Errorf("second Apply logged %v", recs)
	}

	if err := s.Restore(logs.logger()); err != nil {
		t.Fatal(err)
	}
	if readKey(t, root, forward) != "0" || readKey(t, root, rpFilter) != "1" || readKey(t, root, validMark) != "1" {
		t.Errorf("not restored: ip_forward=%s rp_filter=%s", readKey(t, root, forward), readKey(t, root, rpFilter))
	}
	// Restored in reverse order of change.
	recs = logs.all(t)
	if len(recs) != 2 || recs[0]["key"] != rpFilter || recs[1]["key"] != forward {
		t.Errorf("restore log = %v", recs)
	}
	// A second Restore has nothing left to do.
	if err := s.Restore(logs.logger()); err != nil || len(logs.all(t)) != 0 {
		t.Errorf("second Restore: %v", err)
	}
}

func TestSysctlsKeepFirstOriginal(t *testing.T) {
	root := fakeProcSys(t, map[string]string{rpFilter: "1"})
	s := &Sysctls{Root: root}
	for _, v := range []string{"2", "0"} {
		if err := s.Apply([]plan.Sysctl{{Key: rpFilter, Value: v}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Restore(nil); err != nil {
		t.Fatal(err)
	}
	if got := readKey(t, root, rpFilter); got != "1" {
		t.Errorf("restored rp_filter=%s, want the first original 1", got)
	}
}

func TestSysctlsMissingInterface(t *testing.T) {
	root := fakeProcSys(t, map[string]string{forward: "1"})
	s := &Sysctls{Root: root}
	var logs logRecords
	err := s.Apply([]plan.Sysctl{{Key: rpFilter, Value: "2"}, {Key: forward, Value: "1"}}, logs.logger())
	if err != nil {
		t.Fatalf("a missing interface is fatal: %v", err)
	}
	recs := logs.all(t)
	if len(recs) != 1 || recs[0]["level"] != "WARN" || recs[0]["key"] != rpFilter {
		t.Errorf("log = %v, want one warning about %s", recs, rpFilter)
	}
	if _, err := os.Stat(filepath.Join(root, rpFilter)); err == nil {
		t.Error("Apply created a sysctl file")
	}

	// A missing global key is an error: the kernel lacks a feature.
	if err := s.Apply([]plan.Sysctl{{Key: "net/ipv4/conf/all/rp_filter", Value: "0"}}, nil); err == nil {
		t.Error("a missing global key is not an error")
	}
}

func TestSysctlsRestoreSkipsVanishedInterface(t *testing.T) {
	root := fakeProcSys(t, map[string]string{forward: "0", rpFilter: "1"})
	s := &Sysctls{Root: root}
	if err := s.Apply([]plan.Sysctl{{Key: forward, Value: "1"}, {Key: rpFilter, Value: "2"}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(root, "net/ipv4/conf/wan1")); err != nil {
		t.Fatal(err)
	}
	if err := s.Restore(nil); err != nil {
		t.Fatalf("Restore with a vanished interface: %v", err)
	}
	if got := readKey(t, root, forward); got != "0" {
		t.Errorf("ip_forward=%s after Restore, want 0", got)
	}
}

func TestSysctlsRestoreWhatIsNoLongerDesired(t *testing.T) {
	root := fakeProcSys(t, map[string]string{forward: "0", rpFilter: "1"})
	s := &Sysctls{Root: root}
	if err := s.Apply([]plan.Sysctl{{Key: forward, Value: "1"}, {Key: rpFilter, Value: "2"}}, nil); err != nil {
		t.Fatal(err)
	}
	// wan1 removed from the config by a reload.
	if err := s.Apply([]plan.Sysctl{{Key: forward, Value: "1"}}, nil); err != nil {
		t.Fatal(err)
	}
	if got := readKey(t, root, rpFilter); got != "1" {
		t.Errorf("rp_filter=%s after wan1 left the plan, want 1 again", got)
	}
	if err := s.Restore(nil); err != nil {
		t.Fatal(err)
	}
	if got := readKey(t, root, forward); got != "0" {
		t.Errorf("ip_forward=%s after Restore, want 0", got)
	}
}

func TestSysctlsMultiValueAndBadKeys(t *testing.T) {
	const ports = "net/ipv4/ip_local_port_range"
	root := fakeProcSys(t, map[string]string{ports: "32768\t60999"})
	s := &Sysctls{Root: root}
	var logs logRecords
	if err := s.Apply([]plan.Sysctl{{Key: ports, Value: "32768 60999"}}, logs.logger()); err != nil {
		t.Fatal(err)
	}
	if recs := logs.all(t); len(recs) != 0 {
		t.Errorf("an equal tab-separated value was rewritten: %v", recs)
	}
	for _, key := range []string{"../etc/passwd", "/etc/passwd", "", "net/../../x"} {
		if err := s.Apply([]plan.Sysctl{{Key: key, Value: "1"}}, nil); err == nil {
			t.Errorf("key %q accepted", key)
		}
	}
}

func TestPerInterface(t *testing.T) {
	for key, want := range map[string]bool{
		"net/ipv4/conf/wan1/rp_filter":        true,
		"net/ipv6/conf/wan1/accept_ra":        true,
		"net/ipv4/neigh/wan1/gc_stale_time":   true,
		"net/ipv4/conf/all/rp_filter":         false,
		"net/ipv4/conf/default/rp_filter":     false,
		"net/ipv4/ip_forward":                 false,
		"net/ipv4/tcp_fwmark_accept":          false,
		"kernel/conf/wan1/something/whatever": false,
	} {
		if got := perInterface(key); got != want {
			t.Errorf("perInterface(%q) = %v, want %v", key, got, want)
		}
	}
}

// TestSysctlLoosen: a reverse-path filter is only changed when it is strict,
// on the interface or through `all`; off stays off.
func TestSysctlLoosen(t *testing.T) {
	const key = "net/ipv4/conf/wan1/rp_filter"
	for _, c := range []struct {
		iface, all, want string
	}{
		{"0", "0", "0"},
		{"2", "0", "2"},
		{"1", "0", "2"},
		{"0", "1", "2"},
		{"0", "2", "0"},
	} {
		root := fakeProcSys(t, map[string]string{key: c.iface, "net/ipv4/conf/all/rp_filter": c.all})
		s := Sysctls{Root: root}
		if err := s.Apply([]plan.Sysctl{{Key: key, Value: "2", Loosen: true}}, nil); err != nil {
			t.Fatal(err)
		}
		if got := readKey(t, root, key); got != c.want {
			t.Errorf("iface %s all %s: rp_filter %s, want %s", c.iface, c.all, got, c.want)
		}
	}
}

// stateFile is a state file path in a directory that does not exist yet,
// as /run/multiwan after a reboot.
func stateFile(t *testing.T) string {
	return filepath.Join(t.TempDir(), "run", "multiwan", "sysctl.json")
}

// TestSysctlsStateSurvivesKill: a run killed with -9 never restores; the
// next run's Restore puts back what was there before the first run.
func TestSysctlsStateSurvivesKill(t *testing.T) {
	root := fakeProcSys(t, map[string]string{forward: "0", rpFilter: "1", validMark: "0"})
	state := stateFile(t)
	desired := []plan.Sysctl{{Key: forward, Value: "1"}, {Key: rpFilter, Value: "2"}, {Key: validMark, Value: "1"}}

	first := &Sysctls{Root: root, StateFile: state}
	if err := first.Apply(desired, nil); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(state)
	if err != nil {
		t.Fatalf("no state file after changes: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", fi.Mode().Perm())
	}
	if di, err := os.Stat(filepath.Dir(state)); err != nil || di.Mode().Perm() != 0o755 {
		t.Errorf("state directory: %v, %v; want mode 0755", di.Mode().Perm(), err)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(state), ".*")); len(leftovers) != 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
	// first is killed: no Restore. The next run finds the changed values
	// and, without the file, would take them for the originals.
	second := &Sysctls{Root: root, StateFile: state}
	var logs logRecords
	if err := second.Apply(desired, logs.logger()); err != nil {
		t.Fatal(err)
	}
	recs := logs.all(t)
	if len(recs) != 1 || recs[0]["msg"] != "sysctl originals recovered from an earlier run that did not stop cleanly" {
		t.Errorf("second run logged %v, want one record of the recovery", recs)
	}
	if err := second.Restore(logs.logger()); err != nil {
		t.Fatal(err)
	}
	if readKey(t, root, forward) != "0" || readKey(t, root, rpFilter) != "1" || readKey(t, root, validMark) != "0" {
		t.Errorf("not restored to the values before the first run: ip_forward=%s rp_filter=%s src_valid_mark=%s",
			readKey(t, root, forward), readKey(t, root, rpFilter), readKey(t, root, validMark))
	}
	recs = logs.all(t)
	if len(recs) != 3 || recs[0]["key"] != validMark || recs[2]["key"] != forward {
		t.Errorf("restore log %v, want three restores in reverse order of the first run's changes", recs)
	}
	if _, err := os.Stat(state); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("state file after Restore: %v", err)
	}
}

// TestSysctlsStateRestoreWithoutApply: a run that stops before applying
// (its first apply failed) still puts back what a killed run changed, and
// a key the new run does not want is put back at its first Apply.
func TestSysctlsStateRestoreWithoutApply(t *testing.T) {
	root := fakeProcSys(t, map[string]string{forward: "0", rpFilter: "1"})
	state := stateFile(t)
	killed := &Sysctls{Root: root, StateFile: state}
	if err := killed.Apply([]plan.Sysctl{{Key: forward, Value: "1"}, {Key: rpFilter, Value: "2"}}, nil); err != nil {
		t.Fatal(err)
	}
	next := &Sysctls{Root: root, StateFile: state}
	if err := next.Restore(nil); err != nil {
		t.Fatal(err)
	}
	if readKey(t, root, forward) != "0" || readKey(t, root, rpFilter) != "1" {
		t.Errorf("Restore without Apply: ip_forward=%s rp_filter=%s", readKey(t, root, forward), readKey(t, root, rpFilter))
	}

	killed = &Sysctls{Root: root, StateFile: state}
	if err := killed.Apply([]plan.Sysctl{{Key: forward, Value: "1"}, {Key: rpFilter, Value: "2"}}, nil); err != nil {
		t.Fatal(err)
	}
	next = &Sysctls{Root: root, StateFile: state}
	if err := next.Apply([]plan.Sysctl{{Key: forward, Value: "1"}}, nil); err != nil { // wan1 gone from the config
		t.Fatal(err)
	}
	if got := readKey(t, root, rpFilter); got != "1" {
		t.Errorf("rp_filter=%s after a run that no longer wants it, want 1", got)
	}
	if err := next.Restore(nil); err != nil {
		t.Fatal(err)
	}
	if got := readKey(t, root, forward); got != "0" {
		t.Errorf("ip_forward=%s, want 0", got)
	}
}

// TestSysctlsStateUntrusted: a state file that is not what this code
// writes is logged and ignored, and replaced at the next change.
func TestSysctlsStateUntrusted(t *testing.T) {
	big := `{"version":1,"originals":[{"key":"net/ipv4/ip_forward","value":"7"}]}` + strings.Repeat(" ", maxStateFile)
	for name, content := range map[string]string{
		"garbage":           "\x00\x01not json",
		"truncated":         `{"version":1,"originals":[{"key":"net/ipv4/ip_forward","val`,
		"other version":     `{"version":2,"originals":[{"key":"net/ipv4/ip_forward","value":"7"}]}`,
		"key outside":       `{"version":1,"originals":[{"key":"../../etc/passwd","value":"x"}]}`,
		"unknown field":     `{"version":1,"originals":[],"extra":true}`,
		"duplicate key":     `{"version":1,"originals":[{"key":"net/ipv4/ip_forward","value":"7"},{"key":"net/ipv4/ip_forward","value":"8"}]}`,
		"odd value":         `{"version":1,"originals":[{"key":"net/ipv4/ip_forward","value":"7\n"}]}`,
		"trailing data":     `{"version":1,"originals":[]} {}`,
		"larger than 1 MiB": big,
	} {
		t.Run(name, func(t *testing.T) {
			root := fakeProcSys(t, map[string]string{forward: "0"})
			state := stateFile(t)
			if err := os.MkdirAll(filepath.Dir(state), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(state, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			s := &Sysctls{Root: root, StateFile: state}
			var logs logRecords
			if err := s.Apply([]plan.Sysctl{{Key: forward, Value: "1"}}, logs.logger()); err != nil {
				t.Fatal(err)
			}
			recs := logs.all(t)
			if len(recs) != 2 || recs[0]["level"] != "WARN" || recs[0]["file"] != state {
				t.Errorf("log %v, want a warning naming the file, then the change", recs)
			}
			if err := s.Restore(nil); err != nil {
				t.Fatal(err)
			}
			if got := readKey(t, root, forward); got != "0" {
				t.Errorf("ip_forward=%s after Restore, want the value found, 0", got)
			}
		})
	}
}

// TestSysctlsStateBeforeChange: a change whose original cannot be recorded
// is not made.
func TestSysctlsStateBeforeChange(t *testing.T) {
	root := fakeProcSys(t, map[string]string{forward: "0"})
	blocker := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s := &Sysctls{Root: root, StateFile: filepath.Join(blocker, "sysctl.json")} // a directory that cannot be
	err := s.Apply([]plan.Sysctl{{Key: forward, Value: "1"}}, nil)
	if err == nil || !strings.Contains(err.Error(), "not changed") {
		t.Errorf("Apply = %v, want an error saying the key was not changed", err)
	}
	if got := readKey(t, root, forward); got != "0" {
		t.Errorf("ip_forward=%s, changed without its original recorded", got)
	}
	if err := s.Restore(nil); err != nil {
		t.Errorf("Restore with nothing changed: %v", err)
	}
}

// TestSysctlsStateKeepsUnrestored: a key that cannot be written back stays
// recorded, in memory and in the file, and a later Restore puts it back.
func TestSysctlsStateKeepsUnrestored(t *testing.T) {
	root := fakeProcSys(t, map[string]string{forward: "0", rpFilter: "1"})
	state := stateFile(t)
	s := &Sysctls{Root: root, StateFile: state}
	if err := s.Apply([]plan.Sysctl{{Key: forward, Value: "1"}, {Key: rpFilter, Value: "2"}}, nil); err != nil {
		t.Fatal(err)
	}
	// The forward file becomes unwritable (a directory).
	p := filepath.Join(root, forward)
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := s.Restore(nil); err == nil {
		t.Fatal("Restore of an unwritable key did not fail")
	}
	if readKey(t, root, rpFilter) != "1" {
		t.Error("the other key was not restored")
	}
	// A crash now: the next run still knows forward's original.
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	next := &Sysctls{Root: root, StateFile: state}
	if err := next.Restore(nil); err != nil {
		t.Fatal(err)
	}
	if got := readKey(t, root, forward); got != "0" {
		t.Errorf("ip_forward=%s, want the recorded original 0", got)
	}
	if _, err := os.Stat(state); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("state file after a complete Restore: %v", err)
	}
}
