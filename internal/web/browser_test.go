package web

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/multiwan/multiwan/internal/control"
	"github.com/multiwan/multiwan/internal/web/cdp"
)

// fakeDaemon is a control.Handler and control.Historian with made-up but
// plausible data: two WANs (isp1 dual-stack), a failover policy, an hour
// of history with an outage and a degraded spell of isp1, traffic that
// moves with the failover.
type fakeDaemon struct {
	mu       sync.Mutex
	start    time.Time // the daemon "started" 2 hours ago
	isp1Down time.Time // zero: isp1 is up now
	override string
	uses     []string
	past     []control.Event
	subs     map[chan control.Event]struct{}
}

func newFakeDaemon() *fakeDaemon {
	now := time.Now()
	f := &fakeDaemon{start: now.Add(-2 * time.Hour), subs: map[chan control.Event]struct{}{}}
	ev := func(ago time.Duration, e control.Event) {
		e.Time = now.Add(-ago)
		f.past = append(f.past, e)
	}
	ev(2*time.Hour, control.Event{Kind: "start", Message: "multiwan started with /etc/multiwan/multiwan.yaml"})
	ev(40*time.Minute, control.Event{Kind: "state", WAN: "isp1", Family: "ipv4", From: "up", To: "degraded", Cause: "median RTT 180ms > max_rtt 150ms",
		Message: "isp1 up → degraded: median RTT 180ms > max_rtt 150ms"})
	ev(38*time.Minute, control.Event{Kind: "state", WAN: "isp1", Family: "ipv4", From: "degraded", To: "up", Cause: "3 good rounds",
		Message: "isp1 degraded → up: 3 good rounds"})
	ev(25*time.Minute, control.Event{Kind: "state", WAN: "isp1", Family: "ipv4", From: "up", To: "down", Cause: "3 rounds failed: 203.0.113.20 timeout, 203.0.113.30 timeout",
		Message: "isp1 up → down: 3 rounds failed: 203.0.113.20 timeout, 203.0.113.30 timeout"})
	ev(25*time.Minute-time.Millisecond*20, control.Event{Kind: "switch", Policy: "failover", Cause: "health", Message: "policy failover: new connections isp2 100%"})
	ev(22*time.Minute, control.Event{Kind: "state", WAN: "isp1", Family: "ipv4", From: "down", To: "up", Cause: "3 good rounds", Message: "isp1 down → up: 3 good rounds"})
	ev(22*time.Minute-time.Millisecond*20, control.Event{Kind: "switch", Policy: "failover", Cause: "health", Message: "policy failover: new connections isp1 100%"})
	ev(10*time.Minute, control.Event{Kind: "repair", Message: "repaired state another program removed: table inet multiwan deleted by nft (pid 4242)"})
	return f
}

// stateAt is isp1's IPv4 state at t.
func (f *fakeDaemon) stateAt(t, now time.Time) string {
	switch ago := now.Sub(t); {
	case t.Before(f.start):
		return ""
	case !f.isp1Down.IsZero() && !t.Before(f.isp1Down):
		return "down"
	case ago <= 25*time.Minute && ago > 22*time.Minute:
		return "down"
	case ago <= 40*time.Minute && ago > 38*time.Minute:
		return "degraded"
	case t.Sub(f.start) < 3*time.Second:
		return "unknown"
	}
	return "up"
}

func (f *fakeDaemon) Status() control.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	isp1 := control.WANStatus{Name: "isp1", Interface: "wan1", State: "up", RTTms: 12.3, Address: "192.0.2.2", Gateway: "192.0.2.1",
		Since: now.Add(-22 * time.Minute),
		IPv6:  &control.FamilyStatus{State: "up", RTTms: 13.1, Address: "2001:db8:1::2", Gateway: "fe80::1", Since: f.start}}
	active := "isp1"
	if !f.isp1Down.IsZero() {
		isp1.State, isp1.RTTms, isp1.LossPct, isp1.Since = "down", 0, 100, f.isp1Down
		active = "isp2"
	}
	if f.override != "" {
		active = f.override
	}
	last := now.Add(-10 * time.Minute)
	return control.Status{
		WANs: []control.WANStatus{isp1,
			{Name: "isp2", Interface: "wan2", State: "up", RTTms: 24.8, LossPct: 0, Address: "192.0.2.66", Gateway: "192.0.2.65", Since: f.start}},
		Policies:  []control.PolicyStatus{{Name: "failover", Active: []control.Share{{WAN: active, Share: 1}}}, {Name: "balanced", Active: []control.Share{{WAN: "isp1", Share: 0.75}, {WAN: "isp2", Share: 0.25}}}},
		Policies6: []control.PolicyStatus{{Name: "failover", Active: []control.Share{{WAN: "isp1", Share: 1}}}},
		Override:  f.override,
		Daemon: &control.DaemonStatus{Config: "/etc/multiwan/multiwan.yaml", LastApply: &last, Repairs: 1,
			LastRepair: "table inet multiwan deleted by nft (pid 4242)", LastRepairAt: &last,
			Notes: []string{"isp2: probes only its gateway: an outage beyond the ISP's box goes unseen; add probe targets"}},
	}
}

