// Package probe sends health probes out of one WAN and reports, round by
// round, which targets answered and how fast.
//
// Every probe socket carries the WAN's fwmark (SO_MARK), so the kernel
// routes it through that WAN's table whatever the policies say: source
// address or interface binding alone would not. Replies are untrusted input:
// a reply counts only when its source, identifier and sequence match a probe
// in flight.
package probe

import (
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
	// (dns also IP:port), tcp takes IP:port, http takes URLs. An empty
	// list with icmp probes the WAN's gateway.
	Targets []string
	// Gateway returns the WAN's current gateway (for an empty icmp target
	// list); an invalid address skips the round's probe of it. Run calls
	// it from its own goroutine at the start of every round, so it must be
	// safe for concurrent use. When it changes, the RTT estimate of the
	// gateway starts over.
	Gateway func() netip.Addr
	// Interval between the starts of two rounds; Timeout is the longest a
	// probe waits for its answer.
	Interval, Timeout time.Duration
	// Reliability is how many targets must answer for a round to be good;
	// the prober uses it to probe faster while a failure is being
	// confirmed.
	Reliability int
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
