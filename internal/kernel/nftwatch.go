package kernel

// The nftables change watcher: a subscriber to the kernel's nftables
// notifications (the NFNLGRP_NFTABLES multicast group of NETLINK_NETFILTER,
// what `nft monitor` reads), reduced to what the daemon needs to notice that
// someone else changed or deleted its table: which table a change touched,
// whether something was deleted, and which commit (generation) it belongs
// to.
//
// Why not google/nftables' Monitor: it decodes every expression of every
// rule (only the table name and the generation matter here), its goroutine
// blocks on an unbuffered channel, and it panics on short messages. This
// decoder reads a few attributes at the front of each message, is bounded
// in everything it keeps, and is fuzzed.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"syscall"
	"time"
	"unicode"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// TableChange is one nft commit (generation) that touched table inet <table>, or a loss of notifications.
type TableChange struct {
	Gen     uint32 // generation the commit produced
	PID     uint32 // committing process, from the kernel
	Comm    string
	Summary string // e.g. "table deleted", "12 rules deleted (chains steer, identify)", "set r_x_dst4: 3 elements deleted"
	Deleted bool   // something of the table was deleted (not only added)
	Lost    bool   // notifications were lost (ENOBUFS) or the subscription broke: anything may have changed

	// Since is set with Lost: the commits that may have been missed are
	// those after generation Since up to Gen, the generation when the
	// loss was noticed. Either is 0 when unknown. A caller that made every
	// one of those commits itself (NFT.OursRange) missed nothing of
	// anyone else's: this is what keeps a commit of its own too large for
	// the receive buffer from causing a repair, which would commit as
	// much again, and so on.
	Since uint32
}

// Message types and attributes the kernel's uapi has and golang.org/x/sys/unix
// lacks. The NFT_MSG_DESTROY* requests (Linux 6.3) are notified as the
// matching DEL* today; they are decoded as deletions all the same, so that
// a kernel that notified them as themselves would not hide a deletion.
const (
	nftMsgDestroyTable     = 0x1a
	nftMsgDestroyChain     = 0x1b
	nftMsgDestroyRule      = 0x1c
	nftMsgDestroySet       = 0x1d
	nftMsgDestroySetElem   = 0x1e
	nftMsgDestroyObj       = 0x1f
	nftMsgDestroyFlowtable = 0x20

	nftaFlowtableName = 2 // NFTA_FLOWTABLE_NAME; NFTA_FLOWTABLE_TABLE is 1

	// nlaTypeMask strips NLA_F_NESTED and NLA_F_NET_BYTEORDER from an
	// attribute's type.
	nlaTypeMask = 0x3fff
)

// Bounds on what a notification may make the decoder do or keep.
const (
	// maxNFTMessage is the longest message decoded at all. The kernel
	// builds notifications in NLMSG_GOODSIZE buffers (a page or two);
	// anything much longer is not a notification this decoder knows.
	maxNFTMessage = 64 << 10
	// maxNFTAttrs bounds the attributes read per message (or per nested
	// list): the table and object names come first, and the rest (rule
	// expressions, set element data) is never needed.
	maxNFTAttrs = 16
	// maxNFTElems bounds the set elements counted in one message.
	maxNFTElems = 1 << 16
	// maxNFTName is NFT_NAME_MAXLEN; longer names are cut.
	maxNFTName = 256
	// maxSummaryNames is how many distinct chain or set names a summary
	// lists per kind of change; further ones show as "…".
	maxSummaryNames = 3
)

// nftReadBuffer is the watcher socket's receive buffer. A commit that
// replaces a table with long address lists produces one notification per
// set element; the buffer must absorb a burst of them while the daemon is
// busy, or the watcher reports Lost. A variable so that a test can shrink
// it to provoke that.
var nftReadBuffer = 4 << 20

// nftKind is what a notification is about.
type nftKind uint8

const (
	kindTable nftKind = iota
	kindChain
	kindSet
	kindRule
	kindElem
	kindObj
	kindFlowtable
	numKinds
)

