package control

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestTunnelLines: status says, per tunnel, the underlay its outer traffic
// rides or why it is down, and what keeps it from being pinned; the JSON
// form adds the fields without touching the others.
func TestTunnelLines(t *testing.T) {
	st := Status{WANs: []WANStatus{
		{Name: "starlink1", State: "down"},
		{Name: "wg1", State: "down", Cause: "underlay starlink1 down",
			Tunnel: &TunnelStatus{Underlays: []string{"starlink1"}, ListenPort: 30001, Endpoints: []string{"203.0.113.7:30001"}}},
		{Name: "wg2", State: "up", Tunnel: &TunnelStatus{Underlay: "starlink2", Underlays: []string{"starlink2"}, Marks: []string{"0x388"},
			Error: "the wireguard fwmark 0x388 of wg2 overlaps mark_mask 0x3f00 (bits 0x300)"}},
	}}
	var b bytes.Buffer
	st.table(&b, time.Now())
	for _, want := range []string{
		"tunnel wg1: no usable underlay (starlink1): outer traffic fails (port 30001; peer 203.0.113.7:30001); wg1 down: underlay starlink1 down\n",
		"tunnel wg2: outer traffic rides starlink2 (mark 0x388); ERROR: the wireguard fwmark 0x388",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("no %q in\n%s", want, b.String())
		}
	}
	js, err := json.Marshal(st.WANs[1])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(js), `"cause":"underlay starlink1 down","tunnel":{"underlay":"","underlays":["starlink1"],"listen_port":30001`) {
		t.Errorf("json %s", js)
	}
	if js, _ := json.Marshal(st.WANs[0]); strings.Contains(string(js), "tunnel") || strings.Contains(string(js), "cause") {
		t.Errorf("a WAN that is no tunnel: %s", js)
	}
}
