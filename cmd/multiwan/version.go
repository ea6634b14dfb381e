package main

import (
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// Set at link time by release builds (make build-ARCH, make deb):
//
//	go build -ldflags "-X main.buildVersion=1.2.0 -X main.buildCommit=0123abc -X main.buildModified=true" ./cmd/multiwan
//
// Any may be left empty; the build info the go command records fills in
// what it knows (module version, vcs.revision, vcs.modified), when it
// stamps it (not with -buildvcs=false).
var (
	buildVersion  string
	buildCommit   string
	buildModified string // "true": built from a tree with uncommitted changes
)

// versionInfo is what `multiwan version` reports.
type versionInfo struct {
	Version  string // release version, module version, or "devel"
	Commit   string // VCS revision, or "unknown"
	Modified bool   // built from a tree with uncommitted changes
	Go       string // toolchain that built the binary, with GOOS/GOARCH
}

// readVersion combines the link-time values with the build info.
func readVersion(bi *debug.BuildInfo, ok bool, version, commit, modified string) versionInfo {
	v := versionInfo{Version: version, Commit: commit, Modified: modified == "true", Go: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH}
	if ok && bi != nil {
		if bi.GoVersion != "" {
			v.Go = bi.GoVersion + " " + runtime.GOOS + "/" + runtime.GOARCH
		}
		if v.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if v.Commit == "" {
					v.Commit = s.Value
				}
			case "vcs.modified":
				v.Modified = v.Modified || s.Value == "true"
			}
		}
	}
	if v.Version == "" {
		v.Version = "devel"
	}
	if v.Commit == "" {
		v.Commit = "unknown"
	}
	return v
}

// String is the report, one line each: "version X", "commit Y", "go Z".
func (v versionInfo) String() string {
	commit := v.Commit
	if v.Modified {
		commit += " (modified)"
	}
	return fmt.Sprintf("version %s\ncommit %s\ngo %s\n", v.Version, commit, v.Go)
}

func version(args []string, stdout, stderr io.Writer) int {
	// No -c: the version is the binary's, whatever the config.
	fs := flag.NewFlagSet("multiwan version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	if !parse(fs, args, stderr) {
		return 2
	}
	bi, ok := debug.ReadBuildInfo()
	fmt.Fprint(stdout, readVersion(bi, ok, buildVersion, buildCommit, buildModified))
	return 0
}
