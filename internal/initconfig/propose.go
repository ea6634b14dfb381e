package initconfig

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/multiwan/multiwan/internal/config"
)

// Probe targets proposed for every WAN: public anycast DNS resolvers of
// three operators (Cloudflare, Quad9, Google) that answer ICMP echo.
var (
	Targets4 = []string{"1.1.1.1", "9.9.9.9", "8.8.8.8"}
	Targets6 = []string{"2606:4700:4700::1111", "2620:fe::fe", "2001:4860:4860::8888"}
)

// MaxWANs is the most WANs a config may have (config: ip rule priorities
// come in bands of 100).
const MaxWANs = 99

// maxName is the longest WAN name.
const maxName = 15

// ErrNoUplink is returned by Propose for a box with no default route.
var ErrNoUplink = errors.New("no default route found, so no uplink to propose")

// uplink is a link with a default route: a WAN to propose.
type uplink struct {
	link Link
	// v4 and v6 are its default routes of each family the kernel prefers
	// (main table first, then the lowest metric); nil if none.
	v4, v6 *Route
	name   string
}

// primary is the route the uplink is ordered by: IPv4's if any.
func (u *uplink) primary() *Route {
	if u.v4 != nil {
		return u.v4
	}
	return u.v6
}

// Propose turns what was observed into the YAML text of a config, with
// a WAN per link that carries a default route, a failover policy ordered
// by the routes' metrics, public probe targets and comments explaining
// every key. The text is validated as `multiwan check` would; an invalid
// proposal is an error (a bug), never returned. The report says, one line
// each, what was found and anything the user must look at.
//
// A box with no default route yields ErrNoUplink (wrapped), with a report
// of the links found and what to do; a box with one uplink a config with
// that WAN and a commented second one.
func Propose(obs Observed) (yamlText string, report []string, err error) {
	links := map[string]Link{}
	for _, l := range obs.Links {
		links[l.Name] = l
	}
	ups, ignored := uplinks(obs, links)
	if len(ups) == 0 {
		return "", noUplinkReport(obs, ignored), ErrNoUplink
	}

	taken := map[string]bool{}
	for _, u := range ups {
		u.name = config.UniqueName(u.link.Name, "wan", maxName, taken)
	}
	for i, u := range ups {
		report = append(report, fmt.Sprintf("%s: %s -> WAN %s, tier %d, %s", u.link.Name, describeRoutes(u), u.name, i+1, describeGateways(u)))
	}
	if len(ups) > MaxWANs {
		var left []string
		for _, u := range ups[MaxWANs:] {
			left = append(left, u.link.Name)
		}
		report = append(report, fmt.Sprintf("warning: %d uplinks found; multiwan takes at most %d WANs (its ip rule priorities come in bands of 100), so the first %d by metric are proposed and these are left out: %s",
			len(ups), MaxWANs, MaxWANs, strings.Join(left, ", ")))
		ups = ups[:MaxWANs]
	} else if len(ups) > 4 {
		report = append(report, fmt.Sprintf("warning: %d uplinks found; every one is proposed, in failover order by route metric: check that each really is an uplink (a default route may also belong to a VPN or a management network) and delete the others", len(ups)))
	}
	report = append(report, uplinkWarnings(ups)...)
	if others := otherLinks(obs, ups); others != "" {
		report = append(report, "not WANs: "+others)
	}
	if len(ups) == 1 {
		msg := fmt.Sprintf("warning: only one uplink found (%s); multi-WAN needs two. The config has it and a commented second WAN: connect the second uplink and run init again, or fill in the commented WAN (interface, gateway) and its member in the policy",
			ups[0].link.Name)
		if spare := spareLinks(obs, ups); len(spare) > 0 {
			msg += fmt.Sprintf(" (without an address, so perhaps not connected yet: %s)", strings.Join(spare, ", "))
		}
		report = append(report, msg)
	}

	text := render(obs, ups, ignored)
	if _, err := config.Parse("multiwan.yaml", []byte(text)); err != nil {
		return "", report, fmt.Errorf("the proposed config is invalid (a bug in multiwan init, please report it with `ip -d link; ip addr; ip route show table all; ip -6 route show table all`):\n%w", err)
	}
	return text, report, nil
}

