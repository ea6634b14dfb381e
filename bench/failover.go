package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/multiwan/multiwan/internal/lab"
)

// Failover and recovery as a LAN client sees them (README: Benchmarks).
//
// The client opens a new connection every tryEvery, each bounded by
// tryBound, several in flight at once; the first one answered through the
// expected ISP ends the measurement, at the moment its answer arrives. So
// the figure carries at most tryEvery of measurement granularity, unlike
// one connection at a time with a 100ms give-up (-method serial, the
// method of earlier runs), which added up to 100ms.

const (
	tryEvery = 10 * time.Millisecond
	tryBound = 250 * time.Millisecond
	// cyclesPerDaemon: flap damping applies from the fifth recovery within
	// 60s, so a fresh daemon takes over every four cuts.
	cyclesPerDaemon = 4
)

// fastProbe is the fast setting; defaultProbe leaves every setting
// at multiwan's defaults (500ms, timeout 1s, down 3, up 3).
const (
	fastProbe    = "{targets: [203.0.113.20, 203.0.113.30], interval: 100ms, timeout: 200ms, down: 3, up: 3}"
	defaultProbe = "{targets: [203.0.113.20, 203.0.113.30]}"
)

// timings is what one setting's cycles measured.
type timings struct {
	failover, recovery []time.Duration
	// judgedToLoop and loopToKernel come from the daemon's debug log, one
	// per decision (down and up).
	judgedToLoop, loopToKernel []time.Duration
}

// failoverAndRecovery cuts ISP1's upstream *cuts times and restores it,
// and times, from each cut, the first new connection answered through
// ISP2, and from each restore, the first one answered through ISP1 again.
func failoverAndRecovery(setting, probe, interval string, failTarget, recTarget string) error {
	iv, err := time.ParseDuration(interval)
	if err != nil {
		return err
	}
	l, err := lab.New(lab.Options{ISPs: 2})
	if err != nil {
		return err
	}
	defer l.Close()
	var tm timings
	for done := 0; done < *cuts; {
		n := min(cyclesPerDaemon, *cuts-done)
		if err := cutCycles(l, probe, iv, n, &tm); err != nil {
			return err
		}
		done += n
	}
	note := fmt.Sprintf("client: a new connection every %s, first answer wins", tryEvery)
	if *method == "serial" {
		note = "client: one connection at a time, 100ms give-up (earlier method)"
	}
	if len(tm.judgedToLoop) > 0 {
		note += fmt.Sprintf("; round judged → loop p50 %s, loop → kernel p50 %s", ms(pct(tm.judgedToLoop, 50)), ms(pct(tm.loopToKernel, 50)))
	}
	add("failover, "+setting+" (cut → first new connection via isp2)", dist(tm.failover), failTarget, note)
	add("recovery, "+setting+" (restore → first new connection via isp1)", dist(tm.recovery), recTarget, "")
	return nil
}

func dist(ds []time.Duration) string {
	return fmt.Sprintf("median %s, p90 %s (n=%d)", ms(pct(ds, 50)), ms(pct(ds, 90)), len(ds))
}

// cutCycles runs n cut-and-restore cycles against one fresh daemon.
func cutCycles(l *lab.Lab, probe string, interval time.Duration, n int, tm *timings) error {
	d, err := startDaemon(l, wans(2, probe)+failoverPolicy, "--log-level", "debug")
	if err != nil {
		return err
	}
	defer d.stop()
	if err := d.waitState("isp2", "up", 10*time.Second); err != nil {
		return err
	}
	for range n {
		if err := d.waitState("isp1", "up", 15*time.Second); err != nil {
			return err
		}
		if got := whoami(l, time.Second); got != lab.ISPPublicAddr(1) {
			return fmt.Errorf("before the cut: seen from %q", got)
		}
		// The cut falls anywhere in the probing rhythm.
		time.Sleep(rand.N(interval))
		t0 := time.Now()
		if err := l.CutUpstream(1); err != nil {
			return err
		}
		took, err := firstVia(l, t0, lab.ISPPublicAddr(2), 20*time.Second)
		if err != nil {
			return fmt.Errorf("failover: %w", err)
		}
		tm.failover = append(tm.failover, took)
		if err := d.waitState("isp1", "down", 10*time.Second); err != nil {
			return err
		}
		time.Sleep(rand.N(interval))
		t0 = time.Now()
		if err := l.RestoreUpstream(1); err != nil {
			return err
		}
		took, err = firstVia(l, t0, lab.ISPPublicAddr(1), 20*time.Second)
		if err != nil {
			return fmt.Errorf("recovery: %w", err)
		}
		tm.recovery = append(tm.recovery, took)
	}
	if err := d.waitState("isp1", "up", 15*time.Second); err != nil {
		return err
	}
	for _, m := range decisionRe.FindAllStringSubmatch(d.proc.Output(), -1) {
		tm.judgedToLoop = append(tm.judgedToLoop, parseDur(m[1]))
		tm.loopToKernel = append(tm.loopToKernel, parseDur(m[2]))
	}
	return nil
}

