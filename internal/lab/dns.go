package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// DNS in the lab (with [Lab.StartDNS]): an authoritative server for
// [DNSZone] on the internet side, public resolvers beside it, and one
// resolver per ISP that answers its own customers only and resolves
// through the ISP's own upstream, as an ISP's resolver does: when the
// ISP's upstream is cut ([Lab.CutUpstream]) it stops answering; queries to
// it from anywhere but the ISP's link to the router are dropped. Every ISP
// counts the DNS packets its customer link carries to each of the lab's
// resolvers ([Lab.DNSQueriesSeen]), so a test sees which ISP a query took.
const (
	// DNSZone is the zone the authoritative server answers: every name in
	// it has the A record [ServiceAddr], with TTL 0, so a fresh name is
	// never in a cache and every lookup goes all the way.
	DNSZone = "lab.test."
	// AuthDNSAddr is the authoritative server (internet namespace).
	AuthDNSAddr = "203.0.113.153"
	// PublicDNSAddr1 and PublicDNSAddr2 are a public resolver's two
	// addresses (internet namespace), like 1.1.1.1 and 1.0.0.1: it answers
	// anyone.
	PublicDNSAddr1 = "203.0.113.53"
	PublicDNSAddr2 = "203.0.113.54"
)

// ISPDNSAddr returns the address of ISP k's resolver (198.18.k.53), on
// the ISP's loopback.
func ISPDNSAddr(k int) string { return fmt.Sprintf("198.18.%d.53", k) }

// dnsWait bounds waiting for a resolver to answer.
const dnsWait = 10 * time.Second

// StartDNS starts the lab's DNS services (see [DNSZone]). It returns once
// every resolver answers. Call it once, after [New].
func (l *Lab) StartDNS() error {
	if l.dir == "" {
		if err := l.makeDir(); err != nil {
			return err
		}
	}
	if err := l.ipBatch(NSInternet, []string{
		"addr add " + AuthDNSAddr + "/32 dev lo",
		"addr add " + PublicDNSAddr1 + "/32 dev lo",
		"addr add " + PublicDNSAddr2 + "/32 dev lo",
	}); err != nil {
		return err
	}
	if err := l.serveAuthDNS(); err != nil {
		return err
	}
	if _, err := l.startResolver(NSInternet, "public", []string{PublicDNSAddr1, PublicDNSAddr2}); err != nil {
		return err
	}
	for k := 1; k <= l.isps; k++ {
		if err := l.ip(ISPNS(k), "addr", "add", ISPDNSAddr(k)+"/32", "dev", "lo"); err != nil {
			return err
		}
		if err := l.nft(ISPNS(k), l.ispDNSRuleset(k)); err != nil {
			return err
		}
		listen := []string{ISPDNSAddr(k)}
		if l.ipv6 {
			// On the link to the router, as an ISP's router advertises
			// a resolver on the customer's link.
			if err := l.ip(ISPNS(k), "addr", "add", ISPDNSAddr6(k)+"/128", "dev", l.custIface(k), "nodad"); err != nil {
				return err
			}
			listen = append(listen, ISPDNSAddr6(k))
		}
		if _, err := l.startResolver(ISPNS(k), "isp", listen); err != nil {
			return err
		}
	}
	// Each resolver answers, from where it may be asked.
	ctx, cancel := context.WithTimeout(context.Background(), dnsWait)
	defer cancel()
	checks := []struct{ ns, server string }{{NSInternet, PublicDNSAddr1}, {NSInternet, PublicDNSAddr2}}
	for k := 1; k <= l.isps; k++ {
		checks = append(checks, struct{ ns, server string }{ISPNS(k), ISPDNSAddr(k)})
	}
	for _, c := range checks {
		if err := WaitFor(ctx, func() error {
			_, err := l.Lookup(ctx, c.ns, c.server, "start."+DNSZone)
			return err
		}); err != nil {
			return fmt.Errorf("lab: resolver %s in %s: %w", c.server, c.ns, err)
		}
	}
	l.log("lab: DNS up: authoritative %s for %s, public resolver %s and %s, ISP resolvers 198.18.k.53",
		AuthDNSAddr, DNSZone, PublicDNSAddr1, PublicDNSAddr2)
	return nil
}

// serveAuthDNS starts the authoritative server, in this process, on UDP
// and TCP port 53 of AuthDNSAddr in the internet namespace.
func (l *Lab) serveAuthDNS() error {
	addr := net.JoinHostPort(AuthDNSAddr, "53")
	pc, err := l.ListenPacket(NSInternet, "udp4", addr)
	if err != nil {
		return err
	}
	ln, err := l.Listen(NSInternet, "tcp4", addr)
	if err != nil {
		return err
	}
	h := dns.HandlerFunc(answerLabZone)
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		if err := l.track(closerFunc(srv.Shutdown)); err != nil {
			return err
		}
		go srv.ActivateAndServe()
	}
	return nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// answerLabZone answers every A query in DNSZone with ServiceAddr (TTL 0)
