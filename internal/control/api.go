// Package control is the daemon's control API and its client: the commands
// `multiwan status`, `use`, `reload` and `events` talk to the running daemon
// through it.
//
// The API is HTTP/1.1 with JSON bodies, served on a unix socket (Listen,
// Serve) and built as one http.Handler (NewAPI) so that other listeners can
// serve it too:
//
//	GET  /v1/status          → 200 Status
//	POST /v1/use {"wan":W}   → 200 {"ok":true}; refused 400, failed 500
//	POST /v1/reload          → 200 {"ok":true}; refused 422, failed 500
//	GET  /v1/events?past=N   → 200 application/x-ndjson, one Event a line
//	                           (text/event-stream when the client accepts it)
//	GET  /v1/history?window=1h|24h[&since=UNIX] → 200 History
//
// Every failure is answered with a JSON object {"error": message}: unknown
// paths 404, wrong methods 405, use or reload on a read-only listener 403,
// bodies over MaxBody 413, other content types than JSON 415, malformed
// JSON or unknown fields 400, too many event streams 503.
//
// Requests are untrusted input. Every read is bounded in size (headers,
// bodies, events asked for) and time (the server's timeouts, a deadline on
// every write), connections and event streams are bounded in number, and
// a full server drops its oldest idle connection for a new one rather than
// make it wait.
package control

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/netip"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/multiwan/multiwan/internal/plan"
)

// Handler carries out requests. Its methods are called from one goroutine per request.
type Handler interface {
	// Status reports the daemon's current view. It must return at once: it never waits for the daemon's loop.
	Status() Status
	// Use makes wan the preferred member of every policy that contains it; "" or "auto" returns to the health-driven choice.
	Use(ctx context.Context, wan string) error
	// Reload re-reads the configuration; an invalid file is refused with a *Refused carrying its FILE:LINE:COL lines.
	Reload(ctx context.Context) error
	// Subscribe returns live events, and the last ones (at most n of them, oldest first). The channel is closed when cancel is called or when the subscriber fell too far behind.
	Subscribe(n int) (past []Event, live <-chan Event, cancel func())
}

// Explainer is a Handler that explains where a new connection goes.
type Explainer interface {
	// Explain traces q; an impossible query is refused (*Refused) with
	// what is wrong in it.
	Explain(ctx context.Context, q plan.Query) (plan.Explanation, error)
}

// Historian is a Handler that keeps the recent past for the dashboard:
// per WAN and family, RTT, loss and state; traffic per WAN.
type Historian interface {
	// History returns the points of window ("1h": one a second, "24h":
	// one a minute) after since (the zero time: all of them).
	History(window string, since time.Time) (History, error)
}

// History is the recent past, as the dashboard draws it. Every series
// has one point per Step, the last one at End.
type History struct {
	Window  string           `json:"window"`
	Step    float64          `json:"step_seconds"`
	End     time.Time        `json:"end"`
	WANs    []WANHistory     `json:"wans"`
	Traffic []TrafficHistory `json:"traffic"`
}

// WANHistory is one WAN's health over a window, for one family. A point
// with no probe answer has a null RTT.
type WANHistory struct {
	WAN     string     `json:"wan"`
	Family  string     `json:"family"`
	RTTms   []*float64 `json:"rtt_ms"`
	LossPct []*float64 `json:"loss_pct"`
	// State is each point's state: up, degraded, down, unknown, or "" when
	// the daemon was not running.
	State []string `json:"state"`
}

// TrafficHistory is one WAN's traffic over a window, in bits per second,
// from multiwan's own counters (bytes in and out of the WAN's interface).
type TrafficHistory struct {
	WAN    string    `json:"wan"`
	InBps  []float64 `json:"in_bps"`
	OutBps []float64 `json:"out_bps"`
}

// Refused is a request the daemon turned down because of what was asked (unknown WAN, invalid config), as opposed to a failure while carrying it out.
type Refused struct{ Msg string }

func (e *Refused) Error() string { return e.Msg }

