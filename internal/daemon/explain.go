package daemon

import (
	"context"
	"errors"

	"github.com/multiwan/multiwan/internal/control"
	"github.com/multiwan/multiwan/internal/links"
	"github.com/multiwan/multiwan/internal/plan"
)

var _ control.Explainer = (*Daemon)(nil)

// Explain says where a new connection goes now and why, and where it would
// go if its WAN went down: the plan tracer over what the current plan was
// made of (published with the status) and the main table's routes, read
// now. It runs on the caller's goroutine and never waits for the loop.
func (d *Daemon) Explain(ctx context.Context, q plan.Query) (plan.Explanation, error) {
	if err := q.Check(); err != nil {
		return plan.Explanation{}, &control.Refused{Msg: err.Error()}
	}
	sh := d.shared.Load()
	if sh == nil || sh.cfg == nil {
		return plan.Explanation{}, errors.New("the daemon has not planned yet")
	}
	main, err := links.MainRoutes()
	if err != nil {
		return plan.Explanation{}, err
	}
	return plan.Explain(sh.cfg, sh.health, sh.links, sh.override, q, main), ctx.Err()
}
