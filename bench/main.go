// Command bench measures multiwan in the namespace lab and prints each
// figure beside its target (README: Benchmarks). `make bench` runs it as root.
// Figures are medians and percentiles over repeated runs, because the
// machines are shared and noisy; nothing here is a pass/fail test.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/multiwan/multiwan/internal/lab"
)

var (
	multiwanBin = flag.String("multiwan", "bin/multiwan", "the multiwan binary")
	cuts        = flag.Int("cuts", 10, "upstream cuts per failover measurement")
	soak        = flag.Duration("soak", 60*time.Second, "how long to watch for false alarms at 5% loss, and to measure footprint")
	toggles     = flag.Int("toggles", 1000, "override switches for the decision → kernel measurement")
	runs        = flag.Int("runs", 3, "runs of each side for the throughput and prefix-cost comparisons (median reported)")
	method      = flag.String("method", "tries", "how the client sees a switch: tries (a new connection every 10ms, several in flight, the first answer wins) or serial (one at a time, each giving up after 100ms: the method of runs before 2026-11)")
	only        = flag.String("only", "", "comma-separated measurements to run, of: "+strings.Join(measurementNames(), ", ")+" (default: all)")
)

// measurement is one benchmark, selectable by name with -only.
type measurement struct {
	name string
	run  func() error
}

// measurements lists every benchmark in the order `make bench` runs them.
var measurements = []measurement{
	{"failover-fast", func() error {
		return failoverAndRecovery("interval 100ms timeout 200ms down 3 up 3", fastProbe, "100ms", "≤ 170 ms median", "≤ 200 ms median")
	}},
	{"failover-defaults", func() error {
		return failoverAndRecovery("shipped defaults (500ms, timeout 1s, down 3, up 3)", defaultProbe, "500ms", "≤ 500 ms median", "state it")
	}},
	{"false-alarms", func() error {
		if err := falseAlarms("shipped defaults", defaultProbe); err != nil {
			return err
		}
		return falseAlarms("interval 100ms timeout 200ms down 3 up 3", fastProbe)
	}},
	{"decision", func() error { return decisionToKernel() }},
	{"footprint", func() error { return footprint() }},
	{"instruments", func() error { return instrumentsFootprint() }},
	{"counters", func() error { return counterCost() }},
	{"balance", func() error { return balanceAccuracy() }},
	{"throughput", func() error { return throughput() }},
	{"prefixes", func() error { return prefixCost() }},
	{"ct-delete", func() error { return conntrackDelete() }},
}

func measurementNames() []string {
	var names []string
	for _, m := range measurements {
		names = append(names, m.name)
	}
	return names
}

// selected returns the measurements -only asks for, all of them by default.
func selected() ([]measurement, error) {
	if strings.TrimSpace(*only) == "" {
		return measurements, nil
	}
	want := map[string]bool{}
	for _, n := range strings.Split(*only, ",") {
		if n = strings.TrimSpace(n); n != "" {
			want[n] = true
		}
	}
	var out []measurement
	for _, m := range measurements {
		if want[m.name] {
			out = append(out, m)
			delete(want, m.name)
		}
	}
	if len(want) > 0 {
		var unknown []string
		for n := range want {
			unknown = append(unknown, n)
		}
		slices.Sort(unknown)
		return nil, fmt.Errorf("unknown measurement %s (known: %s)", strings.Join(unknown, ", "), strings.Join(measurementNames(), ", "))
	}
	return out, nil
}

// row is one line of the result table.
type row struct {
	what, figure, target, note string
}

var rows []row

func add(what, figure, target, note string) {
	rows = append(rows, row{what, figure, target, note})
	fmt.Fprintf(os.Stderr, "bench: %s: %s (target %s) %s\n", what, figure, target, note)
}

func main() {
	flag.Parse()
	todo, err := selected()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: needs root (sudo make bench)")
		os.Exit(1)
	}
	bin, err := filepath.Abs(*multiwanBin)
	if err == nil {
		_, err = os.Stat(bin)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: multiwan binary:", err)
		os.Exit(1)
	}
	*multiwanBin = bin
	_, _ = lab.SweepStale()
	for _, m := range todo {
		if err := m.run(); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %s: %v\n", m.name, err)
			os.Exit(1)
		}
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "WHAT\tMEASURED\tTARGET\tNOTE")
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", r.what, r.figure, r.target, r.note)
	}
	w.Flush()
}

