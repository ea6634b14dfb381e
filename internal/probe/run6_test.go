package probe

// tcp, http and dns probes of IPv6 targets, against servers on ::1 with
// Mark 0. The kernel tests of IPv6 probing are in root6_test.go.

import (
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// listen6 listens on ::1, or skips the test where the host has no IPv6.
func listen6(t *testing.T, network string) (net.Listener, net.PacketConn) {
	t.Helper()
	var ln net.Listener
	var pc net.PacketConn
	var err error
	if network == "udp" {
		pc, err = net.ListenPacket("udp6", "[::1]:0")
	} else {
		ln, err = net.Listen("tcp6", "[::1]:0")
	}
	if err != nil {
		t.Skipf("no IPv6 loopback here (%v); the root tests cover IPv6 in namespaces", err)
	}
	return ln, pc
}

func TestRunIPv6Dialed(t *testing.T) {
	// tcp: [::1]:port, and a port where nothing listens.
	ln, _ := listen6(t, "tcp")
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	closed, _ := listen6(t, "tcp")
	refused := closed.Addr().String()
	closed.Close()

	// http: http://[::1]:port/.
	hl, _ := listen6(t, "tcp")
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	srv.Listener.Close()
	srv.Listener = hl
	srv.Start()
	defer srv.Close()

	// dns: [::1]:port.
	_, pc := listen6(t, "udp")
	dsrv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		w.WriteMsg(new(dns.Msg).SetReply(q))
	})}
	done := make(chan struct{})
	go func() { defer close(done); dsrv.ActivateAndServe() }()
	defer func() { dsrv.Shutdown(); <-done }()

	for _, tc := range []struct {
		method string
		good   string
		bad    string
		err    string
	}{
		{"tcp", ln.Addr().String(), refused, "connection refused"},
		{"http", "http://" + hl.Addr().String() + "/", "http://" + refused + "/", "connection refused"},
		{"dns", pc.LocalAddr().String(), refused, "connection refused"},
	} {
		t.Run(tc.method, func(t *testing.T) {
			if fam, err := Family([]string{tc.good, tc.bad}, tc.method); fam != 6 || err != nil {
				t.Fatalf("Family(%s, %s) = %d, %v", tc.good, tc.bad, fam, err)
			}
			r := startRun(t, Spec{Method: tc.method, Targets: []string{tc.good, tc.bad}, Interval: 20 * ms, Timeout: time.Second, Reliability: 1}, nil)
			for range 3 {
				rd := r.nextRound(2 * time.Second)
				g, b := rd.Results[0], rd.Results[1]
				if !g.OK || g.RTT <= 0 || g.Target != tc.good || b.OK || b.Err != tc.err {
					t.Fatalf("got %s", describeRounds([]Round{rd}))
				}
			}
		})
	}
}
