package control

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// DNSStatus is the resolver list multiwan keeps in resolv_file (README
// "DNS"): present when some WAN has resolvers (dns:).
type DNSStatus struct {
	// File is resolv_file.
	File string `json:"file"`
	// Servers are the resolvers in the file's order: those of usable WANs
	// first, in the default policy's order.
	Servers []DNSServer `json:"servers"`
	// Written is when the file last got new content; WriteError why the
	// last write failed, until one succeeds.
	Written    *time.Time `json:"written,omitempty"`
	WriteError string     `json:"write_error,omitempty"`
}

// DNSServer is one resolver of the list.
type DNSServer struct {
	Address string `json:"address"`
	// WAN is the WAN its queries are pinned to.
	WAN string `json:"wan"`
	// Usable is false while that WAN is down: its queries fail at once.
	Usable bool `json:"usable"`
	// Source is "config", or where it was learned: "DHCP lease PATH",
	// "router advertisements".
	Source string `json:"source"`
	// Pinned is false for a learned resolver several WANs gave: no WAN
	// owns it, the policy carries its queries.
	Pinned bool `json:"pinned"`
}

// dnsLine writes the resolver list in one line, for the status table.
func (d *DNSStatus) dnsLine(w io.Writer) {
	if d == nil {
		return
	}
	if len(d.Servers) == 0 {
		fmt.Fprintf(w, "dns: no resolver known yet (%s not written)\n", d.File)
	} else {
		parts := make([]string, len(d.Servers))
		for i, s := range d.Servers {
			parts[i] = s.Address + " " + s.WAN
			if !s.Usable {
				parts[i] += " (down)"
			}
		}
		fmt.Fprintf(w, "dns: %s → %s\n", strings.Join(parts, ", "), d.File)
	}
	if d.WriteError != "" {
		fmt.Fprintf(w, "dns: writing %s FAILED: %s\n", d.File, oneLine(d.WriteError))
	}
}
