package control

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Status is what `multiwan status` shows. Its JSON form is the output of
// `multiwan status --json`, a stable contract: fields may be added, never
// renamed or removed.
type Status struct {
	WANs     []WANStatus    `json:"wans"`
	Policies []PolicyStatus `json:"policies"`
	// Override is the WAN chosen with `multiwan use`, or "" when the choice
	// is automatic.
	Override string `json:"override"`
	// Policies6 is Policies for IPv6, present when some WAN carries IPv6:
	// the families are decided apart.
	Policies6 []PolicyStatus `json:"policies6,omitempty"`
	// Daemon is the health of multiwan's own control plane: failures to
	// make the kernel match the plan, and repairs of state that others
	// removed.
	Daemon *DaemonStatus `json:"daemon,omitempty"`
	// Events are the last things that happened, oldest first.
	Events []Event `json:"events,omitempty"`
	// DNS is the resolver list kept in resolv_file; nil when no WAN has
	// resolvers.
	DNS *DNSStatus `json:"dns,omitempty"`
}

// DaemonStatus is the health of multiwan's own control plane.
type DaemonStatus struct {
	Config        string     `json:"config"`                // config file in use
	ApplyError    string     `json:"apply_error,omitempty"` // last failure to make the kernel match the plan, until an apply succeeds
	ApplyErrorAt  *time.Time `json:"apply_error_at,omitempty"`
	ApplyFailures int        `json:"apply_failures,omitempty"` // consecutive failures
	NextRetry     *time.Time `json:"next_retry,omitempty"`
	LastApply     *time.Time `json:"last_apply,omitempty"`  // last successful apply
	Repairs       int        `json:"repairs"`               // repairs of state others removed, since start
	LastRepair    string     `json:"last_repair,omitempty"` // what was missing and who removed it
	LastRepairAt  *time.Time `json:"last_repair_at,omitempty"`
	RepairBackoff string     `json:"repair_backoff,omitempty"` // set while repairs are slowed down because something keeps undoing them
	// Notes are gaps in what the config covers on this box ("isp2: probes
	// only its gateway: ..."): valid, running, but not what a user would
	// expect.
	Notes []string `json:"notes,omitempty"`
}

// WANStatus is one WAN's health and addressing.
type WANStatus struct {
	Name      string `json:"name"`
	Interface string `json:"interface"`
	// State is one of "up", "degraded", "down" or "unknown".
	State   string  `json:"state"`
	RTTms   float64 `json:"rtt_ms"`
	LossPct float64 `json:"loss_pct"`
	Address string  `json:"address"`
	Gateway string  `json:"gateway"`
	// Since is when the WAN entered State.
	Since time.Time `json:"since"`
	// IPv6 is the WAN's IPv6 health and addressing, tracked apart from
	// IPv4 (the fields above); nil when the WAN carries no IPv6.
	IPv6 *FamilyStatus `json:"ipv6,omitempty"`
	// Cause says why State is down when that is not the probes' doing:
	// "underlay starlink1 down" for a tunnel whose underlays are down.
	Cause string `json:"cause,omitempty"`
	// Tunnel is set for a tunnel WAN (one with underlays): where its
	// outer traffic goes.
	Tunnel *TunnelStatus `json:"tunnel,omitempty"`
}

// FamilyStatus is a WAN's health and addressing for one more family.
type FamilyStatus struct {
	State   string    `json:"state"`
	RTTms   float64   `json:"rtt_ms"`
	LossPct float64   `json:"loss_pct"`
	Address string    `json:"address"`
	Gateway string    `json:"gateway"`
	Since   time.Time `json:"since"`
}

// PolicyStatus is where one policy sends new connections now.
type PolicyStatus struct {
	Name string `json:"name"`
	// Active lists the WANs new connections go to, with shares summing to 1;
	// it is empty when no member is usable.
	Active []Share `json:"active"`
	// LastResort is what happens to new connections when Active is empty
	// ("unreachable", "blackhole" or "main").
	LastResort string `json:"last_resort,omitempty"`
}

// Share is the part of a policy's new connections that one WAN takes.
type Share struct {
	WAN   string  `json:"wan"`
	Share float64 `json:"share"`
}

// normalized returns s with nil lists made empty, so that the JSON form has
// [] rather than null where a client expects a list.
func (s Status) normalized() Status {
	if s.WANs == nil {
		s.WANs = []WANStatus{}
	}
	s.Policies = normalizedPolicies(s.Policies)
	if s.Policies6 != nil {
		s.Policies6 = normalizedPolicies(s.Policies6)
	}
	return s
}

func normalizedPolicies(in []PolicyStatus) []PolicyStatus {
	out := make([]PolicyStatus, len(in))
	for i, p := range in {
		if p.Active == nil {
			p.Active = []Share{}
		}
		out[i] = p
	}
	return out
}

// Table writes s as a human-readable table: one row per WAN, then one line
// per policy, then the override, then one line per problem of the daemon
// itself (failing applies, repairs), only when there is one.
func (s Status) Table(w io.Writer) {
	s.table(w, time.Now())
}

