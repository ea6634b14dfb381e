package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// requireRA is requireE2E plus the router advertisement daemon.
func requireRA(t *testing.T) {
	t.Helper()
	requireE2E(t)
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		t.Fatalf("RA lab tests need dnsmasq: %v", err)
	}
}

// checkRA checks what the router learned from ISP k's router
// advertisements on its interface name: a default route via the ISP's
// link-local address, accept_ra 2, no SLAAC address beside the static one.
// It returns the gateway.
func checkRA(t *testing.T, l *Lab, k int, name string) string {
	t.Helper()
	gw, err := l.RAGateway(k)
	if err != nil {
		t.Fatalf("RAGateway(%d): %v", k, err)
	}
	ll, err := l.ISPLinkLocal6(k)
	if err != nil {
		t.Fatal(err)
	}
	if gw != ll || !strings.HasPrefix(gw, "fe80:") {
		t.Errorf("RAGateway(%d) = %s, want the link-local address of isp%d's end, %s", k, gw, k, ll)
	}
	routes := mustExec(t, l, NSRouter, "ip", "-6", "route", "show", "table", "all", "default")
	if want := "default via " + gw + " dev " + name + " proto ra "; !strings.Contains(routes, want) {
		t.Errorf("router has no %q:\n%s", want, routes)
	}
	for key, want := range map[string]string{"accept_ra": "2", "autoconf": "0", "forwarding": "1"} {
		got := strings.TrimSpace(mustExec(t, l, NSRouter, "sysctl", "-n", "net/ipv6/conf/"+name+"/"+key))
		if got != want {
			t.Errorf("%s %s = %s, want %s", name, key, got, want)
		}
	}
	addrs := mustExec(t, l, NSRouter, "ip", "-6", "-o", "addr", "show", "dev", name, "scope", "global")
	if strings.Count(addrs, "inet6 ") != 1 || !strings.Contains(addrs, " "+WANAddr6(k)+"/64 ") {
		t.Errorf("%s global IPv6 addresses, want only %s/64:\n%s", name, WANAddr6(k), addrs)
	}
	return gw
}

