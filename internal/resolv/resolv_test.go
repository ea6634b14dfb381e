package resolv

import (
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/multiwan/multiwan/internal/config"
	"github.com/multiwan/multiwan/internal/plan"
)

// A dhclient lease file as dhclient writes it: an older lease of the same
// interface, one of another interface, then the newest.
const dhclientFile = `default-duid "\000\001\000\001\045\046\047\050";
lease {
  interface "wan1";
  fixed-address 192.0.2.10;
  option subnet-mask 255.255.255.192;
  option routers 192.0.2.1;
  option domain-name-servers 192.0.2.53,192.0.2.54;
  renew 4 2026/01/01 00:01:00;
}
lease {
  interface "wan2";
  fixed-address 192.0.2.74;
  option domain-name-servers 198.51.100.53;
}
lease {
  interface "wan1";
  fixed-address 192.0.2.10;
  option domain-name "example.net"; # a comment; with a semicolon
  option domain-name-servers 192.0.2.55, 192.0.2.56;
  expire 4 2026/01/01 00:02:00;
}
lease6 {
  interface "wan1";
  ia-na 1a:2b:3c:4d {
    starts 1767225600;
    iaaddr 2001:db8:1::10 {
      starts 1767225600;
    }
  }
  option dhcp6.name-servers 2001:db8:1::53;
}
`

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestParseLease(t *testing.T) {
	cases := []struct {
		name, data, iface string
		want              []netip.Addr
		source, problem   string
	}{
		{"dhclient: the newest lease of the interface, and its DHCPv6 one", dhclientFile, "wan1",
			addrs("192.0.2.55", "192.0.2.56", "2001:db8:1::53"), "DHCP lease /l", ""},
		{"dhclient: another interface's block", dhclientFile, "wan2", addrs("198.51.100.53"), "DHCP lease /l", ""},
		{"dhclient: an interface with no lease", dhclientFile, "wan3", nil, "DHCP lease /l",
			"DHCP lease /l lists no DNS servers: none learned for this WAN"},
		{"dhclient: a lease without the option", "lease {\n  interface \"wan1\";\n  option routers 192.0.2.1;\n}\n", "wan1", nil, "DHCP lease /l",
			"DHCP lease /l lists no DNS servers: none learned for this WAN"},
		{"dhclient: bogus servers dropped", "lease {\n option domain-name-servers 0.0.0.0,127.0.0.1,192.0.2.53,224.0.0.1,169.254.9.9,banana,192.0.2.53;\n}\n", "wan1",
			addrs("192.0.2.53"), "DHCP lease /l",
			`DHCP lease /l: ignored 0.0.0.0 (is the unspecified address (this host)), 127.0.0.1 (is a loopback address (the router itself: its forwarder would query itself)), 224.0.0.1 (is a multicast address), 169.254.9.9 (is link-local (it needs an interface, and two WANs may have the same one)) and 1 more`},
		{"dhclient: only bogus servers", "lease {\n option domain-name-servers 0.0.0.0;\n}\n", "wan1", nil, "DHCP lease /l",
			"DHCP lease /l: ignored 0.0.0.0 (is the unspecified address (this host)); no usable DNS server left: none learned for this WAN"},
		{"dhclient: too many", "lease {\n option domain-name-servers 192.0.2.1,192.0.2.2,192.0.2.3,192.0.2.4,192.0.2.5,192.0.2.6,192.0.2.7,192.0.2.8,192.0.2.9,192.0.2.10;\n}\n", "wan1",
			addrs("192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5", "192.0.2.6", "192.0.2.7", "192.0.2.8"), "DHCP lease /l",
			"DHCP lease /l: 2 more servers than the 8 used"},
		{"systemd-networkd", "# This is private data. Do not parse.\nADDRESS=192.0.2.10\nNETMASK=255.255.255.192\nROUTER=192.0.2.1\nDNS=192.0.2.53 2001:db8::53\n", "",
			addrs("192.0.2.53", "2001:db8::53"), "DHCP lease /l", ""},
		{"nameserver lines (pppd usepeerdns)", "nameserver 198.51.100.53\nnameserver 198.51.100.54 # trailing\n", "",
			addrs("198.51.100.53", "198.51.100.54"), "/l", ""},
		{"not a lease", "\x00\x01binary dhcpcd lease", "", nil, "/l",
			"/l is not a lease multiwan can read (dhclient, systemd-networkd or nameserver lines)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := ParseLease("/l", []byte(c.data), c.iface)
			if !slices.Equal(l.Servers, c.want) || l.Source != c.source || l.Problem != c.problem {
				t.Errorf("got %v %q %q\nwant %v %q %q", l.Servers, l.Source, l.Problem, c.want, c.source, c.problem)
			}
		})
	}
}

