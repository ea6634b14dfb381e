package main

import (
	"fmt"
	"math"
	"time"

	"github.com/multiwan/multiwan/internal/lab"
)

// balanceAccuracy counts, over 4,000 new connections of a 3:1 balanced
// policy, the share that left by ISP1. Each connection is a UDP echo from
// its own source port, so each is a new conntrack entry classified afresh.
func balanceAccuracy() error {
	const n = 4000
	l, err := lab.New(lab.Options{ISPs: 2})
	if err != nil {
		return err
	}
	defer l.Close()
	d, err := startDaemon(l, wans(2, "{targets: [203.0.113.20, 203.0.113.30], interval: 100ms}")+`policies:
  - name: balanced
    members:
      - {wan: isp1, weight: 3}
      - {wan: isp2, weight: 1}
default_policy: balanced
`)
	if err != nil {
		return err
	}
	defer d.stop()
	if err := d.waitState("isp2", "up", 10*time.Second); err != nil {
		return err
	}
	start := time.Now()
	counts, err := udpShares(l, 10000, n)
	if err != nil {
		return err
	}
	took := time.Since(start)
	isp1, isp2 := counts[lab.ISPPublicAddr(1)], counts[lab.ISPPublicAddr(2)]
	if isp1+isp2 != n {
		return fmt.Errorf("flows seen from unexpected addresses: %v", counts)
	}
	share := float64(isp1) / n * 100
	sigma := math.Sqrt(0.75*0.25/n) * 100
	add("3:1 weights over 4,000 new connections (UDP, one source port each)",
		fmt.Sprintf("isp1 %.1f %% (%d / %d)", share, isp1, n), "75 % ± 3 points",
		fmt.Sprintf("off by %.1f points; σ of a fair draw %.1f points; %d flows in %s", math.Abs(share-75), sigma, n, ms(took)))
	return nil
}
