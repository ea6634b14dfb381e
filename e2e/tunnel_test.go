package e2e

// Tunnel WANs (overlays) with real WireGuard (wireguard-go and wg, since
// the CI kernel has no wireguard module) in the lab:
//
//   - seed 004 reproduced: three ISPs, three tunnels to a VPS behind the
//     internet, tunnel k riding ISP k (examples/seed004-three-uplinks.yaml
//     adapted to the lab); the LAN is balanced 1:1:1 over the tunnels; each
//     tunnel's outer packets are seen only at its own ISP; a tunnel whose
//     VPS peer stops, or whose ISP's upstream is cut, goes down and its
//     share moves to the others within 1 s, its connections (not the
//     others') are deleted, and it comes back when healed;
//   - a tunnel with an ordered list of underlays fails over between them,
//     and its outer flow really moves (counted at the second ISP, the
//     handshake still works), and back;
//   - seed 000's WireGuard server on the router, reached by a road warrior
//     through ISP2's port forward, then ISP1's; and a plain UDP service
//     without IP_PKTINFO, whose limits the test pins down.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/multiwan/multiwan/internal/control"
	"github.com/multiwan/multiwan/internal/lab"
)

// addTunnels adds the VPS and its three tunnels, tunnel k riding ISP k.
func addTunnels(t *testing.T, l *lab.Lab) (*lab.VPS, []*lab.Tunnel) {
	t.Helper()
	vps, err := l.AddVPS()
	if err != nil {
		t.Fatal(err)
	}
	var tunnels []*lab.Tunnel
	for k := 1; k <= 3; k++ {
		tun, err := vps.AddTunnel(k)
		if err != nil {
			t.Fatal(err)
		}
		tunnels = append(tunnels, tun)
	}
	return vps, tunnels
}

// seed004Lab builds the lab of seed 004: three ISPs, the VPS and its three
// tunnels.
func seed004Lab(t *testing.T) (*lab.Lab, *lab.VPS, []*lab.Tunnel) {
	t.Helper()
	l := newLab(t, 3)
	vps, tunnels := addTunnels(t, l)
	return l, vps, tunnels
}

// seed004Repl adapts examples/seed004-three-uplinks.yaml to the lab: the
// dishes are the lab's ISPs (static gateways), the tunnels the lab's, the
// VPS the lab's, every probe ten times a second, and the https rule takes
// port 80 too (only 80 and 7000 are served).
func seed004Repl(tunnels []*lab.Tunnel) []string {
	var r []string
	for k := 1; k <= 3; k++ {
		r = append(r,
			fmt.Sprintf("interface: eth%d\n    gateway: auto", k), fmt.Sprintf("interface: %s\n    gateway: %s", lab.WANIface(k), lab.ISPGateway(k)),
			fmt.Sprintf("interface: wg%d\n", k), fmt.Sprintf("interface: %s\n", tunnels[k-1].Router.Iface),
			fmt.Sprintf("endpoint: 203.0.113.7:3000%d", k), fmt.Sprintf("endpoint: %s:%d", lab.VPSAddr, lab.TunnelPort(k)),
			fmt.Sprintf("targets: [10.0.%d.1], interval: 1s", k), fmt.Sprintf("targets: [%s], interval: 100ms", lab.TunnelVPSAddr(k)),
		)
	}
	return append(r,
		"targets: [203.0.113.20, 203.0.113.30], interval: 1s", "targets: [203.0.113.20, 203.0.113.30], interval: 100ms",
		"dst_port: [443]", "dst_port: [443, 80]")
}

// adaptExample reads examples/file and applies repl (old, new pairs; each
// old must occur), and gives it a control socket of its own.
func adaptExample(t *testing.T, file string, repl []string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "examples", file))
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(raw)
	for i := 0; i < len(repl); i += 2 {
		if !strings.Contains(cfg, repl[i]) {
			t.Fatalf("examples/%s no longer contains %q: adapt the lab copy", file, repl[i])
		}
		cfg = strings.ReplaceAll(cfg, repl[i], repl[i+1])
	}
	return cfg + "control:\n  socket: " + filepath.Join(t.TempDir(), "mw.sock") + "\n"
}

