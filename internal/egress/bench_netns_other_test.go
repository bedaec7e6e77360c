//go:build !linux

package egress

import (
	"errors"
	"net"
	"testing"
)

func sandboxNetns(t *testing.T, bigTCP bool) (string, net.Listener) {
	t.Fatal("ENCLAVE_BENCH_NETNS needs Linux network namespaces")
	return "", nil
}

func dialIn(path, addr string) (net.Conn, error) {
	return nil, errors.New("network namespaces need Linux")
}
