package config

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/lexer"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// Load reads the config file at path and parses it. A file that cannot be
// opened or read yields the *os.PathError; an invalid one an ErrorList, as
// does one that is not a regular file or is larger than 4 MiB (at
// FILE:1:1): it is refused before a byte of it is parsed.
func Load(path string) (*Config, error) {
	data, err := readRegular(path, maxConfigBytes)
	if p, ok := err.(*fileProblem); ok {
		return nil, ErrorList{{File: path, Line: 1, Col: 1, Msg: "config file " + p.msg}}
	}
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// Parse parses and validates a config. file names the config in error
// messages. When anything is wrong the error is an ErrorList holding every
// problem found, each with its position; the Config is then nil. A leading
// UTF-8 byte order mark is ignored, and CRLF line ends are read as LF.
func Parse(file string, data []byte) (*Config, error) {
	d := &decoder{file: file}
	cfg := d.run(data)
	if len(d.errs) > 0 {
		return nil, d.errs.sorted(file)
	}
	return cfg, nil
}

// maxNodes bounds how many nodes one parse decodes. Aliases let a small
// file expand exponentially ("billion laughs"); prescan already bounds the
// values written in the file (maxValues), and this bounds what aliases make
// of them: room for a long list shared by ten rules, not for a bomb.
const maxNodes = 10 * maxValues

// maxAliasDepth bounds how deeply aliases nest: an alias to a node holding
// an alias to a node holding an alias... Real configs nest one or two deep
// (a probe anchor merged into another); each level multiplies the work of
// decoding and deepens its recursion.
const maxAliasDepth = 16

// errTooLarge aborts decoding once maxNodes is exceeded; Parse recovers it.
var errTooLarge = errors.New("config too large")

// decoder walks the YAML AST of one file, filling a Config and collecting
// errors as it goes rather than stopping at the first.
type decoder struct {
	file string
	errs ErrorList
	// reported holds the errors in errs, so that a node decoded many
	// times through aliases adds its errors once: the list stays as small
	// as the file, however far aliases expand.
	reported map[Error]bool
	// aliases maps each alias to the node its anchor names at that point of
	// the file (YAML lets a later anchor reuse a name).
	aliases map[*ast.AliasNode]ast.Node
	nodes   int // nodes resolved so far, see maxNodes
	// lists caches the list files read, by resolved path: each is read
	// and parsed once however many rules name it.
	lists map[string][]netip.Prefix
	// ruleAddrs counts the addresses and prefixes of all rules, see
	// maxRuleAddrs.
	ruleAddrs int
}

func (d *decoder) addError(pos Pos, format string, args ...any) {
	// Positions are 1-based; clamp so a missing token never yields 0:0.
	d.report(Error{
		File: d.file,
		Line: max(pos.Line, 1),
		Col:  max(pos.Col, 1),
		Msg:  fmt.Sprintf(format, args...),
	})
}

// report adds e unless it was reported already.
func (d *decoder) report(e Error) {
	if d.reported[e] {
		return
	}
	if d.reported == nil {
		d.reported = map[Error]bool{}
	}
	d.reported[e] = true
	d.errs = append(d.errs, &e)
}

func (d *decoder) run(data []byte) (cfg *Config) {
	if len(data) > maxConfigBytes {
		d.addError(Pos{1, 1}, "config file is larger than %d MiB", maxConfigBytes>>20)
		return nil
	}
	root, ok := d.parseYAML(normalize(data))
	if !ok {
		return nil
	}
	defer func() {
		if r := recover(); r != nil {
			if r != errTooLarge {
				panic(r)
			}
			cfg = nil
		}
	}()
	return d.config(root)
}

// parseYAML parses data into its single document's body, reporting syntax
// errors. A nil body (an empty file) is fine: the missing keys are reported
// later.
func (d *decoder) parseYAML(data []byte) (body value, ok bool) {
	f, prob, err := parseBytes(data)
	if prob != nil {
		d.addError(prob.pos, "%s", prob.msg)
		return value{}, false
	}
	if err != nil {
		d.syntaxError(err)
		return value{}, false
	}
	var docs []*ast.DocumentNode
	for _, doc := range f.Docs {
		if doc == nil || doc.Body == nil {
			continue
		}
		if _, ok := doc.Body.(*ast.DirectiveNode); ok {
			continue // %YAML 1.2: the library keeps it as a document of its own
		}
		docs = append(docs, doc)
	}
	if len(docs) > 1 {
		d.addError(nodePos(docs[1].Body), "only one YAML document is allowed")
	}
	d.aliases = map[*ast.AliasNode]ast.Node{}
	anchors := map[string]anchor{}
	tooDeep := false
	for _, doc := range docs {
		if d.indexAnchors(doc.Body, anchors) > maxAliasDepth {
			tooDeep = true
		}
	}
	if tooDeep {
		return value{}, false // reported; decoding would be the cost refused
	}
	if len(docs) == 0 {
		return d.value("", nil), true
	}
	return d.value("", docs[0].Body), true
}

// parseBytes runs the YAML parser, once the config is known to be within
// the limits of prescan and checkTokens; a config past them yields the
// problem. Duplicate keys are allowed through so that they are reported
// with every other error instead of stopping the parse. A panic in the
// parser is turned into an error: a bad config must not crash the daemon's
// reload.
func parseBytes(data []byte) (f *ast.File, prob *problem, err error) {
	defer func() {
		if r := recover(); r != nil {
			f, prob, err = nil, nil, fmt.Errorf("YAML parser failed: %v", r)
		}
	}()
	if p := prescan(data); p != nil {
		return nil, p, nil
	}
	tks := lexer.Tokenize(string(data))
	if tks.InvalidToken() == nil { // else Parse reports the syntax error
		if p := checkTokens(tks); p != nil {
			return nil, p, nil
		}
	}
	f, err = parser.Parse(tks, 0, parser.AllowDuplicateMapKey())
	return f, nil, err
}

// tokenError is what the YAML library's errors implement; its own Error
// method prints a multi-line excerpt, unsuitable for FILE:LINE:COL output.
type tokenError interface {
	GetToken() *token.Token
	GetMessage() string
}

func (d *decoder) syntaxError(err error) {
	pos := Pos{1, 1}
	msg := err.Error()
	var te tokenError
	if errors.As(err, &te) {
		msg = te.GetMessage()
		if tk := te.GetToken(); tk != nil && tk.Position != nil {
			pos = Pos{tk.Position.Line, tk.Position.Column}
		}
	}
	msg, _, _ = strings.Cut(msg, "\n")
	if strings.Contains(msg, "\t") {
		msg = strings.ReplaceAll(msg, "\t", `\t`) + " (indent with spaces, not tabs)"
	}
	d.addError(pos, "syntax error: %s", msg)
}

// anchor is the node an anchor names, with the depth of the aliases
// within it.
type anchor struct {
	node  ast.Node
	depth int
}

// indexAnchors records, in file order, which node every alias refers to,
// and returns how deeply aliases nest within n: an alias is one deeper than
// the deepest alias in the node it refers to. Aliases nesting deeper than
// maxAliasDepth are reported, at the first such alias.
//
// An anchor is registered only after its own content is walked, so an
// alias can never refer to a node containing itself: the alias graph stays
// acyclic and decoding always terminates.
func (d *decoder) indexAnchors(n ast.Node, anchors map[string]anchor) int {
	depth := 0
	switch n := n.(type) {
	case *ast.MappingNode:
		for _, kv := range n.Values {
			depth = max(depth, d.indexAnchors(kv, anchors))
		}
	case *ast.MappingValueNode:
		depth = max(d.indexAnchors(n.Key, anchors), d.indexAnchors(n.Value, anchors))
	case *ast.MappingKeyNode:
		depth = d.indexAnchors(n.Value, anchors)
	case *ast.SequenceNode:
		for _, e := range n.Values {
			depth = max(depth, d.indexAnchors(e, anchors))
		}
	case *ast.TagNode:
		depth = d.indexAnchors(n.Value, anchors)
	case *ast.AnchorNode:
		depth = d.indexAnchors(n.Value, anchors)
		if n.Name != nil {
			anchors[tokenText(n.Name)] = anchor{n.Value, depth}
		}
	case *ast.AliasNode:
		if n.Value == nil {
			return 0
		}
		name := tokenText(n.Value)
		target, ok := anchors[name]
		if !ok {
			d.addError(nodePos(n), "unknown alias *%s", name)
			return 0
		}
		depth = target.depth + 1
		if depth == maxAliasDepth+1 {
			d.addError(nodePos(n), "aliases nested more than %d deep (*%s refers to a node holding an alias to a node holding an alias...)", maxAliasDepth, name)
		}
		d.aliases[n] = target.node
	}
	return depth
}

// resolve strips anchors and tags and follows aliases, leaving the node
// that holds the data. Null becomes nil.
func (d *decoder) resolve(n ast.Node) ast.Node {
	for {
		d.nodes++
		if d.nodes > maxNodes {
			d.addError(nodePos(n), "config too large: aliases expand to more than %d values", maxNodes)
			panic(errTooLarge)
		}
		switch v := n.(type) {
		case *ast.AnchorNode:
			n = v.Value
		case *ast.TagNode:
			n = v.Value
		case *ast.AliasNode:
			n = d.aliases[v]
		case *ast.NullNode:
			return nil
		default:
			return n
		}
	}
}

// nodePos is where a node starts. For a block mapping that is its first
// key: the library's token for it is the first ':'.
func nodePos(n ast.Node) Pos {
	switch v := n.(type) {
	case nil:
		return Pos{1, 1}
	case *ast.MappingNode:
		if len(v.Values) > 0 {
			return nodePos(v.Values[0])
		}
	case *ast.MappingValueNode:
		return nodePos(v.Key)
	}
	tk := n.GetToken()
	if tk == nil || tk.Position == nil {
		return Pos{1, 1}
	}
	return Pos{tk.Position.Line, tk.Position.Column}
}
