package config

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml/lexer"
	"github.com/goccy/go-yaml/token"
)

// FuzzParse checks that no input makes Parse panic, and that every error it
// reports carries a real position.
func FuzzParse(f *testing.F) {
	full, err := os.ReadFile("testdata/full.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(full)
	for _, tt := range errorTests {
		f.Add([]byte(tt.yaml))
	}
	for _, tt := range refusalTests {
		if !strings.Contains(tt.yaml, "{{dir}}") {
			f.Add([]byte(tt.yaml))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		defer watchdog(data)()
		cfg, err := Parse("f.yaml", data)
		if err == nil {
			if cfg == nil {
				t.Fatal("Parse returned neither a config nor an error")
			}
			return
		}
		if cfg != nil {
			t.Error("Parse returned a config along with errors")
		}
		var list ErrorList
		if !errors.As(err, &list) || len(list) == 0 {
			t.Fatalf("error %T %q is not a non-empty ErrorList", err, err)
		}
		for _, e := range list {
			if e.Line < 1 || e.Col < 1 {
				t.Errorf("error without a position: %q", e.Error())
			}
		}
	})
}

// FuzzPrescan checks that prescan never panics, that its problems point
// into the file, and that it follows the YAML library's scanner: the flow
// nesting the library's tokens reach is never deeper than the one prescan
// saw, or prescan could let a nesting bomb through to the parser.
func FuzzPrescan(f *testing.F) {
	for _, tt := range errorTests {
		f.Add([]byte(tt.yaml))
	}
	for _, tt := range refusalTests {
		f.Add([]byte(tt.yaml))
	}
	for _, s := range []string{
		"a: foo\n  'bar\nb: [[x]]\nc: '\n",
		"- foo\n  \"bar\n- [[x]]\n- \"\n",
		"a: |\n  [[[\nb: [[1]]\n",
		"{a: \"x #\", b: [[1]]}\n",
		"a: b#c [\n",
		"]]][[[\n",
		"a: &x [1]\nb: *x\n",
		"? [a]\n: [b]\n",
		"--- [a]\n... \n--- {b: c}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		defer watchdog(data)()
		data = normalize(data)
		s := prescanner{data: data, line: 1, col: 1}
		s.run()
		p := s.err
		if p == nil {
			p = countWords(data)
		}
		if p != nil {
			if lines := bytes.Count(data, []byte{'\n'}) + 1; p.pos.Line < 1 || p.pos.Line > lines || p.pos.Col < 1 {
				t.Fatalf("problem at %d:%d in %d lines: %s", p.pos.Line, p.pos.Col, lines, p.msg)
			}
			return
		}
		// The library mis-scans tabs in quoted text: after "\t0" it
		// drops the character following the closing quote. prescan does
		// not follow it there; checkTokens covers what it misses.
		if bytes.IndexByte(data, '\t') >= 0 {
			return
		}
		tks := lexer.Tokenize(string(data))
		if tks.InvalidToken() != nil {
			return
		}
		depth, deepest := 0, 0
		for _, tk := range tks {
			switch tk.Type {
			case token.SequenceStartType, token.MappingStartType:
				depth++
				deepest = max(deepest, depth)
			case token.SequenceEndType, token.MappingEndType:
				depth--
			}
		}
		if deepest > s.deepest {
			t.Fatalf("the library's tokens nest %d deep, prescan saw %d", deepest, s.deepest)
		}
	})
}

// FuzzParseList checks that no list file makes parseList panic, that its
// errors point into the file, and that what it returns is valid.
func FuzzParseList(f *testing.F) {
	for _, s := range []string{
		"# metered devices\n198.51.100.7\n\n198.51.100.64/26   # cameras\n198.51.100.7\n",
		"203.0.113.0/24\n  10.0.0.1/8\nnot-an-address\n203.0.113.5 203.0.113.6\n",
		"\ufeff2001:db8::/32\r\n::ffff:192.0.2.1\r\nfe80::1%eth0\r\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		list, errs := parseList("l.txt", data)
		if len(list) > maxListEntries {
			t.Fatalf("%d entries", len(list))
		}
		for _, p := range list {
			if !p.IsValid() || p.Masked() != p || p.Addr().Zone() != "" {
				t.Fatalf("invalid entry %v", p)
			}
			if p.Addr().Is4() && p.Bits() > 32 || p != netip.PrefixFrom(p.Addr(), p.Bits()) {
				t.Fatalf("odd entry %v", p)
			}
		}
		lines := bytes.Count(data, []byte{'\n'}) + 1
		for _, e := range errs {
			if e.File != "l.txt" || e.Line < 1 || e.Line > lines || e.Col < 1 {
				t.Fatalf("error %q in %d lines", e.Error(), lines)
			}
		}
	})
}

// watchdog panics, naming the input, if the call it is deferred in takes
// more than a few seconds: a hang is a failure the fuzzer should keep, but
// it only records inputs that fail, not inputs it gave up waiting for.
func watchdog(data []byte) (stop func()) {
	done := make(chan bool)
	go func() {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			panic(fmt.Sprintf("still running after 10s on %q", data))
		}
	}()
	return func() { close(done) }
}
