// Command multiwan is a multi-WAN router for Linux: failover, weighted load
// balancing and steering over nftables and policy routing.
//
//	multiwan check  -c FILE                 validate a config
//	multiwan plan   -c FILE [--down WANS]   print what run would install
//	multiwan run    -c FILE                 the daemon
//	multiwan status|use|reload|events       talk to the running daemon
//
// The CLI only parses flags and calls the internal packages.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"

	"github.com/multiwan/multiwan/internal/config"
	"github.com/multiwan/multiwan/internal/conntrack"
	"github.com/multiwan/multiwan/internal/control"
	"github.com/multiwan/multiwan/internal/daemon"
	"github.com/multiwan/multiwan/internal/hooks"
	"github.com/multiwan/multiwan/internal/kernel"
	"github.com/multiwan/multiwan/internal/logging"
	"github.com/multiwan/multiwan/internal/metrics"
	"github.com/multiwan/multiwan/internal/plan"
	"github.com/multiwan/multiwan/internal/web"
)

const usage = `usage: multiwan <command> [flags]

commands:
  check  -c FILE                   validate the config; prints "ok" or every error as FILE:LINE:COL: message
  plan   -c FILE [--down WAN,...]  print the nft table, routes, ip rules and sysctls run would install
  run    -c FILE [--log-level L]   run the daemon in the foreground (SIGHUP reloads, SIGTERM/SIGINT removes everything and exits)
  status -c FILE [--json]          ask the running daemon how its WANs and policies are
  use    -c FILE WAN|auto          prefer WAN in every policy that has it; auto returns to the health-driven choice
  reload -c FILE                   make the daemon re-read its config; an invalid one is refused and changes nothing
  events -c FILE [--past N] [--json]  follow the daemon's events live (state changes, switches, repairs, reloads)
  explain -c FILE --src A --dst B [--proto P] [--sport N] [--dport N] [--iif IF] [--local] [--offline [--down WAN,...]] [--json]
                                   the path a new connection takes: rule, policy, WAN, chains, ip rule, source after NAT, and if its WAN died
  init   [-o FILE]                 propose a config for this box from its interfaces and default routes (changes nothing)
  import mwan3 FILE                convert an OpenWrt mwan3 config (/etc/config/mwan3) to multiwan YAML on stdout
  version                          print the version, commit and Go version

-c defaults to ` + config.DefaultPath + "\n"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "check":
		return check(args, stdout, stderr)
	case "plan":
		return planCmd(args, stdout, stderr)
	case "run":
		return runDaemon(args, stderr)
	case "status":
		return status(args, stdout, stderr)
	case "use":
		return use(args, stdout, stderr)
	case "reload":
		return reload(args, stdout, stderr)
	case "events":
		return events(args, stdout, stderr)
	case "explain":
		return explain(args, stdout, stderr)
	case "init":
		return initCmd(args, stdout, stderr)
	case "import":
		return importCmd(args, stdout, stderr)
	case "version":
		return version(args, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "multiwan: unknown command %q\n%s", cmd, usage)
	return 2
}

