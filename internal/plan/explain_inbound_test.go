package plan

import (
	"net/netip"
	"strings"
	"testing"
)

// TestExplainInbound: a connection that arrives on a WAN, to a service on
// the router or to a LAN host behind a port forward, is delivered by the
// main table (the WAN's link route, the LAN route), not by a WAN's table;
// what multiwan decides for it is the WAN of its replies, which carry the
// connection's mark. Explain must name that WAN and the replies' route,
// as the lab shows (e2e TestExplainExamples: replies of a port forward via
// ISP2 leave by ISP2), not "route" without a WAN.
func TestExplainInbound(t *testing.T) {
	cfg := parseConfig(t, localConfig)
	links := upLinks(cfg, "192.0.2.2/24", "198.51.100.2/24")
	main := append(localMain, Route{Table: TableMain, Dst: netip.MustParsePrefix("10.0.0.0/24"), Dev: "lan"})
	for _, q := range []Query{
		// To the router's own address on wan2: its link route is in main.
		{IIF: "wan2", Src: addr("203.0.113.9"), Dst: addr("198.51.100.2"), Proto: "tcp", DstPort: 8080},
		// To a LAN host behind a port forward (DNAT before routing).
		{IIF: "wan2", Src: addr("203.0.113.9"), Dst: addr("10.0.0.9"), Proto: "tcp", DstPort: 22},
	} {
		ex := Explain(cfg, allUp(cfg), links, "", q, main)
		if len(ex.Paths) != 1 {
			t.Fatalf("%v: %+v", q, ex)
		}
		p := ex.Paths[0]
		if p.WAN != "isp2" || p.Verdict != "route" || !strings.Contains(p.Why, "arrived on this WAN") ||
			!strings.Contains(p.IPRule, "priority 1102") || !strings.Contains(p.Route, "dev wan2") {
			t.Errorf("%v: %+v, want the replies via isp2 (ip rule 1102, dev wan2)", q, p)
		}
		if s := ex.String(); !strings.Contains(s, "leaves by isp2") {
			t.Errorf("%v: text does not say the replies leave by isp2:\n%s", q, s)
		}
		// The WAN it arrived on is the only one: with it down, the
		// replies still leave by it (nothing else could carry them).
		if down := ex.IfDown["isp2"]; len(down) != 1 || down[0].WAN != "isp2" {
			t.Errorf("%v with isp2 down: %+v", q, down)
		}
	}
}
