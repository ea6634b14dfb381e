package lab

import "fmt"

// CutUpstream makes ISP k stop forwarding between the router and the
// internet in both directions, like a broken uplink behind a modem that is
// still powered: the router's link stays up and the ISP still answers for
// its own addresses (ping to [ISPGateway](k) keeps working).
func (l *Lab) CutUpstream(k int) error {
	if err := l.checkISP(k); err != nil {
		return err
	}
	return l.nft(ISPNS(k), "flush chain ip isp cut\nadd rule ip isp cut drop\n")
}

// RestoreUpstream undoes [Lab.CutUpstream].
func (l *Lab) RestoreUpstream(k int) error {
	if err := l.checkISP(k); err != nil {
		return err
	}
	return l.nft(ISPNS(k), "flush chain ip isp cut\n")
}

// SetLoss makes ISP k drop pct percent (0..100) of the packets it forwards,
// at random, in both directions. 0 removes the loss.
func (l *Lab) SetLoss(k, pct int) error {
	if err := l.checkISP(k); err != nil {
		return err
	}
	if pct < 0 || pct > 100 {
		return fmt.Errorf("lab: loss %d%% out of range 0..100", pct)
	}
	script := "flush chain ip isp loss\n"
	switch {
	case pct == 100:
		// numgen values are 0..99, so "< 100" is not a valid expression.
		script += "add rule ip isp loss drop\n"
	case pct > 0:
		script += fmt.Sprintf("add rule ip isp loss numgen random mod 100 < %d drop\n", pct)
	}
	return l.nft(ISPNS(k), script)
}

// SetLinkDown sets ISP k's end of the link to the router down (or back
// up), so the router sees carrier loss on its wan interface.
func (l *Lab) SetLinkDown(k int, down bool) error {
	if err := l.checkISP(k); err != nil {
		return err
	}
	state := "up"
	if down {
		state = "down"
	}
	return l.ip(ISPNS(k), "link", "set", "dev", "cust", state)
}
