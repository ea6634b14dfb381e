package probe

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"
)

// eventBuffer is the capacity of the channel that carries answers to the
// scheduler: enough for every answer of a few rounds, so that the reader
// goroutine rarely waits.
const eventBuffer = 64

// Run probes the WAN that spec describes until ctx ends, then returns nil.
// It returns an error, without probing, when spec is invalid or a socket
// cannot be created (no CAP_NET_RAW for icmp, no CAP_NET_ADMIN for
// SO_MARK). A Spec whose icmp targets mix IPv4 and IPv6 is invalid: run
// one prober per family (see Family).
//
// icmp probes go out of one raw socket per Run and family: ip4:icmp for
// IPv4 targets, ip6:ipv6-icmp for IPv6 ones, both for a Run that probes
// the gateway (whose family may change; when the kernel has no IPv6, such
// a Run pings IPv4 gateways only and fails the rounds of an IPv6 one).
// Each Run has its own echo identifier, and the kernel delivers it only
// echo replies carrying it.
//
// A round starts every spec.Interval, at instants that every Run of the
// process with that interval shares, so one wake-up serves them all (the
// first round starts at once). All targets of a round are probed
// at once, and a round is judged as soon as every target answered, or at
// its deadline, which adapts to the path: for each target that has
// answered before, twice the largest of its last 32 round-trip times plus
// four times its RTT variation (RFC 6298); the largest over the targets,
// within [5ms, Timeout]; Timeout while no target has answered yet.
// Answers that come after the deadline but within Timeout are reported in
// a separate Round with Late set; later ones are dropped.
//
// Run mirrors the tracker's hysteresis (spec.Down, spec.Up) to confirm a
// change fast: while the latest rounds disagree with the state they would
// have confirmed (a bad round while up, a good one while down, any round
// while unknown), the next round starts as soon as the previous one is
// judged, and at least Interval/10 (5ms at least) after it started, until
// the streak reaches its threshold or is broken; then the normal rhythm
// resumes. A dead WAN is thus probed at the normal
// rhythm once it is down, and so is a healthy one.
//
// Every Round, late or not, is sent on out, in Seq order (a Late report
// after its Round), and Run waits for out to take it: a consumer that
// stops reading holds back new rounds rather than losing reports.
//
// Sockets belong to the network namespace of the thread that creates
// them: the raw ICMP sockets are opened by Run's caller, the tcp, http and
// dns sockets by short-lived goroutines, one per probe. The process must
// therefore be in the namespace the WANs live in.
func Run(ctx context.Context, spec Spec, out chan<- Round) error {
	return run(ctx, spec, out, nil)
}

// nsFunc runs fn on a thread that is in the network namespace where the
// probe sockets must be created. Nil means the caller's namespace; the
// tests use it to probe from inside a lab namespace.
type nsFunc func(fn func() error) error

func (ns nsFunc) do(fn func() error) error {
	if ns == nil {
		return fn()
	}
	return ns(fn)
}

func run(ctx context.Context, spec Spec, out chan<- Round, ns nsFunc) error {
	method, targets, err := parseSpec(spec)
	if err != nil {
		return err
	}
	if out == nil {
		return errors.New("probe: nil channel for rounds")
	}
	events := make(chan event, eventBuffer)
	var tr transport
	if method == "icmp" {
		// Listed targets are of one family; a gateway may be of either.
		v4, v6 := true, true
		if !targets[0].gateway {
			v4 = targets[0].addr.Is4()
			v6 = !v4
		}
		tr, err = newICMPTransport(spec.Mark, v4, v6, events, ns)
	} else {
		tr, err = newDialTransport(method, spec, events, ns)
	}
	if err != nil {
		return fmt.Errorf("probe %s: %w", spec.WAN, err)
	}
	defer tr.close()

	s := newScheduler(spec, targets, tr, time.Now())
	// One timer serves every deadline, round start and expiry: the
	// scheduler knows which comes first.
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		// Answers already waiting are taken before deadlines are judged:
		// they carry their arrival time, and one that arrived before the
		// deadline counts even if the scheduler sees it after.
	drain:
		for range eventBuffer {
			select {
			case ev := <-events:
				s.handle(ev)
			default:
				break drain
			}
		}
		now := time.Now()
		s.step(now)
		var tick <-chan time.Time
		if w := s.wake(); !w.IsZero() {
			timer.Reset(w.Sub(now))
			tick = timer.C
		}
		var send chan<- Round
		var head Round
		if len(s.outbox) > 0 {
			send, head = out, s.outbox[0]
		}
		select {
		case <-ctx.Done():
			return nil
		case ev := <-events:
			s.handle(ev)
		case send <- head:
			s.pop()
		case <-tick:
		}
	}
}

