// Package resolv learns a WAN's resolvers (`dns: auto`) from what its
// DHCP client and router advertisements said, and writes the resolver list
// (resolv_file) that the router's DNS forwarder reads.
//
// Everything it reads is untrusted: lease files are written by DHCP
// clients from what a DHCP server sent, router advertisements come from the
// WAN's link. Reads are bounded (the tail of a lease file, a few servers),
// every address is checked (config.ResolverProblem), and what is wrong is
// said in words (a problem, shown as a note) rather than half-trusted.
//
// Where a lease is found (Find), in this order:
//
//   - the WAN's lease_file, when set: a dhclient lease file, a
//     systemd-networkd lease, or a file of `nameserver` lines (pppd's
//     /etc/ppp/resolv.conf with usepeerdns, or what any client's hook
//     writes);
//   - systemd-networkd's /run/systemd/netif/leases/IFINDEX;
//   - dhclient's /var/lib/dhcp/dhclient.IFACE.leases (ifupdown),
//     /var/lib/dhcp/dhclient-*-IFACE.lease and
//     /var/lib/NetworkManager/dhclient-*-IFACE.lease (NetworkManager with
//     dhclient), /var/lib/NetworkManager/internal-*-IFACE.lease
//     (NetworkManager's own client, networkd's format), then the shared
//     /var/lib/dhcp/dhclient.leases (blocks of other interfaces skipped);
//
// the most recently written one wins.
package resolv

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/multiwan/multiwan/internal/config"
)

// maxLeaseRead bounds what is read of a lease file: its tail, where the
// newest lease is (dhclient appends a block per renewal and rewrites the
// file now and then; a lease is a few hundred bytes).
const maxLeaseRead = 256 << 10

// Learned is what a lease (or router advertisements) said about a WAN's
// resolvers.
type Learned struct {
	// Servers are the usable resolvers, in the order given, at most
	// config.MaxDNSServers.
	Servers []netip.Addr
	// Source says where they came from, e.g. "DHCP lease
	// /var/lib/dhcp/dhclient.wan1.leases".
	Source string
	// Problem says what was wrong, or "" (no lease found, no DNS servers
	// in it, bogus ones dropped); the daemon shows it as a note.
	Problem string
}

// Equal reports whether a and b say the same.
func (l Learned) Equal(o Learned) bool {
	if l.Source != o.Source || l.Problem != o.Problem || len(l.Servers) != len(o.Servers) {
		return false
	}
	for i := range l.Servers {
		if l.Servers[i] != o.Servers[i] {
			return false
		}
	}
	return true
}

// Format is a lease file's format.
type Format string

const (
	FormatDhclient   Format = "dhclient"    // lease { ... option domain-name-servers ...; }
	FormatNetworkd   Format = "networkd"    // DNS=a b c
	FormatResolvConf Format = "resolv.conf" // nameserver a
)

// ReadLease reads the lease file at path for interface iface (dhclient
// files may hold several interfaces' leases) and returns its resolvers.
// Only a regular file is read, and at most its last 256 KiB.
func ReadLease(path, iface string) (Learned, error) {
	data, err := readTail(path, maxLeaseRead)
	if err != nil {
		return Learned{}, err
	}
	return ParseLease(path, data, iface), nil
}

// readTail reads at most the last limit bytes of the regular file at path.
// It never blocks on a FIFO and never reads a device.
func readTail(path string, limit int64) ([]byte, error) {
	f, st, err := config.OpenRegular(path)
	if err != nil {
		return nil, err // the caller names the file
	}
	defer f.Close()
	if st.Size() > limit {
		if _, err := f.Seek(st.Size()-limit, io.SeekStart); err != nil {
			return nil, err
		}
	}
	return io.ReadAll(io.LimitReader(f, limit))
}

// ParseLease reads a lease file's content in whichever of the three
// formats it is. path only names the file in Source and problems.
func ParseLease(path string, data []byte, iface string) Learned {
	var addrs []string
	var what string
	switch DetectFormat(data) {
	case FormatDhclient:
		what = "DHCP lease " + path
		addrs = dhclientServers(data, iface)
	case FormatNetworkd:
		what = "DHCP lease " + path
		addrs = networkdServers(data)
	case FormatResolvConf:
		what = path
		addrs = nameserverLines(data)
	default:
		return Learned{Source: path, Problem: fmt.Sprintf("%s is not a lease multiwan can read (dhclient, systemd-networkd or nameserver lines)", path)}
	}
	l := check(addrs)
	l.Source = what
	if len(addrs) == 0 {
		l.Problem = what + " lists no DNS servers: none learned for this WAN"
	} else if l.Problem != "" {
		l.Problem = what + ": " + l.Problem
	}
	return l
}

// DetectFormat tells a lease file's format from its content, "" when it
// is none multiwan reads (dhcpcd's binary leases, say).
func DetectFormat(data []byte) Format {
	if bytes.IndexByte(data, 0) >= 0 {
		return ""
	}
	var kv, ns bool
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxLeaseRead)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "lease {") || strings.HasPrefix(line, "lease6 {") || line == "lease" || line == "lease6":
			return FormatDhclient
		case strings.HasPrefix(line, "nameserver ") || strings.HasPrefix(line, "nameserver\t"):
			ns = true
		case strings.HasPrefix(line, "DNS=") || strings.HasPrefix(line, "ADDRESS=") || strings.HasPrefix(line, "SERVER_ADDRESS="):
			kv = true
		}
	}
	switch {
	case kv:
		return FormatNetworkd
	case ns:
		return FormatResolvConf
	}
	return ""
}

