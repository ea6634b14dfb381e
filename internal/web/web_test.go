package web

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, method, path string, hdr ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func body(t *testing.T, r *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func checkSecurityHeaders(t *testing.T, path string, r *http.Response) {
	t.Helper()
	want := map[string]string{
		"Content-Security-Policy": CSP,
		"X-Content-Type-Options":  "nosniff",
		"Referrer-Policy":         "no-referrer",
		"X-Frame-Options":         "DENY",
	}
	for k, v := range want {
		if got := r.Header.Get(k); got != v {
			t.Errorf("%s: %s = %q, want %q", path, k, got, v)
		}
	}
	csp := r.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'self'") || strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
		t.Errorf("%s: CSP %q", path, csp)
	}
}

func TestFiles(t *testing.T) {
	h := Handler()
	for _, tc := range []struct{ path, ctype, contains string }{
		{"/", "text/html; charset=utf-8", `<script src="app.js" defer></script>`},
		{"/index.html", "text/html; charset=utf-8", `<h1>multiwan</h1>`},
		{"/app.js", "text/javascript; charset=utf-8", "EventSource"},
		{"/app.css", "text/css; charset=utf-8", "@media (max-width: 700px)"},
		{"/favicon.svg", "image/svg+xml", "<svg"},
	} {
		r := get(t, h, "GET", tc.path)
		b := body(t, r)
		if r.StatusCode != 200 {
			t.Errorf("GET %s: %d", tc.path, r.StatusCode)
			continue
		}
		if got := r.Header.Get("Content-Type"); got != tc.ctype {
			t.Errorf("GET %s: Content-Type %q, want %q", tc.path, got, tc.ctype)
		}
		if got := r.Header.Get("Cache-Control"); got != "no-cache" {
			t.Errorf("GET %s: Cache-Control %q, want no-cache (revalidate with the ETag)", tc.path, got)
		}
		if !strings.Contains(b, tc.contains) {
			t.Errorf("GET %s: no %q in the body", tc.path, tc.contains)
		}
		checkSecurityHeaders(t, tc.path, r)

		etag := r.Header.Get("ETag")
		if etag == "" {
			t.Errorf("GET %s: no ETag", tc.path)
			continue
		}
		if r := get(t, h, "GET", tc.path, "If-None-Match", etag); r.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s with its ETag: %d, want 304", tc.path, r.StatusCode)
		}
		if r := get(t, h, "HEAD", tc.path); r.StatusCode != 200 || body(t, r) != "" || r.Header.Get("Content-Type") != tc.ctype {
			t.Errorf("HEAD %s: %d, %q", tc.path, r.StatusCode, r.Header.Get("Content-Type"))
		}
	}
}

func TestNotFoundAndMethods(t *testing.T) {
	h := Handler()
	for _, p := range []string{"/nope", "/static/app.js", "/app.js/", "/index.htm", "/v1/status", "/metrics", "/../web.go", "/web.go", "/cdp/cdp.go"} {
		r := get(t, h, "GET", p)
		if r.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, r.StatusCode)
		}
		if r.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("GET %s: Cache-Control %q", p, r.Header.Get("Cache-Control"))
		}
		checkSecurityHeaders(t, p, r)
	}
	for _, m := range []string{"POST", "PUT", "DELETE", "OPTIONS"} {
		r := get(t, h, m, "/")
		if r.StatusCode != http.StatusMethodNotAllowed || r.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s /: %d Allow=%q, want 405", m, r.StatusCode, r.Header.Get("Allow"))
		}
		checkSecurityHeaders(t, m+" /", r)
	}
}

// embedded returns every embedded file by name.
func embedded(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := static.ReadFile(p)
		out[strings.TrimPrefix(p, "static/")] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSelfContained: the page works without any other site: no absolute
// or protocol-relative URL in any embedded file (the SVG namespace is a
// name, not a resource), nothing inline that the CSP would refuse, and a
// small payload.
func TestSelfContained(t *testing.T) {
	const svgNS = "http://www.w3.org/2000/svg"
	absolute := regexp.MustCompile(`(?i)((https?|wss?|ftp)://|data:[a-z]+/|javascript:)`)
	protoRelative := regexp.MustCompile(`(?i)((src|href|action|poster|content)\s*=\s*["']?\s*//|url\(\s*["']?\s*//|(fetch|EventSource|WebSocket|import|open)\s*\(\s*["'` + "`" + `]\s*//|@import)`)
	total := 0
	for name, s := range embedded(t) {
		total += len(s)
		if m := absolute.FindAllString(strings.ReplaceAll(s, svgNS, ""), -1); len(m) > 0 {
			t.Errorf("%s refers to other sites: %q", name, m)
		}
		if m := protoRelative.FindAllString(s, -1); len(m) > 0 {
			t.Errorf("%s has protocol-relative URLs: %q", name, m)
		}
	}
	if total > 60<<10 {
		t.Errorf("embedded payload is %d bytes, want < 60 KiB", total)
	}
	t.Logf("embedded payload: %d bytes", total)

	html := embedded(t)["index.html"]
	for _, re := range []string{`<script[^>]*>[^<]+</script>`, `<style`, `\sstyle\s*=`, `\son[a-z]+\s*=`} {
		if m := regexp.MustCompile(`(?i)`+re).FindAllString(html, -1); len(m) > 0 {
			t.Errorf("index.html has inline code or style the CSP refuses: %q", m)
		}
	}
	for _, tag := range regexp.MustCompile(`(?i)<script[^>]*>`).FindAllString(html, -1) {
		if !strings.Contains(tag, "src=") {
			t.Errorf("index.html has an inline script: %s", tag)
		}
	}
	// Every file the page refers to is served.
	h := Handler()
	for _, m := range regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(html, -1) {
		if r := get(t, h, "GET", "/"+m[1]); r.StatusCode != 200 {
			t.Errorf("index.html refers to %s: GET %d", m[1], r.StatusCode)
		}
	}
	// The script uses no eval-like construct the CSP would refuse, and
	// no style attribute (only CSSOM properties, which the CSP allows).
	js := embedded(t)["app.js"]
	for _, bad := range []string{"eval(", "new Function", "setAttribute('style'", `setAttribute("style"`, "style=", "innerHTML = '<script", "document.write"} {
		if strings.Contains(js, bad) {
			t.Errorf("app.js uses %q", bad)
		}
	}
}
