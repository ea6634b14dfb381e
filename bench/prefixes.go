package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"time"

	"github.com/multiwan/multiwan/internal/lab"
	"golang.org/x/sys/unix"
)

// Packets of the new-flow measurement: UDP to a port the internet
// namespace counts and drops before conntrack, so nothing answers and
// nothing there keeps state.
const (
	sinkPort    = 10000 // first of sinkPorts destination ports
	sinkPorts   = 50
	flowsPerRun = 150_000
	flowHosts   = 50 // the client's secondary addresses
)

// sendNewFlows sends n small UDP packets from the client namespace, each
// with another (source address, destination port, source port), so that
// each is the first packet of a new connection in the router and goes
// through the whole classifier. 50 destination ports leave masquerade
// enough ports for every flow. It uses a raw socket (IP_HDRINCL) so that no
// socket per flow is needed, and returns how long sending took.
func sendNewFlows(l *lab.Lab, n int) (time.Duration, error) {
	var fd int
	if err := inNS(l, lab.NSClient, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		return err
	}); err != nil {
		return 0, fmt.Errorf("raw socket in the client namespace: %w", err)
	}
	defer unix.Close(fd)
	dst := netip.MustParseAddr(lab.ServiceAddr).As4()
	var srcs [flowHosts][4]byte
	for i := range srcs {
		srcs[i] = netip.MustParseAddr(lab.ClientExtraAddr(i + 1)).As4()
	}
	const payload = 18 // 20 + 8 + 18 = 46 bytes of IP: a minimal Ethernet frame
	pkt := make([]byte, 20+8+payload)
	pkt[0] = 0x45                                         // IPv4, 20-byte header
	binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt))) // total length
	pkt[8] = 64                                           // TTL
	pkt[9] = unix.IPPROTO_UDP
	copy(pkt[16:20], dst[:])
	binary.BigEndian.PutUint16(pkt[24:], 8+payload) // UDP length; checksum 0 = none
	to := &unix.SockaddrInet4{Addr: dst}
	start := time.Now()
	for i := range n {
		copy(pkt[12:16], srcs[i%flowHosts][:])
		binary.BigEndian.PutUint16(pkt[22:], uint16(sinkPort+i/flowHosts%sinkPorts))
		binary.BigEndian.PutUint16(pkt[20:], uint16(1024+i/(flowHosts*sinkPorts)))
		if err := unix.Sendto(fd, pkt, 0, to); err != nil {
			if errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EAGAIN) {
				continue // a full queue drops the packet, as a NIC would
			}
			return 0, fmt.Errorf("sendto: %w", err)
		}
	}
	return time.Since(start), nil
}

var counterRe = regexp.MustCompile(`counter packets (\d+)`)

// sinkCount reads how many packets the internet namespace's sink counted.
func sinkCount(l *lab.Lab) (int, error) {
	out, err := run(l, lab.NSInternet, 10*time.Second, "nft", "list", "chain", "ip", "benchsink", "pre")
	if err != nil {
		return 0, err
	}
	m := counterRe.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no counter in:\n%s", out)
	}
	return strconv.Atoi(m[1])
}

// newFlowRate sends flowsPerRun new flows and returns the rate at which
// they arrived (packets per second of sending time) and the share lost.
// Conntrack state of the previous run is flushed first in the router and
// ISP1 (lab namespaces only), so every run starts from the same table.
func newFlowRate(l *lab.Lab) (pps, lost float64, err error) {
	for _, ns := range []string{lab.NSRouter, lab.ISPNS(1)} {
		if _, err := run(l, ns, 30*time.Second, "conntrack", "-F"); err != nil {
			return 0, 0, err
		}
	}
	before, err := sinkCount(l)
	if err != nil {
		return 0, 0, err
	}
	took, err := sendNewFlows(l, flowsPerRun)
	if err != nil {
		return 0, 0, err
	}
	var got int
	ctx := time.Now().Add(2 * time.Second)
	for {
		after, err := sinkCount(l)
		if err != nil {
			return 0, 0, err
		}
		if after-before >= flowsPerRun || time.Now().After(ctx) {
			got = after - before
			break
		}
		time.Sleep(50 * time.Millisecond) // late packets still in queues
	}
	return float64(got) / took.Seconds(), 1 - float64(got)/flowsPerRun, nil
}

