package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/multiwan/multiwan/internal/conntrack"
	"github.com/multiwan/multiwan/internal/control"
	"github.com/multiwan/multiwan/internal/links"
	"github.com/multiwan/multiwan/internal/plan"
)

const tunnelConfig = `wans:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, probe: {targets: [203.0.113.20], down: 3, up: 3}}
  - {name: isp2, interface: wan2, gateway: 192.0.2.65, probe: {targets: [203.0.113.20], down: 3, up: 3}}
  - {name: wg1, interface: wg1, gateway: auto, underlay: [isp1, isp2], probe: {targets: [10.9.0.1], down: 3, up: 3}}
policies:
  - name: failover
    members: [{wan: wg1, tier: 1}, {wan: isp1, tier: 2}]
default_policy: failover
hooks: [/bin/true]
`

// fakeTunnels stands in for the WireGuard reader.
type fakeTunnels struct {
	mu    sync.Mutex
	info  plan.TunnelInfo
	reads int
}

func (f *fakeTunnels) Read(_ context.Context, iface string) (*plan.TunnelInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	if iface != "wg1" {
		return nil, context.DeadlineExceeded
	}
	t := f.info
	t.Endpoints = slices.Clone(f.info.Endpoints)
	return &t, nil
}

func (f *fakeTunnels) set(eps ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.info.Endpoints = nil
	for _, e := range eps {
		f.info.Endpoints = append(f.info.Endpoints, netip.MustParseAddrPort(e))
	}
}

func (f *fakeTunnels) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads
}

// outerFlows adds the deletion of an outer flow by tuple to fakeFlows.
type outerFlows struct {
	*fakeFlows
	mu    sync.Mutex
	moved []string // "mark/mask sels"
}

func (o *outerFlows) DeleteSelected(mark, mask uint32, family int, sels []conntrack.Selector) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var s []string
	for _, sel := range sels {
		switch {
		case sel.Dst.IsValid():
			s = append(s, netip.AddrPortFrom(sel.Dst, sel.DstPort).String())
		default:
			s = append(s, "sport "+strconv.Itoa(int(sel.SrcPort)))
		}
	}
	o.moved = append(o.moved, hexMark(mark)+" "+strings.Join(s, ","))
	return 1, nil
}

func (o *outerFlows) take() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	m := o.moved
	o.moved = nil
	return m
}

func hexMark(m uint32) string { return fmt.Sprintf("%#x", m) }

