// Package hooks runs the user's hook programs when a WAN changes state or a
// policy switches.
//
// A hook is executed directly (no shell), in its own process group, with
// stdin from /dev/null, / as its working directory and an environment made
// only of the daemon's PATH and the event: nothing else of the daemon's
// environment leaks into it. Its combined output is logged line by line
// (at most 64 KiB of it) and its exit status and duration after it. A hook
// that runs longer than the timeout is killed, with everything it started
// in its process group.
//
// Running hooks never blocks the caller: a failover must not wait for a
// notification script. Hooks of one event run concurrently, but each hook
// sees its events in order, one at a time, through its own queue.
// When a hook exits, anything still running in its process group is
// killed too. A queue
// that grows past 16 waiting events drops the oldest, with a warning:
// a hook stuck for minutes gets the latest news, not a backlog.
//
// The environment (every variable is set, empty when it does not apply):
//
//	MULTIWAN_EVENT      up, down, degraded, switch or dns
//	MULTIWAN_WAN        the WAN's name (for switch: the first active WAN)
//	MULTIWAN_INTERFACE  its Linux interface
//	MULTIWAN_STATE      its state now
//	MULTIWAN_PREVIOUS   its state before
//	MULTIWAN_POLICY     the policy that switched (switch only)
//	MULTIWAN_ACTIVE     where the policy's new connections go now, e.g. "isp1 75%, isp2 25%"
//	MULTIWAN_DNS        the resolver list, in order, space-separated (dns only)
//	MULTIWAN_DNS_USABLE the resolvers of usable WANs, in order (dns only)
//	MULTIWAN_DNS_LINKS  each interface's resolvers, "wan1=192.0.2.53,192.0.2.54 wan2=..." (dns only)
//	MULTIWAN_RESOLV_FILE the file multiwan wrote the list to (dns only)
//	ACTION              as in mwan3: ifup, ifdown, degraded or switch
//	INTERFACE           as in mwan3: the logical interface, i.e. the WAN's name
//	DEVICE              as in mwan3: the Linux interface
//	PATH                the daemon's PATH
package hooks

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// DefaultTimeout is how long a hook may run before it is killed.
	DefaultTimeout = 10 * time.Second
	// maxOutput bounds the output kept of one run: a hook printing in a
	// loop must not grow the daemon.
	maxOutput = 64 << 10
	// maxQueue is how many events may wait for one busy hook.
	maxQueue = 16
	// waitDelay is how long, after a hook exited or was killed, its output
	// is still read: a background child that escaped the process group
	// and holds the pipe must not hold the hook's queue.
	waitDelay = time.Second
	// defaultPath is the PATH hooks get when the daemon has none.
	defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// Event is what happened, as hooks see it in their environment.
type Event struct {
	// Kind is up, down, degraded or switch.
	Kind string
	// WAN names the WAN; for a switch, the first WAN the policy now uses.
	WAN string
	// Interface is the WAN's Linux interface.
	Interface string
	// State and Previous are the WAN's state now and before.
	State, Previous string
	// Policy names the policy that switched (switch events).
	Policy string
	// Active says where the policy's new connections go now, e.g.
	// "isp1 75%, isp2 25%" (switch events).
	Active string
	// Family is the address family the event concerns: ipv4 or ipv6.
	Family string
	// DNS, DNSUsable and DNSLinks are the resolver list (dns events):
	// every resolver in order, those of usable WANs, and each WAN
	// interface's as "iface=a,b"; all space-separated. ResolvFile is the
	// file the list was written to.
	DNS, DNSUsable, DNSLinks, ResolvFile string
}

// Env returns the event's environment for a hook: PATH and the event's
// variables, nothing else.
func (ev Event) Env(path string) []string {
	if path == "" {
		path = defaultPath
	}
	action := ev.Kind
	switch ev.Kind {
	case "up":
		action = "ifup"
	case "down":
		action = "ifdown"
	}
	return []string{
		"PATH=" + path,
		"MULTIWAN_EVENT=" + ev.Kind,
		"MULTIWAN_WAN=" + ev.WAN,
		"MULTIWAN_INTERFACE=" + ev.Interface,
		"MULTIWAN_STATE=" + ev.State,
		"MULTIWAN_PREVIOUS=" + ev.Previous,
		"MULTIWAN_POLICY=" + ev.Policy,
		"MULTIWAN_ACTIVE=" + ev.Active,
		"MULTIWAN_FAMILY=" + ev.Family,
		"MULTIWAN_DNS=" + ev.DNS,
		"MULTIWAN_DNS_USABLE=" + ev.DNSUsable,
		"MULTIWAN_DNS_LINKS=" + ev.DNSLinks,
		"MULTIWAN_RESOLV_FILE=" + ev.ResolvFile,
		"ACTION=" + action,
		"INTERFACE=" + ev.WAN,
		"DEVICE=" + ev.Interface,
	}
}

// Runner runs hooks, keeping one queue per hook path. The zero value is
// ready to use; a Runner must not be copied after first use.
type Runner struct {
	// Timeout bounds each run of a hook; zero means DefaultTimeout.
	Timeout time.Duration
	// Done, when set, is told each run's result: ok, failed, timeout or
	// not_started (metrics). It must not block.
	Done func(result string)

	mu     sync.Mutex
	queues map[string][]job // events waiting, per hook path with a worker
	active int              // workers running
	idle   chan struct{}    // closed when active drops to zero
}

type job struct {
	path    string
	ctx     context.Context
	log     *slog.Logger
	ev      Event
	timeout time.Duration
}

var defaultRunner Runner

