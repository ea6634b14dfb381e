package probe

// Tests of Run against servers on the loopback, with Mark 0 (which needs
// no privilege): the probe methods, their error reasons, stopping and
// leaks. The kernel-side behaviour of marks is tested in root_test.go.

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// runner is a Run in the background.
type runner struct {
	t      *testing.T
	out    chan Round
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func startRun(t *testing.T, spec Spec, ns nsFunc) *runner {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &runner{t: t, out: make(chan Round), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- run(ctx, spec, r.out, ns) }()
	t.Cleanup(r.stop)
	return r
}

// stop cancels the Run and waits for it to return.
func (r *runner) stop() {
	r.t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				r.t.Errorf("Run: %v", err)
			}
		case <-time.After(2 * time.Second):
			r.t.Fatal("Run did not return within 2s of its context ending")
		}
	})
}

// next returns the next report (Late ones included) within d.
func (r *runner) next(d time.Duration) Round {
	r.t.Helper()
	select {
	case rd := <-r.out:
		return rd
	case err := <-r.done:
		r.t.Fatalf("Run returned early: %v", err)
	case <-time.After(d):
		r.t.Fatalf("no round within %v", d)
	}
	return Round{}
}

// nextRound skips Late reports.
func (r *runner) nextRound(d time.Duration) Round {
	r.t.Helper()
	for {
		if rd := r.next(d); !rd.Late {
			return rd
		}
	}
}

// waitFor reads rounds until ok accepts one, for at most d.
func (r *runner) waitFor(d time.Duration, what string, ok func(Round) bool) Round {
	r.t.Helper()
	end := time.Now().Add(d)
	var last Round
	for time.Now().Before(end) {
		last = r.next(time.Until(end) + 100*ms)
		if ok(last) {
			return last
		}
	}
	r.t.Fatalf("no round with %s within %v; last: %s", what, d, describeRounds([]Round{last}))
	return Round{}
}

func allOK(r Round) bool { return !r.Late && r.Good(len(r.Results)) }

func errIs(want string) func(Round) bool {
	return func(r Round) bool {
		return !r.Late && len(r.Results) > 0 && !r.Results[0].OK && strings.Contains(r.Results[0].Err, want)
	}
}

// checkNoLeak fails when goroutines started since baseline are still
// there after a grace period.
func checkNoLeak(t *testing.T, baseline int) {
	t.Helper()
	end := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(end) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, %d before the Run:\n%s", runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * ms)
	}
}

