package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Each case is a whole file, so the line numbers in want can be read off it.
var errorTests = []struct {
	name string
	yaml string
	want []string
}{
	{
		name: "syntax error",
		yaml: "wans: [\n",
		want: []string{"t.yaml:1:7: syntax error: sequence end token ']' not found"},
	},
	{
		name: "unterminated string",
		yaml: "default_policy: \"p\n",
		want: []string{"t.yaml:1:17: syntax error: could not find end character of double-quoted text"},
	},
	{
		name: "tab indentation",
		yaml: "wans:\n\t- name: a\n",
		want: []string{`t.yaml:2:1: syntax error: found character '\t' that cannot start any token (indent with spaces, not tabs)`},
	},
	{
		name: "unknown top-level key",
		yaml: `wans: [{name: a, interface: eth0, gateway: 192.0.2.1}]
policies: [{name: p, members: [{wan: a}]}]
default_policy: p
wan: a
colour: red
`,
		want: []string{
			`t.yaml:4:1: unknown key "wan"; did you mean "wans"?`,
			`t.yaml:5:1: unknown key "colour"`,
		},
	},
	{
		name: "unknown nested keys",
		yaml: `wans:
  - name: a
    interface: eth0
    gateway: 192.0.2.1
    probe: {targetz: [192.0.2.9]}
policies: [{name: p, members: [{wan: a, wieght: 2}]}]
default_policy: p
control: {sock: /run/x}
`,
		want: []string{
			`t.yaml:5:13: unknown key "targetz" in probe; did you mean "targets"?`,
			`t.yaml:6:41: unknown key "wieght" in member; did you mean "weight"?`,
			`t.yaml:8:11: unknown key "sock" in control; did you mean "socket"?`,
		},
	},
	{
		name: "duplicate keys",
		yaml: `wans:
  - name: a
    interface: eth0
    name: b
    gateway: 192.0.2.1
default_policy: p
policies: [{name: p, members: [{wan: a}]}]
default_policy: q
`,
		want: []string{
			`t.yaml:4:5: duplicate key "name" in wan (first at 2:5)`,
			`t.yaml:8:1: duplicate key "default_policy" (first at 6:1)`,
		},
	},
	{
		name: "duplicate WAN name",
		yaml: `wans:
  - {name: a, interface: eth0, gateway: 192.0.2.1}
  - {name: a, interface: eth1, gateway: 192.0.2.1}
policies: [{name: p, members: [{wan: a}]}]
default_policy: p
`,
		want: []string{`t.yaml:3:12: duplicate WAN name "a" (first at 2:12)`},
	},
	{
		name: "interface used twice",
		yaml: `wans:
  - {name: a, interface: eth0, gateway: 192.0.2.1}
  - {name: b, interface: eth0, gateway: auto}
policies: [{name: p, members: [{wan: a}]}]
default_policy: p
`,
		want: []string{`t.yaml:3:26: interface "eth0" is already used by WAN "a"`},
	},
	{
		name: "member naming an unknown WAN",
		yaml: `wans: [{name: a, interface: eth0, gateway: 192.0.2.1}]
policies:
  - name: p
    members:
      - wan: a
      - wan: nope
default_policy: p
`,
		want: []string{`t.yaml:6:14: wan: unknown WAN "nope"`},
	},
	{
		name: "same WAN twice in a policy",
		yaml: `wans: [{name: a, interface: eth0, gateway: 192.0.2.1}]
policies: [{name: p, members: [{wan: a}, {wan: a, tier: 2}]}]
default_policy: p
`,
		want: []string{`t.yaml:2:48: wan: WAN "a" is already a member of this policy`},
	},
	{
		name: "empty members",
		yaml: `wans: [{name: a, interface: eth0, gateway: 192.0.2.1}]
policies:
  - name: p
    members: []
  - name: q
default_policy: p
`,
		want: []string{
			"t.yaml:4:14: members: a policy needs at least one member",
			"t.yaml:5:5: members is required",
		},
	},
	{
		name: "rule naming an unknown policy or WAN",
		yaml: `wans: [{name: a, interface: eth0, gateway: 192.0.2.1}]
policies: [{name: p, members: [{wan: a}]}]
rules:
  - {name: r1, policy: nope}
  - {name: r2, wan: nope}
default_policy: nope
`,
		want: []string{
			"t.yaml:4:6: a rule without a match field matches every connection; to change where unmatched traffic goes, set default_policy",
			`t.yaml:4:24: policy: unknown policy "nope"`,
			"t.yaml:5:6: a rule without a match field matches every connection; to change where unmatched traffic goes, set default_policy",
			`t.yaml:5:21: wan: unknown WAN "nope"`,
			`t.yaml:6:17: default_policy: unknown policy "nope"`,
		},
	},
	{
		name: "rule with both wan and policy, and with neither",
		yaml: `wans: [{name: a, interface: eth0, gateway: 192.0.2.1}]
policies: [{name: p, members: [{wan: a}]}]
rules:
  - name: both
    wan: a
    policy: p
  - name: neither
    proto: tcp
default_policy: p
`,
		want: []string{
			"t.yaml:4:5: a rule without a match field matches every connection; to change where unmatched traffic goes, set default_policy",
			"t.yaml:6:5: a rule takes wan or policy, not both",
			"t.yaml:7:5: a rule needs wan or policy",
		},
	},
	{
		name: "bad addresses and host bits",
		yaml: `wans: [{name: a, interface: eth0, gateway: 192.0.2.300}]
policies: [{name: p, members: [{wan: a}]}]
rules:
  - name: r
    src: 10.0.0.1/8
    dst: [192.0.2.1, 10.0.0.256, "2001:db8::1/32", 2001:db8::/129, fe80::1%eth0, {a: 1}]
    wan: a
default_policy: p
`,
		want: []string{
			`t.yaml:1:44: gateway: expected an IP address or auto, got "192.0.2.300"`,
			"t.yaml:5:10: src: 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?",
			`t.yaml:6:22: dst: expected an IP address or CIDR prefix, got "10.0.0.256"`,
			"t.yaml:6:34: dst: 2001:db8::1/32 has host bits set; did you mean 2001:db8::/32?",
			`t.yaml:6:52: dst: expected an IP address or CIDR prefix, got "2001:db8::/129"`,
			`t.yaml:6:68: dst: "fe80::1%eth0": zones are not allowed`,
			"t.yaml:6:83: dst: expected an IP address or CIDR prefix, got a mapping",
		},
	},
	{
		name: "ports",
		yaml: `wans: [{name: a, interface: eth0, gateway: 192.0.2.1}]
policies: [{name: p, members: [{wan: a}]}]
rules:
  - name: r
    proto: tcp
    dst_port: [0, 70000, "2000-1000", "1-0", smtp, 1.5, "80-"]
    src_port: 99999999999999999999
    wan: a
default_policy: p
`,
		want: []string{
			"t.yaml:6:16: dst_port: port 0 is out of range 1..65535",
			"t.yaml:6:19: dst_port: port 70000 is out of range 1..65535",
			"t.yaml:6:26: dst_port: range 2000-1000 is reversed; did you mean 1000-2000?",
			"t.yaml:6:39: dst_port: port 0 is out of range 1..65535",
			`t.yaml:6:46: dst_port: expected a port or a range like 1000-2000, got "smtp"`,
			"t.yaml:6:52: dst_port: expected a port or a range like 1000-2000, got 1.5",
			`t.yaml:6:57: dst_port: expected a port or a range like 1000-2000, got "80-"`,
			"t.yaml:7:15: src_port: port 99999999999999999999 is out of range 1..65535",
		},
	},
	{
		name: "empty match lists",
		yaml: `wans: [{name: a, interface: eth0, gateway: 192.0.2.1}]
policies: [{name: p, members: [{wan: a}]}]
rules:
  - name: r
    proto: tcp
    src: []
    dst:
    iif: []
    dst_port: []
    wan: a
default_policy: p
`,
		want: []string{
			"t.yaml:6:10: src: empty list; leave src out to match any",
			"t.yaml:7:5: dst: empty list; leave dst out to match any",
			"t.yaml:8:10: iif: empty list; leave iif out to match any",
			"t.yaml:9:15: dst_port: empty list; leave dst_port out to match any",
		},
	},
	{
		name: "ports without a port protocol",
		yaml: `wans: [{name: a, interface: eth0, gateway: 192.0.2.1}]
policies: [{name: p, members: [{wan: a}]}]
rules:
  - {name: r1, dst_port: 443, wan: a}
  - {name: r2, proto: icmp, src_port: [53], wan: a}
  - {name: r3, proto: 6, dst_port: 25, wan: a}
  - {name: r4, proto: bogus, dst_port: 25, wan: a}
default_policy: p
`,
		want: []string{
			"t.yaml:4:26: dst_port: ports need proto tcp, udp, sctp or udplite",
			"t.yaml:5:39: src_port: ports need proto tcp, udp, sctp or udplite, not icmp",
			`t.yaml:7:23: proto: expected tcp, udp, icmp, icmpv6, sctp, udplite, gre, esp or a number 0..255, got "bogus"`,
		},
	},
	{
		name: "probe values",
		yaml: `wans:
  - name: a
    interface: eth0
    gateway: 192.0.2.1
    probe:
      interval: 5 minutes
      timeout: 0s
      down: 0
      up: two
      max_loss: 150%
      max_rtt: 1.5
      method: ping
  - name: b
    interface: eth1
    gateway: 192.0.2.1
    probe: {interval: 1ms, max_loss: -1, reliability: 2}
policies: [{name: p, members: [{wan: a}]}]
default_policy: p
`,
		want: []string{
			`t.yaml:6:17: interval: expected a duration like 500ms, got "5 minutes"`,
			"t.yaml:7:16: timeout: must be at least 10ms, got 0s",
			"t.yaml:8:13: down: must be at least 1, got 0",
			`t.yaml:9:11: up: expected an integer, got "two"`,
			"t.yaml:10:17: max_loss: must be in 0%..100%, got 150%",
			"t.yaml:11:16: max_rtt: expected a duration like 500ms, got 1.5",
			`t.yaml:12:15: method: expected icmp, tcp, http or dns, got "ping"`,
			"t.yaml:16:23: interval: must be at least 10ms, got 1ms",
			"t.yaml:16:38: max_loss: must be in 0%..100%, got -1",
			"t.yaml:16:55: reliability: must be 1 when the gateway is probed, got 2",
		},
	},
	{
		name: "probe targets",
		yaml: `wans:
  - {name: a, interface: eth0, gateway: auto, probe: {method: tcp}}
  - {name: b, interface: eth1, gateway: auto, probe: {method: http, targets: []}}
  - name: c
    interface: eth2
    gateway: auto
    probe:
      targets: [192.0.2.1:80, "[2001:db8::1]:0", 192.0.2.1, example.com:80]
      method: tcp
      reliability: 5
  - {name: d, interface: eth3, gateway: auto, probe: {method: http, targets: [ftp://x/, "http://", https://example.com/health]}}
  - {name: e, interface: eth4, gateway: auto, probe: {method: dns, targets: [192.0.2.53, "192.0.2.53:5353", x, 192.0.2.53]}}
  - {name: f, interface: eth5, gateway: auto, probe: {targets: [192.0.2.1, example.com]}}
policies: [{name: p, members: [{wan: a}]}]
default_policy: p
`,
		want: []string{
			"t.yaml:2:55: a tcp probe needs targets",
			"t.yaml:3:78: targets: a http probe needs at least one target",
			`t.yaml:8:31: targets: "[2001:db8::1]:0" is not an address:port like 192.0.2.1:443`,
			`t.yaml:8:50: targets: "192.0.2.1" is not an address:port like 192.0.2.1:443`,
			`t.yaml:8:61: targets: "example.com:80" is not an address:port like 192.0.2.1:443`,
			"t.yaml:10:20: reliability: must be in 1..4 (the number of targets), got 5",
			`t.yaml:11:79: targets: "ftp://x/" is not an http:// or https:// URL`,
			`t.yaml:11:89: targets: "http://" is not an http:// or https:// URL`,
			`t.yaml:12:109: targets: "x" is not an IP address or address:port`,
			`t.yaml:12:112: targets: duplicate target "192.0.2.53"`,
			`t.yaml:13:76: targets: expected an IP address, got "example.com"`,
		},
	},
	{
		name: "names and interfaces",
		yaml: `wans:
  - {name: ISP, interface: "eth 0", gateway: 0.0.0.0}
  - {name: a-very-long-name-x, interface: a-very-long-name, gateway: 224.0.0.1}
  - {name: c, interface: "..", gateway: "fe80::1%eth0"}
  - {name: d, interface: "e/1", gateway: true}
policies: [{name: "P 1", members: [{wan: ISP}]}]
rules: [{name: r, iif: [eth0, "x:y"], wan: ISP}]
default_policy: P 1
`,
		want: []string{
			`t.yaml:2:12: name: "ISP" is not a valid WAN name (1..15 characters of a-z, 0-9, _ and -)`,
			`t.yaml:2:28: interface: "eth 0" is not a valid interface name (contains whitespace)`,
			"t.yaml:2:46: gateway: 0.0.0.0 is not a usable gateway address",
			`t.yaml:3:12: name: "a-very-long-name-x" is not a valid WAN name (1..15 characters of a-z, 0-9, _ and -)`,
			`t.yaml:3:43: interface: "a-very-long-name" is not a valid interface name (longer than 15 bytes)`,
			"t.yaml:3:70: gateway: 224.0.0.1 is not a usable gateway address",
			`t.yaml:4:26: interface: ".." is not a valid interface name ("." and ".." are not allowed)`,
			`t.yaml:4:41: gateway: "fe80::1%eth0": zones are not allowed`,
			`t.yaml:5:26: interface: "e/1" is not a valid interface name (contains / or :)`,
			"t.yaml:5:42: gateway: expected an IP address or auto, got true",
			`t.yaml:6:19: name: "P 1" is not a valid policy name (1..32 characters of a-z, 0-9, _ and -)`,
			`t.yaml:7:31: iif: "x:y" is not a valid interface name (contains / or :)`,
		},
	},
	{
		name: "missing required keys",
		yaml: `wans:
  - name: a
  - {}
policies: [{members: [{tier: 2}]}]
rules: [{wan: a}]
`,
		want: []string{
			"t.yaml:1:1: default_policy is required",
			"t.yaml:2:5: interface is required",
			"t.yaml:2:5: gateway is required",
			"t.yaml:3:5: name is required",
			"t.yaml:3:5: interface is required",
			"t.yaml:3:5: gateway is required",
			"t.yaml:4:13: name is required",
			"t.yaml:4:24: wan is required",
			"t.yaml:5:10: name is required",
			"t.yaml:5:10: a rule without a match field matches every connection; to change where unmatched traffic goes, set default_policy",
		},
	},
	{
		name: "missing default_policy after a comment",
		yaml: `# The top level's first key is not at 1:1, but the file is to blame.
wans: [{name: a, interface: eth0, gateway: 192.0.2.1}]
`,
		want: []string{"t.yaml:1:1: default_policy is required"},
	},
	{
		name: "empty file",
		yaml: "",
		want: []string{
			"t.yaml:1:1: wans is required",
			"t.yaml:1:1: default_policy is required",
		},
	},
	{
		name: "wrong kinds",
		yaml: `wans: {name: a}
policies: a
rules:
default_policy: [p]
local_traffic: yes
rule_priority: 32000
hooks: /bin/true
control: /run/x
`,
		want: []string{
			"t.yaml:1:8: wans: expected a list, got a mapping",
			`t.yaml:2:11: policies: expected a list, got "a"`,
			"t.yaml:4:17: default_policy: expected a string, got a list",
			`t.yaml:5:16: local_traffic: expected true or false, got "yes"`,
			"t.yaml:6:16: rule_priority: must be in 1..31400, got 32000",
			`t.yaml:7:8: hooks: expected a list, got "/bin/true"`,
			`t.yaml:8:10: control: expected a mapping, got "/run/x"`,
		},
	},
	{
		name: "no WANs",
		yaml: "wans: []\ndefault_policy: p\n",
		want: []string{
			"t.yaml:1:7: wans: at least one WAN is required",
			`t.yaml:2:17: default_policy: unknown policy "p"`,
		},
	},
	{
		name: "top level is not a mapping",
		yaml: "- a\n- b\n",
		want: []string{"t.yaml:1:1: expected a mapping, got a list"},
	},
	{
		name: "two documents",
		yaml: "wans: [{name: a, interface: eth0, gateway: auto}]\ndefault_policy: p\npolicies: [{name: p, members: [a]}]\n---\nfoo: 1\n",
		want: []string{
			`t.yaml:3:32: members: expected a mapping, got "a"`,
			"t.yaml:5:1: only one YAML document is allowed",
		},
	},
	{
		name: "mark_mask 0",
		yaml: `mark_mask: 0
wans: [{name: a, interface: eth0, gateway: 192.0.2.1}]
policies: [{name: p, members: [{wan: a}]}]
default_policy: p
`,
		want: []string{"t.yaml:1:12: mark_mask: must not be 0"},
	},
	{
		name: "mark_mask too small",
		yaml: `mark_mask: 0x3
wans:
  - {name: a, interface: eth0, gateway: 192.0.2.1}
  - {name: b, interface: eth1, gateway: 192.0.2.1}
policies: [{name: p, members: [{wan: a}]}]
default_policy: p
`,
		want: []string{"t.yaml:1:12: mark_mask 0x3 has 2 bits; 2 WANs need at least 4"},
	},
	{
		name: "mark_mask too small for one WAN, and too wide",
		yaml: `mark_mask: 0x10001
wans: [{name: a, interface: eth0, gateway: 192.0.2.1}]
policies: [{name: p, members: [{wan: a}]}]
default_policy: p
rule_priority: 0x1ffffffff
`,
		want: []string{
			"t.yaml:1:12: mark_mask 0x10001 has 2 bits; 1 WAN needs at least 4",
			"t.yaml:5:16: rule_priority: must be in 1..31400, got 0x1ffffffff",
		},
	},
	{
		name: "clashing table ids",
		yaml: `wans:
  - {name: a, interface: eth0, gateway: 192.0.2.1, table: 102}
  - {name: b, interface: eth1, gateway: 192.0.2.1}
  - {name: c, interface: eth2, gateway: 192.0.2.1, table: 7}
  - {name: d, interface: eth3, gateway: 192.0.2.1, table: 7}
policies: [{name: p, members: [{wan: a}]}]
default_policy: p
`,
		want: []string{
			`t.yaml:2:59: table 102 of WAN "a" clashes with WAN "b" (its default table: 100 + 2)`,
			`t.yaml:5:59: table 7 of WAN "d" clashes with WAN "c"`,
		},
	},
	{
		name: "reserved and out-of-range tables",
		yaml: `wans:
  - {name: a, interface: eth0, gateway: 192.0.2.1, table: 254}
  - {name: b, interface: eth1, gateway: 192.0.2.1, table: 0}
  - {name: c, interface: eth2, gateway: 192.0.2.1, table: 4294967296}
policies: [{name: p, members: [{wan: a}]}]
default_policy: p
`,
		want: []string{
			"t.yaml:2:59: table: 254 is reserved for the kernel's main table",
			"t.yaml:3:59: table: must be in 1..4294967295, got 0",
			"t.yaml:4:59: table: must be in 1..4294967295, got 4294967296",
		},
	},
	{
		name: "policy and rule enums and limits",
		yaml: `wans: [{name: a, interface: eth0, gateway: 192.0.2.1, nat: snat}]
policies:
  - {name: p, members: [{wan: a, weight: 1001, tier: 0}], last_resort: drop, sticky: host}
  - {name: p, members: [{wan: a}]}
rules:
  - {name: r, wan: a, movable: 1}
  - {name: r, wan: a, proto: 256}
default_policy: p
control: {mode: 0o1777}
`,
		want: []string{
			`t.yaml:1:60: nat: expected masquerade or none, got "snat"`,
			"t.yaml:3:42: weight: must be in 1..1000, got 1001",
			"t.yaml:3:54: tier: must be at least 1, got 0",
			`t.yaml:3:72: last_resort: expected unreachable, blackhole or main, got "drop"`,
			`t.yaml:3:86: sticky: expected flow or source, got "host"`,
			`t.yaml:4:12: duplicate policy name "p" (first at 3:12)`,
			"t.yaml:6:6: a rule without a match field matches every connection; to change where unmatched traffic goes, set default_policy",
			"t.yaml:6:32: movable: expected true or false, got 1",
			`t.yaml:7:12: duplicate rule name "r" (first at 6:12)`,
			"t.yaml:7:30: proto: expected tcp, udp, icmp, icmpv6, sctp, udplite, gre, esp or a number 0..255, got 256",
			"t.yaml:9:17: mode: expected an octal file mode like 0600, got 0o1777",
		},
	},
	{
		name: "unknown alias",
		yaml: `wans: [{name: a, interface: eth0, gateway: 192.0.2.1, probe: *nope}]
policies: [{name: p, members: [{wan: a}]}]
default_policy: p
`,
		want: []string{"t.yaml:1:62: unknown alias *nope"},
	},
	{
		name: "bad merge",
		yaml: `wans: [{name: a, interface: eth0, gateway: 192.0.2.1, <<: [x]}]
policies: [{name: p, members: [{wan: a}]}]
default_policy: p
`,
		want: []string{"t.yaml:1:60: <<: expected a mapping or a list of mappings to merge, got \"x\""},
	},
	{
		name: "anchored and aliased keys",
		yaml: `wans:
  - &n name: a
    *n : b
    interface: eth0
    gateway: 192.0.2.1
    !!str nat: none
policies: [{name: p, members: [{wan: a}]}]
default_policy: p
`,
		want: []string{`t.yaml:3:5: duplicate key "name" in wan (first at 2:5)`},
	},
	{
		name: "several errors in one file",
		yaml: `mark_mask: 0
wans:
  - name: a
    interface: eth0
    gateway: nowhere
    probe: {interval: soon}
  - name: a
    interface: eth0
    gateway: auto
policies:
  - name: p
    members: [{wan: b}]
rules:
  - name: r
    dst: [10.0.0.1/8]
    dst_port: [0]
    policy: q
default_policy: p
`,
		want: []string{
			"t.yaml:1:12: mark_mask: must not be 0",
			`t.yaml:5:14: gateway: expected an IP address or auto, got "nowhere"`,
			`t.yaml:6:23: interval: expected a duration like 500ms, got "soon"`,
			`t.yaml:7:11: duplicate WAN name "a" (first at 3:11)`,
			`t.yaml:8:16: interface "eth0" is already used by WAN "a"`,
			`t.yaml:12:21: wan: unknown WAN "b"`,
			"t.yaml:15:11: dst: 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?",
			"t.yaml:16:15: dst_port: ports need proto tcp, udp, sctp or udplite",
			"t.yaml:16:16: dst_port: port 0 is out of range 1..65535",
			`t.yaml:17:13: policy: unknown policy "q"`,
		},
	},
}

