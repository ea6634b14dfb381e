package daemon

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/multiwan/multiwan/internal/config"
	"github.com/multiwan/multiwan/internal/control"
)

// The Daemon is the control socket's Handler: these methods run on the
// socket's goroutines and reach the loop only by message.
var _ control.Handler = (*Daemon)(nil)

// Status returns the snapshot the loop published last; it never waits for
// the loop.
func (d *Daemon) Status() control.Status {
	st := *d.status.Load()
	st.Events = d.events.last(statusEvents)
	return d.withDNSWrite(st)
}

// Use sets the manual override: wan becomes the preferred member of every
// policy that contains it; "" or "auto" returns to the automatic choice.
// An unknown WAN is refused (*control.Refused).
func (d *Daemon) Use(ctx context.Context, wan string) error {
	return d.send(ctx, request{kind: "use", wan: wan})
}

// Reload re-reads the config on the caller's goroutine and hands it to
// the loop. An invalid file is refused with its errors (a *control.Refused
// holding one FILE:LINE:COL line each) and nothing changes.
func (d *Daemon) Reload(ctx context.Context) error {
	select {
	case d.reloading <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-d.done:
		return errStopped
	}
	defer func() { <-d.reloading }()
	// RELOADING=1 then READY=1, refused or not: systemctl reload waits
	// for it, and the state it reports is the one running.
	d.opt.Notify("RELOADING=1\n" + monotonicUsec())
	defer d.opt.Notify("READY=1")
	cfg, err := d.opt.Load()
	d.opt.Metrics.Reloaded(err == nil)
	if err != nil {
		d.log.Error("reload refused, keeping the running config", "err", oneLine(err))
		d.event(control.Event{Kind: "reload-refused", Message: "reload refused: " + oneLine(err)})
		var list config.ErrorList
		if errors.As(err, &list) {
			return &control.Refused{Msg: list.Error()}
		}
		return &control.Refused{Msg: err.Error()}
	}
	return d.send(ctx, request{kind: "reload", cfg: cfg})
}

// Subscribe returns the last n events and the live ones.
func (d *Daemon) Subscribe(n int) ([]control.Event, <-chan control.Event, func()) {
	return d.events.subscribe(n)
}

// monotonicUsec is the MONOTONIC_USEC= field that must come with
// RELOADING=1 (systemd 253+, Type=notify-reload): CLOCK_MONOTONIC in µs.
func monotonicUsec() string {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return ""
	}
	return fmt.Sprintf("MONOTONIC_USEC=%d", ts.Sec*1_000_000+ts.Nsec/1000)
}
