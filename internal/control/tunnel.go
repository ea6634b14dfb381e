package control

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// TunnelStatus is how a tunnel WAN's (an overlay's) outer traffic is
// pinned: the underlay it rides now, and what tells its outer packets.
type TunnelStatus struct {
	// Underlay is the WAN the tunnel's outer traffic rides now; empty
	// when none of Underlays is usable (the tunnel is down, its outer
	// packets fail).
	Underlay  string   `json:"underlay"`
	Underlays []string `json:"underlays"`
	// Marks are the tunnel's fwmarks its outer packets are recognised by
	// (tunnel_mark, or read from WireGuard), as hex.
	Marks []string `json:"marks,omitempty"`
	// ListenPort is the UDP port read from the interface; 0 unknown.
	ListenPort int `json:"listen_port,omitempty"`
	// Endpoints are the peers' endpoints, configured and read.
	Endpoints []string `json:"endpoints,omitempty"`
	// Kind is what was read: "wireguard" (kernel) or "wireguard-go"
	// (userspace); empty when nothing was.
	Kind string `json:"kind,omitempty"`
	// Peers is how many peers the interface has.
	Peers int `json:"peers,omitempty"`
	// Error says what keeps the outer traffic from being pinned, e.g. a
	// WireGuard fwmark that overlaps mark_mask (with the mask to use).
	Error string `json:"error,omitempty"`
	// ReadError is why the interface could not be read (not WireGuard,
	// no UAPI socket, a timeout).
	ReadError string `json:"read_error,omitempty"`
}

// tunnelLines writes one line per tunnel WAN: the underlay its outer
// traffic rides (or why it is down), and what keeps it from being pinned.
func tunnelLines(w io.Writer, wans []WANStatus) {
	for _, wan := range wans {
		t := wan.Tunnel
		if t == nil {
			continue
		}
		line := "tunnel " + wan.Name + ": "
		if t.Underlay != "" {
			line += "outer traffic rides " + t.Underlay
		} else {
			line += "no usable underlay (" + strings.Join(t.Underlays, ", ") + "): outer traffic fails"
		}
		var by []string
		if len(t.Marks) > 0 {
			by = append(by, "mark "+strings.Join(t.Marks, ", "))
		}
		if t.ListenPort != 0 {
			by = append(by, "port "+strconv.Itoa(t.ListenPort))
		}
		if len(t.Endpoints) > 0 {
			by = append(by, "peer "+strings.Join(t.Endpoints, ", "))
		}
		if len(by) > 0 {
			line += " (" + strings.Join(by, "; ") + ")"
		}
		if wan.Cause != "" {
			line += "; " + wan.Name + " down: " + wan.Cause
		}
		if t.Error != "" {
			line += "; ERROR: " + oneLine(t.Error)
		}
		if t.ReadError != "" {
			line += "; not read: " + oneLine(t.ReadError)
		}
		fmt.Fprintln(w, line)
	}
}
