// Package probe sends health probes out of one WAN and reports, round by
// round, which targets answered and how fast.
//
// Every probe socket carries the WAN's fwmark (SO_MARK), so the kernel
// routes it through that WAN's table whatever the policies say: source
// address or interface binding alone would not. Replies are untrusted input:
// a reply counts only when its source, identifier and sequence match a probe
// in flight.
//
// A prober pings one address family: its icmp targets are all IPv4 or all
// IPv6 (Family tells which), and the daemon runs one prober per family. A
// prober of the gateway pings whatever family the gateway has.
package probe

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Spec says how to probe one WAN.
type Spec struct {
	// WAN names the WAN, for Rounds and logs.
	WAN string
	// Mark is the fwmark every probe socket carries (SO_MARK). 0 leaves
	// the sockets unmarked (the kernel's default), which needs no
	// privilege: tests use it.
	Mark uint32
	// Method is icmp, tcp, http or dns.
	Method string
	// Targets as written in the config: icmp and dns take IP addresses
	// (dns also IP:port), tcp takes IP:port, http takes URLs; IPv6 ones
	// as 2001:db8::1, [2001:db8::1]:53 and http://[2001:db8::1]/. The
	// icmp targets of a Spec must all be of one family (see Family). An
	// empty list with icmp probes the WAN's gateway.
	Targets []string
	// Gateway returns the WAN's current gateway (for an empty icmp target
	// list), IPv4 or IPv6; an invalid address skips the round's probe of
	// it. Run calls it from its own goroutine at the start of every
	// round, so it must be safe for concurrent use. When it changes, the
	// RTT estimate of the gateway starts over.
	Gateway func() netip.Addr
	// Interface is the name of the WAN's network interface. It is used
	// only as the zone of link-local IPv6 icmp targets (fe80::/10, the
	// usual IPv6 gateway; it replaces a zone Gateway gives): a link-local
	// address means something only on one link, so the probe is sent on
	// that interface's link and its reply must come in by it (as well as
	// from the address, with the identifier and sequence number). It
	// never binds a socket or routes a probe: Mark does that, and still
	// does for a link-local target, although the zone leaves the kernel
	// no other link to send it on. Empty, a link-local gateway is probed
	// with the zone Gateway gave it, if any (else its rounds fail), and a
	// link-local target is an error. Other targets ignore it.
	Interface string
	// Interval between the starts of two rounds; Timeout is the longest a
	// probe waits for its answer.
	Interval, Timeout time.Duration
	// Reliability is how many targets must answer for a round to be good.
	// Down and Up are how many bad (good) rounds in a row make the WAN
	// down (up) in the health tracker; 0 means 3, multiwan's default. The
	// prober mirrors that hysteresis to probe faster while a change is
	// being confirmed (see Run).
	Reliability int
	Down, Up    int
}

// Result is one target's outcome in a round.
type Result struct {
	Target string
	OK     bool
	// RTT is set when OK.
	RTT time.Duration
	// Err says why the probe failed ("timeout", "connection refused", ...).
	Err string
}

// Round is the outcome of probing every target once.
type Round struct {
	WAN string
	// Seq numbers rounds from 1.
	Seq   uint64
	Start time.Time
	// Judged is when the round was judged: when its last answer arrived,
	// or at its deadline.
	Judged time.Time
	// Results has one entry per target, in the order of Spec.Targets (or
	// the gateway).
	Results []Result
	// Late is set for a report of answers that arrived after their round
	// had been judged (past the round's deadline but within Timeout).
	// Results then holds only those answers. They show that the path
	// works, only slowly.
	Late bool
}

// Good reports whether at least reliability targets answered.
func (r Round) Good(reliability int) bool {
	n := 0
	for _, res := range r.Results {
		if res.OK {
			n++
		}
	}
	return n >= reliability
}

// ErrNoFamily is wrapped by the error of Family for a target that names a
// host rather than an address (an http URL such as http://example.com/):
// its family is known only once it is resolved, which the probe does at
// every round with the system's preference for IPv6 or IPv4.
var ErrNoFamily = errors.New("names a host, not an address: its family is decided when it is resolved")

// Family returns the address family, 4 or 6, of targets written for
// method as in Spec.Targets (an empty method is icmp), so that a caller
// can give IPv4 and IPv6 targets to separate probers: a Spec whose icmp
// targets mix the families is refused by Run. IPv4-mapped IPv6 addresses
// (::ffff:198.51.100.1) are IPv4, as Run probes them.
//
// It returns an error when targets is empty (the gateway's family is that
// of the address Spec.Gateway returns, round by round), when the targets
// mix the families ("one family per prober: split IPv4 and IPv6
// targets"), when a target does not parse as Run would parse it, or,
// wrapping ErrNoFamily, when an http target names a host. To split a
// list, call it with one target at a time.
func Family(targets []string, method string) (int, error) {
	if method == "" {
		method = "icmp"
	}
	if len(targets) == 0 {
		return 0, errors.New("no targets: a gateway's family is that of its address")
	}
	fam := 0
	for _, s := range targets {
		t, err := parseTarget(method, s)
		if err != nil {
			return 0, err
		}
		f, err := t.family()
		if err != nil {
			return 0, err
		}
		if fam != 0 && f != fam {
			return 0, errMixed
		}
		fam = f
	}
	return fam, nil
}

var errMixed = errors.New("one family per prober: split IPv4 and IPv6 targets")

// family is the address family of a parsed target.
func (t *target) family() (int, error) {
	var a netip.Addr
	switch {
	case t.addr.IsValid():
		a = t.addr
	case t.ap.IsValid():
		a = t.ap.Addr()
	case t.host.IsValid():
		a = t.host
	default:
		return 0, fmt.Errorf("target %q %w", t.name, ErrNoFamily)
	}
	if a.Unmap().Is4() {
		return 4, nil
	}
	return 6, nil
}
