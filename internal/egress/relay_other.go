//go:build !unix

package egress

import "errors"

// rawReads is false off Unix: the relay reads through net.Conn with a
// buffer of its own per direction.
const rawReads = false

func readFD(fd uintptr, b []byte) (int, error) {
	return 0, errors.New("egress: raw reads are not supported on this platform")
}