// daemon is multiwan running in a lab's router namespace.
type daemon struct {
	l              *lab.Lab
	cfg            string
	sock, stateDir string // its control socket and state_dir
	proc           *lab.Proc
}

func startDaemon(l *lab.Lab, cfg string, args ...string) (*daemon, error) {
	dir, err := os.MkdirTemp("", "multiwan-bench-")
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "multiwan.yaml")
	sock, state := filepath.Join(dir, "mw.sock"), filepath.Join(dir, "state")
	cfg += fmt.Sprintf("control: {socket: %s}\nstate_dir: %s\n", sock, state)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	p, err := l.Start(lab.NSRouter, append([]string{*multiwanBin, "run", "-c", path}, args...)...)
	if err != nil {
		return nil, err
	}
	d := &daemon{l: l, cfg: path, sock: sock, stateDir: state, proc: p}
	return d, d.waitState("isp1", "up", 10*time.Second)
}

func (d *daemon) stop() {
	_ = d.proc.Signal(syscall.SIGTERM)
	_ = d.proc.Wait(10 * time.Second)
	os.RemoveAll(filepath.Dir(d.cfg))
}

func (d *daemon) cli(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := d.l.Exec(ctx, lab.NSRouter, append([]string{*multiwanBin, args[0], "-c", d.cfg}, args[1:]...)...)
	return string(out), err
}

func (d *daemon) state(wan string) string {
	out, err := d.cli("status", "--json")
	if err != nil {
		return ""
	}
	var st struct {
		WANs []struct{ Name, State string } `json:"wans"`
	}
	if json.Unmarshal([]byte(out), &st) != nil {
		return ""
	}
	for _, w := range st.WANs {
		if w.Name == wan {
			return w.State
		}
	}
	return ""
}

// losses is each WAN's probe loss as status shows it, e.g. "isp1 10%,
// isp2 7.5%".
func (d *daemon) losses() string {
	out, err := d.cli("status", "--json")
	if err != nil {
		return "unknown"
	}
	var st struct {
		WANs []struct {
			Name    string
			LossPct float64 `json:"loss_pct"`
		} `json:"wans"`
	}
	if json.Unmarshal([]byte(out), &st) != nil {
		return "unknown"
	}
	var parts []string
	for _, w := range st.WANs {
		parts = append(parts, fmt.Sprintf("%s %.1f%%", w.Name, w.LossPct))
	}
	return strings.Join(parts, ", ")
}

func (d *daemon) waitState(wan, state string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.l.WaitFor(ctx, func() error {
		if got := d.state(wan); got != state {
			return fmt.Errorf("%s is %q, want %s\n%s", wan, got, state, d.proc.Output())
		}
		return nil
	})
}

func wans(n int, probe string) string {
	var b strings.Builder
	b.WriteString("wans:\n")
	for k := 1; k <= n; k++ {
		fmt.Fprintf(&b, "  - {name: isp%d, interface: wan%d, gateway: %s, probe: %s}\n", k, k, gateway(k), probe)
	}
	return b.String()
}

func gateway(k int) string {
	if k <= lab.MaxISPs {
		return lab.ISPGateway(k)
	}
	return "192.0.2.193" // the extra link footprint adds to isp3
}

const failoverPolicy = `policies:
  - name: failover
    members:
      - {wan: isp1, tier: 1}
      - {wan: isp2, tier: 2}
default_policy: failover
`

// whoami asks the internet server from the client, over a new connection,
// which address it sees; it gives up after timeout.
func whoami(l *lab.Lab, timeout time.Duration) string {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	body, err := l.Curl(ctx, lab.NSClient, "http://"+lab.ServiceAddr+"/", "--connect-timeout", fmt.Sprintf("%.3f", timeout.Seconds()))
	if err != nil {
		return ""
	}
	return body
}

// withDefaults runs fn against a two-ISP lab whose daemon probes both
// targets with the shipped defaults and fails over isp1 → isp2.
func withDefaults(fn func(l *lab.Lab, d *daemon) error) error {
	l, err := lab.New(lab.Options{ISPs: 2})
	if err != nil {
		return err
	}
	defer l.Close()
	d, err := startDaemon(l, wans(2, "{targets: [203.0.113.20, 203.0.113.30]}")+failoverPolicy)
	if err != nil {
		return err
	}
	defer d.stop()
	return fn(l, d)
}

