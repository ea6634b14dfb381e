package config

import (
	"bytes"
	"fmt"
	"unicode/utf8"

	"github.com/goccy/go-yaml/token"
)

// The daemon parses a reload with the same code as `multiwan check`, so no
// file may make parsing hang or exhaust memory. The YAML library's cost is
// far from linear in its input: nested flow collections cost quadratic time
// and memory (100,000 nested '[', a 200 KB file, took 14 GB), every value
// about a kilobyte (2.6 million inline addresses took 3 GB), a long scalar
// dozens of times its length, and every empty value a copy of all the tokens
// after it. So a config passes two checks before the library parses it:
//
//   - prescan, a scan of the bytes that allocates nothing: flow and block
//     nesting, the number of values and the length of each, and a count of
//     words that ignores quoting, so that no mistake in telling quoted text
//     from structure can let an unbounded number of tokens through;
//   - checkTokens, over the library's own tokens (tokenizing is linear once
//     prescan has passed): the nesting and the number of values exactly as
//     the parser will see them, and the cost of the empty values.
//
// Each refuses with the position of the first value past a limit.
const (
	maxFlowDepth   = 64
	maxBlockDepth  = 64
	maxValues      = 50_000 // thousands of inline addresses are fine; more belong in list files
	maxWords       = 4 * maxValues
	maxScalarBytes = 4 << 10
	// maxEmptyCost bounds the tokens the library copies to insert the
	// nulls of empty values ("key:" with nothing after it): each costs
	// a copy of the tokens after it. This many pointers are 800 MB of
	// copying, a few tens of milliseconds; real configs need thousands.
	maxEmptyCost = 100_000_000
)

// listFileAdvice ends the messages of the limits that a long inline address
// list is the likely cause of.
const listFileAdvice = "move long address lists into list files (src_file/dst_file)"

// problem is a limit exceeded, at the position of the first value past it.
type problem struct {
	pos Pos
	msg string
}

var utf8BOM = []byte("\xef\xbb\xbf")

// normalize drops a leading UTF-8 byte order mark (Windows editors write
// one; it would otherwise become part of the first key) and turns CRLF and
// lone CR line ends into LF: the YAML library counts lines wrongly with
// CRLF after comments, and every position reported would be off. Both keep
// columns unchanged. data is not modified.
func normalize(data []byte) []byte {
	data = bytes.TrimPrefix(data, utf8BOM)
	if bytes.IndexByte(data, '\r') < 0 {
		return data
	}
	out := make([]byte, 0, len(data))
	for i, c := range data {
		if c == '\r' {
			if i+1 < len(data) && data[i+1] == '\n' {
				continue
			}
			c = '\n'
		}
		out = append(out, c)
	}
	return out
}

// prescan checks a config's bytes, with LF line ends, against the limits,
// and returns the first problem. It follows the YAML library's scanner
// (github.com/goccy/go-yaml/scanner) where that decides what is quoted
// text, a comment or structure: a quote, '#' or '[' starts something only
// where the library's buffer of plain text is empty, and a plain scalar
// goes on over a line break unless the next line is indented no further
// than the key or '-' before it.
func prescan(data []byte) *problem {
	s := prescanner{data: data, line: 1, col: 1}
	s.run()
	if s.err != nil {
		return s.err
	}
	return countWords(data)
}

type prescanner struct {
	data      []byte
	i         int // offset of the next byte
	line, col int // its position; col counts characters, as the library does

	// seq and mapping count the open flow sequences and mappings the way
	// the library does, which lets them go below zero.
	seq, mapping int
	// deepest is the deepest flow nesting seen, for tests.
	deepest int
	// plain is set inside a plain scalar, which started at plainStart,
	// plainPos: the library's buffer is not empty.
	plain      bool
	plainStart int
	plainPos   Pos
	// quotedCol is the column of a quoted scalar just read, 0 after any
	// other token: a quoted key sets delimCol.
	quotedCol int
	// colon is set when the last token was a ':' mapping value indicator
	// (plain text not yet ended is no token): in a flow mapping the
	// library then reads a ':' as text.
	colon bool
	// delimCol is the library's lastDelimColumn: the column of the last
	// block mapping key, '-' or '?'. A line indented no further ends a
	// plain scalar, and a block scalar.
	delimCol int
	// blockScalar is set in the content of a block scalar (| or >, or
	// what the library makes of a plain scalar going on with a line that
	// starts with '-'), which takes every line indented past blockEnd.
	// Once its first line sets its indentation, blockFirst, that is
	// blockFirst-1; it started at scalarStart, scalarPos.
	blockScalar bool
	blockEnd    int
	blockFirst  int
	scalarStart int
	scalarPos   Pos
	// indent is the indentation of the current line.
	indent int
	// directive is set after a directive's '%' (%YAML 1.2) to the end of
	// the line, anchor after an anchor's '&' or an alias's '*' to the next
	// space: there the library ends a token at a space, and ':' indicates
	// nothing.
	directive, anchor bool
	// levels holds the columns of the enclosing block collections.
	levels [maxBlockDepth]int
	depth  int
	values int
	err    *problem
}

