package config

import (
	"strconv"
	"strings"
)

// Writing configs: `multiwan init` and `multiwan import mwan3` both
// produce config text, and both need the same two things from it: a
// scalar that reads back as the same string, and a name that passes the
// checks a name must pass.

// Quote returns s as a YAML scalar: plain when that reads back as the same
// string, double-quoted otherwise.
func Quote(s string) string {
	if plainSafe(s) {
		return s
	}
	return strconv.Quote(s)
}

func plainSafe(s string) bool {
	if s == "" {
		return false
	}
	switch strings.ToLower(s) {
	case "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~", ".nan", ".inf", "-.inf":
		return false
	}
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return false
	}
	if _, err := strconv.ParseInt(s, 0, 64); err == nil {
		return false
	}
	for i, c := range []byte(s) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_':
		case (c == '-' || c == '.' || c == '@' || c == '+') && i > 0:
		default:
			return false
		}
	}
	return true
}

// FlowList is a YAML flow sequence of the values, each quoted by Quote.
func FlowList(values []string) string {
	q := make([]string, len(values))
	for i, v := range values {
		q[i] = Quote(v)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// UniqueName makes a valid name from s: lower case, characters outside
// [a-z0-9_-] replaced by '_', at most max characters, fallback when
// nothing is left, not "auto", and distinct from every name in taken also
// where '-' is read as '_' (as nft reads it: NFTName). It records the name
// in taken.
func UniqueName(s, fallback string, max int, taken map[string]bool) string {
	b := []byte(strings.ToLower(s))
	for i, c := range b {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			b[i] = '_'
		}
	}
	base := string(b)
	if len(base) > max {
		base = base[:max]
	}
	if base == "" {
		base = fallback
	}
	name := base
	for n := 2; name == "auto" || taken[NFTName(name)]; n++ {
		suffix := "_" + strconv.Itoa(n)
		name = base[:min(len(base), max-len(suffix))] + suffix
	}
	taken[NFTName(name)] = true
	return name
}

// Wrap splits text into lines of at most width bytes at spaces, for the
// comments of a written config (a longer word gets a line of its own).
// Newlines in text start new lines.
func Wrap(text string, width int) []string {
	var out []string
	for _, para := range strings.Split(text, "\n") {
		line := ""
		for _, word := range strings.Fields(para) {
			switch {
			case line == "":
				line = word
			case len(line)+1+len(word) <= width:
				line += " " + word
			default:
				out = append(out, line)
				line = word
			}
		}
		out = append(out, line)
	}
	return out
}
