package mwan3

import (
	"fmt"
	"strings"

	"github.com/multiwan/multiwan/internal/config"
)

// emit writes the multiwan config.
func (c *conv) emit() string {
	w := &writer{}
	w.comment("", fmt.Sprintf("multiwan configuration converted by `multiwan import mwan3` from %s. Comments say where each part comes from (mwan3 section and line) and what could not carry over, and why.", strings.ReplaceAll(c.file, "\n", " ")))
	w.comment("", "TODO: mwan3 names OpenWrt's logical interfaces (wan, wanb, ...); multiwan needs the Linux device of each: replace every `interface:` marked TODO (`ifstatus NAME` shows it as l3_device, e.g. eth1, pppoe-wan, wwan0), then check with `multiwan check -c FILE`.")
	for _, n := range c.topNotes {
		w.comment("", n)
	}
	w.blank()
	if c.markMask != "" {
		w.comment("", "mmx_mask: the mark bits mwan3 used, kept so that other programs' marks stay clear of multiwan's.")
		w.line("", "mark_mask: "+c.markMask)
		w.blank()
	} else if c.markNote != "" {
		w.comment("", c.markNote)
		w.blank()
	}

	w.line("", "wans:")
	first := true
	for _, wn := range c.wans {
		b, live := c.wanBlock(wn, first)
		if live {
			first = false
		}
		w.write("  ", b, !live)
	}
	w.blank()

	w.line("", "policies:")
	for _, p := range c.policies {
		c.policyBlock(w, p)
	}
	if p := c.synthesized; p != nil {
		w.comment("  ", "Made by the conversion: "+p.made)
		w.write("  ", policyLines(p, p.name, false, true), false)
	}
	w.blank()

	var rules []*rule
	for _, r := range c.rules {
		if !r.fold {
			rules = append(rules, r)
		}
	}
	if len(rules) > 0 {
		live := false
		for _, r := range rules {
			live = live || r.skip == ""
		}
		if live {
			w.line("", "rules:")
		} else {
			w.comment("", "rules: none carried over (see below).")
		}
		w.comment("  ", "First match wins, as in mwan3.")
		for _, r := range rules {
			c.ruleBlock(w, r)
		}
		w.blank()
	}

	if c.defaultNote != "" {
		w.comment("", c.defaultNote)
	}
	w.comment("", "Traffic that no rule matches goes by this policy.")
	w.line("", "default_policy: "+c.defaultPolicy)
	w.blank()
	w.comment("", "mwan3 steered the router's own traffic too (its OUTPUT hook); so does multiwan with local_traffic.")
	w.line("", "local_traffic: true")
	return w.b.String()
}

// wanBlock is the YAML of one WAN; live is false for a WAN whose
// interfaces are all disabled (written commented out).
func (c *conv) wanBlock(wn *wan, explain bool) (block, bool) {
	var b block
	f := wn.primary()
	live := wn.enabled()
	src := fmt.Sprintf("interface %s (line %d)", q(f.name), f.sec.Pos.Line)
	other := wn.v6
	if f == wn.v6 {
		other = wn.v4
	}
	if other != nil {
		src += fmt.Sprintf(" and %s (line %d), its %s", q(other.name), other.sec.Pos.Line, familyLabel(other.family))
	}
	b.addComment("", "mwan3 "+src)
	if !live {
		b.addComment("", fmt.Sprintf("Disabled in mwan3 (option enabled is 0 or missing), so written commented out: uncomment it, and its members in the policies below, to use it."))
	}
	b.add("- name: " + wn.name)
	if explain {
		b.addComment("  ", fmt.Sprintf("TODO: %s is OpenWrt's name for the interface; multiwan needs its Linux device (`ifstatus %s` shows it as l3_device: eth1, pppoe-wan, wwan0, ...).", q(f.name), f.name))
	} else {
		b.addComment("  ", fmt.Sprintf("TODO: the Linux device of OpenWrt interface %s.", q(f.name)))
	}
	iface := f.name
	if len(iface) > maxWANName {
		iface = iface[:maxWANName]
	}
	b.add("  interface: " + config.Quote(iface))
	if explain {
		b.addComment("  ", "gateway: auto follows the default route netifd installs for the device (DHCP, PPP, static), as mwan3 did.")
	}
	b.add("  gateway: auto")
	if f.family == 6 && (wn.v4 == nil || !wn.v4.enabled) {
		b.addComment("  ", "mwan3 tracked only IPv6 here; a multiwan WAN always has IPv4 too (gateway), down while there is no IPv4 default route through it.")
	}
	v6 := wn.v6 != nil && wn.v6.enabled
	if v6 {
		if !c.explained6 {
			b.addComment("  ", "gateway6: the WAN carries IPv6 (mwan3's IPv6 interface); auto learns the gateway from router advertisements or DHCPv6. mwan3 did not translate IPv6: if your firewall masquerades it (masq6) for failover, add nat6: masquerade; delegated prefixes go under prefixes6.")
			c.explained6 = live
		}
		b.add("  gateway6: auto")
	} else if wn.v6 != nil && live {
		b.addComment("  ", fmt.Sprintf("%s (IPv6) is disabled in mwan3: multiwan leaves this WAN's IPv6 to the main table. Add gateway6: auto (and its track_ip as targets) to manage it.", q(wn.v6.name)))
	}
	c.probeLines(&b, wn, f, v6, explain)
	for _, n := range wn.notes {
		b.addComment("  ", n)
	}
	return b, live
}

