package lab

import (
	"errors"
	"fmt"
	"net"
	"runtime"

	"github.com/vishvananda/netns"
)

// inNS runs fn on an OS thread that has been switched into lab namespace
// ns. fn must not start goroutines that depend on the namespace: only the
// calling thread is switched.
//
// A fresh goroutine is used so the caller's thread is never touched, even
// if the caller has locked itself to a thread. If switching back fails the
// goroutine exits still locked, which makes the Go runtime terminate that
// thread instead of reusing it in the wrong namespace.
// InNS runs fn on an OS thread switched into lab namespace ns (a logical
// name), then switches the thread back. Sockets fn creates stay in ns for
// their whole life, whichever thread uses them later; the way tests and
// benchmarks open raw or netlink sockets inside the lab.
func (l *Lab) InNS(ns string, fn func() error) error { return l.inNS(ns, fn) }

func (l *Lab) inNS(ns string, fn func() error) error {
	r, err := l.real(ns)
	if err != nil {
		return err
	}
	target, err := netns.GetFromName(r)
	if err != nil {
		return fmt.Errorf("lab: open namespace %s: %w", r, err)
	}
	defer target.Close()

	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("lab: get current namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			// setns failed, so the thread is still where it was.
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("lab: enter namespace %s: %w", r, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Stay locked: the thread dies with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("lab: restore namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
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
