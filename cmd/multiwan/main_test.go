package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
