package sandbox

import (
	"fmt"

	"golang.org/x/net/bpf"
)

// asm is a tiny label-resolving assembler over golang.org/x/net/bpf for
// the seccomp filter: classic BPF jumps are forward-only 8-bit skips, and
// computing them by hand is where filters go wrong.
type asm struct {
	ins    []bpf.Instruction
	fix    []fixup
	labels map[string]int
}

type fixup struct {
	at     int
	jt, jf string
	cond   bpf.JumpTest
	val    uint32
}

func (a *asm) add(i bpf.Instruction) { a.ins = append(a.ins, i) }

func (a *asm) ret(v uint32) { a.add(bpf.RetConstant{Val: v}) }

// jump adds a conditional jump to label t if the test holds, else to f;
// "" means the next instruction.
func (a *asm) jump(cond bpf.JumpTest, val uint32, t, f string) {
	a.fix = append(a.fix, fixup{at: len(a.ins), jt: t, jf: f, cond: cond, val: val})
	a.add(nil)
}

func (a *asm) label(name string) {
	if a.labels == nil {
		a.labels = map[string]int{}
	}
	a.labels[name] = len(a.ins)
}

func (a *asm) assemble() ([]bpf.Instruction, error) {
	skip := func(from int, label string) (uint8, error) {
		if label == "" {
			return 0, nil
		}
		to, ok := a.labels[label]
		if !ok {
			return 0, fmt.Errorf("bpf: undefined label %q", label)
		}
		d := to - from - 1
		if d < 0 || d > 255 {
			return 0, fmt.Errorf("bpf: jump from %d to %q (%d) out of range", from, label, to)
		}
		return uint8(d), nil
	}
	out := append([]bpf.Instruction(nil), a.ins...)
	for _, f := range a.fix {
		t, err := skip(f.at, f.jt)
		if err != nil {
			return nil, err
		}
		e, err := skip(f.at, f.jf)
		if err != nil {
			return nil, err
		}
		out[f.at] = bpf.JumpIf{Cond: f.cond, Val: f.val, SkipTrue: t, SkipFalse: e}
	}
	if len(out) > 4096 {
		return nil, fmt.Errorf("bpf: program of %d instructions exceeds 4096", len(out))
	}
	return out, nil
}
