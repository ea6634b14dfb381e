package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/multiwan/multiwan/internal/initconfig"
)

// initCmd is `multiwan init [-o FILE]`: it proposes a config for this box
// from its links and default routes, and prints it or writes it to FILE.
func initCmd(args []string, stdout, stderr io.Writer) int {
	return initWith(args, stdout, stderr, initconfig.Observe)
}

// initWith is initCmd reading the box with observe (tests give synthetic
// boxes).
func initWith(args []string, stdout, stderr io.Writer, observe func() (initconfig.Observed, error)) int {
	set := flag.NewFlagSet("multiwan init", flag.ContinueOnError)
	set.SetOutput(stderr)
	out := set.String("o", "", "write the config to `FILE` (refused if it exists) instead of stdout")
	if !parse(set, args, stderr) {
		return 2
	}
	if *out != "" {
		// Before looking at the box: an existing file is never replaced.
		if _, err := os.Lstat(*out); err == nil {
			fmt.Fprintf(stderr, "multiwan init: %s exists; init never replaces a config: move it away or choose another -o\n", *out)
			return 1
		}
	}
	obs, err := observe()
	if err != nil {
		fmt.Fprintf(stderr, "multiwan init: cannot read the interfaces and routes: %v\n", err)
		return 1
	}
	text, report, err := initconfig.Propose(obs)
	for _, line := range report {
		fmt.Fprintln(stderr, "multiwan init: "+line)
	}
	if err != nil {
		fmt.Fprintf(stderr, "multiwan init: %v\n", err)
		return 1
	}
	if *out == "" {
		fmt.Fprint(stdout, text)
		return 0
	}
	if err := writeNew(*out, []byte(text)); err != nil {
		fmt.Fprintf(stderr, "multiwan init: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "multiwan init: wrote %s; next: multiwan check -c %s, multiwan plan -c %s\n", *out, *out, *out)
	return 0
}

// writeNew writes data to path atomically and only if path does not
// exist: into a temporary file in the same directory, synced, then linked
// to path (link(2) fails if path exists, so a file that appeared meanwhile
// is not replaced either). The directory is created if missing.
func writeNew(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".multiwan-init-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s exists; init never replaces a config: move it away or choose another -o", path)
		}
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
