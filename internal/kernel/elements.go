package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/multiwan/multiwan/internal/plan"
)

// The fast path of a switch. A failover, a recovery or a `use` changes
// only the elements of the table's verdict maps (the planner keeps every
// decision that follows health in map elements: policies, bound sockets,
// DNS pinning, underlays). Such a change is written in-process over
// netlink, each changed map flushed and refilled, all in one nf_tables
// batch (one transaction): no nft process to start, no ruleset to read
// and parse first. Everything else (start, reload, repair, a change of
// shape) takes the nft path, whose input is the text `multiwan plan`
// prints.
//
// Only the key types those maps use are encoded here (addresses, drawn
// numbers, families, and verdicts); any other change takes the nft path,
// which is never wrong, only slower. The messages are built with
// netlink.AttributeEncoder and sent with plain system calls on one
// lasting socket: through a netlink.Conn (as github.com/google/nftables
// sends them) every acknowledgement costs ~100 µs of goroutine hand-offs,
// several times the kernel's own work for a switch.

// errNotEncodable says a set's elements are of a kind the fast path does
// not write; the nft path does.
var errNotEncodable = errors.New("not encodable in-process")

// elementChange is one map's new content, ready for netlink.
type elementChange struct {
	set      string
	elements []element
}

// element is one encoded element: its key, whether it ends an interval
// (and so has no verdict), and its verdict.
type element struct {
	key     []byte
	end     bool
	verdict int32 // NF_ACCEPT, NF_DROP, NFT_GOTO, ...
	chain   string
}

// elementChanges encodes the sets of to whose elements differ from from's,
// which must have the same shape (sameShape). It fails with
// errNotEncodable when one of them cannot be written in-process.
func elementChanges(from, to *plan.Table) ([]elementChange, error) {
	var out []elementChange
	for i, s := range to.Sets {
		if slices.Equal(from.Sets[i].Elements, s.Elements) {
			continue
		}
		els, err := encodeElements(s)
		if err != nil {
			return nil, fmt.Errorf("set %s: %w", s.Name, err)
		}
		out = append(out, elementChange{set: s.Name, elements: els})
	}
	return out, nil
}

// encodeElements encodes the elements of a verdict map keyed by an
// address, by a drawn number (intervals: numgen, jhash) or by the family.
func encodeElements(s plan.Set) ([]element, error) {
	if s.Map != "verdict" {
		return nil, errNotEncodable
	}
	interval := slices.Contains(s.Flags, "interval")
	var out []element
	for _, e := range s.Elements {
		code, chain, err := verdict(e.Value)
		if err != nil {
			return nil, err
		}
		el := element{verdict: code, chain: chain}
		switch {
		case strings.HasPrefix(s.TypeOf, "numgen ") && interval:
			// Interval keys are stored big-endian, each range as its
			// start and, flagged, the number after its end (as nft
			// writes them).
			lo, hi, err := numRange(e.Key)
			if err != nil {
				return nil, err
			}
			el.key = binary.BigEndian.AppendUint32(nil, lo)
			out = append(out, el,
				element{key: binary.BigEndian.AppendUint32(nil, hi+1), end: true})
		case s.TypeOf == "meta nfproto" && !interval:
			proto := map[string]byte{"ipv4": unix.NFPROTO_IPV4, "ipv6": unix.NFPROTO_IPV6}
			b, ok := proto[e.Key]
			if !ok {
				return nil, fmt.Errorf("family %q: %w", e.Key, errNotEncodable)
			}
			el.key = []byte{b}
			out = append(out, el)
		case (s.Type == "ipv4_addr" || s.Type == "ipv6_addr") && !interval:
			a, err := netip.ParseAddr(e.Key)
			if err != nil || a.Is4() != (s.Type == "ipv4_addr") {
				return nil, fmt.Errorf("address %q: %w", e.Key, errNotEncodable)
			}
			el.key = a.AsSlice()
			out = append(out, el)
		default:
			return nil, errNotEncodable
		}
	}
	return out, nil
}

// numRange parses "3" or "3-7".
func numRange(key string) (lo, hi uint32, err error) {
	a, b, ok := strings.Cut(key, "-")
	if !ok {
		b = a
	}
	l, err1 := strconv.ParseUint(a, 10, 32)
	h, err2 := strconv.ParseUint(b, 10, 32)
	if err1 != nil || err2 != nil || h < l || h == 1<<32-1 {
		return 0, 0, fmt.Errorf("range %q: %w", key, errNotEncodable)
	}
	return uint32(l), uint32(h), nil
}

