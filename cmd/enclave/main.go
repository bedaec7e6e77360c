// Command enclave runs AI coding agents in a least-privilege sandbox.
// See README.md; the commands live in internal/cli.
package main

import (
	"context"
	"os"

	"github.com/enclave-dev/enclave/internal/cli"
	"github.com/enclave-dev/enclave/internal/sandbox"
)

func main() {
	// The sandbox's init is this binary re-executed; it must run before
	// anything else.
	sandbox.MaybeRunInternal()
	os.Exit(cli.Main(context.Background(), os.Args[1:]))
}