func TestParseErrors(t *testing.T) {
	for _, tt := range errorTests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("t.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatalf("Parse succeeded, want errors:\n%s", strings.Join(tt.want, "\n"))
			}
			if cfg != nil {
				t.Errorf("Parse returned a config along with errors")
			}
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("error is %T, want ErrorList", err)
			}
			if got := list.Lines(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			if err.Error() != strings.Join(tt.want, "\n") {
				t.Errorf("Error() = %q, want the lines joined", err.Error())
			}
		})
	}
}

func TestErrorFormat(t *testing.T) {
	e := &Error{File: "/etc/multiwan/multiwan.yaml", Line: 3, Col: 7, Msg: "bad"}
	if got, want := e.Error(), "/etc/multiwan/multiwan.yaml:3:7: bad"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	e.File = ""
	if got, want := e.Error(), "3:7: bad"; got != want {
		t.Errorf("Error() without a file = %q, want %q", got, want)
	}
}

func TestErrorListSorted(t *testing.T) {
	l := ErrorList{
		{Line: 2, Col: 1, Msg: "c"},
		{Line: 1, Col: 5, Msg: "b"},
		{Line: 2, Col: 1, Msg: "c"},
		{Line: 1, Col: 2, Msg: "a"},
		{Line: 2, Col: 1, Msg: "d"},
	}
	want := []string{"1:2: a", "1:5: b", "2:1: c", "2:1: d"}
	if got := l.sorted("").Lines(); !reflect.DeepEqual(got, want) {
		t.Errorf("sorted = %q, want %q", got, want)
	}
}

