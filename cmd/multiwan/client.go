package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
	"unicode"

	"github.com/multiwan/multiwan/internal/config"
	"github.com/multiwan/multiwan/internal/control"
)

// dial finds the daemon through the control socket named in the config. The
// config may be broken (reload is how a user finds out), so the socket path
// is read leniently.
func dial(path string, stderr io.Writer) (*control.Client, bool) {
	c, err := control.Dial(config.SocketPath(path))
	if err != nil {
		fmt.Fprintf(stderr, "multiwan: %v\n", err)
		return nil, false
	}
	return c, true
}

func status(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return statusUntil(ctx, args, stdout, stderr, time.Second)
}

// statusUntil is status; with --watch it redraws the table every period
// until ctx ends.
func statusUntil(ctx context.Context, args []string, stdout, stderr io.Writer, period time.Duration) int {
	fs, path := flags("status", stderr)
	asJSON := fs.Bool("json", false, "print the status as JSON")
	watch := fs.Bool("watch", false, "redraw the table every second until interrupted")
	if !parse(fs, args, stderr) {
		return 2
	}
	if *watch && *asJSON {
		fmt.Fprintln(stderr, "multiwan status: --watch draws the table; use multiwan events --json to follow changes")
		return 2
	}
	c, ok := dial(*path, stderr)
	if !ok {
		return 1
	}
	defer c.Close()
	for {
		st, err := c.Status()
		if err != nil {
			fmt.Fprintf(stderr, "multiwan status: %v\n", err)
			return 1
		}
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(st); err != nil {
				fmt.Fprintf(stderr, "multiwan status: %v\n", err)
				return 1
			}
			return 0
		}
		if !*watch {
			st.Table(stdout)
			return 0
		}
		// Home, clear: one screen, redrawn.
		var b bytes.Buffer
		b.WriteString("\x1b[H\x1b[2J")
		fmt.Fprintf(&b, "multiwan status, every %v (%s); Ctrl-C to stop\n\n", period, time.Now().Format("15:04:05"))
		st.Table(&b)
		if _, err := stdout.Write(b.Bytes()); err != nil {
			return 1
		}
		select {
		case <-ctx.Done():
			return 0
		case <-time.After(period):
		}
	}
}

func use(args []string, stdout, stderr io.Writer) int {
	fs, path := flags("use", stderr)
	if fs.Parse(args) != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: multiwan use [-c FILE] WAN|auto")
		return 2
	}
	c, ok := dial(*path, stderr)
	if !ok {
		return 1
	}
	defer c.Close()
	if err := c.Use(fs.Arg(0)); err != nil {
		fmt.Fprintf(stderr, "multiwan use: %v\n", err)
		return 1
	}
	if fs.Arg(0) == "auto" {
		fmt.Fprintln(stdout, "automatic choice restored")
	} else {
		fmt.Fprintf(stdout, "new connections prefer %s; established TCP connections stay where they are\n", fs.Arg(0))
	}
	return 0
}

func reload(args []string, stdout, stderr io.Writer) int {
	fs, path := flags("reload", stderr)
	if !parse(fs, args, stderr) {
		return 2
	}
	c, ok := dial(*path, stderr)
	if !ok {
		return 1
	}
	defer c.Close()
	if err := c.Reload(); err != nil {
		// The daemon's refusal carries the FILE:LINE:COL lines.
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintln(stdout, "reloaded")
	return 0
}

// events prints the daemon's events: the last few, then each new one as it
// happens, until interrupted. main wires it as `multiwan events`.
func events(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return eventsUntil(ctx, args, stdout, stderr)
}

// eventsUntil is events, stopped by ctx rather than by a signal.
func eventsUntil(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, path := flags("events", stderr)
	past := fs.Int("past", 10, "how many past events to show first (at most 1000)")
	asJSON := fs.Bool("json", false, "print each event as one JSON line")
	if !parse(fs, args, stderr) {
		return 2
	}
	if fs.NArg() != 0 || *past < 0 {
		fmt.Fprintln(stderr, "usage: multiwan events [-c FILE] [--past N] [--json]")
		return 2
	}
	c, ok := dial(*path, stderr)
	if !ok {
		return 1
	}
	defer c.Close()
	enc := json.NewEncoder(stdout)
	err := c.Events(ctx, *past, func(ev control.Event) error {
		if *asJSON {
			return enc.Encode(ev)
		}
		_, err := fmt.Fprintln(stdout, eventLine(ev, time.Local))
		return err
	})
	if err != nil {
		fmt.Fprintf(stderr, "multiwan events: %v\n", err)
		return 1
	}
	if ctx.Err() == nil {
		// The daemon is stopping, or this reader fell too far behind.
		fmt.Fprintln(stderr, "multiwan events: the daemon ended the stream")
		return 1
	}
	return 0
}

// eventLine formats an event as one line: when, what kind, what happened.
func eventLine(ev control.Event, loc *time.Location) string {
	printable := func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}
	return fmt.Sprintf("%s  %-15s  %s", ev.Time.In(loc).Format("2006-01-02 15:04:05"),
		strings.Map(printable, ev.Kind), strings.Map(printable, ev.Message))
}
