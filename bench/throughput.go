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
// the daemon's full ruleset with plain routing and masquerade, iperf3 for
// 5 s, 3 runs of each, alternating, in one lab.
func throughput() error {
	const runs = 3
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

	var plain, full []float64
	for range runs {
		undo, err := plainRouting(l)
		if err != nil {
			return err
		}
		res, err := iperf(l, "-t", "5")
		if uerr := undo(); uerr != nil {
			return errors.Join(err, uerr)
		}
		if err != nil {
			return fmt.Errorf("plain routing: %w", err)
		}
		plain = append(plain, res.End.SumReceived.BitsPerSecond/1e9)

		d, err := startDaemon(l, cfg)
		if err != nil {
			return err
		}
		if got := whoami(l, 2*time.Second); got != lab.ISPPublicAddr(1) {
			d.stop()
			return fmt.Errorf("full ruleset: the service sees %q, want isp1", got)
		}
		res, err = iperf(l, "-t", "5")
		d.stop()
		if err != nil {
			return fmt.Errorf("full ruleset: %w", err)
		}
		full = append(full, res.End.SumReceived.BitsPerSecond/1e9)
	}
	mp, mf := median(plain), median(full)
	add("forwarding LAN → internet, full ruleset (iperf3 TCP, 5 s)", fmt.Sprintf("%.2f Gbit/s median (%s)", mf, fmts(full, "%.2f")), "—", "")
	add("same, plain routing + masquerade (baseline)", fmt.Sprintf("%.2f Gbit/s median (%s)", mp, fmts(plain, "%.2f")), "—", "same lab, runs alternated")
	add("throughput ratio full ruleset / plain", fmt.Sprintf("%.1f %%", mf/mp*100), "≥ 95 %", "")
	return nil
}