var decisionRe = regexp.MustCompile(`msg="health decision" wan=isp1 .*judged_to_loop=(\S+) loop_to_kernel=(\S+)`)

func parseDur(s string) time.Duration {
	d, _ := time.ParseDuration(s)
	return d
}

// firstVia returns how long after t0 the client got its first answer
// through the ISP whose public address is want, over a new connection.
func firstVia(l *lab.Lab, t0 time.Time, want string, limit time.Duration) (time.Duration, error) {
	if *method == "serial" {
		for time.Since(t0) < limit {
			// Each try is a new connection; a try through the dead
			// ISP gives up after 100 ms, like a client retrying.
			if whoami(l, 100*time.Millisecond) == want {
				return time.Since(t0), nil
			}
		}
		return 0, fmt.Errorf("nothing through %s within %s", want, limit)
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	won := make(chan time.Duration, 1)
	var wg sync.WaitGroup
	tick := time.NewTicker(tryEvery)
	defer func() {
		tick.Stop()
		cancel()
		wg.Wait() // every try ends within tryBound
	}()
	try := func() {
		defer wg.Done()
		got, err := whoamiTCP(ctx, l)
		if err == nil && got == want {
			select {
			case won <- time.Since(t0):
			default:
			}
		}
	}
	for {
		wg.Add(1)
		go try()
		select {
		case d := <-won:
			return d, nil
		case <-ctx.Done():
			return 0, fmt.Errorf("nothing through %s within %s", want, limit)
		case <-tick.C:
		}
	}
}

// whoamiTCP asks the lab's service, from the client over a new TCP
// connection, which address it sees; it gives up after tryBound.
func whoamiTCP(ctx context.Context, l *lab.Lab) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, tryBound)
	defer cancel()
	var c net.Conn
	err := l.InNS(lab.NSClient, func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, "tcp4", net.JoinHostPort(lab.ServiceAddr, strconv.Itoa(lab.HTTPPort)))
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	c.SetDeadline(dl)
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\nHost: "+lab.ServiceAddr+"\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := io.ReadAll(io.LimitReader(c, 4096))
	if err != nil {
		return "", err
	}
	_, body, ok := strings.Cut(string(resp), "\r\n\r\n")
	if !ok {
		return "", errors.New("no HTTP body")
	}
	return strings.TrimSpace(body), nil
}

// falseAlarms runs a setting through 5 % random loss on both ISPs (each
// direction: the ISP's forward chain drops 5 % of what crosses it either
// way, so about 10 % of probes go unanswered) for -soak and counts every
// state change of either WAN in that time.
func falseAlarms(setting, probe string) error {
	l, err := lab.New(lab.Options{ISPs: 2})
	if err != nil {
		return err
	}
	defer l.Close()
	d, err := startDaemon(l, wans(2, probe)+failoverPolicy)
	if err != nil {
		return err
	}
	defer d.stop()
	if err := d.waitState("isp2", "up", 10*time.Second); err != nil {
		return err
	}
	before := len(d.proc.Output())
	for k := 1; k <= 2; k++ {
		if err := l.SetLoss(k, 5); err != nil {
			return err
		}
	}
	time.Sleep(*soak) // watching what happens over time is the measurement
	// The loss each WAN's probes saw over the status window (its last 20
	// rounds) shows that the loss was in force.
	seen := d.losses()
	changes := stateChangeRe.FindAllString(d.proc.Output()[before:], -1)
	figure := fmt.Sprintf("%d state changes in %s", len(changes), *soak)
	if len(changes) > 0 {
		figure += ": " + strings.Join(changes, "; ")
	}
	add("false alarms at 5% random loss each way on both ISPs, "+setting, figure, "0",
		"every state change of either WAN counts; probe loss at the end "+seen)
	return nil
}

var stateChangeRe = regexp.MustCompile(`msg="wan state" wan=\S+ from=\S+ to=\S+`)