func (s Status) table(w io.Writer, now time.Time) {
	uses, uses6 := usesOf(s.Policies), usesOf(s.Policies6)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WAN\tSTATE\tRTT\tLOSS\tSINCE\tGATEWAY\tADDRESS\tPOLICIES")
	for _, wan := range s.WANs {
		name := wan.Name
		if wan.Interface != "" && wan.Interface != wan.Name {
			name += " (" + wan.Interface + ")"
		}
		v4 := FamilyStatus{State: wan.State, RTTms: wan.RTTms, LossPct: wan.LossPct, Address: wan.Address,
			Gateway: wan.Gateway, Since: wan.Since}
		row(tw, name, v4, uses[wan.Name], now)
		if wan.IPv6 != nil {
			row(tw, "  ipv6", *wan.IPv6, uses6[wan.Name], now)
		}
	}
	tw.Flush()

	if len(s.Policies) > 0 {
		fmt.Fprintln(w)
	}
	policyLines(w, s.Policies, "")
	policyLines(w, s.Policies6, " (ipv6)")
	tunnelLines(w, s.WANs)
	if s.Override == "" {
		fmt.Fprintln(w, "override: none (automatic)")
	} else {
		fmt.Fprintf(w, "override: %s\n", s.Override)
	}
	s.DNS.dnsLine(w)
	s.Daemon.problems(w, now)
}

// problems writes a line per problem of the control plane: applies that
// fail, and repairs of state that others removed.
func (d *DaemonStatus) problems(w io.Writer, now time.Time) {
	if d == nil {
		return
	}
	if d.ApplyError != "" {
		line := "apply: FAILED"
		switch {
		case d.ApplyFailures == 1:
			line += " once"
		case d.ApplyFailures > 1:
			line += fmt.Sprintf(" %d times", d.ApplyFailures)
		}
		if d.ApplyErrorAt != nil {
			line += ", last " + ago(now.Sub(*d.ApplyErrorAt)) + " ago"
		}
		line += ": " + oneLine(d.ApplyError)
		if d.NextRetry != nil {
			if wait := d.NextRetry.Sub(now); wait > 0 {
				// Rounded up: "in 0s" would read as "now".
				line += "; retrying in " + ago(wait+time.Second-1)
			} else {
				line += "; retrying now"
			}
		}
		fmt.Fprintln(w, line)
	}
	if d.Repairs > 0 || d.RepairBackoff != "" {
		line := fmt.Sprintf("repairs: %d", d.Repairs)
		if d.LastRepairAt != nil {
			line += ", last " + ago(now.Sub(*d.LastRepairAt)) + " ago"
		}
		if d.LastRepair != "" {
			line += ": " + oneLine(d.LastRepair)
		}
		if d.RepairBackoff != "" {
			line += "; slowed down: " + oneLine(d.RepairBackoff)
		}
		fmt.Fprintln(w, line)
	}
	for _, n := range d.Notes {
		fmt.Fprintln(w, "note: "+oneLine(n))
	}
}

// oneLine joins a multi-line message into one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " / ")), " ")
}

// usesOf says which policies send new connections to each WAN, and how
// much.
func usesOf(policies []PolicyStatus) map[string][]string {
	uses := map[string][]string{}
	for _, p := range policies {
		for _, a := range p.Active {
			// A policy that sends everything to one WAN needs no number.
			use := p.Name
			if a.Share < 1 {
				use += " " + percent(a.Share)
			}
			uses[a.WAN] = append(uses[a.WAN], use)
		}
	}
	return uses
}

// row writes one line of the WAN table.
func row(tw io.Writer, name string, f FamilyStatus, uses []string, now time.Time) {
	rtt, loss := "-", "-"
	// A WAN that has never answered has no meaningful RTT or loss.
	if f.State != "unknown" && (f.RTTms > 0 || f.State != "down") {
		rtt = strconv.FormatFloat(f.RTTms, 'f', 1, 64) + "ms"
	}
	if f.State != "unknown" {
		loss = strconv.FormatFloat(math.Round(f.LossPct*10)/10, 'f', -1, 64) + "%"
	}
	fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
		name, orDash(f.State), rtt, loss, since(f.Since, now),
		orDash(f.Gateway), orDash(f.Address), orDash(strings.Join(uses, ", ")))
}

// policyLines writes one line per policy; suffix names the family.
func policyLines(w io.Writer, policies []PolicyStatus, suffix string) {
	for _, p := range policies {
		if len(p.Active) == 0 {
			lr := p.LastResort
			if lr == "" {
				lr = "unreachable"
			}
			fmt.Fprintf(w, "policy %s%s: no usable WAN, new connections get %s\n", p.Name, suffix, lr)
			continue
		}
		shares := make([]string, len(p.Active))
		for i, a := range p.Active {
			shares[i] = a.WAN + " " + percent(a.Share)
		}
		fmt.Fprintf(w, "policy %s%s: %s\n", p.Name, suffix, strings.Join(shares, ", "))
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// percent formats a share in [0, 1] as a percentage with at most one
// decimal: 1 → "100%", 0.75 → "75%", 1/3 → "33.3%".
func percent(share float64) string {
	return strconv.FormatFloat(math.Round(share*1000)/10, 'f', -1, 64) + "%"
}

// since formats t as how long ago it was and when: "3m12s ago (14:02:07)",
// with the day when t is not on now's day: "1d2h ago (Mar  3 13:00)".
func since(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	// Shown in now's zone: the local one, unless a test says otherwise.
	t = t.In(now.Location())
	stamp := t.Format("15:04:05")
	if y, m, d := now.Date(); t.Year() != y || t.Month() != m || t.Day() != d {
		stamp = t.Format("Jan _2 15:04")
	}
	return ago(now.Sub(t)) + " ago (" + stamp + ")"
}

// ago formats a duration with its two largest units, rounded down:
// "45s", "3m12s", "2h5m", "3d4h".
func ago(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int64(d / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh%dm", s/3600, s%3600/60)
	default:
		return fmt.Sprintf("%dd%dh", s/86400, s%86400/3600)
	}
}