func (f *fakeDaemon) Use(ctx context.Context, wan string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if wan != "auto" && wan != "" && wan != "isp1" && wan != "isp2" {
		return &control.Refused{Msg: "no WAN " + wan}
	}
	f.uses = append(f.uses, wan)
	if wan == "auto" {
		wan = ""
	}
	f.override = wan
	f.emitLocked(control.Event{Kind: "override", WAN: wan, Message: "override: " + map[bool]string{true: "none (automatic)", false: wan}[wan == ""]})
	return nil
}

func (f *fakeDaemon) Reload(ctx context.Context) error { return nil }

func (f *fakeDaemon) Subscribe(n int) ([]control.Event, <-chan control.Event, func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan control.Event, 64)
	f.subs[ch] = struct{}{}
	past := f.past[max(0, len(f.past)-n):]
	return slices.Clone(past), ch, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if _, ok := f.subs[ch]; ok {
			delete(f.subs, ch)
			close(ch)
		}
	}
}

func (f *fakeDaemon) emitLocked(e control.Event) {
	e.Time = time.Now()
	f.past = append(f.past, e)
	for ch := range f.subs {
		select {
		case ch <- e:
		default:
		}
	}
}

// cut makes isp1 go down now, as the daemon would report it.
func (f *fakeDaemon) cut() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.isp1Down = time.Now()
	f.emitLocked(control.Event{Kind: "state", WAN: "isp1", Family: "ipv4", From: "up", To: "down",
		Cause: "3 rounds failed: 203.0.113.20 timeout, 203.0.113.30 timeout", Message: "isp1 up → down: 3 rounds failed: 203.0.113.20 timeout, 203.0.113.30 timeout"})
	f.emitLocked(control.Event{Kind: "switch", Policy: "failover", Cause: "health", Message: "policy failover: new connections isp2 100%"})
}

// dropStreams ends every event stream, as a daemon restart would.
func (f *fakeDaemon) dropStreams() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for ch := range f.subs {
		delete(f.subs, ch)
		close(ch)
	}
}

func (f *fakeDaemon) streams() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

func (f *fakeDaemon) emit(e control.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.emitLocked(e)
}

// wobble is deterministic noise in [-1, 1].
func wobble(t int64, k float64) float64 {
	return math.Sin(float64(t)*0.013*k) * math.Cos(float64(t)*0.0071+k)
}

