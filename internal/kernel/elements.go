package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	gnft "github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/multiwan/multiwan/internal/plan"
)

// The fast path of a switch. A failover, a recovery or a `use` changes
// only the elements of the table's verdict maps (the planner keeps every
// decision that follows health in map elements: policies, bound sockets,
// DNS pinning, underlays). Such a change is written in-process over
// netlink, each changed map flushed and refilled, all in one nf_tables
// transaction: no nft process to start, no ruleset to read and parse
// first. Everything else (start, reload, repair, a change of shape) takes
// the nft path, whose input is the text `multiwan plan` prints.
//
// Only the key types those maps use are encoded here; any other change
// takes the nft path, which is never wrong, only slower.

// errNotEncodable says a set's elements are of a kind the fast path does
// not write; the nft path does.
var errNotEncodable = errors.New("not encodable in-process")

// elementChange is one map's new content, ready for netlink.
type elementChange struct {
	set      *gnft.Set
	elements []gnft.SetElement
}

// elementChanges encodes the sets of to whose elements differ from from's,
// which must have the same shape (sameShape). It fails with
// errNotEncodable when one of them cannot be written in-process.
func elementChanges(table string, from, to *plan.Table) ([]elementChange, error) {
	tab := &gnft.Table{Name: table, Family: gnft.TableFamilyINet}
	var out []elementChange
	for i, s := range to.Sets {
		if slices.Equal(from.Sets[i].Elements, s.Elements) {
			continue
		}
		els, err := encodeElements(s)
		if err != nil {
			return nil, fmt.Errorf("set %s: %w", s.Name, err)
		}
		out = append(out, elementChange{
			set:      &gnft.Set{Table: tab, Name: s.Name, IsMap: s.Map != "", Interval: slices.Contains(s.Flags, "interval")},
			elements: els,
		})
	}
	return out, nil
}

// encodeElements encodes the elements of a verdict map keyed by an
// address, by a drawn number (intervals: numgen, jhash) or by the family.
func encodeElements(s plan.Set) ([]gnft.SetElement, error) {
	if s.Map != "verdict" {
		return nil, errNotEncodable
	}
	interval := slices.Contains(s.Flags, "interval")
	var out []gnft.SetElement
	for _, e := range s.Elements {
		v, err := verdict(e.Value)
		if err != nil {
			return nil, err
		}
		switch {
		case strings.HasPrefix(s.TypeOf, "numgen ") && interval:
			// Interval keys are stored big-endian, each range as its
			// start and, flagged, the number after its end (as nft
			// writes them).
			lo, hi, err := numRange(e.Key)
			if err != nil {
				return nil, err
			}
			out = append(out,
				gnft.SetElement{Key: binary.BigEndian.AppendUint32(nil, lo), VerdictData: v},
				gnft.SetElement{Key: binary.BigEndian.AppendUint32(nil, hi+1), IntervalEnd: true})
		case s.TypeOf == "meta nfproto" && !interval:
			proto := map[string]byte{"ipv4": 2, "ipv6": 10}
			b, ok := proto[e.Key]
			if !ok {
				return nil, fmt.Errorf("family %q: %w", e.Key, errNotEncodable)
			}
			out = append(out, gnft.SetElement{Key: []byte{b}, VerdictData: v})
		case (s.Type == "ipv4_addr" || s.Type == "ipv6_addr") && !interval:
			a, err := netip.ParseAddr(e.Key)
			if err != nil || a.Is4() != (s.Type == "ipv4_addr") {
				return nil, fmt.Errorf("address %q: %w", e.Key, errNotEncodable)
			}
			out = append(out, gnft.SetElement{Key: a.AsSlice(), VerdictData: v})
		default:
			return nil, errNotEncodable
		}
	}
	return out, nil
}

// numRange parses "3" or "3-7".
func numRange(key string) (lo, hi uint32, err error) {
	a, b, ok := strings.Cut(key, "-")
	if !ok {
		b = a
	}
	l, err1 := strconv.ParseUint(a, 10, 32)
	h, err2 := strconv.ParseUint(b, 10, 32)
	if err1 != nil || err2 != nil || h < l || h == 1<<32-1 {
		return 0, 0, fmt.Errorf("range %q: %w", key, errNotEncodable)
	}
	return uint32(l), uint32(h), nil
}

// verdict parses a map element's value.
func verdict(v string) (*expr.Verdict, error) {
	word, chain, _ := strings.Cut(v, " ")
	kinds := map[string]expr.VerdictKind{
		"goto": expr.VerdictGoto, "jump": expr.VerdictJump,
		"return": expr.VerdictReturn, "accept": expr.VerdictAccept, "drop": expr.VerdictDrop,
	}
	kind, ok := kinds[word]
	if !ok || (chain == "") != (word != "goto" && word != "jump") {
		return nil, fmt.Errorf("verdict %q: %w", v, errNotEncodable)
	}
	return &expr.Verdict{Kind: kind, Chain: chain}, nil
}

// elementWriter writes element changes over one lasting netlink socket
// (opened on first use, and anew after a failure). Not safe for concurrent
// use; its owner is the goroutine that applies.
type elementWriter struct {
	conn *gnft.Conn
}

// write replaces the elements of every changed map in one nf_tables
// transaction: all of them change, or none.
func (w *elementWriter) write(changes []elementChange) error {
	if w.conn == nil {
		conn, err := gnft.New(gnft.AsLasting())
		if err != nil {
			return err
		}
		w.conn = conn
	}
	err := w.batch(changes)
	if err != nil {
		// Whatever the socket holds (an unsent batch, unread answers)
		// must not reach the next transaction.
		_ = w.conn.CloseLasting()
		w.conn = nil
	}
	return err
}

func (w *elementWriter) batch(changes []elementChange) error {
	for _, c := range changes {
		w.conn.FlushSet(c.set)
		if len(c.elements) == 0 {
			continue
		}
		if err := w.conn.SetAddElements(c.set, c.elements); err != nil {
			return err
		}
	}
	return w.conn.Flush()
}
