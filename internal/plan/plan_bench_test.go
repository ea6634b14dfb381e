package plan

import "testing"

// BenchmarkPlanSwitch is the planner's part of a switch: the whole desired
// state for seed 000 with an override, and its text (which the daemon
// compares with what it applied last).
func BenchmarkPlanSwitch(b *testing.B) {
	cfg := load(b, "seed000-dual-wan-failover.yaml")
	links := upLinks(cfg, "192.0.2.2/24", "198.51.100.2/24")
	health := allUp(cfg)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		o := ""
		if i%2 == 0 {
			o = "isp2"
		}
		_ = Plan(cfg, health, links, o).String()
	}
}
