package mwan3

import (
	"cmp"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/multiwan/multiwan/internal/config"
)

// mwan3's defaults (mwan3track, mwan3.sh), used where an option is unset
// so the converted config behaves as mwan3 did.
const (
	defReliability = 1
	defCount       = 1
	defTimeout     = 4  // s, per ping
	defInterval    = 10 // s
	defDown        = 5
	defUp          = 5
	defFailLatency = 1000 // ms, check_quality
	defFailLoss    = 40   // %, check_quality
	defRuleTimeout = 600  // s, sticky
	defMetric      = 1
	defWeight      = 1
	maxMetric      = 256 // members above it are skipped (DEFAULT_LOWEST_METRIC)
	maxMWAN3Name   = 15  // mwan3 skips policies and rules with longer names
	maxWANs        = 99
	maxWANName     = 15
	maxPolicyName  = 32
	maxRuleName    = 32
	maxWeight      = 1000
)

// Result is a converted config.
type Result struct {
	// YAML is the multiwan config, with comments; it passes `multiwan
	// check`.
	YAML string
	// Warnings are FILE:LINE:COL: warning: lines about what did not carry
	// over in a way that changes behaviour.
	Warnings []string
}

// Convert converts the mwan3 UCI config data (read from file, used in
// messages) to a multiwan config. A malformed file, or values mwan3 could
// not have used, yield an ErrorList (FILE:LINE:COL: message); a result
// that multiwan's own validation refuses is an error too (a bug).
func Convert(file string, data []byte) (*Result, error) {
	u, err := ParseUCI(file, data)
	if err != nil {
		return nil, err
	}
	c := &conv{file: file, u: u, ifaces: map[string]*iface{}, members: map[string]*member{}, policyByName: map[string]*policy{}}
	c.read()
	if len(c.errs) > 0 {
		return nil, c.errs
	}
	c.build()
	if len(c.errs) > 0 {
		return nil, c.errs
	}
	text := c.emit()
	if _, err := config.Parse(file+" (converted)", []byte(text)); err != nil {
		return nil, fmt.Errorf("the converted config does not pass multiwan's validation (a bug in the converter; please report it with the mwan3 file):\n%w", err)
	}
	return &Result{YAML: text, Warnings: c.warnings()}, nil
}

// conv holds a conversion under way.
type conv struct {
	file string
	u    *UCI
	errs ErrorList
	// warns are warnings, reported as FILE:LINE:COL: warning: message.
	warns []*Error
	// topNotes are comments for the head of the output.
	topNotes []string

	globals      *Section
	ifaceList    []*iface
	ifaces       map[string]*iface
	members      map[string]*member
	policies     []*policy
	policyByName map[string]*policy
	rules        []*rule

	wans          []*wan
	wanNames      map[string]bool
	policyNames   map[string]bool
	defaultPolicy string
	// synthesized is the policy made for traffic no rule matched, if one
	// was needed.
	synthesized *policy
	markMask    string
	markNote    string
	// defaultNote says where default_policy came from.
	defaultNote string
	// explained6 is set once gateway6 was explained.
	explained6 bool
}

func (c *conv) errorf(at Pos, format string, args ...any) {
	c.errs = append(c.errs, &Error{File: c.file, Line: at.Line, Col: at.Col, Msg: fmt.Sprintf(format, args...)})
}

func (c *conv) warnf(at Pos, format string, args ...any) {
	c.warns = append(c.warns, &Error{File: c.file, Line: at.Line, Col: at.Col, Msg: "warning: " + fmt.Sprintf(format, args...)})
}

// warnings are the warnings in file order.
func (c *conv) warnings() []string {
	slices.SortStableFunc(c.warns, func(a, b *Error) int { return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col)) })
	out := make([]string, len(c.warns))
	for i, w := range c.warns {
		out[i] = w.Error()
	}
	return out
}

// iface is a `config interface`: an OpenWrt logical interface mwan3
// tracks.
type iface struct {
	sec     *Section
	name    string
	enabled bool
	family  int // 4 or 6
	// wan is the WAN it became (with its IPv4 or IPv6 twin).
	wan *wan
	// Probe settings: mwan3's values, defaults filled in.
	targets                              []string
	method                               string
	reliability, timeout, interval       int
	down, up                             int
	maxLoss, maxRTT                      int // check_quality; -1 when off
	set                                  map[string]bool
	notes                                []string // comments on options that do not carry over
	trackMethod                          string
	httpingSSL                           bool
	reliabilityAt, intervalAt, timeoutAt Pos
}