// Run runs every hook in paths for ev, through a package-wide Runner with
// the default timeout. See Runner.Run.
func Run(ctx context.Context, log *slog.Logger, paths []string, ev Event) {
	defaultRunner.Run(ctx, log, paths, 0, ev)
}

// Wait waits for the hooks started by Run. See Runner.Wait.
func Wait(ctx context.Context) error { return defaultRunner.Wait(ctx) }

// Run queues ev for every hook in paths and returns at once. Each hook runs
// in a goroutine of its own; ctx bounds the runs (cancelling it kills
// running hooks and skips queued ones), so pass the daemon's lifetime
// context, not a request's.
//
// timeout bounds each hook's run for this event; zero means the Runner's
// Timeout.
func (r *Runner) Run(ctx context.Context, log *slog.Logger, paths []string, timeout time.Duration, ev Event) {
	if log == nil {
		log = slog.Default()
	}
	var dropped []job
	r.mu.Lock()
	if r.queues == nil {
		r.queues = map[string][]job{}
	}
	for _, path := range paths {
		q, busy := r.queues[path]
		if len(q) == maxQueue {
			dropped = append(dropped, q[0])
			q = append(q[:0], q[1:]...)
		}
		r.queues[path] = append(q, job{path: path, ctx: ctx, log: log, ev: ev, timeout: timeout})
		if !busy {
			if r.active == 0 {
				r.idle = make(chan struct{})
			}
			r.active++
			go r.work(path)
		}
	}
	r.mu.Unlock()
	// Logged outside the lock: a slow log sink must not hold up workers
	// or other callers.
	for _, j := range dropped {
		log.Warn("hook busy: dropped its oldest queued event", "hook", j.path,
			"event", j.ev.Kind, "wan", j.ev.WAN, "policy", j.ev.Policy, "queued", maxQueue)
	}
}

// Wait returns when no hook is running or queued, or with ctx's error when
// ctx is done first.
func (r *Runner) Wait(ctx context.Context) error {
	r.mu.Lock()
	if r.active == 0 {
		r.mu.Unlock()
		return nil
	}
	idle := r.idle
	r.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// work runs path's queued events in order until the queue is empty. A
// hook's queue exists (possibly empty) exactly while its worker runs.
func (r *Runner) work(path string) {
	for {
		r.mu.Lock()
		q := r.queues[path]
		if len(q) == 0 {
			delete(r.queues, path)
			r.active--
			if r.active == 0 {
				close(r.idle)
			}
			r.mu.Unlock()
			return
		}
		j := q[0]
		r.queues[path] = q[1:]
		r.mu.Unlock()
		r.run(path, j)
	}
}

// run executes one hook for one event and logs what happened.
func (r *Runner) run(path string, j job) {
	log := j.log.With("hook", path, "event", j.ev.Kind)
	if err := j.ctx.Err(); err != nil {
		log.Warn("hook skipped: shutting down", "wan", j.ev.WAN, "err", err)
		return
	}
	timeout := j.timeout
	if timeout <= 0 {
		timeout = r.Timeout
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(j.ctx, timeout)
	defer cancel()

	out := &limitedBuffer{max: maxOutput}
	cmd := exec.CommandContext(ctx, path)
	cmd.Env = j.ev.Env(os.Getenv("PATH"))
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = out, out // one pipe: lines keep their order
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The whole group: a shell script's children would otherwise
		// outlive it and keep the output pipe open.
		if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != syscall.ESRCH {
			return err
		}
		return os.ErrProcessDone
	}
	cmd.WaitDelay = waitDelay

	log.Debug("hook start", "wan", j.ev.WAN)
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start).Round(time.Millisecond)
	if cmd.Process != nil {
		// Whatever the hook left behind in its group (a `cmd &` that
		// outlived it) goes with it: a hook must not leave processes
		// behind on a router that runs for months. A hook that means to
		// start a service does so with systemd-run or setsid.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}

	for line := range strings.Lines(out.buf.String()) {
		log.Info("hook output", "line", strings.TrimRight(line, "\r\n"))
	}
	if out.dropped > 0 {
		log.Warn("hook output truncated", "kept", maxOutput, "dropped", out.dropped)
	}

	var exitErr *exec.ExitError
	result := "failed"
	defer func() {
		if r.Done != nil {
			r.Done(result)
		}
	}()
	switch {
	case err == nil:
		result = "ok"
		log.Info("hook done", "exit", 0, "took", took)
	case cmd.Process == nil && j.ctx.Err() != nil:
		log.Warn("hook skipped: shutting down", "wan", j.ev.WAN, "err", j.ctx.Err())
	case cmd.Process == nil:
		// Missing, not executable, bad interpreter line: the user's
		// mistake, not the daemon's.
		result = "not_started"
		log.Warn("hook could not start", "err", err)
	case errors.Is(ctx.Err(), context.DeadlineExceeded) && j.ctx.Err() == nil:
		result = "timeout"
		log.Warn("hook timed out: killed", "timeout", timeout, "took", took)
	case j.ctx.Err() != nil:
		log.Warn("hook killed: shutting down", "took", took)
	case errors.As(err, &exitErr):
		log.Warn("hook failed", "exit", exitErr.ExitCode(), "status", exitErr.String(), "took", took)
	default:
		log.Warn("hook failed", "err", err, "took", took)
	}
}

// limitedBuffer keeps the first max bytes written to it and counts the
// rest.
type limitedBuffer struct {
	buf     bytes.Buffer
	max     int
	dropped int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	keep := min(len(p), b.max-b.buf.Len())
	b.buf.Write(p[:keep])
	b.dropped += len(p) - keep
	// Claim everything: a short write would make exec stop copying and
	// the hook die of SIGPIPE for talking too much.
	return len(p), nil
}
