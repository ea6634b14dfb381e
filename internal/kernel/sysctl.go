package kernel

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/multiwan/multiwan/internal/plan"
)

// DefaultSysctlRoot is where the kernel's settings are.
const DefaultSysctlRoot = "/proc/sys"

// Sysctls sets kernel settings and puts back the ones it changed. The zero
// value works on DefaultSysctlRoot and keeps the originals in memory only.
//
// The settings are those of the network namespace the process runs in
// (/proc/sys/net follows the namespace of the thread that opens it).
type Sysctls struct {
	// Root is the directory the keys are relative to; empty means
	// DefaultSysctlRoot. Tests point it at a temporary directory.
	Root string

	// StateFile, when set, is where the original value of every key is
	// recorded before the key is first changed, so that a run killed
	// with -9 does not take them along: the next run loads them (on its
	// first Apply or Restore) in preference to the values it finds,
	// which are the killed run's, and its Restore puts back what was
	// there before multiwan ever ran, then removes the file. The daemon
	// uses <state_dir>/sysctl.json; on /run it is gone after a reboot,
	// as the changed values are.
	//
	// The file names keys only, not the network namespace they belong
	// to: two daemons in two namespaces need two state directories, or
	// one would restore the other's originals.
	StateFile string

	// originals holds, for each key this Sysctls changed, the value it
	// had before the first change; changed keeps the order of the changes
	// so that Restore undoes them in reverse.
	originals map[string]string
	changed   []string
	// loaded is set once StateFile has been read; ownFile while it holds
	// what this Sysctls loaded or wrote (so that Restore removes it, but
	// not a file it ignored and never replaced, nor one that cannot be).
	loaded, ownFile bool
}

// maxStateFile bounds the state file that is read: a handful of keys take
// a few hundred bytes, so anything near this is not the daemon's.
const maxStateFile = 1 << 20

// sysctlState is the state file's content.
type sysctlState struct {
	// Version is 1; a file of another version is not trusted.
	Version int `json:"version"`
	// Originals are in the order the keys were changed.
	Originals []sysctlOriginal `json:"originals"`
}

