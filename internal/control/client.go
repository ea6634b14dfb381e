package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Client is a connection to a running daemon. It is safe for concurrent
// use; requests are sent one at a time.
type Client struct {
	path string
	// Timeout bounds one request and its response. A reload applies a whole
	// new plan, so it gets more than a status read needs.
	Timeout time.Duration

	mu   sync.Mutex
	conn net.Conn
	r    *bufio.Reader
}

// DefaultClientTimeout is a Client's Timeout unless changed.
const DefaultClientTimeout = 30 * time.Second

// Dial connects to the daemon's control socket at path. When no daemon
// answers, the error is one line: "no multiwan daemon answers on PATH:
// REASON".
func Dial(path string) (*Client, error) {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("no multiwan daemon answers on %s: %s", path, reason(err))
	}
	return &Client{path: path, Timeout: DefaultClientTimeout, conn: c, r: bufio.NewReaderSize(c, 4096)}, nil
}

// reason gives the short cause of a dial error: "connection refused"
// rather than "dial unix /run/...: connect: connection refused".
func reason(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timed out"
	}
	return strings.ReplaceAll(err.Error(), "\n", " ")
}

// RemoteError is a command's failure as the daemon reported it. Its text is
// the daemon's message verbatim: for a refused reload, the config errors,
// one FILE:LINE:COL line each.
type RemoteError struct {
	Msg string
}

func (e *RemoteError) Error() string { return e.Msg }

// Lines returns the message's lines.
func (e *RemoteError) Lines() []string { return strings.Split(e.Msg, "\n") }

// Status asks the daemon for its status.
func (c *Client) Status() (Status, error) {
	resp, err := c.do(request{Cmd: cmdStatus})
	if err != nil {
		return Status{}, err
	}
	if resp.Status == nil {
		return Status{}, fmt.Errorf("daemon on %s sent no status", c.path)
	}
	return *resp.Status, nil
}

// Use makes wan the preferred member of every policy that contains it; ""
// or "auto" returns to the automatic choice.
func (c *Client) Use(wan string) error {
	_, err := c.do(request{Cmd: cmdUse, WAN: wan})
	return err
}

// Reload asks the daemon to re-read its config. When the new config is
// invalid the error is a *RemoteError carrying its FILE:LINE:COL lines, and
// the daemon keeps running as it was.
func (c *Client) Reload() error {
	_, err := c.do(request{Cmd: cmdReload})
	return err
}

// Close closes the connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn.Close()
}

// do sends one request and reads its response.
func (c *Client) do(req request) (response, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, err := json.Marshal(req)
	if err != nil {
		return response{}, err
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultClientTimeout
	}
	c.conn.SetDeadline(time.Now().Add(timeout))
	if _, err := c.conn.Write(append(b, '\n')); err != nil {
		return response{}, fmt.Errorf("daemon on %s: send %s: %s", c.path, req.Cmd, reason(err))
	}
	line, err := readLine(c.r, maxResponse)
	if err != nil {
		return response{}, fmt.Errorf("daemon on %s did not answer %s: %s", c.path, req.Cmd, reason(err))
	}
	var resp response
	if err := json.Unmarshal(line, &resp); err != nil {
		return response{}, fmt.Errorf("daemon on %s sent a malformed answer: %w", c.path, err)
	}
	if !resp.OK {
		if resp.Error == "" {
			resp.Error = req.Cmd + " failed"
		}
		return resp, &RemoteError{Msg: resp.Error}
	}
	return resp, nil
}

// maxResponse bounds a response line. A status of many WANs and policies
// is still far below it.
const maxResponse = 16 << 20
