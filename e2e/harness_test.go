package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multiwan/multiwan/internal/config"
	"github.com/multiwan/multiwan/internal/control"
	"github.com/multiwan/multiwan/internal/lab"
)

// newLab builds a lab that is removed when the test ends, however it ends.
func newLab(t *testing.T, isps int) *lab.Lab {
	t.Helper()
	return lab.NewForTest(t, lab.Options{ISPs: isps, Logf: t.Logf})
}

// wanYAML is the `wans:` entry of ISP k in the lab; probe, when not empty,
// is its probe settings as a YAML flow mapping.
func wanYAML(k int, probe ...string) string {
	s := fmt.Sprintf("  - name: isp%d\n    interface: %s\n    gateway: %s\n", k, lab.WANIface(k), lab.ISPGateway(k))
	if len(probe) > 0 && probe[0] != "" {
		s += "    probe: " + probe[0] + "\n"
	}
	return s
}

// setup describes a lab config.
type setup struct {
	isps                   int
	probe                  string // YAML flow mapping used for every WAN
	policies, rules, deflt string
	extra                  string // more top-level YAML (hooks, ...)
}

// labConfig returns a config for the lab's ISPs 1..isps with the given
// policies, rules and default policy (YAML fragments).
func labConfig(t *testing.T, isps int, policies, rules, defaultPolicy string) string {
	t.Helper()
	return setup{isps: isps, policies: policies, rules: rules, deflt: defaultPolicy}.yaml(t)
}

func (s setup) yaml(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("wans:\n")
	for k := 1; k <= s.isps; k++ {
		b.WriteString(wanYAML(k, s.probe))
	}
	b.WriteString("policies:\n" + s.policies)
	if s.rules != "" {
		b.WriteString("rules:\n" + s.rules)
	}
	fmt.Fprintf(&b, "default_policy: %s\ncontrol:\n  socket: %s\n", s.deflt, filepath.Join(t.TempDir(), "mw.sock"))
	b.WriteString(s.extra)
	return b.String()
}

const failover12 = `  - name: failover
    members:
      - {wan: isp1, tier: 1}
      - {wan: isp2, tier: 2}
`

// router is a multiwan daemon running in the lab's router namespace.
type router struct {
	t    *testing.T
	lab  *lab.Lab
	cfg  string
	proc *lab.Proc
}

// startRouter writes cfg to a file and runs `multiwan run` on it in the
// router namespace, waiting until the daemon says it installed its plan. At
// the end of the test the daemon is stopped with SIGTERM, must exit 0 and
// must leave nothing of its own behind.
func startRouter(t *testing.T, l *lab.Lab, cfg string) *router {
	t.Helper()
	dir := t.TempDir()
	if !strings.Contains(cfg, "state_dir:") {
		// Each daemon keeps its sysctl originals in its own directory,
		// never in the host's /run/multiwan.
		cfg += "state_dir: " + filepath.Join(dir, "state") + "\n"
	}
	if !strings.Contains(cfg, "resolv_file:") {
		// Never the host's /run/multiwan/resolv.conf.
		cfg += "resolv_file: " + filepath.Join(dir, "resolv.conf") + "\n"
	}
	path := filepath.Join(dir, "multiwan.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &router{t: t, lab: l, cfg: path}
	r.start()
	t.Cleanup(func() {
		if r.proc == nil || r.proc.Exited() {
			return
		}
		r.stop()
		r.assertClean()
	})
	return r
}

func (r *router) start() {
	r.t.Helper()
	p, err := r.lab.Start(lab.NSRouter, multiwanBin, "run", "-c", r.cfg, "--log-level", "debug")
	if err != nil {
		r.t.Fatal(err)
	}
	r.proc = p
	r.waitLog("msg=installed", 10*time.Second)
}

// waitLog waits until the daemon's output contains s.
func (r *router) waitLog(s string, timeout time.Duration) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := r.lab.WaitFor(ctx, func() error {
		if strings.Contains(r.proc.Output(), s) {
			return nil
		}
		if r.proc.Exited() {
			return fmt.Errorf("daemon exited")
		}
		return fmt.Errorf("no %q in the log yet", s)
	})
	if err != nil {
		r.t.Fatalf("waiting for %q: %v\ndaemon output:\n%s", s, err, r.proc.Output())
	}
}

// stop sends SIGTERM and requires a clean exit.
func (r *router) stop() {
	r.t.Helper()
	if err := r.proc.Signal(syscall.SIGTERM); err != nil {
		r.t.Fatalf("SIGTERM: %v", err)
	}
	if err := r.proc.Wait(15 * time.Second); err != nil {
		r.t.Fatalf("daemon did not exit cleanly after SIGTERM: %v\n%s", err, r.proc.Output())
	}
}

// cli runs a multiwan client command against this daemon's config.
func (r *router) cli(args ...string) (string, error) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	argv := append([]string{multiwanBin, args[0], "-c", r.cfg}, args[1:]...)
	out, err := r.lab.Exec(ctx, lab.NSRouter, argv...)
	return string(out), err
}

// recentEvents returns the daemon's recent events (the last 50, as
// status --json carries them), oldest first: one request, nothing to wait
// for.
func (r *router) recentEvents() []control.Event {
	r.t.Helper()
	var st struct {
		Events []control.Event `json:"events"`
	}
	r.statusInto(&st)
	return st.Events
}

