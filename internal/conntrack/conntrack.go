// Package conntrack removes a WAN's connection-tracking entries when that
// WAN dies, so that its clients reconnect through a live WAN at once instead
// of waiting for their old entries to time out.
//
// Entries are selected by their conntrack mark, inside the kernel, with one
// netlink request: the kernel walks its table once and deletes what matches,
// for IPv4 and IPv6 alike. Nothing is dumped to user space first, and there
// is no global flush: entries of live WANs, entries that multiwan never
// marked and entries that carry only other programs' mark bits all stay.
package conntrack

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	ct "github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// minKernel is the oldest kernel whose filtered flush is known to honour
// the request as sent (nfgenmsg version 1, upstream commit e7600865db32).
// On older kernels the semantics of a filtered flush changed between
// releases; when a mistake means a global flush, it is not worth guessing.
var minKernel = [2]int{5, 3}

// ErrZeroMask is returned by [Cleaner.DeleteByMark] for a mask of 0, which
// would select every entry in the table.
var ErrZeroMask = errors.New("conntrack: refusing to delete by mark with mask 0: it would match every entry (a global flush)")

// Cleaner deletes conntrack entries by mark. It holds one ctnetlink socket,
// bound to the network namespace of the thread that called [Open]; it keeps
// working in that namespace whichever thread uses it later.
//
// A Cleaner is safe for concurrent use.
type Cleaner struct {
	mu   sync.Mutex
	conn *ct.Conn // nil once closed
}

// Open opens a ctnetlink socket in the calling thread's network namespace.
// It fails on kernels older than 5.3, whose filtered flush cannot be
// trusted to stay filtered.
func Open() (*Cleaner, error) {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return nil, fmt.Errorf("conntrack: uname: %w", err)
	}
	release := unix.ByteSliceToString(uts.Release[:])
	ok, err := kernelAtLeast(release, minKernel[0], minKernel[1])
	if err != nil {
		return nil, fmt.Errorf("conntrack: %w", err)
	}
	if !ok {
		return nil, fmt.Errorf("conntrack: kernel %s is too old: deleting entries by mark needs Linux %d.%d or later", release, minKernel[0], minKernel[1])
	}
	conn, err := ct.Dial(nil)
	if err != nil {
		return nil, fmt.Errorf("conntrack: open ctnetlink socket: %w", err)
	}
	return &Cleaner{conn: conn}, nil
}

// DeleteByMark deletes every conntrack entry, IPv4 and IPv6, whose mark
// satisfies ctmark & mask == mark. Bits of the entry's mark outside mask are
// ignored, so entries that other programs marked in their own bits are
// deleted along with the rest when their masked value matches.
//
// mark must lie within mask and must not be 0: a mask of 0 would match every
// entry ([ErrZeroMask]), and a mark of 0 would match every entry that
// multiwan has not classified, which is no WAN's. A mark with bits outside
// mask could never match and is refused as the bug it must be.
//
// The deletion is one netlink request, done by the kernel in one pass over
// its table.
func (c *Cleaner) DeleteByMark(mark, mask uint32) error {
	return c.DeleteByMarkFamily(mark, mask, 0)
}

// DeleteByMarkFamily is DeleteByMark for one address family: 4 or 6, or
// 0 for both. A WAN tracked per family can die for IPv6 alone, and then
// its IPv4 connections must stay.
func (c *Cleaner) DeleteByMarkFamily(mark, mask uint32, family int) error {
	if mask == 0 {
		return ErrZeroMask
	}
	if err := checkMark(mark, mask); err != nil {
		return err
	}
	if mark == 0 {
		return fmt.Errorf("conntrack: refusing to delete by mark 0/%#x: it would match every connection that carries no multiwan mark", mask)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return errors.New("conntrack: cleaner is closed")
	}
	filter, err := markFilter(mark, mask, family)
	if err != nil {
		return err
	}
	if err := c.conn.FlushFilter(filter); err != nil {
		return fmt.Errorf("conntrack: delete entries with mark %#x/%#x: %w%s", mark, mask, err, hint(err))
	}
	return nil
}

