package kernel

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"sigs.k8s.io/knftables"

	"github.com/multiwan/multiwan/internal/plan"
)

// NFT owns one nft table of the inet family and replaces it as a whole.
// It never touches another table and never flushes the ruleset, so it
// coexists with firewalls and other mark users.
type NFT struct {
	nft   knftables.Interface
	table string
	// last is the table as last installed by Apply; nil when unknown
	// (first run, adoption, after Invalidate or a failed transaction).
	last *plan.Table
	// stale names the terminal chains that still hold, behind their
	// current rules, the rules of earlier versions (see Compact).
	stale map[string]bool

	// generation reads the ruleset generation (Generation); nil when it
	// cannot be read, as with a knftables.Fake, and then no commit is
	// known to be ours.
	generation func() (uint32, error)
	// ours holds the generations of the last len(ours) transactions known
	// to be this adapter's, as a ring at next; 0 is never a generation.
	ours [ownGenerations]uint32
	next int
	// genErr is the last failure to read the generation around a
	// transaction, nil after a success.
	genErr error

	// writeElements writes a change of map elements alone in-process
	// (elements.go) and returns the generation of its commit, or 0 when
	// the kernel did not say; nil with a knftables.Fake, and then every
	// change takes the nft path.
	writeElements func([]elementChange) (uint32, error)
	// readGenerations says the kernel did not echo a commit's generation:
	// in-process commits are then recorded by reading the generation
	// around them, as nft's are.
	readGenerations bool
	// via says how the last Apply reached the kernel (Via).
	via string
}

// Via says how the last Apply reached the kernel: "netlink" (map
// elements, in-process), "nft" (the nft binary), or "" (nothing to do).
func (n *NFT) Via() string { return n.via }

// ownGenerations bounds the record of own commits. The daemon looks a
// commit up when its notification arrives, at most a few transactions
// later; anything older is forgotten and would be taken for someone
// else's, which costs one unneeded repair.
const ownGenerations = 64

// NewNFT returns an NFT for the table `inet <table>`, run through the nft
// binary. It fails when nft is missing or not usable (no permission, no
// nf_tables in the kernel).
func NewNFT(table string) (*NFT, error) {
	nft, err := knftables.New(knftables.InetFamily, table)
	if err != nil {
		return nil, fmt.Errorf("nft: %w", err)
	}
	n := NewNFTFromInterface(nft, table)
	n.generation = (&generationReader{}).read
	n.writeElements = (&elementWriter{table: table}).write
	return n, nil
}

// NewNFTFromInterface returns an NFT that uses nft, which must have been
// created for the inet family and the same table name; tests pass a
// knftables.Fake. It does not read the kernel's ruleset generation, so
// Ours is always false.
func NewNFTFromInterface(nft knftables.Interface, table string) *NFT {
	return &NFT{nft: nft, table: table}
}

// Apply makes the table equal t in one nft transaction: the kernel either
// has the old table or the new one, never a mix and never none.
//
// When the table it installed last has the same shape as t (the same sets,
// maps and chains, as after a failover, which only changes policy chains and
// map elements), only the chains and sets whose contents changed are flushed
// and refilled; the rest of the ruleset is not touched. Otherwise the table
// is replaced whole: added (so that deleting it cannot fail when it is
// absent), deleted, and added again with all its contents.
//
// When only map elements differ (a failover: see elements.go), they are
// written in-process over netlink in one transaction instead; should that
// fail, the table is replaced whole through nft.
func (n *NFT) Apply(ctx context.Context, t *plan.Table) error {
	var tx *knftables.Transaction
	var err error
	n.via = ""
	if n.last != nil && n.writeElements != nil && sameShape(n.last, t) && sameRules(n.last, t) {
		changes, err := elementChanges(n.last, t)
		if err == nil && len(changes) == 0 {
			return nil
		}
		if err == nil {
			err = n.writeRecorded(changes)
			if err == nil {
				n.last = cloneTable(t)
				n.via = "netlink"
				return nil
			}
		}
		if !errors.Is(err, errNotEncodable) {
			// The kernel refused: nothing was applied (one
			// transaction); replace the whole table the reference way.
			n.last, n.stale = nil, nil
		}
	}
	if n.last != nil && sameShape(n.last, t) {
		tx, err = n.update(n.last, t)
		if tx == nil && err == nil {
			return nil // nothing changed
		}
	} else {
		tx, err = n.transaction(t)
	}
	if err != nil {
		return err
	}
	n.via = "nft"
	if err := n.run(ctx, tx); err != nil {
		n.last, n.stale = nil, nil
		return fmt.Errorf("replace table inet %s: %w", n.table, err)
	}
	n.last = cloneTable(t)
	return nil
}

