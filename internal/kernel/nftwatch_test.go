package kernel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"
)

// Hand-built nftables notifications, laid out as the kernel sends them:
// a struct nfgenmsg (family, version, resource id), then attributes whose
// headers are in host byte order.

func nlattr(typ uint16, v []byte) []byte {
	b := make([]byte, 4, align4(4+len(v)))
	binary.NativeEndian.PutUint16(b, uint16(4+len(v)))
	binary.NativeEndian.PutUint16(b[2:], typ)
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func nlstr(s string) []byte { return append([]byte(s), 0) }

// nftMsg is one notification: its netlink type and data.
type nftMsg struct {
	typ  uint16
	data []byte
}

func nftType(msg uint8) uint16 { return unix.NFNL_SUBSYS_NFTABLES<<8 | uint16(msg) }

func mkMsg(msg uint8, family uint8, attrs ...[]byte) nftMsg {
	data := []byte{family, unix.NFNETLINK_V0, 0, 0}
	for _, a := range attrs {
		data = append(data, a...)
	}
	return nftMsg{nftType(msg), data}
}

func tableMsg(msg uint8, family uint8, table string) nftMsg {
	return mkMsg(msg, family, nlattr(unix.NFTA_TABLE_NAME, nlstr(table)), nlattr(unix.NFTA_TABLE_FLAGS, be32(0)))
}

func chainMsg(msg uint8, table, chain string) nftMsg {
	return mkMsg(msg, unix.NFPROTO_INET, nlattr(unix.NFTA_CHAIN_TABLE, nlstr(table)),
		nlattr(unix.NFTA_CHAIN_HANDLE, make([]byte, 8)), nlattr(unix.NFTA_CHAIN_NAME, nlstr(chain)))
}

func ruleMsg(msg uint8, family uint8, table, chain string) nftMsg {
	// Expressions: a nested list the decoder must skip, not read.
	exprs := nlattr(unix.NLA_F_NESTED|unix.NFTA_RULE_EXPRESSIONS,
		nlattr(unix.NLA_F_NESTED|unix.NFTA_LIST_ELEM, nlattr(unix.NFTA_EXPR_NAME, nlstr("counter"))))
	return mkMsg(msg, family, nlattr(unix.NFTA_RULE_TABLE, nlstr(table)), nlattr(unix.NFTA_RULE_CHAIN, nlstr(chain)),
		nlattr(unix.NFTA_RULE_HANDLE, make([]byte, 8)), exprs)
}

func setMsg(msg uint8, table, set string) nftMsg {
	return mkMsg(msg, unix.NFPROTO_INET, nlattr(unix.NFTA_SET_TABLE, nlstr(table)), nlattr(unix.NFTA_SET_NAME, nlstr(set)))
}

func elemMsg(msg uint8, table, set string, n int) nftMsg {
	var elems []byte
	for i := range n {
		key := nlattr(unix.NLA_F_NESTED|unix.NFTA_SET_ELEM_KEY, nlattr(unix.NFTA_DATA_VALUE, []byte{198, 51, 100, byte(i)}))
		elems = append(elems, nlattr(unix.NLA_F_NESTED|unix.NFTA_LIST_ELEM, key)...)
	}
	return mkMsg(msg, unix.NFPROTO_INET, nlattr(unix.NFTA_SET_ELEM_LIST_TABLE, nlstr(table)),
		nlattr(unix.NFTA_SET_ELEM_LIST_SET, nlstr(set)), nlattr(unix.NLA_F_NESTED|unix.NFTA_SET_ELEM_LIST_ELEMENTS, elems))
}

func genMsg(gen, pid uint32, comm string) nftMsg {
	return mkMsg(unix.NFT_MSG_NEWGEN, unix.AF_UNSPEC, nlattr(unix.NFTA_GEN_ID, be32(gen)),
		nlattr(unix.NFTA_GEN_PROC_PID, be32(pid)), nlattr(unix.NFTA_GEN_PROC_NAME, nlstr(comm)))
}

func TestDecodeNFT(t *testing.T) {
	for _, c := range []struct {
		name string
		msg  nftMsg
		want nftEvent
	}{
		{"table deleted", tableMsg(unix.NFT_MSG_DELTABLE, unix.NFPROTO_INET, "multiwan"),
			nftEvent{kind: kindTable, deleted: true, family: unix.NFPROTO_INET, table: "multiwan", count: 1}},
		{"table destroyed", tableMsg(nftMsgDestroyTable, unix.NFPROTO_INET, "multiwan"),
			nftEvent{kind: kindTable, deleted: true, family: unix.NFPROTO_INET, table: "multiwan", count: 1}},
		{"table of family ip", tableMsg(unix.NFT_MSG_NEWTABLE, unix.NFPROTO_IPV4, "multiwan"),
			nftEvent{kind: kindTable, family: unix.NFPROTO_IPV4, table: "multiwan", count: 1}},
		{"chain", chainMsg(unix.NFT_MSG_DELCHAIN, "multiwan", "steer"),
			nftEvent{kind: kindChain, deleted: true, family: unix.NFPROTO_INET, table: "multiwan", name: "steer", count: 1}},
		{"rule", ruleMsg(unix.NFT_MSG_NEWRULE, unix.NFPROTO_INET, "multiwan", "identify"),
			nftEvent{kind: kindRule, family: unix.NFPROTO_INET, table: "multiwan", name: "identify", count: 1}},
		{"set", setMsg(unix.NFT_MSG_DELSET, "multiwan", "r_x_dst4"),
			nftEvent{kind: kindSet, deleted: true, family: unix.NFPROTO_INET, table: "multiwan", name: "r_x_dst4", count: 1}},
		{"elements", elemMsg(unix.NFT_MSG_DELSETELEM, "multiwan", "r_x_dst4", 3),
			nftEvent{kind: kindElem, deleted: true, family: unix.NFPROTO_INET, table: "multiwan", name: "r_x_dst4", count: 3}},
		{"object", mkMsg(unix.NFT_MSG_DELOBJ, unix.NFPROTO_INET, nlattr(unix.NFTA_OBJ_TABLE, nlstr("multiwan")), nlattr(unix.NFTA_OBJ_NAME, nlstr("cnt"))),
			nftEvent{kind: kindObj, deleted: true, family: unix.NFPROTO_INET, table: "multiwan", name: "cnt", count: 1}},
		{"flowtable", mkMsg(unix.NFT_MSG_NEWFLOWTABLE, unix.NFPROTO_INET, nlattr(1, nlstr("multiwan")), nlattr(nftaFlowtableName, nlstr("ft"))),
			nftEvent{kind: kindFlowtable, family: unix.NFPROTO_INET, table: "multiwan", name: "ft", count: 1}},
		{"generation", genMsg(0x01020304, 4242, "nft"),
			nftEvent{gen: true, genID: 0x01020304, pid: 4242, comm: "nft"}},
		{"name with control characters and no NUL", mkMsg(unix.NFT_MSG_DELTABLE, unix.NFPROTO_INET, nlattr(1, []byte("a\nb\x1b[31m\xff"))),
			nftEvent{kind: kindTable, deleted: true, family: unix.NFPROTO_INET, table: "a?b?[31m?", count: 1}},
	} {
		ev, ok, err := decodeNFT(c.msg.typ, c.msg.data)
		if err != nil || !ok || fmt.Sprint(ev) != fmt.Sprint(c.want) {
			t.Errorf("%s: %+v, %v, %v; want %+v", c.name, ev, ok, err, c.want)
		}
	}

	long := strings.Repeat("x", 1000)
	ev, ok, err := decodeNFT(tableMsg(unix.NFT_MSG_DELTABLE, unix.NFPROTO_INET, long).typ, tableMsg(unix.NFT_MSG_DELTABLE, unix.NFPROTO_INET, long).data)
	if err != nil || !ok || len(ev.table) != maxNFTName {
		t.Errorf("a long name: %d bytes, %v, %v; want it cut to %d", len(ev.table), ok, err, maxNFTName)
	}
}

func TestDecodeNFTIgnores(t *testing.T) {
	for _, c := range []struct {
		name string
		typ  uint16
		data []byte
	}{
		{"another subsystem", unix.NFNL_SUBSYS_CTNETLINK<<8 | 0, tableMsg(0, unix.NFPROTO_INET, "multiwan").data},
		{"a get", nftType(unix.NFT_MSG_GETTABLE), tableMsg(0, unix.NFPROTO_INET, "multiwan").data},
		{"a trace", nftType(unix.NFT_MSG_TRACE), []byte{1, 0, 0, 0}},
		{"an unknown type", nftType(0xee), nil},
		{"netlink done", unix.NLMSG_DONE, nil},
	} {
		if ev, ok, err := decodeNFT(c.typ, c.data); ok || err != nil {
			t.Errorf("%s: %+v, %v, %v; want it ignored", c.name, ev, ok, err)
		}
	}
}

func TestDecodeNFTMalformed(t *testing.T) {
	good := tableMsg(unix.NFT_MSG_DELTABLE, unix.NFPROTO_INET, "multiwan")
	badLen := append([]byte(nil), good.data...)
	binary.NativeEndian.PutUint16(badLen[4:], 200) // past the end
	tiny := append([]byte(nil), good.data...)
	binary.NativeEndian.PutUint16(tiny[4:], 2) // shorter than its header
	for _, c := range []struct {
		name string
		typ  uint16
		data []byte
	}{
		{"no nfgenmsg", good.typ, []byte{1, 0}},
		{"attribute past the end", good.typ, badLen},
		{"attribute shorter than its header", good.typ, tiny},
		{"no table name", nftType(unix.NFT_MSG_DELRULE), mkMsg(0, unix.NFPROTO_INET, nlattr(unix.NFTA_RULE_CHAIN, nlstr("c"))).data},
		{"too long", good.typ, append(good.data, make([]byte, maxNFTMessage)...)},
		{"generation without id", nftType(unix.NFT_MSG_NEWGEN), mkMsg(0, 0, nlattr(unix.NFTA_GEN_PROC_PID, be32(1))).data},
		{"generation id of 2 bytes", nftType(unix.NFT_MSG_NEWGEN), mkMsg(0, 0, nlattr(unix.NFTA_GEN_ID, []byte{0, 1})).data},
		{"elements cut short", nftType(unix.NFT_MSG_DELSETELEM), mkMsg(0, unix.NFPROTO_INET, nlattr(1, nlstr("multiwan")),
			nlattr(unix.NFTA_SET_ELEM_LIST_ELEMENTS, []byte{40, 0, 1, 0})).data},
	} {
		if ev, ok, err := decodeNFT(c.typ, c.data); err == nil || ok {
			t.Errorf("%s: %+v, %v, %v; want an error", c.name, ev, ok, err)
		}
	}
}

// feed runs msgs through the aggregation WatchTable does and returns the
// changes it would report.
func feed(table string, msgs ...nftMsg) []TableChange {
	agg := commit{table: table}
	var out []TableChange
	for _, m := range msgs {
		ev, ok, err := decodeNFT(m.typ, m.data)
		switch {
		case err != nil:
			agg.addUndecodable()
		case !ok:
		case ev.gen:
			if ch, ok := agg.finish(ev); ok {
				out = append(out, ch)
			}
		default:
			agg.add(ev)
		}
	}
	return out
}

func TestCommitSummary(t *testing.T) {
	var flush []nftMsg // what `flush ruleset` sends with two tables
	for _, table := range []string{"filter", "multiwan"} {
		for i := range 12 {
			flush = append(flush, ruleMsg(unix.NFT_MSG_DELRULE, unix.NFPROTO_INET, table, []string{"steer", "identify"}[i%2]))
		}
		flush = append(flush, setMsg(unix.NFT_MSG_DELSET, table, "r_x_dst4"), chainMsg(unix.NFT_MSG_DELCHAIN, table, "steer"),
			chainMsg(unix.NFT_MSG_DELCHAIN, table, "identify"), tableMsg(unix.NFT_MSG_DELTABLE, unix.NFPROTO_INET, table))
	}
	var manyChains []nftMsg
	for i := range 10 {
		manyChains = append(manyChains, chainMsg(unix.NFT_MSG_DELCHAIN, "multiwan", fmt.Sprintf("c%d", i)))
	}
	for _, c := range []struct {
		name    string
		msgs    []nftMsg
		want    string // the summary; "" for no change
		deleted bool
		lost    bool
	}{
		{"flush ruleset", flush, "table inet multiwan deleted", true, false},
		{"rules deleted", []nftMsg{
			ruleMsg(unix.NFT_MSG_DELRULE, unix.NFPROTO_INET, "multiwan", "steer"),
			ruleMsg(unix.NFT_MSG_DELRULE, unix.NFPROTO_INET, "multiwan", "identify"),
			ruleMsg(unix.NFT_MSG_DELRULE, unix.NFPROTO_INET, "multiwan", "steer"),
		}, "3 rules deleted (chains steer, identify)", true, false},
		{"one rule deleted", []nftMsg{ruleMsg(unix.NFT_MSG_DELRULE, unix.NFPROTO_INET, "multiwan", "steer")},
			"1 rule deleted (chain steer)", true, false},
		{"elements deleted", []nftMsg{elemMsg(unix.NFT_MSG_DELSETELEM, "multiwan", "r_x_dst4", 1), elemMsg(unix.NFT_MSG_DELSETELEM, "multiwan", "r_x_dst4", 2)},
			"set r_x_dst4: 3 elements deleted", true, false},
		{"elements of two sets", []nftMsg{elemMsg(unix.NFT_MSG_NEWSETELEM, "multiwan", "a", 2), elemMsg(unix.NFT_MSG_NEWSETELEM, "multiwan", "b", 1)},
			"3 elements added (sets a, b)", false, false},
		{"a replacement", []nftMsg{
			tableMsg(unix.NFT_MSG_DELTABLE, unix.NFPROTO_INET, "multiwan"), tableMsg(unix.NFT_MSG_NEWTABLE, unix.NFPROTO_INET, "multiwan"),
			chainMsg(unix.NFT_MSG_NEWCHAIN, "multiwan", "steer"),
		}, "table inet multiwan replaced", true, false},
		{"dormant", []nftMsg{tableMsg(unix.NFT_MSG_NEWTABLE, unix.NFPROTO_INET, "multiwan")},
			"table inet multiwan added or its flags changed", false, false},
		{"mixed", []nftMsg{
			chainMsg(unix.NFT_MSG_NEWCHAIN, "multiwan", "x"), ruleMsg(unix.NFT_MSG_NEWRULE, unix.NFPROTO_INET, "multiwan", "x"),
			setMsg(unix.NFT_MSG_DELSET, "multiwan", "old"),
		}, "chain x added; set old deleted; 1 rule added (chain x)", true, false},
		{"names bounded", manyChains, "10 chains deleted (c0, c1, c2, …)", true, false},
		{"another table", []nftMsg{tableMsg(unix.NFT_MSG_DELTABLE, unix.NFPROTO_INET, "filter")}, "", false, false},
		{"another family", []nftMsg{tableMsg(unix.NFT_MSG_DELTABLE, unix.NFPROTO_IPV4, "multiwan"),
			ruleMsg(unix.NFT_MSG_DELRULE, unix.NFPROTO_IPV6, "multiwan", "steer")}, "", false, false},
		{"undecodable", []nftMsg{{nftType(unix.NFT_MSG_DELRULE), []byte{1}}},
			"1 nftables notifications not understood", false, true},
	} {
		msgs := append(c.msgs, genMsg(77, 4242, "nft"))
		got := feed("multiwan", msgs...)
		if c.want == "" {
			if len(got) != 0 {
				t.Errorf("%s: reported %+v", c.name, got)
			}
			continue
		}
		want := TableChange{Gen: 77, PID: 4242, Comm: "nft", Summary: c.want, Deleted: c.deleted, Lost: c.lost}
		if len(got) != 1 || got[0] != want {
			t.Errorf("%s: %+v\nwant %+v", c.name, got, want)
		}
	}
}

// TestCommitBoundaries: each NEWGEN closes its own commit, and a commit
// that did not touch the table reports nothing.
func TestCommitBoundaries(t *testing.T) {
	got := feed("multiwan",
		ruleMsg(unix.NFT_MSG_DELRULE, unix.NFPROTO_INET, "multiwan", "a"), genMsg(10, 1, "nft"),
		ruleMsg(unix.NFT_MSG_NEWRULE, unix.NFPROTO_INET, "other", "a"), genMsg(11, 2, "iptables-nft"),
		genMsg(12, 3, "nft"),
		chainMsg(unix.NFT_MSG_NEWCHAIN, "multiwan", "b"), genMsg(13, 4, "multiwan"))
	want := []TableChange{
		{Gen: 10, PID: 1, Comm: "nft", Summary: "1 rule deleted (chain a)", Deleted: true},
		{Gen: 13, PID: 4, Comm: "multiwan", Summary: "chain b added"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("changes %+v\nwant %+v", got, want)
	}
}

// parseStream cuts fuzz input into messages: a 2-byte type, a 2-byte
// length, then that many bytes (or what is left).
func parseStream(b []byte) []nftMsg {
	var msgs []nftMsg
	for len(b) >= 4 {
		typ := binary.LittleEndian.Uint16(b)
		n := min(int(binary.LittleEndian.Uint16(b[2:])), len(b)-4)
		msgs = append(msgs, nftMsg{typ, b[4 : 4+n]})
		b = b[4+n:]
	}
	return msgs
}

func streamBytes(msgs ...nftMsg) []byte {
	var b []byte
	for _, m := range msgs {
		b = binary.LittleEndian.AppendUint16(b, m.typ)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(m.data)))
		b = append(b, m.data...)
	}
	return b
}

