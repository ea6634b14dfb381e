package daemon

import (
	"github.com/multiwan/multiwan/internal/control"
	"github.com/multiwan/multiwan/internal/plan"
)

// Status reports the WANs' health and where each policy sends new
// connections, for `multiwan status`.
func (d *Daemon) Status() control.Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := control.Status{Override: d.override, WANs: []control.WANStatus{}, Policies: []control.PolicyStatus{}}
	for _, w := range d.cfg.WANs {
		h := d.trackers[w.Name].Status()
		state := h.State
		if d.applied != nil && d.applied.States[w.Name] == plan.StateDown {
			state = plan.StateDown // no route: whatever the probes said last
		}
		ws := control.WANStatus{
			Name:      w.Name,
			Interface: w.Interface,
			State:     string(state),
			RTTms:     float64(h.RTT.Microseconds()) / 1000,
			LossPct:   h.Loss * 100,
			Since:     h.Since.UTC(),
		}
		link := d.links[w.Name]
		if len(link.Addrs) > 0 {
			ws.Address = link.Addrs[0].Addr().String()
		}
		gw := w.Gateway
		if w.GatewayAuto {
			gw = link.Gateway
		}
		if gw.IsValid() {
			ws.Gateway = gw.String()
		}
		st.WANs = append(st.WANs, ws)
	}
	if d.applied != nil {
		for _, p := range d.applied.Policies {
			ps := control.PolicyStatus{Name: p.Name, Active: []control.Share{}, LastResort: p.LastResort}
			for _, s := range p.Active {
				ps.Active = append(ps.Active, control.Share{WAN: s.WAN, Share: s.Share})
			}
			st.Policies = append(st.Policies, ps)
		}
	}
	return st
}
