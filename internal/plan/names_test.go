package plan

import (
	"fmt"
	"maps"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/multiwan/multiwan/internal/config"
)

// TestNames pins the derived names: they are shown to users in traces and
// are the names of objects installed in the kernel.
func TestNames(t *testing.T) {
	cases := []struct{ got, want string }{
		{WANChain("isp1"), "wan_isp1"},
		{RestoreChain("isp1"), "restore_isp1"},
		{PinChain("isp1"), "pin_isp1"},
		{PolicyChain("failover"), "policy_failover"},
		{PolicyChain(config.ImplicitPolicyName("isp-2")), "pin_isp-2"},
		{RuleSet("isp2-portal", RuleSetDst4), "r_isp2_portal_dst4"},
		{RuleSet("smtp", RuleSetDstPort), "r_smtp_dport"},
		{RuleSet("lan-a", RuleSetIIF), "r_lan_a_iif"},
		{config.NFTName("a-b_c"), "a_b_c"},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	if wan, ok := WANOfChain(WANChain("isp-1")); !ok || wan != "isp-1" {
		t.Errorf("WANOfChain(WANChain(isp-1)) = %q, %v", wan, ok)
	}
	if _, ok := WANOfChain(PolicyChain("x")); ok {
		t.Errorf("a policy chain taken for a WAN's")
	}
}

// everything is a config that uses every kind of object the planner makes:
// rules with every match (both families, names with '-'), movable flows,
// sticky source, every last resort, NAT66, routed prefixes, IPv4-only WANs
// beside dual-stack ones.
const everything = `mark_mask: 0x0f0f
wans:
  - {name: a-1, interface: wan1, gateway: 192.0.2.1, gateway6: "fe80::1", nat6: masquerade, prefixes6: ["2001:db8:100::/56"]}
  - {name: b_2, interface: wan2, gateway: auto, nat: none}
  - {name: c, interface: wan3, gateway: 192.0.2.129, gateway6: auto}
policies:
  - name: sticky-p
    sticky: source
    members: [{wan: a-1, weight: 2}, {wan: b_2}, {wan: c, tier: 2}]
  - name: flow
    last_resort: blackhole
    members: [{wan: c, weight: 3}, {wan: a-1}]
  - name: m
    last_resort: main
    members: [{wan: b_2}]
rules:
  - {name: all-kinds, src: [10.0.0.0/8, "2001:db8:5::/48"], dst: [203.0.113.0/24, "2001:db8:ffff::/48"], proto: tcp, src_port: [1000, "2000-3000"], dst_port: [80, 443], iif: [lan2, lan1], policy: flow, movable: true}
  - {name: v6only, dst: ["2001:db8:1::/48"], wan: c}
  - {name: plain, proto: udp, movable: true, policy: m}
  - {name: ifonly, iif: [lan3], wan: b_2}
default_policy: sticky-p
http: {listen: "198.18.0.1:9731"}
`

// TestTableReferences plans every example (and a config using every
// feature) in many situations and checks that the table holds together:
// names are unique, every chain a goto, jump or verdict-map element names
// exists and is not a base chain, every @set exists, and is a verdict map
// after vmap and a plain set elsewhere. nft would refuse the table
// otherwise; this catches a builder that renames or drops an object its
// neighbours still refer to.
func TestTableReferences(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "examples", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	cfgs := map[string]*config.Config{}
	for _, f := range files {
		cfgs[filepath.Base(f)] = load(t, filepath.Base(f))
	}
	cfg, err := config.Parse("everything.yaml", []byte(everything))
	if err != nil {
		t.Fatal(err)
	}
	cfgs["everything"] = cfg

	for _, name := range slices.Sorted(maps.Keys(cfgs)) {
		cfg := cfgs[name]
		links := Links{}
		for i, w := range cfg.WANs {
			l := Link{Exists: true, Up: true, Gateway: addr(fmt.Sprintf("198.18.%d.1", i)),
				Addrs: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("198.18.%d.2/24", i))}}
			if w.IPv6 {
				l.Gateway6 = addr("fe80::1")
				l.Addrs = append(l.Addrs, netip.MustParsePrefix(fmt.Sprintf("2001:db8:%d::2/64", i)))
			}
			links[w.Name] = l
		}
		type situation struct {
			name     string
			health   Health
			override string
		}
		down := Health{}
		for _, w := range cfg.WANs {
			down[w.Name], down[Key6(w.Name)] = StateDown, StateDown
		}
		situations := []situation{{"all up", allUp(cfg), ""}, {"all down", down, ""}}
		for _, w := range cfg.WANs {
			h := allUp(cfg, w.Name)
			h[Key6(w.Name)] = StateDown
			situations = append(situations,
				situation{w.Name + " down", h, ""},
				situation{"use " + w.Name, allUp(cfg), w.Name})
		}
		for _, s := range situations {
			t.Run(name+"/"+s.name, func(t *testing.T) {
				checkReferences(t, &Plan(cfg, s.health, links, s.override).Table)
			})
		}
	}
}