func (s *prescanner) fail(pos Pos, format string, args ...any) {
	if s.err == nil {
		s.err = &problem{pos, fmt.Sprintf(format, args...)}
	}
}

func (s *prescanner) pos() Pos { return Pos{s.line, s.col} }

func (s *prescanner) flow() bool { return s.seq > 0 || s.mapping > 0 }

// step moves past one character: a byte, or the bytes of a UTF-8 sequence.
// Every byte of invalid UTF-8 is a character, as it is to the library,
// which reads the file as runes.
func (s *prescanner) step() {
	c := s.data[s.i]
	switch {
	case c == '\n':
		s.i++
		s.line++
		s.col = 1
		return
	case c < utf8.RuneSelf:
		s.i++
	default:
		_, n := utf8.DecodeRune(s.data[s.i:])
		s.i += n
	}
	s.col++
}

// skipLine moves to the end of the line, before its '\n'. The column is
// left stale: nothing is reported before the '\n' resets it.
func (s *prescanner) skipLine() {
	if j := bytes.IndexByte(s.data[s.i:], '\n'); j >= 0 {
		s.i += j
	} else {
		s.i = len(s.data)
	}
}

// skipWholeLine moves past the end of the line.
func (s *prescanner) skipWholeLine() {
	s.skipLine()
	if s.i < len(s.data) {
		s.step()
	}
}

func (s *prescanner) run() {
	lineStart := true
	for s.i < len(s.data) && s.err == nil {
		if lineStart {
			lineStart = s.startLine()
			continue
		}
		c := s.data[s.i]
		switch c {
		case '\n':
			if s.directive || s.anchor {
				s.token()
			}
			s.step()
			lineStart = true
			s.directive, s.anchor = false, false
		case ' ':
			if s.directive || s.anchor {
				s.token()
				s.anchor = false
			}
			s.step()
		case '\t':
			s.step()
		case '#':
			if s.plain && !isBlank(s.data[s.i-1]) {
				s.plainChar()
				continue
			}
			s.token()
			s.skipLine()
		case '\'', '"':
			if s.plain {
				s.plainChar()
				continue
			}
			s.quoted(c)
		case '[', '{':
			if s.plain && !s.flow() {
				s.plainChar()
				continue
			}
			s.token()
			if c == '[' {
				s.seq++
			} else {
				s.mapping++
			}
			s.deepest = max(s.deepest, s.seq+s.mapping)
			if s.seq+s.mapping > maxFlowDepth {
				s.fail(s.pos(), "flow collections ('[' and '{') nested more than %d deep", maxFlowDepth)
			}
			s.step()
		case ']':
			if s.plain && s.seq <= 0 {
				s.plainChar()
				continue
			}
			s.token()
			s.seq--
			s.step()
		case '}':
			if s.mapping <= 0 {
				s.plainChar()
				continue
			}
			s.token()
			s.mapping--
			s.step()
		case ',':
			if !s.flow() {
				s.plainChar()
				continue
			}
			s.token()
			s.step()
		case ':':
			if s.directive || s.anchor || !s.mapValue() {
				s.plainChar()
				continue
			}
			if s.plain {
				s.delimCol = s.plainPos.Col
			} else if s.quotedCol != 0 {
				s.delimCol = s.quotedCol
			}
			s.token()
			s.colon = true
			s.step()
		case '-', '?':
			if c == '-' && s.col == 1 && s.marker("---") {
				// A document start resets the library's indentation state.
				s.token()
				s.depth, s.delimCol = 0, 0
				s.i += 3
				s.col += 3
				continue
			}
			if s.plain || !s.blockIndicator(c) {
				s.plainChar()
				continue
			}
			s.token()
			s.delimCol = s.col
			s.step()
			s.compact()
		case '|', '>':
			if s.plain {
				s.plainChar()
				continue
			}
			s.token()
			s.scalarPos = s.pos()
			s.value(s.scalarPos)
			if s.col == 1 {
				s.delimCol = 1
			}
			s.blockScalar, s.blockEnd, s.blockFirst = true, s.delimCol, 0
			if n := s.headerIndent(); n > 0 {
				s.blockFirst = s.delimCol + n
			}
			s.skipLine()
			s.scalarStart = s.i
		case '&', '*':
			if s.plain {
				s.plainChar()
				continue
			}
			// An anchor or alias: its name is read as a plain scalar
			// (not counted as a value), up to a space.
			s.token()
			s.anchor = true
			s.step()
		case '!':
			if s.plain || s.directive {
				s.plainChar()
				continue
			}
			// A tag, up to a line end, a ',' in a flow collection, or
			// a space, which goes with it (and so does not end an
			// anchor's name before it, to the library).
			s.token()
			s.step()
			for s.i < len(s.data) && s.data[s.i] != ' ' && s.data[s.i] != '\n' && !(s.flow() && s.data[s.i] == ',') {
				s.step()
			}
			if s.i < len(s.data) && s.data[s.i] == ' ' {
				s.step()
			}
		case '%':
			if s.plain || s.indent != 0 {
				s.plainChar()
				continue
			}
			s.token()
			s.directive = true
			s.step()
		case '.':
			// A document end needs nothing after it, unlike a start.
			if s.col == 1 && bytes.HasPrefix(s.data[s.i:], []byte("...")) && (s.i+3 == len(s.data) || s.data[s.i+3] != '.') {
				s.token()
				s.i += 3
				s.col += 3
				continue
			}
			s.plainChar()
		default:
			s.plainChar()
		}
	}
}

