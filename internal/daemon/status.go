package daemon

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/multiwan/multiwan/internal/control"
	"github.com/multiwan/multiwan/internal/plan"
)

// publishStatus builds the status from the loop's state and publishes it
// for Status, which any goroutine may call. Called by the loop (and New).
func (d *Daemon) publishStatus() {
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
		for _, a := range link.Addrs {
			if a.Addr().Is4() {
				ws.Address = a.Addr().String()
				break
			}
		}
		gw := w.Gateway
		if w.GatewayAuto {
			gw = link.Gateway
		}
		if gw.IsValid() {
			ws.Gateway = gw.String()
		}
		if w.IPv6 {
			h6 := d.trackers[plan.Key6(w.Name)].Status()
			state6 := h6.State
			if d.applied != nil && d.applied.States[plan.Key6(w.Name)] == plan.StateDown {
				state6 = plan.StateDown
			}
			ws.IPv6 = &control.FamilyStatus{
				State:   string(state6),
				RTTms:   float64(h6.RTT.Microseconds()) / 1000,
				LossPct: h6.Loss * 100,
				Since:   h6.Since.UTC(),
			}
			for _, a := range link.Addrs {
				if a.Addr().Is6() && !a.Addr().IsLinkLocalUnicast() {
					ws.IPv6.Address = a.Addr().String()
					break
				}
			}
			gw6 := w.Gateway6
			if w.Gateway6Auto {
				gw6 = link.Gateway6
			}
			if gw6.IsValid() {
				ws.IPv6.Gateway = gw6.String()
			}
		}
		d.tunnelStatus(&ws, w.Name)
		st.WANs = append(st.WANs, ws)
	}
	if d.applied != nil {
		st.Policies = policyStatus(d.applied.Policies)
		if d.applied.IPv6 {
			st.Policies6 = policyStatus(d.applied.Policies6)
		}
	}
	st.Daemon = d.daemonStatus()
	st.DNS = d.dnsStatus()
	d.status.Store(&st)
	sh := &shared{marks: map[string]uint32{}, cfg: d.cfg, health: d.health(), links: d.links, override: d.override}
	for _, w := range d.cfg.WANs {
		sh.wans = append(sh.wans, w.Name)
	}
	if d.applied != nil {
		sh.marks, sh.idMask = d.applied.Marks, d.applied.IDMask
	}
	d.shared.Store(sh)
	if line := statusLine(&st); line != d.statusLine {
		d.statusLine = line
		d.opt.Notify("STATUS=" + line)
	}
}

// statusLine says in one line how the WANs and policies are, for the
// service manager's STATUS= ("isp1 up, isp2 down; failover → isp1").
func statusLine(st *control.Status) string {
	var b strings.Builder
	for i, w := range st.WANs {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(w.Name + " " + w.State)
	}
	for _, p := range st.Policies {
		if strings.HasPrefix(p.Name, "wan:") {
			continue // a rule's one-WAN shorthand says nothing new
		}
		b.WriteString("; " + p.Name + " → ")
		if len(p.Active) == 0 {
			b.WriteString(orDash(p.LastResort))
		}
		for i, a := range p.Active {
			if i > 0 {
				b.WriteString("+")
			}
			b.WriteString(a.WAN)
		}
	}
	if st.Override != "" {
		b.WriteString("; override " + st.Override)
	}
	if st.Daemon != nil && st.Daemon.ApplyError != "" {
		b.WriteString("; apply failing")
	}
	line := b.String()
	if len(line) > 240 {
		line = line[:237] + "..."
	}
	return line
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// daemonStatus says how the control plane itself is doing: apply
// failures, repairs, slowed repairs.
func (d *Daemon) daemonStatus() *control.DaemonStatus {
	ds := &control.DaemonStatus{Config: d.cfg.File, Repairs: d.repair.count}
	if !d.lastApply.IsZero() {
		ds.LastApply = utc(d.lastApply)
	}
	if d.retry.failures > 0 {
		ds.ApplyError = d.retry.lastErr
		ds.ApplyErrorAt = utc(d.retry.lastAt)
		ds.ApplyFailures = d.retry.failures
		if !d.retry.next.IsZero() {
			// Shown on the status clock, which tests may fake.
			ds.NextRetry = utc(d.opt.Now().Add(time.Until(d.retry.next)))
		}
	}
	for _, n := range d.notes {
		ds.Notes = append(ds.Notes, n.String())
	}
	var guarded []string
	for wan, n := range d.guardDrops {
		if n > 0 {
			guarded = append(guarded, fmt.Sprintf("%s: the loop guard dropped %d outer packets routed into the tunnel itself; pin them to the underlay", wan, n))
		}
	}
	slices.Sort(guarded)
	ds.Notes = append(ds.Notes, guarded...)
	if d.repair.count > 0 {
		ds.LastRepair = d.repair.last
		ds.LastRepairAt = utc(d.repair.lastTS)
	}
	var notes []string
	for kind, note := range d.repair.backoff {
		// Said until a window passes without the state being removed.
		if r := d.repair.recent[kind]; len(r) > 0 && time.Since(r[len(r)-1]) < d.repairWindow {
			notes = append(notes, note)
		}
	}
	slices.Sort(notes)
	for i, n := range notes {
		if i > 0 {
			ds.RepairBackoff += "; "
		}
		ds.RepairBackoff += n
	}
	return ds
}

func utc(t time.Time) *time.Time {
	u := t.UTC()
	return &u
}

func policyStatus(choices []plan.PolicyChoice) []control.PolicyStatus {
	out := []control.PolicyStatus{}
	for _, p := range choices {
		ps := control.PolicyStatus{Name: p.Name, Active: []control.Share{}, LastResort: p.LastResort}
		for _, s := range p.Active {
			ps.Active = append(ps.Active, control.Share{WAN: s.WAN, Share: s.Share})
		}
		out = append(out, ps)
	}
	return out
}
