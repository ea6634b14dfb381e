package main

// Helpers shared by the balancing, forwarding and conntrack benchmarks:
// running code on a thread inside a lab namespace, many new UDP flows,
// iperf3 runs, the daemon's full-ruleset config, medians.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/multiwan/multiwan/internal/lab"
)

// run runs argv in a lab namespace with a timeout and returns its output;
// the error includes the output.
func run(l *lab.Lab, ns string, timeout time.Duration, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := l.Exec(ctx, ns, argv...)
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// udpShares makes n new UDP flows from the client's primary address, one
// echo from each of the source ports first..first+n-1 (never the same port
// twice in a lab, so each is a new conntrack entry in the router), at most
// 16 at a time, and counts them by the ISP address the server saw.
func udpShares(l *lab.Lab, first, n int) (map[string]int, error) {
	dst := fmt.Sprintf("%s:%d", lab.ServiceAddr, lab.UDPEchoPort)
	var mu sync.Mutex
	counts := map[string]int{}
	var failed []error
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for port := range jobs {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				reply, err := l.UDPEcho(ctx, lab.NSClient, fmt.Sprintf("%s:%d", lab.ClientAddr, port), dst)
				cancel()
				host, _, _ := strings.Cut(reply, ":")
				mu.Lock()
				if err != nil {
					failed = append(failed, err)
				} else {
					counts[host]++
				}
				mu.Unlock()
			}
		}()
	}
	for i := range n {
		jobs <- first + i
	}
	close(jobs)
	wg.Wait()
	if len(failed) > 0 {
		return counts, fmt.Errorf("%d of %d UDP flows got no echo, e.g. %v", len(failed), n, failed[0])
	}
	return counts, nil
}

// iperfServer starts a one-off iperf3 server on the lab's service address
// and waits until it listens.
func iperfServer(l *lab.Lab) (*lab.Proc, error) {
	p, err := l.Start(lab.NSInternet, "iperf3", "-s", "-1", "--forceflush", "-B", lab.ServiceAddr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.WaitFor(ctx, func() error {
		if strings.Contains(p.Output(), "Server listening") {
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("iperf3 server exited: %s", p.Output())
		}
		return errors.New("iperf3 server not listening yet")
	}); err != nil {
		p.Kill()
		return nil, err
	}
	return p, nil
}

// iperfResult is what the benchmarks read of iperf3 -J.
type iperfResult struct {
	End struct {
		SumReceived struct {
			Seconds       float64 `json:"seconds"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

// iperf runs one iperf3 client in the client namespace against a fresh
// one-off server in the internet namespace.
func iperf(l *lab.Lab, args ...string) (iperfResult, error) {
	var res iperfResult
	srv, err := iperfServer(l)
	if err != nil {
		return res, err
	}
	defer srv.Kill()
	argv := append([]string{"iperf3", "-c", lab.ServiceAddr, "-J"}, args...)
	out, err := run(l, lab.NSClient, 60*time.Second, argv...)
	if jerr := json.Unmarshal([]byte(out), &res); jerr != nil {
		return res, errors.Join(err, fmt.Errorf("iperf3 -J output: %w", jerr))
	}
	if res.Error != "" {
		return res, fmt.Errorf("iperf3: %s", res.Error)
	}
	if err != nil {
		return res, err
	}
	// The one-off server exits after its client; reap it.
	_ = srv.Wait(5 * time.Second)
	return res, nil
}

// fullConfig is a realistic config: two policies, four rules of which the
// third steers the destinations of listFile to isp2, failover by default.
// Traffic from the client to the lab's service matches none of the rules,
// so its first packet traverses all of them, the list's set included.
func fullConfig(listFile string) string {
	return wans(2, "{targets: [203.0.113.20, 203.0.113.30], interval: 100ms}") + `policies:
  - name: failover
    members:
      - {wan: isp1, tier: 1}
      - {wan: isp2, tier: 2}
  - name: balanced
    members:
      - {wan: isp1, weight: 3}
      - {wan: isp2, weight: 1}
rules:
  - name: pinned-host
    src: [198.51.100.99/32]
    wan: isp2
  - name: smtp
    proto: tcp
    dst_port: [25, 465, 587]
    policy: balanced
  - name: steered
    dst_file: ` + listFile + `
    wan: isp2
  - name: dns
    proto: udp
    dst_port: [53]
    policy: failover
    movable: true
default_policy: failover
`
}

// writeList writes n distinct, non-adjacent destination prefixes that none
// of the lab's traffic goes to: /24s in 198.19.0.0/16 and single addresses
// in 198.18.16.0-198.18.99.255.
func writeList(path string, n int) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# %d steered destinations\n", n)
	for i := 0; i < n; i++ {
		if i < 200 {
			fmt.Fprintf(&b, "198.19.%d.0/24\n", i)
			continue
		}
		k := i - 200
		fmt.Fprintf(&b, "198.18.%d.%d/32\n", 16+k/127, 2*(k%127)+1)
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

// largestSet returns the element count of the multiwan table's largest set.
func largestSet(l *lab.Lab) (int, error) {
	out, err := run(l, lab.NSRouter, 10*time.Second, "nft", "-j", "list", "table", "inet", "multiwan")
	if err != nil {
		return 0, err
	}
	var doc struct {
		Nftables []struct {
			Set *struct {
				Elem []json.RawMessage `json:"elem"`
			} `json:"set"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return 0, err
	}
	most := 0
	for _, o := range doc.Nftables {
		if o.Set != nil {
			most = max(most, len(o.Set.Elem))
		}
	}
	return most, nil
}

// tempDir makes a directory for config and list files; the caller removes it.
func tempDir() (string, error) {
	return os.MkdirTemp("", "multiwan-bench-lists-")
}

func listPath(dir string) string { return filepath.Join(dir, "steered.txt") }

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fmts(xs []float64, format string) string {
	var parts []string
	for _, x := range xs {
		parts = append(parts, fmt.Sprintf(format, x))
	}
	return strings.Join(parts, ", ")
}

// spread is (max-min)/median in percent: how far apart repeated runs were.
func spread(xs []float64) float64 {
	if len(xs) == 0 || median(xs) == 0 {
		return 0
	}
	return (slices.Max(xs) - slices.Min(xs)) / median(xs) * 100
}