// wan is a multiwan WAN: an mwan3 interface, with its IPv6 twin when mwan3
// had one (wan and wan6 are one uplink).
type wan struct {
	name   string
	v4, v6 *iface
	notes  []string
}

// primary is the interface whose settings the WAN takes: IPv4's if it is
// enabled (or there is no IPv6 one).
func (w *wan) primary() *iface {
	if w.v4 != nil && (w.v4.enabled || w.v6 == nil || !w.v6.enabled) {
		return w.v4
	}
	return w.v6
}

func (w *wan) enabled() bool {
	return (w.v4 != nil && w.v4.enabled) || (w.v6 != nil && w.v6.enabled)
}

// member is a `config member`.
type member struct {
	sec     *Section
	iface   string
	ifaceAt Pos
	metric  int
	weight  int
}

// policy is a `config policy`, or one made by the conversion.
type policy struct {
	sec        *Section
	mwan3Name  string
	name       string
	members    []*pmember
	lastResort string
	notes      []string
	// usedFlow and usedSticky say whether rules (or default_policy) use
	// it without and with sticky.
	usedFlow, usedSticky bool
	// sticky is the name of its sticky copy, if one is needed.
	stickyName string
	sticky     bool
	made       string // for a policy the conversion made: why
}

// usable reports whether the policy has a member whose interface is
// enabled.
func (p *policy) usable() bool {
	return slices.ContainsFunc(p.members, func(m *pmember) bool { return m.enabled })
}

// pmember is a WAN's place in a policy.
type pmember struct {
	wan          *wan
	tier, weight int
	from         []string // member sections
	metric       int
	// enabled is set when the interface of one of its member sections
	// is enabled (a WAN may be enabled for IPv6 and not for IPv4).
	enabled bool
	notes   []string
}

// read decodes the sections into the conversion's model.
func (c *conv) read() {
	if c.u.Package != "" && c.u.Package != "mwan3" {
		c.errorf(c.u.PackagePos, "this file declares package %s, not mwan3: is it /etc/config/mwan3?", q(c.u.Package))
		return
	}
	for _, s := range c.u.Sections {
		switch s.Type {
		case "globals":
			if c.globals == nil {
				c.globals = s
			} else {
				c.globals.Options = append(c.globals.Options, s.Options...)
			}
			if v, at, ok := s.Value("mmx_mask"); ok {
				if m, err := strconv.ParseUint(strings.TrimSpace(v), 0, 32); err != nil || m == 0 {
					c.errorf(at, "option mmx_mask: %s is not a non-zero 32-bit mask like 0x3F00", q(v))
				}
			}
		case "interface":
			c.readIface(s)
		case "member":
			c.readMember(s)
		case "policy":
			c.readPolicy(s)
		case "rule":
			c.readRule(s)
		default:
			c.warnf(s.TypePos, "config %s is not an mwan3 section type (globals, interface, member, policy, rule): ignored", q(s.Type))
			c.topNotes = append(c.topNotes, fmt.Sprintf("config %s %s (line %d) is not an mwan3 section type (globals, interface, member, policy, rule): ignored.", q(s.Type), q(s.Name), s.Pos.Line))
		}
	}
	if len(c.ifaceList) == 0 && len(c.errs) == 0 {
		c.errorf(Pos{1, 1}, "no `config interface` section: nothing to convert (is this /etc/config/mwan3?)")
	}
}

// number reads an integer option of a section, with its default.
func (c *conv) number(s *Section, name string, def, min, max int) (int, Pos, bool) {
	v, at, ok := s.Value(name)
	if !ok {
		return def, at, false
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		c.errorf(at, "option %s: %s is not a whole number", name, q(v))
		return def, at, true
	}
	if n < min || n > max {
		c.errorf(at, "option %s: %d is out of range %d..%d", name, n, min, max)
		return def, at, true
	}
	return n, at, true
}

// boolean reads a UCI boolean option.
func (c *conv) boolean(s *Section, name string, def bool) bool {
	v, at, ok := s.Value(name)
	if !ok {
		return def
	}
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "yes", "on", "true", "enabled":
		return true
	case "0", "no", "off", "false", "disabled":
		return false
	}
	c.errorf(at, "option %s: %s is not a boolean (1/0, yes/no, on/off, true/false)", name, q(v))
	return def
}

