package config

import (
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// Longest names. A WAN name ends up in interface-sized places (nft set
// names, log prefixes), hence the Linux IFNAMSIZ-1 limit.
const (
	maxWANName    = 15
	maxPolicyName = 32
	maxRuleName   = 32
)

// name decodes the name of a WAN, policy or rule: 1..max characters of
// a-z, 0-9, _ and -, so it is safe inside nft identifiers and file names.
// An invalid name is still returned, so that references to it do not
// cascade into "unknown" errors.
func name(v value, kind string, max int) (string, bool) {
	s, ok := v.str()
	if !ok {
		return "", false
	}
	valid := len(s) >= 1 && len(s) <= max
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			valid = false
		}
	}
	if !valid {
		v.errorf("%q is not a valid %s name (1..%d characters of a-z, 0-9, _ and -)", s, kind, max)
	}
	return s, valid
}

// ifname decodes a Linux interface name, checked as the kernel's
// dev_valid_name does.
func ifname(v value) (string, bool) {
	s, ok := v.str()
	if !ok {
		return "", false
	}
	if why := ifnameProblem(s); why != "" {
		v.errorf("%q is not a valid interface name (%s)", s, why)
		return "", false
	}
	return s, true
}

// ValidIfname reports whether s can be a Linux interface name.
func ValidIfname(s string) bool { return ifnameProblem(s) == "" }

func ifnameProblem(s string) string {
	switch {
	case s == "":
		return "empty"
	case len(s) > 15:
		return "longer than 15 bytes"
	case s == "." || s == "..":
		return `"." and ".." are not allowed`
	case strings.ContainsAny(s, "/:"):
		return "contains / or :"
	case strings.ContainsAny(s, " \t\n\v\f\r\x00"):
		return "contains whitespace"
	}
	return ""
}

// addr parses an IP address; want describes what was expected. Zones are
// refused: which interface a packet leaves by is multiwan's decision.
func addr(v value, s, want string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		v.mistyped(want)
		return netip.Addr{}, false
	}
	if a.Zone() != "" {
		v.errorf("%q: zones are not allowed", s)
		return netip.Addr{}, false
	}
	return a, true
}

// matchList decodes the list of one of a rule's match fields, which may
// also be a single value. An empty list is refused: a rule with no
// addresses matches every address, which is the opposite of what an empty
// list produced by a template, say, is meant to do.
func matchList(v value) []value {
	items, ok := v.list(true)
	if ok && len(items) == 0 {
		v.errorf("empty list; leave %s out to match any", v.key)
	}
	return items
}

// prefixes decodes a list of addresses and CIDR prefixes; a single address
// becomes a /32 or /128.
func prefixes(v value) []netip.Prefix {
	var out []netip.Prefix
	eachPrefix(v, func(p netip.Prefix, _ value) { out = append(out, p) })
	return out
}

// eachPrefix decodes a list of addresses and CIDR prefixes like prefixes,
// calling f with each valid one and the item it came from.
func eachPrefix(v value, f func(netip.Prefix, value)) {
	const want = "an IP address or CIDR prefix"
	for _, item := range matchList(v) {
		s, ok := item.text(want)
		if !ok {
			continue
		}
		s = strings.TrimSpace(s)
		if !strings.Contains(s, "/") {
			if a, ok := addr(item, s, want); ok {
				f(netip.PrefixFrom(a, a.BitLen()), item)
			}
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			item.mistyped(want)
			continue
		}
		// 10.0.0.1/8 is almost always a typo for an address or for
		// 10.0.0.0/8; refuse to guess which.
		if m := p.Masked(); m != p {
			item.errorf("%s has host bits set; did you mean %s?", s, m)
			continue
		}
		f(p, item)
	}
}