type sysctlOriginal struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Apply sets every desired value that differs from the current one and
// logs each change with its reason. A per-interface key whose interface is
// absent is skipped with a warning: the interface may appear later, and the
// next apply sets it then. Keys changed by an earlier Apply that are no
// longer desired (a WAN removed by a reload) are put back.
func (s *Sysctls) Apply(desired []plan.Sysctl, log *slog.Logger) error {
	log = orDiscard(log)
	s.load(log)
	var errs []error
	wanted := make(map[string]bool, len(desired))
	for _, d := range desired {
		wanted[d.Key] = true
		if err := s.set(d, log); err != nil {
			errs = append(errs, err)
		}
	}
	restored := false
	for _, key := range slices.Clone(s.changed) {
		if !wanted[key] {
			restored = true
			if err := s.restore(key, log); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if restored {
		if err := s.persist(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Restore writes back the original value of every key Apply changed, in
// reverse order, and forgets them; with a StateFile, also those a killed
// earlier run recorded, and then removes the file. Keys whose file has
// vanished (the interface was removed) are skipped: there is nothing left
// to restore. A key that cannot be written back stays recorded, so that a
// later Restore tries again.
func (s *Sysctls) Restore(log *slog.Logger) error {
	log = orDiscard(log)
	s.load(log)
	var errs []error
	for _, key := range slices.Backward(slices.Clone(s.changed)) {
		if err := s.restore(key, log); err != nil {
			errs = append(errs, err)
		}
	}
	if err := s.persist(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// load reads the originals a killed run left in StateFile, once. They
// take precedence over the values found now, which are the killed run's.
// A file that cannot be read or is not what this code writes is logged
// and ignored: trusting it could write arbitrary values to /proc/sys. It
// is overwritten at the next change.
func (s *Sysctls) load(log *slog.Logger) {
	if s.loaded || s.StateFile == "" {
		return
	}
	s.loaded = true
	entries, err := s.readState()
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		log.Warn("sysctl state file ignored: the values from before an earlier run cannot be restored; check them by hand",
			"file", s.StateFile, "err", err)
		return
	}
	s.ownFile = true
	var keys []string
	for _, e := range entries {
		if _, seen := s.originals[e.Key]; seen {
			continue
		}
		if s.originals == nil {
			s.originals = make(map[string]string)
		}
		s.originals[e.Key] = e.Value
		s.changed = append(s.changed, e.Key)
		keys = append(keys, e.Key)
	}
	if len(keys) > 0 {
		log.Info("sysctl originals recovered from an earlier run that did not stop cleanly", "file", s.StateFile, "keys", keys)
	}
}

// readState reads and checks StateFile.
func (s *Sysctls) readState() ([]sysctlOriginal, error) {
	f, err := os.Open(s.StateFile)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return nil, err
	} else if !fi.Mode().IsRegular() || fi.Size() > maxStateFile {
		return nil, fmt.Errorf("not a regular file of at most %d bytes (%v, %d bytes)", maxStateFile, fi.Mode(), fi.Size())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxStateFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxStateFile {
		return nil, fmt.Errorf("longer than %d bytes", maxStateFile)
	}
	var st sysctlState
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("corrupt: %w", err)
	}
	if dec.More() {
		return nil, errors.New("corrupt: data after the JSON object")
	}
	if st.Version != 1 {
		return nil, fmt.Errorf("version %d, want 1", st.Version)
	}
	seen := make(map[string]bool, len(st.Originals))
	for _, e := range st.Originals {
		if _, err := s.path(e.Key); err != nil {
			return nil, err
		}
		if seen[e.Key] {
			return nil, fmt.Errorf("key %s recorded twice", e.Key)
		}
		seen[e.Key] = true
		if normalize(e.Value) != e.Value {
			return nil, fmt.Errorf("key %s: value %q is not one this code records", e.Key, e.Value)
		}
	}
	return st.Originals, nil
}

// persist makes StateFile hold the originals of the keys changed now, or
// removes it when there are none.
func (s *Sysctls) persist() error {
	if s.StateFile == "" {
		return nil
	}
	if len(s.changed) == 0 {
		if !s.ownFile {
			return nil
		}
		if err := os.Remove(s.StateFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove the sysctl state file: %w", err)
		}
		s.ownFile = false
		return nil
	}
	st := sysctlState{Version: 1}
	for _, key := range s.changed {
		st.Originals = append(st.Originals, sysctlOriginal{Key: key, Value: s.originals[key]})
	}
	data, err := json.MarshalIndent(st, "", "\t")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(s.StateFile, append(data, '\n')); err != nil {
		return fmt.Errorf("record sysctl originals (check that the state directory is writable): %w", err)
	}
	s.ownFile = true
	return nil
}

// writeFileAtomic replaces path with data so that a crash leaves either
// the old file or the new one, never a mix: a temporary file in the same
// directory, synced, renamed over path, and the directory synced.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = f.Chmod(0o600)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// strict reports whether the reverse-path filter at key is strict (1),
// counting its `all` sibling: the kernel uses the larger of the two.
func (s *Sysctls) strict(key, current string) bool {
	if current == "1" {
		return true
	}
	dir, name := path.Split(key)
	all := path.Join(path.Dir(path.Clean(dir)), "all", name)
	p, err := s.path(all)
	if err != nil {
		return false
	}
	v, err := readValue(p)
	return err == nil && v == "1"
}

func (s *Sysctls) set(d plan.Sysctl, log *slog.Logger) error {
	path, err := s.path(d.Key)
	if err != nil {
		return err
	}
	current, err := readValue(path)
	if errors.Is(err, fs.ErrNotExist) && perInterface(d.Key) {
		log.Warn("sysctl not set: interface absent", "key", d.Key, "value", d.Value, "reason", d.Comment)
		return nil
	}
	if err != nil {
		return fmt.Errorf("sysctl %s: %w", d.Key, err)
	}
	want := normalize(d.Value)
	if current == want {
		return nil
	}
	if d.Loosen && !s.strict(d.Key, current) {
		return nil
	}
	if _, seen := s.originals[d.Key]; !seen {
		// Recorded before the change: a crash right after the write
		// must not take the original along.
		if s.originals == nil {
			s.originals = make(map[string]string)
		}
		s.originals[d.Key] = current
		s.changed = append(s.changed, d.Key)
		if err := s.persist(); err != nil {
			s.forget(d.Key)
			return fmt.Errorf("sysctl %s not changed: %w", d.Key, err)
		}
	}
	if err := writeValue(path, want); err != nil {
		// The original stays recorded; restoring it is harmless.
		return fmt.Errorf("sysctl %s=%s: %w", d.Key, want, err)
	}
	log.Info("sysctl set", "key", d.Key, "from", current, "to", want, "reason", d.Comment)
	return nil
}

// restore puts back the original of key and forgets it, unless writing it
// back fails. The caller persists the change.
func (s *Sysctls) restore(key string, log *slog.Logger) error {
	original := s.originals[key]
	path, err := s.path(key)
	if err != nil {
		s.forget(key) // can never be restored
		return err
	}
	current, err := readValue(path)
	if errors.Is(err, fs.ErrNotExist) {
		s.forget(key)
		log.Debug("sysctl not restored: gone", "key", key)
		return nil
	}
	if err != nil {
		return fmt.Errorf("sysctl %s: %w", key, err)
	}
	if current != original {
		if err := writeValue(path, original); err != nil {
			return fmt.Errorf("restore sysctl %s=%s: %w", key, original, err)
		}
		log.Info("sysctl restored", "key", key, "from", current, "to", original)
	}
	s.forget(key)
	return nil
}

func (s *Sysctls) forget(key string) {
	delete(s.originals, key)
	s.changed = slices.DeleteFunc(s.changed, func(k string) bool { return k == key })
}

// path maps a key such as "net/ipv4/conf/wan1/rp_filter" to its file,
// refusing keys that would leave Root.
func (s *Sysctls) path(key string) (string, error) {
	if key == "" || !filepath.IsLocal(key) {
		return "", fmt.Errorf("sysctl key %q: not a path below %s", key, s.root())
	}
	return filepath.Join(s.root(), key), nil
}

func (s *Sysctls) root() string {
	if s.Root == "" {
		return DefaultSysctlRoot
	}
	return s.Root
}

// perInterface reports whether key belongs to one network interface, e.g.
// net/ipv4/conf/wan1/rp_filter (but not .../conf/all/... or .../default/...).
func perInterface(key string) bool {
	parts := strings.Split(key, "/")
	if len(parts) < 5 || parts[0] != "net" {
		return false
	}
	switch parts[2] {
	case "conf", "neigh":
		return parts[3] != "all" && parts[3] != "default"
	}
	return false
}

func readValue(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return normalize(string(b)), nil
}

// writeValue writes to an existing file only: a missing sysctl is an error,
// never a file to create.
func writeValue(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// normalize makes values comparable: the kernel separates the fields of a
// multi-valued setting with tabs and ends with a newline.
func normalize(v string) string {
	return strings.Join(strings.Fields(v), " ")
}
