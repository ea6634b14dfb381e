package resolv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	mnl "github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/multiwan/multiwan/internal/config"
)

// DefaultInterval is how often the watcher looks at the lease files: a
// stat each, and a read only when one changed (dnsmasq polls its
// resolv-file the same way, once a second).
const DefaultInterval = time.Second

// Watcher learns the resolvers of every WAN with `dns: auto`: from its
// lease file, polled, and from router advertisements, as they come. It
// reports the whole picture whenever it changes.
type Watcher struct {
	// Config returns the config in force; called from Run's goroutine,
	// it must not block (the daemon reads an atomic value).
	Config func() *config.Config
	// Report is called from Run's goroutine with each WAN's learned
	// resolvers, when they changed; it must not block.
	Report func(map[string]Learned)
	Log    *slog.Logger
	// Finder finds lease files; its zero value looks in the real places.
	Finder Finder
	// Interval is the polling interval; DefaultInterval when zero.
	Interval time.Duration
	// Now is the clock of RDNSS lifetimes; time.Now when nil.
	Now func() time.Time
	// RA turns on learning from router advertisements (a netlink
	// subscription in the caller's network namespace).
	RA bool

	rdnss  RDNSSTable
	files  map[string]fileState // by path
	last   map[string]Learned
	raWarn bool
}

// fileState is what was last read of a lease file, and when it was
// written then: it is read again only when that changes.
type fileState struct {
	mtime time.Time
	size  int64
	ino   uint64
	read  Learned
	err   error
}

// Run watches until ctx ends.
func (w *Watcher) Run(ctx context.Context) {
	if w.Interval <= 0 {
		w.Interval = DefaultInterval
	}
	if w.Now == nil {
		w.Now = time.Now
	}
	if w.Log == nil {
		w.Log = slog.New(slog.DiscardHandler)
	}
	var ra <-chan []RDNSS
	// The subscription's goroutines end with ctx; Run returns after them.
	var owned sync.WaitGroup
	defer owned.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if w.RA {
		ch := make(chan []RDNSS, 16)
		if err := subscribeRDNSS(ctx, ch, w.Log, &owned); err != nil {
			w.Log.Warn("cannot follow router advertisements' DNS servers; leases only", "err", err)
		} else {
			ra = ch
		}
	}
	tick := time.NewTicker(w.Interval)
	defer tick.Stop()
	w.Poll()
	for {
		select {
		case <-ctx.Done():
			return
		case opts := <-ra:
			now := w.Now()
			for _, o := range opts {
				w.rdnss.Add(o, now)
			}
			w.Poll()
		case <-tick.C:
			w.Poll()
		}
	}
}

// Poll learns every auto WAN's resolvers now and reports them if they
// changed. Run calls it; its owner may call it once before Run starts,
// to have the resolvers of the first plan.
func (w *Watcher) Poll() {
	cfg := w.Config()
	if cfg == nil {
		return
	}
	if w.Now == nil {
		w.Now = time.Now
	}
	if w.files == nil {
		w.files = map[string]fileState{}
	}
	now := w.Now()
	out := map[string]Learned{}
	live := map[int]bool{}
	used := map[string]bool{}
	for _, wan := range cfg.WANs {
		if !wan.DNSAuto {
			continue
		}
		ifindex := 0
		if ifc, err := net.InterfaceByName(wan.Interface); err == nil {
			ifindex = ifc.Index
			live[ifindex] = true
		}
		out[wan.Name] = w.learn(wan, ifindex, now, used)
	}
	w.rdnss.Forget(live)
	for p := range w.files {
		if !used[p] {
			delete(w.files, p)
		}
	}
	if maps.EqualFunc(out, w.last, Learned.Equal) {
		return
	}
	w.last = out
	w.Report(maps.Clone(out))
}

