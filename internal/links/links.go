// Package links reads what the kernel says about the WANs' interfaces
// (existence, carrier, addresses, learned gateways) over rtnetlink, and
// reports when any of it changes.
//
// It only reads. Everything it returns is an observation the planner turns
// into desired state; netlink messages are untrusted input, so a surprising
// one (an address of the wrong family, a route without a gateway) is skipped,
// never trusted blindly.
package links

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/multiwan/multiwan/internal/config"
	"github.com/multiwan/multiwan/internal/plan"
)

// dumpRetries bounds how often a dump interrupted by concurrent changes is
// retried before the partial result is used (the next event re-reads).
const dumpRetries = 5

// retry calls f until it does not fail with netlink.ErrDumpInterrupted, at
// most dumpRetries times.
func retry[T any](f func() (T, error)) (T, error) {
	var v T
	var err error
	for range dumpRetries {
		v, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, nil
}

// Snapshot reads the current state of every WAN's interface.
func Snapshot(cfg *config.Config) (plan.Links, error) {
	out := plan.Links{}
	var defaults, defaults6 []netlink.Route
	if needGateways(cfg, false) {
		var err error
		defaults, err = listRoutes(unix.AF_INET)
		if err != nil {
			return nil, err
		}
	}
	// IPv6 default routes are read for every WAN: one without gateway6
	// that has them is reported (its IPv6 is not managed).
	if len(cfg.WANs) > 0 {
		var err error
		defaults6, err = listRoutes(unix.AF_INET6)
		if err != nil {
			return nil, err
		}
	}
	for _, w := range cfg.WANs {
		l, err := netlink.LinkByName(w.Interface)
		if err != nil {
			var nf netlink.LinkNotFoundError
			if errors.As(err, &nf) {
				out[w.Name] = plan.Link{}
				continue
			}
			return nil, fmt.Errorf("link %s: %w", w.Interface, err)
		}
		a := l.Attrs()
		link := plan.Link{
			Exists:       true,
			Up:           a.Flags&net.FlagUp != 0 && carrier(a),
			PointToPoint: a.Flags&net.FlagPointToPoint != 0,
		}
		addrs, err := retry(func() ([]netlink.Addr, error) { return netlink.AddrList(l, unix.AF_UNSPEC) })
		if err != nil {
			return nil, fmt.Errorf("addresses of %s: %w", w.Interface, err)
		}
		for _, ad := range addrs {
			if p, ok := prefixOf(ad); ok {
				link.Addrs = append(link.Addrs, p)
			}
		}
		slices.SortFunc(link.Addrs, func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) })
		if w.GatewayAuto {
			link.Gateway = learnGateway(defaults, a.Index, false)
		}
		gw6 := learnGateway(defaults6, a.Index, true)
		if w.Gateway6Auto {
			link.Gateway6 = gw6
		}
		link.Default6 = gw6.IsValid() || hasDefault(defaults6, a.Index)
		out[w.Name] = link
	}
	return out, nil
}

func needGateways(cfg *config.Config, v6 bool) bool {
	return slices.ContainsFunc(cfg.WANs, func(w config.WAN) bool {
		if v6 {
			return w.Gateway6Auto
		}
		return w.GatewayAuto
	})
}

