//go:build linux

package sandbox

func runStage(name string) (int, bool) {
	switch name {
	case argInit:
		return runInit(), true
	case argProbe:
		return 0, true
	}
	return 0, false
}
