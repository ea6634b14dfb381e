package control

import (
	"encoding/json"
	"log/slog"
	"testing"
)

// FuzzHandle feeds arbitrary request lines to the request handler: every
// line must get a response that encodes, and none may crash the daemon.
func FuzzHandle(f *testing.F) {
	for _, seed := range []string{
		`{"cmd":"status"}`, `{"cmd":"use","wan":"isp1"}`, `{"cmd":"use","wan":"boom"}`,
		`{"cmd":"reload"}`, `{"cmd":"use","wan":null}`, `{"cmd":"x"}`, `{`, `null`, `"status"`,
		`{"cmd":"status","cmd":"reload"}`, "{\"cmd\":\"use\",\"wan\":\"\xff\"}",
	} {
		f.Add([]byte(seed))
	}
	s := &Server{}
	log := slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, line []byte) {
		h := &fakeHandler{status: sampleStatus}
		resp := s.handle(line, h, log)
		if _, err := json.Marshal(resp); err != nil {
			t.Fatalf("response to %q does not encode: %v", line, err)
		}
		if !resp.OK && resp.Error == "" {
			t.Fatalf("failed response to %q carries no error", line)
		}
	})
}
