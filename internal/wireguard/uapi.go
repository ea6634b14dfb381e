package wireguard

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/multiwan/multiwan/internal/plan"
)

// The userspace API (https://www.wireguard.com/xplatform/): a client
// sends "get=1\n\n" on the interface's unix socket and the implementation
// answers with key=value lines, the interface's first, then each peer's
// from its public_key line on, and "errno=N" and an empty line at the end.

// Bounds on one answer: an interface with a few thousand peers fits; the
// rest is refused rather than read.
const (
	maxUAPIBytes = 4 << 20
	maxUAPILine  = 4 << 10
)

// readUAPI asks the UAPI socket at path, within ctx's deadline.
func readUAPI(ctx context.Context, path string) (*plan.TunnelInfo, error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no UAPI socket %s: %w", path, ErrNotWireGuard)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("wireguard: %w", err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if _, err := io.WriteString(conn, "get=1\n\n"); err != nil {
		return nil, fmt.Errorf("wireguard %s: %w", path, err)
	}
	t, err := parseUAPI(io.LimitReader(conn, maxUAPIBytes))
	if err != nil {
		return nil, fmt.Errorf("wireguard %s: %w", path, err)
	}
	t.Kind = "wireguard-go"
	return t, nil
}

// parseUAPI reads one answer to "get=1" up to its empty line, keeping the
// listen port, the fwmark, the number of peers and the first
// plan.MaxLearnedEndpoints endpoints. Keys it does not need are skipped;
// a malformed line, a value out of range, a non-zero errno, or an answer
// that ends before its empty line is an error.
func parseUAPI(r io.Reader) (*plan.TunnelInfo, error) {
	t := &plan.TunnelInfo{}
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 0, 512), maxUAPILine)
	seen := map[netip.AddrPort]bool{}
	for s.Scan() {
		line := s.Text()
		if line == "" {
			return t, nil
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("malformed line %q", short(line))
		}
		switch key {
		case "errno":
			n, err := strconv.Atoi(val)
			if err != nil {
				return nil, fmt.Errorf("errno %q", short(val))
			}
			if n != 0 {
				return nil, fmt.Errorf("the interface answered errno=%d", n)
			}
		case "listen_port":
			n, err := strconv.ParseUint(val, 10, 16)
			if err != nil {
				return nil, fmt.Errorf("listen_port %q", short(val))
			}
			t.ListenPort = uint16(n)
		case "fwmark":
			n, err := strconv.ParseUint(val, 0, 32)
			if err != nil {
				return nil, fmt.Errorf("fwmark %q", short(val))
			}
			t.FwMark = uint32(n)
		case "public_key":
			t.Peers++
		case "endpoint":
			if t.Peers == 0 {
				return nil, errors.New("endpoint before any peer")
			}
			ep, err := netip.ParseAddrPort(val)
			if err != nil || ep.Port() == 0 || ep.Addr().Zone() != "" {
				return nil, fmt.Errorf("endpoint %q", short(val))
			}
			ep = netip.AddrPortFrom(ep.Addr().Unmap(), ep.Port())
			if len(t.Endpoints) < plan.MaxLearnedEndpoints && !seen[ep] && !ep.Addr().IsUnspecified() {
				seen[ep] = true
				t.Endpoints = append(t.Endpoints, ep)
			}
		}
	}
	if err := s.Err(); err != nil {
		return nil, err
	}
	return nil, errors.New("the answer ended before its empty line")
}

// short cuts a value for an error message.
func short(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
