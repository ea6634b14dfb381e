package lab

import (
	"net"

	"github.com/multiwan/multiwan/internal/lab/nstest"
)

// InNS runs fn on an OS thread switched into lab namespace ns (a logical
// name), then switches the thread back. Sockets fn creates stay in ns for
// their whole life, whichever thread uses them later; the way tests and
// benchmarks open raw or netlink sockets inside the lab. fn must not start
// goroutines that depend on the namespace: only its thread is switched.
// The switching is nstest.Do's: a fresh goroutine, so the caller's thread
// is never touched, and a thread that cannot switch back dies locked
// rather than being reused in the wrong namespace.
func (l *Lab) InNS(ns string, fn func() error) error { return l.inNS(ns, fn) }

func (l *Lab) inNS(ns string, fn func() error) error {
	r, err := l.real(ns)
	if err != nil {
		return err
	}
	return nstest.Do(r, fn)
}

// listen creates a listener in ns without registering it with the lab.
func (l *Lab) listen(ns, network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := l.inNS(ns, func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// listenPacket creates a packet socket in ns without registering it.
func (l *Lab) listenPacket(ns, network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := l.inNS(ns, func() error {
		var err error
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}

// Listen is [net.Listen] inside lab namespace ns. The socket stays in that
// namespace for its whole life; it can be used from any goroutine. The lab
// closes it on Close. addr must be a literal IP address and port, because
// name resolution would run in the wrong namespace.
func (l *Lab) Listen(ns, network, addr string) (net.Listener, error) {
	ln, err := l.listen(ns, network, addr)
	if err != nil {
		return nil, err
	}
	if err := l.track(ln); err != nil {
		return nil, err
	}
	return ln, nil
}

// ListenPacket is [net.ListenPacket] inside lab namespace ns, with the same
// rules as [Lab.Listen].
func (l *Lab) ListenPacket(ns, network, addr string) (net.PacketConn, error) {
	pc, err := l.listenPacket(ns, network, addr)
	if err != nil {
		return nil, err
	}
	if err := l.track(pc); err != nil {
		return nil, err
	}
	return pc, nil
}