// uplinks returns the links with a default route, in failover order (main
// table first, then the lowest metric, then the interface index), and
// describes the default routes that were not taken.
func uplinks(obs Observed, links map[string]Link) ([]*uplink, []string) {
	byDev := map[string]*uplink{}
	var ignored []string
	for i := range obs.Routes {
		r := &obs.Routes[i]
		l, known := links[r.Dev]
		switch {
		case r.Dev == "":
			continue
		case r.Protocol == "multiwan":
			ignored = append(ignored, fmt.Sprintf("%s (installed by multiwan itself)", describeRoute(r)))
			continue
		case l.Loopback || r.Dev == "lo":
			continue
		case r.Family != 4 && r.Family != 6:
			continue
		}
		if !known {
			l = Link{Name: r.Dev}
		}
		u := byDev[r.Dev]
		if u == nil {
			u = &uplink{link: l}
			byDev[r.Dev] = u
		}
		best := &u.v4
		if r.Family == 6 {
			best = &u.v6
		}
		if *best == nil || better(r, *best) {
			*best = r
		}
	}
	var ups []*uplink
	for _, u := range byDev {
		ups = append(ups, u)
	}
	slices.SortFunc(ups, func(a, b *uplink) int {
		ra, rb := a.primary(), b.primary()
		return cmp.Or(
			cmp.Compare(tableRank(ra), tableRank(rb)),
			cmp.Compare(ra.Family, rb.Family),
			cmp.Compare(ra.Metric, rb.Metric),
			cmp.Compare(a.link.Index, b.link.Index),
			cmp.Compare(a.link.Name, b.link.Name))
	})
	return ups, ignored
}

// better reports whether route r is preferred to s: the main table's
// first, then the lower metric.
func better(r, s *Route) bool {
	if tableRank(r) != tableRank(s) {
		return tableRank(r) < tableRank(s)
	}
	return r.Metric < s.Metric
}

func tableRank(r *Route) int {
	if r.Table == mainTable {
		return 0
	}
	return 1
}

// learned reports whether the route was installed by something that
// follows the uplink (a DHCP or PPP client, router advertisements, a
// routing daemon), so that `auto` should follow it too, and says how
// that was told.
func learned(l Link, r *Route) (bool, string) {
	switch r.Protocol {
	case "dhcp":
		return true, "leased by DHCP"
	case "ra":
		return true, "from router advertisements"
	case "kernel", "redirect":
		return true, "installed by the kernel"
	case "boot", "static", "unspec", "0", "3", "4":
		if l.DHCPClient != "" {
			return true, fmt.Sprintf("set by %s, the DHCP client running for %s", l.DHCPClient, l.Name)
		}
		for _, a := range l.Addrs {
			if a.Dynamic && a.Prefix.Addr().Is4() == (r.Family == 4) && !a.Prefix.Addr().IsLinkLocalUnicast() {
				return true, fmt.Sprintf("its address %s is leased (it has a lifetime)", a.Prefix)
			}
		}
		return false, "configured"
	}
	return true, "learned by " + r.Protocol
}

// gateway returns the gateway (or gateway6) value for the uplink's route
// of a family, and why.
func gateway(u *uplink, family int) (value, why string) {
	r := u.v4
	if family == 6 {
		r = u.v6
	}
	switch {
	case r == nil:
		return "auto", "no IPv4 default route through it now; auto takes the one a DHCP or PPP client installs when it appears"
	case u.link.PointToPoint:
		return "auto", "point-to-point link: no gateway is needed, auto routes by the link itself and follows its peer"
	case !r.Gateway.IsValid():
		return "auto", "a default route without a gateway"
	}
	if ok, how := learned(u.link, r); ok {
		return "auto", how + ": auto follows the route as it changes"
	}
	return r.Gateway.WithZone("").String(), fmt.Sprintf("configured (protocol %s, no DHCP client seen for %s): the gateway is written down; use auto if a DHCP or PPP client sets it", r.Protocol, u.link.Name)
}

// describeRoute is a route as ip-route(8) prints it, roughly.
func describeRoute(r *Route) string {
	var b strings.Builder
	b.WriteString("default")
	if r.Family == 6 {
		b.WriteString(" (IPv6)")
	}
	if r.Gateway.IsValid() {
		b.WriteString(" via " + r.Gateway.WithZone("").String())
	}
	b.WriteString(" dev " + r.Dev)
	if r.Table != mainTable {
		fmt.Fprintf(&b, " table %d", r.Table)
	}
	fmt.Fprintf(&b, " proto %s metric %d", r.Protocol, r.Metric)
	return b.String()
}

func describeRoutes(u *uplink) string {
	var parts []string
	for _, r := range []*Route{u.v4, u.v6} {
		if r != nil {
			parts = append(parts, describeRoute(r))
		}
	}
	return strings.Join(parts, "; ")
}

