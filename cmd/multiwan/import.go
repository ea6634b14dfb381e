package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/multiwan/multiwan/internal/config"
	"github.com/multiwan/multiwan/internal/mwan3"
)

// maxImportBytes bounds the file import reads; mwan3 configs are a few
// kilobytes.
const maxImportBytes = 4 << 20

// importCmd is `multiwan import mwan3 FILE`: it converts an OpenWrt mwan3
// config to a multiwan config on stdout; warnings about what did not carry
// over go to stderr.
func importCmd(args []string, stdout, stderr io.Writer) int {
	const use = "usage: multiwan import mwan3 FILE   (FILE is /etc/config/mwan3 or a copy; - reads stdin)"
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprintln(stdout, use)
		return 0
	}
	if len(args) != 2 {
		fmt.Fprintln(stderr, use)
		return 2
	}
	if args[0] != "mwan3" {
		fmt.Fprintf(stderr, "multiwan import: cannot import %q: only mwan3 (OpenWrt) configs are known\n%s\n", args[0], use)
		return 2
	}
	path := args[1]
	data, err := readImport(path)
	if err != nil {
		fmt.Fprintf(stderr, "multiwan import: %v\n", err)
		return 1
	}
	name := path
	if path == "-" {
		name = "stdin"
	}
	res, err := mwan3.Convert(name, data)
	if err != nil {
		var list mwan3.ErrorList
		if errors.As(err, &list) {
			for _, e := range list {
				fmt.Fprintln(stderr, e.Error())
			}
		} else {
			fmt.Fprintf(stderr, "multiwan import: %v\n", err)
		}
		return 1
	}
	for _, w := range res.Warnings {
		fmt.Fprintln(stderr, w)
	}
	fmt.Fprint(stdout, res.YAML)
	return 0
}

// readImport reads a regular file (or stdin for "-") of at most
// maxImportBytes; a device or FIFO is refused before it is read.
func readImport(path string) ([]byte, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, _, err := config.OpenRegular(path)
		var pathErr *fs.PathError
		switch {
		case errors.As(err, &pathErr):
			return nil, err // it names the file
		case err != nil:
			return nil, fmt.Errorf("%s %w", path, err) // "PATH is a directory, not a regular file"
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, maxImportBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxImportBytes {
		return nil, fmt.Errorf("%s is larger than %d MiB", path, maxImportBytes>>20)
	}
	return data, nil
}
