// Command enclave runs AI coding agents in a least-privilege sandbox.
// See README.md; the commands live in internal/cli.
package main

import (
	"context"
	"os"

	"github.com/enclave-dev/enclave/internal/cli"
)

func main() {
	os.Exit(cli.Main(context.Background(), os.Args[1:]))
}