func TestReadLeaseBounded(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "big.leases")
	// An old lease, then a megabyte of renewals' noise, then the newest:
	// only the tail is read, and the newest lease is in it.
	data := "lease {\n option domain-name-servers 192.0.2.1;\n}\n" +
		strings.Repeat("lease {\n interface \"wan9\";\n option domain-name-servers 192.0.2.9;\n}\n", 20000) +
		"lease {\n interface \"wan1\";\n option domain-name-servers 192.0.2.53;\n}\n"
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := ReadLease(path, "wan1")
	if err != nil || !slices.Equal(l.Servers, addrs("192.0.2.53")) {
		t.Fatalf("got %+v, %v", l, err)
	}
	if _, err := ReadLease(dir, "wan1"); err == nil {
		t.Error("a directory was read as a lease")
	}
}

func TestFinder(t *testing.T) {
	root := t.TempDir()
	write := func(rel, data string, age time.Duration) {
		t.Helper()
		p := root + rel
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		when := time.Now().Add(-age)
		if err := os.Chtimes(p, when, when); err != nil {
			t.Fatal(err)
		}
	}
	f := Finder{Root: root}
	if got := f.Find("wan1", 7); got != "" {
		t.Fatalf("nothing there, found %s", got)
	}
	write("/var/lib/dhcp/dhclient.leases", "", time.Hour)
	if got := f.Find("wan1", 7); got != root+"/var/lib/dhcp/dhclient.leases" {
		t.Fatalf("shared dhclient file: %s", got)
	}
	write("/var/lib/dhcp/dhclient.wan1.leases", "", time.Minute)
	if got := f.Find("wan1", 7); got != root+"/var/lib/dhcp/dhclient.wan1.leases" {
		t.Fatalf("ifupdown's file: %s", got)
	}
	write("/var/lib/NetworkManager/internal-0d5b-wan1.lease", "", 30*time.Second)
	write("/var/lib/NetworkManager/internal-0d5b-wan2.lease", "", 0)
	if got := f.Find("wan1", 7); got != root+"/var/lib/NetworkManager/internal-0d5b-wan1.lease" {
		t.Fatalf("NetworkManager's newer file: %s", got)
	}
	write("/run/systemd/netif/leases/7", "", 0)
	if got := f.Find("wan1", 7); got != root+"/run/systemd/netif/leases/7" {
		t.Fatalf("networkd's: %s", got)
	}
	if got := f.Find("wan1", 8); got != root+"/var/lib/NetworkManager/internal-0d5b-wan1.lease" {
		t.Fatalf("another ifindex: %s", got)
	}
}

// ndUserOpt builds an RTM_NEWNDUSEROPT message as the kernel sends it.
func ndUserOpt(ifindex int, lifetime uint32, router string, servers ...string) []byte {
	opt := []byte{ndOptRDNSS, byte(1 + 2*len(servers)), 0, 0}
	opt = binary.BigEndian.AppendUint32(opt, lifetime)
	for _, s := range servers {
		a := netip.MustParseAddr(s).As16()
		opt = append(opt, a[:]...)
	}
	msg := make([]byte, ndUseroptHdrLen)
	msg[0] = 10 // AF_INET6
	binary.NativeEndian.PutUint16(msg[2:], uint16(len(opt)))
	binary.NativeEndian.PutUint32(msg[4:], uint32(ifindex))
	msg[8] = icmp6RouterAdv
	msg = append(msg, opt...)
	if router != "" {
		attr := make([]byte, 4)
		binary.NativeEndian.PutUint16(attr, 20)
		binary.NativeEndian.PutUint16(attr[2:], ndUseroptSrcAddr)
		a := netip.MustParseAddr(router).As16()
		msg = append(msg, append(attr, a[:]...)...)
	}
	return msg
}