// FuzzDecodeNFTStream feeds arbitrary messages to the decoder and the
// aggregation: nothing may panic, and what is reported stays bounded and
// printable.
func FuzzDecodeNFTStream(f *testing.F) {
	f.Add(streamBytes(ruleMsg(unix.NFT_MSG_DELRULE, unix.NFPROTO_INET, "multiwan", "steer"), genMsg(5, 1, "nft")))
	f.Add(streamBytes(elemMsg(unix.NFT_MSG_DELSETELEM, "multiwan", "s", 3), tableMsg(unix.NFT_MSG_DELTABLE, unix.NFPROTO_INET, "multiwan"), genMsg(6, 1, "nft")))
	f.Add(streamBytes(chainMsg(unix.NFT_MSG_NEWCHAIN, "multiwan", "c"), setMsg(unix.NFT_MSG_NEWSET, "multiwan", "s"), genMsg(7, 2, "x")))
	f.Add(streamBytes(nftMsg{nftType(unix.NFT_MSG_DELRULE), []byte{1, 0, 0, 0, 5, 0, 1, 0}}, genMsg(8, 0, "")))
	f.Fuzz(func(t *testing.T, b []byte) {
		msgs := parseStream(b)
		for _, m := range msgs {
			ev, ok, err := decodeNFT(m.typ, m.data)
			if err != nil && ok {
				t.Fatalf("both an error and an event: %v", err)
			}
			if len(ev.table) > maxNFTName || len(ev.name) > maxNFTName || len(ev.comm) > maxNFTName {
				t.Fatalf("a name longer than %d bytes", maxNFTName)
			}
			if ev.count < 0 || ev.count > maxNFTElems {
				t.Fatalf("element count %d", ev.count)
			}
		}
		for _, table := range []string{"multiwan", ""} {
			for _, ch := range feed(table, msgs...) {
				if len(ch.Summary) == 0 || len(ch.Summary) > 4096 || !utf8.ValidString(ch.Summary) || !utf8.ValidString(ch.Comm) {
					t.Fatalf("summary of %d bytes: %q (comm %q)", len(ch.Summary), ch.Summary, ch.Comm)
				}
				if strings.ContainsFunc(ch.Summary, func(r rune) bool { return r < ' ' }) {
					t.Fatalf("control character in %q", ch.Summary)
				}
			}
		}
	})
}

