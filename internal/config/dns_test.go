package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestDNSConfig(t *testing.T) {
	cfg, err := Parse("t.yaml", []byte(`wans:
  - name: isp1
    interface: wan1
    gateway: 192.0.2.1
    dns: [192.0.2.53, 192.0.2.54]
  - name: isp2
    interface: wan2
    gateway: auto
    gateway6: auto
    dns: [auto, "2001:db8:2::53"]
    lease_file: /var/lib/dhcp/dhclient.wan2.leases
  - name: isp3
    interface: wan3
    gateway: auto
    dns: auto
policies: [{name: p, members: [{wan: isp1}, {wan: isp2}, {wan: isp3}]}]
default_policy: p
resolv_file: /run/dnsmasq/multiwan.conf
`))
	if err != nil {
		t.Fatal(err)
	}
	w1, w2, w3 := cfg.WANs[0], cfg.WANs[1], cfg.WANs[2]
	if !reflect.DeepEqual(w1.DNS, []netip.Addr{netip.MustParseAddr("192.0.2.53"), netip.MustParseAddr("192.0.2.54")}) || w1.DNSAuto {
		t.Errorf("isp1: %v auto %v", w1.DNS, w1.DNSAuto)
	}
	if !w2.DNSAuto || w2.DNSAutoAt != 0 || len(w2.DNS) != 1 || w2.LeaseFile != "/var/lib/dhcp/dhclient.wan2.leases" {
		t.Errorf("isp2: %+v", w2)
	}
	if !w3.DNSAuto || len(w3.DNS) != 0 || w3.LeaseFile != "" {
		t.Errorf("isp3: %+v", w3)
	}
	if cfg.ResolvFile != "/run/dnsmasq/multiwan.conf" || !cfg.HasDNS() {
		t.Errorf("resolv_file %q", cfg.ResolvFile)
	}

	cfg, err = Parse("t.yaml", []byte(`wans: [{name: a, interface: eth0, gateway: 192.0.2.1, dns: [192.0.2.53, auto]}]
policies: [{name: p, members: [{wan: a}]}]
default_policy: p
`))
	if err != nil {
		t.Fatal(err)
	}
	if w := cfg.WANs[0]; !w.DNSAuto || w.DNSAutoAt != 1 || cfg.ResolvFile != DefaultResolvFile {
		t.Errorf("auto after a static resolver: %+v, resolv_file %q", w, cfg.ResolvFile)
	}
}

