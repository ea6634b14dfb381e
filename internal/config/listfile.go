package config

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// Limits of a list file (`src_file`, `dst_file`). They bound what an
// untrusted or mistaken file can cost; real lists (countries, streaming
// services, metered devices) are far smaller.
const (
	maxListBytes   = 64 << 20
	maxListEntries = 1_000_000
)

// listFile reads the addresses and prefixes of the list file named by v:
// one per line, `#` starts a comment, blank lines are ignored. A relative
// path is taken from the config file's directory. Errors in the file are
// reported as LIST:LINE:COL; a file that cannot be read, at v.
func (d *decoder) listFile(v value) (string, []netip.Prefix) {
	name, ok := v.str()
	if !ok {
		return "", nil
	}
	path := name
	if !filepath.IsAbs(path) {
		path = filepath.Join(filepath.Dir(d.file), path)
	}
	f, err := os.Open(path)
	if err != nil {
		v.errorf("cannot read list file: %v", err)
		return path, nil
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxListBytes+1))
	if err != nil {
		v.errorf("cannot read list file %s: %v", path, err)
		return path, nil
	}
	if len(data) > maxListBytes {
		v.errorf("list file %s is larger than %d MiB", path, maxListBytes>>20)
		return path, nil
	}
	prefixes, errs := parseList(path, data)
	d.errs = append(d.errs, errs...)
	if len(prefixes) == 0 && len(errs) == 0 {
		// An empty list would leave the rule without this match, so it
		// would match everything: never what an empty file means.
		v.errorf("list file %s has no addresses", path)
	}
	return path, prefixes
}

// parseList parses the text of a list file.
func parseList(path string, data []byte) ([]netip.Prefix, ErrorList) {
	var out []netip.Prefix
	var errs ErrorList
	fail := func(line, col int, format string, args ...any) {
		errs = append(errs, &Error{File: path, Line: line, Col: col, Msg: fmt.Sprintf(format, args...)})
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
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
