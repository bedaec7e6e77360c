package sandbox

// The sandbox's stages are this binary re-executed. They are dispatched
// from this package's init rather than only from main: Go initialises a
// package once its dependencies are, in import-path order, so this runs
// before the CLI's heavier packages (the SQLite driver, the gateway's and
// the gate's rule tables) and none of their initialisation runs inside the
// sandbox. That saves milliseconds per stage and keeps the stages' code
// small; MaybeRunInternal in main stays as the documented entry point and
// is a no-op by then.
func init() {
	MaybeRunInternal()
}
