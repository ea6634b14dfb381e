// Package logging makes the daemon's logger: slog's text format on stderr,
// and, when stderr is systemd's journal, lines the journal reads natively.
//
// journald takes a "<N>" prefix on a line of a service's stream as the
// line's syslog priority (SyslogLevelPrefix=, on by default), and stamps
// every line itself. So under the journal each line starts with its
// priority and carries no time of its own, and
// `journalctl -u multiwan -p warning` shows exactly the warnings and
// errors.
package logging

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// New returns a logger writing to w at level and above. journal selects
// the journal's form: a syslog priority prefix per line, no timestamp.
func New(w io.Writer, level slog.Leveler, journal bool) *slog.Logger {
	if !journal {
		return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
	}
	return slog.New(&journalHandler{out: &lockedWriter{w: w}, level: level})
}

// UnderJournal reports whether f (stderr) is connected to the journal:
// systemd sets JOURNAL_STREAM to "DEVICE:INODE" of the stream it gave the
// service, which a redirected stderr no longer matches.
func UnderJournal(f *os.File) bool {
	dev, ino, ok := strings.Cut(os.Getenv("JOURNAL_STREAM"), ":")
	if !ok {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return dev == strconv.FormatUint(uint64(st.Dev), 10) && ino == strconv.FormatUint(st.Ino, 10)
}

// priority maps a slog level to a syslog priority: error 3, warning 4,
// info 6, debug 7.
func priority(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3
	case l >= slog.LevelWarn:
		return 4
	case l >= slog.LevelInfo:
		return 6
	}
	return 7
}

// journalHandler formats records as slog's text handler does, without the
// time, after a "<N>" priority prefix, one line per record.
type journalHandler struct {
	out    *lockedWriter
	level  slog.Leveler
	attrs  []slog.Attr
	groups []string
}

func (h *journalHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "<%d>", priority(r.Level))
	text := slog.NewTextHandler(&buf, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{} // the journal stamps every line
			}
			return a
		},
	})
	var th slog.Handler = text
	if len(h.attrs) > 0 {
		th = th.WithAttrs(h.attrs)
	}
	for _, g := range h.groups {
		th = th.WithGroup(g)
	}
	if err := th.Handle(ctx, r); err != nil {
		return err
	}
	return h.out.write(buf.Bytes())
}

func (h *journalHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), attrs...)
	return &c
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.groups = append(append([]string(nil), h.groups...), name)
	return &c
}

// lockedWriter writes whole records, one at a time.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) write(b []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, err := l.w.Write(b)
	return err
}
