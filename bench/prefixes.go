package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"time"

	"github.com/multiwan/multiwan/internal/lab"
	"golang.org/x/sys/unix"
)

// Packets of the new-flow measurement: UDP to a port the internet
// namespace counts and drops before conntrack, so nothing answers and
// nothing there keeps state.
const (
	sinkPort      = 10000 // first of sinkPorts destination ports
	sinkPorts     = 50
	flowsPerRun   = 40_000
	streamPackets = 80_000
	cycles        = 2  // 10, 10,000, 10,000, 10 sequences per run
	flowHosts     = 50 // the client's secondary addresses
)

// sendUDP sends n small UDP packets from the client namespace as fast as
// it can and returns how long sending took. With newFlows each packet has
// another (source address, destination port, source port), so that each is
// the first packet of a new connection in the router and goes through the
// whole classifier; 50 destination ports leave masquerade enough ports for
// every flow. Without, all packets belong to one flow. It uses a raw socket
// (IP_HDRINCL), so no socket per flow is needed and both kinds of packets
// cost the sender the same.
func sendUDP(l *lab.Lab, n int, newFlows bool) (wall, cpu time.Duration, err error) {
	var fd int
	if err := l.InNS(lab.NSClient, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		return err
	}); err != nil {
		return 0, 0, fmt.Errorf("raw socket in the client namespace: %w", err)
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
	// The thread's CPU time counts the sending and, since the packets are
	// forwarded in softirq on the sending CPU, most of the forwarding;
	// unlike the wall time it leaves out time the machine gives others.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0 := threadCPU()
	start := time.Now()
	for i := range n {
		if !newFlows {
			i = 0
		}
		copy(pkt[12:16], srcs[i%flowHosts][:])
		binary.BigEndian.PutUint16(pkt[22:], uint16(sinkPort+i/flowHosts%sinkPorts))
		binary.BigEndian.PutUint16(pkt[20:], uint16(1024+i/(flowHosts*sinkPorts)))
		if err := unix.Sendto(fd, pkt, 0, to); err != nil {
			if errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EAGAIN) {
				continue // a full queue drops the packet, as a NIC would
			}
			return 0, 0, fmt.Errorf("sendto: %w", err)
		}
	}
	return time.Since(start), threadCPU() - cpu0, nil
}

// threadCPU is the calling thread's user and system CPU time.
func threadCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
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

// udpResult is one run of sendUDP as the sink saw it.
type udpResult struct {
	pps  float64 // packets that arrived per second of sending time
	cpu  float64 // the sending thread's CPU time per packet sent, µs
	lost float64 // share of packets that did not arrive
}

// udpRate sends n packets (sendUDP) and counts them at the sink.
// Conntrack state of the previous run is flushed first in the router and
// ISP1 (lab namespaces only), so every run starts from the same table.
func udpRate(l *lab.Lab, n int, newFlows bool) (udpResult, error) {
	for _, ns := range []string{lab.NSRouter, lab.ISPNS(1)} {
		if _, err := run(l, ns, 30*time.Second, "conntrack", "-F"); err != nil {
			return udpResult{}, err
		}
	}
	before, err := sinkCount(l)
	if err != nil {
		return udpResult{}, err
	}
	took, cpu, err := sendUDP(l, n, newFlows)
	if err != nil {
		return udpResult{}, err
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		after, err := sinkCount(l)
		if err != nil {
			return udpResult{}, err
		}
		if got := after - before; got >= n || time.Now().After(deadline) {
			return udpResult{
				pps:  float64(got) / took.Seconds(),
				cpu:  float64(cpu.Nanoseconds()) / float64(n) / 1e3,
				lost: 1 - float64(got)/float64(n),
			}, nil
		}
		time.Sleep(50 * time.Millisecond) // late packets still in queues
	}
}

