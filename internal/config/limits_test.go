package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	// head is a valid start that the cases below add to: one WAN, one
	// policy, the default policy. Three lines.
	head = "wans: [{name: a, interface: eth0, gateway: 192.0.2.1}]\n" +
		"policies: [{name: p, members: [{wan: a}]}]\n" +
		"default_policy: p\n"
	noMatch = "a rule without a match field matches every connection; to change where unmatched traffic goes, set default_policy"
)

// refusalTests are configs that cannot work, or that would cost too much to
// parse, each with every error expected. {{dir}} stands for a directory
// holding "ok" (an executable), "noexec" (a file of mode 0644) and "sub" (a
// directory), for the hooks.
var refusalTests = []struct {
	name string
	yaml string
	want []string
}{
	{
		name: "names equal in nft",
		yaml: `wans:
  - {name: isp-a, interface: eth0, gateway: 192.0.2.1}
  - {name: isp_a, interface: eth1, gateway: 192.0.2.65}
policies:
  - {name: web-a, members: [{wan: isp-a}]}
  - {name: web_a, members: [{wan: isp_a}]}
rules:
  - {name: web-a, proto: tcp, policy: web-a}
  - {name: web_a, proto: udp, policy: web_a}
  - {name: web_a, proto: udp, wan: isp_a}
default_policy: web-a
`,
		want: []string{
			`t.yaml:3:12: WAN name "isp_a" is the same as "isp-a" (2:12) in nft, where '-' becomes '_'`,
			`t.yaml:6:12: policy name "web_a" is the same as "web-a" (5:12) in nft, where '-' becomes '_'`,
			`t.yaml:9:12: rule name "web_a" is the same as "web-a" (8:12) in nft, where '-' becomes '_'`,
			`t.yaml:10:12: rule name "web_a" is the same as "web-a" (8:12) in nft, where '-' becomes '_'`,
		},
	},
	{
		name: "rule without a match field",
		yaml: head + `rules:
  - name: everything
    wan: a
    movable: true
  - {name: web, iif: eth1, wan: a}
`,
		want: []string{"t.yaml:5:5: " + noMatch},
	},
	{
		name: "WAN named auto",
		yaml: `wans: [{name: auto, interface: eth0, gateway: 192.0.2.1}]
policies: [{name: auto, members: [{wan: auto}]}]
default_policy: auto
`,
		want: []string{`t.yaml:1:15: name: "auto" is reserved: "multiwan use auto" returns to the automatic choice`},
	},
	{
		name: "overlapping prefixes6",
		yaml: `wans:
  - name: a
    interface: eth0
    gateway: 192.0.2.1
    gateway6: auto
    prefixes6: ["2001:db8::/32", "2001:db8:1::/48", "2001:db8:ffff::/48"]
  - name: b
    interface: eth1
    gateway: 192.0.2.65
    gateway6: auto
    prefixes6: ["2001:db8:1:2::/64", "2001:db9::/32", "2001:db9::/32"]
policies: [{name: p, members: [{wan: a}]}]
default_policy: p
`,
		want: []string{
			`t.yaml:6:34: prefixes6: 2001:db8:1::/48 overlaps 2001:db8::/32 of this WAN (6:17)`,
			`t.yaml:6:53: prefixes6: 2001:db8:ffff::/48 overlaps 2001:db8::/32 of this WAN (6:17)`,
			`t.yaml:11:17: prefixes6: 2001:db8:1:2::/64 overlaps 2001:db8:1::/48 of WAN "a" (6:34)`,
			`t.yaml:11:55: prefixes6: 2001:db9::/32 overlaps 2001:db9::/32 of this WAN (11:38)`,
		},
	},
	{
		name: "hooks",
		yaml: head + `hooks:
  - {{dir}}/ok
  - {{dir}}/missing
  - {{dir}}/sub
  - {{dir}}/noexec
  - hooks/ok
`,
		want: []string{
			"t.yaml:6:5: hooks: {{dir}}/missing does not exist",
			"t.yaml:7:5: hooks: {{dir}}/sub is a directory, not a regular file",
			"t.yaml:8:5: hooks: {{dir}}/noexec is not executable (mode 0644)",
			`t.yaml:9:5: hooks: "hooks/ok" is not an absolute path`,
		},
	},
	{
		name: "socket path, probe timeout and state_dir",
		yaml: `wans:
  - {name: a, interface: eth0, gateway: 192.0.2.1, probe: {timeout: 1ns}}
  - {name: b, interface: eth1, gateway: 192.0.2.1, probe: {timeout: 9ms, interval: 10ms}}
policies: [{name: p, members: [{wan: a}]}]
default_policy: p
control: {socket: /run/` + strings.Repeat("m", 98) + `.sock}
state_dir: run/multiwan
hook_timeout: 1ms
`,
		want: []string{
			"t.yaml:2:69: timeout: must be at least 10ms, got 1ns",
			"t.yaml:3:69: timeout: must be at least 10ms, got 9ms",
			`t.yaml:6:19: socket: "/run/` + strings.Repeat("m", 98) + `.sock" is 108 bytes long; a unix socket path holds at most 107`,
			`t.yaml:7:12: state_dir: "run/multiwan" is not an absolute path`,
			"t.yaml:8:15: hook_timeout: must be at least 100ms, got 1ms",
		},
	},
	{
		name: "flow nesting",
		yaml: head + "rules: " + strings.Repeat("[", 65) + "\n",
		want: []string{"t.yaml:4:72: flow collections ('[' and '{') nested more than 64 deep"},
	},
	{
		name: "flow nesting of mappings and lists",
		yaml: head + "rules: " + strings.Repeat("[{a: ", 32) + "[{a: 1}]" + "\n",
		want: []string{"t.yaml:4:168: flow collections ('[' and '{') nested more than 64 deep"},
	},
	{
		name: "block nesting",
		yaml: head + blockNest(65),
		want: []string{"t.yaml:68:129: block collections nested more than 64 deep"},
	},
	{
		name: "compact block nesting",
		yaml: head + "rules:\n  " + strings.Repeat("- ", 64) + "x\n",
		want: []string{"t.yaml:5:129: block collections nested more than 64 deep"},
	},
	{
		name: "long value",
		yaml: head + "control: {socket: /" + strings.Repeat("x", 4096) + "}\n",
		want: []string{"t.yaml:4:19: a value longer than 4096 bytes"},
	},
	{
		name: "long quoted value",
		yaml: head + "control: {socket: '/" + strings.Repeat("x", 5000) + "\n",
		want: []string{"t.yaml:4:19: a quoted value longer than 4096 bytes (is its closing quote missing?)"},
	},
	{
		name: "long block scalar",
		yaml: head + "state_dir: |\n" + strings.Repeat("  /run/multiwan\n", 300),
		want: []string{"t.yaml:4:12: a value longer than 4096 bytes"},
	},
	{
		name: "aliases nested too deep",
		yaml: head + aliasChain(17),
		want: []string{"t.yaml:22:14: aliases nested more than 16 deep (*a16 refers to a node holding an alias to a node holding an alias...)"},
	},
	{
		name: "empty value, then an error",
		yaml: head + "hooks:\nlocal_traffic: maybe\n",
		want: []string{`t.yaml:5:16: local_traffic: expected true or false, got "maybe"`},
	},
}