// and refuses every other zone.
func answerLabZone(w dns.ResponseWriter, q *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	if len(q.Question) != 1 || !dns.IsSubDomain(DNSZone, q.Question[0].Name) {
		m.Rcode = dns.RcodeRefused
	} else if qq := q.Question[0]; qq.Qtype == dns.TypeA {
		m.Answer = append(m.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 0},
			A:   net.ParseIP(ServiceAddr).To4(),
		})
	}
	w.WriteMsg(m)
}

// startResolver starts a caching resolver (dnsmasq) in ns listening on
// addrs and resolving through the authoritative server.
func (l *Lab) startResolver(ns, kind string, addrs []string) (*Proc, error) {
	base := l.path("dnsmasq-dns-" + ns)
	args := []string{"dnsmasq",
		"--no-daemon",           // foreground, stays root
		"--conf-file=/dev/null", // not /etc/dnsmasq.conf
		"--log-facility=-",      // stderr, not syslog
		"--no-hosts", "--no-resolv", "--no-poll",
		"--pid-file=" + base + ".pid",
		"--bind-interfaces",
		"--server=" + AuthDNSAddr,
		"--no-negcache",
	}
	for _, a := range addrs {
		args = append(args, "--listen-address="+a)
	}
	p, err := l.Start(ns, args...)
	if err != nil {
		return nil, err
	}
	l.log("lab: %s resolver in %s on %s", kind, ns, strings.Join(addrs, ", "))
	return p, nil
}

// ispDNSRuleset is ISP k's DNS table: its resolver answers only queries
// that arrive on its link to the router, and named counters count the DNS
// packets (TCP and UDP, port 53) arriving on that link for each of the
// lab's resolvers (see dnsCounter).
func (l *Lab) ispDNSRuleset(k int) string {
	var b strings.Builder
	b.WriteString("table ip ispdns {\n")
	targets := l.dnsTargets()
	for _, t := range targets {
		fmt.Fprintf(&b, "\tcounter %s {\n\t}\n", dnsCounter(t))
	}
	b.WriteString("\tchain prerouting {\n\t\ttype filter hook prerouting priority -150; policy accept;\n")
	for _, t := range targets {
		fmt.Fprintf(&b, "\t\tiifname %q ip daddr %s meta l4proto { tcp, udp } th dport 53 counter name %q\n",
			l.custIface(k), t, dnsCounter(t))
	}
	b.WriteString("\t}\n")
	fmt.Fprintf(&b, "\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n"+
		"\t\tip daddr %s meta l4proto { tcp, udp } th dport 53 iifname != { %q, \"lo\" } drop\n\t}\n}\n", ISPDNSAddr(k), l.custIface(k))
	return b.String()
}

// dnsTargets are the resolver addresses the ISPs count queries to.
func (l *Lab) dnsTargets() []string {
	t := []string{PublicDNSAddr1, PublicDNSAddr2}
	for k := 1; k <= l.isps; k++ {
		t = append(t, ISPDNSAddr(k))
	}
	return t
}

func dnsCounter(addr string) string { return "dns_" + strings.ReplaceAll(addr, ".", "_") }

// DNSQueriesSeen returns how many DNS packets (TCP and UDP, to port 53)
// for resolver (one of the lab's: [ISPDNSAddr], [PublicDNSAddr1], ...)
// ISP k has received on its link to the router so far.
func (l *Lab) DNSQueriesSeen(k int, resolver string) (uint64, error) {
	if err := l.checkISP(k); err != nil {
		return 0, err
	}
	if !slices.Contains(l.dnsTargets(), resolver) {
		return 0, fmt.Errorf("lab: %s is not one of the lab's resolvers", resolver)
	}
	return l.counter(ISPNS(k), "ispdns", dnsCounter(resolver))
}

// Lookup asks server for the A record of name with dig, from namespace
// ns, once (no retry, 2 s at most, or ctx's deadline if sooner), and
// returns the answer's addresses. A query that gets no answer, or an
// answer without addresses, is an error.
func (l *Lab) Lookup(ctx context.Context, ns, server, name string) ([]string, error) {
	timeout := 2 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	secs := max(int(timeout/time.Second), 1)
	ctx, cancel := context.WithTimeout(ctx, timeout+500*time.Millisecond)
	defer cancel()
	out, err := l.Exec(ctx, ns, "dig", "@"+server, name, "A", "+short", "+tries=1", fmt.Sprintf("+timeout=%d", secs))
	if err != nil {
		return nil, fmt.Errorf("dig @%s %s: %w: %s", server, name, err, strings.TrimSpace(string(out)))
	}
	var addrs []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if a, err := netip.ParseAddr(strings.TrimSpace(line)); err == nil {
			addrs = append(addrs, a.String())
		}
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("dig @%s %s: no address in the answer: %q", server, name, strings.TrimSpace(string(out)))
	}
	return addrs, nil
}