// prefixCost compares the per-packet cost of the full ruleset when the
// steering rule's list has 10 prefixes and when it has 10,000, with packets
// whose destination is in neither list, so they traverse the rule. Two
// kinds of packets: small UDP packets that are each the first of a new
// connection (the only packets the classifier, and so the list, ever
// sees), and the same packets all in one established flow, which the list
// never touches. The cost is the sending thread's CPU time per packet,
// which includes the forwarding done in softirq on its CPU and leaves out
// the time the shared machine gives to others; the wall-clock rate is
// shown beside it. -runs runs of each size: each run measures the two
// sizes in the order 10, 10,000, 10,000, 10, twice (the list switched by a
// reload), so that a steady drift of the machine cancels out of the run's
// ratio. The established flow is the control: the list cannot change its
// cost, so its figure shows how precise the comparison is on this machine.
func prefixCost() error {
	l, list, cleanup, err := sinkLab()
	if err != nil {
		return err
	}
	defer cleanup()
	d, err := startDaemon(l, fullConfig(list))
	if err != nil {
		return err
	}
	defer d.stop()
	if got := whoami(l, 2*time.Second); got != lab.ISPPublicAddr(1) {
		return fmt.Errorf("the service sees %q, want isp1", got)
	}

	type sample struct{ flow, stream udpResult }
	loaded := 10
	measure := func(n int) (sample, error) {
		if n != loaded {
			if err := writeList(list, n); err != nil {
				return sample{}, err
			}
			if out, err := d.cli("reload"); err != nil {
				return sample{}, fmt.Errorf("reload with %d prefixes: %v %s", n, err, out)
			}
			loaded = n
		}
		if got, err := largestSet(l); err != nil {
			return sample{}, err
		} else if got < n || n == 10 && got > 100 {
			return sample{}, fmt.Errorf("with %d prefixes loaded the largest set has %d elements", n, got)
		}
		flow, err := udpRate(l, flowsPerRun, true)
		if err != nil {
			return sample{}, fmt.Errorf("%d prefixes, new flows: %w", n, err)
		}
		stream, err := udpRate(l, streamPackets, false)
		if err != nil {
			return sample{}, fmt.Errorf("%d prefixes, one flow: %w", n, err)
		}
		return sample{flow, stream}, nil
	}
	mean := func(ss []sample) sample {
		var m sample
		k := float64(len(ss))
		for _, s := range ss {
			m.flow.pps += s.flow.pps / k
			m.flow.cpu += s.flow.cpu / k
			m.flow.lost += s.flow.lost / k
			m.stream.pps += s.stream.pps / k
			m.stream.cpu += s.stream.cpu / k
			m.stream.lost += s.stream.lost / k
		}
		return m
	}

	var small, large []sample
	var flowCost, flowCostWall, streamCost, streamCostWall []float64
	for range *runs {
		got := map[int][]sample{}
		for range cycles {
			for _, n := range []int{10, 10000, 10000, 10} {
				s, err := measure(n)
				if err != nil {
					return err
				}
				got[n] = append(got[n], s)
			}
		}
		a, b := mean(got[10]), mean(got[10000])
		small, large = append(small, a), append(large, b)
		flowCost = append(flowCost, (b.flow.cpu/a.flow.cpu-1)*100)
		flowCostWall = append(flowCostWall, (a.flow.pps/b.flow.pps-1)*100)
		streamCost = append(streamCost, (b.stream.cpu/a.stream.cpu-1)*100)
		streamCostWall = append(streamCostWall, (a.stream.pps/b.stream.pps-1)*100)
	}
	col := func(ss []sample, f func(sample) float64) []float64 {
		var xs []float64
		for _, s := range ss {
			xs = append(xs, f(s))
		}
		return xs
	}
	row := func(what string, ss []sample, r func(sample) udpResult) {
		cpu := col(ss, func(s sample) float64 { return r(s).cpu })
		pps := col(ss, func(s sample) float64 { return r(s).pps / 1e3 })
		lost := col(ss, func(s sample) float64 { return r(s).lost * 100 })
		add(what, fmt.Sprintf("%.2f µs CPU/pkt median (%s)", median(cpu), fmts(cpu, "%.2f")), "—",
			fmt.Sprintf("%.1f k pkt/s median (%s); lost %s %%", median(pps), fmts(pps, "%.1f"), fmts(lost, "%.1f")))
	}
	flow := func(s sample) udpResult { return s.flow }
	stream := func(s sample) udpResult { return s.stream }
	row("new connections through the full ruleset, 10 steered prefixes (64-byte UDP, each packet a new flow)", small, flow)
	row("same, 10,000 steered prefixes", large, flow)
	add("cost per new-connection packet, 10,000 vs 10 prefixes",
		fmt.Sprintf("%+.1f %% median of runs (%s)", median(flowCost), fmts(flowCost, "%+.1f")), "≤ 5 % more",
		fmt.Sprintf("by wall-clock rate %+.1f %% (%s); linear chains: ~25 ns per rule", median(flowCostWall), fmts(flowCostWall, "%+.1f")))
	row("control: one established flow, same packets, 10 prefixes", small, stream)
	row("same, 10,000 prefixes", large, stream)
	add("cost per established packet, 10,000 vs 10 prefixes",
		fmt.Sprintf("%+.1f %% median of runs (%s)", median(streamCost), fmts(streamCost, "%+.1f")), "≤ 5 % more",
		fmt.Sprintf("by wall-clock rate %+.1f %% (%s); these packets never reach the list: the measurement's noise", median(streamCostWall), fmts(streamCostWall, "%+.1f")))
	return nil
}

// sinkLab is the lab of the per-packet measurements: two ISPs, a list file
// of 10 prefixes in a temporary directory, and a sink in the internet
// namespace that counts and drops the measured UDP. cleanup removes them.
func sinkLab() (l *lab.Lab, list string, cleanup func(), err error) {
	l, err = lab.New(lab.Options{ISPs: 2})
	if err != nil {
		return nil, "", nil, err
	}
	dir, err := tempDir()
	if err != nil {
		l.Close()
		return nil, "", nil, err
	}
	cleanup = func() { l.Close(); os.RemoveAll(dir) }
	list = listPath(dir)
	if err := writeList(list, 10); err != nil {
		cleanup()
		return nil, "", nil, err
	}
	if _, err := run(l, lab.NSInternet, 10*time.Second, "nft", fmt.Sprintf(
		"add table ip benchsink; add chain ip benchsink pre { type filter hook prerouting priority raw - 10; policy accept; }; add rule ip benchsink pre udp dport %d-%d counter drop", sinkPort, sinkPort+sinkPorts-1)); err != nil {
		cleanup()
		return nil, "", nil, err
	}
	return l, list, cleanup, nil
}
