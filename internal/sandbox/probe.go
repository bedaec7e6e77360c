package sandbox

import (
	"fmt"
	"strings"
)

// LayerReport is one protection layer as [Probe] found it.
type LayerReport struct {
	Layer  string // a Layer constant
	OK     bool   // usable on this machine
	Detail string // what was found, or why it is unusable
}

// Report is what [Probe] found; Layers is in a fixed order.
type Report struct {
	Layers      []LayerReport
	LandlockABI int    // 0 if Landlock is unavailable
	Limits      string // "cgroup-v1" or "rlimit": what Start would use
}

// OK reports whether every layer is usable.
func (r Report) OK() bool {
	for _, l := range r.Layers {
		if !l.OK {
			return false
		}
	}
	return len(r.Layers) > 0
}

func (r Report) String() string {
	var b strings.Builder
	for _, l := range r.Layers {
		mark := "ok  "
		if !l.OK {
			mark = "MISSING"
		}
		fmt.Fprintf(&b, "%-8s %-7s %s\n", l.Layer, mark, l.Detail)
	}
	return b.String()
}
