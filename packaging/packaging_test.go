// Package packaging_test checks what packaging/ ships: the Debian package
// built by `make deb` (lintian, file list, control fields), the systemd
// unit (systemd-analyze), the manual pages (groff, man), the shell
// completions, the example hooks, the default config and `make install`.
//
// The tools come from scripts/deps.sh (`make test` runs it). A test whose
// tool is missing fails, unless MULTIWAN_SKIP_E2E=1, when it skips.
package packaging_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/multiwan/multiwan/internal/config"
	"github.com/multiwan/multiwan/internal/control"
)

// root is the repository, seen from this package's directory.
const root = ".."

// need returns the path of tool, failing the test when it is missing, or
// skipping it when MULTIWAN_SKIP_E2E=1.
func need(t *testing.T, tool string) string {
	t.Helper()
	path, err := exec.LookPath(tool)
	if err != nil {
		for _, dir := range []string{"/usr/sbin", "/sbin"} {
			if p := filepath.Join(dir, tool); isExecutable(p) {
				return p
			}
		}
		if os.Getenv("MULTIWAN_SKIP_E2E") == "1" {
			t.Skipf("%s is not installed (MULTIWAN_SKIP_E2E=1)", tool)
		}
		t.Fatalf("%s is not installed: scripts/deps.sh installs it (make test runs it)", tool)
	}
	return path
}

func isExecutable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0
}

// run runs a command, failing the test with its output when it fails.
func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(cmd.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// makeEnv is the environment of a make started from a test: without the
// variables of the make that may be running `go test` (its jobserver is
// not ours).
func makeEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "GNUMAKEFLAGS":
			continue
		}
		env = append(env, kv)
	}
	return env
}

func makeCmd(t *testing.T, args ...string) string {
	t.Helper()
	mk := need(t, "make")
	cmd := exec.Command(mk, append([]string{"--no-print-directory"}, args...)...)
	cmd.Dir = root
	cmd.Env = makeEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// The package, built once for all tests by `make deb` into a temporary
// directory, and unpacked.
var (
	debOnce sync.Once
	debErr  string
	deb     struct {
		dir, path, version, arch, tree string
	}
)

func buildDeb(t *testing.T) {
	t.Helper()
	need(t, "dpkg-deb")
	need(t, "make")
	debOnce.Do(func() {
		dir, err := os.MkdirTemp("", "multiwan-deb-test-")
		if err != nil {
			debErr = err.Error()
			return
		}
		deb.dir = dir
		version := strings.TrimSpace(runOrErr(&debErr, root, "scripts/version.sh"))
		if debErr != "" {
			return
		}
		cmd := exec.Command("make", "--no-print-directory", "deb", "DIST="+dir, "VERSION="+version)
		cmd.Dir = root
		cmd.Env = makeEnv()
		if out, err := cmd.CombinedOutput(); err != nil {
			debErr = fmt.Sprintf("make deb: %v\n%s", err, out)
			return
		}
		arch := map[string]string{"amd64": "amd64", "arm64": "arm64", "arm": "armhf"}[runtime.GOARCH]
		deb.version, deb.arch = version+"-1", arch
		deb.path = filepath.Join(dir, fmt.Sprintf("multiwan_%s_%s.deb", deb.version, arch))
		deb.tree = filepath.Join(dir, "tree")
		if out, err := exec.Command("dpkg-deb", "-R", deb.path, deb.tree).CombinedOutput(); err != nil {
			debErr = fmt.Sprintf("dpkg-deb -R %s: %v\n%s", deb.path, err, out)
		}
	})
	if debErr != "" {
		t.Fatal(debErr)
	}
}

func runOrErr(errp *string, dir, name string, args ...string) string {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		*errp = fmt.Sprintf("%s: %v", name, err)
	}
	return string(out)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if deb.dir != "" {
		os.RemoveAll(deb.dir)
	}
	os.Exit(code)
}