func TestParseNDUserOpt(t *testing.T) {
	got, err := ParseNDUserOpt(ndUserOpt(3, 600, "fe80::1", "2001:db8:1::53", "2001:db8:1::54"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Ifindex != 3 || got[0].Lifetime != 600*time.Second || got[0].Router != netip.MustParseAddr("fe80::1") ||
		!slices.Equal(got[0].Servers, addrs("2001:db8:1::53", "2001:db8:1::54")) {
		t.Fatalf("got %+v", got)
	}
	if got, err := ParseNDUserOpt(ndUserOpt(3, 0xffffffff, "", "2001:db8::53")); err != nil || !got[0].Infinite {
		t.Fatalf("infinite: %+v %v", got, err)
	}
	bad := map[string][]byte{
		"short":          {10, 0},
		"options beyond": append(ndUserOpt(3, 1, "", "2001:db8::53")[:ndUseroptHdrLen], 25, 3),
		"zero length":    func() []byte { m := ndUserOpt(3, 1, "", "2001:db8::53"); m[ndUseroptHdrLen+1] = 0; return m }(),
		"even length": func() []byte {
			m := ndUserOpt(3, 1, "", "2001:db8::53", "2001:db8::54")
			m[ndUseroptHdrLen+1] = 4
			return m
		}(),
	}
	for name, m := range bad {
		if _, err := ParseNDUserOpt(m); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	other := ndUserOpt(3, 1, "", "2001:db8::53")
	other[ndUseroptHdrLen] = 31 // DNSSL
	if _, err := ParseNDUserOpt(other); err != errNotRDNSS {
		t.Errorf("DNSSL: %v", err)
	}
}

func TestRDNSSTable(t *testing.T) {
	var tab RDNSSTable
	t0 := time.Unix(1_000_000, 0)
	tab.Add(RDNSS{Ifindex: 3, Lifetime: 10 * time.Second, Servers: addrs("2001:db8::1", "2001:db8::2")}, t0)
	tab.Add(RDNSS{Ifindex: 3, Lifetime: 60 * time.Second, Servers: addrs("2001:db8::2", "2001:db8::3")}, t0)
	if got := tab.Servers(3, t0); !slices.Equal(got, addrs("2001:db8::1", "2001:db8::2", "2001:db8::3")) {
		t.Fatalf("got %v", got)
	}
	if got := tab.Servers(3, t0.Add(11*time.Second)); !slices.Equal(got, addrs("2001:db8::2", "2001:db8::3")) {
		t.Fatalf("after ::1 expired: %v", got)
	}
	tab.Add(RDNSS{Ifindex: 3, Lifetime: 0, Servers: addrs("2001:db8::2")}, t0.Add(12*time.Second))
	if got := tab.Servers(3, t0.Add(12*time.Second)); !slices.Equal(got, addrs("2001:db8::3")) {
		t.Fatalf("after ::2 was withdrawn: %v", got)
	}
	for i := range 100 {
		tab.Add(RDNSS{Ifindex: 4, Infinite: true, Servers: []netip.Addr{netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)})}}, t0)
	}
	if n := len(tab.Servers(4, t0.Add(time.Hour))); n != maxRDNSSPerIf {
		t.Fatalf("a flood of servers: %d kept", n)
	}
	tab.Forget(map[int]bool{4: true})
	if tab.Servers(3, t0) != nil {
		t.Fatal("forgotten interface still has servers")
	}
}

