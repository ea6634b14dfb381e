package kernel

import (
	"errors"
	"fmt"
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
// value works on DefaultSysctlRoot.
type Sysctls struct {
	// Root is the directory the keys are relative to; empty means
	// DefaultSysctlRoot. Tests point it at a temporary directory.
	Root string

	// originals holds, for each key this Sysctls changed, the value it
	// had before the first change; changed keeps the order of the changes
	// so that Restore undoes them in reverse.
	originals map[string]string
	changed   []string
}

// Apply sets every desired value that differs from the current one and
// logs each change with its reason. A per-interface key whose interface is
// absent is skipped with a warning: the interface may appear later, and the
// next apply sets it then. Keys changed by an earlier Apply that are no
// longer desired (a WAN removed by a reload) are put back.
func (s *Sysctls) Apply(desired []plan.Sysctl, log *slog.Logger) error {
	log = orDiscard(log)
	var errs []error
	wanted := make(map[string]bool, len(desired))
	for _, d := range desired {
		wanted[d.Key] = true
		if err := s.set(d, log); err != nil {
			errs = append(errs, err)
		}
	}
	for _, key := range slices.Clone(s.changed) {
		if !wanted[key] {
			if err := s.restore(key, log); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Restore writes back the original value of every key Apply changed, in
// reverse order, and forgets them. Keys whose file has vanished (the
// interface was removed) are skipped: there is nothing left to restore.
func (s *Sysctls) Restore(log *slog.Logger) error {
	log = orDiscard(log)
	var errs []error
	for _, key := range slices.Backward(slices.Clone(s.changed)) {
		if err := s.restore(key, log); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
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
	if err := writeValue(path, want); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", d.Key, want, err)
	}
	if _, seen := s.originals[d.Key]; !seen {
		if s.originals == nil {
			s.originals = make(map[string]string)
		}
		s.originals[d.Key] = current
		s.changed = append(s.changed, d.Key)
	}
	log.Info("sysctl set", "key", d.Key, "from", current, "to", want, "reason", d.Comment)
	return nil
}

// restore puts back the original of key and forgets it.
func (s *Sysctls) restore(key string, log *slog.Logger) error {
	original := s.originals[key]
	delete(s.originals, key)
	s.changed = slices.DeleteFunc(s.changed, func(k string) bool { return k == key })
	path, err := s.path(key)
	if err != nil {
		return err
	}
	current, err := readValue(path)
	if errors.Is(err, fs.ErrNotExist) {
		log.Debug("sysctl not restored: gone", "key", key)
		return nil
	}
	if err != nil {
		return fmt.Errorf("sysctl %s: %w", key, err)
	}
	if current == original {
		return nil
	}
	if err := writeValue(path, original); err != nil {
		return fmt.Errorf("restore sysctl %s=%s: %w", key, original, err)
	}
	log.Info("sysctl restored", "key", key, "from", current, "to", original)
	return nil
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