// expectedFiles is the package's content, directories included.
func expectedFiles(t *testing.T) map[string]os.FileMode {
	t.Helper()
	files := map[string]os.FileMode{
		"etc/multiwan/multiwan.yaml":                         0o644,
		"usr/lib/systemd/system/multiwan.service":            0o644,
		"usr/sbin/multiwan":                                  0o755,
		"usr/share/bash-completion/completions/multiwan":     0o644,
		"usr/share/zsh/vendor-completions/_multiwan":         0o644,
		"usr/share/doc/multiwan/changelog.Debian.gz":         0o644,
		"usr/share/doc/multiwan/copyright":                   0o644,
		"usr/share/doc/multiwan/examples/hooks.d/notify":     0o755,
		"usr/share/doc/multiwan/examples/hooks.d/mwan3-user": 0o755,
		"usr/share/lintian/overrides/multiwan":               0o644,
		"usr/share/man/man5/multiwan.yaml.5.gz":              0o644,
		"usr/share/man/man8/multiwan.8.gz":                   0o644,
	}
	examples, err := filepath.Glob(filepath.Join(root, "examples", "*.yaml"))
	if err != nil || len(examples) == 0 {
		t.Fatalf("examples: %v %v", examples, err)
	}
	for _, f := range examples {
		files["usr/share/doc/multiwan/examples/"+filepath.Base(f)] = 0o644
	}
	for f := range files {
		for d := filepath.Dir(f); d != "."; d = filepath.Dir(d) {
			files[d+"/"] = os.ModeDir | 0o755
		}
	}
	return files
}

// TestDebContents checks `dpkg-deb -c`: exactly the expected files, owned
// by root, with the expected modes.
func TestDebContents(t *testing.T) {
	buildDeb(t)
	out := run(t, "", nil, "dpkg-deb", "-c", deb.path)
	want := expectedFiles(t)
	got := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			t.Fatalf("dpkg-deb -c: odd line %q", line)
		}
		mode, owner, name := f[0], f[1], strings.TrimPrefix(f[5], "./")
		if name == "" {
			continue
		}
		got[name] = true
		if owner != "root/root" {
			t.Errorf("%s: owner %s, want root/root", name, owner)
		}
		wantMode, ok := want[name]
		if !ok {
			t.Errorf("unexpected file in the package: %s", name)
			continue
		}
		if mode != wantMode.String() {
			t.Errorf("%s: mode %s, want %s", name, mode, wantMode)
		}
	}
	for name := range want {
		if !got[name] {
			t.Errorf("missing from the package: %s", name)
		}
	}
	if t.Failed() {
		t.Logf("dpkg-deb -c:\n%s", out)
	}
}