// StartRouterDNS starts a DNS forwarder on the router: a dnsmasq serving
// the LANs on listen (port 53; [LAN1Addr] and [LAN2Addr] when none),
// reading its upstream servers from resolvFile (what multiwan writes) with
// strict-order, as README "DNS" tells users to. The lab kills it on Close.
func (l *Lab) StartRouterDNS(resolvFile string, listen ...string) (*Proc, error) {
	if l.dir == "" {
		if err := l.makeDir(); err != nil {
			return nil, err
		}
	}
	if len(listen) == 0 {
		listen = []string{LAN1Addr, LAN2Addr}
	}
	args := []string{"dnsmasq",
		"--no-daemon", "--conf-file=/dev/null", "--log-facility=-",
		"--no-hosts",
		"--pid-file=" + l.path("dnsmasq-router-"+listen[0]+".pid"),
		"--bind-interfaces",
		"--resolv-file=" + resolvFile,
		"--strict-order",
	}
	for _, a := range listen {
		args = append(args, "--listen-address="+a)
	}
	return l.Start(NSRouter, args...)
}

// SetDHCPDNS makes ISP k's DHCP server hand out servers as its DNS
// servers (option 6; none: no option at all), and makes the router's
// client take a lease with them now: the server restarts with the option,
// the client restarts keeping its lease file (so it asks for its address
// again and gets the new options). It returns when the client's lease
// file lists exactly servers (at most 15 s). Needs [Options].DHCP.
func (l *Lab) SetDHCPDNS(k int, servers ...string) error {
	if err := l.checkISP(k); err != nil {
		return err
	}
	if !l.dhcp {
		return errors.New("lab: SetDHCPDNS needs Options.DHCP")
	}
	l.dyn.Lock()
	defer l.dyn.Unlock()
	st := &l.wans[k]
	if st.deleted {
		return fmt.Errorf("lab: the link to ISP %d is deleted", k)
	}
	st.dns = slices.Clone(servers)
	if err := l.startServer(k); err != nil {
		return err
	}
	if err := l.startClient(k); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), leaseWait)
	defer cancel()
	var last string
	err := WaitFor(ctx, func() error {
		data, err := os.ReadFile(l.clientLeases(k))
		if err != nil {
			return err
		}
		got := leaseDNS(data, l.wanName(k))
		last = strings.Join(got, ",")
		if last != strings.Join(servers, ",") {
			return fmt.Errorf("lease lists DNS %q", last)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("lab: %s's lease: want DNS %v: %w\ndhclient:\n%s", l.wanName(k), servers, err, st.client.Output())
	}
	l.log("lab: %s's lease lists DNS servers %v", l.wanName(k), servers)
	return nil
}

// leaseDNS is what option domain-name-servers of the newest lease says,
// unchecked (the lab hands out bogus servers on purpose).
func leaseDNS(data []byte, iface string) []string {
	var out []string
	for _, block := range strings.Split(string(data), "lease {") {
		if !strings.Contains(block, `interface "`+iface+`"`) {
			continue
		}
		out = nil
		for _, line := range strings.Split(block, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "option domain-name-servers "); ok {
				for _, s := range strings.Split(strings.TrimSuffix(v, ";"), ",") {
					out = append(out, strings.TrimSpace(s))
				}
			}
		}
	}
	return out
}

// LeaseFile returns the file the router's DHCP client for WAN k keeps its
// leases in (dhclient's format), for a config's lease_file.
func (l *Lab) LeaseFile(k int) string { return l.clientLeases(k) }

// dnsOption is the DHCP server's arguments for option 6 (dns-server):
// servers, or with none nothing (with --port=0 dnsmasq sends no DNS server
// of its own).
func dnsOption(servers []string) []string {
	if len(servers) == 0 {
		return nil
	}
	return []string{"--dhcp-option=option:dns-server," + strings.Join(servers, ",")}
}

// rdnssOption is the RA daemon's arguments for RDNSS: dnsmasq puts the
// option6 dns-server addresses into its router advertisements.
func rdnssOption(servers []string) []string {
	if len(servers) == 0 {
		return nil
	}
	var bracketed []string
	for _, s := range servers {
		bracketed = append(bracketed, "["+s+"]")
	}
	return []string{"--dhcp-option=option6:dns-server," + strings.Join(bracketed, ",")}
}

// SetRADNS makes ISP k's router advertisements carry servers as
// recursive DNS servers (RDNSS, RFC 8106; none: no RDNSS option): its RA
// daemon restarts with them, and the router hears them at its next
// solicitation or unsolicited advertisement (within [RAInterval] s). Needs
// [Options].RA.
func (l *Lab) SetRADNS(k int, servers ...string) error {
	if err := l.checkISP(k); err != nil {
		return err
	}
	if !l.ra {
		return errors.New("lab: SetRADNS needs Options.RA")
	}
	for _, s := range servers {
		if a, err := netip.ParseAddr(s); err != nil || !a.Is6() {
			return fmt.Errorf("lab: SetRADNS: %q is not an IPv6 address", s)
		}
	}
	l.dyn.Lock()
	defer l.dyn.Unlock()
	l.wans[k].raDNS = slices.Clone(servers)
	return l.startRAServer(k)
}

// ISPDNSAddr6 returns the IPv6 address of ISP k's resolver
// (2001:db8:k::53, on the ISP's link to the router), for RDNSS.
func ISPDNSAddr6(k int) string { return fmt.Sprintf("2001:db8:%d::53", k) }