// Count returns the number of conntrack entries, IPv4 and IPv6, whose mark
// satisfies ctmark & mask == mark. It dumps the matching entries, so it is
// meant for logs and tests, not for a hot path. Count(0, 0) counts every
// entry.
func (c *Cleaner) Count(mark, mask uint32) (int, error) {
	if err := checkMark(mark, mask); err != nil {
		return 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return 0, errors.New("conntrack: cleaner is closed")
	}
	flows, err := c.conn.DumpFilter(ct.NewFilter().Mark(mark).MarkMask(mask), nil)
	if err != nil {
		return 0, fmt.Errorf("conntrack: dump entries with mark %#x/%#x: %w%s", mark, mask, err, hint(err))
	}
	return len(flows), nil
}

// CountByMark counts every connection by its mark under mask, in one dump
// of the table (for metrics: call it seldom, not per packet or request;
// it costs about a microsecond per entry).
func (c *Cleaner) CountByMark(mask uint32) (map[uint32]int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return nil, errors.New("conntrack: cleaner is closed")
	}
	flows, err := c.conn.Dump(nil)
	if err != nil {
		return nil, fmt.Errorf("conntrack: dump entries: %w%s", err, hint(err))
	}
	out := map[uint32]int{}
	for _, f := range flows {
		out[f.Mark&mask]++
	}
	return out, nil
}

// Close closes the socket. Closing twice is harmless.
func (c *Cleaner) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn = nil
	return err
}

// checkMark refuses a mark that has bits outside its mask: the kernel
// compares ctmark & mask with mark, so such a filter matches nothing, which
// would hide a caller's bug behind a silent no-op.
func checkMark(mark, mask uint32) error {
	if mark&^mask != 0 {
		return fmt.Errorf("conntrack: mark %#x has bits outside mask %#x, so it can never match", mark, mask)
	}
	return nil
}

// hint explains the kernel errors that mean "not supported here".
func hint(err error) string {
	switch {
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EINVAL):
		return " (the kernel does not support filtering conntrack entries by mark: it needs CONFIG_NF_CONNTRACK_MARK and Linux 5.3 or later)"
	case errors.Is(err, unix.EPERM):
		return " (deleting conntrack entries needs CAP_NET_ADMIN)"
	}
	return ""
}

// kernelAtLeast reports whether a kernel release string such as
// "6.18.44-generic" is at least major.minor.
func kernelAtLeast(release string, major, minor int) (bool, error) {
	fields := strings.SplitN(release, ".", 3)
	if len(fields) < 2 {
		return false, fmt.Errorf("cannot read kernel release %q", release)
	}
	maj, err := strconv.Atoi(fields[0])
	if err != nil {
		return false, fmt.Errorf("cannot read kernel release %q", release)
	}
	// The minor number may run straight into a suffix ("5.3-rc1").
	digits := fields[1]
	if i := strings.IndexFunc(digits, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		digits = digits[:i]
	}
	mnr, err := strconv.Atoi(digits)
	if err != nil {
		return false, fmt.Errorf("cannot read kernel release %q", release)
	}
	return maj > major || maj == major && mnr >= minor, nil
}

// markFilter selects the entries with mark under mask, of one family (4
// or 6) or of both (0). The mask is always sent with the mark, even where
// the kernel would default it: some kernels only filter a flush when both
// are present. Without a family the kernel matches IPv4 and IPv6.
func markFilter(mark, mask uint32, family int) (ct.Filter, error) {
	filter := ct.NewFilter().Mark(mark).MarkMask(mask)
	switch family {
	case 0:
	case 4:
		filter = filter.Family(netfilter.ProtoIPv4)
	case 6:
		filter = filter.Family(netfilter.ProtoIPv6)
	default:
		return filter, fmt.Errorf("conntrack: family %d: want 4, 6 or 0 (both)", family)
	}
	return filter, nil
}