// protocols are the names proto accepts, with their numbers, in the order
// messages list them.
var protocols = []struct {
	name   string
	number int
}{
	{"tcp", 6}, {"udp", 17}, {"icmp", 1}, {"icmpv6", 58},
	{"sctp", 132}, {"udplite", 136}, {"gre", 47}, {"esp", 50},
}

// proto decodes a protocol name or number. A number with a name becomes
// the name, so that `proto: 6` allows ports just as `proto: tcp` does.
func proto(v value) (string, bool) {
	const want = "tcp, udp, icmp, icmpv6, sctp, udplite, gre, esp or a number 0..255"
	s, ok := v.text(want)
	if !ok {
		return "", false
	}
	if n, err := strconv.Atoi(s); err == nil && isDigits(s) {
		if n > 255 {
			v.mistyped(want)
			return "", false
		}
		for _, p := range protocols {
			if p.number == n {
				return p.name, true
			}
		}
		return strconv.Itoa(n), true
	}
	for _, p := range protocols {
		if p.name == s {
			return s, true
		}
	}
	v.mistyped(want)
	return "", false
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// portRanges decodes a list of ports (587 or "587") and ranges
// ("1000-2000").
func portRanges(v value) []PortRange {
	const want = "a port or a range like 1000-2000"
	items := matchList(v)
	var out []PortRange
	for _, item := range items {
		s, ok := item.text(want)
		if !ok {
			continue
		}
		first, last, isRange := strings.Cut(s, "-")
		if !isRange {
			last = first
		}
		first, last = strings.TrimSpace(first), strings.TrimSpace(last)
		if !isDigits(first) || !isDigits(last) {
			item.mistyped(want)
			continue
		}
		lo, hi := port(item, first), port(item, last)
		switch {
		case lo == 0 || hi == 0:
			// already reported
		case lo > hi:
			item.errorf("range %d-%d is reversed; did you mean %d-%d?", lo, hi, hi, lo)
		default:
			out = append(out, PortRange{First: lo, Last: hi})
		}
	}
	return out
}

// port parses a string of digits as a port number, reporting and
// returning 0 when it is out of range.
func port(v value, digits string) uint16 {
	n, err := strconv.ParseUint(digits, 10, 16)
	if err != nil || n == 0 {
		v.errorf("port %s is out of range 1..65535", digits)
		return 0
	}
	return uint16(n)
}

// checkTarget reports whether s is a valid target for the probe method.
func checkTarget(v value, method, s string) bool {
	switch method {
	case "icmp":
		_, ok := addr(v, s, "an IP address")
		return ok
	case "tcp":
		if !isAddrPort(s) {
			v.errorf("%q is not an address:port like 192.0.2.1:443", s)
			return false
		}
	case "http":
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.errorf("%q is not an http:// or https:// URL", s)
			return false
		}
	case "dns":
		if _, err := netip.ParseAddr(s); err == nil && !strings.Contains(s, "%") {
			return true
		}
		if !isAddrPort(s) {
			v.errorf("%q is not an IP address or address:port", s)
			return false
		}
	}
	return true
}

// isAddrPort reports whether s is IP:port (IPv6 in brackets) with a
// non-zero port and no zone.
func isAddrPort(s string) bool {
	ap, err := netip.ParseAddrPort(s)
	return err == nil && ap.Port() != 0 && ap.Addr().Zone() == ""
}

// fileMode decodes a permission mode, always read as octal whether written
// 0600, 600, 0o600 or "0600": that is how chmod reads it, and a decimal
// 600 would silently make a very different mode.
func fileMode(v value) (uint32, bool) {
	const want = "an octal file mode like 0600"
	s, ok := v.text(want)
	if !ok {
		return 0, false
	}
	digits := strings.TrimPrefix(strings.TrimPrefix(s, "0o"), "0O")
	m, err := strconv.ParseUint(digits, 8, 32)
	if err != nil || !isDigits(digits) || m > 0o777 {
		v.mistyped(want)
		return 0, false
	}
	return uint32(m), true
}
