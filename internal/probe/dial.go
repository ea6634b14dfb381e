package probe

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// markControl returns a socket Control function that sets SO_MARK: the
// mark, not the source address or an interface binding, is what makes the
// kernel route the probe through its WAN's table. Mark 0 is the kernel's
// default and is left alone, which needs no privilege.
func markControl(mark uint32) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		if mark == 0 {
			return nil
		}
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("set SO_MARK %#x: %w", mark, serr)
		}
		return nil
	}
}

// dialTransport runs tcp, http and dns probes, one short-lived goroutine
// per probe (each probe is a fresh connection anyway).
type dialTransport struct {
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	events  chan<- event
	timeout time.Duration
	probe   func(ctx context.Context, t probeTarget) error
}

// probeTarget is what a probe goroutine needs of its target: a copy, as
// the target itself belongs to the scheduler.
type probeTarget struct {
	ap  netip.AddrPort
	url string
}

func newDialTransport(method string, spec Spec, events chan<- event, ns nsFunc) (*dialTransport, error) {
	base := &net.Dialer{Control: markControl(spec.Mark)}
	// Names in http URLs are resolved through the same WAN: the system's
	// resolver would send its queries wherever the policy says.
	resolverDialer := &net.Dialer{Control: markControl(spec.Mark)}
	base.Resolver = &net.Resolver{PreferGo: true, Dial: resolverDialer.DialContext}
	dial := func(ctx context.Context, network, address string) (net.Conn, error) {
		var c net.Conn
		err := ns.do(func() error {
			var err error
			c, err = base.DialContext(ctx, network, address)
			return err
		})
		return c, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &dialTransport{ctx: ctx, cancel: cancel, events: events, timeout: spec.Timeout}
	switch method {
	case "tcp":
		d.probe = func(ctx context.Context, t probeTarget) error { return probeTCP(ctx, dial, t.ap) }
	case "dns":
		d.probe = func(ctx context.Context, t probeTarget) error { return probeDNS(ctx, dial, t.ap) }
	case "http":
		client := &http.Client{
			Transport: &http.Transport{
				// Never a proxy from the environment: the probe tests
				// this WAN's path, not the proxy's.
				Proxy:       nil,
				DialContext: dial,
				// Every probe a fresh connection, so that it tests the
				// path now and not a connection set up earlier.
				DisableKeepAlives:      true,
				MaxResponseHeaderBytes: 64 << 10,
			},
			// A redirect is an answer; following it would probe
			// another server.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		d.probe = func(ctx context.Context, t probeTarget) error { return probeHTTP(ctx, client, t.url) }
	default:
		cancel()
		return nil, fmt.Errorf("unknown probe method %q", method)
	}
	return d, nil
}

func (d *dialTransport) send(f *flight) error {
	id, deadline := f.id, f.sent.Add(d.timeout)
	t := probeTarget{ap: f.t.ap, url: f.t.url}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		ctx, cancel := context.WithDeadline(d.ctx, deadline)
		defer cancel()
		err := d.probe(ctx, t)
		ev := event{id: id, at: time.Now(), ok: err == nil}
		if err != nil {
			ev.err = describe(ctx, err)
		}
		select {
		case d.events <- ev:
		case <-d.ctx.Done():
		}
	}()
	return nil
}

func (d *dialTransport) close() {
	d.cancel()
	d.wg.Wait()
}

// poll has nothing to take: a dialed probe's outcome is known only to
// its own goroutine, which times it where the connection completes.
func (d *dialTransport) poll(func(event)) {}

type dialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// probeTCP succeeds when a connection is established.
func probeTCP(ctx context.Context, dial dialFunc, ap netip.AddrPort) error {
	c, err := dial(ctx, "tcp", ap.String())
	if err != nil {
		return err
	}
	// A reset instead of a FIN: no TIME_WAIT left behind per probe, on
	// either side.
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	return c.Close()
}

// probeHTTP succeeds when the server answers GET with a status below 400.
func probeHTTP(ctx context.Context, client *http.Client, target string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "multiwan-probe")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	// The status line is the answer; the body is not needed, and with
	// keep-alives off closing it closes the connection.
	resp.Body.Close()
	if resp.StatusCode >= 400 {
		return fmt.Errorf("HTTP status %d", resp.StatusCode)
	}
	return nil
}

// probeDNS sends a query for the root's NS records over UDP and succeeds
// on any well-formed response with the query's id, whatever its rcode: an
// answer of any kind shows the path works.
func probeDNS(ctx context.Context, dial dialFunc, ap netip.AddrPort) error {
	c, err := dial(ctx, "udp", ap.String())
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	// Reads do not watch ctx: a cancelled Run must not wait for the
	// deadline.
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	var idb [2]byte
	rand.Read(idb[:])
	q := new(dns.Msg)
	q.SetQuestion(".", dns.TypeNS)
	q.Id = binary.BigEndian.Uint16(idb[:])
	wire, err := q.Pack()
	if err != nil {
		return err
	}
	if _, err := c.Write(wire); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		var r dns.Msg
		// Replies are untrusted: garbage, or a stray answer to another
		// query, is skipped and the probe keeps waiting.
		if r.Unpack(buf[:n]) != nil || r.Id != q.Id || !r.Response {
			continue
		}
		return nil
	}
}

// describe turns a probe error into a short reason: "timeout",
// "connection refused", "HTTP status 503", a TLS verification error...
func describe(ctx context.Context, err error) string {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || ctx.Err() == context.DeadlineExceeded {
		return "timeout"
	}
	if errors.Is(err, context.Canceled) {
		return "cancelled"
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		err = oe.Err
	}
	return err.Error()
}