// verdict parses a map element's value.
func verdict(v string) (code int32, chain string, err error) {
	word, chain, _ := strings.Cut(v, " ")
	// NF_DROP and NF_ACCEPT (linux/netfilter.h) are 0 and 1.
	codes := map[string]int32{
		"goto": unix.NFT_GOTO, "jump": unix.NFT_JUMP,
		"return": unix.NFT_RETURN, "accept": 1, "drop": 0,
	}
	code, ok := codes[word]
	if !ok || (chain == "") != (word != "goto" && word != "jump") {
		return 0, "", fmt.Errorf("verdict %q: %w", v, errNotEncodable)
	}
	return code, chain, nil
}

// elementWriter writes element changes of one table over a lasting
// netfilter netlink socket (opened on first use, and anew after a
// failure). Not safe for concurrent use; its owner is the goroutine that
// applies.
type elementWriter struct {
	table string
	sock  nfSocket
}

// write replaces the elements of every changed map in one nf_tables
// batch: all of them change, or none. It returns the ruleset generation
// the commit made, as the kernel echoed it (0 when it did not).
func (w *elementWriter) write(changes []elementChange) (gen uint32, err error) {
	msgs, err := w.batch(changes)
	if err != nil {
		return 0, err
	}
	gen, err = w.sock.transact(msgs)
	if err != nil {
		w.sock.close()
		return 0, err
	}
	return gen, nil
}

// batch builds the batch: for each map a flush (DELSETELEM without
// elements) and its new elements, between BATCH_BEGIN and BATCH_END.
func (w *elementWriter) batch(changes []elementChange) ([]netlink.Message, error) {
	nft := func(typ uint16, flags netlink.HeaderFlags, attrs []byte) netlink.Message {
		return netlink.Message{
			Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | typ), Flags: flags},
			Data:   append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...),
		}
	}
	// BATCH_BEGIN and BATCH_END carry the subsystem (big-endian) in
	// their nfgenmsg.
	edge := func(typ uint16) netlink.Message {
		return netlink.Message{
			Header: netlink.Header{Type: netlink.HeaderType(typ), Flags: netlink.Request},
			Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, unix.NFNL_SUBSYS_NFTABLES},
		}
	}
	// The batch opens with an "add table" of the table, which exists: a
	// no-op that changes nothing and notifies nothing. It carries Echo
	// because the kernel sends the commit's NEWGEN notification to the
	// sender too when the batch's first message asks for an echo: so the
	// generation of this very commit arrives with the answers, and its
	// notification is known to be ours without reading the generation
	// before and after. (Were the table gone, the batch would fail on
	// its maps and the add be undone with the rest.)
	table := netlink.NewAttributeEncoder()
	table.String(unix.NFTA_TABLE_NAME, w.table)
	attrs, err := table.Encode()
	if err != nil {
		return nil, err
	}
	msgs := []netlink.Message{edge(unix.NFNL_MSG_BATCH_BEGIN),
		nft(unix.NFT_MSG_NEWTABLE, netlink.Request|netlink.Acknowledge|netlink.Echo, attrs)}
	for _, c := range changes {
		ae := netlink.NewAttributeEncoder()
		ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, w.table)
		ae.String(unix.NFTA_SET_ELEM_LIST_SET, c.set)
		attrs, err := ae.Encode()
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, nft(unix.NFT_MSG_DELSETELEM, netlink.Request|netlink.Acknowledge, attrs))
		if len(c.elements) == 0 {
			continue
		}
		ae = netlink.NewAttributeEncoder()
		ae.ByteOrder = binary.BigEndian // nf_tables integers are big-endian
		ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, w.table)
		ae.String(unix.NFTA_SET_ELEM_LIST_SET, c.set)
		ae.Nested(unix.NFTA_SET_ELEM_LIST_ELEMENTS, func(list *netlink.AttributeEncoder) error {
			for _, e := range c.elements {
				list.Nested(unix.NFTA_LIST_ELEM, func(el *netlink.AttributeEncoder) error {
					el.Nested(unix.NFTA_SET_ELEM_KEY, func(k *netlink.AttributeEncoder) error {
						k.Bytes(unix.NFTA_DATA_VALUE, e.key)
						return nil
					})
					if e.end {
						el.Uint32(unix.NFTA_SET_ELEM_FLAGS, unix.NFT_SET_ELEM_INTERVAL_END)
						return nil
					}
					el.Nested(unix.NFTA_SET_ELEM_DATA, func(d *netlink.AttributeEncoder) error {
						d.Nested(unix.NFTA_DATA_VERDICT, func(v *netlink.AttributeEncoder) error {
							v.Int32(unix.NFTA_VERDICT_CODE, e.verdict)
							if e.chain != "" {
								v.String(unix.NFTA_VERDICT_CHAIN, e.chain)
							}
							return nil
						})
						return nil
					})
					return nil
				})
			}
			return nil
		})
		attrs, err = ae.Encode()
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, nft(unix.NFT_MSG_NEWSETELEM, netlink.Request|netlink.Acknowledge|netlink.Create, attrs))
	}
	return append(msgs, edge(unix.NFNL_MSG_BATCH_END)), nil
}

