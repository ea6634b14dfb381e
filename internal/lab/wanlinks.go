package lab

import (
	"context"
	"errors"
	"fmt"
	"regexp"
)

// WANName returns the current name of the router's interface to ISP k:
// [WANIface](k) unless [Lab.RenameWANLink] renamed it.
func (l *Lab) WANName(k int) string {
	if k < 1 || k > l.isps {
		return ""
	}
	return l.wanName(k)
}

func (l *Lab) wanName(k int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.names[k]
}

// DeleteWANLink deletes the router's interface to ISP k (a veth, so the
// ISP's end goes with it), the way a USB modem is unplugged or a PPP
// session ends. With DHCP the router's client for it and the ISP's server
// are stopped first (their interface goes away), with RA the ISP's router
// advertisement daemon too. [Lab.RecreateWANLink] brings it back.
func (l *Lab) DeleteWANLink(k int) error {
	if err := l.checkISP(k); err != nil {
		return err
	}
	if err := l.notP2P(k, "DeleteWANLink"); err != nil {
		return err
	}
	l.dyn.Lock()
	defer l.dyn.Unlock()
	st := &l.wans[k]
	if st.deleted {
		return fmt.Errorf("lab: the link to ISP %d is already deleted", k)
	}
	name := l.wanName(k)
	if l.dhcp {
		l.stopClient(k)
		l.stopServer(k)
	}
	if l.ra {
		l.stopRAServer(k)
	}
	if err := l.ip(NSRouter, "link", "del", "dev", name); err != nil {
		return err
	}
	st.deleted = true
	l.log("lab: deleted %s", name)
	return nil
}

// RecreateWANLink creates the link between the router and ISP k again
// after [Lab.DeleteWANLink], with the same names and addressing: static
// addresses, or with DHCP the ISP's server and the router's client started
// again (the client asks for its previous address first); with RA the
// ISP's router advertisement daemon is started again and the router's new
// interface accepts advertisements. It returns when the link is up and the
// router has its address (with DHCP: its lease and default route; with RA:
// its IPv6 default route from an advertisement, via the new link-local
// address of the ISP's end), at most about 35 s.
func (l *Lab) RecreateWANLink(k int) error {
	if err := l.checkISP(k); err != nil {
		return err
	}
	if err := l.notP2P(k, "RecreateWANLink"); err != nil {
		return err
	}
	l.dyn.Lock()
	defer l.dyn.Unlock()
	st := &l.wans[k]
	if !st.deleted {
		return fmt.Errorf("lab: the link to ISP %d exists", k)
	}
	name := l.wanName(k)
	router, err := l.real(NSRouter)
	if err != nil {
		return err
	}
	if err := l.ip(ISPNS(k), "link", "add", "cust", "type", "veth", "peer", "name", name, "netns", router); err != nil {
		return err
	}
	st.deleted = false
	isp := append(l.custAddrs(k), "link set dev cust up")
	if l.ipv6 {
		isp = append(isp, ispRoutes6(k)...)
	}
	if err := l.ipBatch(ISPNS(k), isp); err != nil {
		return err
	}
	if l.ra {
		// Before the link comes up, so the router solicits at once.
		if err := l.sysctl(NSRouter, raSysctls(name)...); err != nil {
			return err
		}
	}
	if err := l.ipBatch(NSRouter, append(l.wanAddrs(k, name), "link set dev "+name+" up")); err != nil {
		return err
	}
	if err := l.waitWANUp(k, name); err != nil {
		return err
	}
	if l.ra {
		if err := l.startRAServer(k); err != nil {
			return err
		}
	}
	if l.dhcp {
		if err := l.startServer(k); err != nil {
			return err
		}
		if err := l.startClient(k); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), leaseWait)
		defer cancel()
		if err := l.waitLease(ctx, k); err != nil {
			return err
		}
	}
	if l.ra {
		ctx, cancel := context.WithTimeout(context.Background(), raWait)
		defer cancel()
		if err := l.waitRA(ctx, k); err != nil {
			return err
		}
	}
	l.log("lab: recreated %s", name)
	return nil
}

// waitWANUp waits until both ends of the link to ISP k are operationally
// up and, for a static lab, the router's address is there.
func (l *Lab) waitWANUp(k int, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), linkWait)
	defer cancel()
	if err := l.waitOperUp(ctx, ISPNS(k), "cust"); err != nil {
		return err
	}
	if err := l.waitOperUp(ctx, NSRouter, name); err != nil {
		return err
	}
	if l.dhcp {
		return nil
	}
	return WaitFor(ctx, func() error {
		addr, _, err := l.DHCPLease(k)
		if addr == WANAddr(k) {
			return nil
		}
		return fmt.Errorf("%s has address %q: %v", name, addr, err)
	})
}

// ifaceNameRE is what the lab accepts as an interface name (the kernel
// takes more, but these need no quoting anywhere).
var ifaceNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$`)

// RenameWANLink renames the router's interface to ISP k to newName (link
// down, rename, link up, as renaming needs), the way udev or a user
// renames an interface. Its addresses are kept (IPv6 is put back, since a
// link going down loses it); with DHCP the router's client is restarted on
// the new name and asks for the same lease again; with RA (the link going
// down loses the learned route) it waits for the IPv6 default route from
// an advertisement again. Afterwards lab methods use the new name for WAN
// k ([Lab.WANName]). It returns when the link is usable again.
func (l *Lab) RenameWANLink(k int, newName string) error {
	if err := l.checkISP(k); err != nil {
		return err
	}
	if err := l.notP2P(k, "RenameWANLink"); err != nil {
		return err
	}
	if !ifaceNameRE.MatchString(newName) {
		return fmt.Errorf("lab: bad interface name %q", newName)
	}
	l.dyn.Lock()
	defer l.dyn.Unlock()
	st := &l.wans[k]
	if st.deleted {
		return fmt.Errorf("lab: the link to ISP %d is deleted", k)
	}
	old := l.wanName(k)
	if newName == old {
		return nil
	}
	if l.dhcp {
		l.stopClient(k)
	}
	err := l.ipBatch(NSRouter, []string{
		"link set dev " + old + " down",
		"link set dev " + old + " name " + newName,
	})
	name := newName
	if err != nil {
		name = old // e.g. the name is taken: bring the old one back
	} else {
		l.mu.Lock()
		l.names[k] = newName
		l.mu.Unlock()
	}
	if uerr := l.ipBatch(NSRouter, append([]string{"link set dev " + name + " up"}, l.wanAddrs6(k, name)...)); uerr != nil {
		err = errors.Join(err, uerr)
	}
	if uerr := l.waitWANUp(k, name); uerr != nil {
		err = errors.Join(err, uerr)
	}
	if l.dhcp {
		if cerr := l.startClient(k); cerr != nil {
			return errors.Join(err, cerr)
		}
		ctx, cancel := context.WithTimeout(context.Background(), leaseWait)
		defer cancel()
		if lerr := l.waitLease(ctx, k); lerr != nil {
			err = errors.Join(err, lerr)
		}
	}
	if l.ra {
		ctx, cancel := context.WithTimeout(context.Background(), raWait)
		defer cancel()
		if rerr := l.waitRA(ctx, k); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}
	if err == nil {
		l.log("lab: renamed %s to %s", old, newName)
	}
	return err
}
