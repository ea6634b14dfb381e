// Package mwan3 converts an OpenWrt mwan3 configuration
// (/etc/config/mwan3, UCI syntax) into a multiwan config
// (`multiwan import mwan3 FILE`).
//
// uci.go reads the UCI file format as libuci does; convert.go maps
// mwan3's sections onto multiwan's keys, with a comment on everything that
// cannot carry over.
package mwan3

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Pos is a position in a file, 1-based; Col counts bytes.
type Pos struct{ Line, Col int }

// Error is a problem at a position of a file.
type Error struct {
	File      string
	Line, Col int
	Msg       string
}

// Error formats e as FILE:LINE:COL: message.
func (e *Error) Error() string {
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
}

// ErrorList is every problem found, in file order.
type ErrorList []*Error

func (l ErrorList) Error() string {
	lines := make([]string, len(l))
	for i, e := range l {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// UCI is a parsed UCI file.
type UCI struct {
	// Package is the name a `package` statement gave, if any.
	Package    string
	PackagePos Pos
	Sections   []*Section
}

// Section is one `config TYPE ['NAME']` with its options. Sections of
// the same name are merged, as libuci does.
type Section struct {
	Type string
	// Name is empty for an anonymous section.
	Name    string
	Pos     Pos // of the `config` keyword
	TypePos Pos
	Options []*Option
}

// Option is an `option NAME VALUE` (the last one written wins) or a
// `list NAME VALUE` (values accumulate).
type Option struct {
	Name   string
	List   bool
	Values []string
	Pos    Pos   // of the option's name
	At     []Pos // of each value
}

// Value is an option's (last) value, "" if unset.
func (s *Section) Value(name string) (string, Pos, bool) {
	o := s.Option(name)
	if o == nil || len(o.Values) == 0 {
		return "", Pos{}, false
	}
	return o.Values[len(o.Values)-1], o.At[len(o.At)-1], true
}

// Option returns the named option, nil if absent.
func (s *Section) Option(name string) *Option {
	for _, o := range s.Options {
		if o.Name == name {
			return o
		}
	}
	return nil
}

// Limits on what ParseUCI reads: a hostile file must not cost much.
const (
	maxUCIBytes  = 4 << 20
	maxUCIErrors = 50
)

// ParseUCI parses a UCI file as libuci does (uci_import, strict): `package
// NAME`, `config TYPE ['NAME']`, `option NAME VALUE`, `list NAME VALUE`
// (or their one-letter forms), values in single quotes (taken literally),
// double quotes (backslash escapes) or bare (backslash escapes), quoted
// values may span lines, a backslash at the end of a line continues it,
// `#` starts a comment, `;` separates statements. Errors are reported as
// FILE:LINE:COL; parsing goes on at the next line, so all are found (up to
// 50).
func ParseUCI(file string, data []byte) (*UCI, error) {
	p := &parser{file: file, data: data, line: 1, col: 1}
	if len(data) > maxUCIBytes {
		p.errorf(Pos{1, 1}, "file is larger than %d MiB", maxUCIBytes>>20)
		return nil, p.errs
	}
	if strings.HasPrefix(string(data), "\ufeff") {
		p.data = data[3:]
		p.col = 4
	}
	u := &UCI{}
	p.parse(u)
	if len(p.errs) > 0 {
		slices.SortStableFunc(p.errs, func(a, b *Error) int {
			return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col))
		})
		return nil, p.errs
	}
	return u, nil
}

type parser struct {
	file      string
	data      []byte
	i         int
	line, col int
	errs      ErrorList
	// section is the one options go to; nil before the first `config`.
	section *Section
	byName  map[string]*Section
	// spanned is where the first quoted value that spans lines starts,
	// for the message when a quote is never closed: the culprit is then
	// usually a missing quote there.
	spanned     Pos
	spannedSeen bool
}

// errAbort stops parsing after too many errors.
type errAbort struct{}

func (p *parser) errorf(at Pos, format string, args ...any) {
	if len(p.errs) >= maxUCIErrors {
		panic(errAbort{})
	}
	p.errs = append(p.errs, &Error{File: p.file, Line: at.Line, Col: at.Col, Msg: fmt.Sprintf(format, args...)})
	if len(p.errs) == maxUCIErrors {
		p.errs = append(p.errs, &Error{File: p.file, Line: at.Line, Col: at.Col, Msg: "too many errors, stopping"})
		panic(errAbort{})
	}
}

func (p *parser) pos() Pos { return Pos{p.line, p.col} }

func (p *parser) eof() bool { return p.i >= len(p.data) }

func (p *parser) peek() byte { return p.data[p.i] }

