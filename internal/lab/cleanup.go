package lab

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// open tracks the labs of this process for the signal handler. The handler
// is installed only while at least one lab is open, so programs that have
// closed their labs get their normal signal behaviour back.
var open struct {
	mu   sync.Mutex
	labs map[*Lab]struct{}
	sigc chan os.Signal
	stop chan struct{}
	// dying is set once a signal is being handled: a lab created after the
	// handler has taken its snapshot would be missed and leak.
	dying bool
}

func register(l *Lab) error {
	open.mu.Lock()
	defer open.mu.Unlock()
	if open.dying {
		return errors.New("lab: process is exiting on a signal")
	}
	if open.labs == nil {
		open.labs = make(map[*Lab]struct{})
	}
	if len(open.labs) == 0 {
		open.sigc = make(chan os.Signal, 1)
		open.stop = make(chan struct{})
		signal.Notify(open.sigc, syscall.SIGINT, syscall.SIGTERM)
		go handleSignals(open.sigc, open.stop)
	}
	open.labs[l] = struct{}{}
	return nil
}

func unregister(l *Lab) {
	open.mu.Lock()
	defer open.mu.Unlock()
	if _, ok := open.labs[l]; !ok {
		return
	}
	delete(open.labs, l)
	if len(open.labs) == 0 {
		signal.Stop(open.sigc)
		close(open.stop)
	}
}

// handleSignals closes all open labs on SIGINT/SIGTERM and then dies from
// the same signal, so the exit status still says what happened.
func handleSignals(sigc <-chan os.Signal, stop <-chan struct{}) {
	var sig os.Signal
	select {
	case sig = <-sigc:
	case <-stop:
		return
	}
	open.mu.Lock()
	open.dying = true
	labs := make([]*Lab, 0, len(open.labs))
	for l := range open.labs {
		labs = append(labs, l)
	}
	open.mu.Unlock()
	fmt.Fprintf(os.Stderr, "lab: %v: removing %d lab(s)\n", sig, len(labs))
	for _, l := range labs {
		l.Close()
	}
	signal.Reset(syscall.SIGINT, syscall.SIGTERM)
	if s, ok := sig.(syscall.Signal); ok {
		syscall.Kill(os.Getpid(), s)
		// The default action normally ends the process right here; this
		// is the fallback for a signal that is blocked or ignored.
		time.Sleep(2 * time.Second)
		os.Exit(128 + int(s))
	}
	os.Exit(1)
}

var staleRE = regexp.MustCompile(`^mwl(\d+)-\d+-`)

// SweepStale deletes lab namespaces ("mwl<pid>-<seq>-...") left behind by
// processes that no longer exist, killing any process still inside them,
// and their lab directories in the temporary directory. Those of running
// processes, including this one, are left alone. It returns the names of
// the namespaces it deleted.
func SweepStale() ([]string, error) {
	out, err := runCmd(nil, "ip", "netns", "list")
	if err != nil {
		return nil, err
	}
	var deleted []string
	var errs []error
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line) // "name (id: 3)" or "name"
		if len(f) == 0 {
			continue
		}
		name := f[0]
		m := staleRE.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid <= 0 || processAlive(pid) {
			continue
		}
		killNSProcs(name)
		if _, err := runCmd(nil, "ip", "netns", "del", name); err != nil {
			errs = append(errs, err)
			continue
		}
		deleted = append(deleted, name)
	}
	if err := sweepStaleDirs(); err != nil {
		errs = append(errs, err)
	}
	return deleted, errors.Join(errs...)
}

// sweepStaleDirs removes the lab directories ("mwl<pid>-<seq>-files-*" in
// the temporary directory) of processes that no longer exist.
func sweepStaleDirs() error {
	dirs, err := filepath.Glob(filepath.Join(os.TempDir(), "mwl*-*-files-*"))
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range dirs {
		m := staleRE.FindStringSubmatch(filepath.Base(d))
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid <= 0 || processAlive(pid) {
			continue
		}
		if fi, err := os.Lstat(d); err != nil || !fi.IsDir() {
			continue
		}
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func processAlive(pid int) bool {
	if pid == os.Getpid() {
		return true
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