func (c *conv) readIface(s *Section) {
	if s.Name == "" {
		c.warnf(s.Pos, "an interface section without a name cannot be used by members: ignored")
		return
	}
	f := &iface{sec: s, name: s.Name, set: map[string]bool{}, maxLoss: -1, maxRTT: -1}
	for _, o := range s.Options {
		f.set[o.Name] = true
	}
	f.enabled = c.boolean(s, "enabled", false)
	f.family = 4
	if v, at, ok := s.Value("family"); ok {
		switch v {
		case "ipv4":
		case "ipv6":
			f.family = 6
		default:
			c.errorf(at, "option family: %s is neither ipv4 nor ipv6", q(v))
		}
	}
	const day = 86400
	f.reliability, f.reliabilityAt, _ = c.number(s, "reliability", defReliability, 1, 1000)
	f.timeout, f.timeoutAt, _ = c.number(s, "timeout", defTimeout, 1, day)
	f.interval, f.intervalAt, _ = c.number(s, "interval", defInterval, 1, day)
	f.down, _, _ = c.number(s, "down", defDown, 1, 1_000_000)
	f.up, _, _ = c.number(s, "up", defUp, 1, 1_000_000)
	count, _, _ := c.number(s, "count", defCount, 1, 1000)
	f.httpingSSL = c.boolean(s, "httping_ssl", false)
	if count > 1 {
		f.notes = append(f.notes, fmt.Sprintf("count %d: mwan3 sent %d pings per target per round and counted the target up if one came back; multiwan sends one probe per target per round (after a lost round the next starts as soon as it is judged) and needs `down` failed rounds in a row, so single losses are tolerated already.", count, count))
	}
	f.trackMethod = "ping"
	if v, _, ok := s.Value("track_method"); ok {
		f.trackMethod = v
	}
	switch f.trackMethod {
	case "ping", "nping-icmp":
		f.method = "icmp"
		if f.trackMethod != "ping" {
			f.notes = append(f.notes, "track_method nping-icmp: multiwan pings (ICMP echo) itself.")
		}
	case "httping":
		f.method = "http"
	case "nping-tcp":
		f.method = "tcp"
		f.notes = append(f.notes, "track_method nping-tcp: multiwan's tcp probe connects to port 80 of each target, as nping --tcp probes it.")
	case "arping", "nping-arp":
		f.method = "icmp"
		f.notes = append(f.notes, fmt.Sprintf("track_method %s: multiwan has no ARP probe (it would only see the link's neighbour); it pings the targets instead.", f.trackMethod))
	case "nping-udp":
		f.method = "icmp"
		f.notes = append(f.notes, "track_method nping-udp: multiwan has no UDP probe; it pings the targets instead (dns is a UDP probe if the targets are DNS servers: method: dns).")
	default:
		f.method = "icmp"
		f.notes = append(f.notes, fmt.Sprintf("track_method %s is not one mwan3 knows (it fell back to ping): multiwan pings.", q(f.trackMethod)))
	}
	if o := s.Option("track_ip"); o != nil {
		for i, v := range o.Values {
			for _, t := range strings.Fields(v) {
				a, err := netip.ParseAddr(t)
				if err != nil || a.Zone() != "" {
					f.notes = append(f.notes, fmt.Sprintf("track_ip %s: multiwan probes addresses, not host names; left out.", q(t)))
					continue
				}
				if (a.Is4() || a.Is4In6()) != (f.family == 4) {
					c.warnf(o.At[i], "track_ip %s is not an %s address, as the interface's family says: left out", q(t), familyName(f.family))
					f.notes = append(f.notes, fmt.Sprintf("track_ip %s is not an %s address (family %s): left out.", q(t), familyName(f.family), familyName(f.family)))
					continue
				}
				t = a.Unmap().String()
				if !slices.Contains(f.targets, t) {
					f.targets = append(f.targets, t)
				}
			}
		}
	}
	if c.boolean(s, "check_quality", false) {
		f.maxLoss, _, _ = c.number(s, "failure_loss", defFailLoss, 0, 100)
		f.maxRTT, _, _ = c.number(s, "failure_latency", defFailLatency, 1, 3_600_000)
		f.notes = append(f.notes, fmt.Sprintf("check_quality: mwan3 counted a target failed beyond %d ms or %d%% loss and took the interface down; multiwan's max_rtt and max_loss mark the WAN degraded instead (used only when no WAN of a better tier is up), judged over the last 20 rounds. recovery_latency and recovery_loss have no counterpart: the WAN is up again once the condition clears for `up` rounds.", f.maxRTT, f.maxLoss))
	}
	for _, o := range s.Options {
		switch o.Name {
		case "enabled", "family", "reliability", "timeout", "interval", "down", "up", "count",
			"track_method", "track_ip", "check_quality", "failure_loss", "failure_latency", "httping_ssl":
		case "recovery_latency", "recovery_loss":
			if !c.boolean(s, "check_quality", false) {
				f.notes = append(f.notes, fmt.Sprintf("%s: used only with check_quality, which is off.", o.Name))
			}
		case "initial_state":
			if v, _, _ := s.Value(o.Name); v == "offline" {
				f.notes = append(f.notes, "initial_state offline: multiwan starts every WAN as unknown, presumed usable (so a restart does not move traffic) until its probes decide, within a few rounds.")
			}
		case "failure_interval", "recovery_interval", "keep_failure_interval":
			f.notes = append(f.notes, fmt.Sprintf("%s: multiwan has one interval; after a failed round it probes again as soon as that round is judged (interval/10 after it started at the least), to confirm or refute quickly.", o.Name))
		case "size", "max_ttl":
			f.notes = append(f.notes, fmt.Sprintf("%s: multiwan's echo requests have a fixed size and the system's TTL.", o.Name))
		case "flush_conntrack":
			f.notes = append(f.notes, fmt.Sprintf("flush_conntrack %s: mwan3 flushed the whole connection tracking table on these events; multiwan deletes the connections of a WAN that goes down, and only those (by its mark), and flushes nothing else.", q(strings.Join(o.Values, " "))))
		default:
			f.notes = append(f.notes, fmt.Sprintf("option %s %s is not an mwan3 interface option this converter knows: not carried over.", o.Name, q(strings.Join(o.Values, " "))))
			c.warnf(o.Pos, "unknown interface option %s: not carried over", o.Name)
		}
	}
	c.ifaceList = append(c.ifaceList, f)
	c.ifaces[f.name] = f
}

