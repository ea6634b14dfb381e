// Package kernel applies a plan.Desired to the running kernel: multiwan's nft
// table, its policy-routing rules and routes, and the sysctls fwmark routing
// needs.
//
// The adapters are thin on purpose: every decision is made by the planner,
// and this package only makes the kernel match it, touching nothing that is
// not multiwan's. Ownership is explicit: one nft table by name, and rules and
// routes whose protocol is plan.RouteProtocol. Applying the same Desired
// twice changes nothing, so a daemon restarted after kill -9 adopts the state
// its predecessor left without a window in which rules or routes are missing.
//
// Everything here acts on the network namespace of the calling thread, which
// for the daemon is the namespace the process runs in: netlink sockets are
// opened per request (WatchTable's, which lives long, by the thread that
// calls it), nft is executed as a child process, and sysctls are read
// through /proc/sys. Nothing switches namespaces.
//
// WatchTable tells the daemon when someone else changes its nft table
// (`nft flush ruleset` by a firewall reload, say), and Ours which of the
// reported commits were its own, so that it repairs only the others.
package kernel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/multiwan/multiwan/internal/plan"
)

// Kernel applies and removes the complete desired state. It is not safe for
// concurrent use; the daemon's reconciler is its only caller.
type Kernel struct {
	NFT
	Routing
	Sysctls

	// The rules, routes and sysctls last applied without error; a stage
	// whose desired part equals them is skipped, so that a switch, which
	// changes only the nft table, costs one small nft transaction. nil
	// means unknown.
	lastRules   []plan.Rule
	lastRoutes  []plan.Route
	lastSysctls []plan.Sysctl
	// last is what the last Apply changed in the routing.
	last Changes
}

// Invalidate forgets what was applied, so that the next Apply reconciles
// every stage with the kernel again and replaces the nft table whole (after
// a failed apply).
func (k *Kernel) Invalidate() {
	k.NFT.Invalidate()
	k.lastRules, k.lastRoutes, k.lastSysctls = nil, nil, nil
}

// Recheck makes the next Apply compare rules, routes and sysctls with the
// kernel again, which costs a few netlink dumps, and replace the nft table
// only if it is gone: the periodic repair of drift multiwan was not told
// about, or of a route the kernel dropped with its link.
func (k *Kernel) Recheck(ctx context.Context) {
	k.lastRules, k.lastRoutes, k.lastSysctls = nil, nil, nil
	if ok, err := k.NFT.Current(ctx); err != nil || !ok {
		k.NFT.Invalidate()
	}
}

// Ours reports whether the nft commit that produced generation gen (see
// TableChange.Gen) was one of this Kernel's own transactions; see
// NFT.Ours for when it cannot tell and says false.
func (k *Kernel) Ours(gen uint32) bool { return k.NFT.Ours(gen) }

// New returns a Kernel that owns the nft table `inet <table>` and uses the
// real /proc/sys, in the calling thread's network namespace (its rule
// sockets are opened here). It fails when nft cannot be run.
func New(table string) (*Kernel, error) {
	n, err := NewNFT(table)
	if err != nil {
		return nil, err
	}
	r, err := NewRouting()
	if err != nil {
		return nil, err
	}
	return &Kernel{NFT: *n, Routing: r}, nil
}

