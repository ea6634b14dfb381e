package control

import (
	"github.com/multiwan/multiwan/internal/plan"

	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Client talks to a running daemon over its control socket. It is safe
// for concurrent use.
type Client struct {
	path string
	// Timeout bounds one use or reload and its answer: a reload applies a
	// whole new plan, so it gets more than a status needs.
	Timeout time.Duration

	http *http.Client
}

const (
	// DefaultClientTimeout is a Client's Timeout unless changed.
	DefaultClientTimeout = 30 * time.Second
	// statusTimeout bounds a status request, and the wait for an event
	// stream to open: the daemon answers those at once.
	statusTimeout = 10 * time.Second
	// maxResponse bounds an answer. A status of many WANs and policies, or
	// a reload refused with many errors, is still far below it.
	maxResponse = 16 << 20
	// maxEventLine bounds one event of a stream.
	maxEventLine = 64 << 10
	// dialTimeout bounds a connect to the socket.
	dialTimeout = 5 * time.Second
)

// Dial checks that a daemon answers on the control socket at path, and
// returns a client for it. When none does, the error is one line: "no
// multiwan daemon answers on PATH: REASON".
func Dial(path string) (*Client, error) {
	c, err := net.DialTimeout("unix", path, dialTimeout)
	if err != nil {
		return nil, fmt.Errorf("no multiwan daemon answers on %s: %s", path, reason(err))
	}
	c.Close()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			d := net.Dialer{Timeout: dialTimeout}
			return d.DialContext(ctx, "unix", path)
		},
		// No proxy, whatever the environment says: this is a local socket.
		Proxy:               nil,
		MaxIdleConns:        4,
		MaxIdleConnsPerHost: 4,
		// Below the server's idle timeout, so that a request never goes
		// out on a connection the server is closing.
		IdleConnTimeout:        time.Second,
		MaxResponseHeaderBytes: 64 << 10,
		DisableCompression:     true,
	}
	return &Client{path: path, Timeout: DefaultClientTimeout, http: &http.Client{Transport: tr}}, nil
}

// reason gives the short cause of a connection error: "connection refused"
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

// RemoteError is a request's failure as the daemon reported it. Its text is
// the daemon's message verbatim: for a refused reload, the config errors,
// one FILE:LINE:COL line each.
type RemoteError struct {
	Msg string
	// Code is the HTTP status of the answer: 400 or 422 for a request the
	// daemon refused, 500 for one that failed, and so on.
	Code int
}

func (e *RemoteError) Error() string { return e.Msg }

// Lines returns the message's lines.
func (e *RemoteError) Lines() []string { return strings.Split(e.Msg, "\n") }

// Status asks the daemon for its status.
func (c *Client) Status() (Status, error) {
	b, err := c.do("status", http.MethodGet, pathStatus, nil, statusTimeout)
	if err != nil {
		return Status{}, err
	}
	var st Status
	if err := json.Unmarshal(b, &st); err != nil {
		return Status{}, fmt.Errorf("daemon on %s sent a malformed status: %w", c.path, err)
	}
	return st, nil
}

// Explain asks the daemon where a new connection goes and why.
func (c *Client) Explain(q plan.Query) (plan.Explanation, error) {
	b, err := c.do("explain", http.MethodGet, pathExplain+"?"+ExplainQuery(q), nil, statusTimeout)
	if err != nil {
		return plan.Explanation{}, err
	}
	var ex plan.Explanation
	if err := json.Unmarshal(b, &ex); err != nil {
		return plan.Explanation{}, fmt.Errorf("daemon on %s sent a malformed explanation: %w", c.path, err)
	}
	return ex, nil
}

// Use makes wan the preferred member of every policy that contains it; ""
// or "auto" returns to the automatic choice.
func (c *Client) Use(wan string) error {
	_, err := c.do("use", http.MethodPost, pathUse, useBody{WAN: &wan}, c.timeout())
	return err
}

// Reload asks the daemon to re-read its config. When the new config is
// invalid the error is a *RemoteError carrying its FILE:LINE:COL lines, and
// the daemon keeps running as it was.
func (c *Client) Reload() error {
	_, err := c.do("reload", http.MethodPost, pathReload, struct{}{}, c.timeout())
	return err
}

