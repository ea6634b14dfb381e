package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/multiwan/multiwan/internal/lab"
)

// The instruments' cost (README: Metrics, Dashboard): the daemon's CPU and
// memory with the network listener serving metrics and an open dashboard,
// beside the same daemon without; and the per-packet cost of the traffic
// counters that come with the listener.

// dashboardClient behaves like an open dashboard (and a Prometheus server)
// from the lab's client namespace until ctx ends: one full history fetch,
// then status and incremental history every second, an event stream held
// open, a metrics scrape every 15 seconds.
func dashboardClient(ctx context.Context, l *lab.Lab, base string) {
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := l.InNS(lab.NSClient, func() error {
			var err error
			c, err = (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	get := func(path string) {
		resp, err := client.Get(base + path)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	go func() { // the event stream
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/events?past=50", nil)
		req.Header.Set("Accept", "text/event-stream")
		stream := &http.Client{Transport: tr}
		if resp, err := stream.Do(req); err == nil {
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
			}
			resp.Body.Close()
		}
	}()
	get("/")
	get("/v1/history?window=1h")
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			get("/v1/status")
			get(fmt.Sprintf("/v1/history?window=1h&since=%d", now.Unix()-2))
			if i%15 == 0 {
				get("/metrics")
			}
		}
	}
}

// footprintRun is a lab whose daemon runs 4 WANs × 2 targets × 10 Hz, with
// the instruments (network listener, an open dashboard, Prometheus
// scraping) or without.
type footprintRun struct {
	l      *lab.Lab
	d      *daemon
	cancel context.CancelFunc
}

func startFootprint(instruments bool) (*footprintRun, error) {
	l, err := lab.New(lab.Options{ISPs: 3})
	if err != nil {
		return nil, err
	}
	r := &footprintRun{l: l, cancel: func() {}}
	if err := fourthWAN(l); err != nil {
		r.stop()
		return nil, err
	}
	cfg := wans(4, "{targets: [203.0.113.20, 203.0.113.30], interval: 100ms}") + `policies:
  - name: all
    members: [{wan: isp1}, {wan: isp2}, {wan: isp3}, {wan: isp4}]
default_policy: all
`
	listen := lab.LAN1Addr + ":9731"
	if instruments {
		cfg += fmt.Sprintf("http: {listen: %q}\n", listen)
	}
	if r.d, err = startDaemon(l, cfg); err != nil {
		r.stop()
		return nil, err
	}
	for k := 1; k <= 4; k++ {
		if err := r.d.waitState(fmt.Sprintf("isp%d", k), "up", 10*time.Second); err != nil {
			r.stop()
			return nil, err
		}
	}
	if instruments {
		var ctx context.Context
		ctx, r.cancel = context.WithCancel(context.Background())
		go dashboardClient(ctx, l, "http://"+listen)
	}
	return r, nil
}

func (r *footprintRun) stop() {
	r.cancel()
	if r.d != nil {
		r.d.stop()
	}
	r.l.Close()
}

// footprintWindows is how many windows the soak time is cut into.
const footprintWindows = 6

// instrumentsFootprint compares the daemon with and without the
// instruments. Both run at once, in two labs, and are measured over the
// same windows of time, so that what the other engineers' work does to
// the machine hits both sides alike; the figure is the median over the
// windows.
func instrumentsFootprint() error {
	off, err := startFootprint(false)
	if err != nil {
		return err
	}
	defer off.stop()
	on, err := startFootprint(true)
	if err != nil {
		return err
	}
	defer on.stop()
	time.Sleep(2 * time.Second) // the dashboard's first full history fetch is not the steady state
	window := *soak / footprintWindows
	var cpuOn, cpuOff, diff []float64
	for range footprintWindows {
		pOn, pOff := on.d.proc.Pid(), off.d.proc.Pid()
		on0, off0, t0 := cpuTime(pOn), cpuTime(pOff), time.Now()
		time.Sleep(window) // the daemons' steady-state cost over this time is the measurement
		on1, off1, t1 := cpuTime(pOn), cpuTime(pOff), time.Now()
		el := float64(t1.Sub(t0))
		a, b := float64(on1-on0)/el*100, float64(off1-off0)/el*100
		cpuOn, cpuOff, diff = append(cpuOn, a), append(cpuOff, b), append(diff, a-b)
	}
	rssOn, rssOff := float64(rssKB(on.d.proc.Pid()))/1024, float64(rssKB(off.d.proc.Pid()))/1024
	add("daemon CPU with metrics and a dashboard open, 4 WANs × 2 targets × 10 Hz",
		fmt.Sprintf("%.2f %% of a core (without: %.2f %%): %+.2f points", median(cpuOn), median(cpuOff), median(diff)), "≤ +1 point",
		fmt.Sprintf("medians of %d windows of %s, both daemons measured at once; status and history every second, an event stream, a scrape every 15 s", footprintWindows, window))
	add("daemon RSS, same", fmt.Sprintf("%.1f MB (without: %.1f MB): %+.1f MB", rssOn, rssOff, rssOn-rssOff), "≤ +10 MB", "")
	return nil
}

// counterCost measures what the traffic counters cost per packet: packets
// of one established flow (every packet is counted on the way in and out;
// the classifier never sees them) through the full ruleset with the
// counters and without, alternating by reload (off, on, on, off, twice per
// run) so that the machine's drift cancels out.
func counterCost() error {
	l, list, cleanup, err := sinkLab()
	if err != nil {
		return err
	}
	defer cleanup()
	base := fullConfig(list)
	d, err := startDaemon(l, base)
	if err != nil {
		return err
	}
	defer d.stop()
	set := func(on bool) error {
		text := base
		if on {
			text += "http: {listen: \"127.0.0.1:9799\"}\n"
		}
		if err := os.WriteFile(d.cfg, []byte(text+"control: {socket: "+d.sock+"}\nstate_dir: "+d.stateDir+"\n"), 0o600); err != nil {
			return err
		}
		if out, err := d.cli("reload"); err != nil {
			return fmt.Errorf("reload: %v %s", err, out)
		}
		out, err := run(l, lab.NSRouter, 10*time.Second, "nft", "list", "counters")
		if err != nil {
			return err
		}
		if has := strings.Contains(out, "counter rx_isp1"); has != on {
			return fmt.Errorf("counters installed %v, want %v", has, on)
		}
		return nil
	}
	var costs, nsPerPkt []float64
	var offCPU, onCPU []float64
	for range *runs {
		var off, on []float64
		for range cycles {
			for _, c := range []bool{false, true, true, false} {
				if err := set(c); err != nil {
					return err
				}
				r, err := udpRate(l, streamPackets, false)
				if err != nil {
					return err
				}
				if c {
					on = append(on, r.cpu)
				} else {
					off = append(off, r.cpu)
				}
			}
		}
		a, b := median(off), median(on)
		offCPU, onCPU = append(offCPU, a), append(onCPU, b)
		costs = append(costs, (b/a-1)*100)
		nsPerPkt = append(nsPerPkt, (b-a)*1000)
	}
	add("cost per forwarded packet of the traffic counters (established flow, 64-byte UDP)",
		fmt.Sprintf("%+.1f %% median of runs (%s), %+.0f ns", median(costs), fmts(costs, "%+.1f"), median(nsPerPkt)),
		"(state it)", fmt.Sprintf("%.2f µs/pkt with, %.2f without (sending thread's CPU, forwarding included)", median(onCPU), median(offCPU)))
	return nil
}

// fourthWAN gives the router a fourth WAN: a second link to isp3.
func fourthWAN(l *lab.Lab) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, argv := range [][]string{
		{"ip", "link", "add", "wan4", "type", "veth", "peer", "name", "cust4", "netns", nsPath(l, lab.ISPNS(3))},
		{"ip", "addr", "add", "192.0.2.194/26", "dev", "wan4"},
		{"ip", "link", "set", "wan4", "up"},
	} {
		if out, err := l.Exec(ctx, lab.NSRouter, argv...); err != nil {
			return fmt.Errorf("%v: %v %s", argv, err, out)
		}
	}
	for _, argv := range [][]string{
		{"ip", "addr", "add", "192.0.2.193/26", "dev", "cust4"},
		{"ip", "link", "set", "cust4", "up"},
	} {
		if out, err := l.Exec(ctx, lab.ISPNS(3), argv...); err != nil {
			return fmt.Errorf("%v: %v %s", argv, err, out)
		}
	}
	return nil
}