// switchedAt returns when the kernel started sending policy's new
// connections as to says ("isp2 100%"), after since: the switch event is
// published once the apply succeeded.
func (r *router) switchedAt(policy, to string, since time.Time) time.Time {
	r.t.Helper()
	for _, e := range r.recentEvents() {
		if e.Kind == "switch" && e.Policy == policy && e.To == to && e.Time.After(since) {
			return e.Time
		}
	}
	r.t.Fatalf("no switch of policy %s to %q since %v", policy, to, since)
	return time.Time{}
}

// status asks the daemon for its status.
func (r *router) status() statusJSON {
	r.t.Helper()
	out, err := r.cli("status", "--json")
	if err != nil {
		r.t.Fatalf("status: %v\n%s", err, out)
	}
	var st statusJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		r.t.Fatalf("status --json: %v\n%s", err, out)
	}
	return st
}

// statusJSON is the contract of `status --json` (README: Status), decoded
// independently of the daemon's own types.
type statusJSON struct {
	WANs []struct {
		Name      string    `json:"name"`
		Interface string    `json:"interface"`
		State     string    `json:"state"`
		RTTms     float64   `json:"rtt_ms"`
		LossPct   float64   `json:"loss_pct"`
		Address   string    `json:"address"`
		Gateway   string    `json:"gateway"`
		Since     time.Time `json:"since"`
	} `json:"wans"`
	Policies []struct {
		Name   string `json:"name"`
		Active []struct {
			WAN   string  `json:"wan"`
			Share float64 `json:"share"`
		} `json:"active"`
	} `json:"policies"`
	Override string `json:"override"`
}

func (s statusJSON) state(wan string) string {
	for _, w := range s.WANs {
		if w.Name == wan {
			return w.State
		}
	}
	return ""
}

// waitState waits until the daemon reports wan in state.
func (r *router) waitState(wan, state string, timeout time.Duration) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last string
	err := r.lab.WaitFor(ctx, func() error {
		out, err := r.cli("status", "--json")
		if err != nil {
			return err
		}
		var st statusJSON
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			return err
		}
		if last = st.state(wan); last != state {
			return fmt.Errorf("%s is %s", wan, last)
		}
		return nil
	})
	if err != nil {
		r.t.Fatalf("waiting for %s to be %s: %v (last %q)\n%s", wan, state, err, last, r.proc.Output())
	}
}

// statusInto decodes `status --json` into v, for fields beyond statusJSON.
func (r *router) statusInto(v any) {
	r.t.Helper()
	out, err := r.cli("status", "--json")
	if err != nil {
		r.t.Fatalf("status: %v\n%s", err, out)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		r.t.Fatalf("status --json: %v\n%s", err, out)
	}
}

// daemonPid is the daemon's process id (`ip netns exec` execs it).
func (r *router) daemonPid() int { return r.proc.Pid() }

// socket is the daemon's control socket.
func (r *router) socket() string { return config.SocketPath(r.cfg) }

// kill9 kills the daemon without giving it a chance to clean up.
func (r *router) kill9() {
	r.t.Helper()
	if err := r.proc.Signal(syscall.SIGKILL); err != nil {
		r.t.Fatal(err)
	}
	_ = r.proc.Wait(5 * time.Second)
}

// exec runs a command in namespace ns and fails the test on error.
func execIn(t *testing.T, l *lab.Lab, ns string, argv ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := l.Exec(ctx, ns, argv...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

// ourRules lists the router's ip rules installed by multiwan (protocol 77).
func ourRules(t *testing.T, l *lab.Lab) []string {
	t.Helper()
	var ours []string
	for _, line := range strings.Split(execIn(t, l, lab.NSRouter, "ip", "rule", "show"), "\n") {
		if strings.Contains(line, "proto 77") {
			ours = append(ours, strings.TrimSpace(line))
		}
	}
	return ours
}

// assertClean checks that nothing of multiwan's is left in the router.
func (r *router) assertClean() {
	r.t.Helper()
	if tables := execIn(r.t, r.lab, lab.NSRouter, "nft", "list", "tables"); strings.Contains(tables, "multiwan") {
		r.t.Errorf("nft table left after stop:\n%s", tables)
	}
	if rules := ourRules(r.t, r.lab); len(rules) > 0 {
		r.t.Errorf("ip rules left after stop: %v", rules)
	}
	if routes := execIn(r.t, r.lab, lab.NSRouter, "ip", "route", "show", "table", "all", "proto", "77"); strings.TrimSpace(routes) != "" {
		r.t.Errorf("routes left after stop:\n%s", routes)
	}
}

// seenFrom fetches the whoami service from namespace ns (curl) and returns
// the address the server saw, i.e. which ISP the connection left by.
func seenFrom(t *testing.T, l *lab.Lab, ns, url string, curlArgs ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	body, err := l.Curl(ctx, ns, url, curlArgs...)
	if err != nil {
		t.Fatalf("curl %s from %s: %v", url, ns, err)
	}
	return body
}

// eventually waits until fetching url from ns is answered as seen from
// want, so tests follow the daemon's reaction without sleeping.
func eventually(t *testing.T, l *lab.Lab, ns, url, want string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last string
	err := l.WaitFor(ctx, func() error {
		c, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		body, err := l.Curl(c, ns, url)
		last = body
		if err != nil {
			return err
		}
		if body != want {
			return fmt.Errorf("seen from %s", body)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s from %s: want it seen from %s: %v (last answer %q)", url, ns, want, err, last)
	}
}

func httpURL(addr string, port int) string {
	if port == 80 {
		return "http://" + addr + "/"
	}
	return fmt.Sprintf("http://%s:%d/", addr, port)
}
