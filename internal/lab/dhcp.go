package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Bounds of the DHCP machinery's waits.
const (
	leaseWait  = 15 * time.Second // for the router to hold a (new) lease
	serverWait = 5 * time.Second  // for dnsmasq to listen
)

// dhcpPool is what ISP k's DHCP server hands out: an address from first to
// last, with gateway as the router.
type dhcpPool struct{ first, last, gateway string }

// wanState is the lab's book-keeping of one WAN link. Guarded by Lab.dyn.
type wanState struct {
	ispAddrs []string // the ISP's IPv4 addresses on cust, primary first
	pool     dhcpPool
	server   *Proc    // dnsmasq in the ISP's namespace (DHCP only)
	client   *Proc    // dhclient in the router's namespace (DHCP only)
	ra       *Proc    // RA dnsmasq in the ISP's namespace (RA only)
	dns      []string // DNS servers the DHCP server hands out (SetDHCPDNS); none: no option
	raDNS    []string // IPv6 DNS servers the RA daemon advertises (SetRADNS); none: no RDNSS
	deleted  bool     // by DeleteWANLink
}

// dhclientScript is the only thing dhclient runs (-sf). Like the distro's
// dhclient-script it sets the interface's address and a default route in
// the main table, and nothing else: no resolv.conf, no hooks, no NTP. The
// route's metric comes from LAB_METRIC (dhclient -e).
const dhclientScript = `#!/bin/sh
# dhclient script of the multiwan test lab: address and default route only.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
metric=${LAB_METRIC:-100}

masklen() {
	n=0
	for o in $(echo "$1" | tr . ' '); do
		case $o in
		255) n=$((n + 8)) ;; 254) n=$((n + 7)) ;; 252) n=$((n + 6)) ;;
		248) n=$((n + 5)) ;; 240) n=$((n + 4)) ;; 224) n=$((n + 3)) ;;
		192) n=$((n + 2)) ;; 128) n=$((n + 1)) ;;
		esac
	done
	echo $n
}

case $reason in
PREINIT)
	ip link set dev "$interface" up
	;;
BOUND | RENEW | REBIND | REBOOT)
	want="$new_ip_address/$(masklen "$new_subnet_mask")"
	have=$(ip -4 -o addr show dev "$interface")
	if [ "$(echo "$have" | grep -c ' inet ')" != 1 ] || ! echo "$have" | grep -q " inet $want "; then
		ip -4 addr flush dev "$interface"
		ip -4 addr add "$want" brd + dev "$interface" || exit 1
	fi
	set -- $new_routers
	if [ -n "$1" ]; then
		ip -4 route replace default via "$1" dev "$interface" metric "$metric" || exit 1
	fi
	echo "lab dhclient-script: $reason $interface $want via ${1:-none} metric $metric" >&2
	;;
EXPIRE | FAIL | RELEASE | STOP)
	ip -4 route del default dev "$interface" metric "$metric" 2>/dev/null
	ip -4 addr flush dev "$interface"
	echo "lab dhclient-script: $reason $interface: address and route removed" >&2
	;;
TIMEOUT)
	# No server answered; do not fall back to an old lease.
	exit 1
	;;
esac
exit 0
`

// dhclientConf is dhclient's whole configuration (-cf), so that nothing of
// the host's /etc/dhcp is read. The servers are local, so retries are fast.
const dhclientConf = `# dhclient configuration of the multiwan test lab.
initial-interval 1;
backoff-cutoff 2;
timeout 30;
retry 2;
request subnet-mask, broadcast-address, routers, domain-name-servers;
`

func (l *Lab) path(name string) string { return filepath.Join(l.dir, name) }

// startDHCP starts every ISP's DHCP server and the router's DHCP clients
// and waits until every WAN has its lease.
func (l *Lab) startDHCP() error {
	l.dyn.Lock()
	defer l.dyn.Unlock()
	if err := os.WriteFile(l.path("dhclient-script"), []byte(dhclientScript), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(l.path("dhclient.conf"), []byte(dhclientConf), 0o600); err != nil {
		return err
	}
	for k := 1; k <= l.isps; k++ {
		if err := l.startServer(k); err != nil {
			return err
		}
	}
	for k := 1; k <= l.isps; k++ {
		if err := l.startClient(k); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), leaseWait)
	defer cancel()
	for k := 1; k <= l.isps; k++ {
		if err := l.waitLease(ctx, k); err != nil {
			return err
		}
	}
	return nil
}