func familyName(f int) string {
	if f == 6 {
		return "ipv6"
	}
	return "ipv4"
}

func (c *conv) readMember(s *Section) {
	if s.Name == "" {
		c.warnf(s.Pos, "a member section without a name cannot be used by policies: ignored")
		return
	}
	m := &member{sec: s}
	m.iface, m.ifaceAt, _ = s.Value("interface")
	m.metric, _, _ = c.number(s, "metric", defMetric, 0, 1_000_000)
	m.weight, _, _ = c.number(s, "weight", defWeight, 0, 1_000_000)
	for _, o := range s.Options {
		if o.Name != "interface" && o.Name != "metric" && o.Name != "weight" {
			c.warnf(o.Pos, "unknown member option %s: not carried over", o.Name)
		}
	}
	c.members[s.Name] = m
}

func (c *conv) readPolicy(s *Section) {
	if s.Name == "" {
		c.warnf(s.Pos, "a policy section without a name cannot be used by rules: ignored")
		return
	}
	p := &policy{sec: s, mwan3Name: s.Name, lastResort: "unreachable"}
	if v, at, ok := s.Value("last_resort"); ok {
		switch v {
		case "unreachable":
		case "blackhole":
			p.lastResort = "blackhole"
		case "default":
			p.lastResort = "main"
		default:
			p.notes = append(p.notes, fmt.Sprintf("last_resort %s is not one mwan3 knows; it used unreachable.", q(v)))
			c.warnf(at, "last_resort %s is not unreachable, blackhole or default: mwan3 used unreachable", q(v))
		}
	}
	for _, o := range s.Options {
		if o.Name != "use_member" && o.Name != "last_resort" {
			c.warnf(o.Pos, "unknown policy option %s: not carried over", o.Name)
			p.notes = append(p.notes, fmt.Sprintf("option %s is not an mwan3 policy option: not carried over.", o.Name))
		}
	}
	if len(s.Name) > maxMWAN3Name {
		p.notes = append(p.notes, fmt.Sprintf("mwan3 ignored this policy (its name is longer than %d characters); converted as written.", maxMWAN3Name))
		c.warnf(s.Pos, "mwan3 ignores policy %s (name longer than %d characters); it is converted as written", q(s.Name), maxMWAN3Name)
	}
	c.policies = append(c.policies, p)
	c.policyByName[s.Name] = p
}

// build pairs interfaces into WANs, resolves members into policies, and
// decides rules and the default policy.
func (c *conv) build() {
	c.buildWANs()
	if len(c.errs) > 0 {
		return
	}
	c.buildPolicies()
	c.buildRules()
	c.buildGlobals()
}

