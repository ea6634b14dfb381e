package main

import (
	"bytes"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestReadVersion(t *testing.T) {
	goVer := " " + runtime.GOOS + "/" + runtime.GOARCH
	vcs := func(rev, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	for _, tc := range []struct {
		name            string
		bi              *debug.BuildInfo
		ok              bool
		version, commit string
		modified        string
		want            string
	}{
		{
			name: "link-time values win",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261202131115-314c6c5abcde"}, Settings: vcs("314c6c5abcdef", "false")},
			ok:   true, version: "1.2.0", commit: "0123abc",
			want: "version 1.2.0\ncommit 0123abc\ngo go1.26.8" + goVer + "\n",
		},
		{
			name: "link-time values without build info (-buildvcs=false), modified tree",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}},
			ok:   true, version: "1.2.0", commit: "0123abc", modified: "true",
			want: "version 1.2.0\ncommit 0123abc (modified)\ngo go1.26.8" + goVer + "\n",
		},
		{
			name: "build info: module version and vcs, modified tree",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.3.0"}, Settings: vcs("314c6c5abcdef", "true")},
			ok:   true,
			want: "version v1.3.0\ncommit 314c6c5abcdef (modified)\ngo go1.26.8" + goVer + "\n",
		},
		{
			name: "a devel build outside a repository",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}},
			ok:   true,
			want: "version devel\ncommit unknown\ngo go1.26.8" + goVer + "\n",
		},
		{
			name: "no build info",
			want: "version devel\ncommit unknown\ngo " + runtime.Version() + goVer + "\n",
		},
	} {
		if got := readVersion(tc.bi, tc.ok, tc.version, tc.commit, tc.modified).String(); got != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
	}
}

func TestVersionCommand(t *testing.T) {
	var out, errs bytes.Buffer
	if code := run([]string{"version"}, &out, &errs); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errs.String())
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "version ") || !strings.HasPrefix(lines[1], "commit ") ||
		lines[2] != "go "+runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH {
		t.Errorf("want version/commit/go lines, got %q", out.String())
	}
	out.Reset()
	errs.Reset()
	if code := run([]string{"version", "extra"}, &out, &errs); code != 2 || !strings.Contains(errs.String(), "unexpected argument") {
		t.Errorf("version extra: exit %d, stderr %q; want 2 and a refusal", code, errs.String())
	}
}
