package wireguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/multiwan/multiwan/internal/plan"
)

const answer = `private_key=e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a
listen_port=30001
fwmark=0x388
public_key=b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33
preshared_key=0000000000000000000000000000000000000000000000000000000000000000
protocol_version=1
endpoint=[2001:db8::7]:30001
last_handshake_time_sec=1
last_handshake_time_nsec=2
tx_bytes=3
rx_bytes=4
persistent_keepalive_interval=25
allowed_ip=0.0.0.0/0
public_key=58402e695ba1772b1cc9309755f043251ea77fdcf10fbe63989ceb7e19321376
endpoint=203.0.113.7:30001
public_key=662e14fd594556f522604703340351258903b64f35553763f19426ab2a515c58
errno=0

`

func TestParseUAPI(t *testing.T) {
	got, err := parseUAPI(strings.NewReader(answer))
	if err != nil {
		t.Fatal(err)
	}
	want := plan.TunnelInfo{ListenPort: 30001, FwMark: 0x388, Peers: 3, Endpoints: []netip.AddrPort{
		netip.MustParseAddrPort("[2001:db8::7]:30001"), netip.MustParseAddrPort("203.0.113.7:30001")}}
	if fmt.Sprint(*got) != fmt.Sprint(want) {
		t.Fatalf("got %+v, want %+v", *got, want)
	}
	for _, bad := range []string{
		"listen_port=70000\n\n",
		"fwmark=x\n\n",
		"endpoint=203.0.113.7:1\n\n",
		"public_key=a\nendpoint=203.0.113.7\n\n",
		"errno=2\n\n",
		"listen_port=1\n",
		"garbage\n\n",
		strings.Repeat("x", maxUAPILine+1) + "\n\n",
	} {
		if _, err := parseUAPI(strings.NewReader(bad)); err == nil {
			t.Errorf("accepted %q", short(bad))
		}
	}
	// Many peers: their number is counted, the endpoints taken are bounded.
	var b strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&b, "public_key=%064x\nendpoint=198.51.100.%d:%d\n", i, i%250+1, 1000+i)
	}
	b.WriteString("errno=0\n\n")
	got, err = parseUAPI(strings.NewReader(b.String()))
	if err != nil || got.Peers != 1000 || len(got.Endpoints) != plan.MaxLearnedEndpoints {
		t.Fatalf("1000 peers: %d peers, %d endpoints, %v", got.Peers, len(got.Endpoints), err)
	}
}

// TestReadUAPIDeadline: a process that accepts but never answers (stopped,
// or hostile) costs the reader its deadline, not a hang.
func TestReadUAPIDeadline(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wg0.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, silent, until the listener closes
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = readUAPI(ctx, path)
	if err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("silent socket: %v after %v", err, time.Since(start))
	}
	if _, err := readUAPI(context.Background(), filepath.Join(t.TempDir(), "none.sock")); !errors.Is(err, ErrNotWireGuard) {
		t.Fatalf("missing socket: %v", err)
	}
}

// FuzzParseUAPI: whatever a UAPI socket answers, the parser returns
// within bounds and never panics.
func FuzzParseUAPI(f *testing.F) {
	f.Add(answer)
	f.Add("listen_port=1\nfwmark=0\npublic_key=a\nendpoint=[::ffff:1.2.3.4]:5\nerrno=0\n\n")
	f.Add("endpoint=1.2.3.4:5\n\n")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseUAPI(strings.NewReader(s))
		if err != nil {
			return
		}
		if len(got.Endpoints) > plan.MaxLearnedEndpoints {
			t.Fatalf("%d endpoints", len(got.Endpoints))
		}
		for _, ep := range got.Endpoints {
			if !ep.IsValid() || ep.Port() == 0 || ep.Addr().Is4In6() {
				t.Fatalf("endpoint %v", ep)
			}
		}
	})
}