// TestDebControl checks `dpkg-deb -I`: the fields, the conffiles, the
// maintainer scripts.
func TestDebControl(t *testing.T) {
	buildDeb(t)
	field := func(name string) string {
		return strings.TrimSpace(run(t, "", nil, "dpkg-deb", "-f", deb.path, name))
	}
	for name, want := range map[string]string{
		"Package":      "multiwan",
		"Version":      deb.version,
		"Architecture": deb.arch,
		// Only what the binary runs: nft (knftables execs it). Routes,
		// rules, links and conntrack go over netlink: no iproute2, no
		// conntrack tool. Static binary: no libc.
		"Depends":  "nftables",
		"Section":  "net",
		"Priority": "optional",
	} {
		if got := field(name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	if size, err := strconv.Atoi(field("Installed-Size")); err != nil || size < 1000 {
		t.Errorf("Installed-Size %v %v", size, err)
	}
	info := run(t, "", nil, "dpkg-deb", "-I", deb.path)
	for _, want := range []string{"conffiles", "md5sums", "postinst", "prerm", "postrm"} {
		if !strings.Contains(info, " "+want) {
			t.Errorf("dpkg-deb -I: no %s:\n%s", want, info)
		}
	}
	conffiles := run(t, "", nil, "dpkg-deb", "-I", deb.path, "conffiles")
	if conffiles != "/etc/multiwan/multiwan.yaml\n" {
		t.Errorf("conffiles %q, want only /etc/multiwan/multiwan.yaml", conffiles)
	}
	for _, script := range []string{"postinst", "prerm", "postrm"} {
		path := filepath.Join(deb.tree, "DEBIAN", script)
		if !isExecutable(path) {
			t.Errorf("DEBIAN/%s is not executable", script)
		}
		run(t, "", nil, "sh", "-n", path)
	}
	// The shipped binary says which version it is.
	out := run(t, "", nil, filepath.Join(deb.tree, "usr/sbin/multiwan"), "version")
	if v := strings.TrimSuffix(deb.version, "-1"); !strings.HasPrefix(out, "version "+v+"\n") {
		t.Errorf("multiwan version: %q, want version %s first", out, v)
	}
}

// TestLintian runs lintian on the package: no errors (warnings are
// listed in the test log).
func TestLintian(t *testing.T) {
	lintian := need(t, "lintian")
	buildDeb(t)
	cmd := exec.Command(lintian, "--fail-on", "error", "--display-info", deb.path)
	out, err := cmd.CombinedOutput()
	out = bytes.ReplaceAll(out, []byte("running with root privileges is not recommended!\n"), nil)
	if err != nil {
		t.Fatalf("lintian --fail-on error: %v\n%s", err, out)
	}
	if len(bytes.TrimSpace(out)) > 0 {
		t.Logf("lintian:\n%s", out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "E:") || strings.HasPrefix(line, "W:") {
			t.Errorf("lintian: %s", line)
		}
	}
}

// TestReproducible builds the package a second time from the same binary:
// byte for byte the same.
func TestReproducible(t *testing.T) {
	buildDeb(t)
	again := t.TempDir()
	bin := filepath.Join(deb.dir, "multiwan-linux-"+runtime.GOARCH)
	run(t, root, nil, "scripts/mkdeb.sh", bin, deb.arch, strings.TrimSuffix(deb.version, "-1"), again)
	a, err := os.ReadFile(deb.path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(again, filepath.Base(deb.path)))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("two builds of the package differ (%d and %d bytes)", len(a), len(b))
	}
}

// TestManPagesCompressed: gzip -9n, as lintian wants (no name, no time,
// maximum compression).
func TestManPagesCompressed(t *testing.T) {
	buildDeb(t)
	for _, page := range []string{"usr/share/man/man8/multiwan.8.gz", "usr/share/man/man5/multiwan.yaml.5.gz", "usr/share/doc/multiwan/changelog.Debian.gz"} {
		data, err := os.ReadFile(filepath.Join(deb.tree, page))
		if err != nil {
			t.Fatal(err)
		}
		// RFC 1952: FLG (FNAME is 0x08), MTIME, XFL (2: maximum compression).
		if len(data) < 10 || data[3]&0x08 != 0 || !bytes.Equal(data[4:8], []byte{0, 0, 0, 0}) || data[8] != 2 {
			t.Errorf("%s: not gzip -9n (header % x)", page, data[:10])
		}
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		text, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		src := filepath.Join(root, "packaging/man", strings.TrimSuffix(filepath.Base(page), ".gz"))
		if want, err := os.ReadFile(src); err == nil && !bytes.Equal(text, want) {
			t.Errorf("%s differs from %s", page, src)
		}
	}
}

// TestUnitVerify runs systemd-analyze verify on the unit as packaged, with
// ExecStart pointed at the packaged binary (the unit names
// /usr/sbin/multiwan, which need not exist here) and the packaged manual
// pages on MANPATH (Documentation= is checked too).
func TestUnitVerify(t *testing.T) {
	sa := need(t, "systemd-analyze")
	need(t, "man")
	buildDeb(t)
	unit, err := os.ReadFile(filepath.Join(deb.tree, "usr/lib/systemd/system/multiwan.service"))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(deb.tree, "usr/sbin/multiwan")
	if !bytes.Contains(unit, []byte("\nExecStart=/usr/sbin/multiwan run -c /etc/multiwan/multiwan.yaml\n")) {
		t.Fatalf("ExecStart is not /usr/sbin/multiwan run -c /etc/multiwan/multiwan.yaml")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "multiwan.service")
	if err := os.WriteFile(path, bytes.ReplaceAll(unit, []byte("/usr/sbin/multiwan"), []byte(bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sa, "verify", path)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "MANPATH="+filepath.Join(deb.tree, "usr/share/man"), "SYSTEMD_LOG_COLOR=0")
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	// The exposure score, where systemd can compute it offline (v250+):
	// a regression guard for the sandbox.
	cmd = exec.Command(sa, "security", "--offline=yes", "--no-pager", path)
	cmd.Dir = dir
	out, err = cmd.CombinedOutput()
	if m := regexp.MustCompile(`Overall exposure level for multiwan.service: ([0-9.]+)`).FindSubmatch(out); err == nil && m != nil {
		if score, _ := strconv.ParseFloat(string(m[1]), 64); score > 3.0 {
			t.Errorf("systemd-analyze security: exposure %s, more than 3.0: the sandbox got weaker\n%s", m[1], out)
		} else {
			t.Logf("systemd-analyze security: exposure %s", m[1])
		}
	}
}

// TestUnitSettings pins the settings the daemon's lifecycle depends on.
func TestUnitSettings(t *testing.T) {
	unit, err := os.ReadFile(filepath.Join(root, "packaging/multiwan.service"))
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string][]string{}
	for _, line := range strings.Split(string(unit), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			settings[k] = append(settings[k], v)
		}
	}
	for _, kv := range []string{
		"Type=notify", "NotifyAccess=main", "ExecReload=/usr/sbin/multiwan reload -c /etc/multiwan/multiwan.yaml",
		"WatchdogSec=30s", "Restart=on-failure", "KillMode=mixed",
		"After=network-pre.target", "Before=network-online.target",
		"RuntimeDirectory=multiwan", "RuntimeDirectoryPreserve=yes",
		"CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW",
		// /proc/sys is read-only but for net: the sysctls multiwan sets.
		"ProtectKernelTunables=yes", "ReadWritePaths=/proc/sys/net",
		"ProtectSystem=strict", "NoNewPrivileges=yes", "ProtectKernelModules=yes",
		"RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6",
		"WantedBy=multi-user.target",
	} {
		k, v, _ := strings.Cut(kv, "=")
		if !slices.Contains(settings[k], v) {
			t.Errorf("multiwan.service: no %s (has %q)", kv, settings[k])
		}
	}
	for _, k := range []string{"User", "DynamicUser", "PrivateNetwork", "ProcSubset", "Wants", "Requires"} {
		if len(settings[k]) > 0 {
			t.Errorf("multiwan.service: %s=%s: see the comments in the unit", k, settings[k])
		}
	}
	// The state file's directory must survive restarts: the default
	// state_dir and control socket are under the RuntimeDirectory.
	if config.DefaultStateDir != "/run/multiwan" || !strings.HasPrefix(config.DefaultSocket, "/run/multiwan/") {
		t.Errorf("state_dir %s / socket %s moved out of /run/multiwan: update RuntimeDirectory= or ReadWritePaths=", config.DefaultStateDir, config.DefaultSocket)
	}
}