func flags(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("multiwan "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", config.DefaultPath, "config file")
	return fs, path
}

// parse parses args into fs and refuses positional arguments, which
// these commands do not take: `multiwan check new.yaml` would otherwise
// check the default config and could say ok about the wrong file.
func parse(fs *flag.FlagSet, args []string, stderr io.Writer) bool {
	if fs.Parse(args) != nil {
		return false
	}
	if fs.NArg() > 0 {
		arg := fs.Arg(0)
		hint := ""
		if strings.HasSuffix(arg, ".yaml") || strings.HasSuffix(arg, ".yml") || strings.Contains(arg, "/") {
			hint = fmt.Sprintf("; the config file is given with -c: %s -c %s", fs.Name(), arg)
		}
		fmt.Fprintf(stderr, "%s: unexpected argument %q%s\n", fs.Name(), arg, hint)
		return false
	}
	return true
}

// load reads the config, printing every error as FILE:LINE:COL: message.
func load(path string, stderr io.Writer) (*config.Config, bool) {
	cfg, err := config.Load(path)
	if err != nil {
		var list config.ErrorList
		if errors.As(err, &list) {
			for _, line := range list.Lines() {
				fmt.Fprintln(stderr, line)
			}
		} else {
			fmt.Fprintf(stderr, "%s: %v\n", path, err)
		}
		return nil, false
	}
	return cfg, true
}

func check(args []string, stdout, stderr io.Writer) int {
	fs, path := flags("check", stderr)
	if !parse(fs, args, stderr) {
		return 2
	}
	cfg, ok := load(*path, stderr)
	if !ok {
		return 1
	}
	// Gaps are warnings: the config is valid and check says ok.
	for _, n := range plan.Notes(cfg, nil) {
		fmt.Fprintf(stderr, "%s:%d:%d: warning: %s\n", cfg.File, n.Pos.Line, n.Pos.Col, n)
	}
	fmt.Fprintln(stdout, "ok")
	return 0
}

func planCmd(args []string, stdout, stderr io.Writer) int {
	fs, path := flags("plan", stderr)
	down := fs.String("down", "", "comma-separated WANs to plan as down")
	if !parse(fs, args, stderr) {
		return 2
	}
	cfg, ok := load(*path, stderr)
	if !ok {
		return 1
	}
	// No kernel access here: every link is assumed present and up, with
	// no addresses known yet. A `gateway: auto` WAN is shown routed through
	// its interface (gateway6: auto too); run uses the gateway it learns.
	health, links, err := offlineState(cfg, *down)
	if err != nil {
		fmt.Fprintf(stderr, "multiwan plan: %v\n", err)
		return 1
	}
	d := plan.Plan(cfg, health, links, "")
	fmt.Fprintf(stdout, "# multiwan plan for %s", cfg.File)
	if *down != "" {
		fmt.Fprintf(stdout, " with %s down", *down)
	}
	fmt.Fprintln(stdout)
	fmt.Fprintln(stdout, "# WAN addresses are learned at run time (chain bound, map wan_net and the \"from ADDRESS\" rules).")
	for _, p := range d.Policies {
		fmt.Fprintf(stdout, "# policy %s: %s\n", p.Name, p)
	}
	for _, p := range d.Policies6 {
		fmt.Fprintf(stdout, "# policy %s (ipv6): %s\n", p.Name, p)
	}
	fmt.Fprintln(stdout)
	fmt.Fprint(stdout, d.String())
	return 0
}

func runDaemon(args []string, stderr io.Writer) int {
	fs, path := flags("run", stderr)
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if !parse(fs, args, stderr) {
		return 2
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(stderr, "multiwan run: --log-level: %v\n", err)
		return 2
	}
	// One processor, unless GOMAXPROCS says otherwise. The daemon's work
	// is short steps on one goroutine at a time (a probe round, a
	// decision, a notification), a small fraction of a core in all; with
	// a second processor, every netlink notification the kernel sends
	// during a switch (to the nft and rule watchers) wakes another CPU,
	// which costs a decision more than it saves (README: Benchmarks).
	// Probe answers are timed by the kernel and read once more before a
	// round is judged, so a long step (a reload of a big list) delays
	// their reading without making them late.
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	// Under systemd, lines the journal reads: priority prefix, no time.
	journal := false
	if f, ok := stderr.(*os.File); ok {
		journal = logging.UnderJournal(f)
	}
	log := logging.New(stderr, lv, journal)
	cfg, ok := load(*path, stderr)
	if !ok {
		return 1
	}
	k, err := kernel.New(plan.TableName)
	if err != nil {
		log.Error("cannot reach the kernel", "err", err)
		return 1
	}
	// Sysctl values from before multiwan first changed them, kept where a
	// crash does not lose them.
	k.StateFile = filepath.Join(cfg.StateDir, "sysctl.json")
	// Keeps established NATed connections alive while multiwan repairs a
	// foreign `flush ruleset` (see kernel.Anchor).
	if anchor, err := kernel.OpenAnchor(plan.TableName + "_anchor"); err != nil {
		log.Warn("no anchor table: a foreign `nft flush ruleset` may reset NATed connections until multiwan repairs its table", "err", err)
	} else {
		defer anchor.Close()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}()
	flows, err := conntrack.Open()
	if err != nil {
		log.Warn("conntrack cleanup unavailable: connections of a dead WAN will only time out", "err", err)
	}
	var cleaner daemon.Flows
	if flows != nil {
		defer flows.Close()
		cleaner = flows
	}
	srv, err := control.Listen(cfg.Control.Socket, os.FileMode(cfg.Control.Mode))
	if err != nil {
		log.Error("control socket", "err", err)
		return 1
	}
	defer srv.Close()
	var runner hooks.Runner
	m := metrics.New(nil)
	runner.Done = m.HookRan
	log.Info("multiwan starting", "config", cfg.File, "wans", len(cfg.WANs), "socket", srv.Path(), "procs", runtime.GOMAXPROCS(0))
	d := daemon.New(cfg, daemon.Options{
		Log:        log,
		Kernel:     k,
		Flows:      cleaner,
		Hooks:      &runner,
		Metrics:    m,
		Counters:   k.Counters,
		CountFlows: countFlows(log),
		Load:       func() (*config.Config, error) { return config.Load(*path) },
		Notify: func(state string) {
			if _, err := sddaemon.SdNotify(false, state); err != nil {
				log.Debug("sd_notify", "err", err)
			}
		},
		Watchdog: watchdogInterval(log),
	})
	m.SetSource(d)
	go func() {
		if err := srv.Serve(ctx, d, log); err != nil && ctx.Err() == nil {
			log.Error("control socket stopped", "err", err)
		}
	}()
	if cfg.HTTP.Listen.IsValid() {
		serveHTTP(ctx, cfg, d, m, log)
	}
	err = d.Run(ctx, reload)
	wait, cancel := context.WithTimeout(context.Background(), 11*time.Second)
	defer cancel()
	_ = runner.Wait(wait)
	if err != nil {
		log.Error("could not install the plan", "err", err)
		return 1
	}
	return 0
}

// watchdogInterval is how often the daemon's loop pings systemd's
// watchdog: half of WatchdogSec, when the unit sets one.
func watchdogInterval(log *slog.Logger) time.Duration {
	d, err := sddaemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("systemd watchdog settings unreadable; not pinging it", "err", err)
		return 0
	}
	return d / 2
}