func TestRenderAndWrite(t *testing.T) {
	cfg, err := config.Parse("t.yaml", []byte(`wans:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, dns: [198.18.1.53]}
  - {name: isp2, interface: wan2, gateway: 192.0.2.65, dns: auto}
policies: [{name: p, members: [{wan: isp1}, {wan: isp2}]}]
default_policy: p
`))
	if err != nil {
		t.Fatal(err)
	}
	list := []plan.Resolver{
		{Addr: netip.MustParseAddr("198.18.2.53"), WAN: "isp2", Usable: true, Learned: true},
		{Addr: netip.MustParseAddr("198.18.1.53"), WAN: "isp1"},
	}
	want := `# Written by multiwan: the resolvers of usable WANs first, in the order of
# the default policy, then the others (their queries fail at once while
# their WAN is down). Rewritten whenever that changes; do not edit.
# isp2 (wan2): usable
nameserver 198.18.2.53
# isp1 (wan1): down
nameserver 198.18.1.53
options timeout:1 attempts:2
`
	data := Render(cfg, list)
	if string(data) != want {
		t.Fatalf("got:\n%s", data)
	}
	if Render(cfg, nil) != nil {
		t.Fatal("an empty list renders a file")
	}
	if s := Summary(list); s != "198.18.2.53 (isp2), 198.18.1.53 (isp1, down)" {
		t.Fatalf("summary %q", s)
	}

	path := filepath.Join(t.TempDir(), "sub", "resolv.conf")
	wrote, err := WriteFile(path, data)
	if err != nil || !wrote {
		t.Fatalf("first write: %v %v", wrote, err)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v", st.Mode())
	}
	if wrote, err := WriteFile(path, data); err != nil || wrote {
		t.Fatalf("same content written again: %v %v", wrote, err)
	}
	if wrote, err := WriteFile(path, append(data, '#', '\n')); err != nil || !wrote {
		t.Fatalf("new content: %v %v", wrote, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
}

func TestWatcherLeases(t *testing.T) {
	dir := t.TempDir()
	lease := filepath.Join(dir, "dhclient.wan1.leases")
	cfg, err := config.Parse("t.yaml", []byte(`wans:
  - {name: isp1, interface: lo, gateway: auto, dns: auto, lease_file: `+lease+`}
  - {name: isp2, interface: mwtest-none0, gateway: auto, dns: auto}
  - {name: isp3, interface: wan3, gateway: 192.0.2.129, dns: [192.0.2.153]}
policies: [{name: p, members: [{wan: isp1}]}]
default_policy: p
`))
	if err != nil {
		t.Fatal(err)
	}
	var reports []map[string]Learned
	w := &Watcher{Config: func() *config.Config { return cfg }, Report: func(m map[string]Learned) { reports = append(reports, m) },
		Finder: Finder{Root: dir}, Now: time.Now}
	w.Poll()
	if len(reports) != 1 {
		t.Fatalf("reports %v", reports)
	}
	r := reports[0]
	if _, ok := r["isp3"]; ok || r["isp1"].Problem != "no DHCP lease in "+lease+" (yet)" ||
		!strings.HasPrefix(r["isp2"].Problem, "no DHCP lease found for mwtest-none0") {
		t.Fatalf("before any lease: %+v", r)
	}
	w.Poll()
	if len(reports) != 1 {
		t.Fatal("reported again without a change")
	}
	if err := os.WriteFile(lease, []byte("lease {\n interface \"lo\";\n option domain-name-servers 192.0.2.53;\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	w.Poll()
	if len(reports) != 2 || !slices.Equal(reports[1]["isp1"].Servers, addrs("192.0.2.53")) || reports[1]["isp1"].Problem != "" {
		t.Fatalf("after the lease: %+v", reports[len(reports)-1])
	}
	// A renewal that changes the server: the file is re-read.
	if err := os.WriteFile(lease, []byte("lease {\n interface \"lo\";\n option domain-name-servers 192.0.2.54, 192.0.2.55;\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	w.Poll()
	if got := reports[len(reports)-1]["isp1"].Servers; !slices.Equal(got, addrs("192.0.2.54", "192.0.2.55")) {
		t.Fatalf("after the renewal: %v", got)
	}
}
