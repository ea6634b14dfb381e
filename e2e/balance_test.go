package e2e

// Load balancing and large steering lists, end to end: weighted shares
// counted over many new connections, `sticky: source` hosts that keep their
// WAN across a member's death, a rule with 10,000 destination prefixes read
// from a file, and a long download that keeps its WAN while the shares move.
//
// New connections are made fast with UDP: every lab.UDPEcho from its own
// source port is a new conntrack entry in the router, classified afresh,
// and the echo says which ISP's address the server saw. Ports are handed
// out once per test (never reused), so no flow can ride an old entry. TCP
// is checked alongside with separate curl processes (each a new socket and
// connection).

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/multiwan/multiwan/internal/lab"
)

var echoDst = fmt.Sprintf("%s:%d", lab.ServiceAddr, lab.UDPEchoPort)

// ispOf maps an address the internet saw to the ISP's name ("isp1"), or
// returns the address itself when it is no ISP's.
func ispOf(seen string) string {
	for k := 1; k <= lab.MaxISPs; k++ {
		if seen == lab.ISPPublicAddr(k) {
			return fmt.Sprintf("isp%d", k)
		}
	}
	return seen
}

// portSeq hands out UDP source ports, each once, below the ephemeral range
// (32768-60999) so no other socket of the test can hold one.
type portSeq struct {
	mu   sync.Mutex
	next int
}

func newPortSeq() *portSeq { return &portSeq{next: 10000} }

func (p *portSeq) take(n int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	first := p.next
	p.next += n
	if p.next > 32000 {
		panic("portSeq: out of ports")
	}
	return first
}

// udpFlows sends one UDP echo from each source ("ip:port"), at most 16 at
// a time, each a new flow, and returns the ISP (ispOf) the server saw each
// one come from, in order. Any flow without an answer fails the test: the
// lab has no loss unless a test makes some.
func udpFlows(t *testing.T, l *lab.Lab, dst string, srcs []string) []string {
	t.Helper()
	seen := make([]string, len(srcs))
	errs := make([]error, len(srcs))
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range min(16, len(srcs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				reply, err := l.UDPEcho(ctx, lab.NSClient, srcs[i], dst)
				cancel()
				if err != nil {
					errs[i] = err
					continue
				}
				host, _, ok := strings.Cut(reply, ":")
				if !ok {
					errs[i] = fmt.Errorf("echo from %s: odd reply %q", srcs[i], reply)
					continue
				}
				seen[i] = ispOf(host)
			}
		}()
	}
	for i := range srcs {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	var failed []string
	for i, err := range errs {
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", srcs[i], err))
		}
	}
	if len(failed) > 0 {
		// The kernel's own drop counters (insert_failed, drop, ...) tell
		// a lost race from a wrong route.
		var stats strings.Builder
		for _, ns := range []string{lab.NSRouter, lab.ISPNS(1), lab.ISPNS(2)} {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			out, _ := l.Exec(ctx, ns, "conntrack", "-S")
			cancel()
			fmt.Fprintf(&stats, "conntrack -S in %s:\n%s", ns, out)
		}
		t.Fatalf("%d of %d UDP flows got no echo, e.g.\n%s\n%s", len(failed), len(srcs),
			strings.Join(failed[:min(5, len(failed))], "\n"), stats.String())
	}
	return seen
}

// udpCounts makes n new UDP flows from the client's primary address, from
// fresh source ports, and counts them by the ISP they left by.
func udpCounts(t *testing.T, l *lab.Lab, ports *portSeq, n int) map[string]int {
	t.Helper()
	first := ports.take(n)
	srcs := make([]string, n)
	for i := range srcs {
		srcs[i] = fmt.Sprintf("%s:%d", lab.ClientAddr, first+i)
	}
	counts := map[string]int{}
	for _, s := range udpFlows(t, l, echoDst, srcs) {
		counts[s]++
	}
	return counts
}