func TestFullConfig(t *testing.T) {
	cfg, err := Load("testdata/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defaults := Probe{
		Method:      "icmp",
		Interval:    500 * time.Millisecond,
		Timeout:     time.Second,
		Down:        3,
		Up:          3,
		Reliability: 1,
		MaxLoss:     -1,
	}
	want := &Config{
		File:         "testdata/full.yaml",
		MarkMask:     0xff00,
		RulePriority: 1000,
		WANs: []WAN{
			{
				Name:      "isp1",
				Interface: "wan1",
				Gateway:   netip.MustParseAddr("192.0.2.1"),
				Table:     101,
				NAT:       "masquerade",
				NAT6:      "none",
				Probe: Probe{
					Method:      "icmp",
					Targets:     []string{"203.0.113.20", "203.0.113.30"},
					Interval:    500 * time.Millisecond,
					Timeout:     time.Second,
					Down:        3,
					Up:          3,
					Reliability: 1,
					MaxLoss:     0.2,
					MaxRTT:      500 * time.Millisecond,
				},
				Pos: Pos{3, 5},
			},
			{
				Name:        "isp2",
				Interface:   "wan2",
				GatewayAuto: true,
				Table:       102,
				NAT:         "masquerade",
				NAT6:        "none",
				Probe:       defaults,
				Pos:         Pos{19, 5},
			},
		},
		Policies: []Policy{
			{
				Name:       "failover",
				Members:    []Member{{"isp1", 1, 1}, {"isp2", 2, 1}},
				LastResort: "unreachable",
				Sticky:     "flow",
				Pos:        Pos{23, 5},
			},
			{
				Name:       "balanced",
				Members:    []Member{{"isp1", 1, 3}, {"isp2", 1, 1}},
				LastResort: "unreachable",
				Sticky:     "flow",
				Pos:        Pos{28, 5},
			},
			{
				Name:       "wan:isp1",
				Members:    []Member{{"isp1", 1, 1}},
				LastResort: "unreachable",
				Sticky:     "flow",
				Implicit:   true,
				Pos:        Pos{36, 10},
			},
		},
		Rules: []Rule{
			{
				Name:   "pinned-host",
				Src:    []netip.Prefix{netip.MustParsePrefix("198.18.0.53/32")},
				Policy: "wan:isp1",
				Pos:    Pos{34, 5},
			},
			{
				Name:    "smtp",
				Proto:   "tcp",
				DstPort: []PortRange{{25, 25}, {465, 465}, {587, 587}},
				Policy:  "failover",
				Pos:     Pos{37, 5},
			},
			{
				Name:    "udp-follows",
				Proto:   "udp",
				Policy:  "failover",
				Movable: true,
				Pos:     Pos{41, 5},
			},
		},
		DefaultPolicy: "balanced",
		LocalTraffic:  true,
		Control:       Control{Socket: "/run/multiwan/multiwan.sock", Mode: 0o600},
		Hooks:         []string{"/bin/true"},
		HookTimeout:   5 * time.Second,
		StateDir:      "/run/multiwan",
		ResolvFile:    DefaultResolvFile,
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("Load:\n got %+v\nwant %+v", cfg, want)
	}
}