func checkReferences(t *testing.T, tab *Table) {
	t.Helper()
	chains := map[string]*Chain{}
	for i, c := range tab.Chains {
		if chains[c.Name] != nil {
			t.Errorf("chain %s declared twice", c.Name)
		}
		chains[c.Name] = &tab.Chains[i]
	}
	sets := map[string]*Set{}
	for i, s := range tab.Sets {
		if sets[s.Name] != nil {
			t.Errorf("set %s declared twice", s.Name)
		}
		sets[s.Name] = &tab.Sets[i]
	}
	// verdict checks a verdict: a goto or jump to a regular chain that
	// exists, or a verdict that names no chain.
	verdict := func(where string, toks []string) {
		for i, tok := range toks {
			if tok != "goto" && tok != "jump" {
				continue
			}
			if i+1 == len(toks) {
				t.Errorf("%s: %s without a chain", where, tok)
				continue
			}
			switch c := chains[toks[i+1]]; {
			case c == nil:
				t.Errorf("%s: %s %s: no such chain", where, tok, toks[i+1])
			case c.Hook != "":
				t.Errorf("%s: %s %s: a base chain", where, tok, toks[i+1])
			}
		}
	}
	for _, c := range tab.Chains {
		for _, rule := range c.Rules {
			where := "chain " + c.Name + ": " + rule
			toks := tokenize(rule)
			verdict(where, toks)
			for i, tok := range toks {
				switch {
				case tok == "comment":
					if i+1 == len(toks) || !strings.HasPrefix(toks[i+1], `"`) {
						t.Errorf("%s: comment is not a quoted string", where)
					}
				case strings.HasPrefix(tok, "@"):
					s := sets[tok[1:]]
					vmap := i > 0 && toks[i-1] == "vmap"
					objmap := i > 0 && toks[i-1] == "map"
					switch {
					case s == nil:
						t.Errorf("%s: no set %s", where, tok)
					case vmap && s.Map != "verdict":
						t.Errorf("%s: vmap on %s, which is not a verdict map", where, tok)
					case objmap && s.Map != "counter":
						t.Errorf("%s: object map %s is not a map of counters", where, tok)
					case objmap:
						for _, e := range s.Elements {
							if !slices.Contains(tab.Counters, strings.Trim(e.Value, `"`)) {
								t.Errorf("%s: %s names counter %s, which does not exist", where, tok, e.Value)
							}
						}
					case !vmap && s.Map != "":
						t.Errorf("%s: %s is a map, used as a set", where, tok)
					}
				case strings.HasPrefix(tok, "{"):
					if i == 0 || toks[i-1] != "vmap" {
						// A plain anonymous set ({ tcp, udp }) is fine;
						// verdicts belong in a vmap.
						for _, e := range anonElements(tok) {
							if e.Value != "" {
								t.Errorf("%s: anonymous map outside a vmap", where)
							}
						}
						continue
					}
					for _, e := range anonElements(tok) {
						verdict(where, tokenize(e.Value))
					}
				}
			}
		}
	}
	for _, s := range tab.Sets {
		for _, e := range s.Elements {
			if s.Map == "verdict" {
				verdict("map "+s.Name+" element "+e.Key, tokenize(e.Value))
			} else if e.Value != "" && s.Map == "" {
				t.Errorf("set %s: element %s has a value", s.Name, e.Key)
			}
		}
	}
}