// Event is one thing that happened in the daemon, for `multiwan events`, status and hooks.
type Event struct {
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"` // state, switch, override, reload, reload-refused, repair, apply-failed, apply-recovered, link, flows-deleted, dns, start, stop
	WAN     string    `json:"wan,omitempty"`
	Family  string    `json:"family,omitempty"` // ipv4, ipv6
	Policy  string    `json:"policy,omitempty"`
	From    string    `json:"from,omitempty"`
	To      string    `json:"to,omitempty"`
	Cause   string    `json:"cause,omitempty"`
	Message string    `json:"message"` // one human-readable line
}

// Limits of the API.
const (
	// MaxBody bounds a request body. Real ones are tiny ({"wan":"isp2"}).
	MaxBody = 64 << 10
	// MaxPast bounds the past events an event stream starts with; a
	// larger past= is cut down to it.
	MaxPast = 1000
	// MaxWANName bounds the WAN name of a use request. Config names have
	// at most 15 characters; the bound keeps junk out of the logs.
	MaxWANName = 64
	// DefaultMaxStreams is how many event streams may be open at once
	// unless APIOptions says otherwise.
	DefaultMaxStreams = 16
	// DefaultWriteTimeout bounds the write of each response, and of each
	// event of a stream, unless APIOptions says otherwise.
	DefaultWriteTimeout = 5 * time.Second
	// DefaultRequestTimeout bounds how long a use or reload may take in the
	// daemon unless APIOptions says otherwise. Clients give up earlier
	// (DefaultClientTimeout); this bound is for those that never do.
	DefaultRequestTimeout = time.Minute
)

// APIOptions configures NewAPI.
type APIOptions struct {
	// Control allows the requests that change the daemon: use and reload.
	// Without it they are answered 403, and only status and events are
	// served. The unix socket sets it; a network listener sets it only for
	// a request that proved it may.
	Control bool
	// Log receives one line per use or reload (with the peer's
	// credentials where known) and per handler panic. Nil discards.
	Log *slog.Logger
	// Done, once closed, ends the event streams: a graceful shutdown waits
	// for the requests in flight, and a stream never ends by itself.
	Done <-chan struct{}
	// MaxStreams bounds the event streams open at once; more are answered
	// 503. Zero means DefaultMaxStreams.
	MaxStreams int
	// WriteTimeout bounds each response write and each event write; a
	// client that does not read is cut off after it. Zero means
	// DefaultWriteTimeout.
	WriteTimeout time.Duration
	// RequestTimeout bounds the daemon's work on one use or reload. Zero
	// means DefaultRequestTimeout.
	RequestTimeout time.Duration
	// Token, when not empty and Control is not set, allows use and reload
	// to a request carrying "Authorization: Bearer TOKEN" (the network
	// listener with http.token_file). A browser never sends such a header
	// by itself, so another site cannot make it act (CSRF); a request that
	// says it comes from another site is refused anyway.
	Token string
}

// NewAPI returns the control API over h.
func NewAPI(h Handler, opt APIOptions) http.Handler {
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	if opt.MaxStreams <= 0 {
		opt.MaxStreams = DefaultMaxStreams
	}
	if opt.WriteTimeout <= 0 {
		opt.WriteTimeout = DefaultWriteTimeout
	}
	if opt.RequestTimeout <= 0 {
		opt.RequestTimeout = DefaultRequestTimeout
	}
	return &api{h: h, opt: opt, log: opt.Log, streams: make(chan struct{}, opt.MaxStreams)}
}

type api struct {
	h       Handler
	opt     APIOptions
	log     *slog.Logger
	streams chan struct{} // one token per open event stream
}

// The API's paths.
const (
	pathStatus  = "/v1/status"
	pathUse     = "/v1/use"
	pathReload  = "/v1/reload"
	pathEvents  = "/v1/events"
	pathHistory = "/v1/history"
	pathExplain = "/v1/explain"
)

