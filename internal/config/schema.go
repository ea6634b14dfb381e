package config

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Limits that are not defaults.
const (
	// maxRulePriority leaves room for the 600 priorities multiwan's ip rules
	// occupy below 32000, where distributions start their own rules.
	maxRulePriority = 32000 - 600
	// A hook gets at least minHookTimeout (starting a program takes
	// milliseconds) and at most maxHookTimeout: one stuck hook holds its
	// queue of events that long.
	minHookTimeout = 100 * time.Millisecond
	maxHookTimeout = 10 * time.Minute
	// minProbeInterval keeps a typo (1ns) from flooding a target.
	minProbeInterval = 10 * time.Millisecond
	// minProbeTimeout keeps a typo (1ns) from failing every probe: no
	// answer comes back that fast, and the WAN would never be up.
	minProbeTimeout = 10 * time.Millisecond
	// maxWANs keeps the ip rules of each kind within their band of 100
	// priorities (RulePriority + 100 + WAN id, + 200 + id, ...).
	maxWANs = 99
	// maxSocketPath is the longest path a unix socket address holds:
	// sun_path is 108 bytes, including the terminating NUL.
	maxSocketPath = 107
	maxWeight     = 1000
	// maxInt bounds counts with no natural limit (tiers, rounds), so that
	// they fit an int anywhere.
	maxInt = math.MaxInt32
)

// sources keeps the values that the cross-checks of check.go point their
// errors at. A value whose key was absent is the zero value.
type sources struct {
	markMask      value
	wans          value
	wan           []wanSource
	policy        []policySource
	rule          []ruleSource
	defaultPolicy value
	resolvFile    value
}

type wanSource struct {
	name, iface, table value
	// underlays are the items of underlay, tunnelMark the value of
	// tunnel_mark (underlay.go).
	underlays  []value
	tunnelMark value
	// prefixes6 are the positions of the WAN's prefixes6, in order.
	prefixes6 []Pos
	// dns are the positions of the WAN's configured resolvers, in order.
	dns []Pos
}

type policySource struct {
	name    value
	members []value // each member's wan value
}

type ruleSource struct {
	name, wan, policy   value
	wanName, policyName string
}

// given reports whether the value's key was present.
func (v value) given() bool { return v.d != nil }

// require reports each of names missing from a mapping, at the mapping.
func (v value) require(keys map[string]Pos, names ...string) {
	for _, name := range names {
		if _, ok := keys[name]; !ok {
			v.d.addError(v.pos, "%s is required", name)
		}
	}
}

// config decodes the top level and runs the cross-checks.
func (d *decoder) config(root value) *Config {
	c := &Config{
		File:         d.file,
		MarkMask:     DefaultMarkMask,
		RulePriority: DefaultRulePriority,
		LocalTraffic: DefaultLocalTraffic,
		Control:      Control{Socket: DefaultSocket, Mode: DefaultSocketMode},
		StateDir:     DefaultStateDir,
		HookTimeout:  DefaultHookTimeout,
		ResolvFile:   DefaultResolvFile,
	}
	var src sources
	keys, ok := root.mapping("", fields{
		"mark_mask": func(v value) {
			src.markMask = v
			if m, ok := v.integer(0, math.MaxUint32); ok {
				if m == 0 {
					v.errorf("must not be 0")
				}
				c.MarkMask = uint32(m)
			}
		},
		"rule_priority": func(v value) {
			if n, ok := v.integer(1, maxRulePriority); ok {
				c.RulePriority = int(n)
			}
		},
		"wans": func(v value) {
			src.wans = v
			items, ok := v.list(false)
			for _, item := range items {
				// Every item counts, even a broken one: a WAN's default
				// table depends on its position.
				w, ws := d.wan(item, len(c.WANs)+1)
				c.WANs = append(c.WANs, w)
				src.wan = append(src.wan, ws)
			}
			if ok && len(items) == 0 {
				v.errorf("at least one WAN is required")
			}
		},
		"policies": func(v value) {
			items, _ := v.list(false)
			for _, item := range items {
				p, ps := d.policy(item)
				c.Policies = append(c.Policies, p)
				src.policy = append(src.policy, ps)
			}
		},
		"rules": func(v value) {
			items, _ := v.list(false)
			for _, item := range items {
				r, rs := d.rule(item)
				c.Rules = append(c.Rules, r)
				src.rule = append(src.rule, rs)
			}
		},
		"default_policy": func(v value) {
			src.defaultPolicy = v
			c.DefaultPolicy, _ = v.str()
		},
		"local_traffic": func(v value) {
			if b, ok := v.boolean(); ok {
				c.LocalTraffic = b
			}
		},
		"control": func(v value) { d.control(v, &c.Control) },
		"http":    func(v value) { d.http(v, &c.HTTP) },
		"hooks": func(v value) {
			items, _ := v.list(false)
			for _, item := range items {
				if p, ok := absPath(item); ok && hook(item, p) {
					c.Hooks = append(c.Hooks, p)
				}
			}
		},
		"hook_timeout": func(v value) {
			if t, ok := v.duration(minHookTimeout); ok {
				if t > maxHookTimeout {
					v.errorf("must be at most %s, got %s", maxHookTimeout, t)
					return
				}
				c.HookTimeout = t
			}
		},
		"state_dir": func(v value) {
			if p, ok := absPath(v); ok {
				c.StateDir = p
			}
		},
		"resolv_file": func(v value) {
			src.resolvFile = v
			if p, ok := resolvFile(v); ok {
				c.ResolvFile = p
			}
		},
	})
	if !ok {
		return nil
	}
	// A missing top-level key is the whole file's fault: point at its start
	// rather than at whichever key happens to come first.
	for _, name := range []string{"wans", "default_policy"} {
		if _, ok := keys[name]; !ok {
			d.addError(Pos{1, 1}, "%s is required", name)
		}
	}
	d.check(c, &src)
	return c
}