// nftEvent is one decoded nftables notification.
type nftEvent struct {
	// gen is set for NEWGEN, which closes a commit: genID is the
	// generation it produced, pid and comm the committing process.
	gen        bool
	genID, pid uint32
	comm       string

	kind    nftKind
	deleted bool
	family  uint8  // nfgenmsg.nfgen_family: unix.NFPROTO_INET for table inet
	table   string // NFTA_*_TABLE
	// name is the chain, set, object or flowtable the message is about,
	// or for a rule its chain and for set elements their set.
	name string
	// count is the number of set elements in a set element message, 1
	// for every other message.
	count int
}

// classifyNFT maps an nftables message type to what it is about, whether it
// deletes, and the attribute holding the name worth reporting (0: none
// beyond the table). ok is false for message types that change nothing
// (GET*, TRACE) or are unknown.
func classifyNFT(msg uint8) (kind nftKind, deleted bool, nameAttr uint16, ok bool) {
	switch msg {
	case unix.NFT_MSG_NEWTABLE:
		return kindTable, false, 0, true
	case unix.NFT_MSG_DELTABLE, nftMsgDestroyTable:
		return kindTable, true, 0, true
	case unix.NFT_MSG_NEWCHAIN:
		return kindChain, false, unix.NFTA_CHAIN_NAME, true
	case unix.NFT_MSG_DELCHAIN, nftMsgDestroyChain:
		return kindChain, true, unix.NFTA_CHAIN_NAME, true
	case unix.NFT_MSG_NEWRULE:
		return kindRule, false, unix.NFTA_RULE_CHAIN, true
	case unix.NFT_MSG_DELRULE, nftMsgDestroyRule:
		return kindRule, true, unix.NFTA_RULE_CHAIN, true
	case unix.NFT_MSG_NEWSET:
		return kindSet, false, unix.NFTA_SET_NAME, true
	case unix.NFT_MSG_DELSET, nftMsgDestroySet:
		return kindSet, true, unix.NFTA_SET_NAME, true
	case unix.NFT_MSG_NEWSETELEM:
		return kindElem, false, unix.NFTA_SET_ELEM_LIST_SET, true
	case unix.NFT_MSG_DELSETELEM, nftMsgDestroySetElem:
		return kindElem, true, unix.NFTA_SET_ELEM_LIST_SET, true
	case unix.NFT_MSG_NEWOBJ:
		return kindObj, false, unix.NFTA_OBJ_NAME, true
	case unix.NFT_MSG_DELOBJ, nftMsgDestroyObj:
		return kindObj, true, unix.NFTA_OBJ_NAME, true
	case unix.NFT_MSG_NEWFLOWTABLE:
		return kindFlowtable, false, nftaFlowtableName, true
	case unix.NFT_MSG_DELFLOWTABLE, nftMsgDestroyFlowtable:
		return kindFlowtable, true, nftaFlowtableName, true
	}
	return 0, false, 0, false
}

// decodeNFT decodes one netlink message of the nftables group: typ is the
// netlink header's type, data what follows the header. ok is false for
// messages that say nothing about a change (another subsystem, GET*,
// TRACE); err is set for a message that should have said something but is
// malformed. Every table-changing message type carries the table name as
// attribute 1 (NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_RULE_TABLE, ...).
func decodeNFT(typ uint16, data []byte) (ev nftEvent, ok bool, err error) {
	if typ>>8 != unix.NFNL_SUBSYS_NFTABLES {
		return ev, false, nil
	}
	msg := uint8(typ)
	if msg == unix.NFT_MSG_NEWGEN {
		ev, err = decodeGen(data)
		return ev, err == nil, err
	}
	kind, deleted, nameAttr, known := classifyNFT(msg)
	if !known {
		return ev, false, nil
	}
	if len(data) < 4 {
		return ev, false, fmt.Errorf("nftables message type %#x: %d bytes, shorter than its nfgenmsg header", msg, len(data))
	}
	if len(data) > maxNFTMessage {
		return ev, false, fmt.Errorf("nftables message type %#x: %d bytes, longer than any notification (%d)", msg, len(data), maxNFTMessage)
	}
	ev = nftEvent{kind: kind, deleted: deleted, family: data[0], count: 1}
	var haveTable bool
	err = walkAttrs(data[4:], func(t uint16, v []byte) error {
		switch {
		case t == 1: // NFTA_*_TABLE
			ev.table, haveTable = cString(v), true
		case nameAttr != 0 && t == nameAttr:
			ev.name = cString(v)
		case kind == kindElem && t == unix.NFTA_SET_ELEM_LIST_ELEMENTS:
			n, err := countElems(v)
			if err != nil {
				return err
			}
			ev.count = max(n, 1)
		}
		return nil
	})
	if err != nil {
		return nftEvent{}, false, fmt.Errorf("nftables message type %#x: %w", msg, err)
	}
	if !haveTable {
		return nftEvent{}, false, fmt.Errorf("nftables message type %#x: no table name", msg)
	}
	return ev, true, nil
}

