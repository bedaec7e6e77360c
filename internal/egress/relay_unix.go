//go:build unix

package egress

import "syscall"

// rawReads says whether the relay may read a socket's descriptor itself
// (see stepReader).
const rawReads = true

func readFD(fd uintptr, b []byte) (int, error) { return syscall.Read(int(fd), b) }
