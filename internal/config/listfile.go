package config

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
)

// Limits of a list file (`src_file`, `dst_file`). They bound what an
// untrusted or mistaken file can cost; real lists (countries, streaming
// services, metered devices) are far smaller.
const (
	maxListBytes   = 64 << 20
	maxListEntries = 1_000_000
	// maxRuleAddrs bounds the addresses and prefixes of all rules
	// together, counting a list once per rule that uses it: each rule's
	// lists become nft sets of its own, so a long list named by many
	// rules multiplies the planner's work and the kernel's memory.
	maxRuleAddrs = 2 * maxListEntries
)

// readListFile reads a list file; a variable so that tests can count reads.
var readListFile = func(path string) ([]byte, error) { return readRegular(path, maxListBytes) }

// listFile reads the addresses and prefixes of the list file named by v:
// one per line, `#` starts a comment, blank lines are ignored. A relative
// path is taken from the config file's directory. Errors in the file are
// reported as LIST:LINE:COL; a file that cannot be read, at v.
//
// Each file is read and parsed once per load, however many rules name it
// (through aliases or not): its errors are reported once, at the first
// rule, and later rules share the result.
func (d *decoder) listFile(v value) (string, []netip.Prefix) {
	name, ok := v.str()
	if !ok {
		return "", nil
	}
	path := filepath.Clean(name)
	if !filepath.IsAbs(path) {
		path = filepath.Join(filepath.Dir(d.file), path)
	}
	if list, ok := d.lists[path]; ok {
		return path, list
	}
	if d.lists == nil {
		d.lists = map[string][]netip.Prefix{}
	}
	d.lists[path] = nil // until read: an error is reported once
	data, err := readListFile(path)
	if p, ok := err.(*fileProblem); ok {
		v.errorf("list file %s %s", path, p.msg)
		return path, nil
	}
	if err != nil {
		v.errorf("cannot read list file: %v", err)
		return path, nil
	}
	prefixes, errs := parseList(path, data)
	for _, e := range errs {
		d.report(*e)
	}
	if len(prefixes) == 0 && len(errs) == 0 {
		// An empty list would leave the rule without this match, so it
		// would match everything: never what an empty file means.
		v.errorf("list file %s has no addresses", path)
	}
	// Rules share the list: nothing appends to it in place (see
	// addPrefixes).
	d.lists[path] = slices.Clip(prefixes)
	return path, d.lists[path]
}

// parseList parses the text of a list file.
func parseList(path string, data []byte) ([]netip.Prefix, ErrorList) {
	var out []netip.Prefix
	var errs ErrorList
	fail := func(line, col int, format string, args ...any) {
		errs = append(errs, &Error{File: path, Line: line, Col: col, Msg: fmt.Sprintf(format, args...)})
	}
	sc := bufio.NewScanner(bytes.NewReader(bytes.TrimPrefix(data, utf8BOM)))
	sc.Buffer(make([]byte, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		text := strings.TrimSpace(line)
		if text == "" {
			continue
		}
		col := strings.Index(line, text) + 1
		if len(out) == maxListEntries {
			fail(n, col, "more than %d entries", maxListEntries)
			break
		}
		if len(errs) >= 20 {
			fail(n, col, "too many errors; stopping")
			break
		}
		if strings.ContainsAny(text, " \t") {
			fail(n, col, "one address or prefix per line, got %q", text)
			continue
		}
		if !strings.Contains(text, "/") {
			a, err := netip.ParseAddr(text)
			if err != nil || a.Zone() != "" {
				fail(n, col, "expected an IP address or CIDR prefix, got %q", text)
				continue
			}
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(text)
		if err != nil {
			fail(n, col, "expected an IP address or CIDR prefix, got %q", text)
			continue
		}
		if m := p.Masked(); m != p {
			fail(n, col, "%s has host bits set; did you mean %s?", text, m)
			continue
		}
		out = append(out, p)
	}
	if err := sc.Err(); err != nil {
		fail(1, 1, "%v", err)
	}
	return out, errs
}
