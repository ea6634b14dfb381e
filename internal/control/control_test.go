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
	"net/http"
	"net/http/httptest"
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

// fakeHandler records the requests it is given. Some WAN names make Use
// misbehave: "boom" panics, "fail" fails, "block" waits for release or for
// its context, "slow" takes 600 ms.
type fakeHandler struct {
	mu       sync.Mutex
	status   Status
	override string
	reloads  int
	reload   error
	peers    []Peer
	past     []Event
	// noWait makes "block" and "slow" WANs like any other, for fuzzing.
	noWait bool

	entered   chan struct{} // a blocking Use started
	release   chan struct{} // lets a blocking Use return nil
	cancelled chan error    // a blocking Use saw its context end
	subs      chan fakeSub  // each subscription
}

// fakeSub is one subscription: the test sends on ch (selecting on done,
// which cancel closes) and may close ch to end the stream.
type fakeSub struct {
	n    int
	ch   chan Event
	done chan struct{}
}

func newFake(st Status) *fakeHandler {
	return &fakeHandler{
		status:    st,
		entered:   make(chan struct{}, 100),
		release:   make(chan struct{}),
		cancelled: make(chan error, 100),
		subs:      make(chan fakeSub, 100),
	}
}

func (h *fakeHandler) Status() Status {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.status
	st.Override = h.override
	return st
}

