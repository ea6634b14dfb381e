package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"
)

// Server is the control socket: a unix socket serving the control API
// (NewAPI with Control set) over HTTP/1.1, hardened against clients that
// stall, flood or send junk; or the opt-in network listener (ListenTCP)
// serving the same API read-only, with the dashboard and metrics.
type Server struct {
	path   string // "" for a TCP listener
	ln     net.Listener
	ino    uint64 // the socket file's inode, to remove only our own
	lim    limits
	closed chan struct{} // closed with the listener

	closeOnce sync.Once
	closeErr  error
}

// Listen creates the control socket at path, with permissions mode (0600 if
// mode is 0: root only). It creates the parent directory (0755) if missing.
// A socket file that nothing listens on is left over from a daemon that
// died, and is replaced; a live one belongs to another daemon, and Listen
// refuses to take it over.
func Listen(path string, mode os.FileMode) (*Server, error) {
	if mode == 0 {
		mode = 0o600
	}
	mode &= os.ModePerm
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}

	lc := net.ListenConfig{
		// Linux creates the socket file with the socket inode's mode less
		// the umask, so setting the mode before bind leaves no moment in
		// which the file is open to more users than mode allows.
		Control: func(_, _ string, rc syscall.RawConn) error {
			var err error
			if cerr := rc.Control(func(fd uintptr) {
				err = syscall.Fchmod(int(fd), uint32(mode))
			}); cerr != nil {
				return cerr
			}
			return err
		},
	}
	l, err := lc.Listen(context.Background(), "unix", path)
	if errors.Is(err, syscall.EADDRINUSE) {
		// Another daemon bound the path since removeStale looked.
		return nil, fmt.Errorf("another multiwan is running on %s", path)
	}
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln := l.(*net.UnixListener)
	// Close removes the file itself, and only if it is still ours.
	ln.SetUnlinkOnClose(false)
	// The umask may have taken bits that mode asks for.
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		os.Remove(path)
		return nil, fmt.Errorf("control socket: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	s := &Server{path: path, ln: ln, lim: defaultLimits, closed: make(chan struct{})}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.ino = st.Ino
	}
	return s, nil
}

// removeStale removes a socket file at path that no process listens on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("control socket: %s exists and is not a socket; remove it or choose another control.socket", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("another multiwan is running on %s", path)
	}
	// Only "connection refused" proves that nobody listens; anything else
	// (a full backlog, a permission problem) could be a live daemon.
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("control socket: %s exists and cannot be checked: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("control socket: remove stale %s: %w", path, err)
	}
	return nil
}

// Limits of the unix-socket server; see limits.
const (
	// maxConns bounds the open connections. Each costs a goroutine and
	// two 4 KiB buffers; no real use needs more than a handful at once.
	maxConns = 128
	// readHeaderTimeout bounds the wait for a new connection's request
	// header: local clients send theirs in one write, so one that sends
	// nothing, or a byte at a time, is dropped after it.
	readHeaderTimeout = time.Second
	// readTimeout bounds the reading of a whole request, body included.
	readTimeout = 5 * time.Second
	// idleTimeout bounds the wait for the next request on a kept-alive
	// connection.
	idleTimeout = 2 * time.Second
	// maxHeaderBytes bounds a request's header (net/http allows 4 KiB of
	// slack over it).
	maxHeaderBytes = 8 << 10
	// shutdownGrace is how long Serve lets requests in flight finish once
	// it stops; after it their contexts are cancelled.
	shutdownGrace = 5 * time.Second
)

// limits are the server's bounds; tests shrink them.
type limits struct {
	maxConns          int
	readHeaderTimeout time.Duration
	readTimeout       time.Duration
	idleTimeout       time.Duration
	writeTimeout      time.Duration
	maxHeaderBytes    int
	maxStreams        int
	shutdownGrace     time.Duration
}

var defaultLimits = limits{
	maxConns:          maxConns,
	readHeaderTimeout: readHeaderTimeout,
	readTimeout:       readTimeout,
	idleTimeout:       idleTimeout,
	writeTimeout:      DefaultWriteTimeout,
	maxHeaderBytes:    maxHeaderBytes,
	maxStreams:        DefaultMaxStreams,
	shutdownGrace:     shutdownGrace,
}

