package config

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// DNS keys: per WAN `dns:` (the resolvers pinned to it, or auto: learned)
// and `lease_file:` (where auto reads the DHCP lease), and the top-level
// `resolv_file:` (the resolver list multiwan keeps for the router's DNS
// forwarder). See README "DNS".

// DefaultResolvFile is where the daemon writes the resolver list.
const DefaultResolvFile = "/run/multiwan/resolv.conf"

// MaxDNSServers bounds the resolvers of one WAN, configured and learned
// each: glibc reads three, dnsmasq tries them in turn; a lease listing more
// is broken or hostile.
const MaxDNSServers = 8

// DNSAuto is the word that asks for learned resolvers.
const DNSAuto = "auto"

// ResolverProblem says why a can never be a WAN's resolver, or "" when it
// can. The config refuses such addresses; learned ones (a lease, a router
// advertisement) are dropped with a warning. A resolver that is the router
// itself (loopback, unspecified) would send the router's DNS forwarder its
// own queries back, a loop; one that cannot be routed to a WAN (multicast,
// broadcast, link-local, which needs a zone multiwan cannot pin) is not a
// resolver of that WAN.
func ResolverProblem(a netip.Addr) string {
	a = a.Unmap()
	switch {
	case !a.IsValid():
		return "not an address"
	case a.Zone() != "":
		return "has a zone"
	case a.IsUnspecified():
		return "is the unspecified address (this host)"
	case a.IsLoopback():
		return "is a loopback address (the router itself: its forwarder would query itself)"
	case a.IsMulticast():
		return "is a multicast address"
	case a.Is4() && a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "is the broadcast address"
	case a.Is4() && a.As4()[0] >= 240:
		return "is in 240.0.0.0/4 (reserved)"
	case a.IsLinkLocalUnicast():
		return "is link-local (it needs an interface, and two WANs may have the same one)"
	}
	return ""
}

// wanDNS decodes a WAN's `dns:` once the whole WAN mapping is known (an
// IPv6 resolver needs the WAN's gateway6): a list of addresses, with at
// most one `auto` among them marking where learned resolvers go, or `auto`
// alone. Each address is checked by ResolverProblem and must be of a family
// the WAN carries. pos receives each address's position, for the
// cross-WAN check.
func (d *decoder) wanDNS(v value, w *WAN, pos *[]Pos) {
	if !v.given() {
		return
	}
	const want = "a resolver address or auto"
	items, ok := v.list(true)
	if ok && len(items) == 0 {
		v.errorf("empty list; leave dns out for none, or write auto to learn them")
		return
	}
	seen := map[netip.Addr]bool{}
	for _, item := range items {
		s, ok := item.text(want)
		if !ok {
			continue
		}
		s = strings.TrimSpace(s)
		if s == DNSAuto {
			if w.DNSAuto {
				item.errorf("auto is listed twice")
				continue
			}
			w.DNSAuto, w.DNSAutoAt = true, len(w.DNS)
			continue
		}
		a, ok := addr(item, s, want)
		if !ok {
			continue
		}
		a = a.Unmap()
		if why := ResolverProblem(a); why != "" {
			item.errorf("%s %s", a, why)
			continue
		}
		if a.Is6() && !w.IPv6 {
			item.errorf("%s is an IPv6 resolver, but the WAN carries no IPv6 (set gateway6): its queries could not be pinned to it", a)
			continue
		}
		if seen[a] {
			item.errorf("duplicate resolver %s", a)
			continue
		}
		seen[a] = true
		if len(w.DNS) == MaxDNSServers {
			item.errorf("at most %d resolvers per WAN", MaxDNSServers)
			continue
		}
		w.DNS = append(w.DNS, a)
		*pos = append(*pos, item.pos)
	}
}

// leaseFile decodes a WAN's `lease_file:`: an absolute path, only read
// with `dns: auto`. It need not exist yet (the DHCP client writes it).
func (d *decoder) leaseFile(v value, w *WAN, dns value) {
	if !v.given() {
		return
	}
	p, ok := cleanPath(v)
	if !ok {
		return
	}
	if !w.DNSAuto {
		if dns.given() {
			v.errorf("only read with dns: auto (this WAN's resolvers are configured)")
		} else {
			v.errorf("only read with dns: auto")
		}
		return
	}
	w.LeaseFile = p
}

// resolvFile decodes the top-level `resolv_file:`.
func resolvFile(v value) (string, bool) {
	p, ok := cleanPath(v)
	if !ok {
		return "", false
	}
	st, err := os.Stat(p)
	switch {
	case err == nil && st.IsDir():
		v.errorf("%s is a directory; name the file multiwan writes, e.g. %s", p, filepath.Join(p, "resolv.conf"))
		return "", false
	case err == nil && !st.Mode().IsRegular():
		v.errorf("%s is %s, not a regular file", p, describeMode(st.Mode()))
		return "", false
	case err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, fs.ErrPermission):
		// ENOTDIR and the like: a parent is not a directory.
		v.errorf("cannot use %s: %v", p, err)
		return "", false
	}
	return p, true
}

// cleanPath decodes an absolute path that is already in its clean form
// (no "..", no doubled or trailing slashes): a path written any other way
// is a typo or a trick, and the daemon writes or reads it as root.
func cleanPath(v value) (string, bool) {
	p, ok := absPath(v)
	if !ok {
		return "", false
	}
	if c := filepath.Clean(p); c != p {
		v.errorf("%q is not a clean path; did you mean %q?", p, c)
		return "", false
	}
	if p == "/" {
		v.errorf("%q is not a file", p)
		return "", false
	}
	return p, true
}

// checkDNS runs the DNS checks that span WANs: a resolver address can be
// pinned to one WAN only, and the resolver list must not be a file
// multiwan reads (a lease file) or the control socket.
func (d *decoder) checkDNS(c *Config, src *sources) {
	owner := map[netip.Addr]int{}
	for i, w := range c.WANs {
		for k, a := range w.DNS {
			j, dup := owner[a]
			if !dup {
				owner[a] = i
				continue
			}
			if j == i {
				continue // reported by wanDNS
			}
			if k < len(src.wan[i].dns) {
				p := src.wan[j].dns[indexOf(c.WANs[j].DNS, a)]
				d.addError(src.wan[i].dns[k], "dns: %s is already a resolver of WAN %q (%d:%d): queries to an address can be pinned to one WAN only; use another address of that service",
					a, c.WANs[j].Name, p.Line, p.Col)
			}
		}
	}
	if src.resolvFile.given() && c.ResolvFile != "" {
		for _, w := range c.WANs {
			if w.LeaseFile == c.ResolvFile {
				src.resolvFile.errorf("%s is WAN %q's lease_file: multiwan would read back what it wrote", c.ResolvFile, w.Name)
			}
		}
		if c.ResolvFile == c.Control.Socket {
			src.resolvFile.errorf("%s is the control socket", c.ResolvFile)
		}
	}
}

func indexOf(list []netip.Addr, a netip.Addr) int {
	for i, b := range list {
		if a == b {
			return i
		}
	}
	return 0
}

// HasDNS reports whether some WAN has resolvers, configured or learned:
// only then does multiwan pin DNS queries and write resolv_file.
func (c *Config) HasDNS() bool {
	for _, w := range c.WANs {
		if len(w.DNS) > 0 || w.DNSAuto {
			return true
		}
	}
	return false
}
