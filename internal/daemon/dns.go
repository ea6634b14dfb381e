package daemon

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/multiwan/multiwan/internal/config"
	"github.com/multiwan/multiwan/internal/control"
	"github.com/multiwan/multiwan/internal/hooks"
	"github.com/multiwan/multiwan/internal/plan"
	"github.com/multiwan/multiwan/internal/resolv"
)

// DNS through a failover (README "DNS"): the resolvers `dns: auto`
// learns come from a watcher goroutine (lease files polled, router
// advertisements followed) into an inbox; the loop puts them into the
// links it plans from, so a new lease is a new plan (its resolvers
// pinned) like a new gateway; after every plan the loop renders the
// resolver list and hands it to a writer goroutine, which writes the file
// only when its content changed. The loop never reads or writes a file
// here, except for one bounded read of the lease files at start, so that
// the first plan already has them.

// dnsState is the daemon's DNS machinery. The loop owns what is not
// atomic; the watcher and the writer own themselves.
type dnsState struct {
	// cfg is the config the watcher reads (it runs on its own goroutine).
	cfg     atomic.Pointer[config.Config]
	box     inbox[map[string]resolv.Learned]
	watcher *resolv.Watcher
	writer  resolv.Writer
	// written is the writer's last result, read by Status.
	written atomic.Pointer[dnsWrite]

	// The loop's.
	learned map[string]resolv.Learned
	list    []plan.Resolver
	summary string // resolv.Summary(list) as last announced
	content []byte // last handed to the writer
	path    string // where it was handed to be written
	noneYet bool   // said that no resolver is known
}

// dnsWrite is the outcome of the writer's last write.
type dnsWrite struct {
	path string
	at   time.Time // last time the file got new content
	err  string
}

// initDNS prepares the DNS machinery; New calls it.
func (d *Daemon) initDNS() {
	d.dns.box.init(4)
	d.dns.writer.Init()
	d.dns.writer.Done = d.dnsWritten
	d.dns.cfg.Store(d.cfg)
	d.dns.watcher = &resolv.Watcher{
		Config: d.dns.cfg.Load,
		Report: d.dns.box.put,
		Log:    d.log,
		Now:    d.opt.Now,
		RA:     true,
	}
}

// learnDNSNow reads the lease files once, on the loop, before the first
// plan (bounded: a stat and at most 256 KiB per WAN with dns: auto).
func (d *Daemon) learnDNSNow() {
	if d.cfg.HasDNS() {
		d.dns.watcher.Poll()
		d.takeLearned()
	}
}

// startDNS starts the watcher and the writer; they end with ctx and are
// waited for through owned.
func (d *Daemon) startDNS(ctx context.Context, owned *sync.WaitGroup) {
	owned.Go(func() { d.dns.writer.Run(ctx) })
	owned.Go(func() { d.dns.watcher.Run(ctx) })
}

// takeLearned moves what the watcher reported into the loop's state.
func (d *Daemon) takeLearned() bool {
	reports, _ := d.dns.box.take()
	if len(reports) == 0 {
		return false
	}
	latest := reports[len(reports)-1] // each report is the whole picture
	for wan, l := range latest {
		old := d.dns.learned[wan]
		if !old.Equal(l) {
			d.log.Info("dns learned", "wan", wan, "servers", addrList(l), "source", orDash(l.Source))
		}
	}
	d.dns.learned = latest
	return true
}

// dnsChanges is the loop's work when the watcher reported: the learned
// resolvers go into the links, and the daemon replans.
func (d *Daemon) dnsChanges(ctx context.Context) {
	if !d.takeLearned() {
		return
	}
	// d.links may be shared with a published snapshot: change a copy.
	d.links = maps.Clone(d.links)
	d.mergeDNS()
	_ = d.sync(ctx, "dns learned", nil, false)
}

// mergeDNS puts the learned resolvers (and what went wrong learning them)
// into d.links, which the caller owns unshared.
func (d *Daemon) mergeDNS() {
	if d.links == nil {
		return
	}
	for _, w := range d.cfg.WANs {
		l := d.links[w.Name]
		l.DNS, l.DNSProblem = nil, ""
		if w.DNSAuto {
			learned := d.dns.learned[w.Name]
			l.DNS, l.DNSProblem = learned.Servers, learned.Problem
		}
		d.links[w.Name] = l
	}
}

