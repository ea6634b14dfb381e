package conntrack

import (
	"errors"
	"fmt"
	"net/netip"

	ct "github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// Selector picks connections by their original direction, the way a
// tunnel's outer flow is known: its protocol, and its destination address
// and port, or its source port (the tunnel's listen port). Zero fields
// match anything; a Selector must set Proto and one of the others.
type Selector struct {
	Proto   uint8 // e.g. 17 for UDP
	Dst     netip.Addr
	DstPort uint16
	SrcPort uint16
}

// matches reports whether the flow's original tuple fits s.
func (s Selector) matches(f *ct.Flow) bool {
	t := f.TupleOrig
	switch {
	case t.Proto.Protocol != s.Proto:
		return false
	case s.Dst.IsValid() && t.IP.DestinationAddress.Unmap() != s.Dst.Unmap():
		return false
	case s.DstPort != 0 && t.Proto.DestinationPort != s.DstPort:
		return false
	case s.SrcPort != 0 && t.Proto.SourcePort != s.SrcPort:
		return false
	}
	return true
}

func (s Selector) valid() bool {
	return s.Proto != 0 && (s.Dst.IsValid() || s.DstPort != 0 || s.SrcPort != 0)
}

// maxSelected bounds how many entries one DeleteSelected removes: the
// outer flows of a tunnel are a handful, and a selector that matches
// thousands is a mistake better stopped than carried out.
const maxSelected = 1024

// DeleteSelected deletes the conntrack entries whose mark satisfies
// ctmark & mask == mark and whose original tuple matches one of sels, in
// family 4 or 6 (0: both), and returns how many it deleted. The kernel
// filters by mark while it dumps (one request); the tuples are matched
// here, and each matching entry is deleted by its tuple. An entry that
// vanished in between is not an error.
//
// It is meant for the few entries of one flow (a tunnel's outer flow that
// must move to another underlay), not for a WAN's whole table: that is
// DeleteByMark's job, in one request.
func (c *Cleaner) DeleteSelected(mark, mask uint32, family int, sels []Selector) (int, error) {
	if mask == 0 {
		return 0, ErrZeroMask
	}
	if err := checkMark(mark, mask); err != nil {
		return 0, err
	}
	if len(sels) == 0 {
		return 0, nil
	}
	for _, s := range sels {
		if !s.valid() {
			return 0, fmt.Errorf("conntrack: selector %+v selects every connection of its protocol, or of every protocol", s)
		}
	}
	filter, err := markFilter(mark, mask, family)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return 0, errors.New("conntrack: cleaner is closed")
	}
	flows, err := c.conn.DumpFilter(filter, nil)
	if err != nil {
		return 0, fmt.Errorf("conntrack: dump entries with mark %#x/%#x: %w%s", mark, mask, err, hint(err))
	}
	n := 0
	for i := range flows {
		f := &flows[i]
		if f.Mark&mask != mark || !selected(f, sels) {
			continue // the kernel filtered; this is for kernels that did not
		}
		if n == maxSelected {
			return n, fmt.Errorf("conntrack: more than %d entries with mark %#x/%#x match %v; stopped", maxSelected, mark, mask, sels)
		}
		if err := c.conn.Delete(*f); err != nil && !isNotFound(err) {
			return n, fmt.Errorf("conntrack: delete entry %v: %w%s", f.TupleOrig, err, hint(err))
		}
		n++
	}
	return n, nil
}

func selected(f *ct.Flow, sels []Selector) bool {
	for _, s := range sels {
		if s.matches(f) {
			return true
		}
	}
	return false
}

// isNotFound reports the kernel's answer for an entry that is gone.
func isNotFound(err error) bool { return errors.Is(err, unix.ENOENT) }