// startLine handles the indentation of a new line. It reports whether it
// consumed the whole line: a blank one, or one of a block scalar.
func (s *prescanner) startLine() bool {
	j := s.i
	for j < len(s.data) && (s.data[j] == ' ' || s.data[j] == '\t') {
		j++
	}
	col := j - s.i + 1
	blank := j == len(s.data) || s.data[j] == '\n'
	if s.blockScalar {
		switch {
		case !blank && (col <= s.blockEnd || col == 1 && s.docMarkerAt(j)):
			s.blockScalar = false
			s.token()
		default:
			if !blank {
				if s.blockFirst == 0 {
					s.blockFirst = col
				}
				// The library's lastDelimColumn follows the content.
				s.blockEnd = s.blockFirst - 1
				s.delimCol = s.blockEnd
			}
			s.skipWholeLine()
			if s.i-s.scalarStart > maxScalarBytes {
				s.fail(s.scalarPos, "a value longer than %d bytes", maxScalarBytes)
			}
			return true
		}
	}
	if blank {
		s.skipWholeLine()
		return true
	}
	// The library ends a plain scalar at a line indented no further than
	// the last key or '-'; one indented further goes on with it.
	if s.delimCol != 0 && col <= s.delimCol {
		s.token()
	}
	s.i, s.col = j, col
	s.indent = col - 1
	if s.plain && s.delimCol != 0 && s.data[j] == '-' {
		// The library reads the rest of the scalar as a folded block
		// indented at least as far as this '-'.
		s.blockScalar, s.blockFirst, s.blockEnd = true, col, s.delimCol
		if j+1 < len(s.data) && s.data[j+1] != '\n' {
			s.blockEnd = col - 1
			s.delimCol = s.blockEnd
		}
		s.scalarStart, s.scalarPos = s.plainStart, s.plainPos
		s.skipWholeLine()
		return true
	}
	if !s.plain && !s.flow() && s.data[j] != '#' {
		s.level(col)
	}
	return false
}

// headerIndent returns the indentation indicator of the block scalar
// header at s.i (2 in "|2-"), or 0.
func (s *prescanner) headerIndent() int {
	for j := s.i + 1; j < len(s.data) && j < s.i+3; j++ {
		if c := s.data[j]; '1' <= c && c <= '9' {
			return int(c - '0')
		}
	}
	return 0
}

// docMarkerAt reports whether the line at j starts with a document marker,
// "---" or "...", which ends a block scalar.
func (s *prescanner) docMarkerAt(j int) bool {
	m := s.data[j:min(j+4, len(s.data))]
	m = bytes.TrimRight(m, " \t\n")
	return string(m) == "---" || string(m) == "..."
}

