package conntrack

import (
	"net/netip"
	"slices"
	"testing"
)

// TestDeleteSelected: a tunnel's outer flow moves to another underlay by
// deleting its entries alone, by mark and tuple: other flows of the same
// underlay, and the same tuple under another mark, stay.
func TestDeleteSelected(t *testing.T) {
	ns, c := testNetns(t)
	const underlay, other, mask = 0x200, 0x300, 0x7f00
	// The outer flow (listen port 51820 to the VPS's 51820), under the
	// old underlay's mark with another program's bit, and twice under
	// another mark; a LAN flow to the VPS's other port; a TCP connection
	// to the VPS.
	cliInsert(t, ns, "udp", "192.0.2.66", "203.0.113.7", 51820, 51820, underlay|0x1)
	cliInsert(t, ns, "udp", "192.0.2.2", "203.0.113.7", 51820, 51820, other)
	cliInsert(t, ns, "udp", "198.51.100.10", "203.0.113.7", 40000, 51821, underlay)
	cliInsert(t, ns, "tcp", "192.0.2.66", "203.0.113.7", 40001, 51820, underlay)
	cliInsert(t, ns, "udp", "192.0.2.66", "203.0.113.9", 51820, 4500, underlay)

	byEndpoint := Selector{Proto: 17, Dst: netip.MustParseAddr("203.0.113.7"), DstPort: 51820}
	n, err := c.DeleteSelected(underlay, mask, 4, []Selector{byEndpoint})
	if err != nil || n != 1 {
		t.Fatalf("by endpoint: %d, %v; want 1", n, err)
	}
	byPort := Selector{Proto: 17, SrcPort: 51820}
	if n, err := c.DeleteSelected(underlay, mask, 0, []Selector{byPort}); err != nil || n != 1 {
		t.Fatalf("by listen port: %d, %v; want 1 (the flow to 203.0.113.9)", n, err)
	}
	if got, want := marks(t, c), []uint32{underlay, underlay, other}; !slices.Equal(got, want) {
		t.Errorf("marks left %#x, want %#x", got, want)
	}
	for _, bad := range []Selector{{}, {Proto: 17}, {Dst: netip.MustParseAddr("203.0.113.7")}} {
		if _, err := c.DeleteSelected(underlay, mask, 0, []Selector{bad}); err == nil {
			t.Errorf("selector %+v accepted", bad)
		}
	}
	if _, err := c.DeleteSelected(underlay, 0, 0, []Selector{byPort}); err == nil {
		t.Errorf("mask 0 accepted")
	}
}