func familyLabel(f int) string {
	if f == 6 {
		return "IPv6"
	}
	return "IPv4"
}

// probeLines writes the probe of a WAN from its primary interface f
// (and its IPv6 twin's targets when v6).
func (c *conv) probeLines(b *block, wn *wan, f *iface, v6, explain bool) {
	var ifs []*iface
	if wn.v4 != nil && (wn.v4.enabled || f == wn.v4) {
		ifs = append(ifs, wn.v4)
	}
	if wn.v6 != nil && (v6 || f == wn.v6) {
		ifs = append(ifs, wn.v6)
	}
	var targets, notes []string
	for _, x := range ifs {
		for _, t := range x.targets {
			targets = append(targets, target(f.method, t, f.httpingSSL))
		}
		for _, n := range x.notes {
			if len(ifs) > 1 {
				n = q(x.name) + ": " + n
			}
			notes = append(notes, n)
		}
	}
	for _, x := range ifs {
		if x == f {
			continue
		}
		var diff []string
		for _, d := range []struct {
			name string
			a, b int
		}{{"reliability", f.reliability, x.reliability}, {"interval", f.interval, x.interval}, {"timeout", f.timeout, x.timeout},
			{"down", f.down, x.down}, {"up", f.up, x.up}} {
			if d.a != d.b {
				diff = append(diff, fmt.Sprintf("%s %d", d.name, d.b))
			}
		}
		if x.trackMethod != f.trackMethod {
			diff = append(diff, "track_method "+x.trackMethod)
		}
		if len(diff) > 0 {
			notes = append(notes, fmt.Sprintf("%s had %s: multiwan probes both families of a WAN with one setting, that of %s.", q(x.name), strings.Join(diff, ", "), q(f.name)))
		}
	}
	if len(targets) == 0 {
		b.addComment("  ", fmt.Sprintf("No track_ip: mwan3 did not track %s (it was up whenever its link was); multiwan pings its gateway. Add targets beyond the ISP (README: Choosing probe targets).", q(f.name)))
		for _, n := range notes {
			b.addComment("  ", n)
		}
		return
	}
	b.add("  probe:")
	if explain {
		b.addComment("    ", "track_ip became targets; reliability, interval, timeout (how long each probe is waited for, as mwan3's per-ping timeout), down and up keep mwan3's values, in seconds.")
	}
	if f.method != "icmp" {
		b.add("    method: " + f.method)
	}
	b.add("    targets: " + config.FlowList(targets))
	rel := f.reliability
	if rel > len(targets) {
		notes = append(notes, fmt.Sprintf("reliability %d is more than its %d track_ip, so mwan3 never counted it up; capped.", rel, len(targets)))
		rel = len(targets)
	}
	def := func(name string) string {
		if f.set[name] {
			return ""
		}
		return "  # mwan3's default"
	}
	if rel != 1 || f.set["reliability"] {
		b.add(fmt.Sprintf("    reliability: %d%s", rel, def("reliability")))
	}
	b.add(fmt.Sprintf("    interval: %ds%s", f.interval, def("interval")))
	b.add(fmt.Sprintf("    timeout: %ds%s", f.timeout, def("timeout")))
	b.add(fmt.Sprintf("    down: %d%s", f.down, def("down")))
	b.add(fmt.Sprintf("    up: %d%s", f.up, def("up")))
	if f.maxLoss >= 0 {
		b.add(fmt.Sprintf("    max_loss: %d%%", f.maxLoss))
		b.add(fmt.Sprintf("    max_rtt: %dms", f.maxRTT))
	}
	for _, n := range notes {
		b.addComment("    ", n)
	}
}

// target writes a track_ip as a target of the probe method.
func target(method, ip string, ssl bool) string {
	host := ip
	if strings.Contains(ip, ":") {
		host = "[" + ip + "]"
	}
	switch method {
	case "http":
		if ssl {
			return "https://" + host + "/"
		}
		return "http://" + host + "/"
	case "tcp":
		return host + ":80"
	}
	return ip
}