// curlCounts runs n separate curl processes (n new TCP connections), at
// most conc at a time, and counts them by the ISP they left by.
func curlCounts(t *testing.T, l *lab.Lab, n, conc int, url string, curlArgs ...string) map[string]int {
	t.Helper()
	var mu sync.Mutex
	counts := map[string]int{}
	var failed []string
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range min(conc, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				body, err := l.Curl(ctx, lab.NSClient, url, curlArgs...)
				cancel()
				mu.Lock()
				if err != nil {
					failed = append(failed, err.Error())
				} else {
					counts[ispOf(body)]++
				}
				mu.Unlock()
			}
		}()
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if len(failed) > 0 {
		t.Fatalf("%d of %d curls failed, e.g. %s", len(failed), n, failed[0])
	}
	return counts
}

// share is counts[wan] over the total; it fails the test when a flow left
// by a WAN outside wans.
func share(t *testing.T, counts map[string]int, wan string, wans ...string) float64 {
	t.Helper()
	total := 0
	for k, n := range counts {
		ok := false
		for _, w := range wans {
			ok = ok || k == w
		}
		if !ok {
			t.Fatalf("%d flows left by %q, want only %v: %v", n, k, wans, counts)
		}
		total += n
	}
	if total == 0 {
		t.Fatal("no flows counted")
	}
	return float64(counts[wan]) / float64(total)
}

func balancedPolicy(w1, w2 int) string {
	return fmt.Sprintf(`  - name: balanced
    members:
      - {wan: isp1, weight: %d}
      - {wan: isp2, weight: %d}
`, w1, w2)
}

func balanceSetup(w1, w2 int) setup {
	return setup{isps: 2, probe: fastProbe, policies: balancedPolicy(w1, w2), deflt: "balanced"}
}

// waitUp waits until every WAN of the lab is up, so the shares measured
// are those of healthy members, not of the start-up guess.
func waitUp(r *router, isps int) {
	r.t.Helper()
	for k := 1; k <= isps; k++ {
		r.waitState(fmt.Sprintf("isp%d", k), "up", 10*time.Second)
	}
}

// TestBalanceWeights: a 3:1 balanced policy sends 75 % ± 5 points of 800
// new connections through ISP1 (the standard deviation of the share is 1.5
// points, so the bound is more than three of them), and TCP connections
// are spread too.
func TestBalanceWeights(t *testing.T) {
	l := newLab(t, 2)
	r := startRouter(t, l, balanceSetup(3, 1).yaml(t))
	waitUp(r, 2)
	ports := newPortSeq()

	start := time.Now()
	counts := udpCounts(t, l, ports, 800)
	got := share(t, counts, "isp1", "isp1", "isp2")
	t.Logf("800 new UDP flows in %v: %v, isp1 share %.3f", time.Since(start).Round(time.Millisecond), counts, got)
	if math.Abs(got-0.75) > 0.05 {
		t.Errorf("isp1 share %.3f of 800 new connections, want 0.75 ± 0.05 (%v)", got, counts)
	}

	// TCP takes the same path through the classifier; 40 connections at
	// 25 % all missing ISP2 has a chance of 1e-5.
	tcp := curlCounts(t, l, 40, 8, service)
	t.Logf("40 new TCP connections: %v", tcp)
	share(t, tcp, "isp1", "isp1", "isp2")
	if tcp["isp1"] == 0 || tcp["isp2"] == 0 {
		t.Errorf("TCP connections not spread over both WANs: %v", tcp)
	}
	if st := r.status(); len(st.Policies) != 1 || len(st.Policies[0].Active) != 2 {
		t.Errorf("status policies: %+v, want balanced over two WANs", st.Policies)
	} else {
		for _, a := range st.Policies[0].Active {
			if want := map[string]float64{"isp1": 0.75, "isp2": 0.25}[a.WAN]; math.Abs(a.Share-want) > 0.001 {
				t.Errorf("status share of %s %.3f, want %.2f", a.WAN, a.Share, want)
			}
		}
	}
}

