package initconfig

import (
	"fmt"
	"slices"
	"strings"

	"github.com/multiwan/multiwan/internal/config"
)

// commentWidth is where comments are wrapped.
const commentWidth = 78

// writer builds the YAML text.
type writer struct{ b strings.Builder }

func (w *writer) line(indent, s string) { w.b.WriteString(indent + s + "\n") }

func (w *writer) blank() { w.b.WriteString("\n") }

// comment writes text as '#' comment lines at indent, wrapped.
func (w *writer) comment(indent, text string) {
	for _, l := range config.Wrap(text, commentWidth-len(indent)-2) {
		w.line(indent, strings.TrimRight("# "+l, " "))
	}
}

// render writes the config for the uplinks, in order.
func render(obs Observed, ups []*uplink, ignored []string) string {
	w := &writer{}
	var names []string
	for _, u := range ups {
		names = append(names, u.link.Name)
	}
	plural := "s"
	if len(ups) == 1 {
		plural = ""
	}
	w.comment("", fmt.Sprintf("multiwan configuration proposed by `multiwan init` from what the kernel showed: %d uplink%s (interface%s with a default route): %s. Nothing on this box was changed.",
		len(ups), plural, plural, strings.Join(names, ", ")))
	if others := otherLinks(obs, ups); others != "" {
		w.comment("", "Not WANs: "+others+".")
	}
	for _, s := range ignored {
		w.comment("", "Ignored: "+s+".")
	}
	w.comment("", "Review it, then `multiwan check -c FILE` validates it (init did already), `multiwan plan -c FILE` prints what `multiwan run -c FILE` would install. Every key, with its default: README.md, \"Configuration\".")
	w.blank()

	w.line("", "wans:")
	explained, explained6 := false, false
	for _, u := range ups {
		if !explained {
			w.comment("  ", "One WAN per uplink. name: what logs, `multiwan status` and `multiwan use` call it ([a-z0-9_-], at most 15 characters; here the interface's name). interface: the Linux interface its traffic leaves by. gateway: the next hop, an address, or auto: the gateway of the default route a DHCP or PPP client (or networkd, NetworkManager) installs, followed as it changes.")
		}
		w.line("  ", "- name: "+u.name)
		w.line("    ", "interface: "+config.Quote(u.link.Name))
		g, why := gateway(u, 4)
		if u.v4 != nil {
			w.comment("    ", "now: "+describeRoute(u.v4)+"; "+why)
		} else {
			w.comment("    ", why)
		}
		w.line("    ", "gateway: "+g)
		if u.v6 != nil {
			g6, why6 := gateway(u, 6)
			if !explained6 {
				w.comment("    ", "gateway6: this WAN carries IPv6 too (multiwan leaves the IPv6 of a WAN without it to the main table): an IPv6 address (link-local is fine) or auto, learned like gateway, typically from router advertisements.")
			}
			w.comment("    ", "now: "+describeRoute(u.v6)+"; "+why6)
			w.line("    ", "gateway6: "+g6)
			if !explained6 {
				w.comment("    ", "nat6: masquerade gives the LAN's IPv6 connections this WAN's address: LAN addresses come from one ISP's prefix, and another ISP drops packets from it after a failover. If this ISP delegates a prefix routed to your LAN, set nat6: none and list the prefix under prefixes6 instead.")
				explained6 = true
			}
			w.line("    ", "nat6: masquerade")
		}
		w.line("    ", "probe:")
		if !explained {
			w.comment("      ", "Health is judged by pinging targets through this WAN (each probe carries the WAN's mark, so it leaves by it whatever the policies say). Targets beyond the ISP, not only the gateway: in a double-NAT setup the gateway is the ISP's own router, which answers while the ISP's network is down. Two or more, of different operators: one target's hiccup is then not an outage (reliability 1, the default: one answer per round is enough) while the failure of all of them is. These are public anycast DNS resolvers (Cloudflare, Quad9, Google) that answer ping; use the same targets on every WAN, so a difference in health is the WAN's. interval (500ms), timeout (1s), down and up (3 rounds) keep their defaults: a dead upstream is noticed in about a second.")
		}
		targets := Targets4
		if u.v6 != nil {
			targets = append(append([]string(nil), Targets4...), Targets6...)
		}
		w.line("      ", "targets: "+config.FlowList(targets))
		explained = true
	}
	if len(ups) == 1 {
		second, iface, spare := secondWAN(obs, ups)
		hint := ""
		if len(spare) > 0 {
			hint = " Interfaces without an address that might be it: " + strings.Join(spare, ", ") + "."
		}
		w.comment("  ", "A second uplink, to fill in: multi-WAN needs two. Uncomment it, set its interface and gateway (an address, or auto when DHCP or PPP gives it), and uncomment its member in the policy below."+hint)
		w.line("  ", "# - name: "+second)
		w.line("  ", "#   interface: "+config.Quote(iface))
		w.line("  ", "#   gateway: auto")
		w.line("  ", "#   probe:")
		w.line("  ", "#     targets: "+config.FlowList(Targets4))
	}
	w.blank()

	w.line("", "policies:")
	w.comment("  ", "failover: new connections go to the lowest tier with a usable WAN; when its WAN dies they move to the next tier, and come back when it recovers (established connections keep their WAN while it lives). The tiers follow the metrics of today's default routes: the lowest metric, the route the kernel uses now, is tier 1. To share the load instead, give WANs the same tier, and weights if they differ in capacity (weight: 3 and weight: 1 share 75/25).")
	w.line("  ", "- name: failover")
	w.line("    ", "members:")
	for i, u := range ups {
		w.line("      ", fmt.Sprintf("- {wan: %s, tier: %d}  # %s", u.name, i+1, memberNote(u)))
	}
	if len(ups) == 1 {
		second, _, _ := secondWAN(obs, ups)
		w.line("      ", fmt.Sprintf("# - {wan: %s, tier: 2}", second))
	}
	w.comment("    ", "When no WAN is usable new connections fail at once (ICMP unreachable) rather than hang; main would route them by the main table instead, blackhole drop them silently.")
	w.line("    ", "last_resort: unreachable")
	w.blank()
	w.comment("", "Traffic that no rule matches goes by this policy. There are no rules yet: rules steer chosen traffic (by address, port, protocol or incoming interface) to a WAN or a policy, e.g. a host that must always use one ISP.")
	w.line("", "default_policy: failover")
	w.blank()
	w.comment("", "Steer the router's own connections (DNS, NTP, updates, tunnels it opens) by the same policy, so they fail over like the LAN's.")
	w.line("", "local_traffic: true")
	return w.b.String()
}