// Path returns the socket's path.
func (s *Server) Path() string { return s.path }

// Serve answers requests with the control API over h (use and reload
// allowed) until ctx ends or s is closed. Then it stops accepting, closes
// idle connections, ends event streams, and lets the requests in flight
// finish for a few seconds before cancelling them. It returns nil on
// either of those, or the error that stopped it from accepting. log may
// be nil.
func (s *Server) Serve(ctx context.Context, h Handler, log *slog.Logger) error {
	return s.ServeWith(ctx, log, func(opt APIOptions) http.Handler {
		opt.Control = true
		return NewAPI(h, opt)
	})
}

// ListenTCP opens the network listener at addr ("192.0.2.1:9731"): the
// same hardened server as the control socket, for ServeWith.
func ListenTCP(addr string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http listener: %w", err)
	}
	return &Server{ln: ln, lim: defaultLimits, closed: make(chan struct{})}, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// ServeWith is Serve with the handler mk returns for the server's
// options (APIOptions with the server's limits and stop channel filled
// in), for a listener that serves more than the API.
func (s *Server) ServeWith(ctx context.Context, log *slog.Logger, mk func(APIOptions) http.Handler) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lim := s.lim
	stopStreams := make(chan struct{})
	// Requests run under base: it ends only when the grace period is over.
	base, forceStop := context.WithCancel(context.Background())
	defer forceStop()

	cl := newConnLimiter(s.ln, lim.maxConns, lim.writeTimeout, s.closed, s.closeListener, log)
	hs := &http.Server{
		Handler: mk(APIOptions{
			Log:          log,
			Done:         stopStreams,
			MaxStreams:   lim.maxStreams,
			WriteTimeout: lim.writeTimeout,
		}),
		ReadHeaderTimeout: lim.readHeaderTimeout,
		ReadTimeout:       lim.readTimeout,
		IdleTimeout:       lim.idleTimeout,
		// No WriteTimeout: it would cut event streams. The API sets a
		// deadline before each write instead, and cl one for the server's
		// own answers to broken requests.
		MaxHeaderBytes:               lim.maxHeaderBytes,
		DisableGeneralOptionsHandler: true,
		ConnState:                    cl.connState,
		ConnContext:                  connContext,
		BaseContext:                  func(net.Listener) context.Context { return base },
		// net/http logs clients' protocol errors: they are the clients'
		// problem, not the daemon's.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	hs.Protocols = &protocols

	served := make(chan error, 1)
	go func() { served <- hs.Serve(cl) }()
	var err error
	select {
	case <-ctx.Done():
	case <-s.closed:
	case err = <-served:
		served = nil
	}
	s.closeListener()
	close(stopStreams)

	grace, cancel := context.WithTimeout(context.Background(), lim.shutdownGrace)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- hs.Shutdown(grace) }()
	// Shutdown counts a new connection as busy for its first 5 s; ours
	// that have not sent a request yet are idle, and go now.
	cl.closeIdle()
	if serr := <-shut; errors.Is(serr, context.DeadlineExceeded) {
		log.Warn("control socket: requests still running after the grace period; cancelling them", "grace", lim.shutdownGrace)
		forceStop()
		hs.Close()
	}
	if served != nil {
		<-served
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("control socket: %w", err)
	}
	return nil
}

// Peer is the process at the other end of a unix-socket connection, as
// the kernel reported it when the connection was made (SO_PEERCRED).
type Peer struct {
	UID int `json:"uid"`
	GID int `json:"gid"`
	PID int `json:"pid"`
}

type peerKey struct{}

// PeerFrom returns the peer of the connection a request came on, when it
// came on the unix socket.
func PeerFrom(ctx context.Context) (Peer, bool) {
	p, ok := ctx.Value(peerKey{}).(Peer)
	return p, ok
}

// connContext puts a connection's peer in its requests' context.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*trackedConn); ok && tc.hasPeer {
		return context.WithValue(ctx, peerKey{}, tc.peer)
	}
	return ctx
}