// run runs tx and records the commit it made as ours, when that is
// certain: the ruleset generation, read just before and just after, moved
// by exactly one. Any other difference means another process committed in
// between, and then none of the generations in the window counts as ours:
// its notifications will look foreign, which costs one unneeded repair,
// whereas taking a foreign commit for ours would hide a needed one.
func (n *NFT) run(ctx context.Context, tx *knftables.Transaction) error {
	return n.recorded(func() error { return n.nft.Run(ctx, tx) })
}

// recorded runs one transaction (nft's, or an in-process one) and records
// its commit as ours (see run).
func (n *NFT) recorded(commit func() error) error {
	if n.generation == nil {
		return commit()
	}
	before, berr := n.generation()
	err := commit()
	after, aerr := n.generation()
	if n.genErr = errors.Join(berr, aerr); n.genErr != nil {
		return err
	}
	if after == nextGeneration(before) {
		n.record(after)
	}
	return err
}

// writeRecorded writes element changes in-process and records the commit
// as ours. The kernel echoes the commit's generation, which spares the
// two reads around it that a commit through nft needs; on a kernel that
// does not, the commit is not recorded (its notification costs one
// unneeded repair) and the next ones are recorded by reading.
func (n *NFT) writeRecorded(changes []elementChange) error {
	if n.readGenerations || n.generation == nil {
		return n.recorded(func() error {
			_, err := n.writeElements(changes)
			return err
		})
	}
	gen, err := n.writeElements(changes)
	if err != nil {
		return err
	}
	if gen == 0 {
		n.readGenerations = true
		return nil
	}
	n.genErr = nil
	n.record(gen)
	return nil
}

// record notes generation gen as one of this adapter's commits.
func (n *NFT) record(gen uint32) {
	n.ours[n.next] = gen
	n.next = (n.next + 1) % len(n.ours)
}

// nextGeneration is the generation the kernel gives the commit after the
// one that made gen: it counts up and skips 0 when it wraps.
func nextGeneration(gen uint32) uint32 {
	if gen+1 == 0 {
		return 1
	}
	return gen + 1
}

// Ours reports whether the nft commit that produced generation gen (a
// TableChange's Gen) was one of this adapter's transactions (Apply,
// Compact, Remove), among the last 64. It is false when that is not
// certain: another process committed during the transaction, the
// generation could not be read (see GenerationError), or gen is older.
//
// A commit's notification can be handled before run has recorded it only
// if the two race on different goroutines; the daemon avoids that by
// looking changes up on the goroutine that runs the transactions, after
// they return.
func (n *NFT) Ours(gen uint32) bool {
	return gen != 0 && slices.Contains(n.ours[:], gen)
}

// OursRange reports whether every commit after generation since, up to
// and including gen, was one of this adapter's (see Ours): then a loss of
// notifications that covers exactly those commits (TableChange.Since and
// Gen) hid nothing of anyone else's. It is true when since == gen (no
// commit), and false when either is 0 (unknown) or the range is longer
// than the record.
func (n *NFT) OursRange(since, gen uint32) bool {
	if since == 0 || gen == 0 {
		return false
	}
	for g, i := since, 0; g != gen; i++ {
		if i == len(n.ours) {
			return false
		}
		g = nextGeneration(g)
		if !n.Ours(g) {
			return false
		}
	}
	return true
}

