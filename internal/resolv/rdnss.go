package resolv

// Resolvers from IPv6 router advertisements (RDNSS, RFC 8106). The kernel
// hands the options of an accepted advertisement it does not use itself
// to user space on rtnetlink group RTNLGRP_ND_USEROPT, one RTM_NEWNDUSEROPT
// message per option: how rdnssd and systemd-networkd learn them.
// vishvananda/netlink has no subscription for it, so the message is read
// with mdlayher/netlink and decoded here, bounded.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// RDNSS is one recursive DNS server option of a router advertisement.
type RDNSS struct {
	Ifindex int
	// Router is the advertisement's source (NDUSEROPT_SRCADDR), when given.
	Router netip.Addr
	// Lifetime is how long the servers may be used; 0 withdraws them.
	// Infinite is true for 0xffffffff.
	Lifetime time.Duration
	Infinite bool
	Servers  []netip.Addr
}

const (
	ndUseroptHdrLen  = 16  // struct nduseroptmsg
	ndOptRDNSS       = 25  // ND option type of RDNSS
	icmp6RouterAdv   = 134 // ICMPv6 type of a router advertisement
	ndUseroptSrcAddr = 1   // NDUSEROPT_SRCADDR
	// maxNDOptions bounds the options read from one message; the kernel
	// sends one a message.
	maxNDOptions = 16
	// maxRDNSSAddrs bounds the addresses read from one option (its length
	// field allows 127).
	maxRDNSSAddrs = 16
)

var errNotRDNSS = errors.New("not a router advertisement's RDNSS option")

// ParseNDUserOpt decodes the data of an RTM_NEWNDUSEROPT message: its
// header, the ND options it carries and the source address attribute. It
// returns the RDNSS options found (none is errNotRDNSS), and an error for a
// message that does not hold together. Integers of the header and the
// attributes are in host byte order, those of the ND option in network
// byte order.
func ParseNDUserOpt(data []byte) ([]RDNSS, error) {
	if len(data) < ndUseroptHdrLen {
		return nil, fmt.Errorf("nd user option message of %d bytes, shorter than its header", len(data))
	}
	family := data[0]
	optsLen := int(binary.NativeEndian.Uint16(data[2:]))
	ifindex := int(int32(binary.NativeEndian.Uint32(data[4:])))
	icmpType := data[8]
	if family != unix.AF_INET6 || icmpType != icmp6RouterAdv {
		return nil, errNotRDNSS
	}
	if optsLen > len(data)-ndUseroptHdrLen {
		return nil, fmt.Errorf("nd user options of %d bytes in a message of %d", optsLen, len(data))
	}
	if ifindex <= 0 {
		return nil, fmt.Errorf("nd user option for interface index %d", ifindex)
	}
	opts := data[ndUseroptHdrLen : ndUseroptHdrLen+optsLen]
	// Attributes follow the options, aligned to 4 bytes.
	var router netip.Addr
	attrs := data[min(ndUseroptHdrLen+(optsLen+3)&^3, len(data)):]
	for range maxNDOptions {
		if len(attrs) < 4 {
			break
		}
		l := int(binary.NativeEndian.Uint16(attrs))
		t := binary.NativeEndian.Uint16(attrs[2:]) & 0x3fff
		if l < 4 || l > len(attrs) {
			return nil, fmt.Errorf("nd user option attribute %d: length %d in %d bytes", t, l, len(attrs))
		}
		if t == ndUseroptSrcAddr && l == 4+16 {
			router = netip.AddrFrom16([16]byte(attrs[4:20]))
		}
		attrs = attrs[min((l+3)&^3, len(attrs)):]
	}
	var out []RDNSS
	for range maxNDOptions {
		if len(opts) < 2 {
			break
		}
		typ, n := opts[0], int(opts[1])*8
		if n == 0 || n > len(opts) {
			return nil, fmt.Errorf("nd option %d: length %d in %d bytes", typ, n, len(opts))
		}
		if typ == ndOptRDNSS {
			// type, length, reserved (2), lifetime (4), then addresses:
			// a valid option is 8 + 16k bytes, k ≥ 1.
			if n < 24 || (n-8)%16 != 0 {
				return nil, fmt.Errorf("RDNSS option of %d bytes", n)
			}
			r := RDNSS{Ifindex: ifindex, Router: router}
			lt := binary.BigEndian.Uint32(opts[4:8])
			r.Infinite = lt == 0xffffffff
			r.Lifetime = time.Duration(lt) * time.Second
			for i := 8; i+16 <= n && len(r.Servers) < maxRDNSSAddrs; i += 16 {
				r.Servers = append(r.Servers, netip.AddrFrom16([16]byte(opts[i:i+16])))
			}
			out = append(out, r)
		}
		opts = opts[n:]
	}
	if len(out) == 0 {
		return nil, errNotRDNSS
	}
	return out, nil
}