// policyLines is the YAML of a policy under name; commented marks the
// members whose WAN is disabled for writing commented out.
func policyLines(p *policy, name string, sticky, markDisabled bool) block {
	var b block
	b.add("- name: " + name)
	b.add("  members:")
	for _, m := range p.members {
		line := fmt.Sprintf("    - {wan: %s, tier: %d, weight: %d}", m.wan.name, m.tier, m.weight)
		if len(m.from) > 0 {
			line += "  # " + strings.Join(m.from, ", ")
		}
		if markDisabled && !m.enabled {
			line = "    # " + strings.TrimPrefix(line, "    ") + " (interface disabled)"
		}
		b.add(line)
		for _, n := range m.notes {
			b.addComment("    ", n)
		}
	}
	b.add("  last_resort: " + p.lastResort)
	if sticky {
		b.add("  sticky: source")
	}
	return b
}

func (c *conv) policyBlock(w *writer, p *policy) {
	var head block
	head.addComment("", fmt.Sprintf("mwan3 policy %s (line %d)", q(p.mwan3Name), p.sec.Pos.Line))
	if len(p.members) == 0 {
		head.addComment("", "Not converted: it has no member multiwan can use; mwan3 gave its traffic the last resort.")
		for _, n := range p.notes {
			head.addComment("", n)
		}
		w.write("  ", head, false)
		return
	}
	live := p.usable()
	if !live {
		head.addComment("", "Every member's interface is disabled in mwan3, so written commented out (a multiwan policy needs a usable member): uncomment it with its WAN.")
	}
	for _, n := range p.notes {
		head.addComment("", n)
	}
	if p.sticky {
		head.addComment("", stickyNote)
	}
	w.write("  ", head, false)
	body := policyLines(p, p.name, p.sticky, live)
	w.write("  ", body, !live)
	if p.stickyName != "" {
		var sb block
		sb.addComment("", fmt.Sprintf("%s with sticky, for the rules with sticky 1 that use it. %s", q(p.mwan3Name), stickyNote))
		w.write("  ", sb, false)
		w.write("  ", policyLines(p, p.stickyName, true, live), !live)
	}
}

// stickyNote says how mwan3's sticky differs from multiwan's.
const stickyNote = "mwan3's sticky kept each source address on the WAN it first got, in a table of recent hosts that forgot them after the rule's timeout; multiwan's sticky: source hashes the source address onto the tier's WANs by weight: no timeout, nothing to fill up, the same WAN after a restart, and only the hosts of a WAN that dies move."

func (c *conv) ruleBlock(w *writer, r *rule) {
	var b block
	src := fmt.Sprintf("mwan3 %s (line %d)", r.label, r.sec.Pos.Line)
	b.addComment("", src)
	if r.skip != "" {
		b.addComment("", "Not carried over: "+r.skip)
	}
	for _, n := range r.notes {
		b.addComment("", n)
	}
	b.add("- name: " + r.name)
	if len(r.src) > 0 {
		b.add("  src: " + config.FlowList(r.src))
	}
	dst := r.dst
	if r.restrict != 0 {
		dst = nil
		if r.restrict.has(4) {
			dst = append(dst, "0.0.0.0/0")
		}
		if r.restrict.has(6) {
			dst = append(dst, "::/0")
		}
		if r.catchAll {
			b.addComment("  ", fmt.Sprintf("All remaining %s traffic, as in mwan3.", r.restrict))
		} else {
			b.addComment("  ", fmt.Sprintf("%s only, as in mwan3 (a multiwan rule without addresses matches both families).", r.restrict))
		}
	} else if r.ipset != "" {
		b.add(fmt.Sprintf("  dst_file: /etc/multiwan/%s.txt", r.ipset))
	}
	if len(dst) > 0 {
		b.add("  dst: " + config.FlowList(dst))
	}
	if r.proto != "" {
		b.add("  proto: " + config.Quote(r.proto))
	}
	if len(r.srcPort) > 0 {
		b.add("  src_port: " + portFlow(r.srcPort))
	}
	if len(r.dstPort) > 0 {
		b.add("  dst_port: " + portFlow(r.dstPort))
	}
	if len(r.iif) > 0 {
		b.add("  iif: " + config.FlowList(r.iif))
	}
	target := r.target
	if r.policy != nil {
		target = r.policy.name
		if r.sticky {
			target = r.policy.stickyFor()
		}
	}
	if r.sticky && r.policy != nil {
		b.addComment("  ", fmt.Sprintf("sticky 1 (timeout %d s): policy %s has sticky: source, see there.", r.timeout, target))
	}
	if target == "" {
		target = "TODO"
	}
	b.add("  policy: " + config.Quote(target))
	w.write("  ", b, r.skip != "")
}

// portFlow is a flow sequence of ports (plain numbers) and ranges
// (quoted "1000-2000").
func portFlow(ports []string) string {
	q := make([]string, len(ports))
	for i, p := range ports {
		q[i] = p
		if strings.Contains(p, "-") {
			q[i] = `"` + p + `"`
		}
	}
	return "[" + strings.Join(q, ", ") + "]"
}