func TestDNSErrors(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"bogus resolvers", `wans:
  - name: a
    interface: eth0
    gateway: 192.0.2.1
    dns: [0.0.0.0, 127.0.0.53, 224.0.0.1, 169.254.1.1, "fe80::1", "::1", 255.255.255.255, 192.0.2.53, 192.0.2.53, "2001:db8::53", dns.example, auto, auto]
policies: [{name: p, members: [{wan: a}]}]
default_policy: p
`, []string{
			"t.yaml:5:11: dns: 0.0.0.0 is the unspecified address (this host)",
			"t.yaml:5:20: dns: 127.0.0.53 is a loopback address (the router itself: its forwarder would query itself)",
			"t.yaml:5:32: dns: 224.0.0.1 is a multicast address",
			"t.yaml:5:43: dns: 169.254.1.1 is link-local (it needs an interface, and two WANs may have the same one)",
			"t.yaml:5:56: dns: fe80::1 is link-local (it needs an interface, and two WANs may have the same one)",
			"t.yaml:5:67: dns: ::1 is a loopback address (the router itself: its forwarder would query itself)",
			"t.yaml:5:74: dns: 255.255.255.255 is the broadcast address",
			"t.yaml:5:103: dns: duplicate resolver 192.0.2.53",
			"t.yaml:5:115: dns: 2001:db8::53 is an IPv6 resolver, but the WAN carries no IPv6 (set gateway6): its queries could not be pinned to it",
			`t.yaml:5:131: dns: expected a resolver address or auto, got "dns.example"`,
			"t.yaml:5:150: dns: auto is listed twice",
		}},
		{"empty list and stray lease_file", `wans:
  - {name: a, interface: eth0, gateway: 192.0.2.1, dns: []}
  - {name: b, interface: eth1, gateway: 192.0.2.65, dns: [192.0.2.53], lease_file: /var/lib/dhcp/x.leases}
  - {name: c, interface: eth2, gateway: 192.0.2.129, lease_file: relative.leases}
  - {name: d, interface: eth3, gateway: 192.0.2.193, dns: auto, lease_file: /var/lib/../x}
policies: [{name: p, members: [{wan: a}]}]
default_policy: p
`, []string{
			"t.yaml:2:57: dns: empty list; leave dns out for none, or write auto to learn them",
			"t.yaml:3:84: lease_file: only read with dns: auto (this WAN's resolvers are configured)",
			`t.yaml:4:66: lease_file: "relative.leases" is not an absolute path`,
			`t.yaml:5:77: lease_file: "/var/lib/../x" is not a clean path; did you mean "/var/x"?`,
		}},
		{"one resolver, two WANs", `wans:
  - {name: a, interface: eth0, gateway: 192.0.2.1, dns: [203.0.113.53]}
  - {name: b, interface: eth1, gateway: 192.0.2.65, dns: [192.0.2.53, 203.0.113.53]}
policies: [{name: p, members: [{wan: a}]}]
default_policy: p
`, []string{
			`t.yaml:3:71: dns: 203.0.113.53 is already a resolver of WAN "a" (2:58): queries to an address can be pinned to one WAN only; use another address of that service`,
		}},
		{"resolv_file", `wans: [{name: a, interface: eth0, gateway: 192.0.2.1, dns: auto, lease_file: /run/x/resolv.conf}]
policies: [{name: p, members: [{wan: a}]}]
default_policy: p
resolv_file: /run/x/resolv.conf
`, []string{
			`t.yaml:4:14: resolv_file: /run/x/resolv.conf is WAN "a"'s lease_file: multiwan would read back what it wrote`,
		}},
		{"resolv_file a directory", `wans: [{name: a, interface: eth0, gateway: 192.0.2.1}]
policies: [{name: p, members: [{wan: a}]}]
default_policy: p
resolv_file: ` + dir + `
`, []string{
			"t.yaml:4:14: resolv_file: " + dir + " is a directory; name the file multiwan writes, e.g. " + dir + "/resolv.conf",
		}},
		{"resolv_file under a file", `wans: [{name: a, interface: eth0, gateway: 192.0.2.1}]
policies: [{name: p, members: [{wan: a}]}]
default_policy: p
resolv_file: ` + notDir + `/resolv.conf
`, []string{
			"t.yaml:4:14: resolv_file: cannot use " + notDir + "/resolv.conf: stat " + notDir + "/resolv.conf: not a directory",
		}},
		{"too many", `wans: [{name: a, interface: eth0, gateway: 192.0.2.1, dns: [192.0.2.51, 192.0.2.52, 192.0.2.53, 192.0.2.54, 192.0.2.55, 192.0.2.56, 192.0.2.57, 192.0.2.58, 192.0.2.59]}]
policies: [{name: p, members: [{wan: a}]}]
default_policy: p
`, []string{
			"t.yaml:1:157: dns: at most 8 resolvers per WAN",
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(c.yaml))
			list, _ := err.(ErrorList)
			if got := list.Lines(); !reflect.DeepEqual(got, c.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
		})
	}
}

func TestResolverProblem(t *testing.T) {
	for s, bad := range map[string]bool{
		"192.0.2.53": false, "2001:db8::53": false, "10.0.0.1": false, "::ffff:192.0.2.1": false,
		"0.0.0.0": true, "::": true, "127.0.0.1": true, "::1": true, "240.0.0.1": true, "ff02::1": true,
		"169.254.0.1": true, "fe80::1": true,
	} {
		if got := ResolverProblem(netip.MustParseAddr(s)) != ""; got != bad {
			t.Errorf("ResolverProblem(%s) bad = %v, want %v", s, got, bad)
		}
	}
}