// okBody and errorBody are the answers to use and reload, and to any
// failed request.
type (
	okBody struct {
		OK bool `json:"ok"`
	}
	errorBody struct {
		Error string `json:"error"`
	}
)

// useBody is the body of POST /v1/use. WAN is a pointer so that a missing
// field is told from "": {} must not silently mean "auto".
type useBody struct {
	WAN *string `json:"wan"`
}

func (a *api) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	w := &trackingWriter{ResponseWriter: rw}
	defer func() {
		p := recover()
		if p == nil {
			return
		}
		if p == http.ErrAbortHandler {
			panic(p)
		}
		a.log.Error("control: handler panicked", "method", r.Method, "path", truncate(r.URL.Path, 100),
			"panic", p, "stack", string(debug.Stack()))
		if w.wrote {
			// Part of an answer is out: cut the connection, so that the
			// client sees a broken answer rather than a short one.
			panic(http.ErrAbortHandler)
		}
		a.fail(w, http.StatusInternalServerError, fmt.Sprintf("internal error: %v", p))
	}()

	var (
		method  string
		control bool
		serve   func(*trackingWriter, *http.Request)
	)
	switch r.URL.Path {
	case pathStatus:
		method, serve = http.MethodGet, a.status
	case pathUse:
		method, control, serve = http.MethodPost, true, a.use
	case pathReload:
		method, control, serve = http.MethodPost, true, a.reload
	case pathEvents:
		method, serve = http.MethodGet, a.events
	case pathHistory:
		method, serve = http.MethodGet, a.history
	case pathExplain:
		method, serve = http.MethodGet, a.explain
	default:
		a.fail(w, http.StatusNotFound, fmt.Sprintf("no such endpoint %q", truncate(r.URL.Path, 100)))
		return
	}
	if r.Method != method {
		w.Header().Set("Allow", method)
		a.fail(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s wants %s, not %s", r.URL.Path, method, truncate(r.Method, 20)))
		return
	}
	if control && !a.opt.Control && !a.tokenAllows(r) {
		msg := fmt.Sprintf("%s is not allowed on this listener: it is read-only", r.URL.Path)
		if a.opt.Token != "" {
			msg = fmt.Sprintf("%s needs the token (Authorization: Bearer …) from a page of this listener", r.URL.Path)
		}
		a.fail(w, http.StatusForbidden, msg)
		return
	}
	serve(w, r)
}

// tokenAllows reports whether r proves it may change the daemon on a
// read-only listener: the configured token, from a page of this listener.
func (a *api) tokenAllows(r *http.Request) bool {
	if a.opt.Token == "" {
		return false
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(a.opt.Token)) != 1 {
		return false
	}
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		return false
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		u, err := url.Parse(origin)
		if err != nil || u.Host != r.Host {
			return false
		}
	}
	return true
}

// explain answers GET /v1/explain?src=A&dst=B[&proto=P&sport=N&dport=N&iif=IF&local=1].
func (a *api) explain(w *trackingWriter, r *http.Request) {
	ex, ok := a.h.(Explainer)
	if !ok {
		a.fail(w, http.StatusNotFound, "this daemon does not explain")
		return
	}
	q, err := ParseExplainQuery(r.URL.RawQuery)
	if err != nil {
		a.fail(w, http.StatusBadRequest, err.Error())
		return
	}
	out, err := ex.Explain(r.Context(), q)
	var refused *Refused
	switch {
	case errors.As(err, &refused):
		a.fail(w, http.StatusBadRequest, refused.Msg)
	case err != nil:
		a.fail(w, http.StatusInternalServerError, err.Error())
	default:
		a.reply(w, http.StatusOK, out)
	}
}

