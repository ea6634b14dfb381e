package probe

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
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
// SO_MARK).
//
// A round starts every spec.Interval, or every Interval/4 (at least 10ms)
// while the last judged round was not good, so that a failure is
// confirmed or refuted quickly. All targets of a round are probed at
// once. A round is judged as soon as every target answered, or at its
// deadline, which adapts to the path: twice the largest smoothed
// retransmission timeout of its targets (RFC 6298) plus 25ms, within
// [50ms, Timeout]; Timeout while no target has answered yet. Answers that
// come after the deadline but within Timeout are reported in a separate
// Round with Late set; later ones are dropped.
//
// Every Round, late or not, is sent on out, in Seq order (a Late report
// after its Round), and Run waits for out to take it: a consumer that
// stops reading holds back new rounds rather than losing reports.
//
// Sockets belong to the network namespace of the thread that creates
// them: the raw ICMP socket is opened by Run's caller, the tcp, http and
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
		tr, err = newICMPTransport(spec.Mark, events, ns)
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
		t := &target{name: s}
		switch method {
		case "icmp":
			a, err := netip.ParseAddr(s)
			if err != nil || a.Zone() != "" {
				return fail("icmp target %q is not an IP address", s)
			}
			if a = a.Unmap(); !a.Is4() {
				return fail("icmp target %s: only IPv4 targets can be pinged so far", s)
			}
			t.addr = a
		case "tcp":
			ap, err := netip.ParseAddrPort(s)
			if err != nil || ap.Port() == 0 || ap.Addr().Zone() != "" {
				return fail("tcp target %q is not an address:port", s)
			}
			t.ap = ap
		case "dns":
			if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
				t.ap = netip.AddrPortFrom(a, 53)
				break
			}
			ap, err := netip.ParseAddrPort(s)
			if err != nil || ap.Port() == 0 || ap.Addr().Zone() != "" {
				return fail("dns target %q is not an address or address:port", s)
			}
			t.ap = ap
		case "http":
			u, err := url.Parse(s)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fail("http target %q is not an http:// or https:// URL", s)
			}
			t.url = s
		default:
			return fail("unknown probe method %q (want %s)", method, strings.Join([]string{"icmp", "tcp", "http", "dns"}, ", "))
		}
		targets = append(targets, t)
	}
	return method, targets, nil
}
