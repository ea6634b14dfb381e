package kernel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/multiwan/multiwan/internal/plan"
)

// ip6DefaultMetric is the metric the kernel gives an IPv6 route added
// without one (IP6_RT_PRIO_USER); IPv4 routes get 0.
const ip6DefaultMetric = 1024

// routeKey is a route reduced to the fields multiwan sets; see ruleKey.
type routeKey struct {
	family int // unix.AF_INET or unix.AF_INET6
	table  int
	dst    netip.Prefix
	gw     netip.Addr // invalid for a point-to-point link
	link   int        // interface index
	// other describes what multiwan never sets (a preferred source, a
	// metric, several next hops, ...); see ruleKey.other.
	other string
}

// kernelRoute is one of our routes as the kernel reported it.
type kernelRoute struct {
	key   routeKey
	route netlink.Route
}

// wantRoute is a desired route and the plan entry it came from.
type wantRoute struct {
	key  routeKey
	plan plan.Route
}

// ApplyRoutes makes multiwan's routes, in all tables and both families,
// exactly desired. A missing or changed route is installed with a replace,
// which swaps it in place, so a WAN's table is never without its default
// route while the gateway changes. Routes of ours that are not desired are
// deleted afterwards.
//
// Interface names are resolved when applying. A route whose interface does
// not exist is an error for that route only: the others are applied and the
// errors are returned joined. Invalid desired routes fail the whole call
// before anything is changed.
func (Routing) ApplyRoutes(desired []plan.Route) (added, deleted int, err error) {
	want, linkErrs, err := resolveRoutes(desired)
	if err != nil {
		return 0, 0, err
	}
	errs := linkErrs
	have, err := ourRoutes()
	if err != nil {
		return 0, 0, errors.Join(append(errs, err)...)
	}
	add, del := diffRoutes(want, have)
	for _, w := range add {
		if err := netlink.RouteReplace(w.key.netlink()); err != nil {
			errs = append(errs, fmt.Errorf("replace %s: %w", w.plan, err))
			continue
		}
		added++
	}
	if added > 0 && len(del) > 0 {
		// A replace may have overwritten a stale route in place; list
		// again rather than guess which ones are left to delete.
		if have, err = ourRoutes(); err != nil {
			return added, 0, errors.Join(append(errs, err)...)
		}
		_, del = diffRoutes(want, have)
	}
	deleted, err = deleteRoutes(del)
	return added, deleted, errors.Join(append(errs, err)...)
}

// removeRoutes deletes every route that is ours.
func (Routing) removeRoutes() (int, error) {
	have, err := ourRoutes()
	if err != nil {
		return 0, err
	}
	return deleteRoutes(have)
}

func deleteRoutes(routes []kernelRoute) (int, error) {
	var (
		deleted int
		errs    []error
	)
	for _, r := range routes {
		err := netlink.RouteDel(deleteRequest(r.route))
		switch {
		case err == nil:
			deleted++
		case errors.Is(err, unix.ESRCH), errors.Is(err, unix.ENOENT):
			// Gone already, e.g. with its interface.
		default:
			errs = append(errs, fmt.Errorf("delete route %s: %w", r.key, err))
		}
	}
	return deleted, errors.Join(errs...)
}

// deleteRequest names exactly the installed route r, protocol included, so
// that the kernel cannot match a route that is not ours.
func deleteRequest(r netlink.Route) *netlink.Route {
	return &netlink.Route{
		Family:    r.Family,
		Table:     r.Table,
		Dst:       r.Dst,
		Gw:        r.Gw,
		LinkIndex: r.LinkIndex,
		Priority:  r.Priority,
		Tos:       r.Tos,
		Type:      r.Type,
		Scope:     r.Scope,
		Protocol:  plan.RouteProtocol,
	}
}

// diffRoutes returns the desired routes that are missing or differ and the
// installed ones that are not desired (or duplicates).
func diffRoutes(want []wantRoute, have []kernelRoute) (add []wantRoute, del []kernelRoute) {
	wanted := make(map[routeKey]bool, len(want))
	for _, w := range want {
		wanted[w.key] = true
	}
	present := make(map[routeKey]bool, len(have))
	for _, r := range have {
		if wanted[r.key] && !present[r.key] {
			present[r.key] = true
			continue
		}
		del = append(del, r)
	}
	for _, w := range want {
		if !present[w.key] {
			present[w.key] = true
			add = append(add, w)
		}
	}
	return add, del
}