// TestBalanceMemberDown: when ISP2's upstream dies, every new connection
// goes through ISP1; when it is back and up, both carry new connections
// again, about 3:1.
func TestBalanceMemberDown(t *testing.T) {
	l := newLab(t, 2)
	r := startRouter(t, l, balanceSetup(3, 1).yaml(t))
	waitUp(r, 2)
	ports := newPortSeq()

	if err := l.CutUpstream(2); err != nil {
		t.Fatal(err)
	}
	r.waitState("isp2", "down", 5*time.Second)
	down := udpCounts(t, l, ports, 200)
	if down["isp1"] != 200 {
		t.Fatalf("with isp2 down: %v, want all 200 new flows via isp1", down)
	}
	if tcp := curlCounts(t, l, 20, 5, service); tcp["isp1"] != 20 {
		t.Fatalf("with isp2 down: TCP %v, want all 20 via isp1", tcp)
	}
	if st := r.status(); len(st.Policies) != 1 || len(st.Policies[0].Active) != 1 || st.Policies[0].Active[0].WAN != "isp1" {
		t.Errorf("status with isp2 down: %+v", st.Policies)
	}

	if err := l.RestoreUpstream(2); err != nil {
		t.Fatal(err)
	}
	r.waitState("isp2", "up", 10*time.Second)
	back := udpCounts(t, l, ports, 400)
	got := share(t, back, "isp1", "isp1", "isp2")
	t.Logf("after recovery, 400 new flows: %v, isp1 share %.3f", back, got)
	// Standard deviation 2.2 points; 8 points is more than 3.5 of them.
	if math.Abs(got-0.75) > 0.08 {
		t.Errorf("after recovery: isp1 share %.3f, want about 0.75 (%v)", got, back)
	}
}

// hostWANs sends perHost new UDP flows from each of hosts (addresses) and
// returns the one WAN each host's flows all left by; a host whose flows
// were split fails the test. Every flow has a source port of its own:
// flows of different hosts from one port would have to be renumbered by
// masquerade, and two of them racing for the same port on two CPUs can
// lose a packet in the kernel, which is not what this test is about.
func hostWANs(t *testing.T, l *lab.Lab, ports *portSeq, hosts []string, perHost int) map[string]string {
	t.Helper()
	first := ports.take(perHost * len(hosts))
	var srcs []string
	for hi, h := range hosts {
		for i := range perHost {
			srcs = append(srcs, fmt.Sprintf("%s:%d", h, first+hi*perHost+i))
		}
	}
	seen := udpFlows(t, l, echoDst, srcs)
	wanOf := map[string]string{}
	split := map[string]map[string]int{}
	for i, s := range seen {
		h := hosts[i/perHost]
		if split[h] == nil {
			split[h] = map[string]int{}
		}
		split[h][s]++
		wanOf[h] = s
	}
	bad := false
	for _, h := range hosts {
		if len(split[h]) != 1 {
			t.Errorf("host %s: its %d flows went to %v, want one WAN", h, perHost, split[h])
			bad = true
		}
	}
	if bad {
		t.FailNow()
	}
	return wanOf
}

func byWAN(wanOf map[string]string) map[string]int {
	n := map[string]int{}
	for _, w := range wanOf {
		n[w]++
	}
	return n
}

