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

// rawRead is read(fd, b).
func rawRead(fd uintptr, b []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
