package plan

import "testing"

// BenchmarkPlanSwitch is the planner's part of a switch: the whole desired
// state for seed 000 with an override, and its comparison with the plan
// applied last (which the daemon makes before it may apply).
func BenchmarkPlanSwitch(b *testing.B) {
	cfg := load(b, "seed000-dual-wan-failover.yaml")
	links := upLinks(cfg, "192.0.2.2/24", "198.51.100.2/24")
	health := allUp(cfg)
	last := Plan(cfg, health, links, "")
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		o := ""
		if i%2 == 0 {
			o = "isp2"
		}
		d := Plan(cfg, health, links, o)
		if d.SameKernelState(last) == (o != "") {
			b.Fatal("the comparison is wrong")
		}
	}
}
