package plan

import (
	"fmt"

	"github.com/multiwan/multiwan/internal/config"
)

// Note is a gap in what multiwan can do with a config on this box: the
// config is valid and runs, but something a user would expect is not
// covered. Notes are warnings, not errors: `check` prints them, the daemon
// logs them at start and reload, and status shows them.
type Note struct {
	WAN string
	// Pos is where the WAN is written in the config file.
	Pos config.Pos
	Msg string
}

func (n Note) String() string { return n.WAN + ": " + n.Msg }

// Notes lists the gaps of cfg; links, when not nil, adds those only the
// running box shows (which interfaces carry IPv6).
func Notes(cfg *config.Config, links Links) []Note {
	var out []Note
	for _, w := range cfg.WANs {
		if len(w.Probe.Targets) == 0 {
			out = append(out, Note{WAN: w.Name, Pos: w.Pos, Msg: "probes only its gateway: an outage beyond the gateway " +
				"(behind the ISP's own router, in the ISP's network) will not be seen; add probe targets " +
				"on the internet (README: Choosing probe targets)"})
		}
		if links != nil && !w.IPv6 && links[w.Name].Default6 {
			out = append(out, Note{WAN: w.Name, Pos: w.Pos, Msg: fmt.Sprintf("interface %s has IPv6 default routes but the WAN "+
				"has no gateway6: IPv6 on this WAN is not managed (no failover, no steering); set gateway6: auto to manage it",
				w.Interface)})
		}
	}
	out = append(out, underlayNotes(cfg, links)...)
	return append(out, dnsNotes(cfg, links)...)
}