// resolveRoutes validates the desired routes and resolves their interfaces.
// err is set for invalid routes; linkErrs lists routes whose interface is
// missing, which are left out of want.
func resolveRoutes(routes []plan.Route) (want []wantRoute, linkErrs []error, err error) {
	var invalid []error
	links := make(map[string]int)
	for _, r := range routes {
		k, err := routeKeyOf(r)
		if err != nil {
			invalid = append(invalid, fmt.Errorf("route %q: %w", r.String(), err))
			continue
		}
		index, ok := links[r.Dev]
		if !ok {
			link, err := netlink.LinkByName(r.Dev)
			if err != nil {
				linkErrs = append(linkErrs, fmt.Errorf("route %q: interface %s: %w", r.String(), r.Dev, err))
				continue
			}
			index = link.Attrs().Index
			links[r.Dev] = index
		}
		k.link = index
		want = append(want, wantRoute{key: k, plan: r})
	}
	return want, linkErrs, errors.Join(invalid...)
}

func routeKeyOf(r plan.Route) (routeKey, error) {
	fam, err := addressFamily(r.Family)
	if err != nil {
		return routeKey{}, err
	}
	if r.Table <= 0 {
		return routeKey{}, fmt.Errorf("table %d", r.Table)
	}
	if !r.Dst.IsValid() {
		return routeKey{}, errors.New("no destination")
	}
	if r.Dev == "" {
		return routeKey{}, errors.New("no interface")
	}
	is4 := fam == unix.AF_INET
	if r.Dst.Addr().Is4() != is4 || (r.Gateway.IsValid() && r.Gateway.Is4() != is4) {
		return routeKey{}, fmt.Errorf("address family differs from IPv%d", r.Family)
	}
	return routeKey{family: fam, table: r.Table, dst: r.Dst.Masked(), gw: r.Gateway}, nil
}

// netlink returns the route to install for k.
func (k routeKey) netlink() *netlink.Route {
	r := &netlink.Route{
		Family:    k.family,
		Table:     k.table,
		Dst:       ipNet(k.dst),
		LinkIndex: k.link,
		Scope:     k.scope(),
		Type:      unix.RTN_UNICAST,
		Protocol:  plan.RouteProtocol,
	}
	if k.gw.IsValid() {
		r.Gw = k.gw.AsSlice()
	}
	return r
}

// scope is what `ip route` picks: link scope for an IPv4 route without a
// gateway, global otherwise (the kernel reports IPv6 routes as global).
func (k routeKey) scope() netlink.Scope {
	if k.family == unix.AF_INET && !k.gw.IsValid() {
		return netlink.SCOPE_LINK
	}
	return netlink.SCOPE_UNIVERSE
}

func (k routeKey) String() string {
	s := fmt.Sprintf("%s table %d dev #%d", k.dst, k.table, k.link)
	if k.gw.IsValid() {
		s += " via " + k.gw.String()
	}
	if k.other != "" {
		s += " " + k.other
	}
	return s
}

// ourRoutes lists the routes of both families, in every table, whose
// protocol is ours.
func ourRoutes() ([]kernelRoute, error) {
	filter := &netlink.Route{Table: unix.RT_TABLE_UNSPEC, Protocol: plan.RouteProtocol}
	mask := netlink.RT_FILTER_TABLE | netlink.RT_FILTER_PROTOCOL
	var ours []kernelRoute
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		routes, err := retryDump(func() ([]netlink.Route, error) {
			return netlink.RouteListFiltered(fam, filter, mask)
		})
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range routes {
			if r.Protocol == plan.RouteProtocol { // the filter is applied by the library; be sure
				ours = append(ours, kernelRoute{key: keyOfKernelRoute(r), route: r})
			}
		}
	}
	return ours, nil
}

func keyOfKernelRoute(r netlink.Route) routeKey {
	k := routeKey{
		family: r.Family,
		table:  r.Table,
		dst:    prefixOf(r.Dst),
		gw:     addrOf(r.Gw),
		link:   r.LinkIndex,
	}
	var other []string
	if r.Dst == nil {
		// The library reports a default route with a zero prefix; be
		// robust to a release that leaves it nil.
		k.dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if r.Family == unix.AF_INET6 {
			k.dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
	}
	metric := 0
	if r.Family == unix.AF_INET6 {
		metric = ip6DefaultMetric
	}
	if r.Priority != metric {
		other = append(other, fmt.Sprintf("metric %d", r.Priority))
	}
	if r.Type != unix.RTN_UNICAST {
		other = append(other, fmt.Sprintf("type %d", r.Type))
	}
	if r.Scope != k.scope() {
		other = append(other, fmt.Sprintf("scope %d", r.Scope))
	}
	if r.Tos != 0 {
		other = append(other, fmt.Sprintf("tos %#x", r.Tos))
	}
	if r.Src != nil {
		other = append(other, "src "+r.Src.String())
	}
	if len(r.MultiPath) > 0 {
		other = append(other, fmt.Sprintf("%d nexthops", len(r.MultiPath)))
	}
	if r.Encap != nil || r.Via != nil || r.NewDst != nil || r.MPLSDst != nil {
		other = append(other, "encap")
	}
	k.other = strings.Join(other, " ")
	return k
}

func addrOf(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}
