// Package control is the daemon's control socket and its client: the
// commands `multiwan status`, `use` and `reload` talk to the running daemon
// through it.
//
// The protocol is a unix stream socket carrying one JSON request per line,
// each answered by one JSON response on one line:
//
//	{"cmd":"status"}            → {"ok":true,"status":{...}}
//	{"cmd":"use","wan":"isp2"}  → {"ok":true}
//	{"cmd":"reload"}            → {"ok":false,"error":"FILE:LINE:COL: ...\n..."}
//
// A connection may carry several requests in turn. Requests are untrusted
// input: lines are bounded in length, unknown commands, unknown fields and
// malformed JSON are answered with an error, and a client that stalls is
// disconnected.
package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Handler carries out the requests. Its methods are called from one
// goroutine per connection, so several may run at once.
type Handler interface {
	// Status reports the daemon's current view.
	Status() Status
	// Use makes wan the preferred member of every policy that contains it;
	// "" or "auto" returns to the health-driven choice.
	Use(wan string) error
	// Reload re-reads the configuration. When the new file is invalid it
	// returns its errors (a config.ErrorList, one FILE:LINE:COL line each)
	// and changes nothing.
	Reload() error
}

const (
	// MaxLine bounds a request line, newline included. Real requests are
	// tiny; the bound keeps a broken or hostile client from making the
	// daemon buffer without end.
	MaxLine = 64 << 10
	// maxConns bounds the connections served at once. Further clients wait
	// in the listen backlog until a slot frees.
	maxConns = 32
	// defaultTimeout bounds each read of a request and each write of a
	// response.
	defaultTimeout = 5 * time.Second
)

// Commands of the protocol.
const (
	cmdStatus = "status"
	cmdUse    = "use"
	cmdReload = "reload"
)

// request is one line from a client.
type request struct {
	Cmd string `json:"cmd"`
	WAN string `json:"wan,omitempty"`
}

// response is one line to a client. Error carries a failed command's
// message verbatim, newlines included.
type response struct {
	OK     bool    `json:"ok"`
	Error  string  `json:"error,omitempty"`
	Status *Status `json:"status,omitempty"`
}

// Server is a listening control socket.
type Server struct {
	path    string
	ln      *net.UnixListener
	ino     uint64 // the socket file's inode, to remove only our own
	timeout time.Duration
	closed  chan struct{} // closed with the listener

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
	s := &Server{path: path, ln: ln, timeout: defaultTimeout, closed: make(chan struct{})}
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

// Path returns the socket's path.
func (s *Server) Path() string { return s.path }

// Serve answers requests with h until ctx ends or s is closed, then waits
// for the requests under way to finish. It returns nil on either of those,
// or the error that stopped it from accepting. log may be nil.
func (s *Server) Serve(ctx context.Context, h Handler, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	stop := context.AfterFunc(ctx, func() { s.closeListener() })
	defer stop()

	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		slots = make(chan struct{}, maxConns)
	)
	defer func() {
		// Unblock connections waiting for a request; those running a
		// command finish it first. serveConn checks s.closed after each
		// deadline it sets, so none can push its deadline past this one.
		s.closeListener()
		mu.Lock()
		for c := range conns {
			c.SetReadDeadline(time.Now())
		}
		mu.Unlock()
		wg.Wait()
	}()

	var backoff time.Duration
	for {
		// Take a slot before accepting, so that a flood of clients waits
		// in the kernel's backlog instead of in the daemon's memory.
		select {
		case slots <- struct{}{}:
		case <-s.closed:
			return nil
		}
		c, err := s.ln.Accept()
		if err != nil {
			<-slots
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors and the like: wait, then go on.
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ECONNABORTED) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				log.Warn("control socket: accept", "err", err)
				select {
				case <-time.After(backoff):
				case <-s.closed:
					return nil
				}
				continue
			}
			return fmt.Errorf("control socket: %w", err)
		}
		backoff = 0
		mu.Lock()
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer func() {
				c.Close()
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				<-slots
				wg.Done()
			}()
			s.serveConn(c, h, log)
		}()
	}
}

// serveConn answers the requests of one connection until the client hangs
// up, stalls or sends a line too long to be a request.
func (s *Server) serveConn(c net.Conn, h Handler, log *slog.Logger) {
	r := bufio.NewReaderSize(c, 4096)
	for {
		c.SetReadDeadline(time.Now().Add(s.timeout))
		select {
		case <-s.closed:
			return
		default:
		}
		line, err := readLine(r, MaxLine)
		if errors.Is(err, errTooLong) {
			// The rest of the line cannot be told from a next request, so
			// the connection ends after the answer.
			s.reply(c, response{Error: fmt.Sprintf("request longer than %d bytes", MaxLine)}, log)
			return
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				log.Debug("control socket: read", "err", err)
			}
			return
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if !s.reply(c, s.handle(line, h, log), log) {
			return
		}
	}
}

// handle parses and carries out one request. A panic in the handler is
// reported to the client and logged; it does not take the daemon down.
func (s *Server) handle(line []byte, h Handler, log *slog.Logger) (resp response) {
	var req request
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return response{Error: "malformed request: " + err.Error()}
	}
	if dec.More() {
		return response{Error: "malformed request: more than one JSON value on a line"}
	}
	defer func() {
		if p := recover(); p != nil {
			log.Error("control socket: handler panicked", "cmd", req.Cmd, "panic", p)
			resp = response{Error: fmt.Sprintf("internal error in %s: %v", req.Cmd, p)}
		}
	}()
	switch req.Cmd {
	case cmdStatus:
		st := h.Status().normalized()
		return response{OK: true, Status: &st}
	case cmdUse:
		log.Info("control: use", "wan", req.WAN)
		if err := h.Use(req.WAN); err != nil {
			return response{Error: err.Error()}
		}
		return response{OK: true}
	case cmdReload:
		log.Info("control: reload")
		if err := h.Reload(); err != nil {
			return response{Error: err.Error()}
		}
		return response{OK: true}
	case "":
		return response{Error: `malformed request: no "cmd"`}
	default:
		return response{Error: fmt.Sprintf("unknown command %q", truncate(req.Cmd, 64))}
	}
}

// reply writes one response line; it reports whether the connection is
// still usable.
func (s *Server) reply(c net.Conn, resp response, log *slog.Logger) bool {
	b, err := json.Marshal(resp)
	if err != nil {
		// Only a Status holding NaN or ±Inf can get here.
		b, _ = json.Marshal(response{Error: "cannot encode response: " + err.Error()})
	}
	c.SetWriteDeadline(time.Now().Add(s.timeout))
	if _, err := c.Write(append(b, '\n')); err != nil {
		log.Debug("control socket: write", "err", err)
		return false
	}
	return true
}

var errTooLong = errors.New("line too long")

// readLine reads up to and including the next newline, failing with
// errTooLong once more than max bytes have come without one. A last line
// without a newline counts as a line.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) > max {
			return nil, errTooLong
		}
		line = append(line, chunk...)
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return line, nil
		default:
			return nil, err
		}
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

func (s *Server) closeListener() error {
	s.closeOnce.Do(func() {
		s.closeErr = s.ln.Close()
		close(s.closed)
	})
	return s.closeErr
}

// Close stops accepting connections and removes the socket file, unless
// another daemon has put its own there since.
func (s *Server) Close() error {
	err := s.closeListener()
	if errors.Is(err, net.ErrClosed) {
		err = nil
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
