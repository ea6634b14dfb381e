package lab

// Userspace WireGuard in the lab: the CI kernel has no wireguard module,
// but it has tun, which is all wireguard-go needs. Each interface is one
// wireguard-go process run in the foreground (WG_PROCESS_FOREGROUND=1, -f)
// in its namespace by [Lab.Start], so the lab kills it on Close like any
// process it started; wg(8) configures it through its UAPI socket.
//
// That socket lives in /var/run/wireguard/NAME.sock, a directory shared by
// every network namespace (it is a file system path, not a netns object):
// two interfaces of one name, in two namespaces or in two labs running at
// once, would take each other's socket. So every interface name carries
// the lab's own short tag (from the process id and the lab's sequence
// number, see [Lab.wgName]) and a role letter, unique per lab and per
// namespace, within the 15 bytes of an interface name. A socket left by a
// wireguard-go killed with the lab is removed by Close.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// wgSocketDir is where wireguard-go puts its UAPI sockets.
const wgSocketDir = "/var/run/wireguard"

// WG is a wireguard-go interface in a lab namespace.
type WG struct {
	l     *Lab
	NS    string // logical namespace
	Iface string
	// Pub is the interface's public key (base64, as wg(8) prints it).
	Pub  string
	priv []byte
	proc *Proc
	// Port is its UDP listen port.
	Port int
}

// wgName returns a WireGuard interface name for this lab: "w", the
// process id and the lab's sequence in base 36, role and k, e.g.
// "w2ciuo-1r3". Unique per lab, role and k, and at most 15 bytes.
func (l *Lab) wgName(role byte, k int) string {
	// prefix is "mwl<pid>-<seq>-".
	f := strings.Split(strings.TrimSuffix(strings.TrimPrefix(l.prefix, "mwl"), "-"), "-")
	pid, _ := strconv.Atoi(f[0])
	seq, _ := strconv.Atoi(f[len(f)-1])
	return fmt.Sprintf("w%s-%s%c%d", strconv.FormatInt(int64(pid), 36), strconv.FormatInt(int64(seq), 36), role, k)
}

// wgKeys makes a key pair with wg(8): the private key, with its newline,
// as wg set reads it, and the public key.
func wgKeys() (priv []byte, pub string, err error) {
	priv, err = runCmd(nil, "wg", "genkey")
	if err != nil {
		return nil, "", err
	}
	out, err := runCmd(priv, "wg", "pubkey")
	if err != nil {
		return nil, "", err
	}
	return priv, strings.TrimSpace(string(out)), nil
}

// startWG starts a wireguard-go interface iface in namespace ns, listening
// on port, with address addr (a prefix, e.g. "198.19.1.2/24") and up; it
// has no peer yet.
func (l *Lab) startWG(ns, iface string, port int, addr string) (*WG, error) {
	if len(iface) > 15 {
		return nil, fmt.Errorf("lab: interface name %q longer than 15 bytes", iface)
	}
	priv, pub, err := wgKeys()
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(wgSocketDir, iface+".sock")
	// Registered first, so the socket goes whatever happens next.
	if err := l.track(staleSocket(sock)); err != nil {
		return nil, err
	}
	p, err := l.Start(ns, "env", "WG_PROCESS_FOREGROUND=1", "wireguard-go", "-f", iface)
	if err != nil {
		return nil, err
	}
	w := &WG{l: l, NS: ns, Iface: iface, Pub: pub, priv: priv, proc: p, Port: port}
	ctx, cancel := context.WithTimeout(context.Background(), linkWait)
	defer cancel()
	err = WaitFor(ctx, func() error {
		if p.Exited() {
			return fmt.Errorf("wireguard-go exited: %s", p.Output())
		}
		if _, err := os.Stat(sock); err != nil {
			return err
		}
		_, err := l.ipOut(ns, "link", "show", "dev", iface)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("lab: wireguard-go %s in %s: %w", iface, ns, err)
	}
	if _, err := l.nsRun(ns, priv, "wg", "set", iface, "listen-port", strconv.Itoa(port), "private-key", "/dev/stdin"); err != nil {
		return nil, err
	}
	if err := l.ipBatch(ns, []string{"addr add " + addr + " dev " + iface, "link set dev " + iface + " up"}); err != nil {
		return nil, err
	}
	l.log("lab: wireguard-go %s in %s, port %d, %s", iface, ns, port, addr)
	return w, nil
}

// staleSocket is a UAPI socket that a killed wireguard-go left behind;
// Close removes it (Lab.track closes it after killing the processes).
type staleSocket string

func (s staleSocket) Close() error {
	if err := os.Remove(string(s)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// SetPeer adds or changes the peer with public key pub: args are wg set's
// peer options ("endpoint", "198.19.0.2:30001", "allowed-ips", ...).
func (w *WG) SetPeer(pub string, args ...string) error {
	_, err := w.l.nsRun(w.NS, nil, append([]string{"wg", "set", w.Iface, "peer", pub}, args...)...)
	return err
}

// RemovePeer removes the peer with public key pub: its packets are
// dropped from then on, as a stopped peer's would be.
func (w *WG) RemovePeer(pub string) error {
	_, err := w.l.nsRun(w.NS, nil, "wg", "set", w.Iface, "peer", pub, "remove")
	return err
}

// Show returns `wg show IFACE what` (e.g. "endpoints", "latest-handshakes",
// "listen-port", "fwmark"), trimmed.
func (w *WG) Show(what string) (string, error) {
	out, err := w.l.nsRun(w.NS, nil, "wg", "show", w.Iface, what)
	return strings.TrimSpace(string(out)), err
}

// PeerEndpoint returns the endpoint wg knows for the peer pub ("" none).
func (w *WG) PeerEndpoint(pub string) (string, error) {
	out, err := w.Show("endpoints")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == pub && f[1] != "(none)" {
			return f[1], nil
		}
	}
	return "", nil
}

// LatestHandshake returns when the last handshake with peer pub was
// completed (zero: never).
func (w *WG) LatestHandshake(pub string) (time.Time, error) {
	out, err := w.Show("latest-handshakes")
	if err != nil {
		return time.Time{}, err
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == pub {
			sec, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil || sec == 0 {
				return time.Time{}, err
			}
			return time.Unix(sec, 0), nil
		}
	}
	return time.Time{}, nil
}

// Stop kills the interface's wireguard-go (the interface goes with it).
func (w *WG) Stop() error { return w.proc.Kill() }
