package config

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// TestUnderlayErrors: every bad reference between tunnel WANs is reported,
// at the entry to change, and nothing else.
func TestUnderlayErrors(t *testing.T) {
	const text = `mark_mask: 0x3f00
wans:
  - {name: s1, interface: eth1, gateway: 192.0.2.1}
  - {name: s2, interface: eth2, gateway: 192.0.2.65}
  - {name: wg1, interface: wg1, gateway: auto, underlay: [s1, s2, s1], tunnel_mark: 0x388}
  - {name: wg2, interface: wg2, gateway: auto, underlay: wg3}
  - {name: wg3, interface: wg3, gateway: auto, underlay: [wg4]}
  - {name: wg4, interface: wg4, gateway: auto, underlay: [wg2]}
  - {name: wg5, interface: wg5, gateway: auto, underlay: [wg5, nope], tunnel_mark: 0x80000}
  - {name: wg6, interface: wg6, gateway: auto, tunnel_mark: 0x1}
  - {name: wg7, interface: wg7, gateway: auto, underlay: [], tunnel_mark: 0x80000}
policies:
  - {name: p, members: [{wan: wg1}]}
default_policy: p
`
	want := []string{
		`t.yaml:5:67: underlay: WAN "s1" is already an underlay of this WAN`,
		"t.yaml:5:85: tunnel_mark: tunnel mark 0x388 overlaps mark_mask 0x3f00 (bits 0x300): multiwan owns those bits and rewrites them on every packet it classifies; use mark_mask: 0x3f000000, which is clear of it",
		"t.yaml:6:58: underlay: underlay cycle wg2 → wg3 → wg4 → wg2: each tunnel's outer packets would ride the next, back to itself",
		`t.yaml:9:59: underlay: WAN "wg5" cannot ride itself: its outer packets would enter the tunnel they carry`,
		`t.yaml:9:64: underlay: unknown WAN "nope"`,
		"t.yaml:10:61: tunnel_mark: a tunnel mark pins the tunnel's outer packets to its underlay: set underlay too",
		"t.yaml:11:58: underlay: empty list; name the WAN (or WANs, in order) the tunnel's outer packets ride",
		"t.yaml:11:75: tunnel_mark: a tunnel mark pins the tunnel's outer packets to its underlay: set underlay too",
		`t.yaml:11:75: tunnel_mark: tunnel mark 0x80000 is also WAN "wg5"'s: the outer packets of two tunnels with one mark cannot be told apart`,
	}
	_, err := Parse("t.yaml", []byte(text))
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("err %v", err)
	}
	if got := list.Lines(); !reflect.DeepEqual(got, want) {
		t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestUnderlayValid: an ordered list, a tunnel over a tunnel, a tunnel mark
// outside the mask; underlays in no policy are fine, and silent.
func TestUnderlayValid(t *testing.T) {
	cfg, err := Parse("t.yaml", []byte(`wans:
  - {name: s1, interface: eth1, gateway: 192.0.2.1}
  - {name: s2, interface: eth2, gateway: 192.0.2.65}
  - {name: wg1, interface: wg1, gateway: auto, underlay: [s1, s2], endpoint: "203.0.113.7:51820"}
  - {name: ts, interface: tailscale0, gateway: auto, underlay: wg1, tunnel_mark: 0x80000}
policies:
  - {name: p, members: [{wan: wg1}, {wan: ts}]}
default_policy: p
`))
	if err != nil {
		t.Fatal(err)
	}
	wg1, _ := cfg.WANByName("wg1")
	ts, _ := cfg.WANByName("ts")
	if !slices.Equal(wg1.Underlays, []string{"s1", "s2"}) || !slices.Equal(ts.Underlays, []string{"wg1"}) || ts.TunnelMark != 0x80000 {
		t.Fatalf("wg1 %v, ts %v %#x", wg1.Underlays, ts.Underlays, ts.TunnelMark)
	}
}

func TestSuggestMask(t *testing.T) {
	for _, c := range []struct {
		mask  uint32
		wans  int
		avoid []uint32
		want  uint32
		ok    bool
	}{
		{0x3f00, 6, []uint32{0x388}, 0x3f0000, true},
		{0xff00, 4, []uint32{0x80000}, 0xff, true},        // Tailscale's bypass mark: the low byte is free
		{0xff00, 4, []uint32{0x80000, 0x1}, 0xff00, true}, // and WireGuard's 0x1: the mask itself is clear
		{0xf0f0, 2, []uint32{0x10}, 0xff00, true},         // 8 bits, contiguous
		{0x3, 40, nil, 0x7f, true},                        // 40 WANs need 7 bits
		{0xff00, 4, []uint32{0x1, 0x100, 0x10000, 0x1000000}, 0, false},
	} {
		got, ok := SuggestMask(c.mask, c.wans, c.avoid)
		if got != c.want || ok != c.ok {
			t.Errorf("SuggestMask(%#x, %d, %#x) = %#x, %v; want %#x, %v", c.mask, c.wans, c.avoid, got, ok, c.want, c.ok)
		}
	}
}
