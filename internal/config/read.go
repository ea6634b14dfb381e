package config

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"syscall"
)

// maxConfigBytes bounds the config file. Real configs are a few kilobytes;
// long address lists belong in list files, which have their own bound.
// The daemon parses reloads itself, and the YAML library costs 10-50
// bytes of memory per byte of input: 4 MiB keeps a hostile file within
// about 60 MB on a small router, where 16 MiB could cost 220 MB.
const maxConfigBytes = 4 << 20

// fileProblem is a file that was opened but is not one multiwan reads: not
// a regular file, or larger than the limit. Its message reads after the
// file's description: "config file " + msg.
type fileProblem struct{ msg string }

func (p *fileProblem) Error() string { return p.msg }

// OpenRegular opens the file at path for reading if it is a regular file
// (a symlink to one is fine), and returns it with its information. It
// never blocks: a FIFO without a writer would block a plain open, so the
// file is opened with O_NONBLOCK and its type taken from the open
// descriptor; anything but a regular file (a device such as /dev/zero,
// which never ends, a FIFO, a directory) is closed again and refused with
// an error saying what it is ("is a character device, not a regular
// file"), without the path. Other failures are the *os.PathError.
func OpenRegular(path string) (*os.File, fs.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, nil, &fileProblem{fmt.Sprintf("is %s, not a regular file", describeMode(st.Mode()))}
	}
	return f, st, nil
}

// readRegular reads the regular file at path, of at most limit bytes.
//
// Anything else is refused before a byte of it is read: a character device
// such as /dev/zero never ends, and a FIFO without a writer would block the
// open itself, so the file is opened with O_NONBLOCK and its type taken
// from the open descriptor (a symlink to a regular file is fine). The limit
// is enforced while reading.
//
// A file that cannot be opened or read yields the *os.PathError; one that
// is refused, a *fileProblem.
func readRegular(path string, limit int64) ([]byte, error) {
	f, st, err := OpenRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// The size is a hint, to allocate once: a file can grow, and /proc
	// files say they are empty.
	r := io.LimitReader(f, limit+1)
	data := make([]byte, 0, min(max(st.Size(), 0), limit)+1)
	for int64(len(data)) <= limit {
		if len(data) == cap(data) {
			data = slices.Grow(data, max(len(data), 4096))
		}
		n, err := r.Read(data[len(data):cap(data)])
		data = data[:len(data)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if int64(len(data)) > limit {
		return nil, &fileProblem{fmt.Sprintf("is larger than %d MiB", limit>>20)}
	}
	return data, nil
}

// describeMode names the type of a file that is not regular.
func describeMode(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return "a special file"
}