// level places a block node starting at col among the enclosing block
// collections.
func (s *prescanner) level(col int) {
	for s.depth > 0 && s.levels[s.depth-1] > col {
		s.depth--
	}
	if s.depth > 0 && s.levels[s.depth-1] == col {
		return
	}
	if s.depth == maxBlockDepth {
		s.fail(Pos{s.line, col}, "block collections nested more than %d deep", maxBlockDepth)
		return
	}
	s.levels[s.depth] = col
	s.depth++
}

// compact handles a node on the same line as the '-' or '?' before it
// ("- - x", "- name: a"): it is nested one level deeper.
func (s *prescanner) compact() {
	if s.flow() {
		return
	}
	j := s.i
	for j < len(s.data) && (s.data[j] == ' ' || s.data[j] == '\t') {
		j++
	}
	if j == len(s.data) || s.data[j] == '\n' || s.data[j] == '#' {
		return
	}
	s.level(s.col + j - s.i)
}

// token ends the plain scalar, if any, as every token does.
func (s *prescanner) token() {
	s.plain = false
	s.quotedCol = 0
	s.colon = false
}

// value counts a value starting at pos.
func (s *prescanner) value(pos Pos) {
	s.values++
	if s.values > maxValues {
		s.fail(pos, "more than %d values; %s", maxValues, listFileAdvice)
	}
}

// plainChar moves past a character of plain text, starting a plain
// scalar if none is open.
func (s *prescanner) plainChar() {
	if !s.plain {
		s.plain = true
		s.plainStart = s.i
		s.plainPos = s.pos()
		s.quotedCol = 0
		if !s.anchor {
			s.value(s.plainPos)
		}
	} else if s.i-s.plainStart >= maxScalarBytes {
		s.fail(s.plainPos, "a value longer than %d bytes", maxScalarBytes)
	}
	s.step()
}

// quoted moves past a quoted scalar. An unterminated one is left for the
// YAML parser to report, unless it runs on too long.
func (s *prescanner) quoted(q byte) {
	start, pos := s.i, s.pos()
	s.value(pos)
	s.step()
	for s.i < len(s.data) && s.err == nil {
		if s.i-start > maxScalarBytes {
			s.fail(pos, "a quoted value longer than %d bytes (is its closing quote missing?)", maxScalarBytes)
			return
		}
		switch c := s.data[s.i]; {
		case c == '\\' && q == '"':
			s.step()
			if s.i < len(s.data) {
				s.step()
			}
		case c == q && q == '\'' && s.i+1 < len(s.data) && s.data[s.i+1] == '\'':
			s.step()
			s.step()
		case c == q:
			s.step()
			s.token()
			s.quotedCol = pos.Col
			return
		default:
			s.step()
		}
	}
}

// mapValue reports whether the ':' at s.i is a mapping value indicator to
// the library: followed by a blank in block context, by anything but '/'
// (a URL) in a flow mapping.
func (s *prescanner) mapValue() bool {
	if s.mapping > 0 {
		return !s.colon && (s.i+1 == len(s.data) || s.data[s.i+1] != '/')
	}
	return s.blankAt(s.i + 1)
}

// blockIndicator reports whether c, '-' or '?' at s.i, is a sequence
// entry or a mapping key to the library: '-' when followed by a blank, a
// NUL or nothing, '?' only when followed by a space or a tab.
func (s *prescanner) blockIndicator(c byte) bool {
	if s.i+1 == len(s.data) {
		return c == '-'
	}
	next := s.data[s.i+1]
	if c == '-' {
		return next == 0 || isBlank(next)
	}
	return next == ' ' || next == '\t'
}

// marker reports whether the document marker m ("---" or "...") is at
// s.i, followed by a blank.
func (s *prescanner) marker(m string) bool {
	return bytes.HasPrefix(s.data[s.i:], []byte(m)) && s.blankAt(s.i+len(m))
}