// blockNest is n block mappings, each nested in the one before.
func blockNest(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "%sk%d:\n", strings.Repeat("  ", i), i)
	}
	return b.String()
}

// aliasChain is n+1 anchors, each holding an alias to the one before.
func aliasChain(n int) string {
	var b strings.Builder
	b.WriteString("x:\n  a0: &a0 [1]\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "  a%d: &a%d [*a%d]\n", i, i, i-1)
	}
	return b.String()
}

// hookDir makes the directory refusalTests call {{dir}}.
func hookDir(t *testing.T) string {
	dir := t.TempDir()
	for name, mode := range map[string]os.FileMode{"ok": 0o755, "noexec": 0o644} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // whatever the umask
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestRefusals(t *testing.T) {
	dir := hookDir(t)
	for _, tt := range refusalTests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(strings.ReplaceAll(tt.yaml, "{{dir}}", dir)))
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("Parse = %v, want errors", err)
			}
			want := strings.ReplaceAll(strings.Join(tt.want, "\n"), "{{dir}}", dir)
			if got := strings.Join(list.Lines(), "\n"); got != want {
				t.Errorf("errors:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// TestLimitsAccept checks the values just within the new limits.
func TestLimitsAccept(t *testing.T) {
	dir := hookDir(t)
	var wans strings.Builder
	wans.WriteString("wans:\n")
	for i := range maxWANs {
		fmt.Fprintf(&wans, "  - {name: w%d, interface: eth%d, gateway: auto}\n", i, i)
	}
	for _, tt := range []struct{ name, yaml string }{
		{"99 WANs", wans.String() + "policies: [{name: p, members: [{wan: w0}]}]\ndefault_policy: p\n"},
		{"socket path of 107 bytes", head + "control: {socket: /run/" + strings.Repeat("m", 97) + ".sock}\n"},
		{"probe timeout of 10ms", "wans: [{name: a, interface: eth0, gateway: auto, probe: {timeout: 10ms}}]\npolicies: [{name: p, members: [{wan: a}]}]\ndefault_policy: p\n"},
		{"executable hook, state_dir", head + "hooks: [" + dir + "/ok]\nstate_dir: /var/lib/multiwan\n"},
		{"a policy named auto", "wans: [{name: a, interface: eth0, gateway: auto}]\npolicies: [{name: auto, members: [{wan: a}]}]\ndefault_policy: auto\n"},
		{"prefixes6 side by side", "wans: [{name: a, interface: eth0, gateway: auto, gateway6: auto, prefixes6: [\"2001:db8::/48\", \"2001:db8:1::/48\"]}]\npolicies: [{name: p, members: [{wan: a}]}]\ndefault_policy: p\n"},
		{"flow nesting of 64", head + "x: " + strings.Repeat("[", 64) + strings.Repeat("]", 64) + "\n"},
		{"block nesting of 64", head + "x:\n" + indent(blockNest(63), 2)},
		{"alias depth of 16", head + aliasChain(16)},
		{"brackets and quotes that are text", head + "x: [\"[[[[\", '{{{{', '#[', \"\\\"[\", 'it''s [', {a: '}', b: \"{\"}]\ny: it's [[[[ # [[[[\n" +
			"z: |\n  [[[[{{{{\n  \"'\nw:\n  - a [\n  - \"b\"\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tt.yaml))
			var list ErrorList
			if err != nil && !errors.As(err, &list) {
				t.Fatalf("Parse = %v, want no errors but unknown keys", err)
			}
			for _, e := range list {
				if !strings.Contains(e.Msg, "unknown key") {
					t.Errorf("%s", e)
				}
			}
		})
	}
}

func indent(s string, n int) string {
	pad := strings.Repeat(" ", n)
	return pad + strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n"+pad) + "\n"
}

func TestTooManyWANs(t *testing.T) {
	var b strings.Builder
	b.WriteString("wans:\n")
	for i := range maxWANs + 1 {
		fmt.Fprintf(&b, "  - {name: w%d, interface: eth%d, gateway: auto}\n", i, i)
	}
	b.WriteString("policies: [{name: p, members: [{wan: w0}]}]\ndefault_policy: p\n")
	_, err := Parse("t.yaml", []byte(b.String()))
	want := "t.yaml:101:6: at most 99 WANs (ip rule priorities are allocated in bands of 100)"
	if err == nil || err.Error() != want {
		t.Errorf("Parse = %v, want %s", err, want)
	}
}

func TestNFTName(t *testing.T) {
	for in, want := range map[string]string{"web-a": "web_a", "web_a": "web_a", "a-b-c": "a_b_c", "": ""} {
		if got := NFTName(in); got != want {
			t.Errorf("NFTName(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestLineEnds checks that CRLF line ends and a byte order mark leave
// every position as an editor shows it.
func TestLineEnds(t *testing.T) {
	const body = "# line 1\n# line 2\n# line 3\n" + head + "local_traffic: maybe\n"
	want := []string{`t.yaml:7:16: local_traffic: expected true or false, got "maybe"`}
	for name, data := range map[string]string{
		"LF":       body,
		"CRLF":     strings.ReplaceAll(body, "\n", "\r\n"),
		"CR":       strings.ReplaceAll(body, "\n", "\r"),
		"BOM":      "\ufeff" + body,
		"BOM CRLF": "\ufeff" + strings.ReplaceAll(body, "\n", "\r\n"),
	} {
		_, err := Parse("t.yaml", []byte(data))
		var list ErrorList
		if !errors.As(err, &list) || !reflect.DeepEqual(list.Lines(), want) {
			t.Errorf("%s: Parse = %v, want %q", name, err, want)
		}
	}
	// A BOM before the first key, which is then not "unknown".
	cfg, err := Parse("t.yaml", []byte("\ufeff"+strings.ReplaceAll(head, "\n", "\r\n")))
	if err != nil || cfg.DefaultPolicy != "p" {
		t.Errorf("Parse with BOM and CRLF = %v", err)
	}
	// The caller's bytes are not changed.
	data := []byte("a: 1\r\n")
	normalize(data)
	if string(data) != "a: 1\r\n" {
		t.Errorf("normalize changed its input: %q", data)
	}
}

// TestLoadRefuses checks that Load refuses, without reading them, files
// that are not regular files, and files larger than 4 MiB, naming them as
// FILE:1:1.
func TestLoadRefuses(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, maxConfigBytes+1); err != nil { // sparse: cheap to make, and all of it is read
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"/dev/zero": "/dev/zero:1:1: config file is a character device, not a regular file",
		fifo:        fifo + ":1:1: config file is a named pipe (FIFO), not a regular file",
		dir:         dir + ":1:1: config file is a directory, not a regular file",
		big:         big + ":1:1: config file is larger than 4 MiB",
	} {
		done := make(chan error, 1)
		go func() { _, err := Load(path); done <- err }()
		select {
		case err := <-done:
			var list ErrorList
			if !errors.As(err, &list) || err.Error() != want {
				t.Errorf("Load(%s) = %v, want %s", path, err, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Load(%s) hangs", path)
		}
	}
	// A file that cannot be opened is the *os.PathError, as before.
	if _, err := Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v", err)
	}
	// A symlink to a regular file is fine.
	real := filepath.Join(dir, "real.yaml")
	if err := os.WriteFile(real, []byte(head), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.yaml")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(link); err != nil {
		t.Errorf("Load(symlink) = %v", err)
	}
	// Parse holds the same bound.
	if _, err := Parse("t.yaml", make([]byte, maxConfigBytes+1)); err == nil || err.Error() != "t.yaml:1:1: config file is larger than 4 MiB" {
		t.Errorf("Parse(4 MiB + 1) = %v", err)
	}
}

// TestListFileRefusals checks list files that are not regular files, and
// that a file named by many rules is reported once.
func TestListFileRefusals(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bad.txt"), []byte("nope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "m.yaml")
	body := head + `rules:
  - {name: r1, src_file: &z /dev/zero, wan: a}
  - {name: r2, src_file: *z, wan: a}
  - {name: r3, src_file: /dev/zero, wan: a}
  - {name: r4, dst_file: fifo, wan: a}
  - {name: r5, dst_file: ., wan: a}
  - {name: r6, dst_file: bad.txt, wan: a}
  - {name: r7, src_file: ./bad.txt, wan: a}
`
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := Load(cfg); done <- err }()
	var err error
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Load hangs")
	}
	want := []string{
		cfg + ":5:29: src_file: list file /dev/zero is a character device, not a regular file",
		cfg + ":8:26: dst_file: list file " + fifo + " is a named pipe (FIFO), not a regular file",
		cfg + ":9:26: dst_file: list file " + dir + " is a directory, not a regular file",
		dir + "/bad.txt:1:1: expected an IP address or CIDR prefix, got \"nope\"",
	}
	var list ErrorList
	if !errors.As(err, &list) || strings.Join(list.Lines(), "\n") != strings.Join(want, "\n") {
		t.Errorf("Load:\n%v\nwant:\n%s", err, strings.Join(want, "\n"))
	}
}

// countListReads counts the list files read until the test ends.
func countListReads(t *testing.T) *int {
	n := new(int)
	orig := readListFile
	readListFile = func(path string) ([]byte, error) {
		*n++
		return orig(path)
	}
	t.Cleanup(func() { readListFile = orig })
	return n
}

// TestListFileReadOnce checks that a list file named by many rules, through
// aliases or not, is read and parsed once, and held once.
func TestListFileReadOnce(t *testing.T) {
	reads := countListReads(t)
	dir := t.TempDir()
	var list strings.Builder
	for i := range 10_000 {
		fmt.Fprintf(&list, "10.%d.%d.0/24\n", i>>8, i&255)
	}
	if err := os.WriteFile(filepath.Join(dir, "big.txt"), []byte(list.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString(head + "rules:\n  - {name: r0, dst_file: &f big.txt, wan: a}\n")
	for i := 1; i < 100; i++ {
		fmt.Fprintf(&b, "  - {name: r%d, dst_file: *f, wan: a}\n", i)
	}
	b.WriteString("  - {name: plain, dst_file: ./big.txt, wan: a}\n")
	b.WriteString("  - {name: mixed, dst: [192.0.2.7], dst_file: big.txt, wan: a}\n")
	path := filepath.Join(dir, "m.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if *reads != 1 {
		t.Errorf("the list file was read %d times", *reads)
	}
	first := cfg.Rules[0].Dst
	for _, r := range cfg.Rules[:101] {
		if len(r.Dst) != 10_000 || &r.Dst[0] != &first[0] || r.DstFile != filepath.Join(dir, "big.txt") {
			t.Fatalf("rule %s: %d prefixes from %s, shared %v", r.Name, len(r.Dst), r.DstFile, &r.Dst[0] == &first[0])
		}
	}
	// A rule with inline addresses too has a list of its own: appending
	// to it did not write into the shared one.
	if mixed := cfg.Rules[101].Dst; len(mixed) != 10_001 || &mixed[1] == &first[0] || cap(first) != len(first) {
		t.Errorf("mixed rule: %d prefixes", len(mixed))
	}
}

// TestTooManyRuleAddresses checks the bound on the addresses of all rules
// together, which a list named by many rules multiplies.
func TestTooManyRuleAddresses(t *testing.T) {
	reads := countListReads(t)
	dir := t.TempDir()
	var list strings.Builder
	for i := range 100_000 {
		fmt.Fprintf(&list, "10.%d.%d.0/24\n", i>>8&255, i&255)
	}
	if err := os.WriteFile(filepath.Join(dir, "big.txt"), []byte(list.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString(head + "rules:\n")
	for i := range 25 {
		fmt.Fprintf(&b, "  - {name: r%d, src_file: big.txt, wan: a}\n", i)
	}
	path := filepath.Join(dir, "m.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	want := path + ":25:6: the rules hold more than 2000000 addresses and prefixes in all, counting a list once per rule that uses it; share long lists among fewer rules"
	if err == nil || err.Error() != want {
		t.Errorf("Load = %v\nwant %s", err, want)
	}
	if *reads != 1 {
		t.Errorf("the list file was read %d times", *reads)
	}
}

// cpuTime is the CPU time the process has used, all threads: unlike the
// time on the clock it does not grow when other processes load the machine.
func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestPathological runs the inputs users reported to hang multiwan or
// exhaust its memory, and a few more of the kind, each of which must now be
// refused within a second of CPU time, allocating little beyond the file.
// The race detector slows everything about tenfold; the bound is then
// looser.
func TestPathological(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// 2.6 million addresses in 15 MB (the user's case): ::0 to ::fff over
	// and over; and 650,000 of them within the 4 MiB a file may have.
	var cycle strings.Builder
	for i := range 0x1000 {
		fmt.Fprintf(&cycle, "::%x,", i)
	}
	inlineN := func(n int) string {
		var inline strings.Builder
		inline.WriteString(head + "rules:\n  - name: big\n    wan: a\n    dst: [")
		inline.WriteString(strings.Repeat(cycle.String(), n/0x1000+1))
		inline.WriteString("]\n")
		return inline.String()
	}
	if n := len(inlineN(650_000)); n > maxConfigBytes {
		t.Fatalf("the inline case is %d bytes", n)
	}
	var aliased strings.Builder
	aliased.WriteString(head + "rules:\n  - {name: r0, src_file: &f /dev/zero, wan: a}\n")
	for i := 1; i < 300; i++ {
		fmt.Fprintf(&aliased, "  - {name: r%d, src_file: *f, wan: a}\n", i)
	}
	for _, tt := range []struct {
		name, path, want string
		// maxAlloc bounds what Load allocates besides the file it
		// reads whole.
		maxAlloc uint64
		maxCPU   time.Duration
	}{
		{"100,000 nested [", write("nested.yaml", "wans: "+strings.Repeat("[", 100_000)),
			"1:71: flow collections ('[' and '{') nested more than 64 deep", 1 << 20, time.Second},
		{"2.6 million inline addresses", write("inline.yaml", inlineN(2_600_000)),
			"1:1: config file is larger than 4 MiB", 1 << 20, time.Second},
		{"650,000 inline addresses", write("inline4.yaml", inlineN(650_000)),
			"7:296349: more than 50000 values; move long address lists into list files (src_file/dst_file)", 1 << 20, time.Second},
		{"/dev/zero", "/dev/zero", "/dev/zero:1:1: config file is a character device, not a regular file", 1 << 20, time.Second},
		{"/dev/zero list file aliased 300 times", write("aliased.yaml", aliased.String()),
			"5:29: src_file: list file /dev/zero is a character device, not a regular file", 4 << 20, time.Second},
		// Refused once tokenized (the tokens are what each empty value
		// would copy): the tokenizer's cost is linear, about 300 bytes
		// and a microsecond a token.
		{"150,000 empty list items", write("nulls.yaml", "x:\n"+strings.Repeat("  -\n", 150_000)),
			"670:3: too many empty values (keys or list items with nothing after them) for a file this long; write null where a value is meant to be empty", 256 << 20, 3 * time.Second},
		{"2 million comments", write("comments.yaml", strings.Repeat("#\n", 2_000_000)),
			"200001:1: more than 200000 words, brackets and commas; move long address lists into list files (src_file/dst_file)", 1 << 20, time.Second},
		{"a 4 MiB value", write("long.yaml", "x: "+strings.Repeat("x", maxConfigBytes-10)),
			"1:4: a value longer than 4096 bytes", 1 << 20, time.Second},
		{"1,000 nested block mappings", write("deep.yaml", blockNest(1000)),
			"65:129: block collections nested more than 64 deep", 1 << 20, time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start, cpu := time.Now(), cpuTime(t)
			_, err := Load(tt.path)
			took, cpu := time.Since(start), cpuTime(t)-cpu
			runtime.ReadMemStats(&after)
			alloc := after.TotalAlloc - before.TotalAlloc
			t.Logf("%v (CPU %v), %d MB allocated", took.Round(time.Millisecond), cpu.Round(time.Millisecond), alloc>>20)
			want := tt.want
			if !strings.HasPrefix(want, "/") {
				want = tt.path + ":" + want
			}
			if err == nil || err.Error() != want {
				t.Errorf("Load = %.300v\nwant %s", err, want)
			}
			maxCPU := tt.maxCPU
			if raceEnabled {
				maxCPU *= 20
			}
			if cpu > maxCPU {
				t.Errorf("took %v of CPU time", cpu)
			}
			if st, _ := os.Stat(tt.path); alloc > uint64(st.Size())+tt.maxAlloc {
				t.Errorf("allocated %d MB", alloc>>20)
			}
		})
	}
}

// TestSocketPathBounded checks that the client's lenient read of the
// socket path is as bounded as Load.
func TestSocketPathBounded(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	nested := filepath.Join(dir, "nested.yaml")
	if err := os.WriteFile(nested, []byte("control:\n  socket: /run/n.sock\nx: "+strings.Repeat("[", 100_000)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bomb := filepath.Join(dir, "bomb.yaml")
	var b strings.Builder
	b.WriteString("control: {socket: /run/b.sock}\nm0: &m0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&b, "m%d: &m%d [*m%d, *m%d, *m%d, *m%d, *m%d, *m%d, *m%d, *m%d, *m%d, *m%d]\n", i, i, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1)
	}
	b.WriteString("rules: [{name: r, dst: *m9, wan: a}]\n")
	if err := os.WriteFile(bomb, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"/dev/zero": DefaultSocket,
		fifo:        DefaultSocket,
		nested:      "/run/n.sock", // past the limits: found by the line fallback
		bomb:        "/run/b.sock",
	} {
		done := make(chan string, 1)
		go func() { done <- SocketPath(path) }()
		select {
		case got := <-done:
			if got != want {
				t.Errorf("SocketPath(%s) = %q, want %q", filepath.Base(path), got, want)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("SocketPath(%s) hangs", path)
		}
	}
}
