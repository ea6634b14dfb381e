package main

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/multiwan/multiwan/internal/config"
	"github.com/multiwan/multiwan/internal/initconfig"
)

// box is a synthetic router: two uplinks (static and DHCP) and a LAN.
func box() (initconfig.Observed, error) {
	return initconfig.Observed{
		Links: []initconfig.Link{
			{Index: 1, Name: "lo", Loopback: true, Up: true, Carrier: true},
			{Index: 2, Name: "eth0", Kind: "device", Up: true, Carrier: true,
				Addrs: []initconfig.Addr{{Prefix: netip.MustParsePrefix("203.0.113.10/29")}}},
			{Index: 3, Name: "eth1", Kind: "device", Up: true, Carrier: true, DHCPClient: "dhclient",
				Addrs: []initconfig.Addr{{Prefix: netip.MustParsePrefix("100.64.1.2/24")}}},
			{Index: 4, Name: "br-lan", Kind: "bridge", Up: true, Carrier: true,
				Addrs: []initconfig.Addr{{Prefix: netip.MustParsePrefix("192.168.1.1/24")}}},
		},
		Routes: []initconfig.Route{
			{Family: 4, Dev: "eth1", Gateway: netip.MustParseAddr("100.64.1.1"), Table: 254, Metric: 200, Protocol: "boot"},
			{Family: 4, Dev: "eth0", Gateway: netip.MustParseAddr("203.0.113.9"), Table: 254, Metric: 100, Protocol: "boot"},
		},
	}, nil
}

func TestInitStdout(t *testing.T) {
	var out, errs bytes.Buffer
	if code := initWith(nil, &out, &errs, box); code != 0 {
		t.Fatalf("exit %d\n%s", code, errs.String())
	}
	cfg, err := config.Parse("init", out.Bytes())
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(cfg.WANs) != 2 || cfg.WANs[0].Interface != "eth0" || cfg.WANs[0].Gateway.String() != "203.0.113.9" || !cfg.WANs[1].GatewayAuto {
		t.Errorf("WANs %+v", cfg.WANs)
	}
	for _, want := range []string{"multiwan init: eth0: default via 203.0.113.9 dev eth0 proto boot metric 100 -> WAN eth0, tier 1, gateway 203.0.113.9",
		"multiwan init: eth1: default via 100.64.1.1 dev eth1 proto boot metric 200 -> WAN eth1, tier 2, gateway auto",
		"multiwan init: not WANs: br-lan (no default route); lo (loopback)"} {
		if !strings.Contains(errs.String(), want+"\n") {
			t.Errorf("stderr lacks %q:\n%s", want, errs.String())
		}
	}
}

// TestInitWritesFile: -o writes the same text, creating the directory,
// and `check` accepts the file; a second run refuses to replace it.
func TestInitWritesFile(t *testing.T) {
	var want, errs bytes.Buffer
	if code := initWith(nil, &want, &errs, box); code != 0 {
		t.Fatal(errs.String())
	}
	path := filepath.Join(t.TempDir(), "etc", "multiwan", "multiwan.yaml")
	var out bytes.Buffer
	errs.Reset()
	if code := initWith([]string{"-o", path}, &out, &errs, box); code != 0 || out.Len() != 0 {
		t.Fatalf("exit %d, stdout %q\n%s", code, out.String(), errs.String())
	}
	got, err := os.ReadFile(path)
	if err != nil || string(got) != want.String() {
		t.Fatalf("file: %v\n%s", err, got)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v", st.Mode())
	}
	if !strings.Contains(errs.String(), "wrote "+path) {
		t.Errorf("stderr: %s", errs.String())
	}
	var checkOut, checkErr bytes.Buffer
	if code := run([]string{"check", "-c", path}, &checkOut, &checkErr); code != 0 || checkOut.String() != "ok\n" {
		t.Errorf("check: exit %d %q %s", code, checkOut.String(), checkErr.String())
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}

	// Never replaced: the file keeps its content, and the box is not
	// even read.
	if err := os.WriteFile(path, []byte("mine\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	errs.Reset()
	observed := false
	code := initWith([]string{"-o", path}, &out, &errs, func() (initconfig.Observed, error) { observed = true; return box() })
	if code != 1 || observed || !strings.Contains(errs.String(), path+" exists; init never replaces a config") {
		t.Errorf("exit %d, observed %v: %s", code, observed, errs.String())
	}
	if got, _ := os.ReadFile(path); string(got) != "mine\n" {
		t.Errorf("existing file changed: %q", got)
	}
	// A file appearing between the check and the write is not replaced
	// either (link(2) refuses).
	if err := writeNew(path, []byte("new\n")); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("writeNew over an existing file: %v", err)
	}
}

func TestInitNoUplink(t *testing.T) {
	var out, errs bytes.Buffer
	none := func() (initconfig.Observed, error) {
		return initconfig.Observed{Links: []initconfig.Link{
			{Index: 1, Name: "lo", Loopback: true, Up: true},
			{Index: 2, Name: "eth0", Kind: "device", Up: true, Carrier: true, Addrs: []initconfig.Addr{{Prefix: netip.MustParsePrefix("192.168.1.5/24")}}},
		}}, nil
	}
	if code := initWith(nil, &out, &errs, none); code != 1 || out.Len() != 0 {
		t.Fatalf("exit %d, stdout %q", code, out.String())
	}
	for _, want := range []string{"eth0 (device, up, 192.168.1.5/24)", "what to do:", "multiwan init: no default route found"} {
		if !strings.Contains(errs.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs.String())
		}
	}
}

func TestInitOneUplink(t *testing.T) {
	one := func() (initconfig.Observed, error) {
		obs, _ := box()
		obs.Routes = obs.Routes[1:]
		return obs, nil
	}
	var out, errs bytes.Buffer
	if code := initWith(nil, &out, &errs, one); code != 0 {
		t.Fatalf("exit %d: %s", code, errs.String())
	}
	if !strings.Contains(errs.String(), "only one uplink found (eth0); multi-WAN needs two") || !strings.Contains(out.String(), "# - name: wan2") {
		t.Errorf("stderr:\n%s\nstdout:\n%s", errs.String(), out.String())
	}
}

func TestInitErrors(t *testing.T) {
	var out, errs bytes.Buffer
	if code := initWith([]string{"extra"}, &out, &errs, box); code != 2 {
		t.Errorf("positional argument: exit %d", code)
	}
	errs.Reset()
	broken := func() (initconfig.Observed, error) { return initconfig.Observed{}, errors.New("netlink says no") }
	if code := initWith(nil, &out, &errs, broken); code != 1 || !strings.Contains(errs.String(), "cannot read the interfaces and routes: netlink says no") {
		t.Errorf("exit %d: %s", code, errs.String())
	}
	errs.Reset()
	if code := initWith([]string{"-o", "/proc/multiwan-init-test/x.yaml"}, &out, &errs, box); code != 1 || errs.Len() == 0 {
		t.Errorf("unwritable -o: exit %d: %s", code, errs.String())
	}
}