func (h *fakeHandler) Use(ctx context.Context, wan string) error {
	if p, ok := PeerFrom(ctx); ok {
		h.mu.Lock()
		h.peers = append(h.peers, p)
		h.mu.Unlock()
	}
	if h.noWait && (wan == "block" || wan == "slow") {
		wan = "unknown " + wan
	}
	switch wan {
	case "boom":
		panic("handler bug")
	case "fail":
		return errors.New("netlink: operation not permitted")
	case "block":
		h.entered <- struct{}{}
		select {
		case <-h.release:
			return nil
		case <-ctx.Done():
			h.cancelled <- ctx.Err()
			return ctx.Err()
		}
	case "slow":
		select {
		case <-time.After(600 * time.Millisecond):
			return nil
		case <-ctx.Done():
			h.cancelled <- ctx.Err()
			return ctx.Err()
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	switch wan {
	case "", "auto":
		h.override = ""
	case "isp1", "isp2":
		h.override = wan
	default:
		return &Refused{Msg: fmt.Sprintf("unknown WAN %q", wan)}
	}
	return nil
}

func (h *fakeHandler) Reload(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reloads++
	return h.reload
}

func (h *fakeHandler) Subscribe(n int) ([]Event, <-chan Event, func()) {
	h.mu.Lock()
	past := slices.Clone(h.past[max(0, len(h.past)-n):])
	h.mu.Unlock()
	s := fakeSub{n: n, ch: make(chan Event, 16), done: make(chan struct{})}
	select {
	case h.subs <- s:
	default:
		panic("fakeHandler: too many subscriptions for the test to see")
	}
	return past, s.ch, sync.OnceFunc(func() { close(s.done) })
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

// syncBuffer is a log sink for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// serve starts a server on a fresh socket, with limits changed by adjust,
// and stops it when the test ends.
func serve(t *testing.T, h Handler, adjust func(*limits)) (*Server, *syncBuffer) {
	t.Helper()
	s, err := Listen(filepath.Join(t.TempDir(), "run", "multiwan.sock"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if adjust != nil {
		adjust(&s.lim)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, h, log) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Serve did not return after its context ended")
		}
		s.Close()
	})
	return s, logs
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

// connect opens a plain connection to s.
func connect(t *testing.T, s *Server) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", s.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// exchange sends raw request bytes on a new connection and reads one
// response.
func exchange(t *testing.T, s *Server, req string) (*http.Response, []byte) {
	t.Helper()
	c := connect(t, s)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	go io.WriteString(c, req) // the server may answer before it read all
	method, _, _ := strings.Cut(req, " ")
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("no answer to %q: %v", truncate(req, 60), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("answer to %q: %v", truncate(req, 60), err)
	}
	return resp, b
}

// within fails the test unless ch delivers within d.
func within[T any](t *testing.T, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("%s: nothing after %v", what, d)
		panic("unreachable")
	}
}

// readsEOF reports how a read on c ended: "eof" when the server closed it,
// "timeout" when it was still open at the deadline.
func readsEOF(c net.Conn, deadline time.Duration) string {
	c.SetReadDeadline(time.Now().Add(deadline))
	buf := make([]byte, 4096)
	for {
		_, err := c.Read(buf)
		var ne net.Error
		switch {
		case err == nil:
			continue // an error answer the server sent before closing
		case errors.As(err, &ne) && ne.Timeout():
			return "timeout"
		default:
			return "eof"
		}
	}
}

func TestRoundTrip(t *testing.T) {
	h := newFake(sampleStatus)
	s, logs := serve(t, h, nil)
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

	var re *RemoteError
	err = c.Use("nope")
	if !errors.As(err, &re) || err.Error() != `unknown WAN "nope"` || re.Code != http.StatusBadRequest {
		t.Errorf(`Use("nope") = %#v, want the handler's refusal, 400`, err)
	}
	err = c.Use("fail")
	if !errors.As(err, &re) || err.Error() != "netlink: operation not permitted" || re.Code != http.StatusInternalServerError {
		t.Errorf(`Use("fail") = %#v, want the handler's error, 500`, err)
	}
	err = c.Use("boom")
	if !errors.As(err, &re) || err.Error() != "internal error: handler bug" || re.Code != http.StatusInternalServerError {
		t.Errorf(`Use("boom") = %#v, want an internal error, 500`, err)
	}
	if !strings.Contains(logs.String(), "control: handler panicked") {
		t.Error("the panic was not logged")
	}

	if err := c.Reload(); err != nil {
		t.Fatal(err)
	}
	list := config.ErrorList{
		{File: "/etc/multiwan/multiwan.yaml", Line: 3, Col: 5, Msg: `unknown key "wnas"`},
		{File: "/etc/multiwan/multiwan.yaml", Line: 12, Col: 14, Msg: `policy "failover": unknown WAN "isp3"`},
	}
	h.mu.Lock()
	h.reload = &Refused{Msg: list.Error()}
	h.mu.Unlock()
	err = c.Reload()
	if err == nil || err.Error() != list.Error() {
		t.Fatalf("Reload() = %q, want %q", err, list.Error())
	}
	if !errors.As(err, &re) || re.Code != http.StatusUnprocessableEntity || !slices.Equal(re.Lines(), []string{
		`/etc/multiwan/multiwan.yaml:3:5: unknown key "wnas"`,
		`/etc/multiwan/multiwan.yaml:12:14: policy "failover": unknown WAN "isp3"`,
	}) {
		t.Errorf("Reload error %d, lines %q", re.Code, re.Lines())
	}
	h.mu.Lock()
	h.reload = errors.New("nft: table busy")
	h.mu.Unlock()
	if err := c.Reload(); !errors.As(err, &re) || re.Code != http.StatusInternalServerError || re.Msg != "nft: table busy" {
		t.Errorf("failed Reload() = %#v", err)
	}
	if h.reloads != 3 {
		t.Errorf("handler saw %d reloads, want 3", h.reloads)
	}

	// The client still works after errors.
	if _, err := c.Status(); err != nil {
		t.Error(err)
	}

	// use and reload are logged with who asked.
	me := fmt.Sprintf("uid=%d pid=%d", os.Getuid(), os.Getpid())
	for _, want := range []string{`msg="control: use" wan=isp2 ` + me, `msg="control: reload" ` + me,
		`msg="control: use refused" err="unknown WAN \"nope\"" ` + me} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.peers) == 0 || h.peers[0] != (Peer{UID: os.Getuid(), GID: os.Getgid(), PID: os.Getpid()}) {
		t.Errorf("Use saw peers %+v, want this process", h.peers)
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

// TestJSONContract checks the field names of `status --json` (README:
// Status), both as Status marshals and as the daemon sends it.
func TestJSONContract(t *testing.T) {
	s, _ := serve(t, newFake(sampleStatus), nil)
	resp, body := exchange(t, s, "GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /v1/status: %s, %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	var wire map[string]any
	if err := json.Unmarshal(body, &wire); err != nil {
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
	for name, m := range map[string]map[string]any{"wire": wire, "Marshal": direct} {
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
	s, _ = serve(t, newFake(Status{Policies: []PolicyStatus{{Name: "p"}}, Policies6: []PolicyStatus{{Name: "p"}}}), nil)
	_, body = exchange(t, s, "GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
	if want := `{"wans":[],"policies":[{"name":"p","active":[]}],"override":"","policies6":[{"name":"p","active":[]}]}` + "\n"; string(body) != want {
		t.Errorf("empty status:\n got %s\nwant %s", body, want)
	}

	// The daemon's own health and the last events: new fields, and only
	// those.
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	full := sampleStatus
	full.Daemon = &DaemonStatus{Config: "/etc/multiwan/multiwan.yaml", ApplyError: "nft: busy", ApplyErrorAt: &at,
		ApplyFailures: 2, NextRetry: &at, LastApply: &at, Repairs: 1, LastRepair: "ip rule 1100", LastRepairAt: &at,
		RepairBackoff: "10s"}
	full.Events = []Event{{Time: at, Kind: "switch", WAN: "isp2", Family: "ipv4", Policy: "failover", From: "isp1",
		To: "isp2", Cause: "health", Message: "policy failover: isp2 100%"}}
	b, err = json.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	if got := keys(m); !slices.Equal(got, []string{"daemon", "events", "override", "policies", "wans"}) {
		t.Errorf("full status: top-level keys %v", got)
	}
	if got := keys(m["daemon"].(map[string]any)); !slices.Equal(got, []string{"apply_error", "apply_error_at",
		"apply_failures", "config", "last_apply", "last_repair", "last_repair_at", "next_retry", "repair_backoff", "repairs"}) {
		t.Errorf("daemon keys %v", got)
	}
	if got := keys(m["events"].([]any)[0].(map[string]any)); !slices.Equal(got, []string{"cause", "family", "from",
		"kind", "message", "policy", "time", "to", "wan"}) {
		t.Errorf("event keys %v", got)
	}
	// A healthy daemon: config and the repair count, always there.
	b, _ = json.Marshal(DaemonStatus{Config: "c.yaml"})
	if string(b) != `{"config":"c.yaml","repairs":0}` {
		t.Errorf("healthy daemon status %s", b)
	}
	b, _ = json.Marshal(Event{Time: at, Kind: "start", Message: "multiwan started"})
	if string(b) != `{"time":"2026-01-01T00:00:00Z","kind":"start","message":"multiwan started"}` {
		t.Errorf("bare event %s", b)
	}
}

// TestBadRequests: every malformed or unknown request gets a JSON error
// with the right status, reaches no handler method, and the daemon goes
// on serving.
func TestBadRequests(t *testing.T) {
	h := newFake(sampleStatus)
	s, _ := serve(t, h, nil)
	post := func(path, ctype, body string) string {
		hdr := ""
		if ctype != "" {
			hdr = "Content-Type: " + ctype + "\r\n"
		}
		return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n%s", path, hdr, len(body), body)
	}
	const js = "application/json"
	for _, tc := range []struct {
		req  string
		code int
		want string
	}{
		{"GET /v1/nope HTTP/1.1\r\nHost: x\r\n\r\n", 404, `no such endpoint "/v1/nope"`},
		{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 404, "no such endpoint"},
		{"GET /v1/status/ HTTP/1.1\r\nHost: x\r\n\r\n", 404, "no such endpoint"},
		{"GET /v1/" + strings.Repeat("x", 4000) + " HTTP/1.1\r\nHost: x\r\n\r\n", 404, "no such endpoint"},
		{"POST /v1/status HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405, "/v1/status wants GET, not POST"},
		{"GET /v1/use HTTP/1.1\r\nHost: x\r\n\r\n", 405, "/v1/use wants POST, not GET"},
		{"DELETE /v1/reload HTTP/1.1\r\nHost: x\r\n\r\n", 405, "/v1/reload wants POST"},
		{"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 404, "no such endpoint"},
		{"HEAD /v1/events HTTP/1.1\r\nHost: x\r\n\r\n", 405, ""},
		{post("/v1/use", js, `{"wan":"isp1","extra":1}`), 400, `malformed request: json: unknown field "extra"`},
		{post("/v1/use", js, `{"wan":"isp1"`), 400, "malformed request"},
		{post("/v1/use", js, `{"wan":42}`), 400, "malformed request"},
		{post("/v1/use", js, `{"wan":"isp1"} {"wan":"isp2"}`), 400, "more than one JSON value"},
		{post("/v1/use", js, `{"wan":"isp1"}}`), 400, "more than one JSON value"},
		{post("/v1/use", js, `[]`), 400, "malformed request"},
		{post("/v1/use", js, `{}`), 400, `no "wan"`},
		{post("/v1/use", js, `{"wan":null}`), 400, `no "wan"`},
		{post("/v1/use", js, `null`), 400, `no "wan"`},
		{post("/v1/use", js, ``), 400, "empty body"},
		{post("/v1/use", js, "\x00\xff\xfe"), 400, "malformed request"},
		{post("/v1/use", js, `{"wan":"`+strings.Repeat("x", 100)+`"}`), 400, "WAN name longer than 64 bytes"},
		{post("/v1/use", js, `{"`+strings.Repeat("x", 10000)+`":1}`), 400, "unknown field"},
		{post("/v1/use", js, strings.Repeat("[", 20000)), 400, "malformed request"},
		{post("/v1/use", "text/plain", `{"wan":"isp1"}`), 415, "application/json"},
		{post("/v1/use", "application/x-www-form-urlencoded", `wan=isp1`), 415, "application/json"},
		{post("/v1/use", "garbage;;", `{"wan":"isp1"}`), 415, "application/json"},
		{post("/v1/reload", js, `{"force":true}`), 400, "unknown field"},
		{post("/v1/reload", "text/plain", `{}`), 415, "application/json"},
		{"GET /v1/events?past=-1 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "past="},
		{"GET /v1/events?past=abc HTTP/1.1\r\nHost: x\r\n\r\n", 400, "past="},
		{"GET /v1/events?past=1&past=2 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "more than once"},
		{"GET /v1/events?past=99999999999999999999999 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "past="},
		{"GET /v1/events?past=%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400, "malformed query"},
	} {
		resp, body := exchange(t, s, tc.req)
		name := truncate(tc.req, 70)
		if resp.StatusCode != tc.code {
			t.Errorf("%q: %s, want %d; body %s", name, resp.Status, tc.code, body)
			continue
		}
		if resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%q: content type %q", name, resp.Header.Get("Content-Type"))
		}
		if tc.code == 405 && resp.Header.Get("Allow") == "" {
			t.Errorf("%q: 405 without Allow", name)
		}
		if strings.HasPrefix(tc.req, "HEAD") {
			continue
		}
		var e map[string]any
		if err := json.Unmarshal(body, &e); err != nil || len(e) != 1 {
			t.Errorf("%q: answer %q is not {\"error\": ...}: %v", name, body, err)
			continue
		}
		msg, _ := e["error"].(string)
		if !strings.Contains(msg, tc.want) {
			t.Errorf("%q: error %q, want it to contain %q", name, msg, tc.want)
		}
		if len(msg) > 300 {
			t.Errorf("%q: error of %d bytes echoes the request", name, len(msg))
		}
	}
	h.mu.Lock()
	if h.reloads != 0 || h.override != "" || len(h.peers) != 0 {
		t.Errorf("bad requests reached the handler: %d reloads, override %q, uses %d", h.reloads, h.override, len(h.peers))
	}
	h.mu.Unlock()
	if len(h.subs) != 0 {
		t.Errorf("bad requests subscribed %d times", len(h.subs))
	}

	// Fine requests in the raw: a reload without a body or with {}, and
	// a content type with parameters.
	for _, req := range []string{
		"POST /v1/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
		post("/v1/reload", js, `{}`),
		post("/v1/use", "application/json; charset=utf-8", `{"wan":"isp1"}`),
		post("/v1/use", "", ` {"wan":"auto"} `),
	} {
		if resp, body := exchange(t, s, req); resp.StatusCode != 200 || string(body) != "{\"ok\":true}\n" {
			t.Errorf("%q: %s %s", truncate(req, 70), resp.Status, body)
		}
	}
	if _, err := dial(t, s).Status(); err != nil {
		t.Error(err)
	}
}

// TestReadOnly: an API built without Control serves status and events
// only.
func TestReadOnly(t *testing.T) {
	h := newFake(sampleStatus)
	api := NewAPI(h, APIOptions{})
	for _, tc := range []struct {
		method, path, body string
		code               int
	}{
		{"GET", "/v1/status", "", 200},
		{"POST", "/v1/use", `{"wan":"isp1"}`, 403},
		{"POST", "/v1/reload", "", 403},
		{"GET", "/v1/use", "", 405},
	} {
		req, _ := http.NewRequest(tc.method, "http://x"+tc.path, strings.NewReader(tc.body))
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		if rec.Code != tc.code {
			t.Errorf("%s %s: %d, want %d: %s", tc.method, tc.path, rec.Code, tc.code, rec.Body)
		}
	}
	if h.reloads != 0 || h.override != "" {
		t.Error("a read-only API changed the daemon")
	}
}

// TestBodyTooLarge: a 10 MiB body is refused with 413 before it is read,
// with or without a length, and the daemon goes on.
func TestBodyTooLarge(t *testing.T) {
	h := newFake(sampleStatus)
	s, _ := serve(t, h, nil)
	big := strings.Repeat(" ", 10<<20)
	for _, req := range []string{
		fmt.Sprintf("POST /v1/use HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(big), big),
		"POST /v1/use HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(big), big),
	} {
		resp, body := exchange(t, s, req)
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), `"error":"request body larger than 65536 bytes"`) {
			t.Errorf("%q: %s %s", truncate(req, 90), resp.Status, body)
		}
		if !resp.Close {
			t.Errorf("%q: connection kept open after a body too large", truncate(req, 90))
		}
	}
	// A body of exactly MaxBody bytes is fine.
	body := `{"wan":"isp1"}` + strings.Repeat(" ", MaxBody-14)
	resp, b := exchange(t, s, fmt.Sprintf("POST /v1/use HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(body), body))
	if resp.StatusCode != 200 {
		t.Errorf("body of MaxBody bytes: %s %s", resp.Status, b)
	}
	if _, err := dial(t, s).Status(); err != nil {
		t.Error(err)
	}
}

// TestHostileBytes: garbage, HTTP/0.9, huge headers and the like are
// refused by the server without harm.
func TestHostileBytes(t *testing.T) {
	h := newFake(sampleStatus)
	s, _ := serve(t, h, nil)
	for _, tc := range []struct {
		name, req string
		code      int // 0: the server just hangs up
	}{
		{"garbage", "\x00\xff\xfe garbage\r\n\r\n", 400},
		{"garbage without end", strings.Repeat("\x16\x03\x01", 10000), 431},
		{"HTTP/0.9", "GET /v1/status\r\n\r\n", 400},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 404},
		{"HTTP/1.1 without Host", "GET /v1/status HTTP/1.1\r\n\r\n", 400},
		{"huge header", "GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Junk: " + strings.Repeat("a", 100<<10) + "\r\n\r\n", 431},
		{"many headers", "GET /v1/status HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-A: b\r\n", 5000) + "\r\n", 431},
		{"bad header", "GET /v1/status HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n", 400},
		{"bad chunking", "POST /v1/use HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400},
		{"two lengths", "POST /v1/use HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400},
	} {
		c := connect(t, s)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		go io.WriteString(c, tc.req)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		switch {
		case tc.code == 0 && err == nil:
			t.Errorf("%s: answered %s", tc.name, resp.Status)
		case tc.code != 0 && err != nil:
			t.Errorf("%s: no answer: %v", tc.name, err)
		case tc.code != 0 && resp.StatusCode != tc.code:
			t.Errorf("%s: %s, want %d", tc.name, resp.Status, tc.code)
		}
		if err == nil {
			resp.Body.Close()
		}
		if got := readsEOF(c, 5*time.Second); got != "eof" {
			t.Errorf("%s: connection still open", tc.name)
		}
	}
	if st, err := dial(t, s).Status(); err != nil || len(st.WANs) != 2 {
		t.Errorf("after hostile clients: %v", err)
	}
}

// TestIdleConnectionsDoNotStarveStatus: with 300 connections open that
// send nothing, a status still answers within a second, both with the
// shipped limits and with a header timeout so long that only evicting idle
// connections can make room.
func TestIdleConnectionsDoNotStarveStatus(t *testing.T) {
	for _, tc := range []struct {
		name   string
		adjust func(*limits)
	}{
		{"defaults", nil},
		{"eviction only", func(l *limits) { l.readHeaderTimeout, l.idleTimeout = time.Minute, time.Minute }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := serve(t, newFake(sampleStatus), tc.adjust)
			idle := make([]net.Conn, 300)
			for i := range idle {
				idle[i] = connect(t, s)
			}
			c := dial(t, s)
			for round := range 3 {
				start := time.Now()
				st, err := c.Status()
				took := time.Since(start)
				if err != nil || len(st.WANs) != 2 {
					t.Fatalf("round %d: status with 300 idle connections: %v", round, err)
				}
				if took >= time.Second {
					t.Errorf("round %d: status took %v with 300 idle connections", round, took)
				}
				t.Logf("round %d: status in %v", round, took)
				c.Close() // a new connection each round
			}
			if tc.adjust == nil {
				return
			}
			// The oldest idle connections were dropped for the new ones;
			// the newest are still open.
			if got := readsEOF(idle[0], 2*time.Second); got != "eof" {
				t.Errorf("oldest idle connection: %s, want dropped", got)
			}
			if got := readsEOF(idle[len(idle)-1], 100*time.Millisecond); got != "timeout" {
				t.Errorf("newest idle connection: %s, want still open", got)
			}
		})
	}
}

// TestReconnectingIdleFlood: 300 clients that send nothing and reconnect
// as soon as they are dropped, so that 300 idle connections are always
// open or waiting to be accepted: status still answers within a second.
func TestReconnectingIdleFlood(t *testing.T) {
	s, _ := serve(t, newFake(sampleStatus), nil)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	dropped := 0
	defer func() {
		close(stop)
		wg.Wait()
	}()
	for range 300 {
		wg.Go(func() {
			for {
				c, err := net.Dial("unix", s.Path())
				if err != nil {
					select {
					case <-stop:
						return
					case <-time.After(10 * time.Millisecond):
						continue
					}
				}
				closed := make(chan struct{})
				go func() {
					readsEOF(c, time.Minute)
					close(closed)
				}()
				select {
				case <-stop:
					c.Close()
					<-closed
					return
				case <-closed:
					c.Close()
					mu.Lock()
					dropped++
					mu.Unlock()
				}
			}
		})
	}
	c := dial(t, s)
	var worst time.Duration
	for range 10 {
		start := time.Now()
		if _, err := c.Status(); err != nil {
			t.Fatal(err)
		}
		worst = max(worst, time.Since(start))
		c.Close()
	}
	mu.Lock()
	t.Logf("worst status %v; %d idle connections dropped meanwhile", worst, dropped)
	mu.Unlock()
	// The flood runs in this process and competes with the server for the
	// CPU: unloaded, status takes 0.2–0.5 s under -race; under -race on a
	// machine busy with other work the flood takes most of the CPU. The
	// bound is looser than that of 300 idle connections for that reason.
	if worst >= 5*time.Second {
		t.Errorf("status took %v under a flood of idle connections", worst)
	}
}

// TestEvictionOrder: when full, a connection that never sent a request is
// dropped before one kept alive after a request, even a newer one.
func TestEvictionOrder(t *testing.T) {
	s, _ := serve(t, newFake(sampleStatus), func(l *limits) {
		l.maxConns, l.readHeaderTimeout, l.idleTimeout = 3, time.Minute, time.Minute
	})
	used := connect(t, s)
	used.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(used)
	io.WriteString(used, "GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	fresh := []net.Conn{connect(t, s), connect(t, s)}
	// A fourth connection: one must go.
	if resp, body := exchange(t, s, "GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 200 {
		t.Fatalf("status when full: %s %s", resp.Status, body)
	}
	if got := readsEOF(fresh[0], 5*time.Second); got != "eof" {
		t.Errorf("oldest connection that never sent a request: %s, want dropped", got)
	}
	if got := readsEOF(used, 100*time.Millisecond); got != "timeout" {
		t.Errorf("kept-alive connection: %s, want still open", got)
	}
}

// TestIdleClientDropped: a client that connects and sends nothing, or
// sends half a request, is dropped within the header timeout.
func TestIdleClientDropped(t *testing.T) {
	s, _ := serve(t, newFake(sampleStatus), nil)
	idle := connect(t, s)
	half := connect(t, s)
	io.WriteString(half, "GET /v1/status HTTP/1.1\r\nHo")
	start := time.Now()
	// Meanwhile others are served.
	if _, err := dial(t, s).Status(); err != nil {
		t.Error(err)
	}
	for _, c := range []net.Conn{idle, half} {
		if got := readsEOF(c, 5*time.Second); got != "eof" {
			t.Errorf("idle client: %s", got)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("idle clients dropped after %v, want about %v", d, readHeaderTimeout)
	}
}

// TestSlowloris: a client that sends its header a byte per 100 ms is
// dropped before it is done, and never answered.
func TestSlowloris(t *testing.T) {
	s, _ := serve(t, newFake(sampleStatus), nil)
	c := connect(t, s)
	req := "GET /v1/status HTTP/1.1\r\nHost: x\r\nUser-Agent: slowloris\r\n\r\n" // 4.8 s at this pace
	closed := make(chan string, 1)
	go func() { closed <- readsEOF(c, 10*time.Second) }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	sent := 0
	for sent < len(req) {
		select {
		case how := <-closed:
			if how != "eof" {
				t.Fatalf("slow client: %s", how)
			}
			d := time.Since(start)
			t.Logf("dropped after %v and %d of %d bytes", d, sent, len(req))
			if d > 3*time.Second {
				t.Errorf("slow client dropped after %v", d)
			}
			return
		case <-tick.C:
			if _, err := c.Write([]byte{req[sent]}); err != nil {
				// Dropped: the read sees EOF next.
				continue
			}
			sent++
		}
	}
	t.Fatalf("the whole header went through at a byte per 100 ms")
}

// TestBusyConnectionsMakeAcceptWait: with every connection running a
// request, a new one waits for a place instead of evicting a busy one.
func TestBusyConnectionsMakeAcceptWait(t *testing.T) {
	h := newFake(sampleStatus)
	s, _ := serve(t, h, func(l *limits) { l.maxConns = 3 })
	c, c2 := dial(t, s), dial(t, s)
	results := make(chan error, 3)
	for range 3 {
		go func() { results <- c.Use("block") }()
		within(t, h.entered, 5*time.Second, "blocking use")
	}
	status := make(chan error, 1)
	go func() {
		_, err := c2.Status()
		status <- err
	}()
	select {
	case err := <-status:
		t.Fatalf("status answered (%v) while every connection was busy", err)
	case <-time.After(300 * time.Millisecond):
	}
	h.release <- struct{}{}
	if err := within(t, results, 5*time.Second, "released use"); err != nil {
		t.Error(err)
	}
	if err := within(t, status, 5*time.Second, "status after a place freed"); err != nil {
		t.Error(err)
	}
	close(h.release)
	for range 2 {
		if err := within(t, results, 5*time.Second, "released use"); err != nil {
			t.Error(err)
		}
	}
}

// TestClientGoneCancelsUse: a client that hangs up while the daemon works
// on its use cancels the work's context.
func TestClientGoneCancelsUse(t *testing.T) {
	h := newFake(sampleStatus)
	s, _ := serve(t, h, nil)
	c := connect(t, s)
	io.WriteString(c, "POST /v1/use HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\n\r\n{\"wan\":\"block\"}")
	within(t, h.entered, 5*time.Second, "use")
	c.Close()
	if err := within(t, h.cancelled, 5*time.Second, "context cancelled after the client left"); !errors.Is(err, context.Canceled) {
		t.Errorf("ctx.Err() = %v", err)
	}
}

// TestLongUseOutlivesReadTimeout: the server's read timeout bounds reading
// the request, not the daemon's work on it.
func TestLongUseOutlivesReadTimeout(t *testing.T) {
	h := newFake(sampleStatus)
	s, _ := serve(t, h, func(l *limits) { l.readTimeout, l.readHeaderTimeout = 200*time.Millisecond, 200*time.Millisecond })
	if err := dial(t, s).Use("slow"); err != nil {
		t.Errorf("use taking 3× the read timeout: %v", err)
	}
	select {
	case err := <-h.cancelled:
		t.Errorf("use cancelled: %v", err)
	default:
	}
}

func events(n int) []Event {
	evs := make([]Event, n)
	for i := range evs {
		evs[i] = Event{Time: time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC), Kind: "state", WAN: "isp1",
			Message: fmt.Sprintf("event %d", i)}
	}
	return evs
}

// TestEvents: a stream gives the past events asked for, then each live one
// as it happens, and ends when the daemon closes the subscription.
func TestEvents(t *testing.T) {
	h := newFake(sampleStatus)
	h.past = events(5)
	s, _ := serve(t, h, nil)
	c := dial(t, s)
	got := make(chan Event)
	done := make(chan error, 1)
	go func() {
		done <- c.Events(context.Background(), 3, func(ev Event) error {
			got <- ev
			return nil
		})
	}()
	sub := within(t, h.subs, 5*time.Second, "subscription")
	if sub.n != 3 {
		t.Errorf("subscribed for %d past events, want 3", sub.n)
	}
	for _, want := range h.past[2:] {
		if ev := within(t, got, 5*time.Second, "past event"); !reflect.DeepEqual(ev, want) {
			t.Errorf("past event %+v, want %+v", ev, want)
		}
	}
	// Each live event arrives before the next is sent: flushed one by one.
	for _, want := range events(3) {
		want.Kind = "switch"
		sub.ch <- want
		if ev := within(t, got, 5*time.Second, "live event"); !reflect.DeepEqual(ev, want) {
			t.Errorf("live event %+v, want %+v", ev, want)
		}
	}
	close(sub.ch) // the daemon drops the subscriber
	if err := within(t, done, 5*time.Second, "end of stream"); err != nil {
		t.Errorf("Events = %v, want nil when the daemon ends the stream", err)
	}
	within(t, sub.done, 5*time.Second, "cancel")

	// The wire format.
	h.past = events(1)
	cc := connect(t, s)
	cc.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(cc, "GET /v1/events?past=5000 HTTP/1.1\r\nHost: x\r\n\r\n")
	sub = within(t, h.subs, 5*time.Second, "subscription")
	if sub.n != MaxPast {
		t.Errorf("past=5000 subscribed for %d, want %d", sub.n, MaxPast)
	}
	resp, err := http.ReadResponse(bufio.NewReader(cc), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Errorf("events: %s %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	close(sub.ch)
	b, err := io.ReadAll(resp.Body)
	if want := `{"time":"2026-01-01T00:00:00Z","kind":"state","wan":"isp1","message":"event 0"}` + "\n"; err != nil || string(b) != want {
		t.Errorf("stream %q, %v; want %q", b, err, want)
	}
}

// TestStreamOutlivesReadTimeout: a quiet stream stays open past the
// server's timeouts, and ends cleanly after another quiet time.
func TestStreamOutlivesReadTimeout(t *testing.T) {
	h := newFake(sampleStatus)
	s, _ := serve(t, h, func(l *limits) {
		l.readTimeout, l.readHeaderTimeout, l.idleTimeout = 200*time.Millisecond, 200*time.Millisecond, 200*time.Millisecond
		l.writeTimeout = 200 * time.Millisecond
	})
	got := make(chan Event, 1)
	done := make(chan error, 1)
	go func() {
		done <- dial(t, s).Events(context.Background(), 0, func(ev Event) error { got <- ev; return nil })
	}()
	sub := within(t, h.subs, 5*time.Second, "subscription")
	quiet := time.NewTimer(800 * time.Millisecond) // 4× every timeout of the server
	defer quiet.Stop()
	select {
	case err := <-done:
		t.Fatalf("stream ended while quiet: %v", err)
	case <-sub.done:
		t.Fatal("subscription cancelled while quiet")
	case <-quiet.C:
	}
	sub.ch <- Event{Kind: "switch", Message: "late"}
	if ev := within(t, got, 5*time.Second, "event after a quiet time"); ev.Message != "late" {
		t.Errorf("event %+v", ev)
	}
	quiet.Reset(800 * time.Millisecond)
	<-quiet.C
	close(sub.ch)
	if err := within(t, done, 5*time.Second, "end of stream"); err != nil {
		t.Error(err)
	}
}

// TestEventsClientGone: a client that stops reading its stream, by going
// away or by cancelling, ends its subscription.
func TestEventsClientGone(t *testing.T) {
	h := newFake(sampleStatus)
	s, _ := serve(t, h, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dial(t, s).Events(ctx, 0, func(Event) error { return nil }) }()
	sub := within(t, h.subs, 5*time.Second, "subscription")
	cancel()
	if err := within(t, done, 5*time.Second, "Events after cancel"); err != nil {
		t.Errorf("Events after cancel = %v", err)
	}
	within(t, sub.done, 5*time.Second, "subscription cancelled after the client left")

	// fn's error ends the stream too, and is returned.
	h.past = events(2)
	stop := errors.New("enough")
	go func() { done <- dial(t, s).Events(context.Background(), 2, func(Event) error { return stop }) }()
	sub = within(t, h.subs, 5*time.Second, "subscription")
	if err := within(t, done, 5*time.Second, "Events"); err != stop {
		t.Errorf("Events = %v, want fn's error", err)
	}
	within(t, sub.done, 5*time.Second, "subscription cancelled after fn failed")
}

// TestEventsNonReader: a client that opens a stream and never reads it is
// cut off by the write deadline, and its subscription cancelled, while the
// daemon only ever sends without waiting.
func TestEventsNonReader(t *testing.T) {
	h := newFake(sampleStatus)
	s, logs := serve(t, h, func(l *limits) { l.writeTimeout = 300 * time.Millisecond })
	c := connect(t, s)
	io.WriteString(c, "GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
	sub := within(t, h.subs, 5*time.Second, "subscription")
	big := Event{Kind: "state", Message: strings.Repeat("x", 8<<10)}
	sent := 0
	deadline := time.After(20 * time.Second)
	for {
		select {
		case sub.ch <- big:
			sent++
			continue
		case <-sub.done:
			t.Logf("cancelled after %d events of 8 KiB", sent)
		case <-deadline:
			t.Fatalf("subscription of a client that does not read still open after %d events", sent)
		}
		break
	}
	if st, err := dial(t, s).Status(); err != nil || len(st.WANs) != 2 {
		t.Errorf("status after a stuck stream: %v\n%s", err, logs)
	}
}

// TestEventStreamLimit: streams beyond the bound are refused with 503
// until one ends.
func TestEventStreamLimit(t *testing.T) {
	h := newFake(sampleStatus)
	s, _ := serve(t, h, func(l *limits) { l.maxStreams = 2 })
	var cancels []context.CancelFunc
	var subs []fakeSub
	done := make(chan error, 3)
	for range 2 {
		ctx, cancel := context.WithCancel(context.Background())
		cancels = append(cancels, cancel)
		go func() { done <- dial(t, s).Events(ctx, 0, func(Event) error { return nil }) }()
		subs = append(subs, within(t, h.subs, 5*time.Second, "subscription"))
	}
	defer func() {
		for _, c := range cancels {
			c()
		}
	}()
	var re *RemoteError
	err := dial(t, s).Events(context.Background(), 0, func(Event) error { return nil })
	if !errors.As(err, &re) || re.Code != http.StatusServiceUnavailable || !strings.Contains(re.Msg, "too many event streams (2)") {
		t.Fatalf("third stream: %v", err)
	}
	cancels[0]()
	within(t, done, 5*time.Second, "first stream ended")
	within(t, subs[0].done, 5*time.Second, "first subscription cancelled")
	// The place frees when the handler returns, just after cancel.
	ok := false
	for range 50 {
		ctx, cancel := context.WithCancel(context.Background())
		cancels = append(cancels, cancel)
		go func() { done <- dial(t, s).Events(ctx, 0, func(Event) error { return nil }) }()
		select {
		case <-h.subs:
			ok = true
		case err := <-done:
			if !errors.As(err, &re) || re.Code != 503 {
				t.Fatal(err)
			}
			continue
		case <-time.After(5 * time.Second):
			t.Fatal("no answer to a stream request")
		}
		break
	}
	if !ok {
		t.Error("no stream allowed after one ended")
	}
}

// TestServeStops: at its context's end Serve drops idle clients, ends
// streams, lets a request in flight finish, then returns.
func TestServeStops(t *testing.T) {
	h := newFake(sampleStatus)
	s, err := Listen(filepath.Join(t.TempDir(), "s.sock"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, h, nil) }()

	c := dial(t, s)
	if _, err := c.Status(); err != nil {
		t.Fatal(err)
	}
	idle := connect(t, s)
	streamDone := make(chan error, 1)
	go func() { streamDone <- c.Events(context.Background(), 0, func(Event) error { return nil }) }()
	within(t, h.subs, 5*time.Second, "subscription")
	used := make(chan error, 1)
	go func() { used <- c.Use("block") }()
	within(t, h.entered, 5*time.Second, "use")

	cancel()
	if err := within(t, streamDone, 5*time.Second, "stream end at shutdown"); err != nil {
		t.Errorf("stream at shutdown: %v", err)
	}
	if got := readsEOF(idle, 5*time.Second); got != "eof" {
		t.Errorf("idle client at shutdown: %s", got)
	}
	select {
	case err := <-served:
		t.Fatalf("Serve returned (%v) with a request in flight", err)
	default:
	}
	h.release <- struct{}{}
	if err := within(t, used, 5*time.Second, "use in flight"); err != nil {
		t.Errorf("use in flight at shutdown: %v", err)
	}
	if err := within(t, served, 5*time.Second, "Serve"); err != nil {
		t.Errorf("Serve = %v", err)
	}
	if _, err := c.Status(); err == nil {
		t.Error("a request after shutdown succeeded")
	}
}

// TestServeGraceEnds: a request that outlasts the grace period has its
// context cancelled, and Serve returns.
func TestServeGraceEnds(t *testing.T) {
	h := newFake(sampleStatus)
	s, err := Listen(filepath.Join(t.TempDir(), "s.sock"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.lim.shutdownGrace = 200 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, h, nil) }()
	used := make(chan error, 1)
	go func() { used <- dial(t, s).Use("block") }()
	within(t, h.entered, 5*time.Second, "use")
	cancel()
	if err := within(t, h.cancelled, 5*time.Second, "use cancelled after the grace period"); !errors.Is(err, context.Canceled) {
		t.Errorf("ctx.Err() = %v", err)
	}
	if err := within(t, served, 5*time.Second, "Serve"); err != nil {
		t.Errorf("Serve = %v", err)
	}
	if err := within(t, used, 5*time.Second, "client"); err == nil {
		t.Error("a use cut off at shutdown succeeded")
	}
}

// TestManyClients: more clients at once than there are connections are
// all served, none refused.
func TestManyClients(t *testing.T) {
	h := newFake(sampleStatus)
	s, _ := serve(t, h, nil)
	// Over maxConns, and light enough that the clients, in this process,
	// leave the server some CPU even under -race on a loaded machine.
	const n = 150
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			c, err := Dial(s.Path())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			<-start
			st, err := c.Status()
			if err != nil {
				errs <- err
				return
			}
			if len(st.WANs) != 2 {
				errs <- fmt.Errorf("client %d: %d WANs", i, len(st.WANs))
				return
			}
			if err := c.Use([]string{"isp1", "isp2", "auto"}[i%3]); err != nil {
				errs <- err
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestOldDaemon: a daemon that speaks the line protocol of earlier
// versions is named as such.
func TestOldDaemon(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				bufio.NewReader(c).ReadString('\n')
				io.WriteString(c, `{"ok":false,"error":"malformed request: invalid character 'G'"}`+"\n")
			}()
		}
	}()
	c, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Status()
	if err == nil || !strings.Contains(err.Error(), "does not speak this client's protocol") {
		t.Errorf("Status from an old daemon = %v", err)
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
		go func() { done <- s.Serve(context.Background(), newFake(sampleStatus), nil) }()
		c, err := Dial(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Status(); err != nil {
			t.Error(err)
		}
		c.Close()
		s.Close()
		if err := within(t, done, 10*time.Second, "Serve after Close"); err != nil {
			t.Errorf("Serve = %v", err)
		}
	})

	t.Run("live", func(t *testing.T) {
		s, _ := serve(t, newFake(sampleStatus), nil)
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
		go func() { done <- s.Serve(context.Background(), newFake(Status{}), nil) }()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := within(t, done, 10*time.Second, "Serve after Close"); err != nil {
			t.Errorf("Serve after Close = %v", err)
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket file left after Close: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("second Close = %v", err)
		}
		// Serve on a closed server returns at once.
		if err := s.Serve(context.Background(), newFake(Status{}), nil); err != nil {
			t.Errorf("Serve after Close = %v", err)
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
	// A healthy daemon, and events, add nothing to the table.
	for _, d := range []*DaemonStatus{nil, {Config: "/etc/multiwan/multiwan.yaml", LastApply: &now}} {
		st.Daemon = d
		st.Events = events(3)
		var b strings.Builder
		st.table(&b, now)
		if got := b.String(); got != want {
			t.Errorf("table with daemon %+v:\n%s\nwant:\n%s", d, got, want)
		}
		for line := range strings.Lines(b.String()) {
			if len(line) > 121 {
				t.Errorf("line of %d columns: %q", len(line)-1, line)
			}
		}
	}

	var b strings.Builder
	Status{}.table(&b, now)
	if got, want := b.String(), "WAN  STATE  RTT  LOSS  SINCE  GATEWAY  ADDRESS  POLICIES\noverride: none (automatic)\n"; got != want {
		t.Errorf("empty table:\n%q\nwant\n%q", got, want)
	}
}

// TestTableDaemonProblems: failing applies and repairs get a line each
// after the override.
func TestTableDaemonProblems(t *testing.T) {
	now := time.Date(2026, 3, 4, 15, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { t := now.Add(d); return &t }
	base := "WAN  STATE  RTT  LOSS  SINCE  GATEWAY  ADDRESS  POLICIES\noverride: none (automatic)\n"
	for _, tc := range []struct {
		d    DaemonStatus
		want string
	}{
		{DaemonStatus{ApplyError: "nft: netlink: Error: Could not process rule: Device or resource busy", ApplyErrorAt: at(-2 * time.Second),
			ApplyFailures: 3, NextRetry: at(500 * time.Millisecond)},
			"apply: FAILED 3 times, last 2s ago: nft: netlink: Error: Could not process rule: Device or resource busy; retrying in 1s\n"},
		{DaemonStatus{ApplyError: "routes:\nRTNETLINK answers: File exists", ApplyFailures: 1, ApplyErrorAt: at(-time.Minute - 5*time.Second),
			NextRetry: at(-time.Second)},
			"apply: FAILED once, last 1m5s ago: routes: / RTNETLINK answers: File exists; retrying now\n"},
		{DaemonStatus{ApplyError: "boom"}, "apply: FAILED: boom\n"},
		{DaemonStatus{Repairs: 4, LastRepair: "ip rule 1100 (removed by another program)", LastRepairAt: at(-3 * time.Second)},
			"repairs: 4, last 3s ago: ip rule 1100 (removed by another program)\n"},
		{DaemonStatus{Repairs: 12, LastRepair: "table inet multiwan", LastRepairAt: at(-time.Second), RepairBackoff: "next repair in 30s",
			ApplyError: "x", ApplyFailures: 2},
			"apply: FAILED 2 times: x\nrepairs: 12, last 1s ago: table inet multiwan; slowed down: next repair in 30s\n"},
	} {
		var b strings.Builder
		Status{Daemon: &tc.d}.table(&b, now)
		if got := b.String(); got != base+tc.want {
			t.Errorf("table:\n%s\nwant:\n%s%s", got, base, tc.want)
		}
	}
}