func (d *decoder) wan(v value, index int) (WAN, wanSource) {
	w := WAN{
		Table: DefaultTableBase + index,
		NAT:   DefaultNAT,
		NAT6:  DefaultNAT6,
		Probe: Probe{
			Method:      DefaultProbeMethod,
			Interval:    DefaultProbeInterval,
			Timeout:     DefaultProbeTimeout,
			Down:        DefaultProbeDown,
			Up:          DefaultProbeUp,
			Reliability: DefaultReliability,
			MaxLoss:     -1,
		},
		Pos: v.pos,
	}
	var src wanSource
	var dns, leaseFile value // decoded once gateway6 is known
	keys, ok := v.mapping("wan", fields{
		"name": func(v value) {
			src.name = v
			w.Name, _ = name(v, "WAN", maxWANName)
			if w.Name == "auto" {
				// A policy may be called auto: `use` names WANs only.
				v.errorf(`"auto" is reserved: "multiwan use auto" returns to the automatic choice`)
			}
		},
		"interface": func(v value) {
			src.iface = v
			w.Interface, _ = ifname(v)
		},
		"gateway": func(v value) {
			s, ok := v.text("an IP address or auto")
			if !ok {
				return
			}
			if s == "auto" {
				w.GatewayAuto = true
				return
			}
			a, ok := addr(v, s, "an IP address or auto")
			if !ok {
				return
			}
			if a.IsUnspecified() || a.IsMulticast() {
				v.errorf("%s is not a usable gateway address", a)
				return
			}
			if !a.Is4() {
				v.errorf("%s is not an IPv4 address; an IPv6 gateway goes in gateway6", a)
				return
			}
			w.Gateway = a
		},
		"gateway6": func(v value) {
			s, ok := v.text("an IPv6 address or auto")
			if !ok {
				return
			}
			w.IPv6 = true
			if s == "auto" {
				w.Gateway6Auto = true
				return
			}
			// Link-local gateways (fe80::1 from router advertisements)
			// are the usual case on IPv6; the zone is the WAN's
			// interface, so none is written.
			a, ok := addr(v, s, "an IPv6 address or auto")
			if !ok {
				return
			}
			if !a.Is6() || a.Is4In6() || a.IsUnspecified() || a.IsMulticast() {
				v.errorf("%s is not a usable IPv6 gateway address", a)
				return
			}
			w.Gateway6 = a
		},
		"nat6": func(v value) {
			if s, ok := v.oneOf("masquerade", "none"); ok {
				w.NAT6 = s
			}
		},
		"prefixes6": func(v value) {
			eachPrefix(v, func(p netip.Prefix, item value) {
				if !p.Addr().Is6() {
					v.errorf("%s is not an IPv6 prefix", p)
					return
				}
				w.Prefixes6 = append(w.Prefixes6, p)
				src.prefixes6 = append(src.prefixes6, item.pos)
			})
		},
		"table": func(v value) {
			src.table = v
			w.Table = 0 // not checked for clashes unless valid
			n, ok := v.integer(1, math.MaxUint32)
			if !ok {
				return
			}
			if what, reserved := reservedTables[n]; reserved {
				v.errorf("%d is reserved for the kernel's %s table", n, what)
				return
			}
			w.Table = int(n)
		},
		"nat": func(v value) {
			if s, ok := v.oneOf("masquerade", "none"); ok {
				w.NAT = s
			}
		},
		"probe": func(v value) { d.probe(v, &w.Probe) },
		// Tunnel WANs (overlays): underlay.go.
		"underlay":    func(v value) { w.Underlays, src.underlays = underlays(v) },
		"tunnel_mark": func(v value) { w.TunnelMark, src.tunnelMark = tunnelMark(v) },
		"dns":         func(v value) { dns = v },
		"lease_file":  func(v value) { leaseFile = v },
		"endpoint": func(v value) {
			const want = "an address or address:port of the tunnel's peer, e.g. 203.0.113.7:51820"
			for _, item := range matchList(v) {
				s, ok := item.text(want)
				if !ok {
					continue
				}
				ep, ok := endpoint(strings.TrimSpace(s))
				if !ok {
					item.mistyped(want)
					continue
				}
				if a := ep.Addr(); a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() {
					item.errorf("%s is not a usable tunnel endpoint", a)
					continue
				}
				w.Endpoints = append(w.Endpoints, ep)
			}
		},
	})
	if ok {
		v.require(keys, "name", "interface", "gateway")
	}
	d.wanDNS(dns, &w, &src.dns)
	d.leaseFile(leaseFile, &w, dns)
	return w, src
}