// decodeGen decodes NFT_MSG_NEWGEN, whose attributes are big endian.
func decodeGen(data []byte) (nftEvent, error) {
	if len(data) < 4 {
		return nftEvent{}, fmt.Errorf("nftables generation message: %d bytes, shorter than its nfgenmsg header", len(data))
	}
	if len(data) > maxNFTMessage {
		return nftEvent{}, fmt.Errorf("nftables generation message: %d bytes, longer than any notification (%d)", len(data), maxNFTMessage)
	}
	ev := nftEvent{gen: true}
	var haveID bool
	err := walkAttrs(data[4:], func(t uint16, v []byte) error {
		switch t {
		case unix.NFTA_GEN_ID:
			if len(v) != 4 {
				return fmt.Errorf("generation id of %d bytes", len(v))
			}
			ev.genID, haveID = binary.BigEndian.Uint32(v), true
		case unix.NFTA_GEN_PROC_PID:
			if len(v) == 4 {
				ev.pid = binary.BigEndian.Uint32(v)
			}
		case unix.NFTA_GEN_PROC_NAME:
			ev.comm = cString(v)
		}
		return nil
	})
	if err != nil {
		return nftEvent{}, fmt.Errorf("nftables generation message: %w", err)
	}
	if !haveID {
		return nftEvent{}, errors.New("nftables generation message without a generation id")
	}
	return ev, nil
}

// walkAttrs calls fn for each of the first maxNFTAttrs netlink attributes
// in b (their headers are in host byte order), with the type stripped of
// its flags. An attribute whose length leaves b is an error.
func walkAttrs(b []byte, fn func(t uint16, v []byte) error) error {
	for range maxNFTAttrs {
		if len(b) < 4 {
			return nil // what is left is padding, or nothing
		}
		l := int(binary.NativeEndian.Uint16(b))
		t := binary.NativeEndian.Uint16(b[2:]) & nlaTypeMask
		if l < 4 || l > len(b) {
			return fmt.Errorf("attribute %d: length %d in %d bytes", t, l, len(b))
		}
		if err := fn(t, b[4:l]); err != nil {
			return err
		}
		b = b[min(align4(l), len(b)):]
	}
	return nil
}

func align4(n int) int { return (n + 3) &^ 3 }

// countElems counts the NFTA_LIST_ELEM attributes of a set element list,
// at most maxNFTElems. Unlike walkAttrs it goes through the whole list: a
// message may carry many elements.
func countElems(b []byte) (int, error) {
	n := 0
	for len(b) >= 4 && n < maxNFTElems {
		l := int(binary.NativeEndian.Uint16(b))
		if l < 4 || l > len(b) {
			return n, fmt.Errorf("set element %d: length %d in %d bytes", n, l, len(b))
		}
		if binary.NativeEndian.Uint16(b[2:])&nlaTypeMask == unix.NFTA_LIST_ELEM {
			n++
		}
		b = b[min(align4(l), len(b)):]
	}
	return n, nil
}

// cString reads a NUL-terminated name, cut at maxNFTName bytes and made
// safe to log: invalid UTF-8 and control characters become '?'.
func cString(v []byte) string {
	if i := slices.Index(v, 0); i >= 0 {
		v = v[:i]
	}
	if len(v) > maxNFTName {
		v = v[:maxNFTName]
	}
	s := strings.ToValidUTF8(string(v), "?")
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) < 0 {
		return s
	}
	return strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, s)
}

// nameSet keeps the first maxSummaryNames distinct names it is given.
type nameSet struct {
	names []string
	more  bool // names beyond those were given
}

func (s *nameSet) add(name string) {
	switch {
	case name == "" || slices.Contains(s.names, name):
	case len(s.names) < maxSummaryNames:
		s.names = append(s.names, name)
	default:
		s.more = true
	}
}