func TestMinimalDefaults(t *testing.T) {
	cfg, err := Parse("t.yaml", []byte(`wans: [{name: a, interface: eth0, gateway: 192.0.2.1, gateway6: "fe80::1"}]
policies: [{name: p, members: [{wan: a}]}]
default_policy: p
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MarkMask != DefaultMarkMask || cfg.RulePriority != DefaultRulePriority ||
		cfg.LocalTraffic != DefaultLocalTraffic || cfg.Control.Socket != DefaultSocket ||
		cfg.Control.Mode != DefaultSocketMode || cfg.Hooks != nil || cfg.Rules != nil || cfg.StateDir != DefaultStateDir ||
		cfg.HookTimeout != DefaultHookTimeout {
		t.Errorf("top-level defaults not applied: %+v", cfg)
	}
	w := cfg.WANs[0]
	if w.Gateway != netip.MustParseAddr("192.0.2.1") || w.GatewayAuto || w.Table != DefaultTableBase+1 || w.NAT != DefaultNAT ||
		!w.IPv6 || w.Gateway6 != netip.MustParseAddr("fe80::1") || w.NAT6 != DefaultNAT6 {
		t.Errorf("WAN defaults not applied: %+v", w)
	}
	p := cfg.Policies[0]
	if p.LastResort != DefaultLastResort || p.Sticky != DefaultSticky || p.Members[0] != (Member{"a", DefaultTier, DefaultWeight}) {
		t.Errorf("policy defaults not applied: %+v", p)
	}
}

func TestParseValues(t *testing.T) {
	cfg, err := Parse("t.yaml", []byte(`mark_mask: 0xf
rule_priority: 20000
wans:
  - name: a
    interface: eth0
    gateway: 192.0.2.1
    table: 0x10
    nat: none
    probe: &probe
      method: dns
      targets: [192.0.2.53, "[2001:db8::53]:5353"]
      reliability: 2
      max_loss: 12.5
  - name: b
    interface: eth1
    gateway: auto
    probe: *probe
  - name: c
    interface: eth2
    gateway: auto
    probe:
      <<: *probe
      method: tcp
      targets: [192.0.2.1:443]
      reliability: 1
      max_loss: 0%
policies:
  - {name: p, members: [{wan: a}, {wan: b}], last_resort: main, sticky: source}
rules:
  - name: r
    src: 192.0.2.0/24
    dst: ["2001:db8::/32", 198.51.100.7]
    proto: udp
    src_port: "53"
    dst_port: [53, " 1000 - 2000 ", 65535]
    iif: eth9
    policy: p
  - {name: s, proto: 47, wan: c}
  - {name: t, proto: 99, wan: c, dst: 10.0.0.0/8}
  - {name: u, wan: a, iif: eth1}
default_policy: p
local_traffic: false
control: {socket: /tmp/m.sock, mode: "0660"}
hooks:
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MarkMask != 0xf || cfg.RulePriority != 20000 || cfg.LocalTraffic ||
		cfg.Control != (Control{"/tmp/m.sock", 0o660}) || cfg.Hooks != nil {
		t.Errorf("top level: %+v", cfg)
	}
	a, b, c := cfg.WANs[0], cfg.WANs[1], cfg.WANs[2]
	if a.Table != 16 || a.NAT != "none" || b.Table != 102 || c.Table != 103 {
		t.Errorf("tables or nat: %+v %+v %+v", a, b, c)
	}
	wantProbe := Probe{
		Method:      "dns",
		Targets:     []string{"192.0.2.53", "[2001:db8::53]:5353"},
		Interval:    DefaultProbeInterval,
		Timeout:     DefaultProbeTimeout,
		Down:        DefaultProbeDown,
		Up:          DefaultProbeUp,
		Reliability: 2,
		MaxLoss:     0.125,
	}
	if !reflect.DeepEqual(a.Probe, wantProbe) || !reflect.DeepEqual(b.Probe, wantProbe) {
		t.Errorf("aliased probe:\n%+v\n%+v\nwant %+v", a.Probe, b.Probe, wantProbe)
	}
	wantProbe.Method, wantProbe.Targets, wantProbe.Reliability, wantProbe.MaxLoss = "tcp", []string{"192.0.2.1:443"}, 1, 0
	if !reflect.DeepEqual(c.Probe, wantProbe) {
		t.Errorf("merged probe:\n%+v\nwant %+v", c.Probe, wantProbe)
	}
	p := cfg.Policies[0]
	if p.LastResort != "main" || p.Sticky != "source" {
		t.Errorf("policy: %+v", p)
	}
	r := cfg.Rules[0]
	wantRule := Rule{
		Name:    "r",
		Src:     []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")},
		Dst:     []netip.Prefix{netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("198.51.100.7/32")},
		Proto:   "udp",
		SrcPort: []PortRange{{53, 53}},
		DstPort: []PortRange{{53, 53}, {1000, 2000}, {65535, 65535}},
		IIF:     []string{"eth9"},
		Policy:  "p",
		Pos:     Pos{30, 5},
	}
	if !reflect.DeepEqual(r, wantRule) {
		t.Errorf("rule:\n got %+v\nwant %+v", r, wantRule)
	}
	if cfg.Rules[1].Proto != "gre" || cfg.Rules[2].Proto != "99" {
		t.Errorf("numeric protocols: %q, %q", cfg.Rules[1].Proto, cfg.Rules[2].Proto)
	}
	// One implicit policy per WAN, in order of first use.
	var implicit []string
	for _, p := range cfg.Policies {
		if p.Implicit {
			implicit = append(implicit, p.Name)
		}
	}
	if want := []string{"wan:c", "wan:a"}; !reflect.DeepEqual(implicit, want) {
		t.Errorf("implicit policies %q, want %q", implicit, want)
	}
	if got := cfg.Rules[3].Policy; got != "wan:a" {
		t.Errorf("rule u policy %q, want wan:a", got)
	}
}

// TestReservedDefaultTable checks that the 153rd WAN, whose default table
// would be 253, is told to set its table, besides the limit of 99 WANs that
// makes it unreachable today.
func TestReservedDefaultTable(t *testing.T) {
	var b strings.Builder
	b.WriteString("mark_mask: 0xffff0000\nwans:\n")
	for i := range 153 {
		fmt.Fprintf(&b, "  - {name: w%d, interface: eth%d, gateway: auto}\n", i, i)
	}
	b.WriteString("policies: [{name: p, members: [{wan: w0}]}]\ndefault_policy: p\n")
	_, err := Parse("t.yaml", []byte(b.String()))
	want := "t.yaml:102:6: at most 99 WANs (ip rule priorities are allocated in bands of 100)\n" +
		"t.yaml:155:6: the default table 253 of this WAN is reserved for the kernel's default table; set table"
	if err == nil || err.Error() != want {
		t.Errorf("Parse = %v, want %s", err, want)
	}
}

func TestFileModes(t *testing.T) {
	for _, mode := range []string{`0600`, `600`, `0o600`, `"0600"`, `"600"`} {
		cfg, err := Parse("t.yaml", []byte(`wans: [{name: a, interface: eth0, gateway: auto}]
policies: [{name: p, members: [{wan: a}]}]
default_policy: p
control: {mode: `+mode+`}
`))
		if err != nil {
			t.Errorf("mode %s: %v", mode, err)
			continue
		}
		if cfg.Control.Mode != 0o600 {
			t.Errorf("mode %s = %#o, want 0600", mode, cfg.Control.Mode)
		}
	}
}

// TestAliasBomb checks that aliases expanding exponentially ("billion
// laughs") are refused quickly instead of exhausting time and memory.
func TestAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("m0: &m0 {nat: none}\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&b, "m%d: &m%d {<<: [*m%d, *m%d, *m%d, *m%d, *m%d, *m%d, *m%d, *m%d, *m%d, *m%d]}\n",
			i, i, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1)
	}
	b.WriteString("wans: [{name: a, interface: eth0, gateway: auto, <<: *m9}]\n")
	start := time.Now()
	_, err := Parse("t.yaml", []byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("config too large: aliases expand to more than %d values", maxNodes)) {
		t.Errorf("Parse = %v, want a config too large error", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Parse took %v", d)
	}
}

func TestSocketPath(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct{ file, want string }{
		{write("valid.yaml", "wans: [{name: a, interface: e0, gateway: 192.0.2.1}]\npolicies: [{name: p, members: [{wan: a}]}]\ndefault_policy: p\ncontrol: {socket: /run/x.sock}\n"), "/run/x.sock"},
		{write("invalid.yaml", "wans: []\ncontrol:\n  socket: /run/y.sock\nbogus: 1\n"), "/run/y.sock"},
		{write("broken.yaml", "wans: [\ncontrol:\n  socket: /run/z.sock\n"), "/run/z.sock"},
		{write("none.yaml", "wans: []\n"), DefaultSocket},
		{filepath.Join(dir, "missing.yaml"), DefaultSocket},
	}
	for _, c := range cases {
		if got := SocketPath(c.file); got != c.want {
			t.Errorf("SocketPath(%s) = %q, want %q", filepath.Base(c.file), got, c.want)
		}
	}
}

func TestListFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("metered.txt", "# metered devices\n198.51.100.7\n\n198.51.100.64/26   # cameras\n198.51.100.7\n")
	write("bad.txt", "203.0.113.0/24\n  10.0.0.1/8\nnot-an-address\n203.0.113.5 203.0.113.6\n")
	write("empty.txt", "# nothing yet\n")
	head := "wans: [{name: a, interface: e0, gateway: 192.0.2.1}, {name: b, interface: e1, gateway: 192.0.2.65}]\n" +
		"policies: [{name: p, members: [{wan: a}]}]\ndefault_policy: p\nrules:\n"
	cfgPath := filepath.Join(dir, "multiwan.yaml")

	write("multiwan.yaml", head+"  - {name: metered, src_file: metered.txt, src: [198.51.100.9], wan: b}\n")
	cfg, err := Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Rules[0]
	if len(r.Src) != 4 || r.SrcFile != filepath.Join(dir, "metered.txt") {
		t.Fatalf("src %v from %q", r.Src, r.SrcFile)
	}

	write("multiwan.yaml", head+"  - {name: bad, dst_file: bad.txt, wan: b}\n  - {name: gone, src_file: /nonexistent/list.txt, wan: b}\n  - {name: empty, src_file: empty.txt, wan: b}\n")
	_, err = Load(cfgPath)
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("want errors, got %v", err)
	}
	got := strings.Join(list.Lines(), "\n")
	bad := filepath.Join(dir, "bad.txt")
	for _, want := range []string{
		bad + ":2:3: 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?",
		bad + `:3:1: expected an IP address or CIDR prefix, got "not-an-address"`,
		bad + `:4:1: one address or prefix per line, got "203.0.113.5 203.0.113.6"`,
		cfgPath + ":6:28: src_file: cannot read list file: open /nonexistent/list.txt: no such file or directory",
		cfgPath + ":7:29: src_file: list file " + filepath.Join(dir, "empty.txt") + " has no addresses",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
}