// reservedTables are the routing tables the kernel itself uses.
var reservedTables = map[int64]string{253: "default", 254: "main", 255: "local"}

func (d *decoder) probe(v value, p *Probe) {
	var targets, reliability value
	methodOK := true
	_, ok := v.mapping("probe", fields{
		"method": func(v value) {
			p.Method, methodOK = v.oneOf("icmp", "tcp", "http", "dns")
		},
		"targets": func(v value) { targets = v },
		"interval": func(v value) {
			if t, ok := v.duration(minProbeInterval); ok {
				p.Interval = t
			}
		},
		"timeout": func(v value) {
			if t, ok := v.duration(minProbeTimeout); ok {
				p.Timeout = t
			}
		},
		"down": func(v value) {
			if n, ok := v.integer(1, maxInt); ok {
				p.Down = int(n)
			}
		},
		"up": func(v value) {
			if n, ok := v.integer(1, maxInt); ok {
				p.Up = int(n)
			}
		},
		"reliability": func(v value) {
			if n, ok := v.integer(1, maxInt); ok {
				p.Reliability = int(n)
				reliability = v
			}
		},
		"max_loss": func(v value) {
			if f, ok := v.percentage(); ok {
				p.MaxLoss = f
			}
		},
		"max_rtt": func(v value) {
			if t, ok := v.duration(positive); ok {
				p.MaxRTT = t
			}
		},
	})
	if !ok {
		return
	}
	// Targets are checked once the method, which may come later in the
	// mapping, is known.
	items, _ := targets.list(false)
	seen := map[string]bool{}
	for _, item := range items {
		s, ok := item.str()
		if !ok {
			continue
		}
		if methodOK && !checkTarget(item, p.Method, s) {
			continue
		}
		if seen[s] {
			item.errorf("duplicate target %q", s)
			continue
		}
		seen[s] = true
		p.Targets = append(p.Targets, s)
	}
	if len(items) == 0 && methodOK && p.Method != "icmp" {
		// Only ICMP can fall back to pinging the gateway.
		if targets.given() {
			targets.errorf("a %s probe needs at least one target", p.Method)
		} else {
			v.d.addError(v.pos, "a %s probe needs targets", p.Method)
		}
	}
	if reliability.given() {
		switch {
		case len(items) == 0 && p.Reliability > 1:
			reliability.errorf("must be 1 when the gateway is probed, got %d", p.Reliability)
		case len(items) > 0 && p.Reliability > len(items):
			reliability.errorf("must be in 1..%d (the number of targets), got %d", len(items), p.Reliability)
		}
	}
}

func (d *decoder) policy(v value) (Policy, policySource) {
	p := Policy{LastResort: DefaultLastResort, Sticky: DefaultSticky, Pos: v.pos}
	var src policySource
	keys, ok := v.mapping("policy", fields{
		"name": func(v value) {
			src.name = v
			p.Name, _ = name(v, "policy", maxPolicyName)
		},
		"members": func(v value) {
			items, ok := v.list(false)
			for _, item := range items {
				m, wan := d.member(item)
				p.Members = append(p.Members, m)
				src.members = append(src.members, wan)
			}
			if ok && len(items) == 0 {
				v.errorf("a policy needs at least one member")
			}
		},
		"last_resort": func(v value) {
			if s, ok := v.oneOf("unreachable", "blackhole", "main"); ok {
				p.LastResort = s
			}
		},
		"sticky": func(v value) {
			if s, ok := v.oneOf("flow", "source"); ok {
				p.Sticky = s
			}
		},
	})
	if ok {
		v.require(keys, "name", "members")
	}
	return p, src
}

