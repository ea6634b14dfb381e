package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/multiwan/multiwan/internal/lab"
)

// plainRouting gives the lab's router what a router without multiwan has:
// a default route via ISP1 and masquerade on wan1, in a table of its own.
// The returned function removes both again.
func plainRouting(l *lab.Lab) (func() error, error) {
	undo := func() error {
		var errs []error
		if _, err := run(l, lab.NSRouter, 10*time.Second, "ip", "route", "del", "default", "via", lab.ISPGateway(1), "dev", lab.WANIface(1)); err != nil {
			errs = append(errs, err)
		}
		if _, err := run(l, lab.NSRouter, 10*time.Second, "nft", "delete", "table", "ip", "benchnat"); err != nil {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
	if _, err := run(l, lab.NSRouter, 10*time.Second, "ip", "route", "add", "default", "via", lab.ISPGateway(1), "dev", lab.WANIface(1)); err != nil {
		return nil, err
	}
	if _, err := run(l, lab.NSRouter, 10*time.Second, "nft",
		`add table ip benchnat; add chain ip benchnat post { type nat hook postrouting priority srcnat; policy accept; }; add rule ip benchnat post oifname "`+lab.WANIface(1)+`" masquerade`); err != nil {
		undo()
		return nil, err
	}
	return undo, nil
}

// throughput compares TCP throughput from the LAN to the internet through
// the daemon's full ruleset with plain routing and masquerade: iperf3 for
// 5 s, -runs runs of each in one lab, in pairs whose order alternates, so
// that each pair's ratio compares runs made under the same conditions.
func throughput() error {
	l, err := lab.New(lab.Options{ISPs: 2})
	if err != nil {
		return err
	}
	defer l.Close()
	dir, err := tempDir()
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := writeList(listPath(dir), 10); err != nil {
		return err
	}
	cfg := fullConfig(listPath(dir))

	measurePlain := func() (float64, error) {
		undo, err := plainRouting(l)
		if err != nil {
			return 0, err
		}
		res, err := iperf(l, "-t", "5")
		if uerr := undo(); uerr != nil {
			return 0, errors.Join(err, uerr)
		}
		if err != nil {
			return 0, fmt.Errorf("plain routing: %w", err)
		}
		return res.End.SumReceived.BitsPerSecond / 1e9, nil
	}
	measureFull := func() (float64, error) {
		d, err := startDaemon(l, cfg)
		if err != nil {
			return 0, err
		}
		defer d.stop()
		if got := whoami(l, 2*time.Second); got != lab.ISPPublicAddr(1) {
			return 0, fmt.Errorf("full ruleset: the service sees %q, want isp1", got)
		}
		res, err := iperf(l, "-t", "5")
		if err != nil {
			return 0, fmt.Errorf("full ruleset: %w", err)
		}
		return res.End.SumReceived.BitsPerSecond / 1e9, nil
	}

	var plain, full, ratios []float64
	for r := range *runs {
		order := []func() (float64, error){measurePlain, measureFull}
		if r%2 == 1 {
			order[0], order[1] = order[1], order[0]
		}
		var got [2]float64
		for i, m := range order {
			if got[i], err = m(); err != nil {
				return err
			}
		}
		p, f := got[0], got[1]
		if r%2 == 1 {
			p, f = f, p
		}
		plain, full = append(plain, p), append(full, f)
		ratios = append(ratios, f/p*100)
	}
	mp, mf := median(plain), median(full)
	add("forwarding LAN → internet, full ruleset (iperf3 TCP, 5 s)", fmt.Sprintf("%.2f Gbit/s median (%s)", mf, fmts(full, "%.2f")), "—",
		"rules: 4 incl. a 10-prefix list; daemon running")
	add("same, plain routing + masquerade (baseline)", fmt.Sprintf("%.2f Gbit/s median (%s)", mp, fmts(plain, "%.2f")), "—",
		"same lab, runs in alternating pairs")
	add("throughput full ruleset / plain", fmt.Sprintf("%.1f %% median of pairs (%s)", median(ratios), fmts(ratios, "%.0f %%")), "≥ 95 %",
		fmt.Sprintf("ratio of medians %.1f %%; baseline run-to-run spread %.0f %%", mf/mp*100, spread(plain)))
	return nil
}
