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
	policies := make([]PolicyStatus, len(s.Policies))
	for i, p := range s.Policies {
		if p.Active == nil {
			p.Active = []Share{}
		}
		policies[i] = p
	}
	s.Policies = policies
	return s
}

// Table writes s as a human-readable table: one row per WAN, then one line
// per policy, then the override.
func (s Status) Table(w io.Writer) {
	s.table(w, time.Now())
}

func (s Status) table(w io.Writer, now time.Time) {
	// Which policies send new connections to each WAN, and how much.
	uses := map[string][]string{}
	for _, p := range s.Policies {
		for _, a := range p.Active {
			// A policy that sends everything to one WAN needs no number.
			use := p.Name
			if a.Share < 1 {
				use += " " + percent(a.Share)
			}
			uses[a.WAN] = append(uses[a.WAN], use)
		}
	}

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WAN\tSTATE\tRTT\tLOSS\tSINCE\tGATEWAY\tADDRESS\tPOLICIES")
	for _, wan := range s.WANs {
		name := wan.Name
		if wan.Interface != "" && wan.Interface != wan.Name {
			name += " (" + wan.Interface + ")"
		}
		rtt, loss := "-", "-"
		// A WAN that has never answered has no meaningful RTT or loss.
		if wan.State != "unknown" && (wan.RTTms > 0 || wan.State != "down") {
			rtt = strconv.FormatFloat(wan.RTTms, 'f', 1, 64) + "ms"
		}
		if wan.State != "unknown" {
			loss = strconv.FormatFloat(math.Round(wan.LossPct*10)/10, 'f', -1, 64) + "%"
		}
		policies := strings.Join(uses[wan.Name], ", ")
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			name, orDash(wan.State), rtt, loss, since(wan.Since, now),
			orDash(wan.Gateway), orDash(wan.Address), orDash(policies))
	}
	tw.Flush()

	if len(s.Policies) > 0 {
		fmt.Fprintln(w)
	}
	for _, p := range s.Policies {
		if len(p.Active) == 0 {
			lr := p.LastResort
			if lr == "" {
				lr = "unreachable"
			}
			fmt.Fprintf(w, "policy %s: no usable WAN, new connections get %s\n", p.Name, lr)
			continue
		}
		shares := make([]string, len(p.Active))
		for i, a := range p.Active {
			shares[i] = a.WAN + " " + percent(a.Share)
		}
		fmt.Fprintf(w, "policy %s: %s\n", p.Name, strings.Join(shares, ", "))
	}
	if s.Override == "" {
		fmt.Fprintln(w, "override: none (automatic)")
	} else {
		fmt.Fprintf(w, "override: %s\n", s.Override)
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
