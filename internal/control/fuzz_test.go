package control

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// fuzzAPI is the API over a handler whose event streams end at once.
func fuzzAPI() (*fakeHandler, http.Handler) {
	h := newFake(sampleStatus)
	h.past = events(3)
	h.noWait = true
	return h, NewAPI(h, APIOptions{Control: true})
}

// checkAnswer checks what every answer must be: a known status, JSON, an
// error message on failure.
func checkAnswer(t *testing.T, in []byte, rec *httptest.ResponseRecorder, stream bool) {
	t.Helper()
	if rec.Code < 200 || rec.Code > 599 {
		t.Fatalf("%q: status %d", in, rec.Code)
	}
	if stream && rec.Code == 200 {
		for line := range strings.Lines(rec.Body.String()) {
			var ev Event
			if err := json.Unmarshal([]byte(line), &ev); err != nil {
				t.Fatalf("%q: event line %q: %v", in, line, err)
			}
		}
		return
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%q: content type %q", in, ct)
	}
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("%q: answer %q is not JSON: %v", in, rec.Body, err)
	}
	if rec.Code >= 400 {
		if msg, _ := body["error"].(string); msg == "" || len(body) != 1 {
			t.Fatalf("%q: failed (%d) without an error message: %s", in, rec.Code, rec.Body)
		}
	}
}

// FuzzUseBody feeds arbitrary bodies to POST /v1/use: each gets a JSON
// answer, and only a well-formed one reaches the handler.
func FuzzUseBody(f *testing.F) {
	for _, seed := range []string{
		`{"wan":"isp1"}`, `{"wan":"auto"}`, `{"wan":""}`, `{"wan":"boom"}`, `{"wan":"nope"}`, `{"wan":null}`,
		`{}`, `{`, `null`, `"isp1"`, `{"wan":"isp1","wan":"isp2"}`, "{\"wan\":\"\xff\"}", `{"WAN":"isp1"}`,
		`{"wan":"isp1"} x`, `{"wan":"isp1"}}`, `[[[[[[[[`, `{"wan":"\u0000"}`, " \t\n", `{"wan":1e999}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		h, api := fuzzAPI()
		req := httptest.NewRequest(http.MethodPost, "/v1/use", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		checkAnswer(t, body, rec, false)
		switch rec.Code {
		case 200, 400, 413, 500:
		default:
			t.Fatalf("%q: status %d", body, rec.Code)
		}
		if rec.Code == 200 {
			var want struct{ WAN string }
			if json.Unmarshal(body, &want) != nil {
				t.Fatalf("%q accepted but not JSON", body)
			}
			if h.override != want.WAN && !(h.override == "" && want.WAN == "auto") {
				t.Fatalf("%q: override %q", body, h.override)
			}
		}
	})
}

// FuzzAPI feeds arbitrary bytes as a request, parsed as the server parses
// them, to the whole API: none may crash it, every answer is JSON (or an
// event stream), and only well-formed requests change the daemon.
func FuzzAPI(f *testing.F) {
	for _, seed := range []string{
		"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /v1/use HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n{\"wan\":\"isp2\"}",
		"POST /v1/use HTTP/1.1\r\nHost: x\r\nContent-Length: 14\r\n\r\n{\"wan\":\"boom\"}",
		"POST /v1/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
		"POST /v1/reload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
		"GET /v1/events?past=2 HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /v1/events?past=-1&past=x HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /v1/../v1/status HTTP/1.1\r\nHost: x\r\n\r\n",
		"DELETE /v1/use HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET http://x/v1/status?x=%zz HTTP/1.0\r\n\r\n",
		"POST /v1/use HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nabc",
		"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(in)))
		if err != nil {
			return
		}
		h, api := fuzzAPI()
		// Streams end as soon as they have sent the past events.
		go func() {
			s, ok := <-h.subs
			if ok {
				close(s.ch)
			}
		}()
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		close(h.subs)
		checkAnswer(t, in, rec, req.URL.Path == pathEvents)
		changed := h.reloads > 0 || h.override != ""
		if changed && (rec.Code != 200 || req.Method != http.MethodPost) {
			t.Fatalf("%q changed the daemon and got %d", in, rec.Code)
		}
	})
}

// FuzzReadEvents feeds arbitrary streams to the client's event reader: it
// must end, with events or an error, and never crash.
func FuzzReadEvents(f *testing.F) {
	for _, seed := range []string{
		`{"time":"2026-01-01T00:00:00Z","kind":"state","message":"x"}` + "\n",
		"\n\n{}\n{\"kind\":1}\n", "{", `{"time":"yesterday"}`, strings.Repeat("x", 300),
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		n := 0
		// Lines of at most 200 bytes: the bound is exercised without
		// inputs so large that the fuzzer crawls.
		err := readEvents(bytes.NewReader(in), 200, func(Event) error { n++; return nil })
		if lines := bytes.Count(in, []byte("\n")) + 1; n > lines {
			t.Fatalf("%d events from %d lines", n, lines)
		}
		longest := 0 // the longest line, newline included
		for line := range bytes.Lines(in) {
			longest = max(longest, len(line))
		}
		if errors.Is(err, errTooLong) && longest <= 200 {
			t.Fatalf("%q: line too long, but none is over 200 bytes", in)
		}
		if err == nil && longest > 200 {
			t.Fatalf("%q: a line over 200 bytes went through", in)
		}
	})
}
