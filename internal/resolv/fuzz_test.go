package resolv

import (
	"testing"
	"time"

	"github.com/multiwan/multiwan/internal/config"
)

// FuzzParseLease: a lease file is written from what a DHCP server sent;
// whatever it holds, parsing ends, keeps only usable resolvers and at most
// config.MaxDNSServers of them.
func FuzzParseLease(f *testing.F) {
	f.Add([]byte(dhclientFile), "wan1")
	f.Add([]byte("DNS=192.0.2.53 2001:db8::53\nADDRESS=192.0.2.10\n"), "")
	f.Add([]byte("nameserver 192.0.2.53\nnameserver fe80::1%eth0\n"), "")
	f.Add([]byte("lease { lease6 { { } } } option domain-name-servers ;;; \"unterminated"), "wan1")
	f.Fuzz(func(t *testing.T, data []byte, iface string) {
		l := ParseLease("/f", data, iface)
		if len(l.Servers) > config.MaxDNSServers {
			t.Fatalf("%d servers", len(l.Servers))
		}
		seen := map[string]bool{}
		for _, a := range l.Servers {
			if why := config.ResolverProblem(a); why != "" {
				t.Fatalf("kept %s: %s", a, why)
			}
			if seen[a.String()] {
				t.Fatalf("%s twice", a)
			}
			seen[a.String()] = true
		}
		if len(l.Problem) > 2000 {
			t.Fatalf("problem of %d bytes", len(l.Problem))
		}
	})
}

// FuzzParseNDUserOpt: nd user option messages come from the kernel, but
// what they carry comes from whoever sent the router advertisement.
func FuzzParseNDUserOpt(f *testing.F) {
	f.Add(ndUserOpt(3, 600, "fe80::1", "2001:db8::53", "2001:db8::54"))
	f.Add(ndUserOpt(3, 0xffffffff, ""))
	f.Add([]byte{10, 0, 255, 255, 1, 0, 0, 0, 134})
	f.Fuzz(func(t *testing.T, data []byte) {
		opts, err := ParseNDUserOpt(data)
		if err != nil {
			return
		}
		var tab RDNSSTable
		now := time.Unix(0, 0)
		for _, o := range opts {
			if len(o.Servers) > maxRDNSSAddrs || o.Ifindex <= 0 {
				t.Fatalf("%+v", o)
			}
			tab.Add(o, now)
		}
		for _, o := range opts {
			if n := len(tab.Servers(o.Ifindex, now)); n > maxRDNSSPerIf {
				t.Fatalf("%d servers", n)
			}
		}
	})
}