// twinOf returns the IPv4 interface an IPv6 one belongs with, by OpenWrt's
// naming (wan and wan6, wanb and wanb6; also _6, v6, _v6).
func (c *conv) twinOf(f *iface) *iface {
	for _, suffix := range []string{"6", "_6", "v6", "_v6"} {
		base, ok := strings.CutSuffix(f.name, suffix)
		if !ok || base == "" {
			continue
		}
		if t := c.ifaces[base]; t != nil && t.family == 4 && t.wan != nil && t.wan.v6 == nil {
			return t
		}
	}
	return nil
}

func (c *conv) buildWANs() {
	c.wanNames = map[string]bool{}
	for _, f := range c.ifaceList {
		if f.family == 4 {
			w := &wan{v4: f}
			f.wan = w
			c.wans = append(c.wans, w)
		}
	}
	for _, f := range c.ifaceList {
		if f.family != 6 {
			continue
		}
		if t := c.twinOf(f); t != nil {
			t.wan.v6 = f
			f.wan = t.wan
			continue
		}
		w := &wan{v6: f}
		f.wan = w
		c.wans = append(c.wans, w)
	}
	// Back to file order, by each WAN's first interface.
	order := map[*iface]int{}
	for i, f := range c.ifaceList {
		order[f] = i
	}
	first := func(w *wan) int {
		n := len(c.ifaceList)
		if w.v4 != nil {
			n = order[w.v4]
		}
		if w.v6 != nil {
			n = min(n, order[w.v6])
		}
		return n
	}
	slices.SortStableFunc(c.wans, func(a, b *wan) int { return first(a) - first(b) })
	enabled := 0
	for _, w := range c.wans {
		base := w.primary().name
		w.name = config.UniqueName(base, "x", maxWANName, c.wanNames)
		if w.enabled() {
			enabled++
		}
	}
	if enabled == 0 {
		c.errorf(c.ifaceList[0].sec.Pos, "every interface is disabled (option enabled '1' is missing or 0): mwan3 does nothing with this config, and multiwan needs at least one WAN; enable the interfaces in use and run the import again")
	}
	if enabled > maxWANs {
		c.errorf(c.ifaceList[0].sec.Pos, "%d enabled interfaces: multiwan takes at most %d WANs", enabled, maxWANs)
	}
}

func (c *conv) buildPolicies() {
	c.policyNames = map[string]bool{}
	for _, p := range c.policies {
		p.name = config.UniqueName(p.mwan3Name, "x", maxPolicyName, c.policyNames)
		o := p.sec.Option("use_member")
		if o == nil {
			p.notes = append(p.notes, "no use_member: mwan3 gave its traffic the last resort.")
			continue
		}
		for i, name := range o.Values {
			c.addMember(p, name, o.At[i])
		}
		c.settleTiers(p)
	}
}

// addMember resolves one use_member of policy p.
func (c *conv) addMember(p *policy, name string, at Pos) {
	m := c.members[name]
	if m == nil {
		p.notes = append(p.notes, fmt.Sprintf("use_member %s: no such member; mwan3 skipped it.", q(name)))
		c.warnf(at, "use_member %s: no such member (mwan3 skips it)", q(name))
		return
	}
	f := c.ifaces[m.iface]
	switch {
	case m.iface == "":
		p.notes = append(p.notes, fmt.Sprintf("member %s has no interface; mwan3 skipped it.", q(name)))
		c.warnf(m.sec.Pos, "member %s has no interface (mwan3 skips it)", q(name))
		return
	case f == nil:
		p.notes = append(p.notes, fmt.Sprintf("member %s: interface %s is not an mwan3 interface; mwan3 skipped it.", q(name), q(m.iface)))
		c.warnf(m.ifaceAt, "member %s: interface %s has no `config interface` section (mwan3 skips it)", q(name), q(m.iface))
		return
	case m.metric > maxMetric:
		p.notes = append(p.notes, fmt.Sprintf("member %s: metric %d is above %d, so mwan3 left it out of the policy.", q(name), m.metric, maxMetric))
		return
	case m.weight == 0:
		p.notes = append(p.notes, fmt.Sprintf("member %s: weight 0 gave it no share of the traffic; left out.", q(name)))
		return
	}
	w := f.wan
	for _, pm := range p.members {
		if pm.wan != w {
			continue
		}
		// Two members of one WAN: wan_m1_w3 and wan6_m1_w3 are its
		// two families, one member in multiwan; two of one family
		// (wan_m1 and wan_m2) leave the lower metric in use.
		if pm.metric == m.metric && pm.weight == m.weight {
			pm.from = append(pm.from, name)
			pm.enabled = pm.enabled || f.enabled
			return
		}
		pm.notes = append(pm.notes, fmt.Sprintf("%s (metric %d, weight %d) is the same WAN: multiwan has one member per WAN and policy, for both address families; the first is kept.", q(name), m.metric, m.weight))
		c.warnf(at, "use_member %s: WAN %s is already a member of policy %s with another metric or weight; the first is kept", q(name), w.name, q(p.mwan3Name))
		return
	}
	p.members = append(p.members, &pmember{wan: w, metric: m.metric, weight: m.weight, from: []string{name}, enabled: f.enabled})
}

