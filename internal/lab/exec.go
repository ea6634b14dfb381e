package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// maxProcOutput bounds the output a Proc keeps; older output is dropped.
const maxProcOutput = 8 << 20

// withDefaultTimeout gives ctx a deadline if it has none, so every wait in
// the lab is bounded.
func withDefaultTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// command prepares argv to run in lab namespace ns, in its own process
// group so the whole group can be killed, and killed if this process dies.
func (l *Lab) command(ctx context.Context, ns string, argv []string) (*exec.Cmd, error) {
	r, err := l.real(ns)
	if err != nil {
		return nil, err
	}
	if len(argv) == 0 {
		return nil, errors.New("lab: empty command")
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", r}, argv...)...)
	// Pdeathsig is tied to the forking OS thread; Go only retires threads
	// whose goroutine exits while locked, which the lab avoids.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// Do not wait forever for grandchildren that inherited the pipes.
	cmd.WaitDelay = 2 * time.Second
	return cmd, nil
}

// Exec runs argv in lab namespace ns (via "ip netns exec") and returns its
// combined stdout and stderr. When ctx ends the command's whole process
// group is killed; without a ctx deadline a 2 minute limit applies.
func (l *Lab) Exec(ctx context.Context, ns string, argv ...string) ([]byte, error) {
	var out bytes.Buffer
	err := l.execTo(ctx, ns, argv, &out, &out)
	return out.Bytes(), err
}

func (l *Lab) execTo(ctx context.Context, ns string, argv []string, stdout, stderr *bytes.Buffer) error {
	ctx, cancel := withDefaultTimeout(ctx, defaultExecTTL)
	defer cancel()
	cmd, err := l.command(ctx, ns, argv)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err = cmd.Run()
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%s in %s: %w (%v)", strings.Join(argv, " "), ns, ctx.Err(), err)
	} else if err != nil {
		err = fmt.Errorf("%s in %s: %w", strings.Join(argv, " "), ns, err)
	}
	return err
}

// Proc is a long-running process started by [Lab.Start].
type Proc struct {
	ns   string
	argv []string
	cmd  *exec.Cmd
	out  *procOutput
	done chan struct{} // closed when the process has been reaped
	err  error         // exit status, valid after done
}

// Start starts argv in lab namespace ns and returns at once. Its stdout and
// stderr are collected (see [Proc.Output]) and copied line by line to the
// lab's logger, prefixed with "[ns]". The lab kills it on Close.
func (l *Lab) Start(ns string, argv ...string) (*Proc, error) {
	// The context only serves Close's cleanup path; Proc.Kill does the
	// killing, so it is never cancelled here.
	cmd, err := l.command(context.Background(), ns, argv)
	if err != nil {
		return nil, err
	}
	p := &Proc{
		ns:   ns,
		argv: argv,
		cmd:  cmd,
		out:  &procOutput{prefix: "[" + ns + "] ", logf: l.log},
		done: make(chan struct{}),
	}
	cmd.Stdout, cmd.Stderr = p.out, p.out

	// Register under the lock before starting so a concurrent Close cannot
	// miss the process.
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errors.New("lab: closed")
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("lab: start %s in %s: %w", strings.Join(argv, " "), ns, err)
	}
	l.procs = append(l.procs, p)
	go func() {
		p.err = cmd.Wait()
		p.out.flush()
		close(p.done)
	}()
	l.log("lab: started [%s] pid %d: %s", ns, cmd.Process.Pid, strings.Join(argv, " "))
	return p, nil
}

// Pid returns the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Output returns everything the process has written to stdout and stderr
// so far (the most recent 8 MiB).
func (p *Proc) Output() string { return p.out.String() }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error {
	if p.Exited() {
		return os.ErrProcessDone
	}
	return p.cmd.Process.Signal(sig)
}

// Wait waits up to timeout for the process to end and returns its exit
// status (nil for a clean exit), or an error if it is still running.
func (p *Proc) Wait(timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return p.err
	case <-t.C:
		return fmt.Errorf("lab: [%s] %s still running after %v", p.ns, strings.Join(p.argv, " "), timeout)
	}
}

// Kill kills the process and its process group and waits (bounded) for it
// to be reaped. Killing an ended process is not an error.
func (p *Proc) Kill() error {
	if p.Exited() {
		return nil
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
		return nil
	case <-time.After(killWait):
		return fmt.Errorf("lab: [%s] pid %d not reaped %v after SIGKILL", p.ns, p.Pid(), killWait)
	}
}

// procOutput collects a process's output and tees complete lines to a
// logger.
type procOutput struct {
	prefix string
	logf   func(format string, args ...any)

	mu      sync.Mutex
	buf     bytes.Buffer
	partial []byte
}

func (o *procOutput) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Write(b)
	if o.buf.Len() > maxProcOutput {
		keep := o.buf.Bytes()[o.buf.Len()-maxProcOutput/2:]
		o.buf = *bytes.NewBuffer(append([]byte(nil), keep...))
	}
	o.partial = append(o.partial, b...)
	for {
		i := bytes.IndexByte(o.partial, '\n')
		if i < 0 {
			break
		}
		o.logf("%s%s", o.prefix, o.partial[:i])
		o.partial = o.partial[i+1:]
	}
	// A process that never writes a newline must not grow this forever.
	if len(o.partial) > 64<<10 {
		o.logf("%s%s", o.prefix, o.partial)
		o.partial = nil
	}
	return len(b), nil
}

func (o *procOutput) flush() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.partial) > 0 {
		o.logf("%s%s", o.prefix, o.partial)
		o.partial = nil
	}
}

func (o *procOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}