// startServer (re)starts ISP k's dnsmasq with the current pool and a fresh
// lease database, and waits until it listens. dyn must be held.
func (l *Lab) startServer(k int) error {
	st := &l.wans[k]
	l.stopServer(k)
	leases := l.path(fmt.Sprintf("dnsmasq-%s.leases", ISPNS(k)))
	if err := os.Remove(leases); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	args := []string{"dnsmasq",
		"--no-daemon",           // foreground, no pid file, stays root
		"--conf-file=/dev/null", // not /etc/dnsmasq.conf
		"--port=0",              // no DNS
		"--log-facility=-",      // stderr, not syslog
		"--no-hosts", "--no-resolv", "--no-poll",
		"--pid-file=" + l.path(fmt.Sprintf("dnsmasq-%s.pid", ISPNS(k))),
		"--dhcp-leasefile=" + leases,
		"--bind-interfaces", "--interface=cust",
		fmt.Sprintf("--dhcp-range=%s,%s,255.255.255.192,%dm", st.pool.first, st.pool.last, int(DHCPLeaseTime/time.Minute)),
		"--dhcp-option=option:router," + st.pool.gateway,
		"--dhcp-authoritative", // NAK leases it does not know at once
		"--no-ping",            // offer at once, do not ping the address first
	}
	p, err := l.Start(ISPNS(k), append(args, dnsOption(st.dns)...)...)
	if err != nil {
		return err
	}
	st.server = p
	ctx, cancel := context.WithTimeout(context.Background(), serverWait)
	defer cancel()
	err = WaitFor(ctx, func() error {
		// dnsmasq logs its DHCP setup once its sockets exist.
		if out := p.Output(); strings.Contains(out, "DHCP, sockets bound exclusively to interface cust") ||
			strings.Contains(out, "DHCP, IP range") {
			return nil
		}
		if p.Exited() {
			return errors.New("dnsmasq exited")
		}
		return errors.New("dnsmasq not listening yet")
	})
	if err != nil {
		return fmt.Errorf("lab: DHCP server of %s: %w\n%s", ISPNS(k), err, p.Output())
	}
	return nil
}

func (l *Lab) stopServer(k int) {
	if st := &l.wans[k]; st.server != nil {
		st.server.Kill()
		st.server = nil
	}
}

// startClient (re)starts the router's dhclient for WAN k on the
// interface's current name. It keeps its lease file, like a real client
// that asks for its old address first. dyn must be held.
func (l *Lab) startClient(k int) error {
	st := &l.wans[k]
	l.stopClient(k)
	p, err := l.Start(NSRouter, "dhclient", "-4", "-d", "-v",
		"-sf", l.path("dhclient-script"),
		"-cf", l.path("dhclient.conf"),
		"-lf", l.clientLeases(k),
		"-pf", l.path(fmt.Sprintf("dhclient-%s.pid", WANIface(k))),
		"-e", "LAB_METRIC="+strconv.Itoa(100+k),
		l.wanName(k))
	if err != nil {
		return err
	}
	st.client = p
	return nil
}

func (l *Lab) clientLeases(k int) string {
	return l.path(fmt.Sprintf("dhclient-%s.leases", WANIface(k)))
}

// stopClient kills the router's dhclient for WAN k, without a release:
// the address and route it set stay until someone changes them.
func (l *Lab) stopClient(k int) {
	if st := &l.wans[k]; st.client != nil {
		st.client.Kill()
		st.client = nil
	}
}

// waitLease waits until the router holds a lease from ISP k's current
// pool: an address in it and its gateway as default route. Then it points
// the ISP's port forwards at that address. dyn must be held.
func (l *Lab) waitLease(ctx context.Context, k int) error {
	st := &l.wans[k]
	first, last := netip.MustParseAddr(st.pool.first), netip.MustParseAddr(st.pool.last)
	var addr string
	err := WaitFor(ctx, func() error {
		a, gw, err := l.DHCPLease(k)
		if err != nil {
			if st.client != nil && st.client.Exited() {
				return fmt.Errorf("dhclient exited: %w", err)
			}
			return err
		}
		ip, err := netip.ParseAddr(a)
		if err != nil {
			return err
		}
		if ip.Less(first) || last.Less(ip) || gw != st.pool.gateway {
			return fmt.Errorf("%s has %s via %s, want %s-%s via %s", l.wanName(k), a, gw,
				st.pool.first, st.pool.last, st.pool.gateway)
		}
		addr = a
		return nil
	})
	if err != nil {
		out := ""
		if st.client != nil {
			out = "\ndhclient:\n" + st.client.Output()
		}
		if st.server != nil {
			out += "\ndnsmasq:\n" + st.server.Output()
		}
		return fmt.Errorf("lab: no DHCP lease on %s: %w%s", l.wanName(k), err, out)
	}
	l.log("lab: %s has DHCP lease %s via %s", l.wanName(k), addr, st.pool.gateway)
	return l.retargetForwards(k, addr)
}

