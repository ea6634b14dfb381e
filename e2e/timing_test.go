package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/multiwan/multiwan/internal/lab"
)

// Round deadlines follow each target's measured RTTs (README: Health,
// failover, switching). These tests check that this buys no false alarm on
// a slow, jittery path, and that such a path is still watched: a cut of it
// is detected and its return seen. They assert states, never timings.

// jitterSettings are the probe settings the jitter test runs at: the
// issue's fast setting, and the shipped defaults (no settings at all).
var jitterSettings = []struct {
	name, probe string
}{
	{"fast", "{targets: [203.0.113.20, 203.0.113.30], interval: 100ms, timeout: 200ms, down: 3, up: 3}"},
	{"defaults", "{targets: [203.0.113.20, 203.0.113.30]}"},
}

// jitterWindow is how long a jittery path is watched for a false alarm: 80
// rounds at 10 Hz, 16 at the defaults.
const jitterWindow = 8 * time.Second

// TestJitteryPathNotDown: both ping targets answer after anything between
// 1 and 40 ms, from before the daemon starts (so its first RTT samples
// are as jittery as the rest). Neither WAN may leave up during the window,
// and a cut of ISP1 on that path is still detected and healed.
func TestJitteryPathNotDown(t *testing.T) {
	for _, set := range jitterSettings {
		t.Run(set.name, func(t *testing.T) {
			l := newLab(t, 2)
			undo, err := l.SlowEcho(time.Millisecond, 40*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { undo() })
			s := setup{isps: 2, probe: set.probe, policies: failover12, deflt: "failover"}
			r := startRouter(t, l, s.yaml(t))
			r.waitState("isp1", "up", 10*time.Second)
			r.waitState("isp2", "up", 10*time.Second)

			// Watch: every WAN stays up, polled a few times a second
			// (bounded in time and in count).
			end := time.Now().Add(jitterWindow)
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			var st statusJSON
			for n := 0; time.Now().Before(end) && n < int(jitterWindow/(200*time.Millisecond))+5; n++ {
				st = r.status()
				for _, w := range st.WANs {
					if w.State != "up" {
						t.Fatalf("%s is %s on a path that jitters between 1 and 40 ms\n%s", w.Name, w.State, r.proc.Output())
					}
				}
				<-tick.C
			}
			// The slow echo was in force: the median RTT of a uniform
			// 1–40 ms is about 20 ms, far above a veth's.
			for _, w := range st.WANs {
				if w.RTTms < 5 {
					t.Fatalf("%s: median RTT %.2f ms, so its probes were not slowed", w.Name, w.RTTms)
				}
			}
			// Between two polls a WAN could have gone down and back:
			// the events list every state change since the start, which
			// must be each WAN's first verdict and nothing else.
			if changes := stateChanges(r, time.Time{}); len(changes) != 2 {
				t.Fatalf("state changes on a jittery path: %v, want only isp1 and isp2 unknown → up", changes)
			}

			// The wider deadline does not blind the prober.
			cut := time.Now()
			if err := l.CutUpstream(1); err != nil {
				t.Fatal(err)
			}
			r.waitState("isp1", "down", 10*time.Second)
			eventually(t, l, lab.NSClient, service, isp2Seen, 5*time.Second)
			if err := l.RestoreUpstream(1); err != nil {
				t.Fatal(err)
			}
			r.waitState("isp1", "up", 10*time.Second)
			eventually(t, l, lab.NSClient, service, isp1Seen, 5*time.Second)
			got := stateChanges(r, cut)
			if want := []string{"isp1 up→down", "isp1 down→up"}; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("state changes after the cut: %v, want %v", got, want)
			}
		})
	}
}

// stateChanges lists the daemon's state events after since, oldest first,
// as "wan from→to".
func stateChanges(r *router, since time.Time) []string {
	r.t.Helper()
	var out []string
	for _, e := range r.recentEvents() {
		if e.Kind == "state" && e.Time.After(since) {
			out = append(out, fmt.Sprintf("%s %s→%s", e.WAN, e.From, e.To))
		}
	}
	return out
}