// prefixCost compares the per-packet cost of the full ruleset when the
// steering rule's list has 10 prefixes and when it has 10,000, with packets
// whose destination is in neither list, so they traverse the rule. Two
// kinds of packets: small UDP packets that are each the first of a new
// connection (the only packets the classifier, and so the list, ever
// sees), and an established 64-byte UDP stream (iperf3 -u -l 64 -b 0),
// which the list never touches. -runs pairs, the list switched by a reload
// before each measurement, the order within a pair alternating; a pair's
// ratio compares runs made under the same conditions.
func prefixCost() error {
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
	list := listPath(dir)
	if err := writeList(list, 10); err != nil {
		return err
	}
	if _, err := run(l, lab.NSInternet, 10*time.Second, "nft", fmt.Sprintf(
		"add table ip benchsink; add chain ip benchsink pre { type filter hook prerouting priority raw - 10; policy accept; }; add rule ip benchsink pre udp dport %d-%d counter drop", sinkPort, sinkPort+sinkPorts-1)); err != nil {
		return err
	}
	d, err := startDaemon(l, fullConfig(list))
	if err != nil {
		return err
	}
	defer d.stop()
	if got := whoami(l, 2*time.Second); got != lab.ISPPublicAddr(1) {
		return fmt.Errorf("the service sees %q, want isp1", got)
	}

	type sample struct{ flow, lost, stream float64 }
	measure := func(n int) (sample, error) {
		if err := writeList(list, n); err != nil {
			return sample{}, err
		}
		if out, err := d.cli("reload"); err != nil {
			return sample{}, fmt.Errorf("reload with %d prefixes: %v %s", n, err, out)
		}
		if got, err := largestSet(l); err != nil {
			return sample{}, err
		} else if got < n || n == 10 && got > 100 {
			return sample{}, fmt.Errorf("after the reload to %d prefixes the largest set has %d elements", n, got)
		}
		pps, lost, err := newFlowRate(l)
		if err != nil {
			return sample{}, fmt.Errorf("%d prefixes, new flows: %w", n, err)
		}
		res, err := iperf(l, "-u", "-l", "64", "-b", "0", "-t", "3")
		if err != nil {
			return sample{}, fmt.Errorf("%d prefixes, iperf3 -u: %w", n, err)
		}
		s := res.End.Sum
		if s.Seconds <= 0 || s.Packets == 0 {
			return sample{}, fmt.Errorf("%d prefixes: iperf3 -u reported no packets", n)
		}
		return sample{pps / 1e3, lost * 100, float64(s.Packets-s.LostPackets) / s.Seconds / 1e3}, nil
	}

	var small, large []sample
	var flowCost, streamCost []float64
	for r := range *runs {
		sizes := []int{10, 10000}
		if r%2 == 1 {
			sizes = []int{10000, 10}
		}
		got := map[int]sample{}
		for _, n := range sizes {
			if got[n], err = measure(n); err != nil {
				return err
			}
		}
		small, large = append(small, got[10]), append(large, got[10000])
		// Cost per packet is 1/rate: 10,000 costs rate(10)/rate(10,000)
		// times what 10 costs.
		flowCost = append(flowCost, (got[10].flow/got[10000].flow-1)*100)
		streamCost = append(streamCost, (got[10].stream/got[10000].stream-1)*100)
	}
	col := func(ss []sample, f func(sample) float64) []float64 {
		var xs []float64
		for _, s := range ss {
			xs = append(xs, f(s))
		}
		return xs
	}
	flow := func(s sample) float64 { return s.flow }
	lost := func(s sample) float64 { return s.lost }
	stream := func(s sample) float64 { return s.stream }
	add("new connections through the full ruleset, 10 steered prefixes (64-byte UDP, each packet a new flow)",
		fmt.Sprintf("%.1f k pkt/s median (%s)", median(col(small, flow)), fmts(col(small, flow), "%.1f")), "—",
		fmt.Sprintf("lost %s %%", fmts(col(small, lost), "%.1f")))
	add("same, 10,000 steered prefixes",
		fmt.Sprintf("%.1f k pkt/s median (%s)", median(col(large, flow)), fmts(col(large, flow), "%.1f")), "—",
		fmt.Sprintf("lost %s %%", fmts(col(large, lost), "%.1f")))
	add("cost per new-connection packet, 10,000 vs 10 prefixes",
		fmt.Sprintf("%+.1f %% median of pairs (%s)", median(flowCost), fmts(flowCost, "%+.1f")), "≤ 5 % more",
		fmt.Sprintf("run-to-run spread %.0f %%; linear chains: ~25 ns per rule", spread(col(small, flow))))
	add("established 64-byte UDP stream (iperf3 -u -b 0), 10 prefixes",
		fmt.Sprintf("%.1f k pkt/s median (%s)", median(col(small, stream)), fmts(col(small, stream), "%.1f")), "—", "")
	add("same, 10,000 prefixes",
		fmt.Sprintf("%.1f k pkt/s median (%s)", median(col(large, stream)), fmts(col(large, stream), "%.1f")), "—", "")
	add("cost per established packet, 10,000 vs 10 prefixes",
		fmt.Sprintf("%+.1f %% median of pairs (%s)", median(streamCost), fmts(streamCost, "%+.1f")), "≤ 5 % more",
		fmt.Sprintf("run-to-run spread %.0f %%; such packets never reach the list (classified once per connection)", spread(col(small, stream))))
	return nil
}
