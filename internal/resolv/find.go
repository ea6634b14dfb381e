package resolv

import (
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Finder finds the lease file of an interface among the places DHCP
// clients keep them (see the package comment).
type Finder struct {
	// Root is prepended to every place looked at; "" for the real file
	// system (tests use a directory).
	Root string
}

// maxCandidates bounds the files a glob may offer: a directory full of
// leases is somebody's mistake, not a reason to stat thousands.
const maxCandidates = 32

// Candidates lists the places a lease of iface (with ifindex, 0 if
// unknown) may be, in the order they are preferred on a tie.
func (f Finder) Candidates(iface string, ifindex int) []string {
	var out []string
	if ifindex > 0 {
		out = append(out, "/run/systemd/netif/leases/"+strconv.Itoa(ifindex))
	}
	out = append(out, "/var/lib/dhcp/dhclient."+iface+".leases")
	for _, pattern := range []string{
		"/var/lib/dhcp/dhclient-*-" + iface + ".lease",
		"/var/lib/NetworkManager/dhclient-*-" + iface + ".lease",
		"/var/lib/NetworkManager/internal-*-" + iface + ".lease",
	} {
		matches, _ := filepath.Glob(f.Root + pattern)
		if len(matches) > maxCandidates {
			matches = matches[:maxCandidates]
		}
		for _, m := range matches {
			out = append(out, m[len(f.Root):])
		}
	}
	return append(out, "/var/lib/dhcp/dhclient.leases")
}

// Find returns the most recently written lease file of iface, as a path
// under Root, or "" when there is none.
func (f Finder) Find(iface string, ifindex int) string {
	var best string
	var bestTime time.Time
	for _, c := range f.Candidates(iface, ifindex) {
		st, err := os.Stat(f.Root + c)
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		if best == "" || st.ModTime().After(bestTime) {
			best, bestTime = f.Root+c, st.ModTime()
		}
	}
	return best
}
