package config

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/token"
)

// value is a node being decoded together with the key it was found under.
// Messages about it are prefixed with that key, and point at the node.
type value struct {
	d    *decoder
	key  string   // the key the value belongs to; empty at the top level
	node ast.Node // anchors, tags and aliases resolved; nil for null
	pos  Pos
}

func (d *decoder) value(key string, n ast.Node) value {
	r := d.resolve(n)
	pos := nodePos(n)
	if r != nil {
		pos = nodePos(r)
	}
	return value{d: d, key: key, node: r, pos: pos}
}

// errorf reports a problem with the value, prefixed with its key.
func (v value) errorf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if v.key != "" {
		msg = v.key + ": " + msg
	}
	v.d.addError(v.pos, "%s", msg)
}

// mistyped reports a value of the wrong kind.
func (v value) mistyped(want string) {
	v.errorf("expected %s, got %s", want, describe(v.node))
}

// describe names a node for a "got ..." message: scalars by their text,
// quoted when YAML read them as strings, collections by their kind.
func describe(n ast.Node) string {
	const maxLen = 40
	switch n := n.(type) {
	case nil:
		return "nothing"
	case *ast.MappingNode, *ast.MappingValueNode:
		return "a mapping"
	case *ast.SequenceNode:
		return "a list"
	case *ast.StringNode:
		s := n.Value
		if len(s) > maxLen {
			s = s[:maxLen] + "..."
		}
		return strconv.Quote(s)
	case *ast.LiteralNode:
		if n.Value == nil {
			return `""`
		}
		return describe(n.Value)
	}
	s := tokenText(n)
	if len(s) > maxLen {
		s = s[:maxLen] + "..."
	}
	return s
}

func tokenText(n ast.Node) string {
	if tk := n.GetToken(); tk != nil {
		return tk.Value
	}
	return ""
}

// text is the value as a string. Numbers count as text, so that a name
// like 1 or a port like 587 needs no quotes; booleans, null and collections
// do not. want describes the expected value for the error message.
func (v value) text(want string) (string, bool) {
	switch n := v.node.(type) {
	case *ast.StringNode:
		return n.Value, true
	case *ast.LiteralNode:
		if n.Value != nil {
			return n.Value.Value, true
		}
	case *ast.IntegerNode, *ast.FloatNode:
		return tokenText(n), true
	}
	v.mistyped(want)
	return "", false
}

// isNumber reports whether YAML read the value as a number, not a string.
func (v value) isNumber() bool {
	switch v.node.(type) {
	case *ast.IntegerNode, *ast.FloatNode:
		return true
	}
	return false
}

// str decodes a string.
func (v value) str() (string, bool) {
	return v.text("a string")
}

// oneOf decodes a string that must be one of choices.
func (v value) oneOf(choices ...string) (string, bool) {
	want := orList(choices)
	s, ok := v.text(want)
	if !ok {
		return "", false
	}
	if !slices.Contains(choices, s) {
		v.mistyped(want)
		return "", false
	}
	return s, true
}

// orList formats choices as "a, b or c".
func orList(choices []string) string {
	if len(choices) == 1 {
		return choices[0]
	}
	return strings.Join(choices[:len(choices)-1], ", ") + " or " + choices[len(choices)-1]
}

// integer decodes a YAML integer in [lo, hi]. Go's literal syntax is
// accepted (0x, 0o, 0b, underscores), which covers YAML's.
func (v value) integer(lo, hi int64) (int64, bool) {
	if _, ok := v.node.(*ast.IntegerNode); !ok {
		v.mistyped("an integer")
		return 0, false
	}
	s := tokenText(v.node)
	n, err := strconv.ParseInt(s, 0, 64)
	if err != nil || n < lo || n > hi {
		if hi == maxInt { // no real upper bound, only "fits in an int"
			v.errorf("must be at least %d, got %s", lo, s)
		} else {
			v.errorf("must be in %d..%d, got %s", lo, hi, s)
		}
		return 0, false
	}
	return n, true
}