// TestManPages renders both pages with the warnings lintian looks for.
func TestManPages(t *testing.T) {
	groff := need(t, "groff")
	man := need(t, "man")
	for _, page := range []string{"multiwan.8", "multiwan.yaml.5"} {
		path := filepath.Join(root, "packaging/man", page)
		out := run(t, "", nil, groff, "-man", "-Tutf8", "-ww", "-z", path)
		if out != "" {
			t.Errorf("groff %s:\n%s", page, out)
		}
		cmd := exec.Command(man, "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", path)
		cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8", "MANWIDTH=80")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil || stderr.Len() > 0 {
			t.Errorf("man --warnings -l %s: %v\n%s", page, err, stderr.String())
		}
	}
}

// commands are the commands of cmd/multiwan's switch.
func commands(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(root, "cmd/multiwan/main.go"))
	if err != nil {
		t.Fatal(err)
	}
	// the switch of func run
	_, body, _ := bytes.Cut(src, []byte("\nfunc run("))
	body, _, _ = bytes.Cut(body, []byte("\n}\n"))
	var cmds []string
	for _, m := range regexp.MustCompile(`(?m)^\s*case ((?:"[^"]*",?\s*)+):`).FindAllSubmatch(body, -1) {
		for _, q := range regexp.MustCompile(`"([^"]*)"`).FindAllSubmatch(m[1], -1) {
			if c := string(q[1]); c != "help" && !strings.HasPrefix(c, "-") {
				cmds = append(cmds, c)
			}
		}
	}
	if len(cmds) < 8 {
		t.Fatalf("found only %v in cmd/multiwan/main.go", cmds)
	}
	return cmds
}