func (s *nameSet) String() string {
	out := strings.Join(s.names, ", ")
	if s.more {
		out += ", …"
	}
	return out
}

// commit aggregates the notifications of one nft commit that concern one
// table, counting them rather than keeping them: a commit may hold any
// number of changes, and what is kept stays small.
type commit struct {
	table string
	// touched counts the notifications about the table; undecodable the
	// malformed ones, which may have been about it.
	touched, undecodable int
	counts               [numKinds][2]int // [kind][deleted]
	names                [numKinds][2]nameSet
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// add counts ev if it concerns table inet <c.table>.
func (c *commit) add(ev nftEvent) {
	if ev.gen || ev.family != unix.NFPROTO_INET || ev.table != c.table {
		return
	}
	c.touched = min(c.touched+1, 1<<30)
	d := b2i(ev.deleted)
	c.counts[ev.kind][d] = min(c.counts[ev.kind][d]+ev.count, 1<<30)
	c.names[ev.kind][d].add(ev.name)
}

// addUndecodable counts a message that could not be decoded: it may have
// been about the table, so the commit is reported as losing information.
func (c *commit) addUndecodable() { c.undecodable = min(c.undecodable+1, 1<<30) }

// finish ends the commit that NEWGEN gen closed: it returns the change to
// report, if the commit touched the table (or may have), and starts afresh.
func (c *commit) finish(gen nftEvent) (TableChange, bool) {
	defer c.reset()
	if c.touched == 0 && c.undecodable == 0 {
		return TableChange{}, false
	}
	ch := TableChange{Gen: gen.genID, PID: gen.pid, Comm: gen.comm, Summary: c.summary(), Lost: c.undecodable > 0}
	for k := range numKinds {
		if c.counts[k][1] > 0 {
			ch.Deleted = true
		}
	}
	return ch, true
}

func (c *commit) reset() { *c = commit{table: c.table} }

// nouns names each kind in the summary; a kind with a container (rules
// live in chains, elements in sets) lists the containers, the others
// their own names.
var nouns = [numKinds]struct{ one, many, container, containers string }{
	kindTable:     {"table", "tables", "", ""},
	kindChain:     {"chain", "chains", "", ""},
	kindSet:       {"set", "sets", "", ""},
	kindRule:      {"rule", "rules", "chain", "chains"},
	kindElem:      {"element", "elements", "set", "sets"},
	kindObj:       {"object", "objects", "", ""},
	kindFlowtable: {"flowtable", "flowtables", "", ""},
}

// summary says what the commit did to the table, for the log: e.g. "table
// inet multiwan deleted", "12 rules deleted (chains steer, identify)",
// "set r_x_dst4: 3 elements deleted".
func (c *commit) summary() string {
	var parts []string
	added, deleted := c.counts[kindTable][0] > 0, c.counts[kindTable][1] > 0
	switch {
	case added && deleted:
		parts = append(parts, "table inet "+c.table+" replaced")
	case deleted:
		parts = append(parts, "table inet "+c.table+" deleted")
	case added:
		// A NEWTABLE for an existing table is an update of its flags,
		// e.g. `flags dormant`, which switches the table off.
		parts = append(parts, "table inet "+c.table+" added or its flags changed")
	}
	if !deleted {
		// With the table deleted, what went with it or came back in
		// the same commit is detail.
		for k := kindChain; k < numKinds; k++ {
			for _, d := range []int{1, 0} {
				if n := c.counts[k][d]; n > 0 {
					parts = append(parts, describe(k, d == 1, n, &c.names[k][d]))
				}
			}
		}
	}
	if c.undecodable > 0 {
		parts = append(parts, fmt.Sprintf("%d nftables notifications not understood", c.undecodable))
	}
	return strings.Join(parts, "; ")
}

func describe(k nftKind, deleted bool, n int, names *nameSet) string {
	verb := "added"
	if deleted {
		verb = "deleted"
	}
	w := nouns[k]
	noun := w.many
	if n == 1 {
		noun = w.one
	}
	if len(names.names) == 0 {
		return fmt.Sprintf("%d %s %s", n, noun, verb)
	}
	if w.container == "" {
		if n == 1 && len(names.names) == 1 {
			return fmt.Sprintf("%s %s %s", w.one, names.names[0], verb)
		}
		return fmt.Sprintf("%d %s %s (%s)", n, noun, verb, names)
	}
	if len(names.names) == 1 && !names.more {
		if k == kindElem {
			return fmt.Sprintf("%s %s: %d %s %s", w.container, names.names[0], n, noun, verb)
		}
		return fmt.Sprintf("%d %s %s (%s %s)", n, noun, verb, w.container, names.names[0])
	}
	return fmt.Sprintf("%d %s %s (%s %s)", n, noun, verb, w.containers, names)
}

// Summaries of a loss of notifications.
const (
	lostOverflow    = "nftables notifications lost: the receive buffer was full"
	lostResubscribe = "nftables subscription was broken and is renewed: changes in between are unknown"
)

// Resubscription delays: the first retry is quick, a subscription that
// keeps failing is retried less and less often.
const (
	resubscribeMin = 100 * time.Millisecond
	resubscribeMax = 5 * time.Second
)

// WatchTable calls fn (from its own goroutine, never concurrently) for every commit that touched table inet <table>, until ctx ends. It resubscribes when the socket fails and then reports Lost. fn must not block for long.
//
// WatchTable itself blocks until ctx ends; it runs on the caller's
// goroutine, and fn is called there. Its socket is opened in the network
// namespace of the calling thread, as are those it reopens after a
// failure: a caller in another namespace than the process's locks its
// thread there first. Changes of table inet <table> made between the
// subscription breaking and its renewal are unknown, so after a renewal
// fn gets a change with Lost set; the first subscription reports nothing.
// Commits of other tables, and of tables of other families with the same
// name, are not reported; a `flush ruleset` is reported as the table
// deleted.
func WatchTable(ctx context.Context, table string, log *slog.Logger, fn func(TableChange)) {
	log = orDiscard(log)
	delay := resubscribeMin
	w := &tableWatcher{table: table, fn: fn, agg: commit{table: table}}
	for ctx.Err() == nil {
		began := time.Now()
		err := w.watch(ctx)
		if ctx.Err() != nil {
			return
		}
		w.renewed = true
		if time.Since(began) > time.Minute {
			delay = resubscribeMin // it worked for a while: retry quickly
		}
		log.Warn("nftables change subscription failed; resubscribing", "table", "inet "+table, "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, resubscribeMax)
	}
}

// tableWatcher is the state of WatchTable that outlives a subscription.
type tableWatcher struct {
	table string
	fn    func(TableChange)
	agg   commit
	// renewed is set once a subscription broke: the next one starts by
	// reporting Lost.
	renewed bool
	// lastGen is the latest generation known to have been seen whole:
	// that of the last NEWGEN received, or the generation when the
	// subscription started; 0 when unknown.
	lastGen uint32
}

// watch subscribes and reports changes until the socket fails or ctx
// ends.
func (w *tableWatcher) watch(ctx context.Context) error {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return fmt.Errorf("open a netfilter netlink socket: %w", err)
	}
	defer c.Close()
	// Closing the socket is what ends a blocked Receive.
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if err := setReadBuffer(c, nftReadBuffer); err != nil {
		return fmt.Errorf("set the receive buffer of the nftables subscription: %w", err)
	}
	if err := c.JoinGroup(unix.NFNLGRP_NFTABLES); err != nil {
		return fmt.Errorf("join the nftables multicast group (needs CAP_NET_ADMIN): %w", err)
	}
	w.agg.reset()
	if w.renewed {
		w.lost(lostResubscribe)
	} else if g, err := Generation(); err == nil {
		// Commits before the first subscription are not news: the
		// caller applies its state after starting the watch.
		w.lastGen = g
	}
	for {
		msgs, err := c.Receive()
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, unix.ENOBUFS) {
			// The socket stays usable; what was dropped is unknown, so
			// the commit in progress is incomplete too.
			w.agg.reset()
			w.lost(lostOverflow)
			continue
		}
		if err != nil {
			return fmt.Errorf("receive nftables notifications: %w", err)
		}
		for _, m := range msgs {
			ev, ok, err := decodeNFT(uint16(m.Header.Type), m.Data)
			switch {
			case err != nil:
				w.agg.addUndecodable()
			case !ok:
			case ev.gen:
				w.seen(ev.genID)
				if ch, ok := w.agg.finish(ev); ok {
					w.fn(ch)
				}
			default:
				w.agg.add(ev)
			}
		}
	}
}

