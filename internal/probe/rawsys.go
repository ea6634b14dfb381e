package probe

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The ICMP socket's send and read never block (MSG_DONTWAIT, and a read
// happens only once the poller said the socket is readable, on a
// non-blocking descriptor), so they are made as raw system calls, without
// telling the Go scheduler. A normal system call wakes the runtime's
// monitor thread from its deep sleep when it returns, and the monitor then
// polls every 20µs until the process is idle again: at 4 WANs × 10 Hz
// that polling was the largest share of the daemon's CPU time. IPv6
// probes keep the ordinary calls: their reads need the source address,
// which recvfrom returns in a form these raw calls would have to decode.

// rawSendto4 is sendto(fd, b, MSG_DONTWAIT, to) for an IPv4 destination.
func rawSendto4(fd uintptr, b []byte, to [4]byte) error {
	sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: to}
	_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)),
		unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&sa)), unix.SizeofSockaddrInet4)
	if e != 0 {
		return e
	}
	return nil
}

// rawRecvmsg is recvmsg(fd, {b}, oob, flags) without the source address:
// the datagram's length and the control data's.
func rawRecvmsg(fd uintptr, b, oob []byte, flags int) (n, oobn int, err error) {
	iov := unix.Iovec{Base: unsafe.SliceData(b)}
	iov.SetLen(len(b))
	msg := unix.Msghdr{Iov: &iov}
	msg.SetIovlen(1)
	if len(oob) > 0 {
		msg.Control = unsafe.SliceData(oob)
		msg.SetControllen(len(oob))
	}
	r, _, e := unix.RawSyscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&msg)), uintptr(flags))
	if e != 0 {
		return 0, 0, e
	}
	return int(r), int(msg.Controllen), nil
}
