package lab

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestTunOptions needs no privileges: the combinations New refuses before
// it creates anything.
func TestTunOptions(t *testing.T) {
	for _, o := range []Options{
		{P2PISP: 3},
		{ISPs: 3, P2PISP: 4},
		{P2PISP: -1},
		{P2PISP: 1, DHCP: true},
		{P2PISP: 2, IPv6: true},
		{P2PISP: 1, IPv6: true, RA: true},
	} {
		if l, err := New(o); err == nil {
			l.Close()
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

// tunFDs counts this process's open files on /dev/net/tun.
func tunFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && target == "/dev/net/tun" {
			n++
		}
	}
	return n
}

// hostHasLink reports whether the host's own namespace (this process's)
// has an interface called name.
func hostHasLink(t *testing.T, name string) bool {
	t.Helper()
	return exec.Command("ip", "link", "show", "dev", name).Run() == nil
}

// tunLinkInfo is what "ip -d -j link show" says about a tun device.
type tunLinkInfo struct {
	Flags    []string `json:"flags"`
	LinkType string   `json:"link_type"`
	Info     struct {
		Kind string `json:"info_kind"`
		Data struct {
			Type string `json:"type"`
			PI   bool   `json:"pi"`
		} `json:"info_data"`
	} `json:"linkinfo"`
	Addrs []tunAddr `json:"addr_info"`
}

type tunAddr struct {
	Family    string `json:"family"`
	Local     string `json:"local"`
	Address   string `json:"address"`
	PrefixLen int    `json:"prefixlen"`
}

// inet returns the IPv4 addresses.
func (i tunLinkInfo) inet() []tunAddr {
	var v4 []tunAddr
	for _, a := range i.Addrs {
		if a.Family == "inet" {
			v4 = append(v4, a)
		}
	}
	return v4
}

func tunInfo(t *testing.T, l *Lab, ns, dev string) tunLinkInfo {
	t.Helper()
	var infos []tunLinkInfo
	out := mustExec(t, l, ns, "ip", "-d", "-j", "addr", "show", "dev", dev)
	if err := json.Unmarshal([]byte(out), &infos); err != nil || len(infos) != 1 {
		t.Fatalf("ip -d -j addr show dev %s in %s: %v\n%s", dev, ns, err, out)
	}
	return infos[0]
}

// TestTunWAN: ISP 1's link is a tun pair; it passes traffic both ways, the
// router can reach the internet through it, its faults work, and Close
// removes it.
func TestTunWAN(t *testing.T) {
	requireE2E(t)
	fds := tunFDs(t)
	l, err := New(Options{P2PISP: 1, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })

	// The devices exist in the lab's namespaces only, with point-to-point
	// flags and PPP-like addressing.
	if got := tunFDs(t); got != fds+2 {
		t.Errorf("%d /dev/net/tun files open, want %d", got, fds+2)
	}
	for _, name := range []string{"wan1", "cust1"} {
		if hostHasLink(t, name) {
			t.Fatalf("the host's namespace has a %s", name)
		}
	}
	for _, d := range []struct{ ns, dev, local, peer string }{
		{NSRouter, "wan1", WANAddr(1), ISPGateway(1)},
		{"isp1", "cust1", ISPGateway(1), WANAddr(1)},
	} {
		info := tunInfo(t, l, d.ns, d.dev)
		for _, f := range []string{"POINTOPOINT", "NOARP", "UP", "LOWER_UP"} {
			if !slices.Contains(info.Flags, f) {
				t.Errorf("%s in %s: flags %v, no %s", d.dev, d.ns, info.Flags, f)
			}
		}
		if info.Info.Kind != "tun" || info.Info.Data.Type != "tun" || info.Info.Data.PI || info.LinkType != "none" {
			t.Errorf("%s in %s: %+v, want a tun device without packet information", d.dev, d.ns, info)
		}
		if a := info.inet(); len(a) != 1 || a[0].Local != d.local || a[0].Address != d.peer || a[0].PrefixLen != 32 {
			t.Errorf("%s in %s: IPv4 addresses %+v, want %s peer %s/32", d.dev, d.ns, a, d.local, d.peer)
		}
	}
	if out := mustExec(t, l, "isp1", "ip", "link", "show"); strings.Contains(out, " cust:") {
		t.Errorf("isp1 has a veth too:\n%s", out)
	}
	// The router: the connected peer route, no default route.
	routes := strings.TrimSpace(mustExec(t, l, NSRouter, "ip", "-4", "route", "show", "table", "all", "type", "unicast"))
	for _, line := range strings.Split(routes, "\n") {
		if !strings.Contains(line, "proto kernel") {
			t.Errorf("router has a non-connected route: %q", line)
		}
	}
	if want := ISPGateway(1) + " dev wan1 proto kernel scope link src " + WANAddr(1); !strings.Contains(routes, want) {
		t.Errorf("router routes:\n%s\nwant %q", routes, want)
	}

	t.Run("both ways", func(t *testing.T) {
		if err := l.Ping(ctxFor(t, 3*time.Second), NSRouter, "", ISPGateway(1)); err != nil {
			t.Error(err)
		}
		if err := l.Ping(ctxFor(t, 3*time.Second), "isp1", "", WANAddr(1)); err != nil {
			t.Error(err)
		}
		// The veth ISP is unchanged.
		if err := l.Ping(ctxFor(t, 3*time.Second), NSRouter, "", ISPGateway(2)); err != nil {
			t.Error(err)
		}
	})

	t.Run("internet via the tun link", func(t *testing.T) {
		// What a daemon with `gateway: auto` would do, by hand and for
		// the time of this subtest: default dev wan1, masquerade on it.
		mustExec(t, l, NSRouter, "ip", "route", "add", "default", "dev", "wan1")
		if err := l.nft(NSRouter, `table ip tuntest {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan1" masquerade
	}
}
`); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			mustExec(t, l, NSRouter, "ip", "route", "del", "default", "dev", "wan1")
			mustExec(t, l, NSRouter, "nft", "delete", "table", "ip", "tuntest")
		})
		wantCurl(t, l, NSClient, "http://"+ServiceAddr+"/", ISPPublicAddr(1))
		got, err := l.UDPEcho(ctxFor(t, 3*time.Second), NSClient, "", fmt.Sprintf("%s:%d", ServiceAddr, UDPEchoPort))
		if err != nil || !strings.HasPrefix(got, ISPPublicAddr(1)+":") {
			t.Errorf("udp echo = %q, %v", got, err)
		}
		// Full-sized packets, many of them: 4 MiB through the copier.
		out := mustExec(t, l, NSClient, "curl", "-sS", "--noproxy", "*", "--max-time", "10",
			"-o", "/dev/null", "-w", "%{size_download}", "http://"+ServiceAddr+"/bytes?n=4194304")
		if out != "4194304" {
			t.Errorf("download got %s bytes, want 4194304", out)
		}
		// The ISP's port forward reaches the router through the tun link.
		if _, err := l.ServeWhoami(NSRouter, WANAddr(1)+":8080"); err != nil {
			t.Fatal(err)
		}
		wantCurl(t, l, NSInternet, fmt.Sprintf("http://%s:%d/", ISPPublicAddr(1), FwdTCPPort1), InternetPeerAddr(1))
		// The fault controls act on it like on the others.
		if err := l.CutUpstream(1); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Curl(ctxFor(t, time.Second), NSClient, "http://"+ServiceAddr+"/"); err == nil {
			t.Error("curl via the tun link worked with ISP 1's upstream cut")
		}
		if err := l.RestoreUpstream(1); err != nil {
			t.Fatal(err)
		}
		wantCurl(t, l, NSClient, "http://"+ServiceAddr+"/", ISPPublicAddr(1))
	})

	t.Run("carrier", func(t *testing.T) {
		if err := l.SetLinkDown(1, true); err != nil {
			t.Fatal(err)
		}
		flags, oper, err := l.linkState(NSRouter, "wan1")
		if err != nil || !slices.Contains(flags, "UP") || slices.Contains(flags, "LOWER_UP") || oper != "DOWN" {
			t.Errorf("wan1 without carrier: flags %v state %s, %v", flags, oper, err)
		}
		if err := l.Ping(ctxFor(t, 500*time.Millisecond), NSRouter, "", ISPGateway(1)); err == nil {
			t.Error("ping through wan1 without carrier answered")
		}
		if err := l.SetLinkDown(1, false); err != nil {
			t.Fatal(err)
		}
		if err := l.Ping(ctxFor(t, 3*time.Second), NSRouter, "", ISPGateway(1)); err != nil {
			t.Errorf("carrier back: %v", err)
		}
	})

	t.Run("SetP2PDown", func(t *testing.T) {
		if err := l.SetP2PDown(true); err != nil {
			t.Fatal(err)
		}
		flags, _, err := l.linkState(NSRouter, "wan1")
		if err != nil || slices.Contains(flags, "UP") {
			t.Errorf("wan1 down: flags %v, %v", flags, err)
		}
		if routes := mustExec(t, l, NSRouter, "ip", "-4", "route", "show", "dev", "wan1"); strings.TrimSpace(routes) != "" {
			t.Errorf("routes through wan1 while down:\n%s", routes)
		}
		if err := l.Ping(ctxFor(t, 500*time.Millisecond), "isp1", "", WANAddr(1)); err == nil {
			t.Error("the router answered through wan1 while it was down")
		}
		if err := l.SetP2PDown(false); err != nil {
			t.Fatal(err)
		}
		if err := l.Ping(ctxFor(t, 3*time.Second), NSRouter, "", ISPGateway(1)); err != nil {
			t.Errorf("wan1 up again: %v", err)
		}
		if addrs := tunInfo(t, l, NSRouter, "wan1").inet(); len(addrs) != 1 || addrs[0].Local != WANAddr(1) {
			t.Errorf("wan1 addresses after down/up: %+v", addrs)
		}
		if err := l.SetP2PDown(true); err != nil { // left down: Close must cope
			t.Fatal(err)
		}
	})

	t.Run("refused", func(t *testing.T) {
		if err := l.DeleteWANLink(1); err == nil {
			t.Error("DeleteWANLink(1) accepted")
		}
		if err := l.RecreateWANLink(1); err == nil {
			t.Error("RecreateWANLink(1) accepted")
		}
		if err := l.RenameWANLink(1, "ppp0"); err == nil {
			t.Error("RenameWANLink(1) accepted")
		}
		if err := l.DeleteWANLink(2); err != nil {
			t.Errorf("DeleteWANLink(2): %v", err)
		} else if err := l.RecreateWANLink(2); err != nil {
			t.Errorf("RecreateWANLink(2): %v", err)
		}
	})

	p := l.tun
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case <-p.done:
	default:
		t.Error("copying goroutines still running after Close")
	}
	if got := tunFDs(t); got != fds {
		t.Errorf("%d /dev/net/tun files open after Close, want %d", got, fds)
	}
	if got := netnsWithPrefix(t, l.Prefix()); len(got) != 0 {
		t.Errorf("namespaces left after Close: %v", got)
	}
	if err := l.SetP2PDown(false); err == nil {
		t.Error("SetP2PDown works after Close")
	}
	if err := l.SetLinkDown(1, true); err == nil {
		t.Error("SetLinkDown works after Close")
	}
	if err := (&Lab{isps: 2}).SetP2PDown(true); err == nil {
		t.Error("SetP2PDown works without a point-to-point ISP")
	}
}