func TestRunRejectsBadSpecs(t *testing.T) {
	out := make(chan Round)
	ok := Spec{Method: "tcp", Targets: []string{"127.0.0.1:1"}, Interval: time.Second, Timeout: time.Second}
	for name, mod := range map[string]func(s *Spec){
		"no interval":       func(s *Spec) { s.Interval = 0 },
		"negative timeout":  func(s *Spec) { s.Timeout = -1 },
		"unknown method":    func(s *Spec) { s.Method = "smtp" },
		"no tcp targets":    func(s *Spec) { s.Targets = nil },
		"tcp without port":  func(s *Spec) { s.Targets = []string{"127.0.0.1"} },
		"tcp port 0":        func(s *Spec) { s.Targets = []string{"127.0.0.1:0"} },
		"tcp host name":     func(s *Spec) { s.Targets = []string{"example.com:80"} },
		"icmp not an IP":    func(s *Spec) { s.Method, s.Targets = "icmp", []string{"example.com"} },
		"icmp mixed":        func(s *Spec) { s.Method, s.Targets = "icmp", []string{"203.0.113.1", "2001:db8::1"} },
		"icmp mixed mapped": func(s *Spec) { s.Method, s.Targets = "icmp", []string{"2001:db8::1", "::ffff:203.0.113.1"} },
		"icmp zoned":        func(s *Spec) { s.Method, s.Targets, s.Interface = "icmp", []string{"fe80::1%eth0"}, "eth0" },
		"icmp link-local":   func(s *Spec) { s.Method, s.Targets = "icmp", []string{"fe80::1"} },
		"icmp multicast":    func(s *Spec) { s.Method, s.Targets = "icmp", []string{"ff02::1"} },
		"icmp unspecified":  func(s *Spec) { s.Method, s.Targets = "icmp", []string{"::"} },
		"icmp no gateway":   func(s *Spec) { s.Method, s.Targets = "icmp", nil },
		"http not a URL":    func(s *Spec) { s.Method, s.Targets = "http", []string{"192.0.2.1"} },
		"http wrong scheme": func(s *Spec) { s.Method, s.Targets = "http", []string{"ftp://192.0.2.1/"} },
		"dns bad":           func(s *Spec) { s.Method, s.Targets = "dns", []string{"resolver"} },
	} {
		s := ok
		mod(&s)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := Run(ctx, s, out)
		cancel()
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if err := Run(context.Background(), ok, nil); err == nil {
		t.Error("nil channel: no error")
	}
}

func TestRunTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int32
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	baseline := runtime.NumGoroutine()
	addr := ln.Addr().String()
	r := startRun(t, Spec{WAN: "isp1", Method: "tcp", Targets: []string{addr}, Interval: 20 * ms, Timeout: time.Second, Reliability: 1}, nil)
	rd := r.nextRound(2 * time.Second)
	if rd.WAN != "isp1" || rd.Seq != 1 || !allOK(rd) || rd.Results[0].Target != addr || rd.Results[0].RTT <= 0 {
		t.Fatalf("first round: %s", describeRounds([]Round{rd}))
	}
	for i := range 5 {
		if rd := r.nextRound(time.Second); rd.Seq != uint64(i+2) || !allOK(rd) {
			t.Fatalf("round %d: %s", i+2, describeRounds([]Round{rd}))
		}
	}
	ln.Close()
	wg.Wait()
	r.waitFor(2*time.Second, "connection refused", errIs("connection refused"))
	r.stop()
	checkNoLeak(t, baseline)
	if accepted.Load() == 0 {
		t.Error("the server saw no connection")
	}
}

func TestRunHTTP(t *testing.T) {
	var status atomic.Int32
	status.Store(200)
	var mu sync.Mutex
	conns := map[string]bool{}
	keepAlive := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		mu.Lock()
		if conns[req.RemoteAddr] || !req.Close {
			keepAlive = true
		}
		conns[req.RemoteAddr] = true
		mu.Unlock()
		if s := int(status.Load()); s == 302 {
			http.Redirect(w, req, "http://198.51.100.99/elsewhere", s)
		} else {
			w.WriteHeader(s)
		}
	}))
	defer srv.Close()
	r := startRun(t, Spec{Method: "http", Targets: []string{srv.URL + "/probe"}, Interval: 20 * ms, Timeout: time.Second, Reliability: 1}, nil)
	r.waitFor(2*time.Second, "an answer", allOK)
	status.Store(302) // an answer, not followed
	for range 3 {
		if rd := r.nextRound(time.Second); !allOK(rd) && rd.Results[0].Err != "HTTP status 200" {
			t.Fatalf("redirect: %s", describeRounds([]Round{rd}))
		}
	}
	status.Store(503)
	r.waitFor(2*time.Second, "HTTP status 503", errIs("HTTP status 503"))
	status.Store(200)
	r.waitFor(2*time.Second, "recovery", allOK)
	r.stop()
	mu.Lock()
	defer mu.Unlock()
	if keepAlive || len(conns) < 5 {
		t.Errorf("probes reused connections (keep-alive %v, %d connections)", keepAlive, len(conns))
	}
}

func TestRunHTTPSVerifiesCertificates(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	srv.StartTLS()
	defer srv.Close()
	r := startRun(t, Spec{Method: "http", Targets: []string{srv.URL}, Interval: 50 * ms, Timeout: time.Second, Reliability: 1}, nil)
	rd := r.nextRound(2 * time.Second)
	if rd.Results[0].OK || !strings.Contains(rd.Results[0].Err, "certificate") {
		t.Fatalf("self-signed certificate: %s", describeRounds([]Round{rd}))
	}
}