// TestDocsCoverCode: every command has its entry in multiwan(8) and the
// completions, every config key its entry in multiwan.yaml(5).
func TestDocsCoverCode(t *testing.T) {
	man8, err := os.ReadFile(filepath.Join(root, "packaging/man/multiwan.8"))
	if err != nil {
		t.Fatal(err)
	}
	bash, _ := os.ReadFile(filepath.Join(root, "packaging/completion/multiwan.bash"))
	zsh, _ := os.ReadFile(filepath.Join(root, "packaging/completion/_multiwan"))
	for _, c := range commands(t) {
		if !regexp.MustCompile(`(?m)^\.SH COMMANDS\n(?s:.*)^\.TP\n\.B ` + regexp.QuoteMeta(c) + `\b`).Match(man8) {
			t.Errorf("multiwan.8: no entry for command %s under COMMANDS", c)
		}
		if !regexp.MustCompile(`commands="[^"]*\b` + c + `\b`).Match(bash) {
			t.Errorf("bash completion: command %s missing", c)
		}
		if !bytes.Contains(zsh, []byte("'"+c+":")) {
			t.Errorf("zsh completion: command %s missing", c)
		}
	}

	man5, err := os.ReadFile(filepath.Join(root, "packaging/man/multiwan.yaml.5"))
	if err != nil {
		t.Fatal(err)
	}
	schema, err := os.ReadFile(filepath.Join(root, "internal/config/schema.go"))
	if err != nil {
		t.Fatal(err)
	}
	keys := regexp.MustCompile(`(?m)^\s*"([a-z0-9_]+)":\s*func\(`).FindAllSubmatch(schema, -1)
	if len(keys) < 40 {
		t.Fatalf("found only %d keys in internal/config/schema.go", len(keys))
	}
	for _, k := range keys {
		key := string(k[1])
		// an entry: ".TP" then ".B path.key" or ".BR ... path.key ..."
		re := regexp.MustCompile(`(?m)^\.TP\n\.BR? (?:[^\n]*[ .\]])?` + key + `\b`)
		if !re.Match(man5) {
			t.Errorf("multiwan.yaml.5: no entry for config key %s (internal/config/schema.go)", key)
		}
	}
}

