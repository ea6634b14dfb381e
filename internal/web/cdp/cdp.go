// Package cdp drives a headless Chromium through the Chrome DevTools
// Protocol, for the dashboard's tests: open a page at a size, evaluate
// JavaScript in it, wait for a condition, take a screenshot, and collect
// what the page logged as errors (console errors, uncaught exceptions,
// failed loads, CSP violations).
//
// The browser is started with --remote-debugging-pipe: the protocol runs
// over two pipes (the browser reads fd 3 and writes fd 4, messages end
// with a NUL byte), so no port is opened and the browser can run in
// another network namespace (Options.Exec) than the test. Only the
// standard library is used.
package cdp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Binaries are the names Find looks for, in order.
var Binaries = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome-headless-shell"}

// Find returns the path of a Chromium binary.
func Find() (string, error) {
	for _, name := range Binaries {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no Chromium found (looked for %s); on Debian: apt-get install chromium", strings.Join(Binaries, ", "))
}

// Options configures Launch.
type Options struct {
	// Binary is the browser; empty means Find.
	Binary string
	// Exec is put before the browser's command line, e.g. {"ip", "netns",
	// "exec", NAME} to run it in a network namespace. The file
	// descriptors of the pipes must survive it (ip netns exec keeps them).
	Exec []string
	// Args are more command-line flags.
	Args []string
	// Logf, when set, receives the browser's stderr lines and every
	// problem a page reports.
	Logf func(format string, args ...any)
}

// Flags are the browser's flags besides the pipe and the profile
// directory: headless, as root, without anything that phones home.
var Flags = []string{
	"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
	"--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
	"--disable-sync", "--disable-extensions", "--disable-default-apps", "--disable-dev-shm-usage",
	"--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication",
	"--password-store=basic", "--use-mock-keychain", "--hide-scrollbars", "--mute-audio",
	"--no-zygote", "--font-render-hinting=none",
}

// Browser is a running headless Chromium.
type Browser struct {
	cmd  *exec.Cmd
	w    *os.File // the browser's fd 3
	r    *os.File // the browser's fd 4
	dir  string
	logf func(string, ...any)
	done chan struct{} // closed when the reader stops
	wmu  sync.Mutex

	mu       sync.Mutex
	next     int
	calls    map[int]chan message
	sessions map[string]*Page
	readErr  error
	stderr   bytes.Buffer
}

type message struct {
	ID        int             `json:"id,omitempty"`
	Method    string          `json:"method,omitempty"`
	Params    json.RawMessage `json:"params,omitempty"`
	SessionID string          `json:"sessionId,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

// Launch starts the browser.
func Launch(opt Options) (*Browser, error) {
	bin := opt.Binary
	if bin == "" {
		var err error
		if bin, err = Find(); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp("", "multiwan-chromium-")
	if err != nil {
		return nil, err
	}
	argv := append(append([]string{}, opt.Exec...), bin)
	argv = append(argv, Flags...)
	argv = append(argv, "--remote-debugging-pipe", "--user-data-dir="+dir)
	argv = append(argv, opt.Args...)
	argv = append(argv, "about:blank")

	toR, toW, err := os.Pipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	fromR, fromW, err := os.Pipe()
	if err != nil {
		toR.Close()
		toW.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	b := &Browser{w: toW, r: fromR, dir: dir, logf: opt.Logf, done: make(chan struct{}),
		calls: map[int]chan message{}, sessions: map[string]*Page{}}
	if b.logf == nil {
		b.logf = func(string, ...any) {}
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.ExtraFiles = []*os.File{toR, fromW} // fd 3, fd 4
	cmd.Env = append(os.Environ(), "HOME="+dir)
	cmd.Stderr = &lineWriter{b: b}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		toR.Close()
		toW.Close()
		fromR.Close()
		fromW.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", strings.Join(argv, " "), err)
	}
	toR.Close()
	fromW.Close()
	b.cmd = cmd
	go b.read()
	// The first answer proves the protocol runs.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := b.call(ctx, "", "Browser.getVersion", nil); err != nil {
		b.Close()
		return nil, fmt.Errorf("browser did not answer: %w\n%s", err, b.Stderr())
	}
	return b, nil
}

// lineWriter keeps the browser's stderr (bounded) and logs it.
type lineWriter struct {
	b   *Browser
	buf []byte
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		line := string(l.buf[:i])
		l.buf = l.buf[i+1:]
		l.b.mu.Lock()
		if l.b.stderr.Len() < 1<<20 {
			l.b.stderr.WriteString(line + "\n")
		}
		l.b.mu.Unlock()
		l.b.logf("chromium: %s", line)
	}
	return len(p), nil
}

// Stderr is what the browser wrote to stderr so far (the first MiB).
func (b *Browser) Stderr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stderr.String()
}

func (b *Browser) read() {
	defer close(b.done)
	rd := bufio.NewReaderSize(b.r, 1<<20)
	for {
		raw, err := rd.ReadBytes(0)
		if err != nil {
			b.mu.Lock()
			b.readErr = fmt.Errorf("browser pipe: %w", err)
			for id, ch := range b.calls {
				close(ch)
				delete(b.calls, id)
			}
			b.mu.Unlock()
			return
		}
		var m message
		if err := json.Unmarshal(raw[:len(raw)-1], &m); err != nil {
			continue
		}
		b.mu.Lock()
		if m.ID != 0 {
			if ch, ok := b.calls[m.ID]; ok {
				delete(b.calls, m.ID)
				ch <- m
			}
			b.mu.Unlock()
			continue
		}
		p := b.sessions[m.SessionID]
		b.mu.Unlock()
		if p != nil {
			p.event(m.Method, m.Params)
		}
	}
}

// call sends a command and waits for its answer.
func (b *Browser) call(ctx context.Context, session, method string, params any) (json.RawMessage, error) {
	b.mu.Lock()
	if b.readErr != nil {
		b.mu.Unlock()
		return nil, b.readErr
	}
	b.next++
	id := b.next
	ch := make(chan message, 1)
	b.calls[id] = ch
	b.mu.Unlock()
	msg := map[string]any{"id": id, "method": method}
	if params != nil {
		msg["params"] = params
	}
	if session != "" {
		msg["sessionId"] = session
	}
	raw, err := json.Marshal(msg)
	if err != nil {
		return nil, err
	}
	b.wmu.Lock()
	_, err = b.w.Write(append(raw, 0))
	b.wmu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", method, err)
	}
	select {
	case m, ok := <-ch:
		if !ok {
			b.mu.Lock()
			err := b.readErr
			b.mu.Unlock()
			return nil, fmt.Errorf("%s: %w", method, err)
		}
		if m.Error != nil {
			return nil, fmt.Errorf("%s: %s (%d)", method, m.Error.Message, m.Error.Code)
		}
		return m.Result, nil
	case <-ctx.Done():
		b.mu.Lock()
		delete(b.calls, id)
		b.mu.Unlock()
		return nil, fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// Close ends the browser and everything it started, and removes its
// profile.
func (b *Browser) Close() error {
	if b.cmd == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	_, _ = b.call(ctx, "", "Browser.close", nil)
	cancel()
	exited := make(chan struct{})
	go func() { b.cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
	}
	// Helpers may outlive the browser: the whole group goes.
	syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
	}
	b.w.Close()
	b.r.Close()
	b.cmd = nil
	return os.RemoveAll(b.dir)
}

// Page is a browser tab.
type Page struct {
	b       *Browser
	session string
	target  string

	mu       sync.Mutex
	loads    int
	loaded   chan struct{} // replaced at each load event
	problems []string
	console  []string
}

// NewPage opens a tab of width×height CSS pixels; mobile emulates a phone
// (touch, the viewport meta tag).
func (b *Browser) NewPage(ctx context.Context, width, height int, mobile bool) (*Page, error) {
	res, err := b.call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"})
	if err != nil {
		return nil, err
	}
	var t struct {
		TargetID string `json:"targetId"`
	}
	if err := json.Unmarshal(res, &t); err != nil {
		return nil, err
	}
	res, err = b.call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": t.TargetID, "flatten": true})
	if err != nil {
		return nil, err
	}
	var a struct {
		SessionID string `json:"sessionId"`
	}
	if err := json.Unmarshal(res, &a); err != nil {
		return nil, err
	}
	p := &Page{b: b, session: a.SessionID, target: t.TargetID, loaded: make(chan struct{})}
	b.mu.Lock()
	b.sessions[a.SessionID] = p
	b.mu.Unlock()
	for _, m := range []string{"Page.enable", "Runtime.enable", "Log.enable"} {
		if _, err := p.call(ctx, m, nil); err != nil {
			return nil, err
		}
	}
	if err := p.SetViewport(ctx, width, height, mobile); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Page) call(ctx context.Context, method string, params any) (json.RawMessage, error) {
	return p.b.call(ctx, p.session, method, params)
}

// SetViewport resizes the page.
func (p *Page) SetViewport(ctx context.Context, width, height int, mobile bool) error {
	if _, err := p.call(ctx, "Emulation.setDeviceMetricsOverride", map[string]any{
		"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile,
	}); err != nil {
		return err
	}
	_, err := p.call(ctx, "Emulation.setTouchEmulationEnabled", map[string]any{"enabled": mobile})
	return err
}

// ColorScheme emulates the user's preferred colour scheme: "light",
// "dark", or "" for the default.
func (p *Page) ColorScheme(ctx context.Context, scheme string) error {
	_, err := p.call(ctx, "Emulation.setEmulatedMedia", map[string]any{
		"features": []map[string]string{{"name": "prefers-color-scheme", "value": scheme}},
	})
	return err
}

// event handles a protocol event of this page.
func (p *Page) event(method string, params json.RawMessage) {
	switch method {
	case "Page.loadEventFired":
		p.mu.Lock()
		p.loads++
		close(p.loaded)
		p.loaded = make(chan struct{})
		p.mu.Unlock()
	case "Runtime.consoleAPICalled":
		var e struct {
			Type string `json:"type"`
			Args []struct {
				Value       any    `json:"value"`
				Description string `json:"description"`
			} `json:"args"`
		}
		if json.Unmarshal(params, &e) != nil {
			return
		}
		var parts []string
		for _, a := range e.Args {
			if a.Value != nil {
				parts = append(parts, fmt.Sprint(a.Value))
			} else {
				parts = append(parts, a.Description)
			}
		}
		line := "console." + e.Type + ": " + strings.Join(parts, " ")
		p.record(line, e.Type == "error" || e.Type == "assert")
	case "Runtime.exceptionThrown":
		var e struct {
			Details struct {
				Text      string `json:"text"`
				URL       string `json:"url"`
				Line      int    `json:"lineNumber"`
				Exception struct {
					Description string `json:"description"`
				} `json:"exception"`
			} `json:"exceptionDetails"`
		}
		if json.Unmarshal(params, &e) != nil {
			return
		}
		d := e.Details
		p.record(fmt.Sprintf("uncaught exception at %s:%d: %s %s", d.URL, d.Line+1, d.Text, d.Exception.Description), true)
	case "Log.entryAdded":
		var e struct {
			Entry struct {
				Level  string `json:"level"`
				Source string `json:"source"`
				Text   string `json:"text"`
				URL    string `json:"url"`
			} `json:"entry"`
		}
		if json.Unmarshal(params, &e) != nil {
			return
		}
		en := e.Entry
		p.record(fmt.Sprintf("log %s (%s): %s %s", en.Level, en.Source, en.Text, en.URL), en.Level == "error")
	}
}

func (p *Page) record(line string, problem bool) {
	p.mu.Lock()
	p.console = append(p.console, line)
	if problem {
		p.problems = append(p.problems, line)
	}
	p.mu.Unlock()
	p.b.logf("page: %s", line)
}

// Problems are the errors the page reported so far: console.error,
// uncaught exceptions, and log entries of level error (failed loads, CSP
// violations).
func (p *Page) Problems() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.problems...)
}

// Console is everything the page logged so far, problems included.
func (p *Page) Console() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.console...)
}

// Navigate loads url and waits for its load event.
func (p *Page) Navigate(ctx context.Context, url string) error {
	p.mu.Lock()
	loaded := p.loaded
	p.mu.Unlock()
	res, err := p.call(ctx, "Page.navigate", map[string]any{"url": url})
	if err != nil {
		return err
	}
	var n struct {
		ErrorText string `json:"errorText"`
	}
	if json.Unmarshal(res, &n) == nil && n.ErrorText != "" {
		return fmt.Errorf("navigate to %s: %s", url, n.ErrorText)
	}
	select {
	case <-loaded:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("navigate to %s: no load event: %w", url, ctx.Err())
	}
}

// Eval evaluates a JavaScript expression in the page (awaiting a promise)
// and decodes its value, which must be JSON, into out (nil: ignored).
func (p *Page) Eval(ctx context.Context, expr string, out any) error {
	res, err := p.call(ctx, "Runtime.evaluate", map[string]any{
		"expression": expr, "returnByValue": true, "awaitPromise": true, "userGesture": true,
	})
	if err != nil {
		return err
	}
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		Exception *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(res, &r); err != nil {
		return err
	}
	if r.Exception != nil {
		return fmt.Errorf("evaluate %q: %s %s", expr, r.Exception.Text, r.Exception.Exception.Description)
	}
	if out == nil || len(r.Result.Value) == 0 {
		return nil
	}
	return json.Unmarshal(r.Result.Value, out)
}

// Text is the page's visible text (document.body.innerText).
func (p *Page) Text(ctx context.Context) (string, error) {
	var s string
	err := p.Eval(ctx, "document.body.innerText", &s)
	return s, err
}

// WaitFor evaluates expr every 50 ms until it is true, and returns how
// long that took. On timeout the error names expr and the last error.
func (p *Page) WaitFor(ctx context.Context, expr string) (time.Duration, error) {
	start := time.Now()
	var last error
	for {
		var ok bool
		last = p.Eval(ctx, "!!("+expr+")", &ok)
		if last == nil && ok {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			if last == nil {
				last = errors.New("still false")
			}
			return time.Since(start), fmt.Errorf("waiting for %s: %w (%v)", expr, ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Screenshot writes a PNG of the page to path: the whole page when full,
// else the viewport.
func (p *Page) Screenshot(ctx context.Context, path string, full bool) error {
	params := map[string]any{"format": "png"}
	if full {
		res, err := p.call(ctx, "Page.getLayoutMetrics", nil)
		if err != nil {
			return err
		}
		var m struct {
			Content struct {
				Width  float64 `json:"width"`
				Height float64 `json:"height"`
			} `json:"cssContentSize"`
		}
		if err := json.Unmarshal(res, &m); err != nil {
			return err
		}
		params["captureBeyondViewport"] = true
		params["clip"] = map[string]any{"x": 0, "y": 0, "width": m.Content.Width, "height": m.Content.Height, "scale": 1}
	}
	res, err := p.call(ctx, "Page.captureScreenshot", params)
	if err != nil {
		return err
	}
	var s struct {
		Data string `json:"data"`
	}
	if err := json.Unmarshal(res, &s); err != nil {
		return err
	}
	png, err := base64.StdEncoding.DecodeString(s.Data)
	if err != nil {
		return err
	}
	return os.WriteFile(path, png, 0o644)
}
