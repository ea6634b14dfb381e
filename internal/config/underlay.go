package config

import (
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strings"
)

// Tunnel WANs (overlays): a WAN whose interface is a tunnel names the WANs
// its outer packets ride (`underlay: starlink1`, or an ordered list for a
// tunnel that may fail over between underlays), and may name the fwmark
// its software puts on those packets (`tunnel_mark: 0x1`). The planner pins
// the outer traffic to the first usable underlay (plan/underlay.go); here
// the references are checked: they must name other WANs, without
// repetition and without a cycle, and a tunnel mark must stay clear of the
// bits multiwan owns.

// maxUnderlays bounds the list of one WAN: a tunnel fails over between a
// few uplinks, not dozens.
const maxUnderlays = 8

// underlays decodes `underlay:`, a WAN name or a list of them.
func underlays(v value) ([]string, []value) {
	items, ok := v.list(true)
	if ok && len(items) == 0 {
		v.errorf("empty list; name the WAN (or WANs, in order) the tunnel's outer packets ride")
		return nil, nil
	}
	if len(items) > maxUnderlays {
		v.errorf("at most %d underlays, got %d", maxUnderlays, len(items))
		return nil, nil
	}
	var names []string
	var srcs []value
	for _, item := range items {
		s, ok := item.text("a WAN name")
		if !ok {
			continue
		}
		names = append(names, s)
		srcs = append(srcs, item)
	}
	return names, srcs
}

// tunnelMark decodes `tunnel_mark:`, a non-zero 32-bit fwmark.
func tunnelMark(v value) (uint32, value) {
	m, ok := v.integer(1, math.MaxUint32)
	if !ok {
		return 0, v
	}
	return uint32(m), v
}

// checkUnderlays checks what tunnel WANs refer to: each underlay is another
// configured WAN, named once; the WANs do not ride each other in a cycle
// (the outer packets of a tunnel riding itself, directly or through other
// tunnels, would be encapsulated again without end); a tunnel mark is
// given only with an underlay, belongs to one tunnel, and lies outside
// mark_mask (multiwan rewrites the bits of the mask on every packet it
// classifies, so a tunnel's bits there would be lost or, worse, read as a
// WAN's id).
func (d *decoder) checkUnderlays(c *Config, src *sources, wans map[string]Pos) {
	index := map[string]int{}
	for i, w := range c.WANs {
		if w.Name != "" {
			if _, dup := index[w.Name]; !dup {
				index[w.Name] = i
			}
		}
	}
	marks := map[uint32]string{}
	var allMarks []uint32
	for i, w := range c.WANs {
		s := src.wan[i]
		seen := map[string]bool{}
		for k, u := range w.Underlays {
			item := s.underlays[k]
			switch _, ok := wans[u]; {
			case u == w.Name:
				item.errorf("WAN %q cannot ride itself: its outer packets would enter the tunnel they carry", u)
			case !ok:
				item.errorf("unknown WAN %q", u)
			case seen[u]:
				item.errorf("WAN %q is already an underlay of this WAN", u)
			}
			seen[u] = true
		}
		if w.TunnelMark == 0 {
			continue
		}
		tm := s.tunnelMark
		if len(w.Underlays) == 0 {
			tm.errorf("a tunnel mark pins the tunnel's outer packets to its underlay: set underlay too")
		}
		if other, dup := marks[w.TunnelMark]; dup {
			tm.errorf("tunnel mark %#x is also WAN %q's: the outer packets of two tunnels with one mark cannot be told apart", w.TunnelMark, other)
		} else {
			marks[w.TunnelMark] = w.Name
			allMarks = append(allMarks, w.TunnelMark)
		}
	}
	d.checkCycles(c, src, index)
	if c.MarkMask == 0 {
		return
	}
	for i, w := range c.WANs {
		if overlap := w.TunnelMark & c.MarkMask; overlap != 0 {
			src.wan[i].tunnelMark.errorf("%s", MarkClash(fmt.Sprintf("tunnel mark %#x", w.TunnelMark), w.TunnelMark, c.MarkMask, len(c.WANs), allMarks))
		}
	}
}

// checkCycles reports every cycle of the underlay graph once, at the WAN
// of the cycle written first, naming the whole ring ("wg1 → wg2 → wg1").
func (d *decoder) checkCycles(c *Config, src *sources, index map[string]int) {
	const (
		unvisited = iota
		onPath
		done
	)
	state := make([]int, len(c.WANs))
	var path []int
	var visit func(i int)
	visit = func(i int) {
		state[i] = onPath
		path = append(path, i)
		for k, u := range c.WANs[i].Underlays {
			j, ok := index[u]
			if !ok || j == i {
				continue // reported by checkUnderlays
			}
			switch state[j] {
			case unvisited:
				visit(j)
			case onPath:
				start := slices.Index(path, j)
				ring := path[start:]
				first := slices.Min(ring)
				var names []string
				for _, r := range ring {
					names = append(names, c.WANs[r].Name)
				}
				names = append(names, c.WANs[j].Name)
				// Point at the underlay entry of the ring's first WAN in
				// the file (or this one when that cannot be found).
				at := src.wan[i].underlays[k]
				for kk, uu := range c.WANs[first].Underlays {
					if jj, ok := index[uu]; ok && slices.Contains(ring, jj) {
						at = src.wan[first].underlays[kk]
						break
					}
				}
				at.errorf("underlay cycle %s: each tunnel's outer packets would ride the next, back to itself", strings.Join(names, " → "))
			}
		}
		path = path[:len(path)-1]
		state[i] = done
	}
	for i := range c.WANs {
		if state[i] == unvisited {
			visit(i)
		}
	}
}

// MarkClash says that a tunnel's mark (what, e.g. "tunnel mark 0x388" or
// "the WireGuard fwmark 0x388 of wg1") overlaps mark_mask, which bits, and
// what mask to use instead: one of the same width, clear of every tunnel
// mark in marks, that still holds ids for wans WANs.
func MarkClash(what string, mark, mask uint32, wans int, marks []uint32) string {
	msg := fmt.Sprintf("%s overlaps mark_mask %#x (bits %#x): multiwan owns those bits and rewrites them on every packet it classifies",
		what, mask, mark&mask)
	if s, ok := SuggestMask(mask, wans, append(slices.Clone(marks), mark)); ok {
		msg += fmt.Sprintf("; use mark_mask: %#x, which is clear of it", s)
	} else {
		msg += "; choose another tunnel mark"
	}
	return msg
}

// SuggestMask proposes a mark_mask for wans WANs that avoids every mark in
// avoid: the lowest byte-aligned run of contiguous bits as wide as mask
// (and at least as wide as wans need) that shares no bit with them. ok is
// false when no such run exists.
func SuggestMask(mask uint32, wans int, avoid []uint32) (uint32, bool) {
	var used uint32
	for _, m := range avoid {
		used |= m
	}
	width := max(bits.OnesCount32(mask), MaskBits(wans))
	if width > 32 {
		return 0, false
	}
	for shift := 0; shift+width <= 32; shift += 8 {
		run := uint32((uint64(1)<<width - 1) << shift)
		if run&used == 0 {
			return run, true
		}
	}
	return 0, false
}

// MaskBits is how many bits mark_mask needs for n WANs: their ids 1..n,
// the three last-resort marks, and the movable bit.
func MaskBits(n int) int { return bits.Len(uint(n+3)) + 1 }
