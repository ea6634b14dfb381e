package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// Router advertisements (with [Options].RA).
const (
	// RAInterval is the longest interval, in seconds, between the
	// unsolicited router advertisements ISPs send: the minimum of RFC 4861
	// and of dnsmasq, which sends one every 3-4 s with it, but every 5-20 s
	// during its first minute. It also answers the router's solicitations
	// at once, so a router link that comes up learns its route within
	// about a second.
	RAInterval = 4
	// RALifetime is the router lifetime, in seconds, in ISPs' router
	// advertisements: how long the router's learned default route lives
	// without a new advertisement.
	RALifetime = 60

	raWait = 10 * time.Second // for the router to learn a default route
)

// raSysctls are the router's settings for an interface (named name) that
// learns its IPv6 default route from router advertisements: accept them
// although the router forwards (accept_ra=2), and no SLAAC address (the
// static one is all it needs). The "/" form keeps names with dots intact.
func raSysctls(name string) []string {
	return []string{
		"net/ipv6/conf/" + name + "/accept_ra=2",
		"net/ipv6/conf/" + name + "/autoconf=0",
	}
}

// startRAServer (re)starts ISP k's router advertisement daemon (a dnsmasq
// of its own, without DNS or DHCP) on its link to the router. dyn or
// setup must be held.
func (l *Lab) startRAServer(k int) error {
	st := &l.wans[k]
	l.stopRAServer(k)
	base := l.path("dnsmasq-ra-" + ISPNS(k))
	if err := os.Remove(base + ".leases"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	args := []string{"dnsmasq",
		"--no-daemon",           // foreground, stays root
		"--conf-file=/dev/null", // not /etc/dnsmasq.conf
		"--port=0",              // no DNS
		"--log-facility=-",      // stderr, not syslog
		"--no-hosts", "--no-resolv", "--no-poll",
		"--pid-file=" + base + ".pid",
		"--dhcp-leasefile=" + base + ".leases", // never the host's
		"--bind-interfaces", "--interface=cust",
		"--enable-ra",
		// Advertise the prefix of cust's own address (ISPGateway6), RA
		// only, no DHCPv6; the router is the link-local address of cust.
		"--dhcp-range=::,constructor:cust,ra-only",
		"--ra-param=cust," + strconv.Itoa(RAInterval) + "," + strconv.Itoa(RALifetime),
	}
	// With SetRADNS: RDNSS options in the advertisements.
	p, err := l.Start(ISPNS(k), append(args, rdnssOption(st.raDNS)...)...)
	if err != nil {
		return err
	}
	st.ra = p
	return nil
}

// stopRAServer kills ISP k's router advertisement daemon, if running. The
// router's learned route stays until its lifetime ends.
func (l *Lab) stopRAServer(k int) {
	if st := &l.wans[k]; st.ra != nil {
		st.ra.Kill()
		st.ra = nil
	}
}

// waitRA waits until the router has a default route from router
// advertisements through its interface to ISP k. dyn or setup must be
// held.
func (l *Lab) waitRA(ctx context.Context, k int) error {
	st := &l.wans[k]
	var gw string
	err := WaitFor(ctx, func() error {
		var err error
		gw, err = l.RAGateway(k)
		if err != nil && st.ra != nil && st.ra.Exited() {
			return fmt.Errorf("dnsmasq exited: %w", err)
		}
		return err
	})
	if err != nil {
		out := ""
		if st.ra != nil {
			out = "\ndnsmasq (RA):\n" + st.ra.Output()
		}
		if routes, rerr := l.ipOut(NSRouter, "-6", "route", "show", "table", "all"); rerr == nil {
			out += "\nrouter's IPv6 routes:\n" + string(routes)
		}
		return fmt.Errorf("lab: no IPv6 default route from router advertisements on %s: %w%s", l.wanName(k), err, out)
	}
	l.log("lab: %s learned IPv6 default route via %s from router advertisements", l.wanName(k), gw)
	return nil
}

// startRA starts every ISP's router advertisement daemon. Waiting for the
// routes is left to waitAllRA, so that it overlaps other waits.
func (l *Lab) startRA() error {
	l.dyn.Lock()
	defer l.dyn.Unlock()
	for k := 1; k <= l.isps; k++ {
		if err := l.startRAServer(k); err != nil {
			return err
		}
	}
	return nil
}

// waitAllRA waits (at most 10 s in all) until the router has learned an
// IPv6 default route through every WAN.
func (l *Lab) waitAllRA() error {
	l.dyn.Lock()
	defer l.dyn.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), raWait)
	defer cancel()
	for k := 1; k <= l.isps; k++ {
		if err := l.waitRA(ctx, k); err != nil {
			return err
		}
	}
	return nil
}

// RAGateway returns the IPv6 gateway the router learned from ISP k's router
// advertisements: the gateway of a default route through the router's
// interface to ISP k installed by the kernel from an advertisement (proto
// ra, any table), which is the link-local address of the ISP's end of the
// link, without a zone ("fe80::..."). It is an error if there is no such
// route (yet), or if the lab has no [Options].RA.
func (l *Lab) RAGateway(k int) (string, error) {
	if err := l.checkISP(k); err != nil {
		return "", err
	}
	if !l.ra {
		return "", errors.New("lab: RAGateway needs Options.RA")
	}
	name := l.wanName(k)
	// Not filtered by proto: ip leaves the fields it filters on out of
	// its JSON, and the protocol is what tells a learned route.
	out, err := l.ipOut(NSRouter, "-j", "-6", "route", "show", "table", "all", "default", "dev", name)
	if err != nil {
		return "", err
	}
	var routes []struct {
		Dst      string `json:"dst"`
		Gateway  string `json:"gateway"`
		Protocol string `json:"protocol"`
	}
	if err := json.Unmarshal(out, &routes); err != nil {
		return "", fmt.Errorf("lab: ip -j -6 route show default dev %s: %w", name, err)
	}
	for _, r := range routes {
		if r.Dst != "default" || r.Protocol != "ra" || r.Gateway == "" {
			continue
		}
		gw, err := netip.ParseAddr(r.Gateway)
		if err != nil || !gw.Is6() {
			continue
		}
		return gw.WithZone("").String(), nil
	}
	return "", fmt.Errorf("lab: %s has no IPv6 default route from router advertisements", name)
}

// ISPLinkLocal6 returns the link-local IPv6 address of ISP k's end of its
// link to the router ("fe80::...", without a zone): the source of its
// router advertisements, so what [Lab.RAGateway] should return. It changes
// when the link is re-created.
func (l *Lab) ISPLinkLocal6(k int) (string, error) {
	if err := l.checkISP(k); err != nil {
		return "", err
	}
	if !l.ipv6 {
		return "", errors.New("lab: ISPLinkLocal6 needs Options.IPv6")
	}
	out, err := l.ipOut(ISPNS(k), "-j", "-6", "addr", "show", "dev", "cust", "scope", "link")
	if err != nil {
		return "", err
	}
	var links []struct {
		AddrInfo []struct {
			Local string `json:"local"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		return "", fmt.Errorf("lab: ip -j -6 addr show dev cust in %s: %w", ISPNS(k), err)
	}
	for _, ln := range links {
		for _, a := range ln.AddrInfo {
			if strings.HasPrefix(a.Local, "fe80:") {
				return a.Local, nil
			}
		}
	}
	return "", fmt.Errorf("lab: cust in %s has no link-local address", ISPNS(k))
}
