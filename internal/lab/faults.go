package lab

import (
	"fmt"
	"strings"
)

// nftFamilies returns the nft table families of ISP rulesets that family
// (0 for all, 4 or 6) selects.
func (l *Lab) nftFamilies(family int) ([]string, error) {
	switch family {
	case 0:
		if l.ipv6 {
			return []string{"ip", "ip6"}, nil
		}
		return []string{"ip"}, nil
	case 4:
		return []string{"ip"}, nil
	case 6:
		if !l.ipv6 {
			return nil, fmt.Errorf("lab: IPv6 is not enabled (Options.IPv6)")
		}
		return []string{"ip6"}, nil
	}
	return nil, fmt.Errorf("lab: address family %d is neither 4 nor 6", family)
}

// setChain replaces the rules of chain (cut or loss) of ISP k's tables of
// the given families with rule ("" for none), in one transaction.
func (l *Lab) setChain(k, family int, chain, rule string) error {
	if err := l.checkISP(k); err != nil {
		return err
	}
	fams, err := l.nftFamilies(family)
	if err != nil {
		return err
	}
	var b strings.Builder
	for _, f := range fams {
		fmt.Fprintf(&b, "flush chain %s isp %s\n", f, chain)
		if rule != "" {
			fmt.Fprintf(&b, "add rule %s isp %s %s\n", f, chain, rule)
		}
	}
	return l.nft(ISPNS(k), b.String())
}

// CutUpstream makes ISP k stop forwarding between the router and the
// internet in both directions, like a broken uplink behind a modem that is
// still powered: the router's link stays up and the ISP still answers for
// its own addresses (ping to [ISPGateway](k) keeps working), but its own
// traffic to the internet (its resolver's, see [Lab.StartDNS]) is cut too.
// With IPv6 it cuts both address families.
func (l *Lab) CutUpstream(k int) error {
	return l.setChain(k, 0, "cut", "drop")
}

// RestoreUpstream undoes [Lab.CutUpstream] (for both address families).
func (l *Lab) RestoreUpstream(k int) error {
	return l.setChain(k, 0, "cut", "")
}

// CutUpstreamFamily is [Lab.CutUpstream] for one address family only
// (family 4 or 6), so a WAN can be up for one family and down for the
// other.
func (l *Lab) CutUpstreamFamily(k, family int) error {
	if family != 4 && family != 6 {
		return fmt.Errorf("lab: address family %d is neither 4 nor 6", family)
	}
	return l.setChain(k, family, "cut", "drop")
}

// RestoreUpstreamFamily undoes [Lab.CutUpstreamFamily] for family (4 or 6).
func (l *Lab) RestoreUpstreamFamily(k, family int) error {
	if family != 4 && family != 6 {
		return fmt.Errorf("lab: address family %d is neither 4 nor 6", family)
	}
	return l.setChain(k, family, "cut", "")
}

// SetLoss makes ISP k drop pct percent (0..100) of the packets it forwards,
// at random, in both directions (IPv4 and, with IPv6, IPv6). 0 removes the
// loss.
func (l *Lab) SetLoss(k, pct int) error {
	if err := l.checkISP(k); err != nil {
		return err
	}
	if pct < 0 || pct > 100 {
		return fmt.Errorf("lab: loss %d%% out of range 0..100", pct)
	}
	rule := ""
	switch {
	case pct == 100:
		// numgen values are 0..99, so "< 100" is not a valid expression.
		rule = "drop"
	case pct > 0:
		rule = fmt.Sprintf("numgen random mod 100 < %d drop", pct)
	}
	return l.setChain(k, 0, "loss", rule)
}

// SetLinkDown sets ISP k's end of the link to the router down (or back
// up), so the router sees carrier loss on its wan interface. For the
// point-to-point ISP ([Options].P2PISP) it switches the carrier of the
// router's tun device off (or on), which stays administratively up.
func (l *Lab) SetLinkDown(k int, down bool) error {
	if err := l.checkISP(k); err != nil {
		return err
	}
	if k == l.p2p {
		return l.setTunCarrier(!down)
	}
	if down {
		return l.ip(ISPNS(k), "link", "set", "dev", "cust", "down")
	}
	cmds := []string{"link set dev cust up"}
	if l.ipv6 {
		// Setting a link down removes its IPv6 addresses and the routes
		// through it; put the ISP's back.
		cmds = append(cmds, fmt.Sprintf("addr replace %s/64 dev cust nodad", ISPGateway6(k)))
		cmds = append(cmds, ispRoutes6(k)...)
	}
	return l.ipBatch(ISPNS(k), cmds)
}