// next consumes one byte, keeping the position.
func (p *parser) next() byte {
	c := p.data[p.i]
	p.i++
	if c == '\n' {
		p.line++
		p.col = 1
	} else {
		p.col++
	}
	return c
}

// atLineEnd reports whether the next bytes end the line: "\n", "\r\n" or
// the end of the data.
func (p *parser) atLineEnd() bool {
	if p.eof() || p.peek() == '\n' {
		return true
	}
	return p.peek() == '\r' && (p.i+1 == len(p.data) || p.data[p.i+1] == '\n')
}

// skipLineEnd consumes a line end.
func (p *parser) skipLineEnd() {
	if !p.eof() && p.peek() == '\r' {
		p.next()
	}
	if !p.eof() && p.peek() == '\n' {
		p.next()
	}
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r'
}

// skipSpace skips blanks within the line.
func (p *parser) skipSpace() {
	for !p.eof() && isSpace(p.peek()) && !p.atLineEnd() {
		p.next()
	}
}

// skipLine skips the rest of the line, including its end.
func (p *parser) skipLine() {
	for !p.eof() && p.peek() != '\n' {
		p.next()
	}
	p.skipLineEnd()
}

func (p *parser) parse(u *UCI) {
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(errAbort); !ok {
				panic(r)
			}
		}
	}()
	p.byName = map[string]*Section{}
	for !p.eof() {
		p.statement(u)
	}
}

// token is one argument of a statement.
type token struct {
	s     string
	at    Pos
	empty bool // nothing was there (end of statement)
}

// statement parses one statement, up to the end of its line or a ';'. A
// statement with an error is dropped and parsing goes on at the next line.
func (p *parser) statement(u *UCI) {
	p.skipSpace()
	if p.eof() {
		return
	}
	switch c := p.peek(); {
	case p.atLineEnd():
		p.skipLineEnd()
		return
	case c == '#':
		p.skipLine()
		return
	case c == ';':
		p.next()
		return
	}
	cmdAt := p.pos()
	cmd, ok := p.arg()
	if !ok {
		p.skipLine()
		return
	}
	switch cmd.s {
	case "package", "p":
		name, ok := p.required(cmdAt, "package without a name")
		if !ok || !p.name(name, true) || !p.end() {
			return
		}
		u.Package, u.PackagePos = name.s, name.at
	case "config", "c":
		typ, ok := p.required(cmdAt, "config without a section type")
		if !ok {
			return
		}
		if !validType(typ.s) {
			p.errorf(typ.at, "invalid section type %s: only printable characters, no blanks", quote(typ.s))
			p.skipLine()
			return
		}
		name, ok := p.arg()
		if !ok {
			p.skipLine()
			return
		}
		// An empty name ('') makes an anonymous section, as in libuci.
		if name.s != "" && !p.name(name, false) {
			return
		}
		if !p.end() {
			return
		}
		p.config(u, cmdAt, typ, name)
	case "option", "o", "list", "l":
		list := cmd.s[0] == 'l'
		if p.section == nil {
			p.errorf(cmdAt, "%s outside a section: a `config TYPE 'NAME'` line must come first", cmd.s)
			p.skipLine()
			return
		}
		name, ok := p.required(cmdAt, cmd.s+" without a name")
		if !ok || !p.name(name, false) {
			return
		}
		value, ok := p.arg()
		if !ok {
			p.skipLine()
			return
		}
		if value.empty {
			value.at = name.at
		}
		if !p.end() {
			return
		}
		p.option(list, name, value)
	default:
		if cmd.empty {
			// A bare ';' or a quote-less "" at the start: nothing.
			return
		}
		p.errorf(cmdAt, "unknown statement %s: expected config, option, list or package", quote(cmd.s))
		p.skipLine()
	}
}

// required reads an argument that must be there.
func (p *parser) required(cmdAt Pos, msg string) (token, bool) {
	t, ok := p.arg()
	if !ok {
		p.skipLine()
		return t, false
	}
	if t.empty {
		p.errorf(cmdAt, "%s", msg)
		p.skipLine()
		return t, false
	}
	return t, true
}

// name checks a section, option or package name: letters, digits and '_'
// ('-' too in a package name), as libuci's uci_validate_name.
func (p *parser) name(t token, pkg bool) bool {
	if t.s == "" {
		p.errorf(t.at, "empty name")
		p.skipLine()
		return false
	}
	for _, c := range []byte(t.s) {
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || (pkg && c == '-') {
			continue
		}
		p.errorf(t.at, "invalid name %s: only letters, digits and _", quote(t.s))
		p.skipLine()
		return false
	}
	return true
}

