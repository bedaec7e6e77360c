package session

import (
	"syscall"

	"golang.org/x/sys/unix"
)

const oNoFollow = unix.O_NOFOLLOW

var killSignal = syscall.SIGKILL