// parseSpec checks spec and returns the method and the targets.
func parseSpec(spec Spec) (string, []*target, error) {
	fail := func(format string, args ...any) (string, []*target, error) {
		return "", nil, fmt.Errorf("probe %s: %s", spec.WAN, fmt.Sprintf(format, args...))
	}
	if spec.Interval <= 0 {
		return fail("interval must be positive, got %v", spec.Interval)
	}
	if spec.Timeout <= 0 {
		return fail("timeout must be positive, got %v", spec.Timeout)
	}
	method := spec.Method
	if method == "" {
		method = "icmp"
	}
	if !validMethod(method) {
		return fail("unknown probe method %q (want %s)", method, strings.Join(methods, ", "))
	}
	if len(spec.Targets) == 0 {
		if method != "icmp" {
			return fail("a %s probe needs targets", method)
		}
		if spec.Gateway == nil {
			return fail("no targets and no gateway to probe")
		}
		return method, []*target{{gateway: true, name: "gateway"}}, nil
	}
	var targets []*target
	for _, s := range spec.Targets {
		t, err := parseTarget(method, s)
		if err != nil {
			return fail("%v", err)
		}
		if method == "icmp" {
			// One raw socket per Run, of one family.
			if len(targets) > 0 && t.addr.Is4() != targets[0].addr.Is4() {
				return fail("%v", errMixed)
			}
			t.addr = probeAddr(t.addr, spec.Interface)
			if needsZone(t.addr) {
				return fail("icmp target %s is link-local: it needs the WAN's interface", s)
			}
		}
		targets = append(targets, t)
	}
	return method, targets, nil
}

var methods = []string{"icmp", "tcp", "http", "dns"}

func validMethod(m string) bool { return slices.Contains(methods, m) }

// parseTarget parses one target of method as written in Spec.Targets.
// A link-local icmp target is returned without its zone, which comes from
// Spec.Interface.
func parseTarget(method, s string) (*target, error) {
	t := &target{name: s}
	switch method {
	case "icmp":
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("icmp target %q is not an IP address", s)
		}
		if a.Zone() != "" {
			return nil, fmt.Errorf("icmp target %q has a zone: a link-local target's zone is the WAN's interface", s)
		}
		a = a.Unmap()
		// Echo replies to a multicast or unspecified address would come
		// from other addresses, and match nothing.
		if a.Is6() && (a.IsMulticast() || a.IsUnspecified()) {
			return nil, fmt.Errorf("icmp target %s is not a unicast address", s)
		}
		t.addr = a
	case "tcp":
		ap, err := netip.ParseAddrPort(s)
		if err != nil || ap.Port() == 0 || ap.Addr().Zone() != "" {
			return nil, fmt.Errorf("tcp target %q is not an address:port", s)
		}
		t.ap = ap
	case "dns":
		if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
			t.ap = netip.AddrPortFrom(a, 53)
			break
		}
		ap, err := netip.ParseAddrPort(s)
		if err != nil || ap.Port() == 0 || ap.Addr().Zone() != "" {
			return nil, fmt.Errorf("dns target %q is not an address or address:port", s)
		}
		t.ap = ap
	case "http":
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("http target %q is not an http:// or https:// URL", s)
		}
		t.url = s
		// http://[2001:db8::1]:8080/ has an address; http://example.com/
		// a name, resolved at every probe.
		if a, err := netip.ParseAddr(u.Hostname()); err == nil {
			t.host = a
		}
	default:
		return nil, fmt.Errorf("unknown probe method %q (want %s)", method, strings.Join(methods, ", "))
	}
	return t, nil
}

// probeAddr is a, as an icmp probe is sent to it and its reply must come
// from it: IPv4 if it is IPv4-mapped; with iface as its zone if it is a
// link-local IPv6 address (with the zone it has when iface is empty);
// without a zone otherwise.
func probeAddr(a netip.Addr, iface string) netip.Addr {
	a = a.Unmap()
	if !a.Is6() || !a.IsLinkLocalUnicast() {
		return a.WithZone("")
	}
	if iface != "" {
		return a.WithZone(iface)
	}
	return a
}

// needsZone reports a link-local IPv6 address without the zone that says
// which link it is on: it cannot be probed.
func needsZone(a netip.Addr) bool {
	return a.Is6() && a.IsLinkLocalUnicast() && a.Zone() == ""
}
