package plan

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"github.com/multiwan/multiwan/internal/config"
)

// nestedOut sorts prefixes and drops every prefix that lies inside one kept
// before it. Two prefixes either nest or are disjoint, so what remains never
// overlaps, which nft requires of an interval set.
func nestedOut(ps []netip.Prefix) []netip.Prefix {
	ps = slices.Clone(ps)
	for i := range ps {
		ps[i] = ps[i].Masked()
	}
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(a.Bits(), b.Bits())
	})
	var out []netip.Prefix
	for _, p := range ps {
		if n := len(out); n > 0 && out[n-1].Contains(p.Addr()) && out[n-1].Bits() <= p.Bits() {
			continue
		}
		out = append(out, p)
	}
	return out
}

func prefixString(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

// prefixElements turns a list of prefixes into the elements of an interval
// set, merging duplicates and nested prefixes.
func prefixElements(ps []netip.Prefix) []Element {
	var els []Element
	for _, p := range nestedOut(ps) {
		els = append(els, Element{Key: prefixString(p)})
	}
	return els
}

// mergeNets drops map elements whose prefix overlaps one earlier in the list
// (two WANs on the same subnet): the first WAN keeps it.
func mergeNets(els []Element) []Element {
	var kept []netip.Prefix
	var out []Element
	for _, e := range els {
		p := netip.MustParsePrefix(e.Key)
		if slices.ContainsFunc(kept, p.Overlaps) {
			continue
		}
		kept = append(kept, p)
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Element) int {
		return netip.MustParsePrefix(a.Key).Addr().Compare(netip.MustParsePrefix(b.Key).Addr())
	})
	return out
}

// mergePorts merges overlapping and adjacent port ranges for an interval set.
func mergePorts(rs []config.PortRange) []Element {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b config.PortRange) int { return cmp.Compare(a.First, b.First) })
	var merged []config.PortRange
	for _, r := range rs {
		if n := len(merged); n > 0 && int(r.First) <= int(merged[n-1].Last)+1 {
			merged[n-1].Last = max(merged[n-1].Last, r.Last)
			continue
		}
		merged = append(merged, r)
	}
	var els []Element
	for _, r := range merged {
		if r.First == r.Last {
			els = append(els, Element{Key: fmt.Sprint(r.First)})
		} else {
			els = append(els, Element{Key: fmt.Sprintf("%d-%d", r.First, r.Last)})
		}
	}
	return els
}
