package main

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	mwct "github.com/multiwan/multiwan/internal/conntrack"
	"github.com/multiwan/multiwan/internal/lab"
	ct "github.com/ti-mo/conntrack"
)

// The dead WAN's value and the live one's, under the WAN id bits of the
// default mark_mask (0xff00 less the movable bit), as the daemon uses them.
const (
	deadMark, liveMark, idMask = 0x100, 0x200, 0x7f00
	nDead, nLive               = 100_000, 10_000
)

// createFlows creates n UDP entries with mark, the i-th from 198.18.0.0 +
// first + i (198.18.0.0/15 has 131,072 addresses) to 203.0.113.53:53.
func createFlows(c *ct.Conn, first, n int, mark uint32) error {
	base := netip.MustParseAddr("198.18.0.0").As4()
	dst := netip.MustParseAddr("203.0.113.53")
	for i := first; i < first+n; i++ {
		a := base
		a[1] += byte(i >> 16)
		a[2] = byte(i >> 8)
		a[3] = byte(i)
		if err := c.Create(ct.NewFlow(17, 0, netip.AddrFrom4(a), dst, 33000, 53, 600, mark)); err != nil {
			return fmt.Errorf("create entry %d: %w", i, err)
		}
	}
	return nil
}

// conntrackDelete times the deletion of a dead WAN's 100,000 entries next
// to 10,000 of a live WAN, in a lab router namespace: internal/conntrack's
// Cleaner.DeleteByMark (one netlink request) against the conntrack tool
// (`conntrack -D -m`), 3 rounds each, alternated; the live WAN's entries
// must all remain after each.
func conntrackDelete() error {
	const rounds = 3
	l, err := lab.New(lab.Options{ISPs: 2})
	if err != nil {
		return err
	}
	defer l.Close()

	// nf_conntrack_max is checked per namespace against a value that only
	// the host's namespace may change on most kernels; it is only read
	// here, and raised inside the lab's router namespace when the kernel
	// allows that there.
	out, err := run(l, lab.NSRouter, 10*time.Second, "cat", "/proc/sys/net/netfilter/nf_conntrack_max")
	if err != nil {
		return err
	}
	if max, _ := strconv.Atoi(strings.TrimSpace(out)); max < nDead+nLive {
		if _, err := run(l, lab.NSRouter, 10*time.Second, "sysctl", "-qw",
			fmt.Sprintf("net.netfilter.nf_conntrack_max=%d", 2*(nDead+nLive))); err != nil {
			return fmt.Errorf("nf_conntrack_max is %d and cannot be raised in the lab: %w", max, err)
		}
	}

	var conn *ct.Conn
	var cleaner *mwct.Cleaner
	if err := l.InNS(lab.NSRouter, func() error {
		var err error
		if conn, err = ct.Dial(nil); err != nil {
			return err
		}
		cleaner, err = mwct.Open()
		return err
	}); err != nil {
		if conn != nil {
			conn.Close()
		}
		return fmt.Errorf("conntrack sockets in the router namespace: %w", err)
	}
	defer conn.Close()
	defer cleaner.Close()

	if err := createFlows(conn, nDead, nLive, liveMark); err != nil {
		return err
	}
	check := func(what string) error {
		if got, err := cleaner.Count(liveMark, idMask); err != nil || got != nLive {
			return fmt.Errorf("after %s: %d entries of the live WAN, %v; want %d", what, got, err, nLive)
		}
		if got, err := cleaner.Count(0, 0); err != nil || got != nLive {
			return fmt.Errorf("after %s: %d entries in all, %v; want %d", what, got, err, nLive)
		}
		return nil
	}
	var lib, cli, creates []time.Duration
	for r := range 2 * rounds {
		start := time.Now()
		if err := createFlows(conn, 0, nDead, deadMark); err != nil {
			return err
		}
		creates = append(creates, time.Since(start))
		if got, err := cleaner.Count(deadMark, idMask); err != nil || got != nDead {
			return fmt.Errorf("round %d: %d entries of the dead WAN, %v; want %d", r, got, err, nDead)
		}
		if r%2 == 0 {
			start = time.Now()
			if err := cleaner.DeleteByMark(deadMark, idMask); err != nil {
				return err
			}
			lib = append(lib, time.Since(start))
			if err := check("DeleteByMark"); err != nil {
				return err
			}
		} else {
			start = time.Now()
			_, err := run(l, lab.NSRouter, 60*time.Second, "conntrack", "-D", "-m", fmt.Sprintf("%#x/%#x", deadMark, idMask))
			cli = append(cli, time.Since(start))
			if err != nil {
				return err
			}
			if err := check("conntrack -D"); err != nil {
				return err
			}
		}
	}
	// What of the tool's time is starting it in the namespace.
	start := time.Now()
	if _, err := run(l, lab.NSRouter, 10*time.Second, "conntrack", "-C"); err != nil {
		return err
	}
	startup := time.Since(start)
	add("delete a dead WAN's 100,000 conntrack entries (Cleaner.DeleteByMark)",
		fmt.Sprintf("median %s, max %s (n=%d)", ms(pct(lib, 50)), ms(pct(lib, 100)), len(lib)), "≤ 200 ms",
		"10,000 of the live WAN kept, checked after each")
	add("same with conntrack -D -m (baseline)",
		fmt.Sprintf("median %s, max %s (n=%d)", ms(pct(cli, 50)), ms(pct(cli, 100)), len(cli)), "—",
		fmt.Sprintf("incl. %s to start it in the namespace; anchor ~0.8 s; creating 100,000 took %s", ms(startup), ms(pct(creates, 50))))
	return nil
}
