package kernel

import (
	"errors"
	"fmt"
	"strings"

	gnft "github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/multiwan/multiwan/internal/plan"
)

// GuardDrops reads, in-process over netlink, how many packets the loop
// guard (plan.ChainGuard) dropped, per tunnel WAN. A table without the
// chain gives an empty map. The WAN is read from each rule's comment
// ("loop: WAN's outer packet into WAN"), as the planner writes it.
func (n *NFT) GuardDrops() (map[string]uint64, error) {
	c, err := gnft.New()
	if err != nil {
		return nil, fmt.Errorf("loop guard: %w", err)
	}
	t := &gnft.Table{Family: gnft.TableFamilyINet, Name: n.table}
	chains, err := c.ListChainsOfTableFamily(gnft.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("loop guard: list chains: %w", err)
	}
	out := map[string]uint64{}
	for _, ch := range chains {
		if ch.Table == nil || ch.Table.Name != n.table || ch.Name != plan.ChainGuard {
			continue
		}
		rules, err := c.GetRules(t, ch)
		if err != nil {
			return nil, fmt.Errorf("loop guard: read rules: %w", err)
		}
		for _, r := range rules {
			comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			wan, ok := guardWAN(comment)
			if !ok {
				continue
			}
			for _, e := range r.Exprs {
				if ctr, ok := e.(*expr.Counter); ok {
					out[wan] += ctr.Packets
				}
			}
		}
	}
	return out, nil
}

// guardWAN reads the WAN out of a loop guard rule's comment.
func guardWAN(comment string) (string, bool) {
	rest, ok := strings.CutPrefix(comment, "loop: ")
	if !ok {
		return "", false
	}
	wan, _, ok := strings.Cut(rest, "'s outer packet")
	return wan, ok && wan != ""
}

// Count is a counter's value.
type Count struct{ Bytes, Packets uint64 }

// Counters reads, in-process over netlink, every named counter of the
// table: one request, whatever their number. A missing table gives an
// empty map.
func (n *NFT) Counters() (map[string]Count, error) {
	c, err := gnft.New()
	if err != nil {
		return nil, fmt.Errorf("counters: %w", err)
	}
	objs, err := c.GetNamedObjects(&gnft.Table{Family: gnft.TableFamilyINet, Name: n.table})
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return map[string]Count{}, nil
		}
		return nil, fmt.Errorf("counters: %w", err)
	}
	out := make(map[string]Count, len(objs))
	for _, o := range objs {
		no, ok := o.(*gnft.NamedObj)
		if !ok {
			continue
		}
		if ctr, ok := no.Obj.(*expr.Counter); ok {
			out[no.Name] = Count{Bytes: ctr.Bytes, Packets: ctr.Packets}
		}
	}
	return out, nil
}

// Counters is NFT.Counters.
func (k *Kernel) Counters() (map[string]Count, error) { return k.NFT.Counters() }

// GuardDrops is NFT.GuardDrops.
func (k *Kernel) GuardDrops() (map[string]uint64, error) { return k.NFT.GuardDrops() }