// boolean decodes true or false.
func (v value) boolean() (bool, bool) {
	if n, ok := v.node.(*ast.BoolNode); ok {
		return n.Value, true
	}
	v.mistyped("true or false")
	return false, false
}

// positive is the least duration meaning "greater than zero".
const positive = time.Nanosecond

// duration decodes a Go duration of at least least.
func (v value) duration(least time.Duration) (time.Duration, bool) {
	const want = "a duration like 500ms"
	s, ok := v.text(want)
	if !ok {
		return 0, false
	}
	t, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		v.mistyped(want)
		return 0, false
	}
	if t < least {
		if least == positive {
			v.errorf("must be greater than 0, got %s", s)
		} else {
			v.errorf("must be at least %s, got %s", least, s)
		}
		return 0, false
	}
	return t, true
}

// percentage decodes "20%" or a bare number 20 into the fraction 0.2.
func (v value) percentage() (float64, bool) {
	const want = "a percentage like 20%"
	s, ok := v.text(want)
	if !ok {
		return 0, false
	}
	num, found := strings.CutSuffix(strings.TrimSpace(s), "%")
	if !found && !v.isNumber() {
		v.mistyped(want)
		return 0, false
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		v.mistyped(want)
		return 0, false
	}
	if f < 0 || f > 100 {
		v.errorf("must be in 0%%..100%%, got %s", s)
		return 0, false
	}
	return f / 100, true
}

// list decodes a sequence. A null is an empty list (a key whose items are
// all commented out); with single, a lone scalar is a one-element list. ok
// is false when v is neither, which has been reported.
func (v value) list(single bool) (items []value, ok bool) {
	switch n := v.node.(type) {
	case nil:
		return nil, true
	case *ast.SequenceNode:
		items = make([]value, 0, len(n.Values))
		for _, e := range n.Values {
			items = append(items, v.d.value(v.key, e))
		}
		return items, true
	case *ast.MappingNode, *ast.MappingValueNode:
	default:
		if single {
			return []value{v}, true
		}
	}
	v.mistyped("a list")
	return nil, false
}

// fields maps each key a mapping may hold to the decoder of its value.
type fields map[string]func(value)

// mapping decodes a mapping whose keys are all known: each key's decoder
// is called in file order, and unknown or repeated keys are reported. what
// names the mapping in those messages ("wan", "probe"); empty for the top
// level. A null is an empty mapping. It returns the position of every key
// present, and false when v is not a mapping at all.
func (v value) mapping(what string, fs fields) (map[string]Pos, bool) {
	explicit, ok := v.pairs()
	if !ok {
		v.mistyped("a mapping")
		return nil, false
	}
	seen := map[string]Pos{}
	var merges []*ast.MappingValueNode
	for _, kv := range explicit {
		if isMergeKey(kv.Key) {
			merges = append(merges, kv)
			continue
		}
		name, kpos := v.d.keyName(kv.Key), nodePos(kv.Key)
		if first, dup := seen[name]; dup {
			v.d.addError(kpos, "duplicate key %q%s (first at %d:%d)", name, in(what), first.Line, first.Col)
			continue
		}
		seen[name] = kpos
		v.field(what, fs, name, kpos, kv.Value)
	}
	// Keys merged in with `<<: *anchor` apply where the mapping does not set
	// them itself; the first merged mapping to set a key wins.
	for _, m := range merges {
		for _, kv := range v.d.merged(v.d.value("<<", m.Value)) {
			name := v.d.keyName(kv.Key)
			if _, ok := seen[name]; ok {
				continue
			}
			seen[name] = nodePos(kv.Key)
			v.field(what, fs, name, nodePos(kv.Key), kv.Value)
		}
	}
	return seen, true
}

