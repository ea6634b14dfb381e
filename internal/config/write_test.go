package config

import "testing"

func TestUniqueName(t *testing.T) {
	taken := map[string]bool{}
	for _, c := range []struct{ in, want string }{
		{"eth0", "eth0"},
		{"eth0.100", "eth0_100"},
		{"eth0_100", "eth0_100_2"},
		{"eth0-100", "eth0-100_3"}, // eth0_100 in nft
		{"WAN", "wan"},
		{"auto", "auto_2"},
		{"enx00e04c68a1b2", "enx00e04c68a1b2"},
		{"enx00e04c68a1b2", "enx00e04c68a1_2"},
		{"", "wan_2"},
		{"ens1f0@x", "ens1f0_x"},
	} {
		if got := UniqueName(c.in, "wan", 15, taken); got != c.want {
			t.Errorf("UniqueName(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"eth0": "eth0", "br-lan": "br-lan", "eth0.100": "eth0.100", "yes": `"yes"`, "1234": `"1234"`,
		"0x10": `"0x10"`, "a#b": `"a#b"`, "2606:4700:4700::1111": `"2606:4700:4700::1111"`, "-x": `"-x"`, "1.5": `"1.5"`,
	} {
		if got := Quote(in); got != want {
			t.Errorf("Quote(%q) = %s, want %s", in, got, want)
		}
	}
}
