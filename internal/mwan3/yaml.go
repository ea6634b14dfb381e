package mwan3

import (
	"strconv"
	"strings"

	"github.com/multiwan/multiwan/internal/config"
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
	for _, l := range config.Wrap(text, commentWidth-len(indent)-2) {
		w.line(indent, "# "+l)
	}
}

// block is YAML lines (relative indentation included) that can be
// written commented out as a whole.
type block []string

func (b *block) add(s string) { *b = append(*b, s) }

// addComment adds a wrapped comment at indent.
func (b *block) addComment(indent, text string) {
	for _, l := range config.Wrap(text, commentWidth-len(indent)-6) {
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

// q quotes a value of the mwan3 file for a comment: one line, escaped.
func q(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return "'" + strings.Trim(strconv.Quote(s), `"`) + "'"
}