// tunnelOf maps what the internet's server saw to the tunnel (wg1..wg3) or
// the ISP (isp1..isp3) that carried it.
func tunnelOf(seen string) string {
	for k := 1; k <= lab.MaxISPs; k++ {
		if seen == lab.TunnelSource(k) {
			return fmt.Sprintf("wg%d", k)
		}
	}
	return ispOf(seen)
}

// wanStatus is a WAN's status with the tunnel fields.
type wanStatus struct {
	Name   string `json:"name"`
	State  string `json:"state"`
	Cause  string `json:"cause"`
	Since  time.Time
	Tunnel *struct {
		Underlay   string   `json:"underlay"`
		ListenPort int      `json:"listen_port"`
		Endpoints  []string `json:"endpoints"`
		Kind       string   `json:"kind"`
		Error      string   `json:"error"`
	} `json:"tunnel"`
}

func (r *router) wan(name string) wanStatus {
	r.t.Helper()
	var st struct {
		WANs []wanStatus `json:"wans"`
	}
	r.statusInto(&st)
	for _, w := range st.WANs {
		if w.Name == name {
			return w
		}
	}
	r.t.Fatalf("no WAN %s in status", name)
	return wanStatus{}
}

// outerCounts reads, for each tunnel, how many outer packets each ISP
// forwarded: [isp][tunnel], 1-based.
func outerCounts(t *testing.T, l *lab.Lab, tunnels []int) [lab.MaxISPs + 1][lab.MaxISPs + 1]uint64 {
	t.Helper()
	var c [lab.MaxISPs + 1][lab.MaxISPs + 1]uint64
	for isp := 1; isp <= l.ISPs(); isp++ {
		for _, k := range tunnels {
			n, err := l.OuterPackets(isp, k)
			if err != nil {
				t.Fatal(err)
			}
			c[isp][k] = n
		}
	}
	return c
}

// lanFlow is one new LAN connection of a measurement: when it started and
// which tunnel answered it ("" none).
type lanFlow struct {
	at  time.Duration // since the cut
	via string
}

// lanFlows makes a new UDP flow from the client every 20 ms, each from a
// port of its own with a 300 ms wait for its echo, from 200 ms before
// cut() until n flows after it, and returns them with the time of the
// cut.
func lanFlows(t *testing.T, l *lab.Lab, ports *portSeq, n int, cut func()) []lanFlow {
	t.Helper()
	first := ports.take(n + 20)
	var mu sync.Mutex
	var flows []lanFlow
	var wg sync.WaitGroup
	var t0 time.Time
	var cutDone sync.WaitGroup
	cutDone.Add(1)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	for i := 0; i < n+10; i++ {
		<-tick.C
		if i == 10 {
			t0 = time.Now()
			cut()
		}
		src := fmt.Sprintf("%s:%d", lab.ClientAddr, first+i)
		at := time.Now()
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			reply, err := l.UDPEcho(ctx, lab.NSClient, src, echoDst)
			via := ""
			if err == nil {
				host, _, _ := strings.Cut(reply, ":")
				via = tunnelOf(host)
			}
			mu.Lock()
			flows = append(flows, lanFlow{at: at.Sub(start), via: via})
			mu.Unlock()
		}()
	}
	wg.Wait()
	for i := range flows {
		flows[i].at -= t0.Sub(start)
	}
	sort.Slice(flows, func(i, j int) bool { return flows[i].at < flows[j].at })
	return flows
}

// switchTime is how long after the cut new connections still went into
// the dead tunnel: the start of the last one after the cut that got no
// answer (0 when none did), and the first answered one after it.
func switchTime(flows []lanFlow) (lastLost, firstAfter time.Duration) {
	for _, f := range flows {
		if f.at >= 0 && f.via == "" {
			lastLost = f.at
		}
	}
	for _, f := range flows {
		if f.at > lastLost && f.via != "" {
			return lastLost, f.at
		}
	}
	return lastLost, -1
}