// TestTunnelUnderlays drives a tunnel WAN over two underlays through the
// daemon: what its interface says is read before the first plan and
// followed as it roams (replanning only on a change), its outer traffic
// moves with the underlays (a move between two usable ones deletes its
// outer flow), and with both underlays down the tunnel is down, said so
// with the cause, in status, events and hooks.
func TestTunnelUnderlays(t *testing.T) {
	wg := &fakeTunnels{info: plan.TunnelInfo{Kind: "wireguard-go", ListenPort: 51820, Peers: 1}}
	wg.set("203.0.113.7:51820")
	var outer *outerFlows
	h := startHarness(t, tunnelConfig, func(h *harness) {
		h.d.opt.Tunnels = wg
		outer = &outerFlows{fakeFlows: h.flows}
		h.d.opt.Flows = outer
		h.links["wg1"] = plan.Link{Exists: true, Up: true, PointToPoint: true,
			Addrs: []netip.Prefix{netip.MustParsePrefix("10.9.0.2/24")}}
	})
	// Read before the first plan: the first apply pins by port and peer.
	d := h.k.holds()
	if o := d.Overlay("wg1"); o == nil || o.Underlay != "isp1" || o.ListenPort != 51820 ||
		!slices.Equal(o.Endpoints, []netip.AddrPort{netip.MustParseAddrPort("203.0.113.7:51820")}) {
		t.Fatalf("first plan: %+v", o)
	}
	for _, k := range []string{"isp1", "isp2", "wg1"} {
		h.rounds(k, true, 3)
	}
	if h.active() != "wg1" {
		t.Fatalf("active %s", h.active())
	}

	// Links re-read with nothing new: read again, but no new plan.
	applies, _ := h.k.counts()
	n := wg.count()
	h.linkEvent(links.Change{What: "address"})
	h.waitFor("a read after the link event", func() bool { return wg.count() > n })
	h.onLoop(func() {}) // the reading, if any, is handled
	if a, _ := h.k.counts(); a != applies {
		t.Fatalf("replanned for an unchanged tunnel: %d applies, was %d", a, applies)
	}
	// The peer roams: followed at the next read.
	wg.set("198.51.100.99:4500")
	h.linkEvent(links.Change{What: "address"})
	h.waitFor("the roamed endpoint in the plan", func() bool {
		o := h.k.holds().Overlay("wg1")
		return o != nil && len(o.Endpoints) == 1 && o.Endpoints[0].String() == "198.51.100.99:4500"
	})

	// isp1 dies: the outer traffic takes isp2; isp1's entries all go
	// (its own cleanup), no outer flow to move.
	h.rounds("isp1", false, 3)
	if o := h.k.holds().Overlay("wg1"); o.Underlay != "isp2" {
		t.Fatalf("isp1 down: %+v", o)
	}
	h.flows.take()
	if m := outer.take(); len(m) != 0 {
		t.Fatalf("moved %v: isp1's cleanup took its entries", m)
	}
	// isp1 is back: the outer flow leaves isp2, which is still usable.
	m2 := h.k.holds().Marks["isp2"]
	h.rounds("isp1", true, 3)
	if o := h.k.holds().Overlay("wg1"); o.Underlay != "isp1" {
		t.Fatalf("isp1 back: %+v", o)
	}
	if got, want := outer.take(), []string{hexMark(m2) + " 198.51.100.99:4500,sport 51820"}; !slices.Equal(got, want) {
		t.Fatalf("outer flow moved %v, want %v", got, want)
	}

	// Both underlays die: wg1 is down because of them, whatever its probes.
	h.rounds("isp1", false, 3)
	h.rounds("isp2", false, 3)
	st := h.status()
	var wgs = st.WANs[2]
	if wgs.Name != "wg1" || wgs.State != "down" || wgs.Cause != "underlays isp1, isp2 down" ||
		wgs.Tunnel == nil || wgs.Tunnel.Underlay != "" || wgs.Tunnel.ListenPort != 51820 || wgs.Tunnel.Kind != "wireguard-go" {
		t.Fatalf("status of wg1: %+v %+v", wgs, wgs.Tunnel)
	}
	if !slices.ContainsFunc(st.Events, func(e control.Event) bool {
		return e.Kind == "state" && e.WAN == "wg1" && e.To == "down" && e.Cause == "underlays isp1, isp2 down"
	}) {
		t.Fatalf("no event for wg1 down by its underlays: %+v", st.Events)
	}
	if !strings.Contains(h.hooks.kinds(), "down:wg1") {
		t.Fatalf("hooks %q", h.hooks.kinds())
	}
	// One is back: so is the tunnel (its probes never failed).
	h.rounds("isp2", true, 3)
	st = h.status()
	if st.WANs[2].State != "up" || st.WANs[2].Cause != "" || st.WANs[2].Tunnel.Underlay != "isp2" {
		t.Fatalf("isp2 back: %+v", st.WANs[2])
	}
	h.consistent("end")
}

func TestStaleOuterFlows(t *testing.T) {
	cfg := parse(t, tunnelConfig)
	l := plan.Links{}
	for _, w := range cfg.WANs {
		l[w.Name] = plan.Link{Exists: true, Up: true, PointToPoint: true}
	}
	wg := l["wg1"]
	wg.Tunnel = &plan.TunnelInfo{ListenPort: 51820}
	l["wg1"] = wg
	up := plan.Plan(cfg, plan.Health{}, l, "")
	isp1Down := plan.Plan(cfg, plan.Health{"isp1": plan.StateDown}, l, "")
	if m := staleOuterFlows(up, isp1Down); len(m) != 0 {
		t.Fatalf("the old underlay died: its cleanup does it, got %+v", m)
	}
	m := staleOuterFlows(isp1Down, up)
	if len(m) != 1 || m[0].from != "isp2" || m[0].to != "isp1" || m[0].mark != up.Marks["isp2"] ||
		len(m[0].sels) != 1 || m[0].sels[0].SrcPort != 51820 {
		t.Fatalf("back to isp1: %+v", m)
	}
	trs := overlayTransitions(up, plan.Plan(cfg, plan.Health{"isp1": plan.StateDown, "isp2": plan.StateDown}, l, ""), nil)
	if len(trs) != 1 || trs[0].WAN != "wg1" || trs[0].To != plan.StateDown || trs[0].Cause != "underlays isp1, isp2 down" {
		t.Fatalf("transitions %+v", trs)
	}
}
