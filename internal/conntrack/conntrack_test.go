package conntrack

import (
	"errors"
	"testing"
)

func TestKernelAtLeast(t *testing.T) {
	for _, tc := range []struct {
		release string
		want    bool
	}{
		{"6.18.44-fc-v657", true},
		{"5.3.0", true},
		{"5.3-rc1", true},
		{"5.2.21", false},
		{"4.19.0-18-amd64", false},
		{"5.10.0-28-amd64", true},
		{"10.0", true},
	} {
		got, err := kernelAtLeast(tc.release, 5, 3)
		if err != nil || got != tc.want {
			t.Errorf("kernelAtLeast(%q, 5, 3) = %v, %v; want %v", tc.release, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "6", "x.y", "6.x"} {
		if _, err := kernelAtLeast(bad, 5, 3); err == nil {
			t.Errorf("kernelAtLeast(%q) gave no error", bad)
		}
	}
}

// TestDeleteByMarkRefusesBeforeTheKernel checks the guards that stand
// between a caller's mistake and a global flush. The Cleaner has no socket,
// so any request that got past the guards would fail differently.
func TestDeleteByMarkRefusesBeforeTheKernel(t *testing.T) {
	var c Cleaner
	if err := c.DeleteByMark(0, 0); !errors.Is(err, ErrZeroMask) {
		t.Errorf("DeleteByMark(0, 0) = %v, want ErrZeroMask", err)
	}
	if err := c.DeleteByMark(0x100, 0); !errors.Is(err, ErrZeroMask) {
		t.Errorf("DeleteByMark(0x100, 0) = %v, want ErrZeroMask", err)
	}
	for _, m := range [][2]uint32{{0, 0xff00}, {0x101, 0xff00}, {0x100, 0xf000}} {
		err := c.DeleteByMark(m[0], m[1])
		if err == nil || errors.Is(err, ErrZeroMask) || err.Error() == "conntrack: cleaner is closed" {
			t.Errorf("DeleteByMark(%#x, %#x) = %v, want a refusal", m[0], m[1], err)
		}
	}
	if err := c.DeleteByMark(0x100, 0xff00); err == nil || err.Error() != "conntrack: cleaner is closed" {
		t.Errorf("DeleteByMark on a closed Cleaner = %v", err)
	}
}
