// Command enclave-init is the init of enclave's sandboxes: the first
// process inside the new namespaces, which builds the agent's view and
// starts the agent. It holds only the sandbox package, so it starts about
// 1 ms sooner than the whole enclave binary, which is otherwise
// re-executed for the purpose. enclave uses it only when it is installed
// beside the enclave binary and provably from the same build; it is not
// meant to be run by hand.
package main

import (
	"fmt"
	"os"

	"github.com/enclave-dev/enclave/internal/sandbox"
)

func main() {
	sandbox.MaybeRunInternal()
	fmt.Fprintln(os.Stderr, "enclave-init: the init of enclave's sandboxes, started by enclave run; it takes no commands")
	os.Exit(2)
}
