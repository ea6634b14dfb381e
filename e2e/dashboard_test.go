package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/multiwan/multiwan/internal/lab"
	"github.com/multiwan/multiwan/internal/web/cdp"
)

// dashboardListen is where the router's network listener serves the
// dashboard in TestDashboard: its address on the client's LAN.
var dashboardListen = lab.LAN1Addr + ":9733"

// dashboardToken is the control token of TestDashboard (http.token_file).
const dashboardToken = "e2e-dashboard-token"

// JavaScript expressions over the dashboard's page.
const (
	jsWAN       = `document.querySelector('article[data-wan="%s"]')`
	jsWANState  = `(` + jsWAN + `?.querySelector('.wan-head .chip')?.textContent || '')`
	jsTimeline  = `[...document.querySelectorAll('#events li')].slice(0, %d).map(li => li.innerText).join('\n')`
	jsControls  = `[...document.querySelectorAll('button.control')].filter(b => !b.hidden && b.offsetParent !== null).map(b => b.textContent)`
	jsOverride  = `document.getElementById('override').textContent`
	jsPolicyBar = `document.querySelector('#policies .bar')?.getAttribute('aria-label') || ''`
)

// browserFor runs a headless Chromium in the lab's client namespace.
// Chromium is a test dependency like curl: missing, the test fails.
func browserFor(t *testing.T, l *lab.Lab) *cdp.Browser {
	t.Helper()
	bin, err := cdp.Find()
	if err != nil {
		t.Fatalf("e2e: FAIL: %v (make deps installs it)", err)
	}
	b, err := cdp.Launch(cdp.Options{Binary: bin, Exec: []string{"ip", "netns", "exec", l.NS(lab.NSClient)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func pageWait(t *testing.T, p *cdp.Page, d time.Duration, expr string) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	took, err := p.WaitFor(ctx, expr)
	if err != nil {
		tctx, tcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer tcancel()
		text, _ := p.Text(tctx)
		t.Fatalf("%v\npage text:\n%s", err, text)
	}
	return took
}

func pageEval[T any](t *testing.T, p *cdp.Page, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var v T
	if err := p.Eval(ctx, expr, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// screenshot writes the page to a file under the temporary directory and
// returns its path; copyTo, when set, gets a copy.
func screenshot(t *testing.T, p *cdp.Page, name string, full bool, copyTo string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	path := filepath.Join(os.TempDir(), name)
	if err := p.Screenshot(ctx, path, full); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
	if copyTo != "" {
		if b, err := os.ReadFile(path); err == nil {
			if err := os.WriteFile(copyTo, b, 0o644); err == nil {
				t.Logf("screenshot copied to %s", copyTo)
			}
		}
	}
	return path
}

// TestDashboard opens the dashboard of the real daemon in a real headless
// Chromium on the LAN client (Chrome DevTools protocol over a pipe), and
// checks what a user would: both WANs shown up, with graphs and the
// event timeline; ISP1's upstream cut shows as isp1 down within 2 s of
// the daemon's decision, with the state change on the timeline and the
// policy on isp2; the switch buttons need the token (a wrong one is
// refused); the phone layout fits a phone; no console errors.
//
// It expects the daemon's network listener (config `http: {listen:
// ADDR:PORT, token_file: PATH}`) serving web.Handler at /, the control API
// at /v1/ (status, history, events, use with the token).
func TestDashboard(t *testing.T) {
	l := newLab(t, 2)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(dashboardToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := setup{isps: 2, probe: fastProbe, policies: failover12, deflt: "failover",
		extra: fmt.Sprintf("http:\n  listen: %q\n  token_file: %s\n", dashboardListen, tokenFile)}
	r := startRouter(t, l, s.yaml(t))
	r.waitState("isp1", "up", 10*time.Second)
	r.waitState("isp2", "up", 10*time.Second)
	url := "http://" + dashboardListen + "/"

	// The page's headers, as the daemon serves them.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	head, err := l.Curl(ctx, lab.NSClient, url, "-D", "-", "-o", "/dev/null")
	if err != nil {
		t.Fatalf("GET %s: %v\n%s", url, err, r.proc.Output())
	}
	for _, want := range []string{"200 OK", "Content-Security-Policy: default-src 'self'", "X-Content-Type-Options: nosniff",
		"X-Frame-Options: DENY", "Referrer-Policy: no-referrer", "Content-Type: text/html"} {
		if !strings.Contains(head, want) {
			t.Errorf("GET /: no %q in the header:\n%s", want, head)
		}
	}

	b := browserFor(t, l)
	bctx, bcancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer bcancel()
	p, err := b.NewPage(bctx, 1280, 900, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Navigate(bctx, url); err != nil {
		t.Fatal(err)
	}
	pageWait(t, p, 10*time.Second, fmt.Sprintf(jsWANState, "isp1")+` === 'up' && `+fmt.Sprintf(jsWANState, "isp2")+` === 'up'`)
	pageWait(t, p, 10*time.Second, fmt.Sprintf(jsWAN, "isp1")+`.querySelectorAll('path.rtt').length === 1 && `+
		fmt.Sprintf(jsWAN, "isp2")+`.querySelectorAll('path.in').length === 1`)
	pageWait(t, p, 5*time.Second, fmt.Sprintf(jsTimeline, 50)+`.includes('start')`)
	if c := pageEval[[]string](t, p, jsControls); len(c) != 0 {
		t.Errorf("switch buttons without the token: %q", c)
	}
	text, _ := p.Text(bctx)
	for _, want := range []string{"isp1", "isp2", "wan1", "wan2", lab.ISPGateway(1), lab.WANAddr(2), "failover", "isp1 100%"} {
		if !strings.Contains(text, want) {
			t.Errorf("page text lacks %q:\n%s", want, text)
		}
	}

	// Traffic through isp1 for the graph, then the cut; after it, through
	// isp2.
	download := func() {
		dl, err := l.Start(lab.NSClient, "curl", "-sS", "--noproxy", "*", "--max-time", "10", "-o", "/dev/null", service+"stream?seconds=4&rate=400")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { dl.Kill() })
	}
	download()
	time.Sleep(3 * time.Second)

	if err := l.CutUpstream(1); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	pageWait(t, p, 10*time.Second, fmt.Sprintf(jsWANState, "isp1")+` === 'down'`)
	shown := time.Now()
	st := r.status()
	var downAt time.Time
	for _, w := range st.WANs {
		if w.Name == "isp1" {
			downAt = w.Since
		}
	}
	t.Logf("isp1 down: decided %v after the cut, shown %v after that", downAt.Sub(cut).Round(time.Millisecond), shown.Sub(downAt).Round(time.Millisecond))
	if st.state("isp1") != "down" || shown.Sub(downAt) > 2*time.Second {
		t.Errorf("isp1 shown down %v after the daemon decided it (%s at %v), want within 2s", shown.Sub(downAt), st.state("isp1"), downAt)
	}
	pageWait(t, p, 2*time.Second, fmt.Sprintf(jsTimeline, 6)+`.includes('isp1 → down')`)
	pageWait(t, p, 2*time.Second, jsPolicyBar+`.includes('isp2 100%')`)
	pageWait(t, p, 2*time.Second, `document.getElementById('summary').textContent.includes('isp1 down')`)
	// The graph shows the failover: isp1's state band turns red.
	pageWait(t, p, 3*time.Second, fmt.Sprintf(jsWAN, "isp1")+`.querySelector('.chart.health rect.s-down') !== null`)
	download()
	time.Sleep(3 * time.Second)
	// The last 10 minutes show it at a glance.
	pageEval[bool](t, p, `document.querySelector('label[for=w10m]').click(), true`)
	pageWait(t, p, 3*time.Second, fmt.Sprintf(jsWAN, "isp1")+`.querySelector('.chart.health svg').getAttribute('aria-label').includes('last 10 minutes')`)
	desktop := screenshot(t, p, "multiwan-dashboard-e2e.png", true, "/tmp/multiwan-dashboard.png")
	events := pageEval[string](t, p, fmt.Sprintf(jsTimeline, 10))
	t.Logf("timeline:\n%s", events)

	// Controls: a wrong token is refused at its first use and locks the
	// page again; the right one switches.
	unlock := func(token string) {
		t.Helper()
		pageEval[bool](t, p, `document.getElementById('unlock-toggle').click(), true`)
		pageEval[bool](t, p, `document.getElementById('token').value = '`+token+`', document.querySelector('#unlock-form button').click(), true`)
		pageWait(t, p, 3*time.Second, `document.querySelectorAll('article button.control:not([hidden])').length === 2`)
	}
	unlock("wrong")
	pageEval[bool](t, p, fmt.Sprintf(jsWAN, "isp2")+`.querySelector('button.control').click(), true`)
	pageWait(t, p, 3*time.Second, `document.getElementById('lock-msg').textContent.startsWith('Wrong token') && document.querySelectorAll('button.control:not([hidden])').length === 0`)
	if st := r.status(); st.Override != "" {
		t.Errorf("override %q after a wrong token", st.Override)
	}
	unlock(dashboardToken)
	pageEval[bool](t, p, fmt.Sprintf(jsWAN, "isp2")+`.querySelector('button.control').click(), true`)
	pageWait(t, p, 3*time.Second, jsOverride+`.includes('Manual choice: isp2')`)
	if st := r.status(); st.Override != "isp2" {
		t.Errorf("override %q after Use isp2, want isp2", st.Override)
	}
	pageWait(t, p, 3*time.Second, fmt.Sprintf(jsTimeline, 6)+`.includes('isp2')`)
	pageEval[bool](t, p, `document.getElementById('auto').click(), true`)
	pageWait(t, p, 3*time.Second, jsOverride+`.includes('automatic')`)
	if st := r.status(); st.Override != "" {
		t.Errorf("override %q after auto", st.Override)
	}

	// Recovery shows too.
	if err := l.RestoreUpstream(1); err != nil {
		t.Fatal(err)
	}
	r.waitState("isp1", "up", 10*time.Second)
	pageWait(t, p, 2*time.Second, fmt.Sprintf(jsWANState, "isp1")+` === 'up'`)
	pageWait(t, p, 2*time.Second, fmt.Sprintf(jsTimeline, 6)+`.includes('isp1 → up')`)

	// The only errors expected: the wrong token's 403.
	var probs []string
	for _, pr := range p.Problems() {
		if !strings.Contains(pr, "status of 403") || !strings.HasSuffix(pr, "/v1/use") {
			probs = append(probs, pr)
		}
	}
	if len(probs) > 0 {
		t.Errorf("console errors:\n%s", strings.Join(probs, "\n"))
	}

	// A phone.
	ph, err := b.NewPage(bctx, 390, 844, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := ph.Navigate(bctx, url); err != nil {
		t.Fatal(err)
	}
	pageWait(t, ph, 10*time.Second, fmt.Sprintf(jsWANState, "isp1")+` === 'up' && `+fmt.Sprintf(jsWAN, "isp2")+`.querySelectorAll('path.rtt').length === 1`)
	if w := pageEval[int](t, ph, `document.documentElement.scrollWidth`); w > 390 {
		t.Errorf("phone: the page is %d px wide on a 390 px screen", w)
	}
	phone := screenshot(t, ph, "multiwan-dashboard-e2e-phone.png", true, "/tmp/multiwan-dashboard-phone.png")
	if probs := ph.Problems(); len(probs) > 0 {
		t.Errorf("console errors on the phone:\n%s", strings.Join(probs, "\n"))
	}
	t.Logf("screenshots: %s %s", desktop, phone)
}
