package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/multiwan/multiwan/internal/lab"
)

// Dynamic uplinks: the lab's ISPs hand out the router's
// WAN addresses by DHCP, the daemon learns the gateways (`gateway: auto`)
// from the default routes the DHCP client installs, and follows renumbering
// and links that disappear and come back.

// newDHCPLab builds a lab whose WANs get their IPv4 address and default
// route from the ISPs' DHCP servers; it returns once both have a lease.
func newDHCPLab(t *testing.T, isps int) *lab.Lab {
	t.Helper()
	return lab.NewForTest(t, lab.Options{ISPs: isps, DHCP: true, Logf: t.Logf})
}

// autoWANYAML is the `wans:` entry of ISP k with a learned gateway.
func autoWANYAML(k int, probe string) string {
	return fmt.Sprintf("  - name: isp%d\n    interface: %s\n    gateway: auto\n    probe: %s\n", k, lab.WANIface(k), probe)
}

// dhcpConfig is the failover config (isp1 first) for a DHCP lab, with
// gateways learned and fast probes.
func dhcpConfig(t *testing.T, isps int) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("wans:\n")
	for k := 1; k <= isps; k++ {
		b.WriteString(autoWANYAML(k, fastProbe))
	}
	fmt.Fprintf(&b, "policies:\n%sdefault_policy: failover\ncontrol:\n  socket: %s\n",
		failover12, filepath.Join(t.TempDir(), "mw.sock"))
	return b.String()
}

// wanAddressing returns what the daemon reports for wan: state, address,
// gateway.
func (r *router) wanAddressing(wan string) (state, addr, gw string, err error) {
	out, err := r.cli("status", "--json")
	if err != nil {
		return "", "", "", fmt.Errorf("status: %w: %s", err, out)
	}
	var st statusJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return "", "", "", err
	}
	for _, w := range st.WANs {
		if w.Name == wan {
			return w.State, w.Address, w.Gateway, nil
		}
	}
	return "", "", "", fmt.Errorf("no %s in status", wan)
}

// waitAddressing waits until the daemon reports addr and gw for wan.
func (r *router) waitAddressing(wan, addr, gw string, timeout time.Duration) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := r.lab.WaitFor(ctx, func() error {
		_, a, g, err := r.wanAddressing(wan)
		if err != nil {
			return err
		}
		if a != addr || g != gw {
			return fmt.Errorf("%s: address %q gateway %q", wan, a, g)
		}
		return nil
	})
	if err != nil {
		r.t.Fatalf("waiting for %s to have address %s and gateway %s: %v\n%s", wan, addr, gw, err, r.proc.Output())
	}
}

// tableDefault returns the router's default route in routing table n
// ("" if none).
func tableDefault(l *lab.Lab, n int) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := l.Exec(ctx, lab.NSRouter, "ip", "-4", "route", "show", "table", fmt.Sprint(n), "default")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// viaGateway reports whether route (from tableDefault) goes via gw on dev.
func viaGateway(route, gw, dev string) bool {
	return strings.Contains(route, "default via "+gw+" dev "+dev+" ")
}

// curlSeen is one quick fetch of the service from the client; it returns
// whom the server saw.
func curlSeen(l *lab.Lab) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return l.Curl(ctx, lab.NSClient, service)
}

// dhcpRouter starts the daemon on a DHCP lab and waits until both WANs
// are up with the addresses and gateways the DHCP client got.
func dhcpRouter(t *testing.T, l *lab.Lab) *router {
	t.Helper()
	r := startRouter(t, l, dhcpConfig(t, 2))
	for k := 1; k <= 2; k++ {
		wan := fmt.Sprintf("isp%d", k)
		r.waitState(wan, "up", 5*time.Second)
		addr, gw, err := l.DHCPLease(k)
		if err != nil {
			t.Fatal(err)
		}
		if gw != lab.ISPGateway(k) {
			t.Fatalf("lab: wan%d gateway %s, want %s", k, gw, lab.ISPGateway(k))
		}
		r.waitAddressing(wan, addr, gw, 5*time.Second)
		if route := tableDefault(l, 100+k); !viaGateway(route, gw, lab.WANIface(k)) {
			t.Fatalf("table %d: %q, want default via %s dev %s", 100+k, route, gw, lab.WANIface(k))
		}
	}
	return r
}

// TestDHCPGatewaysLearned: with `gateway: auto` on both WANs the daemon
// takes addresses and gateways from what the DHCP client installed, routes
// LAN traffic by isp1, and fails over to isp2 when isp1's upstream dies.
func TestDHCPGatewaysLearned(t *testing.T) {
	l := newDHCPLab(t, 2)
	r := dhcpRouter(t, l)
	if got := seenFrom(t, l, lab.NSClient, service); got != isp1Seen {
		t.Fatalf("seen from %s, want %s", got, isp1Seen)
	}

	if err := l.CutUpstream(1); err != nil {
		t.Fatal(err)
	}
	eventually(t, l, lab.NSClient, service, isp2Seen, 5*time.Second)
	r.waitState("isp1", "down", 5*time.Second)
	if err := l.RestoreUpstream(1); err != nil {
		t.Fatal(err)
	}
	r.waitState("isp1", "up", 5*time.Second)
	eventually(t, l, lab.NSClient, service, isp1Seen, 5*time.Second)
}

