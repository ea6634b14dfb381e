package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Caps on what a request may ask of the whoami server.
const (
	maxSlow          = 30 * time.Second
	maxStreamSeconds = 120
	maxBytes         = 1 << 30
	streamTick       = 50 * time.Millisecond
)

// startInternetServices starts HTTP on :80 and the UDP echo on every
// address of the internet namespace.
func (l *Lab) startInternetServices() error {
	if l.ipv6 {
		// One socket per family rather than one dual-stack socket, which
		// would depend on what Go probed about IPv6 in whatever namespace
		// the process first looked.
		for _, a := range []struct{ network, addr string }{
			{"tcp4", "0.0.0.0"}, {"tcp6", "::"},
		} {
			if _, err := l.serveWhoami(NSInternet, a.network, net.JoinHostPort(a.addr, strconv.Itoa(HTTPPort))); err != nil {
				return err
			}
		}
	} else if _, err := l.ServeWhoami(NSInternet, ":"+strconv.Itoa(HTTPPort)); err != nil {
		return err
	}
	// One UDP socket per address rather than a wildcard one: replies from a
	// wildcard socket take the routing source address, which would not
	// match what the client sent to and would break NAT on the way back.
	for _, a := range internetAddrs(l.isps) {
		pc, err := l.ListenPacket(NSInternet, "udp4", net.JoinHostPort(a, strconv.Itoa(UDPEchoPort)))
		if err != nil {
			return err
		}
		go serveUDPEcho(pc)
	}
	if l.ipv6 {
		for _, a := range internetAddrs6(l.isps) {
			pc, err := l.ListenPacket(NSInternet, "udp6", net.JoinHostPort(a, strconv.Itoa(UDPEchoPort)))
			if err != nil {
				return err
			}
			go serveUDPEcho(pc)
		}
	}
	return nil
}

// serveUDPEcho answers each datagram with "<client ip>:<client port>"
// ("[<client ip>]:<client port>" for IPv6). It returns when pc is closed.
func serveUDPEcho(pc net.PacketConn) {
	buf := make([]byte, 64<<10)
	for {
		_, from, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // e.g. ICMP errors surfacing on the socket
		}
		pc.WriteTo([]byte(from.String()), from)
	}
}

// ServeWhoami starts the lab's HTTP server in namespace ns on addr (e.g.
// ":8080" or "192.0.2.2:8080"). It answers:
//
//	GET /                          the client's IP and a newline (text/plain)
//	GET /slow?ms=N                 the same after N ms (at most 30s)
//	GET /stream?seconds=S&rate=R   about R KiB/s for S seconds (at most 120),
//	                               flushed continuously
//	GET /bytes?n=N                 N bytes (at most 1 GiB)
//
// Every response carries X-Served-By with the local address that accepted
// the connection. The returned Closer stops the server; the lab also stops
// it on Close.
func (l *Lab) ServeWhoami(ns, addr string) (io.Closer, error) {
	return l.serveWhoami(ns, "tcp", addr)
}

func (l *Lab) serveWhoami(ns, network, addr string) (io.Closer, error) {
	ln, err := l.listen(ns, network, addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{
		Handler:           whoamiHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, localAddrKey{}, c.LocalAddr().String())
		},
	}
	c := &serverCloser{srv: srv, ln: ln}
	if err := l.track(c); err != nil {
		return nil, err
	}
	go srv.Serve(ln)
	return c, nil
}

type localAddrKey struct{}

// serverCloser makes closing the server idempotent and also closes the
// listener, in case Close runs before Serve has taken it over.
type serverCloser struct {
	once sync.Once
	srv  *http.Server
	ln   net.Listener
}

func (c *serverCloser) Close() error {
	c.once.Do(func() {
		c.srv.Close()
		c.ln.Close()
	})
	return nil
}

func whoamiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		writeWhoami(w, r)
	})
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		ms, err := queryInt(r, "ms", 0, 0, int64(maxSlow/time.Millisecond))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		t := time.NewTimer(time.Duration(ms) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		}
		writeWhoami(w, r)
	})
	mux.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		secs, err := queryInt(r, "seconds", 10, 0, maxStreamSeconds)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rate, err := queryInt(r, "rate", 100, 1, 1<<20)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		setServedBy(w, r)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		chunk := make([]byte, rate*1024*int64(streamTick)/int64(time.Second)+1)
		tick := time.NewTicker(streamTick)
		defer tick.Stop()
		end := time.After(time.Duration(secs) * time.Second)
		for {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
			select {
			case <-tick.C:
			case <-end:
				return
			case <-r.Context().Done():
				return
			}
		}
	})
	mux.HandleFunc("GET /bytes", func(w http.ResponseWriter, r *http.Request) {
		n, err := queryInt(r, "n", 0, 0, maxBytes)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		setServedBy(w, r)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		buf := make([]byte, 32<<10)
		for n > 0 {
			m := min(n, int64(len(buf)))
			if _, err := w.Write(buf[:m]); err != nil {
				return
			}
			n -= m
		}
	})
	return mux
}

func writeWhoami(w http.ResponseWriter, r *http.Request) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	setServedBy(w, r)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, host+"\n")
}

func setServedBy(w http.ResponseWriter, r *http.Request) {
	if a, ok := r.Context().Value(localAddrKey{}).(string); ok {
		w.Header().Set("X-Served-By", a)
	}
}

// queryInt parses an integer query parameter; values above hi are capped
// rather than rejected, values below lo are an error.
func queryInt(r *http.Request, name string, def, lo, hi int64) (int64, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < lo {
		return 0, fmt.Errorf("bad %s=%q", name, s)
	}
	return min(v, hi), nil
}