// FuzzDecodeNFT: one message, whose first two bytes are its type.
func FuzzDecodeNFT(f *testing.F) {
	for _, m := range []nftMsg{
		tableMsg(unix.NFT_MSG_DELTABLE, unix.NFPROTO_INET, "multiwan"),
		elemMsg(unix.NFT_MSG_NEWSETELEM, "multiwan", "s", 2),
		genMsg(1, 2, "nft"),
	} {
		f.Add(binary.LittleEndian.AppendUint16(nil, m.typ), m.data)
	}
	f.Fuzz(func(t *testing.T, typ, data []byte) {
		if len(typ) < 2 {
			return
		}
		ev, ok, err := decodeNFT(binary.LittleEndian.Uint16(typ), data)
		if ok && err != nil {
			t.Fatal("both an event and an error")
		}
		if ok && !ev.gen && ev.count < 1 {
			t.Fatalf("an event counting %d", ev.count)
		}
	})
}

// scriptedGen returns the generations in gens, one per call, then fails.
func scriptedGen(gens ...uint32) func() (uint32, error) {
	return func() (uint32, error) {
		if len(gens) == 0 {
			return 0, errors.New("no generation scripted")
		}
		g := gens[0]
		gens = gens[1:]
		return g, nil
	}
}

// TestNFTOurs: a transaction's commit is ours when the generation moved by
// exactly one around it, and never when another commit may have come in
// between or the generation could not be read.
func TestNFTOurs(t *testing.T) {
	ctx := context.Background()
	n, _ := newFakeNFT()
	if err := n.Apply(ctx, sampleTable()); err != nil {
		t.Fatal(err)
	}
	if n.Ours(1) || n.Ours(0) {
		t.Error("an adapter without generations claims commits")
	}

	n.Invalidate()
	n.generation = scriptedGen(5, 6, 6, 8, 0xffffffff, 1)
	if err := n.Apply(ctx, sampleTable()); err != nil { // 5 → 6: ours
		t.Fatal(err)
	}
	if err := n.Compact(ctx); err != nil { // nothing to compact: no transaction
		t.Fatal(err)
	}
	if err := n.Remove(ctx); err != nil { // 6 → 8: someone else committed too
		t.Fatal(err)
	}
	n.Invalidate()
	if err := n.Apply(ctx, sampleTable()); err != nil { // wraps past 0
		t.Fatal(err)
	}
	for gen, want := range map[uint32]bool{5: false, 6: true, 7: false, 8: false, 0xffffffff: false, 0: false, 1: true} {
		if n.Ours(gen) != want {
			t.Errorf("Ours(%d) = %v, want %v", gen, !want, want)
		}
	}
	if n.GenerationError() != nil {
		t.Errorf("GenerationError = %v", n.GenerationError())
	}

	// A generation that cannot be read claims nothing, and says why.
	n.Invalidate()
	if err := n.Apply(ctx, sampleTable()); err != nil {
		t.Fatal(err)
	}
	if n.GenerationError() == nil {
		t.Error("GenerationError is nil after a failed read")
	}

	// A failed transaction moves nothing and claims nothing.
	n.generation = scriptedGen(20, 20)
	bad := sampleTable()
	bad.Chains[0].Hook = "nowhere"
	if err := n.Apply(ctx, bad); err == nil {
		t.Fatal("a bad table was accepted")
	}
	if n.Ours(20) || n.Ours(21) {
		t.Error("a failed transaction was recorded")
	}

	// The record is bounded: the oldest commits are forgotten.
	m := NewNFTFromInterface(knftables.NewFake(knftables.InetFamily, "multiwan"), "multiwan")
	var gens []uint32
	for g := uint32(100); g < 100+ownGenerations+2; g++ {
		gens = append(gens, g, g+1)
	}
	m.generation = scriptedGen(gens...)
	for range ownGenerations + 2 {
		m.Invalidate()
		if err := m.Apply(ctx, sampleTable()); err != nil {
			t.Fatal(err)
		}
	}
	if m.Ours(101) || m.Ours(102) || !m.Ours(103) || !m.Ours(100+ownGenerations+2) {
		t.Errorf("record of %d: 101 %v 102 %v 103 %v %d %v", ownGenerations, m.Ours(101), m.Ours(102), m.Ours(103),
			100+ownGenerations+2, m.Ours(100+ownGenerations+2))
	}
}

func TestNFTOursRange(t *testing.T) {
	n, _ := newFakeNFT()
	// Commits 11 and 12 ours, 13 someone else's, 14 ours.
	n.generation = scriptedGen(10, 11, 11, 12, 13, 14)
	for range 3 {
		n.Invalidate()
		if err := n.Apply(context.Background(), sampleTable()); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		since, gen uint32
		want       bool
	}{
		{10, 12, true}, {10, 11, true}, {12, 12, true}, {11, 12, true},
		{10, 13, false}, {12, 14, false}, {13, 14, true},
		{0, 12, false}, {10, 0, false}, {9, 12, false},
		{14, 10, false}, // backwards: as long as the record, then no
	} {
		if got := n.OursRange(c.since, c.gen); got != c.want {
			t.Errorf("OursRange(%d, %d) = %v, want %v", c.since, c.gen, got, c.want)
		}
	}
}