// udpServer answers each query with what reply returns (nil: nothing).
func udpServer(t *testing.T, reply func(q *dns.Msg) [][]byte) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var q dns.Msg
			if q.Unpack(buf[:n]) != nil {
				continue
			}
			for _, b := range reply(&q) {
				pc.WriteTo(b, from)
			}
		}
	}()
	return pc.LocalAddr().String()
}

func TestRunDNS(t *testing.T) {
	pack := func(m *dns.Msg) []byte {
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// Garbage, a reply to another query, then a SERVFAIL: the SERVFAIL
	// is an answer.
	good := udpServer(t, func(q *dns.Msg) [][]byte {
		if len(q.Question) != 1 || q.Question[0].Name != "." || q.Question[0].Qtype != dns.TypeNS {
			return nil
		}
		other := new(dns.Msg).SetReply(q)
		other.Id = q.Id + 1
		a := new(dns.Msg).SetRcode(q, dns.RcodeServerFailure)
		return [][]byte{{1, 2, 3}, pack(other), pack(a)}
	})
	// Only garbage and echoes of the query (not a response).
	bad := udpServer(t, func(q *dns.Msg) [][]byte {
		return [][]byte{{0xff}, pack(q)}
	})
	// A port where nothing listens: the kernel's port unreachable.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := pc.LocalAddr().String()
	pc.Close()

	r := startRun(t, Spec{Method: "dns", Targets: []string{good, bad, refused}, Interval: 50 * ms, Timeout: 300 * ms, Reliability: 1}, nil)
	rd := r.nextRound(2 * time.Second)
	if !rd.Results[0].OK || rd.Results[1].OK || rd.Results[1].Err != "timeout" || rd.Results[2].Err != "connection refused" {
		t.Fatalf("got %s", describeRounds([]Round{rd}))
	}
}

func TestRunDNSDefaultPort(t *testing.T) {
	_, targets, err := parseSpec(Spec{Method: "dns", Targets: []string{"198.51.100.53", "[2001:db8::53]:5353"}, Interval: 1, Timeout: 1})
	if err != nil {
		t.Fatal(err)
	}
	if targets[0].ap.String() != "198.51.100.53:53" || targets[1].ap.String() != "[2001:db8::53]:5353" {
		t.Fatalf("targets %v %v", targets[0].ap, targets[1].ap)
	}
}

func TestRunWaitsForConsumer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	baseline := runtime.NumGoroutine()
	r := startRun(t, Spec{Method: "tcp", Targets: []string{ln.Addr().String()}, Interval: 10 * ms, Timeout: 100 * ms, Reliability: 1}, nil)
	// Nobody reads for a while: nothing is lost, rounds are held back.
	time.Sleep(600 * ms)
	var seqs []uint64
	for range maxOutbox + 5 {
		seqs = append(seqs, r.nextRound(time.Second).Seq)
	}
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("rounds %v: lost or reordered while the consumer was away", seqs)
		}
	}
	// Stop while blocked on out.
	time.Sleep(100 * ms)
	start := time.Now()
	r.stop()
	if d := time.Since(start); d > 500*ms {
		t.Fatalf("Run took %v to stop", d)
	}
	checkNoLeak(t, baseline)
}

func TestRunInvalidGatewayRounds(t *testing.T) {
	if !haveRawSocket() {
		t.Skip("needs CAP_NET_RAW (covered by the root tests)")
	}
	r := startRun(t, Spec{Gateway: func() netip.Addr { return netip.Addr{} }, Interval: 40 * ms, Timeout: time.Second, Reliability: 1}, nil)
	rd := r.nextRound(time.Second)
	if rd.Results[0] != (Result{Target: "gateway", Err: "no gateway"}) {
		t.Fatalf("got %s", describeRounds([]Round{rd}))
	}
	// Bad rounds: fast confirmation (every 10ms) continues while the
	// gateway is missing.
	rd2 := r.nextRound(time.Second)
	if gap := rd2.Start.Sub(rd.Start); gap > 30*ms {
		t.Errorf("gap %v between bad rounds, want 10ms", gap)
	}
}

func haveRawSocket() bool {
	c, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return false
	}
	c.Close()
	return true
}