// settleTiers turns metrics into tiers (the metric itself, lower is
// preferred; shifted by one if a metric is 0) and keeps weights within
// multiwan's 1..1000.
func (c *conv) settleTiers(p *policy) {
	shift := 0
	maxW := 0
	for _, m := range p.members {
		if m.metric == 0 {
			shift = 1
		}
		maxW = max(maxW, m.weight)
	}
	if shift == 1 {
		p.notes = append(p.notes, "a member has metric 0; tiers start at 1, so every tier is its metric + 1.")
	}
	scale := 1.0
	if maxW > maxWeight {
		g := 0
		for _, m := range p.members {
			g = gcd(g, m.weight)
		}
		maxW /= g
		if maxW > maxWeight {
			scale = float64(maxWeight) / float64(maxW)
		}
		for _, m := range p.members {
			m.weight /= g
		}
		p.notes = append(p.notes, fmt.Sprintf("weights above %d were scaled down keeping their ratios.", maxWeight))
	}
	for _, m := range p.members {
		m.tier = m.metric + shift
		if scale != 1 {
			m.weight = max(1, int(float64(m.weight)*scale+0.5))
		}
	}
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func (c *conv) buildGlobals() {
	c.markMask = ""
	if c.globals == nil {
		return
	}
	s := c.globals
	loggingNoted := false
	for _, o := range s.Options {
		v := strings.Join(o.Values, " ")
		switch o.Name {
		case "mmx_mask":
			m, err := strconv.ParseUint(strings.TrimSpace(v), 0, 32)
			if err != nil || m == 0 {
				continue // reported by read
			}
			n := 0
			for _, w := range c.wans {
				if w.enabled() {
					n++
				}
			}
			need := bits.Len(uint(n+3)) + 1
			if bits.OnesCount64(m) < need {
				c.markNote = fmt.Sprintf("mmx_mask %s has %d bits; multiwan needs %d for %d WANs (a WAN id, three last-resort values and a flag), so its default 0xff00 is used: check that no other program uses those bits.", v, bits.OnesCount64(m), need, n)
				c.warnf(o.Pos, "mmx_mask %s is too small for multiwan with %d WANs: the default mark_mask 0xff00 is used", v, n)
				continue
			}
			c.markMask = fmt.Sprintf("%#x", m)
		case "rtmon_interval":
			c.topNotes = append(c.topNotes, fmt.Sprintf("rtmon_interval %s: mwan3 polled the routing table to copy routes into its tables; multiwan follows route and address changes by netlink events, at once, and needs no copies (its ip rule 1000 lets the main table's routes other than default routes win).", q(v)))
		case "logging", "loglevel":
			if !loggingNoted {
				loggingNoted = true
				c.topNotes = append(c.topNotes, "logging, loglevel: multiwan logs every state change, switch and repair (`multiwan events` follows them); it does not log packets: an nft rule with `log` does.")
			}
		case "local_source":
			c.topNotes = append(c.topNotes, fmt.Sprintf("local_source %s: multiwan steers the router's own connections itself (local_traffic: true) and picks their source address by the WAN they leave by.", q(v)))
		case "rt_table_lookup":
			c.topNotes = append(c.topNotes, fmt.Sprintf("rt_table_lookup %s: mwan3 copied routes of these tables into its own; multiwan looks up only the main table's routes before its own (ip rule 1000), so add an ip rule for these tables if their routes must win.", q(v)))
		default:
			c.topNotes = append(c.topNotes, fmt.Sprintf("globals option %s %s is not one this converter knows: not carried over.", o.Name, q(v)))
			c.warnf(o.Pos, "unknown globals option %s: not carried over", o.Name)
		}
	}
}