// nfSocket is a netfilter netlink socket used with plain system calls:
// one send of a whole batch, then the acknowledgements, each receive
// bounded by nfTimeout.
type nfSocket struct {
	fd  int
	ok  bool // fd is open
	seq uint32
	buf []byte
}

// nfTimeout bounds a receive: the kernel answers within the send, so a
// longer wait means something is badly wrong.
const nfTimeout = 2 * time.Second

func (s *nfSocket) open() error {
	if s.ok {
		return nil
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return fmt.Errorf("open a netfilter netlink socket: %w", err)
	}
	tv := unix.NsecToTimeval(nfTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return err
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return err
	}
	s.fd, s.ok = fd, true
	if s.buf == nil {
		s.buf = make([]byte, 64<<10)
	}
	return nil
}

// close closes the socket, if open: whatever it still holds (answers of
// a failed exchange) must not meet the next one.
func (s *nfSocket) close() {
	if s.ok {
		unix.Close(s.fd)
		s.ok = false
	}
}

// transact sends msgs in one sendto, numbering them, and reads until
// every message that asked for an acknowledgement got its answer. It
// returns the first error the kernel reported (the batch is then not
// committed: nf_tables applies all of it or nothing), and the generation
// of the commit when the kernel echoed its NEWGEN notification (it does
// before the acknowledgements, when BATCH_BEGIN asks for an echo).
func (s *nfSocket) transact(msgs []netlink.Message) (gen uint32, err error) {
	if err := s.open(); err != nil {
		return 0, err
	}
	var out []byte
	waiting := map[uint32]bool{}
	for i := range msgs {
		s.seq++
		msgs[i].Header.Sequence = s.seq
		msgs[i].Header.Length = uint32(unix.NLMSG_HDRLEN + len(msgs[i].Data)) // the data is 4-aligned
		b, err := msgs[i].MarshalBinary()
		if err != nil {
			return 0, err
		}
		out = append(out, b...)
		if msgs[i].Header.Flags&netlink.Acknowledge != 0 {
			waiting[s.seq] = true
		}
	}
	first, last := msgs[0].Header.Sequence, s.seq
	if err := unix.Sendto(s.fd, out, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("send: %w", err)
	}
	var failed error
	for len(waiting) > 0 {
		n, _, err := unix.Recvfrom(s.fd, s.buf, 0)
		if err != nil {
			return 0, errors.Join(failed, fmt.Errorf("receive: %w", err))
		}
		answers, err := syscall.ParseNetlinkMessage(s.buf[:n])
		if err != nil {
			return 0, errors.Join(failed, err)
		}
		for _, m := range answers {
			if m.Header.Seq-first > last-first { // outside first..last, also across a wrap
				continue // a stale answer of an earlier, failed exchange
			}
			if m.Header.Type != unix.NLMSG_ERROR {
				if ev, ok, err := decodeNFT(m.Header.Type, m.Data); err == nil && ok && ev.gen {
					gen = ev.genID
				}
				continue
			}
			delete(waiting, m.Header.Seq)
			if len(m.Data) < 4 {
				continue
			}
			if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno < 0 && failed == nil {
				failed = unix.Errno(-errno)
			}
		}
	}
	if failed != nil {
		return 0, failed
	}
	return gen, nil
}