// TestStickySource: with `sticky: source` each LAN host's connections, UDP
// and TCP, all leave by one WAN, and the hosts are spread over all members.
// Three WANs make the failure case telling: when ISP2 dies only its hosts
// move, the hosts of ISP1 and ISP3 keep their WAN; when it is back, its
// hosts return and the others still do not move.
func TestStickySource(t *testing.T) {
	l := newLab(t, 3)
	policy := `  - name: byhost
    members:
      - {wan: isp1, weight: 2}
      - {wan: isp2, weight: 1}
      - {wan: isp3, weight: 1}
    sticky: source
`
	r := startRouter(t, l, setup{isps: 3, probe: fastProbe, policies: policy, deflt: "byhost"}.yaml(t))
	waitUp(r, 3)
	ports := newPortSeq()
	var hosts []string
	for i := 1; i <= 40; i++ {
		hosts = append(hosts, lab.ClientExtraAddr(i))
	}

	// 8 UDP flows per host here, 2 TCP connections below: 10 each.
	before := hostWANs(t, l, ports, hosts, 8)
	t.Logf("40 hosts by WAN: %v", byWAN(before))
	for _, w := range []string{"isp1", "isp2", "isp3"} {
		// A member with no host at weight 1 of 4: 0.75^40 = 1e-5.
		if byWAN(before)[w] == 0 {
			t.Fatalf("no host on %s: %v", w, byWAN(before))
		}
	}
	var tcpMu sync.Mutex
	tcpSplit := map[string]map[string]int{}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, h := range hosts {
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				body, err := l.Curl(ctx, lab.NSClient, service, "--interface", h)
				tcpMu.Lock()
				defer tcpMu.Unlock()
				if tcpSplit[h] == nil {
					tcpSplit[h] = map[string]int{}
				}
				if err != nil {
					tcpSplit[h]["error: "+err.Error()]++
				} else {
					tcpSplit[h][ispOf(body)]++
				}
			}()
		}
	}
	wg.Wait()
	for _, h := range hosts {
		if len(tcpSplit[h]) != 1 || tcpSplit[h][before[h]] != 2 {
			t.Fatalf("host %s: TCP connections %v, its UDP flows all went to %s", h, tcpSplit[h], before[h])
		}
	}

	if err := l.CutUpstream(2); err != nil {
		t.Fatal(err)
	}
	r.waitState("isp2", "down", 5*time.Second)
	during := hostWANs(t, l, ports, hosts, 3)
	t.Logf("with isp2 down, hosts by WAN: %v", byWAN(during))
	moved, kept, strayed := 0, 0, 0
	for _, h := range hosts {
		switch {
		case before[h] == "isp2" && during[h] == "isp2":
			t.Errorf("host %s still on the dead isp2", h)
		case before[h] == "isp2":
			moved++
		case during[h] == before[h]:
			kept++
		default:
			strayed++
			t.Errorf("host %s moved from %s to %s although only isp2 died", h, before[h], during[h])
		}
	}
	t.Logf("isp2 down: %d hosts of isp2 moved; of the others %d kept their WAN and %d moved", moved, kept, strayed)

	if err := l.RestoreUpstream(2); err != nil {
		t.Fatal(err)
	}
	r.waitState("isp2", "up", 10*time.Second)
	after := hostWANs(t, l, ports, hosts, 3)
	for _, h := range hosts {
		if after[h] != before[h] {
			t.Errorf("host %s: on %s before the cut, on %s after isp2's recovery", h, before[h], after[h])
		}
	}
}

// steerList writes a list file of n distinct destination prefixes, none
// adjacent to another (so nft cannot merge them) and none of the lab's
// addresses but, when withPortal, the portal's: 200 /24s in 198.19.0.0/16,
// the rest single addresses in 198.18.16.0-198.18.99.255, some as bare
// addresses, some with /32, with comments and blank lines in between.
func steerList(t *testing.T, path string, n int, withPortal bool) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "# %d destinations that leave by isp2\n\n", n)
	left := n
	if withPortal {
		b.WriteString("203.0.113.50/32   # the portal (lab.PortalAddr)\n")
		left--
	}
	for i := 0; i < 200 && left > 0; i++ {
		fmt.Fprintf(&b, "198.19.%d.0/24\n", i)
		left--
	}
	b.WriteString("\n# single hosts\n")
	for k := 0; left > 0; k++ {
		x, y := 16+k/127, 2*(k%127)+1
		if x > 99 {
			t.Fatalf("steerList: %d prefixes do not fit", n)
		}
		if k%3 == 0 {
			fmt.Fprintf(&b, "198.18.%d.%d\n", x, y)
		} else {
			fmt.Fprintf(&b, "  198.18.%d.%d/32\n", x, y)
		}
		if k%1000 == 999 {
			b.WriteString("\n   # another thousand\n")
		}
		left--
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// nftRules counts the rules of the multiwan table: the lines of `nft -a
// list` that carry a handle, less those of tables, chains and sets (which
// end in "{ # handle N"). Set elements carry no handle.
func nftRules(t *testing.T, l *lab.Lab) int {
	t.Helper()
	n := 0
	for _, line := range strings.Split(execIn(t, l, lab.NSRouter, "nft", "-a", "list", "table", "inet", "multiwan"), "\n") {
		if strings.Contains(line, "# handle ") && !strings.Contains(line, "{ # handle ") {
			n++
		}
	}
	return n
}

// largestSet returns the number of elements of the multiwan table's
// largest set.
func largestSet(t *testing.T, l *lab.Lab) int {
	t.Helper()
	var doc struct {
		Nftables []struct {
			Set *struct {
				Name string            `json:"name"`
				Elem []json.RawMessage `json:"elem"`
			} `json:"set"`
		} `json:"nftables"`
	}
	out := execIn(t, l, lab.NSRouter, "nft", "-j", "list", "table", "inet", "multiwan")
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("nft -j: %v", err)
	}
	most := 0
	for _, o := range doc.Nftables {
		if o.Set != nil {
			most = max(most, len(o.Set.Elem))
		}
	}
	return most
}

