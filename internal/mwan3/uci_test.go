package mwan3

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// dump renders a parsed file compactly for comparisons.
func dump(u *UCI) string {
	var b strings.Builder
	if u.Package != "" {
		fmt.Fprintf(&b, "package %s\n", u.Package)
	}
	for _, s := range u.Sections {
		fmt.Fprintf(&b, "%s %q @%d:%d\n", s.Type, s.Name, s.Pos.Line, s.Pos.Col)
		for _, o := range s.Options {
			kind := "option"
			if o.List {
				kind = "list"
			}
			fmt.Fprintf(&b, "  %s %s %q", kind, o.Name, o.Values)
			for _, at := range o.At {
				fmt.Fprintf(&b, " @%d:%d", at.Line, at.Col)
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

func TestParseUCISyntax(t *testing.T) {
	for _, c := range []struct{ name, in, want string }{
		{"usual", "config interface 'wan'\n\toption enabled '1'\n\tlist track_ip '1.1.1.1'\n\tlist track_ip \"9.9.9.9\"\n",
			"interface \"wan\" @1:1\n  option enabled [\"1\"] @2:17\n  list track_ip [\"1.1.1.1\" \"9.9.9.9\"] @3:16 @4:16\n"},
		{"one-letter keywords and semicolons", "c interface wan; o enabled 1; l track_ip 1.1.1.1\n",
			"interface \"wan\" @1:1\n  option enabled [\"1\"] @1:28\n  list track_ip [\"1.1.1.1\"] @1:42\n"},
		{"comments", "# head\nconfig rule r # trailing\n\toption proto tcp#comment\n  # indented\n",
			"rule \"r\" @2:1\n  option proto [\"tcp\"] @3:15\n"},
		{"escapes", "config rule r\n\toption a \"x\\\"y\\\\z\"\n\toption b 'x\\y'\n\toption c x\\ y\n",
			"rule \"r\" @1:1\n  option a [\"x\\\"y\\\\z\"] @2:11\n  option b [\"x\\\\y\"] @3:11\n  option c [\"x y\"] @4:11\n"},
		{"concatenation", "config rule r\n\toption a 'x'\"y\"z\n",
			"rule \"r\" @1:1\n  option a [\"xyz\"] @2:11\n"},
		{"multi-line quotes", "config rule r\n\toption a 'one\ntwo'\n\toption b 2\n",
			"rule \"r\" @1:1\n  option a [\"one\\ntwo\"] @2:11\n  option b [\"2\"] @4:11\n"},
		{"continued line", "config rule r\n\toption a x\\\ny\n",
			"rule \"r\" @1:1\n  option a [\"xy\"] @2:11\n"},
		{"CRLF and BOM", "\ufeffconfig rule 'r'\r\n\toption a 'b'\r\n",
			"rule \"r\" @1:4\n  option a [\"b\"] @2:11\n"},
		{"repeats", "config rule r\n\toption a 1\n\toption a 2\n\tlist l x\n\tlist l y\n\toption l z\nconfig rule r\n\tlist a 3\n",
			"rule \"r\" @1:1\n  list a [\"2\" \"3\"] @3:11 @8:9\n  option l [\"z\"] @6:11\n"},
		{"empty value deletes", "config rule r\n\toption a 1\n\toption a ''\n\toption b\n", "rule \"r\" @1:1\n"},
		{"anonymous and package", "package mwan3\nconfig rule\n\toption a 1\nconfig rule\n",
			"package mwan3\nrule \"\" @2:1\n  option a [\"1\"] @3:11\nrule \"\" @4:1\n"},
	} {
		u, err := ParseUCI("f", []byte(c.in))
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if got := dump(u); got != c.want {
			t.Errorf("%s:\ngot:\n%s\nwant:\n%s", c.name, got, c.want)
		}
	}
}

func TestParseUCIErrors(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"option a 1\n", "f:1:1: option outside a section: a `config TYPE 'NAME'` line must come first"},
		{"\tlist a 1\n", "f:1:2: list outside a section: a `config TYPE 'NAME'` line must come first"},
		{"config rule r\n\toption a 'x\n", "f:2:11: unterminated ' quote: the value runs to the end of the file"},
		{"config rule r\n\toption a \"x\\\"\n", "f:2:11: unterminated \" quote: the value runs to the end of the file"},
		{"config rule 'r\n\toption a 'x'\n", "f:2:13: unterminated ' quote: the value runs to the end of the file; the quote at 1:13 runs over 2 lines, which UCI allows: is a closing quote missing there?"},
		{"config rule r\n\toption a b c\n", "f:2:13: too many arguments: \"c\"; a value with blanks needs quotes"},
		{"config\n", "f:1:1: config without a section type"},
		{"config rule r\n\toption\n", "f:2:2: option without a name"},
		{"config rule my-rule\n", "f:1:13: invalid name \"my-rule\": only letters, digits and _"},
		{"config rule r\n\toption a.b 1\n", "f:2:9: invalid name \"a.b\": only letters, digits and _"},
		{"config 'a b' r\n", "f:1:8: invalid section type \"a b\": only printable characters, no blanks"},
		{"interface wan\n", "f:1:1: unknown statement \"interface\": expected config, option, list or package"},
		{"config rule r\nconfig policy r\n", "f:2:15: section \"r\" of type \"policy\" was already defined as \"rule\" (1:1)"},
		{"package my.pkg\n", "f:1:9: invalid name \"my.pkg\": only letters, digits and _"},
		// Errors are all found, in order, parsing going on at the next line.
		{"option a 1\nconfig rule r\n\topt x\n\toption ok 1\n\toption b 'c' d\n",
			"f:1:1: option outside a section: a `config TYPE 'NAME'` line must come first\n" +
				"f:3:2: unknown statement \"opt\": expected config, option, list or package\n" +
				"f:5:15: too many arguments: \"d\"; a value with blanks needs quotes"},
	} {
		_, err := ParseUCI("f", []byte(c.in))
		var list ErrorList
		if !errors.As(err, &list) {
			t.Errorf("%q: err %v, want an ErrorList", c.in, err)
			continue
		}
		if got := err.Error(); got != c.want {
			t.Errorf("%q:\ngot  %s\nwant %s", c.in, got, c.want)
		}
	}
}

func TestParseUCITooManyErrors(t *testing.T) {
	_, err := ParseUCI("f", []byte(strings.Repeat("bogus\n", 1000)))
	var list ErrorList
	if !errors.As(err, &list) || len(list) != maxUCIErrors+1 || !strings.Contains(list[len(list)-1].Msg, "too many errors") {
		t.Fatalf("%d errors, last %v", len(list), list[len(list)-1])
	}
	if _, err := ParseUCI("f", make([]byte, maxUCIBytes+1)); err == nil || !strings.Contains(err.Error(), "f:1:1: file is larger than 4 MiB") {
		t.Fatalf("large file: %v", err)
	}
}

// exportUCI writes u back in UCI syntax, every name and value single-quoted,
// as `uci export` does.
func exportUCI(u *UCI) string {
	quote := func(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
	var b strings.Builder
	if u.Package != "" {
		b.WriteString("package " + u.Package + "\n")
	}
	for _, s := range u.Sections {
		b.WriteString("\nconfig " + quote(s.Type))
		if s.Name != "" {
			b.WriteString(" " + quote(s.Name))
		}
		b.WriteString("\n")
		for _, o := range s.Options {
			kind := "option"
			if o.List {
				kind = "list"
			}
			for _, v := range o.Values {
				fmt.Fprintf(&b, "\t%s %s %s\n", kind, o.Name, quote(v))
			}
		}
	}
	return b.String()
}

// structure is dump without positions.
func structure(u *UCI) string {
	var b strings.Builder
	fmt.Fprintf(&b, "package %q\n", u.Package)
	for _, s := range u.Sections {
		fmt.Fprintf(&b, "%q %q\n", s.Type, s.Name)
		for _, o := range s.Options {
			fmt.Fprintf(&b, "  %v %q %q\n", o.List, o.Name, o.Values)
		}
	}
	return strings.ReplaceAll(b.String(), `\r\n`, `\n`)
}

// FuzzParseUCI: whatever the input, ParseUCI returns (no panic, bounded),
// errors are FILE:LINE:COL within the file, a parsed file written back
// in UCI syntax parses to the same sections and options, and Convert
// either reports errors with positions or yields a config that multiwan
// validates.
func FuzzParseUCI(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.mwan3")
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err == nil {
			f.Add(data)
		}
	}
	for _, s := range []string{"c rule r; o a 'b'\"c\"\\ d", "config rule 'r\n\toption a 'x'\n", "config interface wan\n\toption enabled 1\n\tlist track_ip 1.1.1.1\nconfig member m\n\toption interface wan\nconfig policy p\n\tlist use_member m\nconfig rule r\n\toption dest_ip ::/0\n\toption use_policy p\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		u, err := ParseUCI("f", data)
		lines := strings.Count(string(data), "\n") + 1
		if err != nil {
			var list ErrorList
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("error %v is not an ErrorList", err)
			}
			for _, e := range list {
				if e.Line < 1 || e.Line > lines || e.Col < 1 || e.File != "f" {
					t.Fatalf("error outside the file (%d lines): %v", lines, e)
				}
			}
			return
		}
		out := exportUCI(u)
		u2, err := ParseUCI("g", []byte(out))
		if err != nil {
			t.Fatalf("exported file does not parse: %v\n%s", err, out)
		}
		if a, b := structure(u), structure(u2); a != b {
			t.Fatalf("round trip changed the file:\n%s\nvs\n%s", a, b)
		}
		res, err := Convert("f", data)
		if err != nil {
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("Convert: %v", err)
			}
			return
		}
		if !strings.Contains(res.YAML, "default_policy:") {
			t.Fatalf("no default_policy:\n%s", res.YAML)
		}
	})
}