// learn merges one WAN's lease and router advertisements: the lease's
// servers first, then the advertised ones, at most config.MaxDNSServers.
func (w *Watcher) learn(wan config.WAN, ifindex int, now time.Time, used map[string]bool) Learned {
	var l Learned
	path := wan.LeaseFile
	if path == "" {
		path = w.Finder.Find(wan.Interface, ifindex)
	}
	if path != "" {
		used[path] = true
		var err error
		l, err = w.readLease(path, wan.Interface)
		if err != nil {
			l = Learned{Problem: fmt.Sprintf("cannot read the lease %s: %v", path, oneLine(err))}
			if errors.Is(err, os.ErrNotExist) {
				l.Problem = fmt.Sprintf("no DHCP lease in %s (yet)", path)
			}
		}
	}
	var ra []netip.Addr
	if ifindex > 0 {
		ra = w.rdnss.Servers(ifindex, now)
	}
	if len(ra) > 0 {
		checked := check(addrStrings(ra))
		for _, a := range checked.Servers {
			if len(l.Servers) < config.MaxDNSServers && !containsAddr(l.Servers, a) {
				l.Servers = append(l.Servers, a)
			}
		}
		if l.Source == "" {
			l.Source = "router advertisements"
		} else {
			l.Source += " and router advertisements"
		}
		if checked.Problem != "" {
			l.Problem = strings.TrimPrefix(l.Problem+"; router advertisements: "+checked.Problem, "; ")
		}
	}
	if path == "" && len(ra) == 0 {
		what := "no DHCP lease found for " + wan.Interface + " (set lease_file to where its DHCP client keeps it)"
		if w.RA && wan.IPv6 {
			what += " and no router advertisement gave DNS servers"
		}
		l.Problem = what
	}
	return l
}

// readLease reads path again only when it changed since the last read.
func (w *Watcher) readLease(path, iface string) (Learned, error) {
	st, err := os.Stat(path)
	if err != nil {
		delete(w.files, path)
		return Learned{}, err
	}
	fs := fileState{mtime: st.ModTime(), size: st.Size()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		fs.ino = sys.Ino
	}
	if old, ok := w.files[path]; ok && old.mtime.Equal(fs.mtime) && old.size == fs.size && old.ino == fs.ino {
		return old.read, old.err
	}
	fs.read, fs.err = ReadLease(path, iface)
	w.files[path] = fs
	return fs.read, fs.err
}

func addrStrings(list []netip.Addr) []string {
	out := make([]string, len(list))
	for i, a := range list {
		out[i] = a.String()
	}
	return out
}

func containsAddr(list []netip.Addr, a netip.Addr) bool {
	for _, b := range list {
		if a == b {
			return true
		}
	}
	return false
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

// subscribeRDNSS sends the RDNSS options of the router advertisements the
// kernel accepts to ch until ctx ends. A message that cannot be decoded is
// logged and skipped (it is someone else's option, or a broken one).
func subscribeRDNSS(ctx context.Context, ch chan<- []RDNSS, log *slog.Logger, wg *sync.WaitGroup) error {
	c, err := mnl.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		return fmt.Errorf("nd user options: %w", err)
	}
	if err := c.JoinGroup(unix.RTNLGRP_ND_USEROPT); err != nil {
		c.Close()
		return fmt.Errorf("nd user options: join group: %w", err)
	}
	// Closing the socket is what ends a blocked Receive.
	wg.Go(func() {
		<-ctx.Done()
		c.Close()
	})
	wg.Go(func() {
		for {
			msgs, err := c.Receive()
			if err != nil {
				if ctx.Err() == nil {
					log.Warn("router advertisements' DNS servers: netlink receive failed; leases only from now on", "err", err)
				}
				return
			}
			for _, m := range msgs {
				if m.Header.Type != unix.RTM_NEWNDUSEROPT {
					continue
				}
				opts, err := ParseNDUserOpt(m.Data)
				if errors.Is(err, errNotRDNSS) {
					continue
				}
				if err != nil {
					log.Debug("skipped a malformed nd user option", "err", err)
					continue
				}
				select {
				case ch <- opts:
				case <-ctx.Done():
					return
				}
			}
		}
	})
	return nil
}