// serveHTTP starts the opt-in network listener: the dashboard at /,
// Prometheus metrics at /metrics, and the control API at /v1/, read-only
// unless a request carries the token of http.token_file. A listener that
// cannot start is logged; routing goes on without it.
func serveHTTP(ctx context.Context, cfg *config.Config, d *daemon.Daemon, m *metrics.Metrics, log *slog.Logger) {
	token := ""
	if cfg.HTTP.TokenFile != "" {
		t, err := config.ReadToken(cfg.HTTP.TokenFile)
		if err != nil {
			log.Error("http listener: no token, so the dashboard is read-only", "err", err)
		}
		token = t
	}
	srv, err := control.ListenTCP(cfg.HTTP.Listen.String())
	if err != nil {
		log.Error("http listener not started", "listen", cfg.HTTP.Listen, "err", err)
		return
	}
	log.Info("http listener", "listen", srv.Addr(), "control", token != "")
	go func() {
		defer srv.Close()
		err := srv.ServeWith(ctx, log, func(opt control.APIOptions) http.Handler {
			opt.Token = token
			mux := http.NewServeMux()
			mux.Handle("/v1/", control.NewAPI(d, opt))
			mux.Handle("/metrics", m.Handler())
			mux.Handle("/", web.Handler())
			return mux
		})
		if err != nil && ctx.Err() == nil {
			log.Error("http listener stopped", "err", err)
		}
	}()
}

// countFlows counts conntrack entries per mark on a socket of its own (the
// daemon's cleaner is the loop's), for the connections-per-WAN metric.
func countFlows(log *slog.Logger) func(mask uint32) (map[uint32]int, error) {
	var c *conntrack.Cleaner
	return func(mask uint32) (map[uint32]int, error) {
		if c == nil {
			var err error
			if c, err = conntrack.Open(); err != nil {
				log.Debug("conntrack counting unavailable", "err", err)
				return nil, err
			}
		}
		return c.CountByMark(mask)
	}
}