// ExplainQuery is the query string of GET /v1/explain for q.
func ExplainQuery(q plan.Query) string {
	v := url.Values{}
	if q.Src.IsValid() {
		v.Set("src", q.Src.String())
	}
	if q.Dst.IsValid() {
		v.Set("dst", q.Dst.String())
	}
	if q.Proto != "" {
		v.Set("proto", q.Proto)
	}
	if q.SrcPort != 0 {
		v.Set("sport", strconv.Itoa(int(q.SrcPort)))
	}
	if q.DstPort != 0 {
		v.Set("dport", strconv.Itoa(int(q.DstPort)))
	}
	if q.IIF != "" {
		v.Set("iif", q.IIF)
	}
	if q.Local {
		v.Set("local", "1")
	}
	return v.Encode()
}

// ParseExplainQuery reads the query of GET /v1/explain, saying which part
// is wrong.
func ParseExplainQuery(raw string) (plan.Query, error) {
	var q plan.Query
	v, err := url.ParseQuery(raw)
	if err != nil {
		return q, fmt.Errorf("malformed query: %v", err)
	}
	addr := func(key string) (netip.Addr, error) {
		s := v.Get(key)
		if s == "" {
			return netip.Addr{}, nil
		}
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Addr{}, fmt.Errorf("--%s %q: not an IP address", key, truncate(s, 64))
		}
		return a.Unmap(), nil
	}
	port := func(key string) (uint16, error) {
		s := v.Get(key)
		if s == "" {
			return 0, nil
		}
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil || n == 0 {
			return 0, fmt.Errorf("--%s %q: not a port (1-65535)", key, truncate(s, 20))
		}
		return uint16(n), nil
	}
	if q.Src, err = addr("src"); err != nil {
		return q, err
	}
	if q.Dst, err = addr("dst"); err != nil {
		return q, err
	}
	if q.SrcPort, err = port("sport"); err != nil {
		return q, err
	}
	if q.DstPort, err = port("dport"); err != nil {
		return q, err
	}
	q.Proto = strings.ToLower(v.Get("proto"))
	if q.Proto == "icmpv6" {
		q.Proto = "ipv6-icmp"
	}
	q.IIF = v.Get("iif")
	q.Local = v.Get("local") == "1" || v.Get("local") == "true"
	if q.Local && q.Src.IsValid() {
		q.Wildcard = false // a socket bound to that address
	}
	return q, q.Check()
}

// history answers GET /v1/history?window=1h|24h[&since=UNIX].
func (a *api) history(w *trackingWriter, r *http.Request) {
	hh, ok := a.h.(Historian)
	if !ok {
		a.fail(w, http.StatusNotFound, "this daemon keeps no history")
		return
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		a.fail(w, http.StatusBadRequest, "malformed query: "+err.Error())
		return
	}
	window := q.Get("window")
	if window == "" {
		window = "1h"
	}
	if window != "1h" && window != "24h" {
		a.fail(w, http.StatusBadRequest, fmt.Sprintf("window must be 1h or 24h, not %q", truncate(window, 20)))
		return
	}
	var since time.Time
	if v := q.Get("since"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			a.fail(w, http.StatusBadRequest, fmt.Sprintf("since must be a unix time in seconds, not %q", truncate(v, 20)))
			return
		}
		since = time.Unix(n, 0)
	}
	h, err := hh.History(window, since)
	if err != nil {
		a.fail(w, http.StatusInternalServerError, err.Error())
		return
	}
	a.reply(w, http.StatusOK, h)
}

func (a *api) status(w *trackingWriter, r *http.Request) {
	a.reply(w, http.StatusOK, a.h.Status().normalized())
}

func (a *api) use(w *trackingWriter, r *http.Request) {
	var body useBody
	if !a.decode(w, r, &body, true) {
		return
	}
	if body.WAN == nil {
		a.fail(w, http.StatusBadRequest, `malformed request: no "wan" (use "auto" for the automatic choice)`)
		return
	}
	wan := *body.WAN
	if len(wan) > MaxWANName {
		a.fail(w, http.StatusBadRequest, fmt.Sprintf("malformed request: WAN name longer than %d bytes", MaxWANName))
		return
	}
	a.log.Info("control: use", append([]any{"wan", wan}, peerAttrs(r)...)...)
	ctx, cancel := context.WithTimeout(r.Context(), a.opt.RequestTimeout)
	defer cancel()
	a.result(w, r, "use", a.h.Use(ctx, wan), http.StatusBadRequest)
}

