//go:build linux && !amd64

package sandbox

import (
	"errors"

	"golang.org/x/net/bpf"
)

func filterProgram(notify, execAllow bool) ([]bpf.Instruction, error) {
	return nil, errors.New("the seccomp filter is only written for x86-64")
}
