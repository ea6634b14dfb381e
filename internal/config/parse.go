package config

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// Load reads the config file at path and parses it. A file that cannot be
// read yields the *os.PathError; an invalid one an ErrorList.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// Parse parses and validates a config. file names the config in error
// messages. When anything is wrong the error is an ErrorList holding every
// problem found, each with its position; the Config is then nil.
func Parse(file string, data []byte) (*Config, error) {
	d := &decoder{file: file}
	cfg := d.run(data)
	if len(d.errs) > 0 {
		return nil, d.errs.sorted()
	}
	return cfg, nil
}

// maxNodes bounds how many nodes one parse decodes. Aliases let a small
// file expand exponentially ("billion laughs"); real configs, even with
// address lists of many thousands, stay far below this.
const maxNodes = 10_000_000

// errTooLarge aborts decoding once maxNodes is exceeded; Parse recovers it.
var errTooLarge = errors.New("config too large")

// decoder walks the YAML AST of one file, filling a Config and collecting
// errors as it goes rather than stopping at the first.
type decoder struct {
	file string
	errs ErrorList
	// aliases maps each alias to the node its anchor names at that point of
	// the file (YAML lets a later anchor reuse a name).
	aliases map[*ast.AliasNode]ast.Node
	nodes   int // nodes resolved so far, see maxNodes
}

func (d *decoder) addError(pos Pos, format string, args ...any) {
	// Positions are 1-based; clamp so a missing token never yields 0:0.
	d.errs = append(d.errs, &Error{
		File: d.file,
		Line: max(pos.Line, 1),
		Col:  max(pos.Col, 1),
		Msg:  fmt.Sprintf(format, args...),
	})
}

func (d *decoder) run(data []byte) (cfg *Config) {
	root, ok := d.parseYAML(data)
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
	f, err := parseBytes(data)
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
	anchors := map[string]ast.Node{}
	for _, doc := range docs {
		d.indexAnchors(doc.Body, anchors)
	}
	if len(docs) == 0 {
		return d.value("", nil), true
	}
	return d.value("", docs[0].Body), true
}

// parseBytes runs the YAML parser. Duplicate keys are allowed through so
// that they are reported with every other error instead of stopping the
// parse. A panic in the parser is turned into an error: a bad config must
// not crash the daemon's reload.
func parseBytes(data []byte) (f *ast.File, err error) {
	defer func() {
		if r := recover(); r != nil {
			f, err = nil, fmt.Errorf("YAML parser failed: %v", r)
		}
	}()
	return parser.ParseBytes(data, 0, parser.AllowDuplicateMapKey())
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

// indexAnchors records, in file order, which node every alias refers to.
// An anchor is registered only after its own content is walked, so an alias
// can never refer to a node containing itself: the alias graph stays
// acyclic and decoding always terminates.
func (d *decoder) indexAnchors(n ast.Node, anchors map[string]ast.Node) {
	switch n := n.(type) {
	case *ast.MappingNode:
		for _, kv := range n.Values {
			d.indexAnchors(kv, anchors)
		}
	case *ast.MappingValueNode:
		d.indexAnchors(n.Key, anchors)
		d.indexAnchors(n.Value, anchors)
	case *ast.MappingKeyNode:
		d.indexAnchors(n.Value, anchors)
	case *ast.SequenceNode:
		for _, e := range n.Values {
			d.indexAnchors(e, anchors)
		}
	case *ast.TagNode:
		d.indexAnchors(n.Value, anchors)
	case *ast.AnchorNode:
		d.indexAnchors(n.Value, anchors)
		if n.Name != nil {
			anchors[tokenText(n.Name)] = n.Value
		}
	case *ast.AliasNode:
		if n.Value == nil {
			return
		}
		name := tokenText(n.Value)
		target, ok := anchors[name]
		if !ok {
			d.addError(nodePos(n), "unknown alias *%s", name)
			return
		}
		d.aliases[n] = target
	}
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