// GenerationError returns the last failure to read the ruleset
// generation around a transaction, or nil. While it is not nil the
// adapter's own commits are not recognised (Ours is false for them), so a
// caller that repairs on foreign changes should log it and not repair in
// a loop.
func (n *NFT) GenerationError() error { return n.genErr }

// Invalidate forgets what Apply installed, so that the next Apply replaces
// the whole table: used when the kernel may have been changed behind
// multiwan's back.
func (n *NFT) Invalidate() { n.last, n.stale = nil, nil }

// Stale reports whether some chain holds old rules that Compact would
// remove.
func (n *NFT) Stale() bool { return len(n.stale) > 0 }

// Compact removes the old rules that fast updates left behind their
// replacements in terminal chains: each such chain is flushed and refilled
// with its current rules, in one transaction. It is meant to run after a
// quiet moment, off the path of a decision: deleting rules makes the
// kernel wait for an RCU grace period.
func (n *NFT) Compact(ctx context.Context) error {
	if len(n.stale) == 0 || n.last == nil {
		return nil
	}
	tx := n.nft.NewTransaction()
	for _, c := range n.last.Chains {
		if !n.stale[c.Name] {
			continue
		}
		obj, err := chainObject(c)
		if err != nil {
			return err
		}
		tx.Flush(obj)
		for _, r := range c.Rules {
			tx.Add(&knftables.Rule{Chain: c.Name, Rule: r})
		}
	}
	if err := n.run(ctx, tx); err != nil {
		n.last, n.stale = nil, nil
		return fmt.Errorf("compact table inet %s: %w", n.table, err)
	}
	n.stale = nil
	return nil
}

// sameShape reports whether a and b declare the same sets and chains, with
// the same types, flags and hooks, in the same order.
func sameShape(a, b *plan.Table) bool {
	if a.Family != b.Family || a.Name != b.Name || len(a.Sets) != len(b.Sets) || len(a.Chains) != len(b.Chains) ||
		!slices.Equal(a.Counters, b.Counters) {
		return false
	}
	for i := range a.Sets {
		x, y := a.Sets[i], b.Sets[i]
		if x.Name != y.Name || x.Type != y.Type || x.TypeOf != y.TypeOf || x.Map != y.Map || x.Comment != y.Comment ||
			!slices.Equal(x.Flags, y.Flags) {
			return false
		}
	}
	for i := range a.Chains {
		x, y := a.Chains[i], b.Chains[i]
		if x.Name != y.Name || x.Type != y.Type || x.Hook != y.Hook || x.Priority != y.Priority || x.Comment != y.Comment {
			return false
		}
	}
	return true
}

// sameRules reports whether a and b, of the same shape, have the same
// rules in every chain.
func sameRules(a, b *plan.Table) bool {
	for i := range a.Chains {
		if !slices.Equal(a.Chains[i].Rules, b.Chains[i].Rules) {
			return false
		}
	}
	return true
}

// update flushes and refills the sets and chains of to that differ from
// from; it returns a nil transaction when nothing differs.
func (n *NFT) update(from, to *plan.Table) (*knftables.Transaction, error) {
	tx := n.nft.NewTransaction()
	changed := false
	for i, s := range to.Sets {
		if slices.Equal(from.Sets[i].Elements, s.Elements) {
			continue
		}
		changed = true
		tx.Flush(setObject(s))
		for _, e := range s.Elements {
			el, err := elementObject(s, e)
			if err != nil {
				return nil, err
			}
			tx.Add(el)
		}
	}
	var stale []string
	for i, c := range to.Chains {
		if slices.Equal(from.Chains[i].Rules, c.Rules) {
			continue
		}
		changed = true
		if c.Terminal && len(c.Rules) > 0 {
			// The new rules go ahead of the old ones, which are then
			// never reached: only additions, no grace period.
			for j := len(c.Rules) - 1; j >= 0; j-- {
				tx.Insert(&knftables.Rule{Chain: c.Name, Rule: c.Rules[j]})
			}
			stale = append(stale, c.Name)
			continue
		}
		obj, err := chainObject(c)
		if err != nil {
			return nil, err
		}
		tx.Flush(obj)
		for _, r := range c.Rules {
			tx.Add(&knftables.Rule{Chain: c.Name, Rule: r})
		}
	}
	if !changed {
		return nil, nil
	}
	if n.stale == nil {
		n.stale = map[string]bool{}
	}
	for _, name := range stale {
		n.stale[name] = true
	}
	return tx, nil
}

