package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/multiwan/multiwan/internal/config"
)

// fakeHandler records the requests it is given.
type fakeHandler struct {
	mu       sync.Mutex
	status   Status
	override string
	reloads  int
	reload   error
}

func (h *fakeHandler) Status() Status {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.status
	st.Override = h.override
	return st
}

func (h *fakeHandler) Use(wan string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch wan {
	case "", "auto":
		h.override = ""
	case "isp1", "isp2":
		h.override = wan
	case "boom":
		panic("handler bug")
	default:
		return fmt.Errorf("unknown WAN %q", wan)
	}
	return nil
}

func (h *fakeHandler) Reload() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reloads++
	return h.reload
}

var sampleStatus = Status{
	WANs: []WANStatus{
		{Name: "isp1", Interface: "wan1", State: "up", RTTms: 1.2, LossPct: 0,
			Address: "192.0.2.2", Gateway: "192.0.2.1", Since: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
		{Name: "isp2", Interface: "wan2", State: "down", RTTms: 0, LossPct: 100,
			Address: "198.51.100.2", Gateway: "198.51.100.1", Since: time.Date(2026, 1, 1, 0, 5, 0, 0, time.UTC)},
	},
	Policies: []PolicyStatus{
		{Name: "failover", Active: []Share{{WAN: "isp1", Share: 1}}, LastResort: "unreachable"},
		{Name: "balanced", Active: []Share{{WAN: "isp1", Share: 1}}},
	},
}

// serve starts a server on a fresh socket and stops it when the test ends.
func serve(t *testing.T, h Handler, timeout time.Duration) *Server {
	t.Helper()
	s, err := Listen(filepath.Join(t.TempDir(), "run", "multiwan.sock"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if timeout > 0 {
		s.timeout = timeout
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, h, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after its context ended")
		}
		s.Close()
	})
	return s
}

func dial(t *testing.T, s *Server) *Client {
	t.Helper()
	c, err := Dial(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// raw sends lines on a plain connection and returns the response lines.
func raw(t *testing.T, s *Server, lines ...string) []string {
	t.Helper()
	c, err := net.Dial("unix", s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	var out []string
	for _, l := range lines {
		if _, err := io.WriteString(c, l+"\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("after %q: %v", l, err)
		}
		out = append(out, strings.TrimSuffix(resp, "\n"))
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	h := &fakeHandler{status: sampleStatus}
	s := serve(t, h, 0)
	c := dial(t, s)

	st, err := c.Status()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(st, sampleStatus) {
		t.Errorf("Status() = %+v\nwant %+v", st, sampleStatus)
	}

	if err := c.Use("isp2"); err != nil {
		t.Fatal(err)
	}
	if st, err := c.Status(); err != nil || st.Override != "isp2" {
		t.Errorf("after use isp2: override %q, %v", st.Override, err)
	}
	if err := c.Use("auto"); err != nil {
		t.Fatal(err)
	}
	if st, err := c.Status(); err != nil || st.Override != "" {
		t.Errorf("after use auto: override %q, %v", st.Override, err)
	}

	err = c.Use("nope")
	var re *RemoteError
	if !errors.As(err, &re) || err.Error() != `unknown WAN "nope"` {
		t.Errorf(`Use("nope") = %v, want the handler's error`, err)
	}

	if err := c.Reload(); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	h.reload = config.ErrorList{
		{File: "/etc/multiwan/multiwan.yaml", Line: 3, Col: 5, Msg: `unknown key "wnas"`},
		{File: "/etc/multiwan/multiwan.yaml", Line: 12, Col: 14, Msg: `policy "failover": unknown WAN "isp3"`},
	}
	want := h.reload.Error()
	h.mu.Unlock()
	err = c.Reload()
	if err == nil || err.Error() != want {
		t.Fatalf("Reload() = %q, want %q", err, want)
	}
	if !errors.As(err, &re) || !slices.Equal(re.Lines(), []string{
		`/etc/multiwan/multiwan.yaml:3:5: unknown key "wnas"`,
		`/etc/multiwan/multiwan.yaml:12:14: policy "failover": unknown WAN "isp3"`,
	}) {
		t.Errorf("Reload error lines = %q", re.Lines())
	}
	if h.reloads != 2 {
		t.Errorf("handler saw %d reloads, want 2", h.reloads)
	}

	// The connection is still good after errors.
	if _, err := c.Status(); err != nil {
		t.Error(err)
	}
}

func keys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// TestJSONContract checks the field names of `status --json` (PRODUCT.md
// §3), both as Status marshals and as the daemon sends it.
func TestJSONContract(t *testing.T) {
	s := serve(t, &fakeHandler{status: sampleStatus}, 0)
	var resp struct {
		OK     bool           `json:"ok"`
		Status map[string]any `json:"status"`
	}
	if err := json.Unmarshal([]byte(raw(t, s, `{"cmd":"status"}`)[0]), &resp); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(sampleStatus)
	if err != nil {
		t.Fatal(err)
	}
	var direct map[string]any
	if err := json.Unmarshal(b, &direct); err != nil {
		t.Fatal(err)
	}
	for name, m := range map[string]map[string]any{"wire": resp.Status, "Marshal": direct} {
		if got := keys(m); !slices.Equal(got, []string{"override", "policies", "wans"}) {
			t.Errorf("%s: top-level keys %v", name, got)
		}
		wan := m["wans"].([]any)[0].(map[string]any)
		if got := keys(wan); !slices.Equal(got, []string{"address", "gateway", "interface", "loss_pct", "name", "rtt_ms", "since", "state"}) {
			t.Errorf("%s: WAN keys %v", name, got)
		}
		if wan["since"] != "2026-01-01T00:00:00Z" || wan["rtt_ms"] != 1.2 || wan["state"] != "up" {
			t.Errorf("%s: WAN values %v", name, wan)
		}
		pols := m["policies"].([]any)
		if got := keys(pols[0].(map[string]any)); !slices.Equal(got, []string{"active", "last_resort", "name"}) {
			t.Errorf("%s: policy keys %v", name, got)
		}
		if got := keys(pols[1].(map[string]any)); !slices.Equal(got, []string{"active", "name"}) {
			t.Errorf("%s: policy keys without last resort %v", name, got)
		}
		share := pols[0].(map[string]any)["active"].([]any)[0].(map[string]any)
		if got := keys(share); !slices.Equal(got, []string{"share", "wan"}) || share["share"] != 1.0 {
			t.Errorf("%s: share %v", name, share)
		}
	}

	// An empty status still has lists, not nulls, on the wire.
	s = serve(t, &fakeHandler{status: Status{Policies: []PolicyStatus{{Name: "p"}}}}, 0)
	got := raw(t, s, `{"cmd":"status"}`)[0]
	if want := `{"ok":true,"status":{"wans":[],"policies":[{"name":"p","active":[]}],"override":""}}`; got != want {
		t.Errorf("empty status:\n got %s\nwant %s", got, want)
	}
}

func TestBadRequests(t *testing.T) {
	h := &fakeHandler{status: sampleStatus}
	s := serve(t, h, 0)
	for _, tc := range []struct{ line, want string }{
		{`garbage`, "malformed request"},
		{`{"cmd":"status"`, "malformed request"},
		{`{"cmd":"status"} {"cmd":"reload"}`, "more than one JSON value"},
		{`{"cmd":"status","extra":1}`, "malformed request"},
		{`{"cmd":42}`, "malformed request"},
		{`[]`, "malformed request"},
		{`{}`, `no "cmd"`},
		{`{"cmd":"shutdown"}`, `unknown command "shutdown"`},
		{`{"cmd":"` + strings.Repeat("x", 1000) + `"}`, "unknown command"},
		{`{"cmd":"use","wan":"boom"}`, "internal error in use: handler bug"},
		{"\x00\xff\xfe", "malformed request"},
	} {
		// Each bad line is answered, and the same connection goes on.
		out := raw(t, s, tc.line, `{"cmd":"status"}`)
		var resp response
		if err := json.Unmarshal([]byte(out[0]), &resp); err != nil {
			t.Errorf("%q: answer %q is not JSON: %v", tc.line, out[0], err)
			continue
		}
		if resp.OK || !strings.Contains(resp.Error, tc.want) {
			t.Errorf("%q: answer %q, want an error containing %q", tc.line, out[0], tc.want)
		}
		if len(resp.Error) > 300 {
			t.Errorf("%q: error of %d bytes echoes the request", tc.line, len(resp.Error))
		}
		if !strings.HasPrefix(out[1], `{"ok":true,`) {
			t.Errorf("%q: next request got %q", tc.line, out[1])
		}
	}
	if h.reloads != 0 {
		t.Errorf("bad requests ran %d reloads", h.reloads)
	}
}

func TestLongLine(t *testing.T) {
	s := serve(t, &fakeHandler{status: sampleStatus}, 0)
	c, err := net.Dial("unix", s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	// The server stops reading after MaxLine bytes, so the rest of the
	// write may fail; the answer must come all the same.
	go c.Write(bytes.Repeat([]byte("x"), 1<<20))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("no answer to a 1 MiB line: %v", err)
	}
	var resp response
	if err := json.Unmarshal([]byte(line), &resp); err != nil || resp.OK || !strings.Contains(resp.Error, "request longer than 65536 bytes") {
		t.Errorf("answer %q, %v", line, err)
	}
	// A line of exactly MaxLine bytes is still accepted.
	req := `{"cmd":"status"}`
	req += strings.Repeat(" ", MaxLine-len(req)-1)
	if out := raw(t, s, req); !strings.HasPrefix(out[0], `{"ok":true,`) {
		t.Errorf("line of MaxLine bytes: %q", out[0])
	}
	// And the server still serves.
	if _, err := dial(t, s).Status(); err != nil {
		t.Error(err)
	}
}

func TestIdleClientIsDisconnected(t *testing.T) {
	s := serve(t, &fakeHandler{status: sampleStatus}, 200*time.Millisecond)
	idle, err := net.Dial("unix", s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	// A half-written request counts as idle too.
	half, err := net.Dial("unix", s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	io.WriteString(half, `{"cmd":`)

	// Meanwhile others are served.
	if _, err := dial(t, s).Status(); err != nil {
		t.Error(err)
	}
	for _, c := range []net.Conn{idle, half} {
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(make([]byte, 1))
		if !errors.Is(err, io.EOF) {
			t.Errorf("idle client read %d bytes, %v; want EOF", n, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("idle client disconnected after %v", d)
		}
	}
}

func TestManyClients(t *testing.T) {
	h := &fakeHandler{status: sampleStatus}
	s := serve(t, h, 0)
	const n = 200 // well over maxConns: the rest wait in the backlog
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			c, err := Dial(s.Path())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			for range 5 {
				st, err := c.Status()
				if err != nil {
					errs <- err
					return
				}
				if len(st.WANs) != 2 {
					errs <- fmt.Errorf("client %d: %d WANs", i, len(st.WANs))
					return
				}
			}
			if err := c.Use([]string{"isp1", "isp2", "auto"}[i%3]); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestBusySlots fills every connection slot with idle clients and checks
// that a further client is served once their deadline frees a slot.
func TestBusySlots(t *testing.T) {
	s := serve(t, &fakeHandler{status: sampleStatus}, 300*time.Millisecond)
	for range maxConns {
		c, err := net.Dial("unix", s.Path())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	start := time.Now()
	if _, err := dial(t, s).Status(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("waited %v for a slot", d)
	}
}

func TestListen(t *testing.T) {
	dir := t.TempDir()

	t.Run("mode", func(t *testing.T) {
		path := filepath.Join(dir, "new", "sub", "a.sock")
		s, err := Listen(path, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
			t.Errorf("socket mode %v, want srw-------", fi.Mode())
		}
		di, err := os.Stat(filepath.Dir(path))
		if err != nil || di.Mode().Perm() != 0o755 {
			t.Errorf("parent directory mode %v, %v", di.Mode(), err)
		}
		s2, err := Listen(filepath.Join(dir, "b.sock"), 0o660)
		if err != nil {
			t.Fatal(err)
		}
		defer s2.Close()
		if fi, err := os.Stat(s2.Path()); err != nil || fi.Mode().Perm() != 0o660 {
			t.Errorf("socket mode %v, %v; want 0660", fi.Mode(), err)
		}
	})

	t.Run("stale", func(t *testing.T) {
		path := filepath.Join(dir, "stale.sock")
		l, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		l.Close() // a daemon that died: the file stays, nobody listens
		if _, err := os.Stat(path); err != nil {
			t.Fatal(err)
		}
		s, err := Listen(path, 0)
		if err != nil {
			t.Fatalf("stale socket not replaced: %v", err)
		}
		done := make(chan error, 1)
		go func() { done <- s.Serve(context.Background(), &fakeHandler{status: sampleStatus}, nil) }()
		c, err := Dial(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Status(); err != nil {
			t.Error(err)
		}
		c.Close()
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve = %v", err)
		}
	})

	t.Run("live", func(t *testing.T) {
		s := serve(t, &fakeHandler{status: sampleStatus}, 0)
		_, err := Listen(s.Path(), 0)
		if err == nil || err.Error() != "another multiwan is running on "+s.Path() {
			t.Fatalf("second Listen = %v", err)
		}
		// The first daemon is undisturbed.
		if _, err := dial(t, s).Status(); err != nil {
			t.Error(err)
		}
	})

	t.Run("not a socket", func(t *testing.T) {
		path := filepath.Join(dir, "file")
		if err := os.WriteFile(path, []byte("keep me"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Listen(path, 0); err == nil || !strings.Contains(err.Error(), "not a socket") {
			t.Errorf("Listen over a regular file = %v", err)
		}
		if b, _ := os.ReadFile(path); string(b) != "keep me" {
			t.Error("regular file was touched")
		}
	})

	t.Run("close removes", func(t *testing.T) {
		path := filepath.Join(dir, "c.sock")
		s, err := Listen(path, 0)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- s.Serve(context.Background(), &fakeHandler{}, nil) }()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve after Close = %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Serve did not return after Close")
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket file left after Close: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("second Close = %v", err)
		}
	})

	t.Run("close keeps a successor's socket", func(t *testing.T) {
		path := filepath.Join(dir, "d.sock")
		s, err := Listen(path, 0)
		if err != nil {
			t.Fatal(err)
		}
		os.Remove(path) // someone removed it and a new daemon took the path
		s2, err := Listen(path, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer s2.Close()
		s.Close()
		if _, err := os.Stat(path); err != nil {
			t.Errorf("Close removed another server's socket: %v", err)
		}
	})
}

func TestDialNoDaemon(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.sock")
	_, err := Dial(missing)
	if err == nil || err.Error() != "no multiwan daemon answers on "+missing+": no such file or directory" {
		t.Errorf("Dial(missing) = %v", err)
	}

	stale := filepath.Join(dir, "stale.sock")
	l, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	_, err = Dial(stale)
	if err == nil || err.Error() != "no multiwan daemon answers on "+stale+": connection refused" {
		t.Errorf("Dial(stale) = %v", err)
	}
}

func TestServeStopsWithContext(t *testing.T) {
	s, err := Listen(filepath.Join(t.TempDir(), "s.sock"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, &fakeHandler{status: sampleStatus}, nil) }()
	c, err := Dial(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Status(); err != nil {
		t.Fatal(err)
	}
	cancel() // with a client still connected
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	if _, err := c.Status(); err == nil {
		t.Error("a request after shutdown succeeded")
	}
}

func TestTable(t *testing.T) {
	loc := time.FixedZone("X", 0)
	now := time.Date(2026, 3, 4, 15, 0, 0, 0, loc)
	st := Status{
		WANs: []WANStatus{
			{Name: "isp1", Interface: "wan1", State: "up", RTTms: 12.34, LossPct: 0,
				Address: "192.0.2.2", Gateway: "192.0.2.1", Since: now.Add(-3*time.Minute - 12*time.Second)},
			{Name: "isp2", Interface: "wan2", State: "degraded", RTTms: 640, LossPct: 12.5,
				Address: "198.51.100.2", Gateway: "198.51.100.1", Since: now.Add(-26 * time.Hour)},
			{Name: "lte", Interface: "lte", State: "down", LossPct: 100,
				Since: now.Add(-45 * time.Second)},
			{Name: "vpn", Interface: "wg0", State: "unknown"},
		},
		Policies: []PolicyStatus{
			{Name: "failover", Active: []Share{{WAN: "isp1", Share: 1}}, LastResort: "unreachable"},
			{Name: "balanced", Active: []Share{{WAN: "isp1", Share: 0.75}, {WAN: "isp2", Share: 0.25}}},
			{Name: "metered", LastResort: "blackhole"},
		},
		Override: "isp2",
	}
	var b strings.Builder
	st.table(&b, now)
	want := `WAN          STATE     RTT      LOSS   SINCE                    GATEWAY       ADDRESS       POLICIES
isp1 (wan1)  up        12.3ms   0%     3m12s ago (14:56:48)     192.0.2.1     192.0.2.2     failover, balanced 75%
isp2 (wan2)  degraded  640.0ms  12.5%  1d2h ago (Mar  3 13:00)  198.51.100.1  198.51.100.2  balanced 25%
lte          down      -        100%   45s ago (14:59:15)       -             -             -
vpn (wg0)    unknown   -        -      -                        -             -             -

policy failover: isp1 100%
policy balanced: isp1 75%, isp2 25%
policy metered: no usable WAN, new connections get blackhole
override: isp2
`
	if got := b.String(); got != want {
		t.Errorf("table:\n%s\nwant:\n%s", got, want)
	}
	for line := range strings.Lines(b.String()) {
		if len(line) > 121 {
			t.Errorf("line of %d columns: %q", len(line)-1, line)
		}
	}

	b.Reset()
	Status{}.table(&b, now)
	if got, want := b.String(), "WAN  STATE  RTT  LOSS  SINCE  GATEWAY  ADDRESS  POLICIES\noverride: none (automatic)\n"; got != want {
		t.Errorf("empty table:\n%q\nwant\n%q", got, want)
	}
}