// lost reports that the commits since lastGen, up to the generation now,
// may have been missed.
func (w *tableWatcher) lost(summary string) {
	ch := TableChange{Lost: true, Summary: summary, Since: w.lastGen}
	if g, err := Generation(); err == nil {
		ch.Gen = g
		w.seen(g)
	} else {
		// Unknown from here on: the next loss cannot be narrowed.
		w.lastGen = 0
	}
	w.fn(ch)
}

// seen advances lastGen to gen unless gen is older: after a loss,
// notifications of commits older than the generation read then may still
// be queued.
func (w *tableWatcher) seen(gen uint32) {
	if w.lastGen == 0 || int32(gen-w.lastGen) > 0 {
		w.lastGen = gen
	}
}

// setReadBuffer sets the socket's receive buffer to n bytes, beyond the
// system's rmem_max when the process may (CAP_NET_ADMIN, which the daemon
// has): the default maximum is too small for a burst of set elements.
func setReadBuffer(c *netlink.Conn, n int) error {
	if rc, err := c.SyscallConn(); err == nil {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n)
		}); err == nil && serr == nil {
			return nil
		}
	}
	return c.SetReadBuffer(n)
}

// generationTimeout bounds a Generation request: the kernel answers at
// once, so a longer wait means something is badly wrong.
const generationTimeout = 2 * time.Second