// ctCount counts the router's conntrack entries whose mark, under mask,
// is that of WAN wan (config position pos, 1-based) of a mask 0x3f00;
// with src, only the connections from that address (the client's: not
// the probes', which go on whatever the WAN's state).
func ctCount(t *testing.T, l *lab.Lab, pos int, src ...string) int {
	t.Helper()
	mark := fmt.Sprintf("%#x/0x1f00", pos<<8)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	args := []string{"conntrack", "-L", "-m", mark}
	if len(src) > 0 {
		args = append(args, "-s", src[0])
	}
	out, err := l.Exec(ctx, lab.NSRouter, args...)
	if err != nil && !strings.Contains(string(out), "0 flow entries") {
		t.Fatalf("conntrack -L -m %s: %v\n%s", mark, err, out)
	}
	n := 0
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "mark=") {
			n++
		}
	}
	return n
}

// Config positions of the seed 004 example's WANs.
var seed004Pos = map[string]int{"starlink1": 1, "starlink2": 2, "starlink3": 3, "wg1": 4, "wg2": 5, "wg3": 6}

// TestSeed004 reproduces seed 004 in the lab and breaks it twice.
func TestSeed004(t *testing.T) {
	l, vps, tunnels := seed004Lab(t)
	cfg := adaptExample(t, "seed004-three-uplinks.yaml", seed004Repl(tunnels))
	r := startRouter(t, l, cfg)
	for _, w := range []string{"starlink1", "starlink2", "starlink3", "wg1", "wg2", "wg3"} {
		r.waitState(w, "up", 15*time.Second)
	}
	ports := newPortSeq()

	t.Run("what the tunnels say is read, and each rides its dish", func(t *testing.T) {
		for k := 1; k <= 3; k++ {
			w := r.wan(fmt.Sprintf("wg%d", k))
			ep := fmt.Sprintf("%s:%d", lab.VPSAddr, lab.TunnelPort(k))
			if w.Tunnel == nil || w.Tunnel.Underlay != fmt.Sprintf("starlink%d", k) || w.Tunnel.ListenPort != lab.TunnelPort(k) ||
				w.Tunnel.Kind != "wireguard-go" || !slices.Contains(w.Tunnel.Endpoints, ep) {
				t.Errorf("wg%d: %+v", k, w.Tunnel)
			}
		}
		out, _ := r.cli("status")
		t.Logf("$ multiwan status\n%s", out)
	})

	t.Run("each tunnel's outer packets are seen only at its own ISP", func(t *testing.T) {
		before := outerCounts(t, l, []int{1, 2, 3})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// Probes every 100 ms through each tunnel: 20 outer packets each.
		err := l.WaitFor(ctx, func() error {
			now := outerCounts(t, l, []int{1, 2, 3})
			for k := 1; k <= 3; k++ {
				if now[k][k]-before[k][k] < 20 {
					return fmt.Errorf("ISP %d: %d outer packets of tunnel %d", k, now[k][k]-before[k][k], k)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		now := outerCounts(t, l, []int{1, 2, 3})
		for isp := 1; isp <= 3; isp++ {
			for k := 1; k <= 3; k++ {
				if isp != k && now[isp][k] != 0 {
					t.Errorf("ISP %d forwarded %d outer packets of tunnel %d", isp, now[isp][k], k)
				}
			}
		}
		t.Logf("outer packets [isp][tunnel]: %v", now)
	})

	t.Run("the LAN is balanced 1:1:1 over the tunnels", func(t *testing.T) {
		// 600 new flows: each tunnel's share has a standard deviation of
		// 1.9 points; 7 points is more than three and a half of them.
		counts := map[string]int{}
		first := ports.take(600)
		srcs := make([]string, 600)
		for i := range srcs {
			srcs[i] = fmt.Sprintf("%s:%d", lab.ClientAddr, first+i)
		}
		for _, s := range udpFlows(t, l, echoDst, srcs) {
			counts[tunnelOf(s)]++
		}
		// udpFlows names ISPs by ispOf; the tunnels' sources are not
		// ISPs', so they come back as addresses, mapped above.
		for _, w := range []string{"wg1", "wg2", "wg3"} {
			if got := share(t, counts, w, "wg1", "wg2", "wg3"); math.Abs(got-1.0/3) > 0.07 {
				t.Errorf("%s share %.3f of 600 new flows, want 1/3 ± 0.07 (%v)", w, got, counts)
			}
		}
		tcp := map[string]int{}
		for i := 0; i < 30; i++ {
			tcp[tunnelOf(seenFrom(t, l, lab.NSClient, service))]++
		}
		t.Logf("600 new UDP flows: %v; 30 TCP connections: %v", counts, tcp)
		for _, w := range []string{"wg1", "wg2", "wg3"} {
			if tcp[w] == 0 {
				t.Errorf("no TCP connection via %s: %v", w, tcp)
			}
		}
	})

	// breaks runs one way of killing tunnel k: cut, checks, heal.
	breaks := func(t *testing.T, k int, cut, heal func() error, causes ...string) {
		wgk := fmt.Sprintf("wg%d", k)
		// Connections of every tunnel that outlive the cut.
		first := ports.take(60)
		srcs := make([]string, 60)
		for i := range srcs {
			srcs[i] = fmt.Sprintf("%s:%d", lab.ClientAddr, first+i)
		}
		udpFlows(t, l, echoDst, srcs)
		before := map[string]int{}
		for w, pos := range seed004Pos {
			before[w] = ctCount(t, l, pos, lab.ClientAddr)
		}
		var t0 time.Time
		flows := lanFlows(t, l, ports, 75, func() {
			t0 = time.Now()
			if err := cut(); err != nil {
				t.Fatal(err)
			}
		})
		r.waitState(wgk, "down", 5*time.Second)
		down := r.wan(wgk)
		lastLost, firstAfter := switchTime(flows)
		var trace []string
		for _, f := range flows {
			if f.at >= -50*time.Millisecond && f.at < 600*time.Millisecond {
				trace = append(trace, fmt.Sprintf("%d:%s", f.at.Milliseconds(), orDash(f.via)))
			}
		}
		t.Logf("new connections around the cut (ms:tunnel, - lost): %s", strings.Join(trace, " "))
		stateAfter := down.Since.Sub(t0)
		t.Logf("%s: down %v after the cut (%s); new connections: the last lost started %v after the cut, the next one was answered at %v",
			wgk, stateAfter.Round(time.Millisecond), orCause(down.Cause), lastLost.Round(time.Millisecond), firstAfter.Round(time.Millisecond))
		if lastLost > time.Second || firstAfter < 0 || stateAfter > time.Second {
			t.Errorf("%s: switch too slow: state %v, last lost connection %v after the cut (want within 1 s)", wgk, stateAfter, lastLost)
		}
		for _, f := range flows {
			if f.via == wgk && f.at > lastLost {
				t.Errorf("a new connection went by %s %v after the cut", wgk, f.at)
			}
		}
		if len(causes) > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := l.WaitFor(ctx, func() error {
				if w := r.wan(wgk); !slices.Contains(causes, w.Cause) {
					return fmt.Errorf("cause %q", w.Cause)
				}
				return nil
			}); err != nil {
				t.Errorf("%s's cause: %v", wgk, err)
			}
		}
		// Its connections are deleted, the others' kept.
		if n := ctCount(t, l, seed004Pos[wgk], lab.ClientAddr); n != 0 {
			t.Errorf("%d conntrack entries of %s left after it went down", n, wgk)
		}
		for _, w := range []string{"wg1", "wg2", "wg3"} {
			if w == wgk {
				continue
			}
			if n := ctCount(t, l, seed004Pos[w], lab.ClientAddr); n < before[w] {
				t.Errorf("%s: %d conntrack entries, %d before %s went down", w, n, before[w], wgk)
			}
		}
		t.Logf("conntrack entries before the cut %v", before)
		// Healed: back, and carrying new connections again.
		if err := heal(); err != nil {
			t.Fatal(err)
		}
		r.waitState(wgk, "up", 30*time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := l.WaitFor(ctx, func() error {
			first := ports.take(30)
			srcs := make([]string, 30)
			for i := range srcs {
				srcs[i] = fmt.Sprintf("%s:%d", lab.ClientAddr, first+i)
			}
			for _, s := range udpFlows(t, l, echoDst, srcs) {
				if tunnelOf(s) == wgk {
					return nil
				}
			}
			return errors.New("no new flow by " + wgk)
		}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("(a) the VPS peer of tunnel 2 stops", func(t *testing.T) {
		breaks(t, 2, func() error { return vps.StopPeer(2) }, func() error { return vps.StartPeer(2) })
		if w := r.wan("starlink2"); w.State != "up" {
			t.Errorf("starlink2 %s: only the tunnel died", w.State)
		}
	})
	t.Run("(b) ISP 3's upstream is cut", func(t *testing.T) {
		outerBefore := ctCount(t, l, seed004Pos["starlink3"])
		breaks(t, 3, func() error { return l.CutUpstream(3) }, func() error { return l.RestoreUpstream(3) },
			"underlay starlink3 down")
		t.Logf("starlink3 had %d conntrack entries (the outer flow) before the cut", outerBefore)
		events := r.recentEvents()
		if !slices.ContainsFunc(events, func(e control.Event) bool {
			return e.Kind == "state" && e.WAN == "wg3" && e.To == "down"
		}) {
			t.Errorf("no event for wg3 down in %d events", len(events))
		}
	})
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func orCause(c string) string {
	if c == "" {
		return "by its own probes"
	}
	return c
}

// TestTunnelUnderlayFailover: a tunnel with underlay [isp1, isp2] rides
// ISP1; when ISP1's upstream dies its outer flow moves to ISP2 (counted
// there, the VPS sees the handshake and the traffic from ISP2), and when
// ISP1 is back, to ISP1 again, though ISP2 still works: multiwan deletes
// the outer flow's conntrack entry for it.
func TestTunnelUnderlayFailover(t *testing.T) {
	l := newLab(t, 2)
	vps, err := l.AddVPS()
	if err != nil {
		t.Fatal(err)
	}
	tun, err := vps.AddTunnel(1)
	if err != nil {
		t.Fatal(err)
	}
	cfg := "wans:\n" + wanYAML(1, fastProbe) + wanYAML(2, fastProbe) + fmt.Sprintf(`  - name: vpn
    interface: %s
    gateway: auto
    underlay: [isp1, isp2]
    probe: {targets: [%s], interval: 100ms, timeout: 1s, down: 3, up: 3}
policies:
  - {name: via-vps, members: [{wan: vpn}]}
default_policy: via-vps
control:
  socket: %s
`, tun.Router.Iface, lab.TunnelVPSAddr(1), filepath.Join(t.TempDir(), "mw.sock"))
	r := startRouter(t, l, cfg)
	for _, w := range []string{"isp1", "isp2", "vpn"} {
		r.waitState(w, "up", 15*time.Second)
	}
	// outerAt waits until the outer packets grow at ISP want and not at
	// the other, and the VPS's peer endpoint is that ISP's.
	outerAt := func(want int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var last string
		prev := outerCounts(t, l, []int{1})
		err := l.WaitFor(ctx, func() error {
			ep, err := tun.VPS.PeerEndpoint(tun.Router.Pub)
			if err != nil {
				return err
			}
			a, b := prev, outerCounts(t, l, []int{1})
			prev = b
			last = fmt.Sprintf("isp1 %d→%d, isp2 %d→%d", a[1][1], b[1][1], a[2][1], b[2][1])
			if host, _, _ := net.SplitHostPort(ep); host != lab.ISPPublicAddr(want) {
				return fmt.Errorf("the VPS sees the router at %s", ep)
			}
			other := 3 - want
			if b[other][1] != a[other][1] {
				return fmt.Errorf("outer packets still at ISP %d: %s", other, last)
			}
			if b[want][1] == a[want][1] {
				return fmt.Errorf("no outer packets at ISP %d yet: %s", want, last)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("outer flow by ISP %d: %v", want, err)
		}
		// The tunnel carries traffic: a fresh handshake and an echo
		// through it, answered by the VPS's NAT.
		body := seenFrom(t, l, lab.NSClient, service)
		if body != lab.TunnelSource(1) {
			t.Fatalf("through the tunnel the server saw %s, want %s", body, lab.TunnelSource(1))
		}
		hs, err := tun.VPS.LatestHandshake(tun.Router.Pub)
		if err != nil || hs.IsZero() {
			t.Fatalf("no handshake at the VPS: %v", err)
		}
		t.Logf("outer flow by ISP %d (%s); last handshake %v ago", want, last, time.Since(hs).Round(time.Second))
	}
	outerAt(1)

	start := time.Now()
	if err := l.CutUpstream(1); err != nil {
		t.Fatal(err)
	}
	r.waitState("isp1", "down", 5*time.Second)
	if w := r.wan("vpn"); w.Tunnel == nil || w.Tunnel.Underlay != "isp2" {
		t.Fatalf("isp1 down: %+v", w.Tunnel)
	}
	outerAt(2)
	t.Logf("the outer flow moved to ISP 2 %v after the cut", time.Since(start).Round(time.Millisecond))

	if err := l.RestoreUpstream(1); err != nil {
		t.Fatal(err)
	}
	r.waitState("isp1", "up", 10*time.Second)
	outerAt(1)
	if !strings.Contains(r.proc.Output(), `cause="the outer flow of vpn moves to isp1"`) {
		t.Errorf("no deletion of the outer flow's entry logged")
	}
	r.waitState("vpn", "up", 10*time.Second)
}

// TestWireGuardInbound is seed 000's WireGuard server on the router,
// listening on all addresses: a road warrior reaches it through ISP2's
// port forward (ISP2 is the backup), then ISP1's; handshakes and pings
// through the tunnel work both ways, and the replies leave by the ISP the
// road warrior used, from the address it used. Then a plain UDP service
// without IP_PKTINFO: through the best ISP it works; through the other,
// its replies leave by the best ISP from the best ISP's address (what
// multiwan cannot fix: the kernel picks the source before any mark), while
// a socket bound to ISP2's address is answered through ISP2.
func TestWireGuardInbound(t *testing.T) {
	l := newLab(t, 2)
	rw, err := l.AddRoadWarrior(7002)
	if err != nil {
		t.Fatal(err)
	}
	r := startRouter(t, l, setup{isps: 2, probe: fastProbe, policies: failover12, deflt: "failover",
		rules: "  - {name: udp-movable, proto: udp, policy: failover, movable: true}\n"}.yaml(t))
	waitUp(r, 2)

	via := func(k int) {
		t.Helper()
		before := [3]uint64{}
		for i := 1; i <= 2; i++ {
			before[i], _ = l.Replies(i)
		}
		if err := rw.Via(k); err != nil {
			t.Fatal(err)
		}
		// The road warrior pings the server through the tunnel: the
		// handshake, then the pings.
		out, err := l.Exec(context.Background(), lab.NSRoadWarrior, "ping", "-c", "3", "-i", "0.2", "-W", "2", "-w", "10", lab.WGServerAddr)
		if err != nil {
			t.Fatalf("ping through the tunnel via ISP %d: %v\n%s\n%s", k, err, out, r.proc.Output())
		}
		// And the router pings the road warrior.
		if out, err := l.Exec(context.Background(), lab.NSRouter, "ping", "-c", "3", "-i", "0.2", "-W", "2", "-w", "10", lab.RoadWarriorInner); err != nil {
			t.Fatalf("ping from the router through the tunnel: %v\n%s", err, out)
		}
		hs, err := rw.Peer.LatestHandshake(rw.Server.Pub)
		if err != nil || hs.IsZero() {
			t.Fatalf("no handshake: %v", err)
		}
		ep, _ := rw.Peer.PeerEndpoint(rw.Server.Pub)
		if ep != fmt.Sprintf("%s:%d", lab.ISPPublicAddr(k), lab.WGServerPort) {
			t.Errorf("the road warrior's peer is at %s, want ISP %d's address (the replies came from elsewhere)", ep, k)
		}
		after := [3]uint64{}
		for i := 1; i <= 2; i++ {
			after[i], _ = l.Replies(i)
		}
		if after[k] == before[k] || after[3-k] != before[3-k] {
			t.Errorf("replies to the road warrior: ISP1 %d→%d, ISP2 %d→%d; want them all by ISP %d",
				before[1], after[1], before[2], after[2], k)
		}
		// In the router: the server's flow arrived on WAN k's address and
		// carries its mark.
		ct := execIn(t, l, lab.NSRouter, "conntrack", "-L", "-p", "udp", "--orig-dst", lab.WANAddr(k), "--dport", strconv.Itoa(lab.WGServerPort))
		if !strings.Contains(ct, fmt.Sprintf("mark=%d", k<<8)) {
			t.Errorf("conntrack of the server's flow via ISP %d:\n%s", k, ct)
		}
		t.Logf("via ISP %d: handshake, pings both ways, %d replies by ISP %d\n%s", k, after[k]-before[k], k, ct)
	}
	t.Run("through ISP2's port forward", func(t *testing.T) { via(2) })
	t.Run("then through ISP1's", func(t *testing.T) { via(1) })

	t.Run("a UDP service without IP_PKTINFO", func(t *testing.T) {
		// A wildcard socket answering with WriteTo, as most simple UDP
		// services do; and one bound to ISP2's address.
		for _, a := range []string{fmt.Sprintf("0.0.0.0:%d", lab.FwdUDPPort), lab.WANAddr(2) + ":7002"} {
			pc, err := l.ListenPacket(lab.NSRouter, "udp4", a)
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				buf := make([]byte, 1500)
				for {
					n, from, err := pc.ReadFrom(buf)
					if err != nil {
						return
					}
					pc.WriteTo(buf[:n], from)
				}
			}()
		}
		ask := func(dst string) string {
			t.Helper()
			pc, err := l.ListenPacket(lab.NSRoadWarrior, "udp4", lab.RoadWarriorAddr+":0")
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			raddr, _ := net.ResolveUDPAddr("udp4", dst)
			for try := 0; try < 3; try++ {
				pc.WriteTo([]byte("hello"), raddr)
				pc.SetReadDeadline(time.Now().Add(time.Second))
				buf := make([]byte, 64)
				_, from, err := pc.ReadFrom(buf)
				if err == nil {
					return from.String()
				}
			}
			return "no answer"
		}
		best := ask(fmt.Sprintf("%s:%d", lab.ISPPublicAddr(1), lab.FwdUDPPort))
		other := ask(fmt.Sprintf("%s:%d", lab.ISPPublicAddr(2), lab.FwdUDPPort))
		bound := ask(lab.ISPPublicAddr(2) + ":7002")
		t.Logf("wildcard socket via ISP1 (best): answered from %s; via ISP2: answered from %s; bound to ISP2's address, via ISP2: %s",
			best, other, bound)
		if host, _, _ := net.SplitHostPort(best); host != lab.ISPPublicAddr(1) {
			t.Errorf("via the best ISP: answered from %s", best)
		}
		// Through ISP2 the reply leaves by ISP1, from ISP1's address: the
		// client's own socket, if connected, would drop it.
		if host, _, _ := net.SplitHostPort(other); host != lab.ISPPublicAddr(1) {
			t.Errorf("via ISP2, a wildcard socket without IP_PKTINFO: answered from %s; README says from ISP1's address %s", other, lab.ISPPublicAddr(1))
		}
		ct := execIn(t, l, lab.NSRouter, "conntrack", "-L", "-p", "udp", "--dport", strconv.Itoa(lab.FwdUDPPort))
		t.Logf("router conntrack:\n%s", ct)
		if !strings.Contains(ct, "dst="+lab.WANAddr(2)) || !strings.Contains(ct, "[UNREPLIED]") {
			t.Errorf("want the inbound flow via ISP2 unanswered in conntrack")
		}
		if host, _, _ := net.SplitHostPort(bound); host != lab.ISPPublicAddr(2) {
			t.Errorf("a socket bound to ISP2's address, via ISP2: answered from %s", bound)
		}
	})
}