// TestDHCPLeaseChangeFollowed: ISP1 renumbers the router (new address, new
// gateway); within 5 s the daemon reports both, its table for isp1 routes
// via the new gateway, and LAN traffic leaves by isp1 again.
func TestDHCPLeaseChangeFollowed(t *testing.T) {
	l := newDHCPLab(t, 2)
	r := dhcpRouter(t, l)
	if got := seenFrom(t, l, lab.NSClient, service); got != isp1Seen {
		t.Fatalf("seen from %s, want %s", got, isp1Seen)
	}
	const newAddr, newGW = "192.0.2.40", "192.0.2.33"

	start := time.Now()
	if err := l.SetDHCPPool(1, newAddr, newGW); err != nil {
		t.Fatal(err)
	}
	leased := time.Now()
	if addr, gw, err := l.DHCPLease(1); err != nil || addr != newAddr || gw != newGW {
		t.Fatalf("lab lease after SetDHCPPool: %s via %s, %v", addr, gw, err)
	}

	// Each of the three signs that the daemon followed, with the time it
	// was first seen.
	var statusAt, tableAt, trafficAt time.Time
	var last string
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := l.WaitFor(ctx, func() error {
		if statusAt.IsZero() {
			state, a, g, err := r.wanAddressing("isp1")
			if err != nil {
				return err
			}
			if a != newAddr || g != newGW || state != "up" {
				last = fmt.Sprintf("status: isp1 %s address %s gateway %s", state, a, g)
				return fmt.Errorf("%s", last)
			}
			statusAt = time.Now()
		}
		if tableAt.IsZero() {
			if route := tableDefault(l, 101); !viaGateway(route, newGW, "wan1") {
				last = "table 101: " + route
				return fmt.Errorf("%s", last)
			}
			tableAt = time.Now()
		}
		if trafficAt.IsZero() {
			got, err := curlSeen(l)
			if err != nil || got != isp1Seen {
				last = fmt.Sprintf("client seen from %q: %v", got, err)
				return fmt.Errorf("%s", last)
			}
			trafficAt = time.Now()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("daemon did not follow the new lease within 5 s: %v (last: %s)\n%s", err, last, r.proc.Output())
	}
	t.Logf("wan1 renumbered to %s via %s by the lab in %v; after the kernel had the lease the daemon showed it in status after %v, in table 101 after %v, traffic via isp1 worked after %v",
		newAddr, newGW, leased.Sub(start).Round(time.Millisecond), statusAt.Sub(leased).Round(time.Millisecond),
		tableAt.Sub(leased).Round(time.Millisecond), trafficAt.Sub(leased).Round(time.Millisecond))

	// The old route must not linger, and traffic keeps flowing by isp1.
	if route := tableDefault(l, 101); strings.Contains(route, lab.ISPGateway(1)+" ") {
		t.Errorf("table 101 still routes via the old gateway: %q", route)
	}
	if got := seenFrom(t, l, lab.NSClient, service); got != isp1Seen {
		t.Errorf("after renumbering: seen from %s, want %s", got, isp1Seen)
	}
	if r.proc.Exited() {
		t.Fatalf("daemon exited:\n%s", r.proc.Output())
	}
}

// TestLinkRecreatedComesBack: isp2's link is deleted (status down, traffic
// stays on isp1, the daemon keeps running) and created again (isp2 up
// within 10 s, its table's route back, and it carries traffic when isp1
// dies).
func TestLinkRecreatedComesBack(t *testing.T) {
	l := newDHCPLab(t, 2)
	r := dhcpRouter(t, l)

	if err := l.DeleteWANLink(2); err != nil {
		t.Fatal(err)
	}
	r.waitState("isp2", "down", 5*time.Second)
	if got := seenFrom(t, l, lab.NSClient, service); got != isp1Seen {
		t.Errorf("with wan2 gone: seen from %s, want %s", got, isp1Seen)
	}
	if r.proc.Exited() {
		t.Fatalf("daemon exited when wan2 disappeared:\n%s", r.proc.Output())
	}

	mark := len(r.proc.Output())
	start := time.Now()
	if err := l.RecreateWANLink(2); err != nil {
		t.Fatal(err)
	}
	recreated := time.Since(start)
	addr, gw, err := l.DHCPLease(2)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second-time.Since(start))
	defer cancel()
	// The daemon's own verdict first: its health tracker says isp2 is up
	// (the log), and its table for isp2 routes via the learned gateway.
	var healthAt, tableAt time.Duration
	var last string
	if err := l.WaitFor(ctx, func() error {
		if healthAt == 0 {
			if !strings.Contains(r.proc.Output()[mark:], "wan=isp2 from=") ||
				!strings.Contains(lastWANState(r.proc.Output()[mark:], "isp2"), "to=up") {
				last = "isp2 not up in the log: " + lastWANState(r.proc.Output()[mark:], "isp2")
				return fmt.Errorf("%s", last)
			}
			healthAt = time.Since(start)
		}
		if tableAt == 0 {
			if last = tableDefault(l, 102); !viaGateway(last, gw, "wan2") {
				return fmt.Errorf("table 102: %q", last)
			}
			tableAt = time.Since(start)
		}
		return nil
	}); err != nil {
		t.Fatalf("isp2 not back within 10 s: %v (last: %s)\n%s", err, last, r.proc.Output())
	}
	// Then the contract: status says up.
	var state string
	if err := l.WaitFor(ctx, func() error {
		state, _, _, err = r.wanAddressing("isp2")
		if err == nil && state != "up" {
			err = fmt.Errorf("status: isp2 %s", state)
		}
		return err
	}); err != nil {
		t.Errorf("status --json: isp2 is %q 10 s after the link came back, although the daemon logged %q %v after RecreateWANLink began",
			state, lastWANState(r.proc.Output()[mark:], "isp2"), healthAt.Round(time.Millisecond))
	}
	t.Logf("wan2 recreated (lease %s via %s) by the lab in %v; the daemon had isp2 up after %v, table 102 routed after %v, status %q after %v",
		addr, gw, recreated.Round(time.Millisecond), healthAt.Round(time.Millisecond), tableAt.Round(time.Millisecond),
		state, time.Since(start).Round(time.Millisecond))
	r.waitAddressing("isp2", addr, gw, 5*time.Second)

	// isp2 really works again: it takes over when isp1 dies.
	if err := l.CutUpstream(1); err != nil {
		t.Fatal(err)
	}
	eventually(t, l, lab.NSClient, service, isp2Seen, 5*time.Second)
	r.waitState("isp2", "up", 5*time.Second)
	if r.proc.Exited() {
		t.Fatalf("daemon exited:\n%s", r.proc.Output())
	}
}

// lastWANState returns the last "wan state" log line of wan in log.
func lastWANState(log, wan string) string {
	lines := strings.Split(log, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], `msg="wan state" wan=`+wan+" ") {
			line := lines[i]
			if j := strings.Index(line, "from="); j >= 0 {
				line = line[j:]
			}
			return line
		}
	}
	return ""
}