// TestSteer10kPrefixes: a rule whose dst_file lists 10,000 prefixes (plus
// one inline dst) sends those destinations through ISP2 while the rest
// follows the failover default through ISP1; the table stays small (sets,
// not a rule per prefix); a reload re-reads the list, also from a path
// relative to the config; a reload whose list file is gone is refused,
// names the file, and changes nothing.
func TestSteer10kPrefixes(t *testing.T) {
	l := newLab(t, 2)
	listDir := t.TempDir()
	list := filepath.Join(listDir, "steer-10k.txt")
	steerList(t, list, 10000, true)
	rules := `  - name: steer10k
    dst: [203.0.113.20/32]
    dst_file: ` + list + `
    wan: isp2
`
	s := setup{isps: 2, probe: fastProbe, policies: failover12, rules: rules, deflt: "failover"}
	cfg := s.yaml(t)
	r := startRouter(t, l, cfg)
	waitUp(r, 2)
	portal, probe := httpURL(lab.PortalAddr, 80), httpURL(lab.ProbeAddr1, 80)
	check := func(when string, portalVia string) {
		t.Helper()
		if got := seenFrom(t, l, lab.NSClient, portal); got != portalVia {
			t.Errorf("%s: portal seen from %s, want %s", when, got, portalVia)
		}
		if got := seenFrom(t, l, lab.NSClient, service); got != isp1Seen {
			t.Errorf("%s: %s seen from %s, want %s (default policy)", when, lab.ServiceAddr, got, isp1Seen)
		}
		if got := seenFrom(t, l, lab.NSClient, probe); got != isp2Seen {
			t.Errorf("%s: %s (inline dst) seen from %s, want %s", when, lab.ProbeAddr1, got, isp2Seen)
		}
	}
	check("10,000 prefixes", isp2Seen)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	reply, err := l.UDPEcho(ctx, lab.NSClient, "", fmt.Sprintf("%s:%d", lab.PortalAddr, lab.UDPEchoPort))
	cancel()
	if err != nil || !strings.HasPrefix(reply, isp2Seen+":") {
		t.Errorf("UDP to the portal: %q %v, want it via %s", reply, err, isp2Seen)
	}
	if n := nftRules(t, l); n >= 200 {
		t.Errorf("the multiwan table has %d rules, want fewer than 200", n)
	} else {
		t.Logf("the multiwan table has %d rules", n)
	}
	if n := largestSet(t, l); n < 10000 {
		t.Errorf("largest set has %d elements, want the 10,000 prefixes in one set", n)
	}

	// The same rule with a path relative to the config's directory, to a
	// list without the portal: the reload reads it.
	rel := filepath.Join(filepath.Dir(r.cfg), "steer-10k.txt")
	steerList(t, rel, 10000, false)
	if err := os.WriteFile(r.cfg, []byte(strings.Replace(cfg, list, "steer-10k.txt", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := r.cli("reload"); err != nil {
		t.Fatalf("reload with a relative dst_file: %v\n%s", err, out)
	}
	check("list without the portal", isp1Seen)

	// Only the list changes; the reload re-reads it.
	steerList(t, rel, 10000, true)
	if out, err := r.cli("reload"); err != nil {
		t.Fatalf("reload after the list changed: %v\n%s", err, out)
	}
	check("portal back in the list", isp2Seen)

	// The list disappears: the reload is refused, names the file, and the
	// running state stays exactly as it was.
	table := func() string { return execIn(t, l, lab.NSRouter, "nft", "list", "table", "inet", "multiwan") }
	tableBefore, rulesBefore := table(), ourRules(t, l)
	if err := os.Remove(rel); err != nil {
		t.Fatal(err)
	}
	out, err := r.cli("reload")
	if err == nil {
		t.Fatalf("reload with the list file missing succeeded:\n%s", out)
	}
	if !strings.Contains(out, "steer-10k.txt") {
		t.Errorf("the refused reload does not name the list file:\n%s", out)
	}
	t.Logf("refused reload: %s", strings.TrimSpace(out))
	if table() != tableBefore {
		t.Errorf("nft table changed by a refused reload")
	}
	if got := ourRules(t, l); strings.Join(got, "\n") != strings.Join(rulesBefore, "\n") {
		t.Errorf("ip rules changed by a refused reload")
	}
	check("after the refused reload", isp2Seen)
}

// conntrackWAN returns the WAN of the client's established TCP connection
// to the service (the download), by the router's address on the reply
// side of its conntrack entry, or "" when there is none.
func conntrackWAN(t *testing.T, l *lab.Lab) string {
	t.Helper()
	out := execIn(t, l, lab.NSRouter, "conntrack", "-L", "-p", "tcp", "--orig-src", lab.ClientAddr,
		"--orig-dst", lab.ServiceAddr, "--state", "ESTABLISHED")
	var wans []string
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, "dport=80 ") {
			continue
		}
		for k := 1; k <= lab.MaxISPs; k++ {
			if strings.Contains(line, "dst="+lab.WANAddr(k)+" ") {
				wans = append(wans, fmt.Sprintf("isp%d", k))
			}
		}
	}
	if len(wans) > 1 {
		t.Fatalf("more than one download connection:\n%s", out)
	}
	if len(wans) == 0 {
		return ""
	}
	return wans[0]
}

// TestBalanceDownloadStays: a long download keeps its WAN and completes
// while the weights are reloaded from 3:1 to 1:3 (new connections follow the
// new weights) and while the other member goes down and comes back.
func TestBalanceDownloadStays(t *testing.T) {
	l := newLab(t, 2)
	cfg := balanceSetup(3, 1).yaml(t)
	r := startRouter(t, l, cfg)
	waitUp(r, 2)
	ports := newPortSeq()

	finished := startDownload(t, l, 10, 100)
	wan := conntrackWAN(t, l)
	if wan == "" {
		t.Fatal("no conntrack entry for the download")
	}
	other := map[string]string{"isp1": "isp2", "isp2": "isp1"}[wan]
	t.Logf("the download leaves by %s", wan)

	swapped := strings.Replace(cfg, balancedPolicy(3, 1), balancedPolicy(1, 3), 1)
	if swapped == cfg {
		t.Fatal("could not swap the weights in the config")
	}
	if err := os.WriteFile(r.cfg, []byte(swapped), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := r.cli("reload"); err != nil {
		t.Fatalf("reload 1:3: %v\n%s", err, out)
	}
	counts := udpCounts(t, l, ports, 400)
	got := share(t, counts, "isp1", "isp1", "isp2")
	t.Logf("after the reload to 1:3: %v, isp1 share %.3f", counts, got)
	if math.Abs(got-0.25) > 0.08 {
		t.Errorf("after the reload to 1:3: isp1 share %.3f, want about 0.25 (%v)", got, counts)
	}
	if now := conntrackWAN(t, l); now != wan {
		t.Fatalf("after the reload the download is on %q, was on %s", now, wan)
	}

	k := map[string]int{"isp1": 1, "isp2": 2}[other]
	if err := l.CutUpstream(k); err != nil {
		t.Fatal(err)
	}
	r.waitState(other, "down", 5*time.Second)
	if c := udpCounts(t, l, ports, 50); c[wan] != 50 {
		t.Errorf("with %s down: %v, want all 50 via %s", other, c, wan)
	}
	if err := l.RestoreUpstream(k); err != nil {
		t.Fatal(err)
	}
	r.waitState(other, "up", 10*time.Second)
	if now := conntrackWAN(t, l); now != wan {
		t.Fatalf("after %s went down and up the download is on %q, was on %s", other, now, wan)
	}
	finished()
}