func (a *api) reload(w *trackingWriter, r *http.Request) {
	var body struct{}
	if !a.decode(w, r, &body, false) {
		return
	}
	a.log.Info("control: reload", peerAttrs(r)...)
	ctx, cancel := context.WithTimeout(r.Context(), a.opt.RequestTimeout)
	defer cancel()
	a.result(w, r, "reload", a.h.Reload(ctx), http.StatusUnprocessableEntity)
}

// result answers a use or reload that the daemon carried out, refused
// (refusedCode) or failed.
func (a *api) result(w *trackingWriter, r *http.Request, what string, err error, refusedCode int) {
	if err == nil {
		a.reply(w, http.StatusOK, okBody{OK: true})
		return
	}
	msg := err.Error()
	if msg == "" {
		msg = what + " failed"
	}
	var refused *Refused
	if errors.As(err, &refused) {
		a.log.Info("control: "+what+" refused", append([]any{"err", oneLine(msg)}, peerAttrs(r)...)...)
		a.fail(w, refusedCode, msg)
		return
	}
	if r.Context().Err() != nil {
		// The client went away; nobody reads the answer.
		a.log.Info("control: "+what+" abandoned by the client", append([]any{"err", oneLine(msg)}, peerAttrs(r)...)...)
	} else {
		a.log.Warn("control: "+what+" failed", append([]any{"err", oneLine(msg)}, peerAttrs(r)...)...)
	}
	a.fail(w, http.StatusInternalServerError, msg)
}

