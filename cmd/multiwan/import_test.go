package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestImportMWAN3 converts the seed 004 mwan3 config; the output is what
// the golden file of internal/mwan3 holds, and `check` accepts it.
func TestImportMWAN3(t *testing.T) {
	in := "../../internal/mwan3/testdata/seed004.mwan3"
	var out, errs bytes.Buffer
	if code := run([]string{"import", "mwan3", in}, &out, &errs); code != 0 {
		t.Fatalf("exit %d: %s", code, errs.String())
	}
	if errs.Len() != 0 {
		t.Errorf("warnings for seed 004: %s", errs.String())
	}
	path := filepath.Join(t.TempDir(), "multiwan.yaml")
	if err := os.WriteFile(path, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	var checkOut, checkErr bytes.Buffer
	if code := run([]string{"check", "-c", path}, &checkOut, &checkErr); code != 0 || checkOut.String() != "ok\n" {
		t.Errorf("check: exit %d %q %s", code, checkOut.String(), checkErr.String())
	}
	for _, want := range []string{"mark_mask: 0x3f00", "  - name: wg3\n", "default_policy: balanced\n", "interval: 1s"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestImportWarningsAndErrors(t *testing.T) {
	var out, errs bytes.Buffer
	if code := run([]string{"import", "mwan3", "../../internal/mwan3/testdata/options.mwan3"}, &out, &errs); code != 0 {
		t.Fatalf("exit %d: %s", code, errs.String())
	}
	if !strings.Contains(errs.String(), "options.mwan3:118:20: warning: rule 'blocked': use_policy unreachable") {
		t.Errorf("warnings:\n%s", errs.String())
	}

	out.Reset()
	errs.Reset()
	bad := filepath.Join(t.TempDir(), "mwan3")
	if err := os.WriteFile(bad, []byte("config interface 'wan'\n\toption enabled '1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code := run([]string{"import", "mwan3", bad}, &out, &errs); code != 1 || out.Len() != 0 {
		t.Fatalf("exit %d, stdout %q", code, out.String())
	}
	if want := bad + ":2:17: unterminated ' quote: the value runs to the end of the file\n"; errs.String() != want {
		t.Errorf("stderr %q, want %q", errs.String(), want)
	}

	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"import"}, 2, "usage: multiwan import mwan3 FILE"},
		{[]string{"import", "mwan3"}, 2, "usage: multiwan import mwan3 FILE"},
		{[]string{"import", "pfsense", "x"}, 2, `cannot import "pfsense"`},
		{[]string{"import", "mwan3", filepath.Join(t.TempDir(), "none")}, 1, "no such file"},
		{[]string{"import", "mwan3", t.TempDir()}, 1, "is a directory, not a regular file"},
	} {
		out.Reset()
		errs.Reset()
		if code := run(c.args, &out, &errs); code != c.code || !strings.Contains(errs.String(), c.msg) {
			t.Errorf("%v: exit %d, stderr %q", c.args, code, errs.String())
		}
	}
}