func TestIPv6Settings(t *testing.T) {
	_, err := Parse("v6.yaml", []byte(`wans:
  - {name: a, interface: e0, gateway: "2001:db8::1"}
  - {name: b, interface: e1, gateway: 192.0.2.1, gateway6: 192.0.2.9, prefixes6: [192.0.2.0/24]}
  - {name: c, interface: e2, gateway: 192.0.2.65, gateway6: "ff02::1", nat6: maybe}
policies: [{name: p, members: [{wan: a}]}]
default_policy: p
`))
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("want errors, got %v", err)
	}
	want := []string{
		"v6.yaml:2:39: gateway: 2001:db8::1 is not an IPv4 address; an IPv6 gateway goes in gateway6",
		"v6.yaml:3:60: gateway6: 192.0.2.9 is not a usable IPv6 gateway address",
		"v6.yaml:3:82: prefixes6: 192.0.2.0/24 is not an IPv6 prefix",
		"v6.yaml:4:61: gateway6: ff02::1 is not a usable IPv6 gateway address",
		`v6.yaml:4:78: nat6: expected masquerade or none, got "maybe"`,
	}
	if got := list.Lines(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestHTTPListener(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "token")
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(good, []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(short, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	head := "wans: [{name: a, interface: eth0, gateway: 192.0.2.1, probe: {targets: [203.0.113.20]}}]\npolicies: [{name: p, members: [{wan: a}]}]\ndefault_policy: p\n"
	cfg, err := Parse("t.yaml", []byte(head+"http: {listen: \"198.18.0.1:9731\", token_file: "+good+"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.Listen.String() != "198.18.0.1:9731" || cfg.HTTP.TokenFile != good {
		t.Fatalf("http %+v", cfg.HTTP)
	}
	if tok, err := ReadToken(good); err != nil || tok != "0123456789abcdef0123" {
		t.Fatalf("token %q %v", tok, err)
	}
	for text, want := range map[string]string{
		"http: {listen: 9731}\n":                                    "t.yaml:4:16: listen: expected an address and port, like 198.18.0.1:9731, got 9731",
		"http: {listen: \"198.18.0.1:0\"}\n":                        `t.yaml:4:16: listen: expected an address and port, like 198.18.0.1:9731, got "198.18.0.1:0"`,
		"http: {token_file: " + good + "}\n":                        "t.yaml:4:8: listen is required",
		"http: {listen: \"[::1]:80\", token_file: " + short + "}\n": "t.yaml:4:40: token_file: token file " + short + ": the token must be at least 16 characters (e.g. head -c 24 /dev/urandom | base64)",
	} {
		_, err := Parse("t.yaml", []byte(head+text))
		if err == nil || err.Error() != want {
			t.Errorf("%s: got %v\nwant %s", text, err, want)
		}
	}
}