func listRoutes(family int) ([]netlink.Route, error) {
	routes, err := retry(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	return routes, nil
}

// carrier reports whether the link can pass packets. Operational state
// "unknown" is what many virtual links (tun, some drivers) report while
// working, so only an explicit down counts.
func carrier(a *netlink.LinkAttrs) bool {
	switch a.OperState {
	case netlink.OperDown, netlink.OperLowerLayerDown, netlink.OperNotPresent:
		return false
	}
	return a.RawFlags&unix.IFF_LOWER_UP != 0 || a.OperState == netlink.OperUp || a.OperState == netlink.OperUnknown
}

func prefixOf(a netlink.Addr) (netip.Prefix, bool) {
	if a.IPNet == nil {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ip = ip.Unmap()
	ones, _ := a.Mask.Size()
	p := netip.PrefixFrom(ip, ones)
	// IPv4 link-local (169.254/16) is never a WAN address; IPv6
	// link-local addresses are kept (they are on every IPv6 link, and the
	// planner knows to skip them).
	if !p.IsValid() || (ip.Is4() && ip.IsLinkLocalUnicast()) {
		return netip.Prefix{}, false
	}
	return p, true
}

// learnGateway picks the gateway of a default route through the interface
// that someone else (DHCP client, networkd, NetworkManager, pppd, the
// kernel from router advertisements) installed, in any table: the one with
// the lowest metric, main table first on ties. A gateway of the wrong
// family, unspecified, loopback or multicast is ignored; an IPv6 gateway may
// be link-local, as router advertisements give.
func learnGateway(routes []netlink.Route, ifindex int, v6 bool) netip.Addr {
	var best *netlink.Route
	var bestGW netip.Addr
	for i := range routes {
		r := &routes[i]
		if r.LinkIndex != ifindex || int(r.Protocol) == plan.RouteProtocol {
			continue
		}
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		gw, ok := netip.AddrFromSlice(r.Gw)
		if !ok {
			continue
		}
		gw = gw.Unmap()
		if gw.Is4() == v6 || gw.IsUnspecified() || gw.IsLoopback() || gw.IsMulticast() {
			continue
		}
		if best == nil || r.Priority < best.Priority || (r.Priority == best.Priority && r.Table == unix.RT_TABLE_MAIN) {
			best, bestGW = r, gw.WithZone("")
		}
	}
	return bestGW
}

// Change is one thing Watch noticed.
type Change struct {
	Repair bool   // something of multiwan's was removed: re-apply even if the plan did not change
	What   string // for a repair: e.g. "ip rule 1101 deleted", "route default table 101 deleted"; empty otherwise
	// Rule is the rule of multiwan's that was deleted, when that is what
	// the change is: a caller whose plan does not want it (multiwan
	// itself just moved it on a switch) has nothing to put back.
	// SuppressPrefixLen and Comment are left zero (see RuleWanted).
	Rule *plan.Rule
}

// RuleWanted reports whether rules hold deleted, comparing the fields the
// kernel reports of a deleted rule (all but SuppressPrefixLen and
// Comment).
func RuleWanted(rules []plan.Rule, deleted plan.Rule) bool {
	return slices.ContainsFunc(rules, func(r plan.Rule) bool {
		r.SuppressPrefixLen, r.Comment = deleted.SuppressPrefixLen, deleted.Comment
		return r == deleted
	})
}

// whatLost is the What of a repair after a broken subscription.
const whatLost = "netlink subscription lost"

// Watch calls changed (from its own goroutine, the caller's: it blocks
// until ctx ends) whenever a link, address or route changes in the
// namespace, and when an ip rule of multiwan's is deleted. Routes and
// rules multiwan added itself are not news; one of its routes or rules
// deleted by someone else (or by the kernel when a link went down, or by
// multiwan itself when it drops a stale one) is reported as a repair
// saying what went, so the caller puts it back even if its plan did not
// change. When a subscription fails, including the kernel reporting lost
// messages (a full socket buffer), it resubscribes and reports a repair,
// since anything may have been missed. The sockets are opened in the
// network namespace of the calling thread.
func Watch(ctx context.Context, log *slog.Logger, changed func(c Change)) {
	for ctx.Err() == nil {
		if err := watchOnce(ctx, changed); err != nil && ctx.Err() == nil {
			log.Warn("netlink subscription lost, resubscribing", "err", err)
			changed(Change{Repair: true, What: whatLost})
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

func watchOnce(ctx context.Context, changed func(c Change)) error {
	done := make(chan struct{})
	defer close(done)
	failed := make(chan error, 4)
	onErr := func(err error) {
		select {
		case failed <- err:
		default:
		}
	}
	linkCh := make(chan netlink.LinkUpdate, 64)
	addrCh := make(chan netlink.AddrUpdate, 64)
	routeCh := make(chan netlink.RouteUpdate, 256)
	ruleCh := make(chan ruleEvent, 256)
	const buf = 1 << 20
	if err := netlink.LinkSubscribeWithOptions(linkCh, done, netlink.LinkSubscribeOptions{ErrorCallback: onErr, ReceiveBufferSize: buf}); err != nil {
		return err
	}
	if err := netlink.AddrSubscribeWithOptions(addrCh, done, netlink.AddrSubscribeOptions{ErrorCallback: onErr, ReceiveBufferSize: buf}); err != nil {
		return err
	}
	if err := netlink.RouteSubscribeWithOptions(routeCh, done, netlink.RouteSubscribeOptions{ErrorCallback: onErr, ReceiveBufferSize: buf}); err != nil {
		return err
	}
	if err := subscribeRules(ruleCh, done, onErr, buf); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-failed:
			return err
		case _, ok := <-linkCh:
			if !ok {
				return errors.New("link updates closed")
			}
			changed(Change{})
		case _, ok := <-addrCh:
			if !ok {
				return errors.New("address updates closed")
			}
			changed(Change{})
		case u, ok := <-routeCh:
			if !ok {
				return errors.New("route updates closed")
			}
			switch {
			case int(u.Protocol) != plan.RouteProtocol:
				changed(Change{})
			case u.Type == unix.RTM_DELROUTE:
				changed(Change{Repair: true, What: routeDeleted(u.Route)})
			}
		case r := <-ruleCh:
			// Only deletions of ours are sent: someone else's rules do
			// not affect the plan, and our additions are ours.
			c := Change{Repair: true, What: r.String()}
			if pr, ok := r.planRule(); ok {
				c.Rule = &pr
			}
			changed(c)
		}
	}
}

// routeDeleted says which route of ours went, for the log.
func routeDeleted(r netlink.Route) string {
	dst := "default"
	if r.Dst != nil {
		if ones, _ := r.Dst.Mask.Size(); ones != 0 {
			dst = r.Dst.String()
		}
	}
	s := fmt.Sprintf("route %s table %d deleted", dst, r.Table)
	if r.Family == unix.AF_INET6 {
		s += " (IPv6)"
	}
	return s
}

// hasDefault reports whether routes hold a default route through the
// interface that is not multiwan's, with or without a gateway.
func hasDefault(routes []netlink.Route, ifindex int) bool {
	for _, r := range routes {
		if r.LinkIndex != ifindex || int(r.Protocol) == plan.RouteProtocol {
			continue
		}
		if r.Dst == nil {
			return true
		}
		if ones, _ := r.Dst.Mask.Size(); ones == 0 {
			return true
		}
	}
	return false
}

// MainRoutes reads the main table's routes of both families (LAN, link and
// VPN routes, which win over the WAN tables; and maybe DHCP's default
// routes, which do not), as plan routes for the tracer.
func MainRoutes() ([]plan.Route, error) {
	var out []plan.Route
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		routes, err := retry(func() ([]netlink.Route, error) {
			return netlink.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		})
		if err != nil {
			return nil, fmt.Errorf("list main routes: %w", err)
		}
		for _, r := range routes {
			pr := plan.Route{Family: 4, Table: plan.TableMain}
			if fam == unix.AF_INET6 {
				pr.Family = 6
			}
			if r.Dst == nil {
				pr.Dst = pr.AnyPrefix()
			} else if p, ok := netipPrefix(r.Dst); ok {
				pr.Dst = p
			} else {
				continue
			}
			if gw, ok := netip.AddrFromSlice(r.Gw); ok {
				pr.Gateway = gw.Unmap()
			}
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
				pr.Dev = l.Attrs().Name
			}
			out = append(out, pr)
		}
	}
	return out, nil
}

func netipPrefix(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones).Masked(), true
}