func cloneTable(t *plan.Table) *plan.Table {
	c := *t
	c.Counters = slices.Clone(t.Counters)
	c.Sets = slices.Clone(t.Sets)
	for i := range c.Sets {
		c.Sets[i].Elements = slices.Clone(t.Sets[i].Elements)
		c.Sets[i].Flags = slices.Clone(t.Sets[i].Flags)
	}
	c.Chains = slices.Clone(t.Chains)
	for i := range c.Chains {
		c.Chains[i].Rules = slices.Clone(t.Chains[i].Rules)
	}
	return &c
}

// Remove deletes the table. A missing table is not an error.
func (n *NFT) Remove(ctx context.Context) error {
	n.last = nil
	tx := n.nft.NewTransaction()
	// Add then delete: the same "destroy" idiom as in Apply, which works on
	// nft releases that predate `nft destroy`.
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	if err := n.run(ctx, tx); err != nil {
		return fmt.Errorf("delete table inet %s: %w", n.table, err)
	}
	return nil
}

// Current reports whether the table exists, e.g. left by a previous run that
// was killed; the daemon logs that it adopts it.
func (n *NFT) Current(ctx context.Context) (bool, error) {
	_, err := n.nft.List(ctx, "chains")
	switch {
	case err == nil:
		return true, nil
	case knftables.IsNotFound(err):
		return false, nil
	default:
		return false, fmt.Errorf("list table inet %s: %w", n.table, err)
	}
}

// transaction builds the whole replacement. Everything is validated here, so
// that a bad plan fails before nft is run and leaves the old table in place.
func (n *NFT) transaction(t *plan.Table) (*knftables.Transaction, error) {
	if t.Family != string(knftables.InetFamily) {
		return nil, fmt.Errorf("table %s: family %q, want %q", t.Name, t.Family, knftables.InetFamily)
	}
	if t.Name != n.table {
		return nil, fmt.Errorf("table %q: this adapter owns table %q only", t.Name, n.table)
	}
	tx := n.nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	tx.Add(&knftables.Table{})
	// Counters before the maps that name them.
	for _, c := range t.Counters {
		tx.Add(&knftables.Counter{Name: c})
	}
	// Chains come first: elements and rules refer to them (`goto wan_isp1`
	// as a verdict-map value). They must even precede the maps: nft 1.0.6
	// fails with "No such file or directory" on a `goto` element of an
	// interval map that was added before the chain it names.
	for _, c := range t.Chains {
		obj, err := chainObject(c)
		if err != nil {
			return nil, err
		}
		tx.Add(obj)
	}
	for _, s := range t.Sets {
		tx.Add(setObject(s))
	}
	for _, s := range t.Sets {
		for _, e := range s.Elements {
			el, err := elementObject(s, e)
			if err != nil {
				return nil, err
			}
			tx.Add(el)
		}
	}
	for _, c := range t.Chains {
		for _, r := range c.Rules {
			tx.Add(&knftables.Rule{Chain: c.Name, Rule: r})
		}
	}
	// An object knftables finds invalid is remembered in tx, and Run then
	// returns that error without running nft at all.
	return tx, nil
}

