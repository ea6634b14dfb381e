package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/multiwan/multiwan/internal/config"
	"github.com/multiwan/multiwan/internal/control"
)

// dial finds the daemon through the control socket named in the config. The
// config may be broken (reload is how a user finds out), so the socket path
// is read leniently.
func dial(path string, stderr io.Writer) (*control.Client, bool) {
	c, err := control.Dial(config.SocketPath(path))
	if err != nil {
		fmt.Fprintf(stderr, "multiwan: %v\n", err)
		return nil, false
	}
	return c, true
}

func status(args []string, stdout, stderr io.Writer) int {
	fs, path := flags("status", stderr)
	asJSON := fs.Bool("json", false, "print the status as JSON")
	if fs.Parse(args) != nil {
		return 2
	}
	c, ok := dial(*path, stderr)
	if !ok {
		return 1
	}
	defer c.Close()
	st, err := c.Status()
	if err != nil {
		fmt.Fprintf(stderr, "multiwan status: %v\n", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(st); err != nil {
			fmt.Fprintf(stderr, "multiwan status: %v\n", err)
			return 1
		}
		return 0
	}
	st.Table(stdout)
	return 0
}

func use(args []string, stdout, stderr io.Writer) int {
	fs, path := flags("use", stderr)
	if fs.Parse(args) != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: multiwan use [-c FILE] WAN|auto")
		return 2
	}
	c, ok := dial(*path, stderr)
	if !ok {
		return 1
	}
	defer c.Close()
	if err := c.Use(fs.Arg(0)); err != nil {
		fmt.Fprintf(stderr, "multiwan use: %v\n", err)
		return 1
	}
	if fs.Arg(0) == "auto" {
		fmt.Fprintln(stdout, "automatic choice restored")
	} else {
		fmt.Fprintf(stdout, "new connections prefer %s; established TCP connections stay where they are\n", fs.Arg(0))
	}
	return 0
}

func reload(args []string, stdout, stderr io.Writer) int {
	fs, path := flags("reload", stderr)
	if fs.Parse(args) != nil {
		return 2
	}
	c, ok := dial(*path, stderr)
	if !ok {
		return 1
	}
	defer c.Close()
	if err := c.Reload(); err != nil {
		// The daemon's refusal carries the FILE:LINE:COL lines.
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintln(stdout, "reloaded")
	return 0
}