func (v value) field(what string, fs fields, name string, kpos Pos, val ast.Node) {
	decode, ok := fs[name]
	if !ok {
		msg := fmt.Sprintf("unknown key %q%s", name, in(what))
		if s := suggest(name, slices.Collect(maps.Keys(fs))); s != "" {
			msg += fmt.Sprintf("; did you mean %q?", s)
		}
		v.d.addError(kpos, "%s", msg)
		return
	}
	fv := v.d.value(name, val)
	if n, ok := val.(*ast.NullNode); ok && n.Token != nil && n.Token.Type == token.ImplicitNullType {
		// "key:" with nothing after it: the key is the thing to point at.
		fv.pos = kpos
	}
	decode(fv)
}

func in(what string) string {
	if what == "" {
		return ""
	}
	return " in " + what
}

// pairs returns the key/value pairs of a mapping as written, merge keys
// included.
func (v value) pairs() ([]*ast.MappingValueNode, bool) {
	switch n := v.node.(type) {
	case nil:
		return nil, true
	case *ast.MappingNode:
		return n.Values, true
	case *ast.MappingValueNode:
		return []*ast.MappingValueNode{n}, true
	}
	return nil, false
}

// merged returns the pairs a merge key brings in: those of one mapping or
// of a list of mappings, with their own merges expanded. The anchor graph
// is acyclic (see indexAnchors), so the recursion ends.
func (d *decoder) merged(v value) []*ast.MappingValueNode {
	if seq, ok := v.node.(*ast.SequenceNode); ok {
		var out []*ast.MappingValueNode
		seen := map[string]bool{}
		for _, e := range seq.Values {
			ev := d.value(v.key, e)
			if _, ok := ev.node.(*ast.SequenceNode); ok {
				ev.mistyped("a mapping to merge")
				continue
			}
			for _, kv := range d.merged(ev) {
				if name := d.keyName(kv.Key); !seen[name] {
					seen[name] = true
					out = append(out, kv)
				}
			}
		}
		return out
	}
	pairs, ok := v.pairs()
	if !ok || v.node == nil {
		v.mistyped("a mapping or a list of mappings to merge")
		return nil
	}
	// Keep only the first pair of each key, the one that applies, so the
	// list stays small however deeply merges nest.
	var out, merges []*ast.MappingValueNode
	seen := map[string]bool{}
	add := func(kv *ast.MappingValueNode) {
		if name := d.keyName(kv.Key); !seen[name] {
			seen[name] = true
			out = append(out, kv)
		}
	}
	for _, kv := range pairs {
		if isMergeKey(kv.Key) {
			merges = append(merges, kv)
		} else {
			add(kv)
		}
	}
	for _, m := range merges {
		for _, kv := range d.merged(d.value("<<", m.Value)) {
			add(kv)
		}
	}
	return out
}

func isMergeKey(k ast.MapKeyNode) bool {
	return k != nil && k.IsMergeKey()
}

// keyName is the text of a mapping key, anchors, tags and aliases
// resolved. Keys that are not plain scalars come out as their YAML text,
// which no field is called, so they are reported as unknown.
func (d *decoder) keyName(k ast.Node) string {
	if mk, ok := k.(*ast.MappingKeyNode); ok { // "? key"
		k = mk.Value
	}
	if k == nil {
		return ""
	}
	switch r := d.resolve(k).(type) {
	case nil:
		return tokenText(k) // null, ~ or an empty key
	case *ast.StringNode:
		return r.Value
	case *ast.MappingNode, *ast.MappingValueNode, *ast.SequenceNode:
		return r.String()
	default:
		return tokenText(r)
	}
}

// suggest returns the candidate closest to a misspelt key, if one is close
// enough to be what was meant.
func suggest(key string, candidates []string) string {
	best, bestDist := "", 3 // more than two edits away is not a typo
	slices.Sort(candidates) // deterministic among ties
	for _, c := range candidates {
		// Short keys are all close to each other: "ip" is not a typo of "up".
		if d := editDistance(key, c); d < bestDist && 2*d < len(c) {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