func (f *fakeDaemon) History(window string, since time.Time) (control.History, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	step, span := time.Second, time.Hour
	if window == "24h" {
		step, span = time.Minute, 24*time.Hour
	}
	now := time.Now()
	end := now.Truncate(step)
	first := end.Add(-span + step)
	if !since.IsZero() && since.Add(step).After(first) {
		first = since.Truncate(step).Add(step)
	}
	h := control.History{Window: window, Step: step.Seconds(), End: end}
	type fam struct {
		wan, family string
		base        float64
		state       func(t time.Time) string
	}
	up := func(t time.Time) string {
		if t.Before(f.start) {
			return ""
		}
		return "up"
	}
	fams := []fam{
		{"isp1", "ipv4", 12, func(t time.Time) string { return f.stateAt(t, now) }},
		{"isp1", "ipv6", 13, up},
		{"isp2", "ipv4", 25, up},
	}
	for _, fm := range fams {
		w := control.WANHistory{WAN: fm.wan, Family: fm.family}
		for t := first; !t.After(end); t = t.Add(step) {
			st := fm.state(t)
			var rtt, loss *float64
			switch st {
			case "up", "degraded", "unknown":
				r := fm.base + 2*wobble(t.Unix(), fm.base) + 1.5*math.Abs(wobble(t.Unix()/7, 3))
				if st == "degraded" {
					r += 160
				}
				l := 0.0
				if wobble(t.Unix(), 7.7) > 0.97 {
					l = 5
				}
				rtt, loss = &r, &l
			case "down":
				l := 100.0
				loss = &l
			}
			w.RTTms, w.LossPct, w.State = append(w.RTTms, rtt), append(w.LossPct, loss), append(w.State, st)
		}
		h.WANs = append(h.WANs, w)
	}
	for _, wan := range []string{"isp1", "isp2"} {
		tr := control.TrafficHistory{WAN: wan}
		for t := first; !t.After(end); t = t.Add(step) {
			in := 38e6 + 12e6*wobble(t.Unix(), 1.3)
			out := 4e6 + 1.5e6*wobble(t.Unix(), 2.1)
			isp1 := f.stateAt(t, now)
			carries := (wan == "isp1") == (isp1 == "up" || isp1 == "degraded")
			if t.Before(f.start) {
				in, out = 0, 0
			} else if !carries {
				in, out = 0.3e6+0.1e6*wobble(t.Unix(), 4), 0.05e6
			}
			tr.InBps, tr.OutBps = append(tr.InBps, in), append(tr.OutBps, out)
		}
		h.Traffic = append(h.Traffic, tr)
	}
	return h, nil
}

// fakeServer serves the dashboard and the real control API over a fake
// daemon, as the daemon's network listener does.
func fakeServer(t *testing.T, f *fakeDaemon, token string) *httptest.Server {
	t.Helper()
	done := make(chan struct{})
	mux := http.NewServeMux()
	mux.Handle("/v1/", control.NewAPI(f, control.APIOptions{Token: token, Done: done}))
	mux.Handle("/", Handler())
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		close(done)
		srv.Close()
	})
	return srv
}