// member decodes one policy member; it also returns the member's wan
// value, for the check that the WAN exists.
func (d *decoder) member(v value) (Member, value) {
	m := Member{Tier: DefaultTier, Weight: DefaultWeight}
	var wan value
	keys, ok := v.mapping("member", fields{
		"wan": func(v value) {
			wan = v
			m.WAN, _ = v.str()
		},
		"tier": func(v value) {
			if n, ok := v.integer(1, maxInt); ok {
				m.Tier = int(n)
			}
		},
		"weight": func(v value) {
			if n, ok := v.integer(1, maxWeight); ok {
				m.Weight = int(n)
			}
		},
	})
	if ok {
		v.require(keys, "wan")
	}
	return m, wan
}

func (d *decoder) rule(v value) (Rule, ruleSource) {
	r := Rule{Pos: v.pos}
	var src ruleSource
	var ports []value
	protoOK := true
	keys, ok := v.mapping("rule", fields{
		"name": func(v value) {
			src.name = v
			r.Name, _ = name(v, "rule", maxRuleName)
		},
		"src": func(v value) { r.Src = addPrefixes(r.Src, prefixes(v)) },
		"dst": func(v value) { r.Dst = addPrefixes(r.Dst, prefixes(v)) },
		"src_file": func(v value) {
			var list []netip.Prefix
			r.SrcFile, list = d.listFile(v)
			r.Src = addPrefixes(r.Src, list)
		},
		"dst_file": func(v value) {
			var list []netip.Prefix
			r.DstFile, list = d.listFile(v)
			r.Dst = addPrefixes(r.Dst, list)
		},
		"proto": func(v value) { r.Proto, protoOK = proto(v) },
		"src_port": func(v value) {
			r.SrcPort = portRanges(v)
			ports = append(ports, v)
		},
		"dst_port": func(v value) {
			r.DstPort = portRanges(v)
			ports = append(ports, v)
		},
		"iif": func(v value) {
			items := matchList(v)
			for _, item := range items {
				if s, ok := ifname(item); ok {
					r.IIF = append(r.IIF, s)
				}
			}
		},
		"wan": func(v value) {
			src.wan = v
			if s, ok := v.str(); ok {
				src.wanName = s
				r.Policy = ImplicitPolicyName(s)
			}
		},
		"policy": func(v value) {
			src.policy = v
			if s, ok := v.str(); ok {
				src.policyName = s
				r.Policy = s
			}
		},
		"movable": func(v value) { r.Movable, _ = v.boolean() },
	})
	if !ok {
		return r, src
	}
	v.require(keys, "name")
	wanPos, hasWAN := keys["wan"]
	policyPos, hasPolicy := keys["policy"]
	switch {
	case hasWAN && hasPolicy:
		// Point at whichever of the two comes second: that is the one to
		// reconsider.
		at := policyPos
		if wanPos.Line > at.Line || (wanPos.Line == at.Line && wanPos.Col > at.Col) {
			at = wanPos
		}
		d.addError(at, "a rule takes wan or policy, not both")
	case !hasWAN && !hasPolicy:
		d.addError(v.pos, "a rule needs wan or policy")
	}
	if !slices.ContainsFunc(matchFields, func(f string) bool { _, ok := keys[f]; return ok }) {
		d.addError(v.pos, "a rule without a match field matches every connection; to change where unmatched traffic goes, set default_policy")
	}
	n := len(r.Src) + len(r.Dst)
	if d.ruleAddrs <= maxRuleAddrs && d.ruleAddrs+n > maxRuleAddrs {
		d.addError(v.pos, "the rules hold more than %d addresses and prefixes in all, counting a list once per rule that uses it; share long lists among fewer rules", maxRuleAddrs)
	}
	d.ruleAddrs += n
	// Only these protocols have ports; nft would reject `th dport` on others
	// or, worse, match garbage.
	if protoOK && !portProtos[r.Proto] {
		for _, p := range ports {
			if r.Proto == "" {
				p.errorf("ports need proto tcp, udp, sctp or udplite")
			} else {
				p.errorf("ports need proto tcp, udp, sctp or udplite, not %s", r.Proto)
			}
		}
	}
	return r, src
}

