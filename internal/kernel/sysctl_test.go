package kernel

import (
	"bytes"
	"encoding/json"
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
