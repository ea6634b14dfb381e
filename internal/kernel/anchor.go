package kernel

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Anchor is a tiny nft table owned by the daemon's own netlink socket
// (NFT_TABLE_F_OWNER, Linux 5.12+). The kernel lets only the owner change
// or delete an owned table, skips it on a foreign `nft flush ruleset`, and
// deletes it itself when the owner's socket closes, so it never outlives
// the daemon — not even after kill -9.
//
// It holds one base chain of type nat with one rule that only loads the
// connection's state. The kernel tracks connections in a namespace only
// while something uses conntrack (nft ct expressions, NAT), and keeps its
// NAT hooks only while a nat chain exists: the rule keeps the first, the
// chain the second. Without them, a `flush ruleset` by another program
// (with no conntrack or nat rules of its own) would switch both off until
// multiwan put its table back, and the next reply of every established
// masqueraded connection would reach the router untranslated and be
// answered with a reset (seen in the lab: a download cut by one RST). With
// them, the repair gap costs those connections a few packets at most. The
// chain sees only the first packet of each connection, so it costs
// nothing per packet.
//
// The main table cannot be owned the same way: it is written by the nft
// program, a different socket every time. google/nftables (v0.3.0) drops
// table flags when it adds a table, hence the four messages built here.
type Anchor struct {
	conn  *netlink.Conn
	table string
}

// anchorTimeout bounds the creation's exchange with the kernel.
const anchorTimeout = 2 * time.Second

// OpenAnchor creates the owned table `inet <table>` in the calling
// thread's network namespace and keeps the socket that owns it open until
// Close. It fails on kernels without table ownership (before 5.12), or when
// the table exists (another daemon owns it).
func OpenAnchor(table string) (*Anchor, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("anchor table: open a netfilter netlink socket: %w", err)
	}
	if err := c.SetDeadline(time.Now().Add(anchorTimeout)); err != nil {
		c.Close()
		return nil, fmt.Errorf("anchor table: %w", err)
	}
	name := append([]byte(table), 0)
	hook, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_HOOK_HOOKNUM, Data: be32(unix.NF_INET_POST_ROUTING)},
		// srcnat + 1: after every masquerade, where an empty chain
		// changes nothing.
		{Type: unix.NFTA_HOOK_PRIORITY, Data: be32(101)},
	})
	if err != nil {
		c.Close()
		return nil, err
	}
	batch := []netlink.Message{
		nfMsg(unix.NFNL_MSG_BATCH_BEGIN, netlink.Request, unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES, nil),
		nfMsg(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWTABLE, netlink.Request|netlink.Create|netlink.Excl|netlink.Acknowledge,
			unix.NFPROTO_INET, 0, []netlink.Attribute{
				{Type: unix.NFTA_TABLE_NAME, Data: name},
				{Type: unix.NFTA_TABLE_FLAGS, Data: be32(tableFlagOwner)},
			}),
		nfMsg(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWCHAIN, netlink.Request|netlink.Create|netlink.Acknowledge,
			unix.NFPROTO_INET, 0, []netlink.Attribute{
				{Type: unix.NFTA_CHAIN_TABLE, Data: name},
				{Type: unix.NFTA_CHAIN_NAME, Data: append([]byte("keep_nat"), 0)},
				{Type: unix.NLA_F_NESTED | unix.NFTA_CHAIN_HOOK, Data: hook},
				{Type: unix.NFTA_CHAIN_TYPE, Data: append([]byte("nat"), 0)},
			}),
		nfMsg(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWRULE, netlink.Request|netlink.Create|netlink.Acknowledge,
			unix.NFPROTO_INET, 0, []netlink.Attribute{
				{Type: unix.NFTA_RULE_TABLE, Data: name},
				{Type: unix.NFTA_RULE_CHAIN, Data: append([]byte("keep_nat"), 0)},
				{Type: unix.NLA_F_NESTED | unix.NFTA_RULE_EXPRESSIONS, Data: ctStateLoad()},
			}),
		nfMsg(unix.NFNL_MSG_BATCH_END, netlink.Request, unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES, nil),
	}
	if _, err := c.SendMessages(batch); err != nil {
		c.Close()
		return nil, fmt.Errorf("anchor table: send: %w", err)
	}
	// One acknowledgement per acknowledged message; an error arrives in
	// place of the first that failed.
	for range 3 {
		if _, err := c.Receive(); err != nil {
			c.Close()
			return nil, fmt.Errorf("anchor table inet %s (needs Linux 5.12 or later for owned tables): %w", table, err)
		}
	}
	if err := c.SetDeadline(time.Time{}); err != nil {
		c.Close()
		return nil, fmt.Errorf("anchor table: %w", err)
	}
	return &Anchor{conn: c, table: table}, nil
}

// ctStateLoad is the expression list of a rule that loads the
// connection's state into register 1 and does nothing with it: the
// smallest rule that holds a conntrack reference.
func ctStateLoad() []byte {
	data, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_CT_KEY, Data: be32(unix.NFT_CT_STATE)},
		{Type: unix.NFTA_CT_DREG, Data: be32(unix.NFT_REG_1)},
	})
	if err == nil {
		data, err = netlink.MarshalAttributes([]netlink.Attribute{
			{Type: unix.NFTA_EXPR_NAME, Data: append([]byte("ct"), 0)},
			{Type: unix.NLA_F_NESTED | unix.NFTA_EXPR_DATA, Data: data},
		})
	}
	if err == nil {
		data, err = netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.NLA_F_NESTED | unix.NFTA_LIST_ELEM, Data: data}})
	}
	if err != nil {
		panic(fmt.Sprintf("nfnetlink attributes: %v", err)) // constant input
	}
	return data
}

// tableFlagOwner is NFT_TABLE_F_OWNER (not in golang.org/x/sys/unix).
const tableFlagOwner = 0x2

// Close closes the owning socket; the kernel deletes the table.
func (a *Anchor) Close() error { return a.conn.Close() }

// Table names the anchor table.
func (a *Anchor) Table() string { return a.table }

// nfMsg builds one nfnetlink message: the nfgenmsg header (family,
// version 0, resource id) and the attributes.
func nfMsg(typ uint16, flags netlink.HeaderFlags, family uint8, resID uint16, attrs []netlink.Attribute) netlink.Message {
	data := []byte{family, unix.NFNETLINK_V0, byte(resID >> 8), byte(resID)}
	if len(attrs) > 0 {
		b, err := netlink.MarshalAttributes(attrs)
		if err != nil {
			panic(fmt.Sprintf("nfnetlink attributes: %v", err)) // only with attributes built here
		}
		data = append(data, b...)
	}
	return netlink.Message{Header: netlink.Header{Type: netlink.HeaderType(typ), Flags: flags}, Data: data}
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