// resolvers follows a new plan's resolver list: logged, announced and
// handed to hooks when it changed, written when the file's content would.
func (d *Daemon) resolvers(ctx context.Context, desired *plan.Desired, why string) {
	d.dns.cfg.Store(d.cfg)
	if !d.cfg.HasDNS() {
		d.dns.list, d.dns.summary = nil, ""
		return
	}
	list := desired.Resolvers
	d.dns.list = list
	content := resolv.Render(d.cfg, list)
	if content == nil {
		if !d.dns.noneYet {
			d.dns.noneYet = true
			d.log.Warn("no resolver known yet; resolv_file left as it is", "file", d.cfg.ResolvFile,
				"hint", "a WAN with dns: auto learns them from its DHCP lease or router advertisements")
		}
		return
	}
	d.dns.noneYet = false
	if s := resolv.Summary(list); s != d.dns.summary {
		prev := d.dns.summary
		d.dns.summary = s
		d.log.Info("resolvers", "list", s, "cause", why, "file", d.cfg.ResolvFile)
		msg := "resolvers: " + s
		if prev != "" {
			msg += " (was " + prev + "; " + why + ")"
		}
		d.event(control.Event{Kind: "dns", Cause: why, From: prev, To: s, Message: msg})
		d.runDNSHooks(ctx, list)
	}
	if !bytes.Equal(content, d.dns.content) || d.cfg.ResolvFile != d.dns.path {
		d.dns.content, d.dns.path = content, d.cfg.ResolvFile
		d.dns.writer.Set(d.cfg.ResolvFile, content)
	}
}

// dnsWritten is the writer's report (its own goroutine).
func (d *Daemon) dnsWritten(path string, wrote bool, err error) {
	prev := d.dns.written.Load()
	w := &dnsWrite{path: path}
	if prev != nil && prev.path == path {
		w.at = prev.at
	}
	switch {
	case err != nil:
		w.err = err.Error()
		if prev == nil || prev.err != w.err {
			d.log.Error("writing the resolver list failed; retried at its next change", "file", path, "err", err)
		}
	case wrote:
		w.at = d.opt.Now()
		d.log.Info("resolver list written", "file", path)
	default:
		if w.at.IsZero() {
			w.at = d.opt.Now() // already there, from an earlier run
		}
	}
	d.dns.written.Store(w)
}

// runDNSHooks tells the hooks the new resolver list (MULTIWAN_EVENT=dns):
// a hook hands it to unbound or systemd-resolved (README "DNS").
func (d *Daemon) runDNSHooks(ctx context.Context, list []plan.Resolver) {
	if !d.hooksOn() {
		return
	}
	var all, usable []string
	var links []string
	perIf := map[string][]string{}
	for _, r := range list {
		all = append(all, r.Addr.String())
		if r.Usable {
			usable = append(usable, r.Addr.String())
		}
		if w, ok := d.cfg.WANByName(r.WAN); ok {
			if _, seen := perIf[w.Interface]; !seen {
				links = append(links, w.Interface)
			}
			perIf[w.Interface] = append(perIf[w.Interface], r.Addr.String())
		}
	}
	var pairs []string
	for _, i := range links {
		pairs = append(pairs, i+"="+strings.Join(perIf[i], ","))
	}
	d.opt.Hooks.Run(ctx, d.log, d.cfg.Hooks, d.cfg.HookTimeout, hooks.Event{Kind: "dns",
		DNS: strings.Join(all, " "), DNSUsable: strings.Join(usable, " "), DNSLinks: strings.Join(pairs, " "),
		ResolvFile: d.cfg.ResolvFile})
}

// dnsStatus is the resolver list for status; the writer's outcome is
// added by withDNSWrite when status is asked.
func (d *Daemon) dnsStatus() *control.DNSStatus {
	if !d.cfg.HasDNS() {
		return nil
	}
	st := &control.DNSStatus{File: d.cfg.ResolvFile, Servers: []control.DNSServer{}}
	for _, r := range d.dns.list {
		src := "config"
		if r.Learned {
			src = orDash(d.dns.learned[r.WAN].Source)
		}
		st.Servers = append(st.Servers, control.DNSServer{Address: r.Addr.String(), WAN: r.WAN, Usable: r.Usable,
			Source: src, Pinned: r.Pinned})
	}
	return st
}

// withDNSWrite adds the writer's last outcome to a status snapshot (a
// copy: the snapshot is shared).
func (d *Daemon) withDNSWrite(st control.Status) control.Status {
	w := d.dns.written.Load()
	if st.DNS == nil || w == nil || w.path != st.DNS.File {
		return st
	}
	dns := *st.DNS
	if !w.at.IsZero() {
		dns.Written = utc(w.at)
	}
	dns.WriteError = w.err
	st.DNS = &dns
	return st
}

func addrList(l resolv.Learned) string {
	parts := make([]string, len(l.Servers))
	for i, a := range l.Servers {
		parts[i] = a.String()
	}
	s := strings.Join(parts, " ")
	if s == "" {
		s = "none"
	}
	if l.Problem != "" {
		s += fmt.Sprintf(" (%s)", l.Problem)
	}
	return s
}
