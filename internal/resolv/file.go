package resolv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/multiwan/multiwan/internal/config"
	"github.com/multiwan/multiwan/internal/plan"
)

// Options is the options line of the resolver list. Only a stub resolver
// that reads the file itself uses it (glibc, musl: with resolv_file:
// /etc/resolv.conf and no local forwarder); dnsmasq, the unbound and
// systemd-resolved hooks read only the nameserver lines. timeout:1 makes
// such a client try the next server after 1 s rather than 5 s when one does
// not answer; a dead WAN's resolvers fail at once anyway and are listed
// last. No rotate: the order is the point.
const Options = "options timeout:1 attempts:2"

// Render is the resolver list in resolv.conf syntax: a header saying that
// multiwan writes it, then the resolvers in order, each WAN's run of them
// under a comment naming it and saying whether it is usable. Comments are
// on lines of their own: every reader skips those. nil when there is no
// resolver at all: multiwan then leaves the file as it is, rather than
// write one that makes the forwarder answer nothing.
func Render(cfg *config.Config, list []plan.Resolver) []byte {
	if len(list) == 0 {
		return nil
	}
	var b bytes.Buffer
	b.WriteString("# Written by multiwan: the resolvers of usable WANs first, in the order of\n")
	b.WriteString("# the default policy, then the others (their queries fail at once while\n")
	b.WriteString("# their WAN is down). Rewritten whenever that changes; do not edit.\n")
	prev := ""
	for _, r := range list {
		head := r.WAN
		if w, ok := cfg.WANByName(r.WAN); ok {
			head += " (" + w.Interface + ")"
		}
		if r.Usable {
			head += ": usable"
		} else {
			head += ": down"
		}
		if head != prev {
			fmt.Fprintf(&b, "# %s\n", head)
			prev = head
		}
		fmt.Fprintf(&b, "nameserver %s\n", r.Addr)
	}
	b.WriteString(Options + "\n")
	return b.Bytes()
}

// Summary says the list in one line, for logs and events:
// "198.18.2.53 (isp2), 198.18.1.53 (isp1, down)".
func Summary(list []plan.Resolver) string {
	if len(list) == 0 {
		return "none"
	}
	parts := make([]string, len(list))
	for i, r := range list {
		s := r.Addr.String() + " (" + r.WAN
		if !r.Usable {
			s += ", down"
		}
		parts[i] = s + ")"
	}
	return strings.Join(parts, ", ")
}

// maxCompare bounds what is read of the existing file to compare it.
const maxCompare = 64 << 10

// WriteFile writes data to path atomically, unless path already holds
// exactly data: a temporary file in the same directory (created if
// missing, mode 0755), written, synced, made 0644, renamed over path. A
// reader sees the old list or the new one, never a part; dnsmasq, which
// polls the file's modification time, re-reads it only when it changed.
// It reports whether it wrote.
func WriteFile(path string, data []byte) (bool, error) {
	if old, err := readTail(path, maxCompare); err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return false, err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return false, err
	}
	if err := f.Chmod(0o644); err != nil {
		return false, err
	}
	if err := f.Sync(); err != nil {
		return false, err
	}
	if err := f.Close(); err != nil {
		return false, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return false, err
	}
	ok = true
	return true, nil
}

// Writer writes the resolver list off its owner's goroutine: Set hands it
// the latest content and never waits; Run writes, one at a time, only the
// newest content it was given (a burst of changes costs one write).
type Writer struct {
	// Done, when set, is told the result of each write from Run's
	// goroutine: wrote is false when the file already held the content.
	Done func(path string, wrote bool, err error)

	mu      sync.Mutex
	pending *writeJob
	wake    chan struct{}
}

type writeJob struct {
	path string
	data []byte
}

// Init prepares w; call before Set and Run.
func (w *Writer) Init() { w.wake = make(chan struct{}, 1) }

// Set makes data the content to write to path next.
func (w *Writer) Set(path string, data []byte) {
	w.mu.Lock()
	w.pending = &writeJob{path: path, data: data}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Run writes what Set gives it until ctx ends; a write under way when ctx
// ends is finished (it is short: a small file).
func (w *Writer) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		}
		w.mu.Lock()
		job := w.pending
		w.pending = nil
		w.mu.Unlock()
		if job == nil {
			continue
		}
		wrote, err := WriteFile(job.path, job.data)
		if w.Done != nil {
			w.Done(job.path, wrote, err)
		}
	}
}