// Generation returns the nftables ruleset generation now (NFT_MSG_GETGEN request).
//
// Every successful nft commit increases it by one (skipping 0 when it
// wraps), and the NEWGEN notification closing the commit carries the new
// value, which is what lets the daemon tell its own commits from others'.
// It asks the network namespace of the calling thread.
func Generation() (uint32, error) {
	var g generationReader
	defer g.close()
	return g.read()
}

// generationReader reads the generation over one lasting socket with
// plain system calls (see nfSocket): an apply reads it twice (before and
// after its commit), and through a netlink.Conn each read costs ~150 µs
// of goroutine hand-offs where a send and a receive cost ~5 µs: the
// kernel answers within the send. Not safe for concurrent use; its owner
// is the goroutine that applies.
type generationReader struct {
	nfSocket
}

// read is Generation on the lasting socket, opened on first use and
// opened anew after any failure.
func (g *generationReader) read() (uint32, error) {
	if err := g.open(); err != nil {
		return 0, fmt.Errorf("nftables generation: %w", err)
	}
	gen, err := g.ask()
	if err != nil {
		g.close()
		return 0, fmt.Errorf("nftables generation (needs CAP_NET_ADMIN): %w", err)
	}
	return gen, nil
}

// ask sends one GETGEN request and reads until its answer, skipping
// anything else (a stale answer of an earlier, failed request).
func (g *generationReader) ask() (uint32, error) {
	g.seq++
	req := make([]byte, unix.NLMSG_HDRLEN+4)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], uint16(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_GETGEN))
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST)
	binary.NativeEndian.PutUint32(req[8:], g.seq)
	copy(req[unix.NLMSG_HDRLEN:], []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0})
	if err := unix.Sendto(g.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, err
	}
	for range 16 {
		n, _, err := unix.Recvfrom(g.fd, g.buf, 0)
		if err != nil {
			return 0, err
		}
		msgs, err := syscall.ParseNetlinkMessage(g.buf[:n])
		if err != nil {
			return 0, err
		}
		for _, m := range msgs {
			if m.Header.Seq != g.seq {
				continue
			}
			if m.Header.Type == unix.NLMSG_ERROR {
				if len(m.Data) >= 4 {
					if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno < 0 {
						return 0, unix.Errno(-errno)
					}
				}
				return 0, errors.New("netlink error without an errno")
			}
			if ev, ok, err := decodeNFT(m.Header.Type, m.Data); err == nil && ok && ev.gen {
				return ev.genID, nil
			}
			return 0, errors.New("the kernel's answer has no generation")
		}
	}
	return 0, errors.New("no answer to the generation request")
}