// blankAt reports whether the byte at i is a space, a tab or a line end,
// or i is the end of the data.
func (s *prescanner) blankAt(i int) bool {
	return i >= len(s.data) || isBlank(s.data[i])
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' || c == '\n' }

func isFlowIndicator(c byte) bool {
	return c == ',' || c == '[' || c == ']' || c == '{' || c == '}'
}

// countWords bounds the tokens the YAML library can make of data, whatever
// is quoted or commented: every token is a flow indicator or covers at
// least one word (a run of other non-blank bytes).
func countWords(data []byte) *problem {
	words := 0
	inWord := false
	for i, c := range data {
		switch {
		case isBlank(c):
			inWord = false
			continue
		case isFlowIndicator(c):
			inWord = false
		case inWord:
			continue
		default:
			inWord = true
		}
		words++
		if words > maxWords {
			return &problem{posAt(data, i), fmt.Sprintf("more than %d words, brackets and commas; %s", maxWords, listFileAdvice)}
		}
	}
	return nil
}

// posAt is the position of the byte at offset off.
func posAt(data []byte, off int) Pos {
	line := 1 + bytes.Count(data[:off], []byte{'\n'})
	start := bytes.LastIndexByte(data[:off], '\n') + 1
	return Pos{line, 1 + utf8.RuneCount(data[start:off])}
}

// checkTokens checks the library's tokens against the limits, as its
// parser will see them: prescan follows the library's scanner closely but
// not in every corner, and these checks cost little once the tokens exist.
func checkTokens(tks token.Tokens) *problem {
	var flow []token.Type // the open flow collections
	values, emptyCost := 0, 0
	for k, tk := range tks {
		pos := tokenPos(tk)
		switch tk.Type {
		case token.SequenceStartType, token.MappingStartType:
			if len(flow) == maxFlowDepth {
				return &problem{pos, fmt.Sprintf("flow collections ('[' and '{') nested more than %d deep", maxFlowDepth)}
			}
			flow = append(flow, tk.Type)
		case token.SequenceEndType, token.MappingEndType:
			if len(flow) > 0 {
				flow = flow[:len(flow)-1]
			}
		}
		inFlowMap := len(flow) > 0 && flow[len(flow)-1] == token.MappingStartType
		if isScalar(tk) && (k == 0 || tks[k-1].Type != token.AnchorType && tks[k-1].Type != token.AliasType) {
			values++
			if values > maxValues {
				return &problem{pos, fmt.Sprintf("more than %d values; %s", maxValues, listFileAdvice)}
			}
		}
		if emptyValue(tks, k, len(flow) > 0, inFlowMap) {
			emptyCost += len(tks) - k
			if emptyCost > maxEmptyCost {
				return &problem{pos, "too many empty values (keys or list items with nothing after them) for a file this long; write null where a value is meant to be empty"}
			}
		}
	}
	return nil
}

// emptyValue reports whether the library's parser inserts a null token
// after the token at k, which costs a copy of every token after it: a block
// key or '-' followed by nothing before a line indented no further, a flow
// mapping key with no value.
func emptyValue(tks token.Tokens, k int, inFlow, inFlowMap bool) bool {
	tk := tks[k]
	switch tk.Type {
	case token.MappingValueType, token.SequenceEntryType:
	default:
		if !isScalar(tk) || !inFlowMap || k == 0 {
			return false
		}
	}
	next := k + 1
	for next < len(tks) && tks[next].Type == token.CommentType {
		next++
	}
	if next == len(tks) {
		return false // appended at the end, which costs nothing
	}
	nt := tks[next]
	switch tk.Type {
	case token.MappingValueType:
		if inFlow {
			return nt.Type == token.CollectEntryType || nt.Type == token.MappingEndType || nt.Type == token.SequenceEndType
		}
		keyCol := tk.Position.Column
		if k > 0 {
			keyCol = tks[k-1].Position.Column
		}
		if nt.Position.Column == keyCol && nt.Type == token.SequenceEntryType {
			return false // "key:" then "- item" at the key's column
		}
		return nt.Position.Line > tk.Position.Line && nt.Position.Column <= keyCol
	case token.SequenceEntryType:
		return nt.Position.Line > tk.Position.Line && nt.Position.Column <= tk.Position.Column
	}
	prev := tks[k-1].Type
	return (prev == token.MappingStartType || prev == token.CollectEntryType) &&
		(nt.Type == token.CollectEntryType || nt.Type == token.MappingEndType)
}

func isScalar(tk *token.Token) bool {
	switch tk.Type {
	case token.StringType, token.SingleQuoteType, token.DoubleQuoteType,
		token.IntegerType, token.BinaryIntegerType, token.OctetIntegerType, token.HexIntegerType,
		token.FloatType, token.BoolType, token.NullType, token.InfinityType, token.NanType:
		return true
	}
	return false
}

func tokenPos(tk *token.Token) Pos {
	if tk.Position == nil {
		return Pos{1, 1}
	}
	return Pos{tk.Position.Line, tk.Position.Column}
}