// DHCPLease returns what the router currently has on its interface to ISP
// k, read from the kernel: its IPv4 address and the gateway of its default
// route in the main table (the lowest metric). It is an error if either is
// missing. It works for static labs too (which have no default route).
func (l *Lab) DHCPLease(k int) (addr, gateway string, err error) {
	if err := l.checkISP(k); err != nil {
		return "", "", err
	}
	name := l.wanName(k)
	out, err := l.ipOut(NSRouter, "-j", "-4", "addr", "show", "dev", name)
	if err != nil {
		return "", "", err
	}
	var links []struct {
		AddrInfo []struct {
			Family string `json:"family"`
			Local  string `json:"local"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		return "", "", fmt.Errorf("lab: ip -j addr show dev %s: %w", name, err)
	}
	for _, ln := range links {
		for _, a := range ln.AddrInfo {
			if a.Family == "inet" && addr == "" {
				addr = a.Local
			}
		}
	}
	out, err = l.ipOut(NSRouter, "-j", "-4", "route", "show", "table", "main", "default", "dev", name)
	if err != nil {
		return addr, "", err
	}
	var routes []struct {
		Dst     string `json:"dst"`
		Gateway string `json:"gateway"`
		Metric  int    `json:"metric"`
	}
	if err := json.Unmarshal(out, &routes); err != nil {
		return addr, "", fmt.Errorf("lab: ip -j route show default dev %s: %w", name, err)
	}
	best := -1
	for _, r := range routes {
		if r.Dst == "default" && r.Gateway != "" && (best < 0 || r.Metric < best) {
			gateway, best = r.Gateway, r.Metric
		}
	}
	switch {
	case addr == "":
		return "", gateway, fmt.Errorf("lab: %s has no IPv4 address", name)
	case gateway == "":
		return addr, "", fmt.Errorf("lab: %s has no default route in the main table", name)
	}
	return addr, gateway, nil
}

// SetDHCPPool makes ISP k's DHCP server hand out exactly addr with gateway
// as the router, and makes the router's client take that lease now, the
// way an ISP renumbers a customer: the ISP's link gets gateway as an
// additional address (the old ones stay), its DHCP server restarts with a
// one-address pool and a fresh lease database, and the router's dhclient
// restarts without its old lease, so it asks for a new one; until that is
// bound the old address and route stay, then the script replaces them. It
// returns when the router holds the new lease (at most 15 s). Both
// addresses must be inside [WANSubnet](k) (e.g. 192.0.2.40+64(k-1) and
// 192.0.2.33+64(k-1)). The ISP's port forwards follow the new address.
func (l *Lab) SetDHCPPool(k int, addr, gateway string) error {
	if err := l.checkISP(k); err != nil {
		return err
	}
	if !l.dhcp {
		return errors.New("lab: SetDHCPPool needs Options.DHCP")
	}
	l.dyn.Lock()
	defer l.dyn.Unlock()
	st := &l.wans[k]
	if st.deleted {
		return fmt.Errorf("lab: the link to ISP %d is deleted", k)
	}
	subnet := netip.MustParsePrefix(WANSubnet(k))
	a, err1 := netip.ParseAddr(addr)
	g, err2 := netip.ParseAddr(gateway)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("lab: SetDHCPPool: %w", err)
	}
	for _, ip := range []netip.Addr{a, g} {
		last := subnet.Addr().As4()
		last[3] |= 63
		if !subnet.Contains(ip) || ip == subnet.Addr() || ip == netip.AddrFrom4(last) {
			return fmt.Errorf("lab: SetDHCPPool: %s is not a host address of %s", ip, subnet)
		}
	}
	if a == g {
		return fmt.Errorf("lab: SetDHCPPool: address and gateway are both %s", a)
	}
	for _, own := range st.ispAddrs {
		if own == a.String() {
			return fmt.Errorf("lab: SetDHCPPool: %s belongs to ISP %d", a, k)
		}
	}
	addr, gateway = a.String(), g.String()

	known := false
	for _, own := range st.ispAddrs {
		known = known || own == gateway
	}
	if !known {
		if err := l.ip(ISPNS(k), "addr", "add", gateway+"/26", "dev", "cust"); err != nil {
			return err
		}
		st.ispAddrs = append(st.ispAddrs, gateway)
	}
	st.pool = dhcpPool{first: addr, last: addr, gateway: gateway}
	if err := l.startServer(k); err != nil {
		return err
	}
	l.stopClient(k)
	if err := os.Remove(l.clientLeases(k)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := l.startClient(k); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), leaseWait)
	defer cancel()
	return l.waitLease(ctx, k)
}
