// Package web is multiwan's dashboard: a page that shows the WANs' states,
// RTT, loss and traffic over the last hour or day, the policies' shares,
// the daemon's own health and its events, live, and switches WANs for a
// user who entered the control token.
//
// The page is plain HTML, CSS and JavaScript (no framework, charts drawn
// as SVG by hand), embedded in the binary: nothing is fetched from
// elsewhere, nothing is built at install. It reads the control API of the
// listener it is served from (relative URLs: v1/status, v1/history,
// v1/events, and v1/use with the token), which the daemon routes next to
// Handler.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// Headers every answer of Handler carries. The policy allows this
// origin's files and requests only: no inline script or style (the page
// has none), no framing, no forms posted anywhere. (No
// Cross-Origin-Opener-Policy: browsers ignore it, with a console error,
// on plain HTTP to an address other than localhost, which is how the
// dashboard is reached.)
const (
	CSP = "default-src 'self'; base-uri 'none'; object-src 'none'; form-action 'none'; frame-ancestors 'none'"
)

var securityHeaders = map[string]string{
	"Content-Security-Policy":      CSP,
	"X-Content-Type-Options":       "nosniff",
	"Referrer-Policy":              "no-referrer",
	"X-Frame-Options":              "DENY",
	"Cross-Origin-Resource-Policy": "same-origin",
}

// file is one embedded file, ready to serve.
type file struct {
	name  string
	body  []byte
	ctype string
	etag  string
}

var types = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// files maps request paths to the embedded files.
func files() map[string]*file {
	m := map[string]*file{}
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		name := strings.TrimPrefix(p, "static/")
		ctype, ok := types[path.Ext(name)]
		if !ok {
			ctype = "application/octet-stream"
		}
		m["/"+name] = &file{name: name, body: body, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		panic("web: embedded files: " + err.Error()) // cannot happen: the files are in the binary
	}
	m["/"] = m["/index.html"]
	return m
}

// Handler serves the dashboard: the page at /, its script, style sheet
// and icon, with security headers, to GET and HEAD. Any other path is
// 404, any other method 405. The files are cached by the browser and
// revalidated on each load (ETag), so an upgraded daemon's page is seen
// at once.
func Handler() http.Handler {
	m := files()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		for k, v := range securityHeaders {
			h.Set(k, v)
		}
		f, ok := m[r.URL.Path]
		if !ok {
			h.Set("Cache-Control", "no-store")
			http.Error(w, "404 not found", http.StatusNotFound)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			h.Set("Cache-Control", "no-store")
			http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h.Set("Content-Type", f.ctype)
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", f.etag)
		// ServeContent answers If-None-Match (304), HEAD and ranges.
		http.ServeContent(w, r, f.name, time.Time{}, bytes.NewReader(f.body))
	})
}