// TestCompletions: both scripts parse; bash completes commands, flags and
// the WAN names of a daemon's status --json.
func TestCompletions(t *testing.T) {
	bashPath := need(t, "bash")
	bashScript := filepath.Join(root, "packaging/completion/multiwan.bash")
	run(t, "", nil, bashPath, "-n", bashScript)
	zsh := need(t, "zsh")
	run(t, "", nil, zsh, "-n", filepath.Join(root, "packaging/completion/_multiwan"))

	// A stand-in for multiwan whose status --json is what the real
	// client prints (control.Status, indented by two spaces).
	dir := t.TempDir()
	st := control.Status{
		WANs:     []control.WANStatus{{Name: "isp1", Interface: "eth1"}, {Name: "lte-2", Interface: "wwan0"}},
		Policies: []control.PolicyStatus{{Name: "failover"}},
		Daemon:   &control.DaemonStatus{Config: "/etc/multiwan/multiwan.yaml"},
	}
	js, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "status.json"), append(js, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	fake := filepath.Join(dir, "multiwan")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\n[ \"$1\" = status ] && [ \"$2\" = --json ] && exec cat "+filepath.Join(dir, "status.json")+"\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	complete := func(words ...string) string {
		t.Helper()
		script := fmt.Sprintf(`source %q
COMP_WORDS=(%s)
COMP_CWORD=%d
_multiwan
printf '%%s\n' "${COMPREPLY[@]}"`, bashScript, shellWords(append([]string{fake}, words...)), len(words))
		return strings.TrimSpace(run(t, "", nil, bashPath, "--norc", "-c", script))
	}
	for _, tc := range []struct {
		words []string
		want  string
	}{
		{[]string{"st"}, "status"},
		{[]string{"re"}, "reload"},
		{[]string{"status", "--j"}, "--json"},
		{[]string{"run", "--log-level", "d"}, "debug"},
		{[]string{"use", ""}, "auto\nisp1\nlte-2"},
		{[]string{"use", "-c", "/etc/multiwan/multiwan.yaml", "l"}, "lte-2"},
		{[]string{"plan", "--down", "isp1,"}, "isp1,isp1\nisp1,lte-2"},
		{[]string{"import", ""}, "mwan3"},
		{[]string{"events", "--"}, "--past\n--json"},
	} {
		if got := complete(tc.words...); got != tc.want {
			t.Errorf("complete %q: got %q, want %q", tc.words, got, tc.want)
		}
	}
}

