package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"

	"github.com/multiwan/multiwan/internal/config"
	"github.com/multiwan/multiwan/internal/control"
	"github.com/multiwan/multiwan/internal/plan"
)

// explain says where a new connection goes and why: from the running
// daemon, or, with --offline, from the config alone.
func explain(args []string, stdout, stderr io.Writer) int {
	fs, path := flags("explain", stderr)
	src := fs.String("src", "", "source address (the LAN host; with --local, a socket bound to it)")
	dst := fs.String("dst", "", "destination address")
	proto := fs.String("proto", "", "protocol: tcp, udp, icmp, ... or a number")
	sport := fs.Int("sport", 0, "source port")
	dport := fs.Int("dport", 0, "destination port")
	iif := fs.String("iif", "", "incoming interface (a LAN interface, or a WAN's for an inbound connection)")
	local := fs.Bool("local", false, "the router's own connection")
	offline := fs.Bool("offline", false, "plan from the config alone, without asking the daemon")
	down := fs.String("down", "", "with --offline: comma-separated WANs to plan as down")
	asJSON := fs.Bool("json", false, "print the explanation as JSON")
	if !parse(fs, args, stderr) {
		return 2
	}
	v := url.Values{}
	set := func(key, val string) {
		if val != "" {
			v.Set(key, val)
		}
	}
	set("src", *src)
	set("dst", *dst)
	set("proto", *proto)
	set("iif", *iif)
	if *sport != 0 {
		set("sport", strconv.Itoa(*sport))
	}
	if *dport != 0 {
		set("dport", strconv.Itoa(*dport))
	}
	if *local {
		set("local", "1")
	}
	q, err := control.ParseExplainQuery(v.Encode())
	if err != nil {
		fmt.Fprintf(stderr, "multiwan explain: %v\n", err)
		return 2
	}
	if *down != "" && !*offline {
		fmt.Fprintln(stderr, "multiwan explain: --down plans WANs as down, so it needs --offline; the daemon explains with the WANs as they are")
		return 2
	}
	var ex plan.Explanation
	if *offline {
		cfg, ok := load(*path, stderr)
		if !ok {
			return 1
		}
		health, links, err := offlineState(cfg, *down)
		if err != nil {
			fmt.Fprintf(stderr, "multiwan explain: %v\n", err)
			return 1
		}
		ex = plan.Explain(cfg, health, links, "", q, nil)
		ex.Notes = append(ex.Notes, "offline: planned from the config alone; every link assumed up, WAN addresses and the main table unknown")
	} else {
		c, ok := dial(*path, stderr)
		if !ok {
			return 1
		}
		defer c.Close()
		if ex, err = c.Explain(q); err != nil {
			fmt.Fprintf(stderr, "multiwan explain: %v\n", err)
			return 1
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(ex); err != nil {
			return 1
		}
		return 0
	}
	fmt.Fprint(stdout, ex.String())
	return 0
}

// offlineState is what `plan` and `explain --offline` assume without the
// kernel: every link present and up, no address known yet, a gateway: auto
// WAN routed through its interface; every WAN up but those named down.
func offlineState(cfg *config.Config, down string) (plan.Health, plan.Links, error) {
	health := plan.Health{}
	for _, w := range cfg.WANs {
		health[w.Name], health[plan.Key6(w.Name)] = plan.StateUp, plan.StateUp
	}
	if down != "" {
		for _, name := range strings.Split(down, ",") {
			name = strings.TrimSpace(name)
			if _, ok := cfg.WANByName(name); !ok {
				return nil, nil, fmt.Errorf("--down: no WAN named %q", name)
			}
			health[name], health[plan.Key6(name)] = plan.StateDown, plan.StateDown
		}
	}
	links := plan.Links{}
	for _, w := range cfg.WANs {
		links[w.Name] = plan.Link{Exists: true, Up: true, PointToPoint: w.GatewayAuto || w.Gateway6Auto}
	}
	return health, links, nil
}
