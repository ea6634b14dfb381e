// Command multiwan-demo shows multiwan at work in a lab of network
// namespaces: a LAN client, the router running the real daemon, two ISPs and
// an "internet" with a server that answers with the address it sees. It
// shows which ISP the client is seen from, takes the primary uplink away,
// measures how long until new connections go through the backup, brings it
// back, and removes the lab. `make demo` runs it; it needs root.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/multiwan/multiwan/internal/lab"
)

func main() {
	bin := flag.String("multiwan", "bin/multiwan", "the multiwan binary to run on the router")
	verbose := flag.Bool("v", false, "show the lab's and the daemon's own output")
	flag.Parse()
	if err := run(*bin, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

var start = time.Now()

func say(format string, args ...any) {
	fmt.Printf("[%6.2fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
}

func run(bin string, verbose bool) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root to create network namespaces (sudo make demo)")
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	if _, err := os.Stat(abs); err != nil {
		return fmt.Errorf("multiwan binary: %w (make build)", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	logf := func(string, ...any) {}
	if verbose {
		logf = func(f string, a ...any) { fmt.Printf("    | "+f+"\n", a...) }
	}
	_, _ = lab.SweepStale()
	say("building the lab: client ─ router ─ isp1, isp2 ─ internet (server %s)", lab.ServiceAddr)
	l, err := lab.New(lab.Options{ISPs: 2, Logf: logf})
	if err != nil {
		return err
	}
	defer func() {
		l.Close()
		say("lab removed")
	}()

	dir, err := os.MkdirTemp("", "multiwan-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfgPath := filepath.Join(dir, "multiwan.yaml")
	cfg := fmt.Sprintf(`wans:
  - {name: isp1, interface: %s, gateway: %s, probe: {targets: [%s, %s], interval: 100ms}}
  - {name: isp2, interface: %s, gateway: %s, probe: {targets: [%s, %s], interval: 100ms}}
policies:
  - name: failover
    members:
      - {wan: isp1, tier: 1}
      - {wan: isp2, tier: 2}
default_policy: failover
control: {socket: %s}
state_dir: %s
`, lab.WANIface(1), lab.ISPGateway(1), lab.ProbeAddr1, lab.ProbeAddr2,
		lab.WANIface(2), lab.ISPGateway(2), lab.ProbeAddr1, lab.ProbeAddr2, filepath.Join(dir, "mw.sock"), filepath.Join(dir, "state"))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	fmt.Printf("\nconfig:\n%s\n", indent(cfg))

	daemon, err := l.Start(lab.NSRouter, abs, "run", "-c", cfgPath)
	if err != nil {
		return err
	}
	defer func() {
		_ = daemon.Signal(syscall.SIGTERM)
		if err := daemon.Wait(10 * time.Second); err != nil {
			say("daemon did not stop cleanly: %v", err)
		} else {
			say("daemon stopped (SIGTERM): everything it installed is removed")
		}
	}()
	if err := waitLog(ctx, l, daemon, "msg=installed"); err != nil {
		return err
	}
	say("multiwan is running on the router")
	seen := showLogAfter(ctx, l, daemon, "", `wan=isp2 from=unknown to=up`)
	status := func() {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		out, err := l.Exec(c, lab.NSRouter, abs, "status", "-c", cfgPath)
		if err != nil {
			say("status: %v", err)
		}
		fmt.Printf("\n$ multiwan status\n%s\n", indent(string(out)))
	}
	status()

	isp := map[string]string{lab.ISPPublicAddr(1): "isp1", lab.ISPPublicAddr(2): "isp2"}
	url := fmt.Sprintf("http://%s/", lab.ServiceAddr)
	who := func() (string, error) {
		c, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		body, err := l.Curl(c, lab.NSClient, url)
		if err != nil {
			return "", err
		}
		return isp[body] + " (" + body + ")", nil
	}
	for range 3 {
		w, err := who()
		if err != nil {
			return err
		}
		say("client → %s: the server sees us from %s", url, w)
	}

	say("cutting isp1's upstream: its link to the router stays up, only the probes can tell")
	cut := time.Now()
	if err := l.CutUpstream(1); err != nil {
		return err
	}
	switched, err := firstFrom(ctx, who, "isp2")
	if err != nil {
		return err
	}
	say("first new connection through isp2 %.0f ms after the cut", switched.Sub(cut).Seconds()*1000)
	seen = showLogAfter(ctx, l, daemon, seen, `"new connections"="isp2 100%"`)
	status()

	say("restoring isp1's upstream")
	back := time.Now()
	if err := l.RestoreUpstream(1); err != nil {
		return err
	}
	returned, err := firstFrom(ctx, who, "isp1")
	if err != nil {
		return err
	}
	say("new connections back on isp1 %.0f ms later (3 good probe rounds)", returned.Sub(back).Seconds()*1000)
	showLogAfter(ctx, l, daemon, seen, `"new connections"="isp1 100%"`)
	status()
	return nil
}

// firstFrom polls until who answers from the wanted ISP (at most 10 s).
func firstFrom(ctx context.Context, who func() (string, error), want string) (time.Time, error) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if w, err := who(); err == nil && strings.HasPrefix(w, want) {
			return time.Now(), nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return time.Time{}, fmt.Errorf("no connection through %s within 10 s", want)
}

// showLogAfter waits (at most 5 s) until the daemon has logged want after
// the output it had already shown, prints what is new, and returns the whole
// output so far. The daemon's lines reach us through a pipe, a little after
// the kernel changed, so they are awaited rather than assumed.
func showLogAfter(ctx context.Context, l *lab.Lab, p *lab.Proc, shown, want string) string {
	c, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	shown = p.Output()[:min(len(shown), len(p.Output()))]
	_ = l.WaitFor(c, func() error {
		if strings.Contains(p.Output()[len(shown):], want) {
			return nil
		}
		return fmt.Errorf("not logged yet")
	})
	showLog(p, len(shown))
	return p.Output()
}

func waitLog(ctx context.Context, l *lab.Lab, p *lab.Proc, s string) error {
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return l.WaitFor(c, func() error {
		if strings.Contains(p.Output(), s) {
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("multiwan exited:\n%s", p.Output())
		}
		return fmt.Errorf("multiwan not ready")
	})
}

// showLog prints the daemon's log lines written since offset.
func showLog(p *lab.Proc, offset int) {
	out := p.Output()
	if offset > len(out) {
		return
	}
	for _, line := range strings.Split(strings.TrimSpace(out[offset:]), "\n") {
		if line != "" {
			fmt.Printf("           daemon: %s\n", line)
		}
	}
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n    ")
}