func TestRA(t *testing.T) {
	if _, err := New(Options{RA: true}); err == nil {
		t.Fatal("New accepted RA without IPv6")
	}
	requireRA(t)
	start := time.Now()
	l := NewForTest(t, Options{IPv6: true, RA: true, ISPs: 3})
	t.Logf("lab with RA default routes on 3 WANs up in %v", time.Since(start).Round(time.Millisecond))
	for k := 1; k <= 3; k++ {
		checkRA(t, l, k, WANIface(k))
	}
	if _, err := l.RAGateway(4); err == nil {
		t.Error("RAGateway(4) in a 3-ISP lab")
	}
	// The learned routes work: the router's own IPv6 traffic (main table,
	// no daemon) leaves by one of them and the ISP masquerades it.
	got, err := l.Curl(ctxFor(t, 5*time.Second), NSRouter, "http://["+ServiceAddr6+"]/")
	if err != nil || (got != ISPPublicAddr6(1) && got != ISPPublicAddr6(2) && got != ISPPublicAddr6(3)) {
		t.Errorf("router's IPv6 by the learned routes: seen as %q, %v", got, err)
	}
	// IPv4 is unchanged: still no default route.
	if out := mustExec(t, l, NSRouter, "ip", "-4", "route", "show", "default"); strings.TrimSpace(out) != "" {
		t.Errorf("router has an IPv4 default route:\n%s", out)
	}

	t.Run("delete and recreate", func(t *testing.T) {
		if err := l.DeleteWANLink(3); err != nil {
			t.Fatal(err)
		}
		if gw, err := l.RAGateway(3); err == nil {
			t.Errorf("RAGateway(3) = %s without a link", gw)
		}
		l.dyn.Lock()
		stopped := l.wans[3].ra == nil
		l.dyn.Unlock()
		if !stopped {
			t.Error("isp3's RA daemon still running without its link")
		}
		start := time.Now()
		if err := l.RecreateWANLink(3); err != nil {
			t.Fatal(err)
		}
		t.Logf("wan3 recreated with an RA default route in %v", time.Since(start).Round(time.Millisecond))
		checkRA(t, l, 3, "wan3")
	})

	t.Run("rename", func(t *testing.T) {
		start := time.Now()
		if err := l.RenameWANLink(3, "ppp3"); err != nil {
			t.Fatal(err)
		}
		t.Logf("wan3 renamed, RA default route back in %v", time.Since(start).Round(time.Millisecond))
		checkRA(t, l, 3, "ppp3")
		if err := l.RenameWANLink(3, "wan3"); err != nil {
			t.Fatal(err)
		}
		checkRA(t, l, 3, "wan3")
	})

	t.Run("link down", func(t *testing.T) {
		if err := l.SetLinkDown(2, true); err != nil {
			t.Fatal(err)
		}
		if err := l.SetLinkDown(2, false); err != nil {
			t.Fatal(err)
		}
		// The learned route survives a carrier flap, or comes back with
		// the next advertisement.
		if err := l.WaitFor(ctxFor(t, 25*time.Second), func() error {
			_, err := l.RAGateway(2)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		checkRA(t, l, 2, "wan2")
	})
}

// TestRAClose: with DHCP and RA together, Close kills every daemon (DHCP
// servers and clients, RA daemons) and removes the lab's files.
func TestRAClose(t *testing.T) {
	requireDHCP(t)
	l, err := New(Options{DHCP: true, IPv6: true, RA: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	for k := 1; k <= 2; k++ {
		checkLease(t, l, k, DHCPPoolFirst(k), DHCPPoolLast(k), ISPGateway(k))
		checkRA(t, l, k, WANIface(k))
	}
	// A new DHCP pool restarts the DHCP server, not the RA daemon.
	l.dyn.Lock()
	ra1 := l.wans[1].ra
	l.dyn.Unlock()
	if err := l.SetDHCPPool(1, "192.0.2.40", "192.0.2.33"); err != nil {
		t.Fatal(err)
	}
	l.dyn.Lock()
	same := l.wans[1].ra == ra1 && !ra1.Exited()
	l.dyn.Unlock()
	if !same {
		t.Error("SetDHCPPool restarted isp1's RA daemon")
	}
	checkRA(t, l, 1, "wan1")

	var pids []int
	l.dyn.Lock()
	for k := 1; k <= 2; k++ {
		pids = append(pids, l.wans[k].server.Pid(), l.wans[k].client.Pid(), l.wans[k].ra.Pid())
	}
	l.dyn.Unlock()
	dir := l.dir
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("pid %d still exists after Close (kill 0: %v)", pid, err)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lab directory %s left after Close: %v", dir, err)
	}
	if got := netnsWithPrefix(t, l.Prefix()); len(got) != 0 {
		t.Errorf("namespaces left: %v", got)
	}
}

// TestSignalCleanupRA is TestSignalCleanupDHCP for the RA daemons.
func TestSignalCleanupRA(t *testing.T) {
	requireRA(t)
	signalCleanupDaemons(t, "MULTIWAN_LAB_HELPER_RA=1", 2)
}

// TestRAGatewayErrors needs no privileges.
func TestRAGatewayErrors(t *testing.T) {
	l := &Lab{isps: 2, ipv6: true}
	if _, err := l.RAGateway(1); err == nil || !strings.Contains(err.Error(), "Options.RA") {
		t.Errorf("RAGateway without RA: %v", err)
	}
	if _, err := l.RAGateway(3); err == nil {
		t.Error("RAGateway(3) in a 2-ISP lab")
	}
	if got := fmt.Sprint(raSysctls("eth0.7")); got != "[net/ipv6/conf/eth0.7/accept_ra=2 net/ipv6/conf/eth0.7/autoconf=0]" {
		t.Errorf("raSysctls = %s", got)
	}
}