// validType is libuci's uci_validate_type: printable ASCII, no blanks.
func validType(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c < 33 || c > 126 {
			return false
		}
	}
	return true
}

// end checks that the statement has no more arguments and moves to the
// next statement.
func (p *parser) end() bool {
	t, ok := p.arg()
	if !ok {
		p.skipLine()
		return false
	}
	if !t.empty {
		p.errorf(t.at, "too many arguments: %s; a value with blanks needs quotes", quote(t.s))
		p.skipLine()
		return false
	}
	return true
}

func (p *parser) config(u *UCI, at Pos, typ, name token) {
	if name.s != "" {
		if s := p.byName[name.s]; s != nil {
			if s.Type != typ.s {
				p.errorf(name.at, "section %s of type %s was already defined as %s (%d:%d)", quote(name.s), quote(typ.s), quote(s.Type), s.Pos.Line, s.Pos.Col)
				p.section = nil
				return
			}
			// libuci merges a repeated section into the first.
			p.section = s
			return
		}
	}
	s := &Section{Type: typ.s, Name: name.s, Pos: at, TypePos: typ.at}
	if name.s != "" {
		p.byName[name.s] = s
	}
	u.Sections = append(u.Sections, s)
	p.section = s
}

func (p *parser) option(list bool, name, value token) {
	o := p.section.Option(name.s)
	if o == nil {
		o = &Option{Name: name.s, Pos: name.at}
		p.section.Options = append(p.section.Options, o)
	}
	if !list {
		// `option` replaces whatever was there, list or not.
		o.List, o.Values, o.At = false, nil, nil
		if value.s == "" {
			// libuci: setting an empty value deletes the option.
			p.section.Options = slices.DeleteFunc(p.section.Options, func(x *Option) bool { return x == o })
			return
		}
	} else {
		o.List = true
	}
	o.Pos = name.at
	o.Values = append(o.Values, value.s)
	o.At = append(o.At, value.at)
}

// arg reads the next argument of the statement: a run of bare, quoted and
// escaped parts up to a blank, the end of the line, a ';' or a '#'. At
// the end of the statement it returns an empty token and consumes the
// ';' if there is one. ok is false after a reported error.
func (p *parser) arg() (t token, ok bool) {
	p.skipSpace()
	t.at = p.pos()
	if p.eof() || p.atLineEnd() {
		t.empty = true
		return t, true
	}
	switch p.peek() {
	case '#':
		p.skipLine()
		t.empty = true
		return t, true
	case ';':
		p.next()
		t.empty = true
		return t, true
	}
	var b strings.Builder
	for !p.eof() && !p.atLineEnd() && !isSpace(p.peek()) {
		switch c := p.peek(); c {
		case '#':
			// A comment ends the argument and the line.
			p.skipLine()
			return p.done(t, &b), true
		case ';':
			return p.done(t, &b), true
		case '\'', '"':
			if !p.quoted(&b) {
				return t, false
			}
		case '\\':
			p.next()
			if p.atLineEnd() {
				p.skipLineEnd() // continued on the next line
				continue
			}
			b.WriteByte(p.next())
		default:
			b.WriteByte(p.next())
		}
	}
	return p.done(t, &b), true
}

func (p *parser) done(t token, b *strings.Builder) token {
	t.s = b.String()
	return t
}

// quoted reads a single- or double-quoted part into b. Quotes may span
// lines; a double-quoted part takes backslash escapes.
func (p *parser) quoted(b *strings.Builder) bool {
	at := p.pos()
	q := p.next()
	for {
		if p.eof() {
			hint := ""
			if p.spannedSeen && p.spanned != at {
				hint = fmt.Sprintf("; the quote at %d:%d runs over %d lines, which UCI allows: is a closing quote missing there?", p.spanned.Line, p.spanned.Col, at.Line-p.spanned.Line+1)
			}
			p.errorf(at, "unterminated %c quote: the value runs to the end of the file%s", q, hint)
			return false
		}
		c := p.next()
		if c == '\n' && !p.spannedSeen {
			p.spanned, p.spannedSeen = at, true
		}
		switch {
		case c == q:
			return true
		case c == '\\' && q == '"':
			if p.eof() {
				continue
			}
			if p.atLineEnd() {
				p.skipLineEnd()
				continue
			}
			b.WriteByte(p.next())
		case c == '\r' && !p.eof() && p.peek() == '\n':
			// CRLF inside a quoted value reads as LF.
		default:
			b.WriteByte(c)
		}
	}
}

// quote renders s for a message.
func quote(s string) string {
	if len(s) > 60 {
		s = s[:60] + "..."
	}
	return fmt.Sprintf("%q", s)
}
