package config

import (
	"os"
	"regexp"
	"strings"

	"github.com/goccy/go-yaml"
)

// SocketPath returns the control socket named in the config at path, for
// the client commands. It reads the file leniently: `multiwan reload` must
// reach the daemon even when the new file is broken, so that the daemon can
// refuse it with its errors. Whatever cannot be read yields DefaultSocket.
func SocketPath(path string) string {
	if cfg, err := Load(path); err == nil {
		return cfg.Control.Socket
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return DefaultSocket
	}
	var partial struct {
		Control struct {
			Socket string `yaml:"socket"`
		} `yaml:"control"`
	}
	if yaml.Unmarshal(data, &partial) == nil && partial.Control.Socket != "" {
		return partial.Control.Socket
	}
	// Not even YAML: look for an indented `socket:` line.
	if m := socketLine.FindSubmatch(data); m != nil {
		return strings.Trim(string(m[1]), `"'`)
	}
	return DefaultSocket
}

var socketLine = regexp.MustCompile(`(?m)^\s+socket:\s*(\S+)\s*(?:#.*)?$`)
