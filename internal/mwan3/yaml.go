package mwan3

import (
	"strconv"
	"strings"
)

// commentWidth is where comments are wrapped.
const commentWidth = 78

// writer builds YAML text: lines, wrapped comments, and blocks that are
// written either live or commented out.
type writer struct{ b strings.Builder }

func (w *writer) line(indent, s string) { w.b.WriteString(strings.TrimRight(indent+s, " ") + "\n") }

func (w *writer) blank() { w.b.WriteString("\n") }

// comment writes text as '#' comment lines at indent, wrapped.
func (w *writer) comment(indent, text string) {
	for _, l := range wrap(text, commentWidth-len(indent)-2) {
		w.line(indent, "# "+l)
	}
}

// block is YAML lines (relative indentation included) that can be
// written commented out as a whole.
type block []string

func (b *block) add(s string) { *b = append(*b, s) }

// addComment adds a wrapped comment at indent.
func (b *block) addComment(indent, text string) {
	for _, l := range wrap(text, commentWidth-len(indent)-6) {
		b.add(indent + "# " + l)
	}
}

// write writes the block at indent; commented, each line becomes a
// comment (comments inside stay comments).
func (w *writer) write(indent string, b block, commented bool) {
	for _, l := range b {
		if commented && !strings.HasPrefix(strings.TrimSpace(l), "#") {
			w.line(indent, "# "+l)
		} else {
			w.line(indent, l)
		}
	}
}

// wrap splits text into lines of at most width bytes at spaces (a longer
// word gets a line of its own).
func wrap(text string, width int) []string {
	var out []string
	line := ""
	for _, word := range strings.Fields(text) {
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
	return append(out, line)
}

// yq returns s as a YAML scalar: plain when that reads back as the same
// string, double-quoted otherwise.
func yq(s string) string {
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

// flow is a YAML flow sequence of the values.
func flow(values []string) string {
	q := make([]string, len(values))
	for i, v := range values {
		q[i] = yq(v)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// q quotes a value of the mwan3 file for a comment: one line, escaped.
func q(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return "'" + strings.Trim(strconv.Quote(s), `"`) + "'"
}