// peerOf asks the kernel who is at the other end of a connection.
func peerOf(raw syscall.RawConn) (Peer, bool) {
	if raw == nil {
		return Peer{}, false
	}
	var (
		cred *syscall.Ucred
		err  error
	)
	if cerr := raw.Control(func(fd uintptr) {
		cred, err = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); cerr != nil || err != nil {
		return Peer{}, false
	}
	return Peer{UID: int(cred.Uid), GID: int(cred.Gid), PID: int(cred.Pid)}, true
}

// connLimiter is the listener the HTTP server accepts from. It keeps at
// most max connections open without letting idle ones starve the rest:
// when full, a new connection evicts an idle one (no request in progress),
// provided it has been idle for minIdle and has no request waiting in its
// socket: the one idle longest among those that never sent a request, else
// the one idle longest among those kept alive between requests (a client
// that sent a request is likelier to send another). Only when no
// connection can be evicted does Accept wait. Its lock is held for
// bookkeeping only, never across I/O.
type connLimiter struct {
	ln           net.Listener
	max          int
	minIdle      time.Duration
	writeTimeout time.Duration
	closed       <-chan struct{} // closed with the listener
	close        func() error
	log          *slog.Logger

	mu    sync.Mutex
	conns map[*trackedConn]struct{}
	wake  chan struct{} // closed when a connection closes or becomes idle, if someone waits
}

// minIdle is how long a connection must have been idle before it can be
// evicted: a client that just connected, or just got an answer on a
// kept-alive connection, is about to send its request.
const minIdle = 100 * time.Millisecond

// trackedConn is a connection counted by a connLimiter.
type trackedConn struct {
	net.Conn
	l       *connLimiter
	raw     syscall.RawConn // nil if the connection has no descriptor
	peer    Peer
	hasPeer bool

	// Guarded by l.mu.
	idle      bool
	idleSince time.Time
	used      bool // a request came on it

	closeOnce sync.Once
}

func newConnLimiter(ln net.Listener, max int, writeTimeout time.Duration, closed <-chan struct{}, close func() error, log *slog.Logger) *connLimiter {
	return &connLimiter{ln: ln, max: max, minIdle: minIdle, writeTimeout: writeTimeout, closed: closed, close: close,
		log: log, conns: map[*trackedConn]struct{}{}}
}

// Accept waits for a connection and a place for it.
func (l *connLimiter) Accept() (net.Conn, error) {
	c, err := l.ln.Accept()
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
			// net/http retries after a pause.
			l.log.Warn("control socket: accept", "err", err)
		}
		return nil, err
	}
	tc := &trackedConn{Conn: c, l: l}
	if sc, ok := c.(syscall.Conn); ok {
		tc.raw, _ = sc.SyscallConn()
	}
	tc.peer, tc.hasPeer = peerOf(tc.raw)
	if err := l.admit(tc); err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}

// admit counts tc in once there is room for it, evicting an idle
// connection if need be.
func (l *connLimiter) admit(tc *trackedConn) error {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		l.mu.Lock()
		if len(l.conns) < l.max {
			tc.idle, tc.idleSince = true, time.Now()
			l.conns[tc] = struct{}{}
			l.mu.Unlock()
			return nil
		}
		now := time.Now()
		candidates, ripe, ripeUnused := l.idleLocked(now)
		if l.wake == nil {
			l.wake = make(chan struct{})
		}
		wake := l.wake
		l.mu.Unlock()

		evicted := false
		for _, cand := range candidates {
			if cand.used && !ripeUnused.IsZero() {
				// Rather a connection that never sent a request, in a
				// moment, than one kept alive now.
				ripe = ripeUnused
				break
			}
			if cand.c.hasInput() {
				continue // its request is here: it is about to be busy
			}
			l.mu.Lock()
			still := cand.c.idle && cand.c.idleSince.Equal(cand.since)
			l.mu.Unlock()
			if !still {
				continue // busy since, or busy and idle again
			}
			l.log.Debug("control socket: full, dropping an idle connection", "idle", now.Sub(cand.since).Round(time.Millisecond), "used", cand.used)
			cand.c.Close()
			evicted = true
			break
		}
		if evicted {
			continue
		}
		// Wait for a connection to close or become idle, or for an idle
		// one to be idle long enough.
		var tick <-chan time.Time
		if !ripe.IsZero() || len(candidates) > 0 {
			d := l.minIdle
			if !ripe.IsZero() {
				d = min(d, ripe.Sub(now))
			}
			if timer == nil {
				timer = time.NewTimer(d)
			} else {
				timer.Reset(d)
			}
			tick = timer.C
		}
		select {
		case <-wake:
		case <-tick:
		case <-l.closed:
			return net.ErrClosed
		}
	}
}