// TestDHCPBothChangeAtOnce: both uplinks renumbered at the same moment (the
// race seed 003 fought with locks in pppd scripts): the daemon ends with
// both new gateways in their tables and both WANs up.
func TestDHCPBothChangeAtOnce(t *testing.T) {
	l := newDHCPLab(t, 2)
	r := dhcpRouter(t, l)
	want := map[int][2]string{1: {"192.0.2.41", "192.0.2.34"}, 2: {"192.0.2.105", "192.0.2.98"}}
	errs := make(chan error, 2)
	for k, v := range want {
		go func() { errs <- l.SetDHCPPool(k, v[0], v[1]) }()
	}
	for range want {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range want {
		r.waitAddressing(fmt.Sprintf("isp%d", k), v[0], v[1], 5*time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := l.WaitFor(ctx, func() error {
			if route := tableDefault(l, 100+k); !viaGateway(route, v[1], lab.WANIface(k)) {
				return fmt.Errorf("table %d: %s", 100+k, route)
			}
			return nil
		})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	r.waitState("isp1", "up", 5*time.Second)
	r.waitState("isp2", "up", 5*time.Second)
	eventually(t, l, lab.NSClient, service, isp1Seen, 5*time.Second)
}

// TestLinkRenamed: a WAN interface renamed away (a USB modem re-enumerated)
// is a WAN that is down; renamed back, it is picked up again by name.
func TestLinkRenamed(t *testing.T) {
	l := newDHCPLab(t, 2)
	r := dhcpRouter(t, l)
	if err := l.RenameWANLink(1, "wan1old"); err != nil {
		t.Fatal(err)
	}
	r.waitState("isp1", "down", 5*time.Second)
	eventually(t, l, lab.NSClient, service, isp2Seen, 5*time.Second)
	if err := l.RenameWANLink(1, lab.WANIface(1)); err != nil {
		t.Fatal(err)
	}
	r.waitState("isp1", "up", 10*time.Second)
	eventually(t, l, lab.NSClient, service, isp1Seen, 5*time.Second)
	if r.proc.Exited() {
		t.Fatalf("daemon exited:\n%s", r.proc.Output())
	}
}