// launch starts Chromium, or skips the test when there is none: the unit
// suite runs anywhere. The e2e suite (e2e/dashboard_test.go) requires it.
func launch(t *testing.T) *cdp.Browser {
	t.Helper()
	if _, err := cdp.Find(); err != nil {
		t.Skipf("no browser: %v", err)
	}
	b, err := cdp.Launch(cdp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func shot(t *testing.T, p *cdp.Page, name string, full bool) string {
	t.Helper()
	path := filepath.Join(os.TempDir(), name)
	if err := p.Screenshot(ctxFor(t, 20*time.Second), path, full); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
	return path
}

func wait(t *testing.T, p *cdp.Page, d time.Duration, expr string) time.Duration {
	t.Helper()
	took, err := p.WaitFor(ctxFor(t, d), expr)
	if err != nil {
		text, _ := p.Text(ctxFor(t, 5*time.Second))
		t.Fatalf("%v\npage text:\n%s", err, text)
	}
	return took
}

func eval[T any](t *testing.T, p *cdp.Page, expr string) T {
	t.Helper()
	var v T
	if err := p.Eval(ctxFor(t, 10*time.Second), expr, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// JavaScript helpers for the checks.
const (
	jsCard     = `document.querySelector('article[data-wan="%s"]')`
	jsState    = `(` + jsCard + `?.querySelector('.wan-head .chip')?.textContent || '')`
	jsEvents   = `document.getElementById('events').innerText`
	jsControls = `[...document.querySelectorAll('button.control')].filter(b => !b.hidden && b.offsetParent !== null).map(b => b.textContent)`
)

// TestDashboardFake drives the dashboard in a real headless Chromium
// against the real control API over a fake daemon: everything shows, a
// failover is seen within 2 s with its event, the controls need the token,
// the phone layout fits.
func TestDashboardFake(t *testing.T) {
	f := newFakeDaemon()
	srv := fakeServer(t, f, "s3cret")
	b := launch(t)
	ctx := ctxFor(t, 2*time.Minute)
	p, err := b.NewPage(ctx, 1280, 900, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Navigate(ctx, srv.URL+"/"); err != nil {
		t.Fatal(err)
	}
	wait(t, p, 10*time.Second, fmt.Sprintf(jsState, "isp1")+` === 'up' && `+fmt.Sprintf(jsState, "isp2")+` === 'up'`)
	// Charts: an RTT line per family, the outage 25 minutes ago as a
	// red band, traffic.
	wait(t, p, 10*time.Second, fmt.Sprintf(jsCard, "isp1")+`.querySelectorAll('path.rtt').length === 2`)
	if n := eval[int](t, p, fmt.Sprintf(jsCard, "isp1")+`.querySelectorAll('rect.s-down').length`); n < 1 {
		t.Errorf("isp1's chart shows no down band (%d)", n)
	}
	if n := eval[int](t, p, fmt.Sprintf(jsCard, "isp2")+`.querySelectorAll('path.in').length`); n != 1 {
		t.Errorf("isp2's traffic chart: %d in paths", n)
	}
	wait(t, p, 5*time.Second, jsEvents+`.includes('isp1 → down') && `+jsEvents+`.includes('repaired state')`)
	text, _ := p.Text(ctx)
	for _, want := range []string{"isp1", "isp2", "wan1", "192.0.2.1", "2001:db8:1::2", "failover", "balanced", "isp1 75%", "isp2 25%",
		"probes only its gateway", "Repaired state other programs removed: 1 time", "Choice: automatic"} {
		if !strings.Contains(text, want) {
			t.Errorf("page text lacks %q", want)
		}
	}
	if c := eval[[]string](t, p, jsControls); len(c) != 0 {
		t.Errorf("controls without a token: %q", c)
	}
	shot(t, p, "multiwan-dashboard-fake-before.png", true)

	// Failover: seen within 2 s, with its event on the timeline.
	f.cut()
	took := wait(t, p, 2*time.Second, `document.querySelector('#events li')?.innerText.includes('isp1 → down') || document.querySelector('#events li + li')?.innerText.includes('isp1 → down')`)
	t.Logf("failover event shown after %v", took)
	took = wait(t, p, 2*time.Second, fmt.Sprintf(jsState, "isp1")+` === 'down'`)
	t.Logf("failover state shown after %v more", took)
	wait(t, p, 2*time.Second, `document.getElementById('summary').textContent.includes('isp1 down')`)
	if got := eval[string](t, p, `document.getElementById('summary').getAttribute('aria-live')`); got != "polite" {
		t.Errorf("summary aria-live=%q", got)
	}
	// The chart's newest bucket turns red.
	wait(t, p, 3*time.Second, fmt.Sprintf(jsCard, "isp1")+`.querySelector('.chart.health svg rect.s-down:last-of-type') !== null`)
	desktop := shot(t, p, "multiwan-dashboard-fake.png", true)

	// Controls: a wrong token shows the buttons (the page cannot check a
	// token without using it), is refused at the first use and locks
	// again; the right one works.
	unlock := func(token string) {
		t.Helper()
		eval[bool](t, p, `document.getElementById('unlock-toggle').click(), true`)
		eval[bool](t, p, `document.getElementById('token').value = '`+token+`', document.querySelector('#unlock-form button').click(), true`)
		wait(t, p, 3*time.Second, `document.querySelectorAll('article button.control:not([hidden])').length === 2`)
		if got := eval[string](t, p, `sessionStorage.getItem('multiwan.token')`); got != token {
			t.Errorf("sessionStorage token %q, want %q", got, token)
		}
	}
	unlock("nope")
	eval[bool](t, p, fmt.Sprintf(jsCard, "isp2")+`.querySelector('button.control').click(), true`)
	wait(t, p, 3*time.Second, `document.getElementById('lock-msg').textContent.startsWith('Wrong token') && document.querySelectorAll('button.control:not([hidden])').length === 0`)
	if got := eval[any](t, p, `sessionStorage.getItem('multiwan.token')`); got != nil {
		t.Errorf("a refused token stays in sessionStorage: %v", got)
	}
	unlock("s3cret")
	eval[bool](t, p, fmt.Sprintf(jsCard, "isp2")+`.querySelector('button.control').click(), true`)
	wait(t, p, 3*time.Second, `document.getElementById('override').textContent.includes('Manual choice: isp2') && !document.getElementById('auto').hidden`)
	wait(t, p, 3*time.Second, fmt.Sprintf(jsCard, "isp2")+`.querySelector('button.control').hidden && `+fmt.Sprintf(jsCard, "isp2")+`.querySelector('.tag').offsetParent !== null`)
	shot(t, p, "multiwan-dashboard-fake-unlocked.png", false)
	eval[bool](t, p, `document.getElementById('auto').click(), true`)
	wait(t, p, 3*time.Second, `document.getElementById('override').textContent.includes('automatic') && document.getElementById('auto').hidden`)
	f.mu.Lock()
	uses := slices.Clone(f.uses)
	f.mu.Unlock()
	if !slices.Equal(uses, []string{"isp2", "auto"}) {
		t.Errorf("use requests: %q, want isp2 then auto", uses)
	}
	// Reloaded, the tab keeps its token (sessionStorage).
	if err := p.Navigate(ctx, srv.URL+"/"); err != nil {
		t.Fatal(err)
	}
	wait(t, p, 10*time.Second, `document.querySelectorAll('article button.control:not([hidden])').length === 2`)

	// The last 10 minutes, from the hour's data: the cut is plain.
	eval[bool](t, p, `document.querySelector('label[for=w10m]').click(), true`)
	wait(t, p, 5*time.Second, fmt.Sprintf(jsCard, "isp1")+`.querySelector('.chart.health svg').getAttribute('aria-label').includes('last 10 minutes')`)
	shot(t, p, "multiwan-dashboard-fake-10m.png", false)

	// 24 hours, downsampled: a point a minute from the server, drawn in
	// at most one bucket per 2 pixels.
	eval[bool](t, p, `document.querySelector('label[for=w24h]').click(), true`)
	wait(t, p, 5*time.Second, fmt.Sprintf(jsCard, "isp1")+`.querySelector('.chart.health svg').getAttribute('aria-label').includes('last 24 hours')`)
	// The fake daemon has run for 2 hours: the graphs show those, and
	// say so.
	wait(t, p, 5*time.Second, `document.getElementById('hist-msg').textContent.startsWith('History starts at')`)
	shot(t, p, "multiwan-dashboard-fake-24h.png", true)

	// The event stream ends: the page reconnects by itself, and the past
	// it is sent again is not shown twice.
	before := eval[int](t, p, `document.querySelectorAll('#events li').length`)
	f.dropStreams()
	deadline := time.Now().Add(10 * time.Second)
	for f.streams() == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if f.streams() == 0 {
		t.Fatal("the page did not reconnect to the event stream within 10s")
	}
	f.emit(control.Event{Kind: "reload", Message: "config reloaded from /etc/multiwan/multiwan.yaml"})
	wait(t, p, 3*time.Second, jsEvents+`.includes('config reloaded')`)
	if after := eval[int](t, p, `document.querySelectorAll('#events li').length`); after != before+1 {
		t.Errorf("timeline: %d events before the stream was cut, %d after one more: the past shown twice?", before, after)
	}

	// Dark mode.
	if err := p.ColorScheme(ctx, "dark"); err != nil {
		t.Fatal(err)
	}
	shot(t, p, "multiwan-dashboard-fake-dark.png", false)
	if err := p.ColorScheme(ctx, ""); err != nil {
		t.Fatal(err)
	}

	// The one error expected: the wrong token's 403.
	var probs []string
	for _, pr := range p.Problems() {
		if !strings.Contains(pr, "status of 403") || !strings.HasSuffix(pr, "/v1/use") {
			probs = append(probs, pr)
		}
	}
	if len(probs) > 0 {
		t.Errorf("console errors on the desktop page:\n%s", strings.Join(probs, "\n"))
	}

	// Phone: one column, nothing wider than the screen.
	ph, err := b.NewPage(ctx, 390, 844, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := ph.Navigate(ctx, srv.URL+"/"); err != nil {
		t.Fatal(err)
	}
	wait(t, ph, 10*time.Second, fmt.Sprintf(jsCard, "isp1")+`?.querySelectorAll('path.rtt').length === 2`)
	if w := eval[int](t, ph, `document.documentElement.scrollWidth`); w > 390 {
		t.Errorf("phone layout is %d px wide, screen 390", w)
	}
	if cols := eval[string](t, ph, `getComputedStyle(document.getElementById('wans')).gridTemplateColumns`); strings.Count(cols, "px") != 1 {
		t.Errorf("phone layout: WAN grid columns %q, want one", cols)
	}
	phone := shot(t, ph, "multiwan-dashboard-fake-phone.png", true)
	if probs := ph.Problems(); len(probs) > 0 {
		t.Errorf("console errors on the phone page:\n%s", strings.Join(probs, "\n"))
	}
	t.Logf("desktop %s, phone %s", desktop, phone)
}