// setObject converts a plan set, which is a map when it has a value type.
func setObject(s plan.Set) knftables.Object {
	flags := make([]knftables.SetFlag, len(s.Flags))
	for i, f := range s.Flags {
		flags[i] = knftables.SetFlag(f)
	}
	comment := optional(s.Comment)
	switch {
	case s.Map != "" && s.TypeOf != "":
		return &knftables.Map{Name: s.Name, TypeOf: s.TypeOf + " : " + s.Map, Flags: flags, Comment: comment}
	case s.Map != "":
		return &knftables.Map{Name: s.Name, Type: s.Type + " : " + s.Map, Flags: flags, Comment: comment}
	case s.TypeOf != "":
		return &knftables.Set{Name: s.Name, TypeOf: s.TypeOf, Flags: flags, Comment: comment}
	}
	return &knftables.Set{Name: s.Name, Type: s.Type, Flags: flags, Comment: comment}
}

// elementObject converts an element of s. knftables only checks that a key
// and value are given, not that they are non-empty, and nft would then fail
// with a syntax error far from the cause.
func elementObject(s plan.Set, e plan.Element) (*knftables.Element, error) {
	switch {
	case strings.TrimSpace(e.Key) == "":
		return nil, fmt.Errorf("set %s: element with an empty key", s.Name)
	case s.Map != "" && strings.TrimSpace(e.Value) == "":
		return nil, fmt.Errorf("map %s: element %s without a value", s.Name, e.Key)
	case s.Map == "" && e.Value != "":
		return nil, fmt.Errorf("set %s: element %s has a value but %s is not a map", s.Name, e.Key, s.Name)
	}
	el := &knftables.Element{Key: []string{e.Key}}
	if s.Map != "" {
		el.Map = s.Name
		el.Value = []string{e.Value}
	} else {
		el.Set = s.Name
	}
	return el, nil
}

var (
	chainTypes = map[string]knftables.BaseChainType{
		"filter": knftables.FilterType,
		"nat":    knftables.NATType,
		"route":  knftables.RouteType,
	}
	chainHooks = map[string]knftables.BaseChainHook{
		"prerouting":  knftables.PreroutingHook,
		"input":       knftables.InputHook,
		"forward":     knftables.ForwardHook,
		"output":      knftables.OutputHook,
		"postrouting": knftables.PostroutingHook,
	}
)

// chainObject converts a plan chain; it is a base chain when it has a hook.
func chainObject(c plan.Chain) (*knftables.Chain, error) {
	ch := &knftables.Chain{Name: c.Name, Comment: optional(c.Comment)}
	if c.Hook == "" {
		if c.Type != "" || c.Priority != "" {
			return nil, fmt.Errorf("chain %s: type and priority need a hook", c.Name)
		}
		return ch, nil
	}
	typ, ok := chainTypes[c.Type]
	if !ok {
		return nil, fmt.Errorf("chain %s: unknown chain type %q", c.Name, c.Type)
	}
	hook, ok := chainHooks[c.Hook]
	if !ok {
		return nil, fmt.Errorf("chain %s: unknown hook %q", c.Name, c.Hook)
	}
	prio, err := priority(c.Priority)
	if err != nil {
		return nil, fmt.Errorf("chain %s: %w", c.Name, err)
	}
	ch.Type, ch.Hook, ch.Priority = &typ, &hook, &prio
	return ch, nil
}

// priority accepts what nft accepts in the inet family: a number, a name
// ("mangle", "srcnat", ...) or a name plus or minus a number. Spaces are
// dropped so that "mangle - 1" and "mangle-1" are the same; knftables then
// writes the number, which every nft release accepts in every hook.
func priority(p string) (knftables.BaseChainPriority, error) {
	p = strings.ReplaceAll(p, " ", "")
	if _, err := knftables.ParsePriority(knftables.InetFamily, p); err != nil {
		return "", fmt.Errorf("priority %q: %w", p, err)
	}
	return knftables.BaseChainPriority(p), nil
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
