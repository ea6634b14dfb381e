package config

import (
	"regexp"
	"strings"
)

// SocketPath returns the control socket named in the config at path, for
// the client commands. It reads the file leniently: `multiwan reload` must
// reach the daemon even when the new file is broken, so that the daemon can
// refuse it with its errors. Whatever cannot be read yields DefaultSocket.
//
// The file may be hostile, so it is read within the same bounds as by
// Load: a regular file of at most 4 MiB, parsed only within the limits of
// prescan, aliases expanded only as far as maxNodes.
func SocketPath(path string) string {
	if cfg, err := Load(path); err == nil {
		return cfg.Control.Socket
	}
	data, err := readRegular(path, maxConfigBytes)
	if err != nil {
		return DefaultSocket
	}
	data = normalize(data)
	if s := socketFromYAML(path, data); s != "" {
		return s
	}
	// Not even YAML: look for an indented `socket:` line.
	if m := socketLine.FindSubmatch(data); m != nil {
		return strings.Trim(string(m[1]), `"'`)
	}
	return DefaultSocket
}

var socketLine = regexp.MustCompile(`(?m)^\s+socket:\s*(\S+)\s*(?:#.*)?$`)

// socketFromYAML returns control.socket of a config that is YAML, whatever
// else is wrong with it; "" if it is not YAML or names no socket.
func socketFromYAML(path string, data []byte) (socket string) {
	d := &decoder{file: path}
	defer func() {
		if r := recover(); r != nil {
			if r != errTooLarge {
				panic(r)
			}
			socket = ""
		}
	}()
	root, ok := d.parseYAML(data)
	if !ok {
		return ""
	}
	root.mapping("", fields{"control": func(v value) {
		v.mapping("control", fields{"socket": func(v value) { socket, _ = v.str() }})
	}})
	return socket
}