func memberNote(u *uplink) string {
	r := u.primary()
	s := fmt.Sprintf("metric %d", r.Metric)
	if r.Family == 6 {
		s = "IPv6 " + s
	}
	if r.Table != mainTable {
		s += fmt.Sprintf(" in table %d", r.Table)
	}
	return s
}

// spareLinks lists the interfaces that could be an uplink not connected
// yet: network devices (not bridges, VLANs or ports of one) with no
// address but link-local ones.
func spareLinks(obs Observed, ups []*uplink) []string {
	isWAN := map[string]bool{}
	for _, u := range ups {
		isWAN[u.link.Name] = true
	}
	var out []string
	for _, l := range obs.Links {
		if isWAN[l.Name] || l.Loopback || l.Master != "" || (l.Kind != "device" && l.Kind != "") {
			continue
		}
		if !slices.ContainsFunc(l.Addrs, func(a Addr) bool { return !a.Prefix.Addr().IsLinkLocalUnicast() }) {
			out = append(out, l.Name)
		}
	}
	return out
}

// secondWAN names the commented second WAN of a box with one uplink, and
// its interface: the one spare link if there is exactly one, else IFACE.
func secondWAN(obs Observed, ups []*uplink) (name, iface string, spare []string) {
	taken := map[string]bool{}
	for _, u := range ups {
		taken[u.name] = true
	}
	spare = spareLinks(obs, ups)
	iface, base := "IFACE", "wan2"
	if len(spare) == 1 {
		iface, base = spare[0], spare[0]
	}
	return config.UniqueName(base, "wan", maxName, taken), iface, spare
}