// Events calls fn with the daemon's last events (at most past of them,
// oldest first), then with each new one as it happens, until ctx ends
// (nil), fn fails (its error), or the daemon ends the stream: nil when it
// closed it (it is stopping, or the client fell too far behind), an error
// when the connection broke.
func (c *Client) Events(ctx context.Context, past int, fn func(Event) error) error {
	streamCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(streamCtx, http.MethodGet,
		"http://multiwan"+pathEvents+"?past="+strconv.Itoa(max(past, 0)), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/x-ndjson")
	// The stream opens at once; only the wait for that is bounded.
	opening := time.AfterFunc(statusTimeout, cancel)
	resp, err := c.http.Do(req)
	if !opening.Stop() {
		if err == nil {
			resp.Body.Close()
		}
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("daemon on %s did not answer events: timed out", c.path)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return c.transportError("events", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
		if err != nil {
			return fmt.Errorf("daemon on %s did not answer events: %s", c.path, reason(err))
		}
		return remoteError("events", resp, b)
	}
	err = readEvents(resp.Body, maxEventLine, fn)
	var fnErr fnError
	switch {
	case errors.As(err, &fnErr):
		return fnErr.error
	case ctx.Err() != nil:
		return nil
	case err != nil:
		return fmt.Errorf("daemon on %s: event stream broken: %s", c.path, reason(err))
	}
	return nil
}

// fnError is an error of the caller's function, told apart from the
// stream's.
type fnError struct{ error }

// readEvents calls fn with each event of an NDJSON stream, lines of at most
// maxLine bytes, until the stream ends (nil) or fails, or fn does (a
// fnError).
func readEvents(r io.Reader, maxLine int, fn func(Event) error) error {
	br := bufio.NewReaderSize(r, 4096)
	for {
		line, err := readLine(br, maxLine)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var ev Event
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("malformed event: %w", err)
		}
		if err := fn(ev); err != nil {
			return fnError{err}
		}
	}
}

// Close lets go of the client's idle connections.
func (c *Client) Close() error {
	c.http.CloseIdleConnections()
	return nil
}

func (c *Client) timeout() time.Duration {
	if c.Timeout <= 0 {
		return DefaultClientTimeout
	}
	return c.Timeout
}

// do sends one request with a JSON body (none if in is nil) and returns
// the body of a 2xx answer; other answers are a *RemoteError.
func (c *Client) do(what, method, path string, in any, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return nil, err
		}
	}
	var (
		resp *http.Response
		err  error
	)
	for attempt := 1; ; attempt++ {
		resp, err = c.send(ctx, method, path, body)
		if err == nil || attempt == maxAttempts || !cutOff(err) {
			break
		}
		// A daemon full of idle clients drops the one idle longest for a
		// new one: a client that was slow to send its request may find
		// its connection gone. Every request of the API can be repeated
		// without harm, so send it again.
		select {
		case <-time.After(time.Duration(attempt) * 10 * time.Millisecond):
		case <-ctx.Done():
		}
	}
	if err != nil {
		return nil, c.transportError(what, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return nil, fmt.Errorf("daemon on %s did not answer %s: %s", c.path, what, reason(err))
	}
	if len(b) > maxResponse {
		return nil, fmt.Errorf("daemon on %s sent an answer to %s larger than %d bytes", c.path, what, maxResponse)
	}
	if resp.StatusCode/100 != 2 {
		return nil, remoteError(what, resp, b)
	}
	return b, nil
}

// maxAttempts bounds how often a request cut off before its answer is
// sent.
const maxAttempts = 3

// send sends one request.
func (c *Client) send(ctx context.Context, method, path string, body []byte) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://multiwan"+path, r)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if method == http.MethodPost {
		// use and reload may be repeated without harm. Saying so lets the
		// transport send them again when the daemon closed a kept-alive
		// connection just as the request went out on it.
		req.Header.Set("Idempotency-Key", strconv.FormatUint(rand.Uint64(), 36))
	}
	req.Header.Set("Accept", "application/json")
	return c.http.Do(req)
}

// cutOff reports whether err is a connection closed under a request,
// before any answer came.
func cutOff(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) ||
		strings.Contains(err.Error(), "server closed idle connection")
}

// transportError describes a request that got no answer.
func (c *Client) transportError(what string, err error) error {
	if strings.Contains(err.Error(), "malformed HTTP") {
		// The line protocol of multiwan before the HTTP API.
		return fmt.Errorf("daemon on %s does not speak this client's protocol (an older multiwan still running? restart it)", c.path)
	}
	return fmt.Errorf("daemon on %s did not answer %s: %s", c.path, what, reason(err))
}

// remoteError turns a failed answer into a *RemoteError carrying the
// daemon's message verbatim.
func remoteError(what string, resp *http.Response, body []byte) error {
	var e errorBody
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return &RemoteError{Msg: e.Error, Code: resp.StatusCode}
	}
	msg := what + " failed: HTTP " + resp.Status
	if first, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n"); first != "" {
		msg += ": " + truncate(first, 200)
	}
	return &RemoteError{Msg: msg, Code: resp.StatusCode}
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