func shellWords(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// TestDefaultConfig: the shipped config is valid with no warning, and
// harmless when started unedited: its interfaces do not exist, and with no
// usable WAN traffic goes by the main table.
func TestDefaultConfig(t *testing.T) {
	buildDeb(t)
	path := filepath.Join(deb.tree, "etc/multiwan/multiwan.yaml")
	cmd := exec.Command(filepath.Join(deb.tree, "usr/sbin/multiwan"), "check", "-c", path)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || stdout.String() != "ok\n" || stderr.Len() > 0 {
		t.Errorf("multiwan check -c %s: %v, stdout %q, stderr:\n%s", path, err, stdout.String(), stderr.String())
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range cfg.WANs {
		if _, err := net.InterfaceByName(w.Interface); err == nil {
			t.Errorf("WAN %s: interface %s exists here; the example must name none that may", w.Name, w.Interface)
		}
	}
	for _, p := range cfg.Policies {
		if p.LastResort != "main" {
			t.Errorf("policy %s: last_resort %s; main keeps an unedited config harmless", p.Name, p.LastResort)
		}
	}
	if len(cfg.Rules) > 0 || len(cfg.Hooks) > 0 {
		t.Errorf("the example config has rules or hooks")
	}
	text, _ := os.ReadFile(path)
	if !bytes.Contains(text, []byte("multiwan init -o")) {
		t.Errorf("the example config does not say to start from multiwan init -o")
	}
}

// TestHooks runs the example hooks with stand-ins for curl and logger.
func TestHooks(t *testing.T) {
	sh := need(t, "sh")
	dir := t.TempDir()
	log := filepath.Join(dir, "calls")
	for _, tool := range []string{"curl", "logger"} {
		script := fmt.Sprintf("#!/bin/sh\n{ echo %s; for a in \"$@\"; do printf '%%s\\n' \"$a\"; done; echo --; } >>%s\n", tool, log)
		if err := os.WriteFile(filepath.Join(dir, tool), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	hook := func(name string, env ...string) string {
		t.Helper()
		os.Remove(log)
		path := filepath.Join(root, "packaging/hooks", name)
		run(t, "", nil, sh, "-n", path)
		cmd := exec.Command(path)
		// a hook's environment: PATH and the event, nothing else
		cmd.Env = append([]string{"PATH=" + dir + ":/usr/bin:/bin", "NOTIFY_CONF=/nonexistent"}, env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
		calls, _ := os.ReadFile(log)
		return string(calls)
	}

	calls := hook("notify", "MULTIWAN_EVENT=down", "MULTIWAN_WAN=isp1", `MULTIWAN_INTERFACE=eth"1\`,
		"MULTIWAN_STATE=down", "MULTIWAN_PREVIOUS=up", "MULTIWAN_FAMILY=ipv4", "ACTION=ifdown",
		"NTFY_URL=https://ntfy.example/topic", "NTFY_TOKEN=tk_secret", "WEBHOOK_URL=https://hook.example/in")
	for _, want := range []string{"Priority: high", "Authorization: Bearer tk_secret", "https://ntfy.example/topic", "https://hook.example/in"} {
		if !strings.Contains(calls, want) {
			t.Errorf("notify: no %q in the curl calls:\n%s", want, calls)
		}
	}
	var body map[string]string
	sc := bufio.NewScanner(strings.NewReader(calls))
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "{") {
			if err := json.Unmarshal(sc.Bytes(), &body); err != nil {
				t.Errorf("notify: webhook body is not JSON: %v\n%s", err, sc.Text())
			}
		}
	}
	if body["wan"] != "isp1" || body["interface"] != `eth"1\` || body["event"] != "down" {
		t.Errorf("notify: webhook body %v", body)
	}
	if calls := hook("notify", "MULTIWAN_EVENT=switch", "MULTIWAN_POLICY=failover", "NTFY_URL=https://ntfy.example/topic"); calls != "" {
		t.Errorf("notify: switch events are not sent by default, got:\n%s", calls)
	}
	if calls := hook("notify", "MULTIWAN_EVENT=up", "MULTIWAN_WAN=isp1"); calls != "" {
		t.Errorf("notify: nothing configured, nothing sent; got:\n%s", calls)
	}

	calls = hook("mwan3-user", "ACTION=ifup", "INTERFACE=isp1", "DEVICE=eth1")
	if !strings.Contains(calls, "logger\n-t\nmwan3-user\nisp1 (eth1) is up\n") {
		t.Errorf("mwan3-user: logger calls:\n%s", calls)
	}
	if calls := hook("mwan3-user", "ACTION=switch", "INTERFACE=isp1", "DEVICE=eth1"); calls != "" {
		t.Errorf("mwan3-user: a switch is not an mwan3 action; got:\n%s", calls)
	}
}

// TestCopyright: every Go module linked into the binary has its stanza in
// the copyright file.
func TestCopyright(t *testing.T) {
	buildDeb(t)
	text, err := os.ReadFile(filepath.Join(deb.tree, "usr/share/doc/multiwan/copyright"))
	if err != nil {
		t.Fatal(err)
	}
	out := run(t, "", nil, "go", "version", "-m", filepath.Join(deb.tree, "usr/sbin/multiwan"))
	deps := 0
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "dep" {
			deps++
			module := f[1]
			if m := regexp.MustCompile(`/v[0-9]+$`).FindStringIndex(module); m != nil {
				module = module[:m[0]]
			}
			if !regexp.MustCompile(`(?m)^(Files:)? +` + regexp.QuoteMeta(module) + `/\*$`).Match(text) {
				t.Errorf("copyright: no Files: stanza for %s (linked into /usr/sbin/multiwan)", f[1])
			}
		}
	}
	if deps == 0 {
		t.Fatalf("go version -m: no dependencies listed:\n%s", out)
	}
}

// TestInstall runs `make install` into a DESTDIR, twice: the second run
// keeps an edited config.
func TestInstall(t *testing.T) {
	buildDeb(t)
	dest := t.TempDir()
	args := []string{"install", "DESTDIR=" + dest, "PREFIX=/usr/local", "DIST=" + deb.dir, "VERSION=" + strings.TrimSuffix(deb.version, "-1")}
	makeCmd(t, args...)
	var files []string
	filepath.Walk(dest, func(path string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			rel, _ := filepath.Rel(dest, path)
			files = append(files, fmt.Sprintf("%s %o", rel, info.Mode().Perm()))
		}
		return nil
	})
	want := []string{
		"etc/multiwan/multiwan.yaml 644",
		"usr/local/lib/systemd/system/multiwan.service 644",
		"usr/local/sbin/multiwan 755",
		"usr/local/share/bash-completion/completions/multiwan 644",
		"usr/local/share/doc/multiwan/examples/hooks.d/mwan3-user 755",
		"usr/local/share/doc/multiwan/examples/hooks.d/notify 755",
		"usr/local/share/man/man5/multiwan.yaml.5 644",
		"usr/local/share/man/man8/multiwan.8 644",
		"usr/local/share/zsh/site-functions/_multiwan 644",
	}
	examples, _ := filepath.Glob(filepath.Join(root, "examples", "*.yaml"))
	for _, f := range examples {
		want = append(want, "usr/local/share/doc/multiwan/examples/"+filepath.Base(f)+" 644")
	}
	slices.Sort(want)
	slices.Sort(files)
	if !slices.Equal(files, want) {
		t.Errorf("make install: got\n%s\nwant\n%s", strings.Join(files, "\n"), strings.Join(want, "\n"))
	}
	unit, _ := os.ReadFile(filepath.Join(dest, "usr/local/lib/systemd/system/multiwan.service"))
	if !bytes.Contains(unit, []byte("\nExecStart=/usr/local/sbin/multiwan run -c /etc/multiwan/multiwan.yaml\n")) ||
		!bytes.Contains(unit, []byte("\nExecReload=/usr/local/sbin/multiwan reload -c /etc/multiwan/multiwan.yaml\n")) {
		t.Errorf("installed unit does not run /usr/local/sbin/multiwan:\n%s", unit)
	}
	conf := filepath.Join(dest, "etc/multiwan/multiwan.yaml")
	if err := os.WriteFile(conf, []byte("# mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	makeCmd(t, args...)
	if got, _ := os.ReadFile(conf); string(got) != "# mine\n" {
		t.Errorf("make install replaced an existing config")
	}
}

// TestCrossTargets checks the cross builds' settings without building:
// arm is GOARM=7 and packaged as armhf.
func TestCrossTargets(t *testing.T) {
	for arch, want := range map[string][]string{
		"arm64": {"GOARCH=arm64", "-trimpath", "CGO_ENABLED=0", "main.buildVersion=", "dist/multiwan-linux-arm64", "scripts/mkdeb.sh dist/multiwan-linux-arm64 arm64 "},
		"arm":   {"GOARCH=arm GOARM=7", "dist/multiwan-linux-arm ", "scripts/mkdeb.sh dist/multiwan-linux-arm armhf "},
		"armhf": {"GOARCH=arm GOARM=7", "scripts/mkdeb.sh dist/multiwan-linux-arm armhf "},
	} {
		out := makeCmd(t, "-n", "deb", "ARCH="+arch, "VERSION=1.2.3", "DIST=dist")
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("make -n deb ARCH=%s: no %q in\n%s", arch, w, out)
			}
		}
	}
}