var portProtos = map[string]bool{"tcp": true, "udp": true, "sctp": true, "udplite": true}

// matchFields are the keys of a rule that restrict what it matches.
var matchFields = []string{"src", "dst", "src_file", "dst_file", "proto", "src_port", "dst_port", "iif"}

// addPrefixes appends list to to. An empty to takes list itself, clipped,
// so that a list file named by many rules is held once: any later append
// copies it rather than writing into the shared array.
func addPrefixes(to, list []netip.Prefix) []netip.Prefix {
	if len(to) == 0 {
		return slices.Clip(list)
	}
	return append(to, list...)
}

// maxTokenBytes bounds the token file: a token is a line of text.
const maxTokenBytes = 4 << 10

func (d *decoder) http(v value, h *HTTP) {
	keys, ok := v.mapping("http", fields{
		"listen": func(v value) {
			const want = "an address and port, like 198.18.0.1:9731"
			s, ok := v.text(want)
			if !ok {
				return
			}
			ap, err := netip.ParseAddrPort(strings.TrimSpace(s))
			if err != nil || ap.Port() == 0 || ap.Addr().Zone() != "" {
				v.mistyped(want)
				return
			}
			h.Listen = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		},
		"token_file": func(v value) {
			p, ok := absPath(v)
			if !ok {
				return
			}
			if _, err := ReadToken(p); err != nil {
				var pe *os.PathError
				if errors.As(err, &pe) && errors.Is(err, fs.ErrPermission) {
					h.TokenFile = p // not readable by check's user: the daemon reads it
					return
				}
				v.errorf("%v", err)
				return
			}
			h.TokenFile = p
		},
	})
	if ok {
		v.require(keys, "listen")
	}
}

// ReadToken reads the dashboard's token from path: a regular file of at
// most 4 KiB whose first line, trimmed, is the token (at least 16 bytes:
// it is a password on the network).
func ReadToken(path string) (string, error) {
	data, err := readRegular(path, maxTokenBytes)
	if p, ok := err.(*fileProblem); ok {
		return "", fmt.Errorf("token file %s %s", path, p.msg)
	}
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(string(data), "\n")
	token := strings.TrimSpace(line)
	if len(token) < 16 {
		return "", fmt.Errorf("token file %s: the token must be at least 16 characters (e.g. head -c 24 /dev/urandom | base64)", path)
	}
	return token, nil
}

func (d *decoder) control(v value, c *Control) {
	v.mapping("control", fields{
		"socket": func(v value) {
			p, ok := absPath(v)
			if !ok {
				return
			}
			if len(p) > maxSocketPath {
				v.errorf("%q is %d bytes long; a unix socket path holds at most %d", p, len(p), maxSocketPath)
				return
			}
			c.Socket = p
		},
		"mode": func(v value) {
			if m, ok := fileMode(v); ok {
				c.Mode = m
			}
		},
	})
}

// absPath decodes an absolute file path. Relative ones are refused: the
// daemon's working directory is nothing the user controls.
func absPath(v value) (string, bool) {
	s, ok := v.str()
	if !ok {
		return "", false
	}
	if !filepath.IsAbs(s) {
		v.errorf("%q is not an absolute path", s)
		return "", false
	}
	return s, true
}

// hook checks that the hook at path, named by v, is a file multiwan can
// run: it exists, is a regular file (a symlink to one is fine) and is
// executable by someone. A hook that cannot be checked for lack of
// permission is accepted: `multiwan check` may run as a user who cannot
// see into the daemon's directories.
func hook(v value, path string) bool {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		v.errorf("%s does not exist", path)
		return false
	case errors.Is(err, fs.ErrPermission):
		return true
	case err != nil:
		v.errorf("cannot use %s: %v", path, err)
		return false
	case !st.Mode().IsRegular():
		v.errorf("%s is %s, not a regular file", path, describeMode(st.Mode()))
		return false
	case st.Mode().Perm()&0o111 == 0:
		v.errorf("%s is not executable (mode %#o)", path, st.Mode().Perm())
		return false
	}
	return true
}

// endpoint parses "ADDR", "ADDR:PORT" or "[ADDR6]:PORT"; port 0 means any.
func endpoint(s string) (netip.AddrPort, bool) {
	if ap, err := netip.ParseAddrPort(s); err == nil && ap.Port() != 0 {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return netip.AddrPortFrom(a.Unmap(), 0), true
	}
	return netip.AddrPort{}, false
}