// RDNSSTable keeps the resolvers router advertisements gave, per
// interface, until their lifetime ends. Not safe for concurrent use: its
// owner (the daemon's DNS watcher) is one goroutine.
type RDNSSTable struct {
	byIf map[int][]rdnssEntry
}

type rdnssEntry struct {
	addr    netip.Addr
	expires time.Time // zero: never
}

// maxRDNSSPerIf bounds what one interface's advertisements can make the
// table hold: a hostile link announcing ever new servers.
const maxRDNSSPerIf = 16

// Add records an option received at now: its servers are valid for its
// lifetime (a lifetime of 0 withdraws them). A server already known keeps
// its place and gets the new lifetime.
func (t *RDNSSTable) Add(r RDNSS, now time.Time) {
	if t.byIf == nil {
		t.byIf = map[int][]rdnssEntry{}
	}
	list := t.byIf[r.Ifindex]
	for _, a := range r.Servers {
		a = a.Unmap()
		i := slices.IndexFunc(list, func(e rdnssEntry) bool { return e.addr == a })
		if r.Lifetime == 0 && !r.Infinite {
			if i >= 0 {
				list = slices.Delete(list, i, i+1)
			}
			continue
		}
		var exp time.Time
		if !r.Infinite {
			exp = now.Add(r.Lifetime)
		}
		switch {
		case i >= 0:
			list[i].expires = exp
		case len(list) < maxRDNSSPerIf:
			list = append(list, rdnssEntry{addr: a, expires: exp})
		}
	}
	if len(list) == 0 {
		delete(t.byIf, r.Ifindex)
	} else {
		t.byIf[r.Ifindex] = list
	}
}

// Servers returns the servers of interface ifindex still valid at now, in
// the order first heard, and forgets the expired ones.
func (t *RDNSSTable) Servers(ifindex int, now time.Time) []netip.Addr {
	list := t.byIf[ifindex]
	list = slices.DeleteFunc(list, func(e rdnssEntry) bool { return !e.expires.IsZero() && !now.Before(e.expires) })
	if len(list) == 0 {
		delete(t.byIf, ifindex)
		return nil
	}
	t.byIf[ifindex] = list
	out := make([]netip.Addr, len(list))
	for i, e := range list {
		out[i] = e.addr
	}
	return out
}

// NextExpiry is when the next server expires, zero when none will.
func (t *RDNSSTable) NextExpiry() time.Time {
	var next time.Time
	for _, list := range t.byIf {
		for _, e := range list {
			if !e.expires.IsZero() && (next.IsZero() || e.expires.Before(next)) {
				next = e.expires
			}
		}
	}
	return next
}

// Forget drops every interface but those in keep (links that went away).
func (t *RDNSSTable) Forget(keep map[int]bool) {
	for i := range t.byIf {
		if !keep[i] {
			delete(t.byIf, i)
		}
	}
}
