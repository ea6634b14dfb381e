// Package daemon is multiwan's control loop: it turns observations (links,
// health, a manual override, a reloaded config) into a new plan and hands
// the plan to the kernel adapters when it differs from what is installed.
package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/multiwan/multiwan/internal/config"
	"github.com/multiwan/multiwan/internal/links"
	"github.com/multiwan/multiwan/internal/plan"
)

// Kernel applies a desired state to the kernel and removes it again.
// kernel.Kernel is the real one; tests may use another.
type Kernel interface {
	Apply(ctx context.Context, d *plan.Desired, log *slog.Logger) error
	Remove(ctx context.Context, log *slog.Logger) error
}

// resync is how often the daemon re-reads the links and re-applies even
// without an event, to repair drift it was not told about.
const resync = 30 * time.Second

// Daemon holds the running state.
type Daemon struct {
	log    *slog.Logger
	kernel Kernel
	// snapshot reads the links; links.Snapshot unless a test replaces it.
	snapshot func(*config.Config) (plan.Links, error)

	mu       sync.Mutex
	cfg      *config.Config
	override string
	applied  *plan.Desired // last plan installed; nil before the first
	text     string        // applied.String(), to tell a changed plan
	// linkStates is what was last logged about each WAN's link.
	linkStates map[string]string
}

// New returns a daemon for cfg that changes the kernel through k.
func New(cfg *config.Config, k Kernel, log *slog.Logger) *Daemon {
	return &Daemon{cfg: cfg, kernel: k, log: log, snapshot: links.Snapshot, linkStates: map[string]string{}}
}

// Run installs the plan, then follows link events, reloads (a path to read
// the config from arrives on reload) and a periodic resync until ctx ends;
// then it removes everything it installed. It returns an error only when
// the first installation fails.
func (d *Daemon) Run(ctx context.Context, reload <-chan struct{}, reloadConfig func() (*config.Config, error)) error {
	if err := d.reconcile(ctx, true, "start"); err != nil {
		return err
	}
	events := make(chan bool, 1) // coalesced: true when a repair is due
	watchCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		links.Watch(watchCtx, d.log, func(repair bool) {
			select {
			case events <- repair:
			default:
				if repair {
					// A pending plain event must not swallow a repair.
					select {
					case <-events:
					default:
					}
					select {
					case events <- true:
					default:
					}
				}
			}
		})
	}()
	tick := time.NewTicker(resync)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			stop()
			wg.Wait()
			d.shutdown()
			return nil
		case repair := <-events:
			d.reconcileLogged(ctx, repair, "netlink event")
		case <-tick.C:
			d.reconcileLogged(ctx, true, "resync")
		case <-reload:
			cfg, err := reloadConfig()
			if err != nil {
				d.log.Error("reload refused, keeping the running config", "err", oneLine(err))
				continue
			}
			d.mu.Lock()
			d.cfg = cfg
			d.mu.Unlock()
			d.log.Info("config reloaded", "file", cfg.File)
			d.reconcileLogged(ctx, false, "reload")
		}
	}
}

func (d *Daemon) reconcileLogged(ctx context.Context, repair bool, why string) {
	if err := d.reconcile(ctx, repair, why); err != nil {
		d.log.Error("apply failed; will retry on the next event", "cause", why, "err", err)
	}
}

// reconcile plans from fresh observations and applies the plan if it
// changed, or unconditionally when repair is set.
func (d *Daemon) reconcile(ctx context.Context, repair bool, why string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	obs, err := d.snapshot(d.cfg)
	if err != nil {
		return fmt.Errorf("read links: %w", err)
	}
	desired := plan.Plan(d.cfg, healthFromLinks(d.cfg, obs), obs, d.override)
	text := desired.String()
	if text == d.text && !repair {
		return nil
	}
	start := time.Now()
	if err := d.kernel.Apply(ctx, desired, d.log); err != nil {
		return err
	}
	d.logChanges(d.applied, desired, obs, why, time.Since(start))
	d.applied, d.text = desired, text
	return nil
}

// healthFromLinks is the health of a WAN until probes exist: up when its
// link can carry traffic.
func healthFromLinks(cfg *config.Config, obs plan.Links) plan.Health {
	h := plan.Health{}
	for _, w := range cfg.WANs {
		if l := obs[w.Name]; l.Exists && l.Up {
			h[w.Name] = plan.StateUp
		} else {
			h[w.Name] = plan.StateDown
		}
	}
	return h
}

// logChanges says, one line per policy, where new connections go now and
// why, and one line per WAN whose link appeared or vanished.
func (d *Daemon) logChanges(old, cur *plan.Desired, obs plan.Links, why string, took time.Duration) {
	if old == nil {
		d.log.Info("installed", "wans", len(d.cfg.WANs), "rules", len(cur.Rules), "routes", len(cur.Routes),
			"took", took.Round(time.Microsecond))
	}
	for _, w := range d.cfg.WANs {
		l := obs[w.Name]
		state := "up"
		switch {
		case !l.Exists:
			state = "missing"
		case !l.Up:
			state = "down"
		case w.GatewayAuto && !l.Gateway.IsValid() && !l.PointToPoint:
			state = "no gateway yet"
		}
		if d.linkStates[w.Name] != state {
			d.log.Info("link", "wan", w.Name, "interface", w.Interface, "state", state)
			d.linkStates[w.Name] = state
		}
	}
	for _, p := range cur.Policies {
		now := p.String()
		if old != nil {
			if prev := old.Policy(p.Name); prev != nil && prev.String() == now {
				continue
			}
		}
		d.log.Info("policy", "policy", p.Name, "new connections", now, "cause", why)
	}
}

func (d *Daemon) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.kernel.Remove(ctx, d.log); err != nil {
		d.log.Error("removing multiwan's kernel state", "err", err)
		return
	}
	d.log.Info("removed everything multiwan installed")
}

func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}