// check keeps the usable addresses of list, in order and each once, at
// most config.MaxDNSServers, and says what it dropped.
func check(list []string) Learned {
	var l Learned
	var bad []string
	seen := map[netip.Addr]bool{}
	extra := 0
	for _, s := range list {
		a, err := netip.ParseAddr(s)
		if err != nil {
			bad = append(bad, fmt.Sprintf("%.40q (not an address)", s))
			continue
		}
		a = a.Unmap()
		if why := config.ResolverProblem(a); why != "" {
			bad = append(bad, fmt.Sprintf("%s (%s)", a, why))
			continue
		}
		if seen[a] {
			continue
		}
		seen[a] = true
		if len(l.Servers) == config.MaxDNSServers {
			extra++
			continue
		}
		l.Servers = append(l.Servers, a)
	}
	var parts []string
	if len(bad) > 0 {
		const most = 4
		s := strings.Join(bad[:min(len(bad), most)], ", ")
		if len(bad) > most {
			s += fmt.Sprintf(" and %d more", len(bad)-most)
		}
		parts = append(parts, "ignored "+s)
	}
	if extra > 0 {
		parts = append(parts, fmt.Sprintf("%d more servers than the %d used", extra, config.MaxDNSServers))
	}
	if len(l.Servers) == 0 && len(list) > 0 {
		parts = append(parts, "no usable DNS server left: none learned for this WAN")
	}
	l.Problem = strings.Join(parts, "; ")
	return l
}

// maxStatements bounds the statements read from a dhclient lease file.
const maxStatements = 20000

// dhclientServers returns the DNS servers of the newest lease (the last
// `lease { }` block, and the last `lease6 { }` one) for iface: those of
// `option domain-name-servers` and `option dhcp6.name-servers`. A block
// naming another interface is skipped; one naming none is taken.
func dhclientServers(data []byte, iface string) []string {
	var v4, v6 []string
	var cur *[]string
	var block []string // statements of the current lease block
	depth := 0
	var kind string
	flush := func() {
		if kind == "" {
			return
		}
		ifaceOK, servers := true, []string(nil)
		for _, st := range block {
			f := fields(st)
			switch {
			case len(f) >= 2 && f[0] == "interface":
				ifaceOK = strings.Trim(f[1], `"`) == iface
			case len(f) >= 3 && f[0] == "option" && (f[1] == "domain-name-servers" || f[1] == "dhcp6.name-servers"):
				servers = nil
				for _, v := range f[2:] {
					for _, s := range strings.Split(v, ",") {
						if s = strings.TrimSpace(s); s != "" {
							servers = append(servers, s)
						}
					}
				}
			}
		}
		if ifaceOK {
			cur = &v4
			if kind == "lease6" {
				cur = &v6
			}
			*cur = servers
		}
		kind, block = "", nil
	}
	statements := 0
	for _, st := range splitStatements(data) {
		statements++
		if statements > maxStatements {
			break
		}
		switch {
		case depth == 0 && (st == "lease {" || st == "lease6 {"):
			kind, depth = strings.TrimSuffix(st, " {"), 1
		case strings.HasSuffix(st, "{"):
			depth++ // a nested block (ia-na in lease6)
		case st == "}":
			if depth > 0 {
				depth--
			}
			if depth == 0 {
				flush()
			}
		case depth > 0 && kind != "":
			block = append(block, st)
		}
	}
	return append(v4, v6...)
}

// splitStatements cuts dhclient's syntax into statements: "x y z" ended by
// ';', "lease {" and "}", with # comments and quoted strings respected.
func splitStatements(data []byte) []string {
	var out []string
	var cur strings.Builder
	inQuote, inComment := false, false
	emit := func(s string) {
		if s = strings.Join(strings.Fields(s), " "); s != "" {
			out = append(out, s)
		}
	}
	for _, c := range data {
		switch {
		case inComment:
			if c == '\n' {
				inComment = false
			}
		case inQuote:
			cur.WriteByte(c)
			if c == '"' {
				inQuote = false
			}
		case c == '"':
			inQuote = true
			cur.WriteByte(c)
		case c == '#':
			inComment = true
		case c == ';':
			emit(cur.String())
			cur.Reset()
		case c == '{':
			emit(cur.String() + " {")
			cur.Reset()
		case c == '}':
			emit(cur.String())
			cur.Reset()
			out = append(out, "}")
		default:
			if cur.Len() < 4096 {
				cur.WriteByte(c)
			}
		}
	}
	return out
}

// fields splits a statement into words, a quoted string being one.
func fields(st string) []string {
	var out []string
	for st != "" {
		st = strings.TrimLeft(st, " ")
		if st == "" {
			break
		}
		end := strings.IndexByte(st, ' ')
		if st[0] == '"' {
			if q := strings.IndexByte(st[1:], '"'); q >= 0 {
				end = q + 2
			}
		}
		if end < 0 || end > len(st) {
			end = len(st)
		}
		out = append(out, st[:end])
		st = st[end:]
	}
	return out
}

// networkdServers returns the DNS= servers of a systemd-networkd lease
// (and NetworkManager's internal client's, which share the format).
func networkdServers(data []byte) []string {
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "DNS="); ok {
			out = strings.Fields(v)
		}
	}
	return out
}

// nameserverLines returns the addresses of `nameserver` lines.
func nameserverLines(data []byte) []string {
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" {
			out = append(out, f[1])
		}
	}
	return out
}