var stageRe = regexp.MustCompile(`msg="kernel routing updated" .*routing_took=(\S+) nft_took=(\S+) nft_via=(\w*)`)

var tookRe = regexp.MustCompile(`msg=policy .*cause="override [^"]*" took=([0-9.]+)(µs|ms|s)`)

// decisionToKernel switches the override back and forth and reads, from the
// daemon's log, how long each decision took to reach the kernel (plan,
// nft transaction, rules and routes reconciled).
func decisionToKernel() error {
	return withDefaults(func(l *lab.Lab, d *daemon) error {
		for i := range *toggles {
			wan := "isp2"
			if i%2 == 1 {
				wan = "auto"
			}
			if out, err := d.cli("use", wan); err != nil {
				return fmt.Errorf("use %s: %v %s", wan, err, out)
			}
		}
		var times []time.Duration
		for _, m := range tookRe.FindAllStringSubmatch(d.proc.Output(), -1) {
			v, _ := strconv.ParseFloat(m[1], 64)
			unit := map[string]time.Duration{"µs": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[m[2]]
			times = append(times, time.Duration(v*float64(unit)))
		}
		if len(times) == 0 {
			return fmt.Errorf("no switch timings in the log")
		}
		// Where the time goes: the rules (the ip rule of the router's own
		// sockets moves to the new best WAN) and the nft table (map
		// elements, in-process), from the kernel adapter's log lines.
		var routing, nft []time.Duration
		via := map[string]int{}
		for _, m := range stageRe.FindAllStringSubmatch(d.proc.Output(), -1) {
			routing = append(routing, parseDur(m[1]))
			nft = append(nft, parseDur(m[2]))
			via[m[3]]++
		}
		note := "mwan3/VyOS rebuild with shell and nft -f"
		if len(nft) > 0 {
			note = fmt.Sprintf("of which ip rules p50 %s, nft p50 %s p99 %s (applied by %v); %s", ms(pct(routing, 50)),
				ms(pct(nft, 50)), ms(pct(nft, 99)), via, note)
		}
		add("decision → kernel updated", fmt.Sprintf("p50 %s, p99 %s (n=%d)", ms(pct(times, 50)), ms(pct(times, 99)), len(times)),
			"≤ 2 ms p99", note)
		return nil
	})
}

// footprint runs 4 WANs × 2 targets × 10 Hz and reads the daemon's RSS and
// CPU time from /proc.
func footprint() error {
	l, err := lab.New(lab.Options{ISPs: 3})
	if err != nil {
		return err
	}
	defer l.Close()
	if err := fourthWAN(l); err != nil {
		return err
	}
	policy := `policies:
  - name: all
    members: [{wan: isp1}, {wan: isp2}, {wan: isp3}, {wan: isp4}]
default_policy: all
`
	d, err := startDaemon(l, wans(4, "{targets: [203.0.113.20, 203.0.113.30], interval: 100ms}")+policy)
	if err != nil {
		return err
	}
	defer d.stop()
	for k := 1; k <= 4; k++ {
		if err := d.waitState(fmt.Sprintf("isp%d", k), "up", 10*time.Second); err != nil {
			return err
		}
	}
	pid := d.proc.Pid()
	cpu0, t0 := cpuTime(pid), time.Now()
	time.Sleep(*soak) // the daemon's steady-state cost over this time is the measurement
	cpu1, t1 := cpuTime(pid), time.Now()
	share := float64(cpu1-cpu0) / float64(t1.Sub(t0)) * 100
	add("daemon RSS, 4 WANs × 2 targets × 10 Hz", fmt.Sprintf("%.1f MB", float64(rssKB(pid))/1024), "≤ 30 MB", "")
	add("daemon CPU, same", fmt.Sprintf("%.2f %% of a core over %s", share, *soak), "≤ 2 %", "dpinger ~8 % for 100 targets at 1 Hz")
	return nil
}

// nsPath names a lab namespace for `ip link ... netns`.
func nsPath(l *lab.Lab, logical string) string { return l.NS(logical) }

// cpuTime is the process's user+system CPU time.
func cpuTime(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

func rssKB(pid int) int {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}

func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(0, min(len(s)-1, i-1))]
}

func ms(d time.Duration) string {
	if d < 10*time.Millisecond {
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
}
