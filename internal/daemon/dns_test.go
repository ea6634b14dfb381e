package daemon

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/multiwan/multiwan/internal/plan"
)

// TestResolverList: the daemon keeps resolv_file current: the usable WANs'
// resolvers first, a learned resolver followed from its lease (a change is
// a new plan, pinned), bogus leases said in status notes, never an empty
// file; every change logged as an event and told to the hooks.
func TestResolverList(t *testing.T) {
	dir := t.TempDir()
	lease := filepath.Join(dir, "dhclient.wan2.leases")
	resolvFile := filepath.Join(dir, "run", "resolv.conf")
	writeLease := func(servers string) {
		t.Helper()
		data := "lease {\n  interface \"wan2\";\n  option domain-name-servers " + servers + ";\n}\n"
		tmp := lease + ".new"
		if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, lease); err != nil {
			t.Fatal(err)
		}
	}
	writeLease("198.18.2.53")
	cfg := `wans:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, probe: {targets: [203.0.113.20], down: 3, up: 3}, dns: [198.18.1.53]}
  - {name: isp2, interface: wan2, gateway: 192.0.2.65, probe: {targets: [203.0.113.20], down: 3, up: 3}, dns: auto, lease_file: ` + lease + `}
policies:
  - name: failover
    members: [{wan: isp1, tier: 1}, {wan: isp2, tier: 2}]
default_policy: failover
hooks: [/bin/true]
resolv_file: ` + resolvFile + "\n"
	h := startHarness(t, cfg, func(h *harness) { h.d.dns.watcher.Interval = 5 * time.Millisecond })
	nameservers := func() string {
		data, _ := os.ReadFile(resolvFile)
		var ns []string
		for _, line := range strings.Split(string(data), "\n") {
			if a, ok := strings.CutPrefix(line, "nameserver "); ok {
				ns = append(ns, a)
			}
		}
		return strings.Join(ns, " ")
	}
	waitFile := func(want string) {
		t.Helper()
		h.waitFor("resolv_file to list "+want, func() bool { return nameservers() == want })
	}
	waitFile("198.18.1.53 198.18.2.53")
	h.rounds("isp1", true, 3)
	h.rounds("isp2", true, 3)
	st, _ := os.Stat(resolvFile)
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v", st.Mode())
	}

	// isp1 dies: its resolver goes last, marked down; its queries fail at
	// once in the kernel.
	h.rounds("isp1", false, 3)
	waitFile("198.18.2.53 198.18.1.53")
	s := h.status()
	if s.DNS == nil || len(s.DNS.Servers) != 2 || s.DNS.Servers[0].WAN != "isp2" || !s.DNS.Servers[0].Usable ||
		s.DNS.Servers[1].Usable || s.DNS.Servers[0].Source != "DHCP lease "+lease || s.DNS.Servers[1].Source != "config" {
		t.Fatalf("status dns %+v", s.DNS)
	}
	h.waitFor("the write to show in status", func() bool { s := h.status(); return s.DNS.Written != nil })
	if !hasElement(h.k.holds(), plan.SetDNS("isp1", 4), "198.18.1.53 : goto "+plan.ChainDNSDown) {
		t.Fatal("isp1's resolver is not failed at once while isp1 is down")
	}
	var dnsHook []string
	h.hooks.mu.Lock()
	for _, ev := range h.hooks.events {
		if ev.Kind == "dns" {
			dnsHook = append(dnsHook, ev.DNS+"|"+ev.DNSUsable+"|"+ev.DNSLinks)
		}
	}
	h.hooks.mu.Unlock()
	if want := []string{"198.18.1.53 198.18.2.53|198.18.1.53 198.18.2.53|wan1=198.18.1.53 wan2=198.18.2.53",
		"198.18.2.53 198.18.1.53|198.18.2.53|wan2=198.18.2.53 wan1=198.18.1.53"}; !slices.Equal(dnsHook, want) {
		t.Fatalf("dns hook events %q, want %q", dnsHook, want)
	}

	// A renewal with a new server: the file and the pinning follow.
	writeLease("198.18.2.54, 198.18.2.55")
	waitFile("198.18.2.54 198.18.2.55 198.18.1.53")
	if !hasElement(h.k.holds(), plan.SetDNS("isp2", 4), "198.18.2.55") {
		t.Fatal("the learned resolver is not pinned to isp2")
	}
	h.consistent("after the renewal")

	// A lease with only bogus servers: a note, and the file still lists
	// isp1's resolver rather than nothing.
	writeLease("0.0.0.0, 127.0.0.1")
	waitFile("198.18.1.53")
	h.waitFor("the note", func() bool {
		d := h.status().Daemon
		return d != nil && slices.ContainsFunc(d.Notes, func(n string) bool {
			return strings.Contains(n, "isp2: dns: DHCP lease "+lease+": ignored 0.0.0.0") && strings.Contains(n, "no usable DNS server left")
		})
	})
	var kinds []string
	for _, ev := range h.status().Events {
		if ev.Kind == "dns" {
			kinds = append(kinds, ev.To)
		}
	}
	if len(kinds) != 4 || kinds[3] != "198.18.1.53 (isp1, down)" {
		t.Fatalf("dns events %q", kinds)
	}
	h.consistent("end")
}

// TestNoDNSNoFile: without dns: on any WAN, nothing is written and
// status has no dns part.
func TestNoDNSNoFile(t *testing.T) {
	h := startHarness(t, testConfig)
	if h.status().DNS != nil {
		t.Fatal("status has dns without any dns:")
	}
	var list []plan.Resolver
	h.onLoop(func() { list = h.d.dns.list })
	if list != nil {
		t.Fatal("a resolver list without dns:")
	}
}

// hasElement reports whether set holds the element key, or "key : value".
func hasElement(d *plan.Desired, set, key string) bool {
	for _, s := range d.Table.Sets {
		if s.Name == set && slices.ContainsFunc(s.Elements, func(e plan.Element) bool { return e.Key == key || e.String() == key }) {
			return true
		}
	}
	return false
}