func describeGateways(u *uplink) string {
	g, _ := gateway(u, 4)
	s := "gateway " + g
	if u.v6 != nil {
		g6, _ := gateway(u, 6)
		s += ", gateway6 " + g6
	}
	return s
}

// uplinkWarnings points out what the user should look at: uplinks that
// are down, carry only IPv6, have their route outside the main table or
// share a metric.
func uplinkWarnings(ups []*uplink) []string {
	var out []string
	for i, u := range ups {
		l, r := u.link, u.primary()
		switch {
		case l.Index != 0 && !l.Up:
			out = append(out, fmt.Sprintf("warning: %s has a default route but is down: proposed anyway", l.Name))
		case l.Index != 0 && !l.Carrier:
			out = append(out, fmt.Sprintf("warning: %s has a default route but no carrier: proposed anyway", l.Name))
		}
		if u.v4 == nil {
			out = append(out, fmt.Sprintf("warning: %s has only an IPv6 default route: its gateway is auto, and its IPv4 is down until an IPv4 default route through it appears", l.Name))
		}
		if u.v4 != nil && !l.PointToPoint && !u.v4.Gateway.IsValid() {
			out = append(out, fmt.Sprintf("warning: %s has a default route without a gateway but is not a point-to-point link: set its gateway's address in the config", l.Name))
		}
		if r.Table != mainTable {
			out = append(out, fmt.Sprintf("warning: %s: its default route is in table %d, not main (another program's policy routing, e.g. wg-quick): proposed after the main table's uplinks; delete it if it is not an uplink", l.Name, r.Table))
		}
		if i > 0 {
			p := ups[i-1].primary()
			if p.Family == r.Family && tableRank(p) == tableRank(r) && p.Metric == r.Metric {
				out = append(out, fmt.Sprintf("warning: %s and %s have default routes of the same metric %d: %s was put first (lower interface index); give them the same tier to balance between them instead", ups[i-1].link.Name, l.Name, r.Metric, ups[i-1].link.Name))
			}
		}
	}
	return out
}

// otherLinks describes the links that are not WANs, for the report.
func otherLinks(obs Observed, ups []*uplink) string {
	isWAN := map[string]bool{}
	for _, u := range ups {
		isWAN[u.link.Name] = true
	}
	var noRoute, loop []string
	for _, l := range obs.Links {
		switch {
		case isWAN[l.Name]:
		case l.Loopback:
			loop = append(loop, l.Name)
		default:
			noRoute = append(noRoute, l.Name)
		}
	}
	var parts []string
	if len(noRoute) > 0 {
		parts = append(parts, strings.Join(noRoute, ", ")+" (no default route)")
	}
	if len(loop) > 0 {
		parts = append(parts, strings.Join(loop, ", ")+" (loopback)")
	}
	return strings.Join(parts, "; ")
}

// noUplinkReport says what was found on a box without a default route
// and what to do.
func noUplinkReport(obs Observed, ignored []string) []string {
	var found []string
	for _, l := range obs.Links {
		if l.Loopback {
			continue
		}
		found = append(found, describeLink(l))
	}
	out := []string{}
	if len(found) == 0 {
		out = append(out, "found no network interface but loopback")
	} else {
		out = append(out, "found these interfaces, none with a default route: "+strings.Join(found, "; "))
	}
	for _, s := range ignored {
		out = append(out, "ignored: "+s)
	}
	return append(out,
		"init proposes a WAN for each interface that carries a default route (an uplink), so there is nothing to propose yet",
		"what to do: connect the uplinks and let them get their addresses and default routes (DHCP, PPP, or the network configuration: /etc/network/interfaces, networkd, NetworkManager), check with `ip route show default`, then run multiwan init again; or write the config by hand (README.md, \"Configuration\")")
}

func describeLink(l Link) string {
	var st []string
	if l.Kind != "" {
		st = append(st, l.Kind)
	}
	switch {
	case !l.Up:
		st = append(st, "down")
	case !l.Carrier:
		st = append(st, "up, no carrier")
	default:
		st = append(st, "up")
	}
	if l.Master != "" {
		st = append(st, "port of "+l.Master)
	}
	var addrs []string
	for _, a := range l.Addrs {
		if !a.Prefix.Addr().IsLinkLocalUnicast() {
			addrs = append(addrs, a.Prefix.String())
		}
	}
	if len(addrs) == 0 {
		st = append(st, "no address")
	} else {
		st = append(st, strings.Join(addrs, " "))
	}
	return l.Name + " (" + strings.Join(st, ", ") + ")"
}