// candidate is a connection that may be evicted, as it was when chosen.
type candidate struct {
	c     *trackedConn
	since time.Time
	used  bool
}

// idleLocked returns the connections idle for at least minIdle, in the
// order they should be evicted (never used first, then longest idle); when
// the next of the others will have been idle that long, and the next of
// those that never sent a request. l.mu is held.
func (l *connLimiter) idleLocked(now time.Time) (candidates []candidate, ripe, ripeUnused time.Time) {
	earliest := func(t *time.Time, at time.Time) {
		if t.IsZero() || at.Before(*t) {
			*t = at
		}
	}
	for c := range l.conns {
		if !c.idle {
			continue
		}
		if at := c.idleSince.Add(l.minIdle); at.After(now) {
			earliest(&ripe, at)
			if !c.used {
				earliest(&ripeUnused, at)
			}
			continue
		}
		candidates = append(candidates, candidate{c: c, since: c.idleSince, used: c.used})
	}
	slices.SortFunc(candidates, func(a, b candidate) int {
		if a.used != b.used {
			if !a.used {
				return -1
			}
			return 1
		}
		return a.since.Compare(b.since)
	})
	return candidates, ripe, ripeUnused
}

// hasInput reports whether bytes wait in c's socket: a request the server
// has not read yet.
func (c *trackedConn) hasInput() bool {
	if c.raw == nil {
		return false
	}
	var (
		n   int
		err error
		buf [1]byte
	)
	if cerr := c.raw.Control(func(fd uintptr) {
		n, _, err = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	}); cerr != nil {
		return false
	}
	return err == nil && n > 0
}

// connState follows the HTTP server's view of each connection.
func (l *connLimiter) connState(c net.Conn, state http.ConnState) {
	tc, ok := c.(*trackedConn)
	if !ok {
		return
	}
	if state == http.StateActive {
		// Bounds the server's own writes for this request (100 Continue,
		// its answers to requests too broken to reach the API); the API
		// sets a deadline of its own before each of its writes.
		tc.SetWriteDeadline(time.Now().Add(l.writeTimeout))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, open := l.conns[tc]; !open {
		return
	}
	switch state {
	case http.StateActive:
		tc.idle, tc.used = false, true
	case http.StateIdle:
		tc.idle, tc.idleSince = true, time.Now()
		l.wakeLocked()
	}
}

// closeIdle closes the connections with no request in progress.
func (l *connLimiter) closeIdle() {
	l.mu.Lock()
	var idle []*trackedConn
	for c := range l.conns {
		if c.idle {
			idle = append(idle, c)
		}
	}
	l.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
}

func (l *connLimiter) wakeLocked() {
	if l.wake != nil {
		close(l.wake)
		l.wake = nil
	}
}

// Close closes the listener (the http.Server closes it at shutdown).
func (l *connLimiter) Close() error {
	l.close()
	return nil
}

func (l *connLimiter) Addr() net.Addr { return l.ln.Addr() }

// Close closes the connection and frees its place.
func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.wakeLocked()
		c.l.mu.Unlock()
	})
	return err
}

func (s *Server) closeListener() error {
	s.closeOnce.Do(func() {
		s.closeErr = s.ln.Close()
		close(s.closed)
	})
	return s.closeErr
}

// Close stops accepting connections and removes the socket file, unless
// another daemon has put its own there since. Serve then winds down as when
// its context ends.
func (s *Server) Close() error {
	err := s.closeListener()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	if s.path == "" {
		return err
	}
	if fi, serr := os.Stat(s.path); serr == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Ino == s.ino {
			if rerr := os.Remove(s.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
				err = rerr
			}
		}
	}
	return err
}
