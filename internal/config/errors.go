package config

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Error is one problem in a config file, at the position of the offending
// key or value.
type Error struct {
	File      string
	Line, Col int
	Msg       string
}

// Error formats e as FILE:LINE:COL: message, the form editors and CI logs
// recognise. Without a file name it is LINE:COL: message.
func (e *Error) Error() string {
	if e.File == "" {
		return fmt.Sprintf("%d:%d: %s", e.Line, e.Col, e.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
}

// ErrorList is every problem found in a config file, sorted by position.
// Parse returns one whenever the file is invalid.
type ErrorList []*Error

// Error joins the errors, one per line.
func (l ErrorList) Error() string {
	return strings.Join(l.Lines(), "\n")
}

// Lines returns the errors formatted one per element.
func (l ErrorList) Lines() []string {
	lines := make([]string, len(l))
	for i, e := range l {
		lines[i] = e.Error()
	}
	return lines
}

// sorted orders the errors by file, the config file's first (named main,
// then list files in the order their first error was found), then by
// position, and drops exact repeats. Errors at the same position keep the
// order they were found in.
func (l ErrorList) sorted(main string) ErrorList {
	seen := make(map[Error]bool, len(l))
	rank := map[string]int{main: 0}
	out := make(ErrorList, 0, len(l))
	for _, e := range l {
		if !seen[*e] {
			seen[*e] = true
			out = append(out, e)
		}
		if _, ok := rank[e.File]; !ok {
			rank[e.File] = len(rank)
		}
	}
	slices.SortStableFunc(out, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(rank[a.File], rank[b.File]), cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col))
	})
	return out
}
