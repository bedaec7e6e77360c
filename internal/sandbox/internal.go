package sandbox

import "os"

// MaybeRunInternal runs a sandbox stage if this process is one: call it
// first in main and in TestMain. It returns false in an ordinary process;
// in a stage it never returns (the stage's exit code ends the process).
// The stages are selected by os.Args[1] exactly, never by an environment
// variable, and get their inputs on inherited descriptors.
func MaybeRunInternal() bool {
	if len(os.Args) < 2 {
		return false
	}
	code, ok := runStage(os.Args[1])
	if !ok {
		return false
	}
	os.Exit(code)
	return true
}