// events streams the past events, then live ones, one JSON object a line,
// until the client goes, the subscription ends, or the API is shut down.
func (a *api) events(w *trackingWriter, r *http.Request) {
	past, err := pastParam(r.URL.RawQuery)
	if err != nil {
		a.fail(w, http.StatusBadRequest, err.Error())
		return
	}
	select {
	case a.streams <- struct{}{}:
		defer func() { <-a.streams }()
	default:
		a.fail(w, http.StatusServiceUnavailable, fmt.Sprintf("too many event streams (%d); try again later", cap(a.streams)))
		return
	}
	// A client that goes away is seen by the server's background read,
	// which cancels the request's context (it runs without the read
	// timeout, so a quiet stream is not cut); one that stays and does not
	// read is cut off by the write deadline.
	rc := http.NewResponseController(w)

	pastEvents, live, cancel := a.h.Subscribe(past)
	// Calling cancel lets the daemon forget us: never leave its channel
	// undrained after the client is gone.
	defer cancel()
	if len(pastEvents) > past {
		pastEvents = pastEvents[len(pastEvents)-past:]
	}

	// The end of the stream is written after this returns, perhaps long
	// after the last event's deadline.
	defer func() { _ = rc.SetWriteDeadline(time.Now().Add(a.opt.WriteTimeout)) }()

	// Browsers read server-sent events (EventSource); everything else
	// one JSON object a line.
	sse := strings.Contains(r.Header.Get("Accept"), "text/event-stream")
	if sse {
		w.Header().Set("Content-Type", "text/event-stream")
	} else {
		w.Header().Set("Content-Type", "application/x-ndjson")
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	// The header goes out now, so that the client knows the stream is
	// open even when nothing happens for a while.
	_ = rc.SetWriteDeadline(time.Now().Add(a.opt.WriteTimeout))
	if err := rc.Flush(); err != nil {
		return
	}
	send := func(ev Event) bool {
		b, err := json.Marshal(ev)
		if err != nil {
			a.log.Warn("control: cannot encode event", "err", err)
			return true
		}
		if sse {
			b = append(append([]byte("data: "), b...), '\n')
		}
		_ = rc.SetWriteDeadline(time.Now().Add(a.opt.WriteTimeout))
		if _, err := w.Write(append(b, '\n')); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	for _, ev := range pastEvents {
		if !send(ev) {
			return
		}
	}
	ctx := r.Context()
	for {
		select {
		case ev, ok := <-live:
			if !ok {
				return
			}
			if !send(ev) {
				return
			}
		case <-ctx.Done():
			return
		case <-a.opt.Done:
			return
		}
	}
}

// pastParam reads the past= parameter of an event stream: an integer from
// 0, cut down to MaxPast. Other parameters are ignored.
func pastParam(rawQuery string) (int, error) {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return 0, errors.New("malformed query")
	}
	vs := q["past"]
	switch {
	case len(vs) == 0:
		return 0, nil
	case len(vs) > 1:
		return 0, errors.New("past= given more than once")
	}
	n, err := strconv.Atoi(vs[0])
	if err != nil || n < 0 {
		return 0, fmt.Errorf("past=%q: want a number of events from 0", truncate(vs[0], 20))
	}
	return min(n, MaxPast), nil
}

// decode reads a JSON object body into v, answering the request itself
// when it cannot: 415 for a body that is not JSON, 413 for one larger than
// MaxBody, 400 for malformed JSON, unknown fields or a second value. An
// empty body is fine unless required. It reports whether v was decoded.
func (a *api) decode(w *trackingWriter, r *http.Request, v any, required bool) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		// A browser can send text/plain or a form to any origin without
		// asking; JSON it cannot. Refusing the rest keeps other sites'
		// pages from driving a network listener.
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			a.fail(w, http.StatusUnsupportedMediaType, "the request body must be application/json")
			return false
		}
	}
	if r.ContentLength > MaxBody {
		a.fail(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", MaxBody))
		return false
	}
	// MaxBytesReader wants the server's own ResponseWriter: through it, it
	// tells the server to close the connection instead of reading on.
	b, err := io.ReadAll(http.MaxBytesReader(w.ResponseWriter, r.Body, MaxBody))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		a.fail(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", MaxBody))
		return false
	case err != nil:
		a.fail(w, http.StatusBadRequest, "cannot read the request body: "+truncate(err.Error(), 200))
		return false
	}
	if len(bytes.TrimSpace(b)) == 0 {
		if required {
			a.fail(w, http.StatusBadRequest, "malformed request: empty body, want a JSON object")
			return false
		}
		return true
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		a.fail(w, http.StatusBadRequest, "malformed request: "+truncate(err.Error(), 200))
		return false
	}
	if _, err := dec.Token(); err != io.EOF {
		a.fail(w, http.StatusBadRequest, "malformed request: more than one JSON value")
		return false
	}
	return true
}

// reply writes v as the JSON answer, within the write timeout.
func (a *api) reply(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only a Status holding NaN or ±Inf can get here.
		code = http.StatusInternalServerError
		b, _ = json.Marshal(errorBody{Error: "cannot encode the answer: " + err.Error()})
	}
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(a.opt.WriteTimeout))
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)+1))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// fail answers {"error": msg} with code.
func (a *api) fail(w http.ResponseWriter, code int, msg string) {
	a.reply(w, code, errorBody{Error: msg})
}

// trackingWriter remembers whether anything of the answer was written.
type trackingWriter struct {
	http.ResponseWriter
	wrote bool
}

func (t *trackingWriter) WriteHeader(code int) {
	t.wrote = true
	t.ResponseWriter.WriteHeader(code)
}

func (t *trackingWriter) Write(b []byte) (int, error) {
	t.wrote = true
	return t.ResponseWriter.Write(b)
}

// Unwrap gives http.ResponseController the server's writer.
func (t *trackingWriter) Unwrap() http.ResponseWriter { return t.ResponseWriter }

// peerAttrs are the log attributes naming who sent r.
func peerAttrs(r *http.Request) []any {
	if p, ok := PeerFrom(r.Context()); ok {
		return []any{"uid", p.UID, "pid", p.PID}
	}
	if r.RemoteAddr != "" {
		return []any{"remote", r.RemoteAddr}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