// Apply makes the kernel match d. The order matters: sysctls and routes
// first, then the rules that point at the routes, and the nft table last, so
// that no packet is marked before the rules and routes for its mark exist.
//
// A failure in one stage does not stop the later ones: the nft table is what
// moves new connections off a dead WAN, and refusing to install it because,
// say, one WAN's interface vanished between planning and applying would keep
// traffic on that dead WAN. All errors are returned, joined.
func (k *Kernel) Apply(ctx context.Context, d *plan.Desired, log *slog.Logger) error {
	log = orDiscard(log)
	start := time.Now()
	var errs []error
	if k.lastSysctls == nil || !slices.Equal(k.lastSysctls, d.Sysctls) {
		k.lastSysctls = nil
		if err := k.Sysctls.Apply(d.Sysctls, log); err != nil {
			errs = append(errs, fmt.Errorf("sysctls: %w", err))
		} else {
			k.lastSysctls = slices.Clone(d.Sysctls)
		}
	}
	var routesAdded, routesDeleted, rulesAdded, rulesDeleted int
	if k.lastRoutes == nil || !slices.Equal(k.lastRoutes, d.Routes) {
		var err error
		k.lastRoutes = nil
		routesAdded, routesDeleted, err = k.ApplyRoutes(d.Routes)
		if err != nil {
			errs = append(errs, fmt.Errorf("routes: %w", err))
		} else {
			k.lastRoutes = slices.Clone(d.Routes)
		}
	}
	if k.lastRules == nil || !slices.Equal(k.lastRules, d.Rules) {
		var err error
		if k.lastRules != nil {
			rulesAdded, rulesDeleted, err = k.ApplyRuleChanges(k.lastRules, d.Rules)
		} else {
			rulesAdded, rulesDeleted, err = k.ApplyRules(d.Rules)
		}
		k.lastRules = nil
		if err != nil {
			errs = append(errs, fmt.Errorf("rules: %w", err))
		} else {
			k.lastRules = slices.Clone(d.Rules)
		}
	}
	routed := time.Now()
	if err := k.NFT.Apply(ctx, &d.Table); err != nil {
		errs = append(errs, fmt.Errorf("nft table: %w", err))
	}

	k.last = Changes{RulesAdded: rulesAdded, RulesDeleted: rulesDeleted, RoutesAdded: routesAdded, RoutesDeleted: routesDeleted}
	level := slog.LevelDebug
	msg := "kernel routing unchanged"
	if routesAdded+routesDeleted+rulesAdded+rulesDeleted > 0 {
		level, msg = slog.LevelInfo, "kernel routing updated"
	}
	log.Log(ctx, level, msg,
		"rules_added", rulesAdded, "rules_deleted", rulesDeleted,
		"routes_added", routesAdded, "routes_deleted", routesDeleted,
		"routing_took", routed.Sub(start).Round(time.Microsecond), "nft_took", time.Since(routed).Round(time.Microsecond),
		"nft_via", k.NFT.Via())
	return errors.Join(errs...)
}

// Changes counts what an Apply changed in the routing.
type Changes struct {
	RulesAdded, RulesDeleted, RoutesAdded, RoutesDeleted int
}

// LastChanges returns what the last Apply changed in the routing. After a
// netlink event reported one of multiwan's rules or routes deleted, it
// tells a real removal (the apply put something back) from the echo of
// multiwan's own deletion of a stale entry (nothing to put back).
func (k *Kernel) LastChanges() Changes { return k.last }

// Remove takes away everything Apply installed, in the reverse order: the
// nft table first so that nothing is marked any more, then the rules, then
// the routes they pointed at, then the sysctls are restored. It carries on
// past errors so that as much as possible is cleaned up.
func (k *Kernel) Remove(ctx context.Context, log *slog.Logger) error {
	log = orDiscard(log)
	k.Invalidate()
	var errs []error
	if err := k.NFT.Remove(ctx); err != nil {
		errs = append(errs, fmt.Errorf("nft table: %w", err))
	}
	rules, err := k.removeRules()
	if err != nil {
		errs = append(errs, fmt.Errorf("rules: %w", err))
	}
	routes, err := k.removeRoutes()
	if err != nil {
		errs = append(errs, fmt.Errorf("routes: %w", err))
	}
	if err := k.Restore(log); err != nil {
		errs = append(errs, fmt.Errorf("sysctls: %w", err))
	}
	log.Info("kernel state removed", "table", k.NFT.table, "rules_deleted", rules, "routes_deleted", routes)
	return errors.Join(errs...)
}

// orDiscard lets callers pass a nil logger, as tests and one-shot commands do.
func orDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log
}
