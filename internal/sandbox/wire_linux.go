//go:build linux

package sandbox

// The host and the init are the same binary, so what they tell each other
// needs no self-describing format. A small hand-written encoding replaces
// encoding/json here: JSON's reflection is built on first use, in every
// fresh init and every start, and cost the sandbox's start-up about 0.7 ms
// of a 9 ms budget. Every read is bounded by what is left of the message;
// a short or malformed message is an error, never a panic.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// wireMagic starts every message: the format's version.
const wireMagic = "enclave-sandbox/3\n"

var (
	errWireShort   = errors.New("message ends early")
	errWireVersion = errors.New("not a sandbox message of this version")
)

type wireWriter struct{ b []byte }

func newWireWriter() *wireWriter { return &wireWriter{b: append(make([]byte, 0, 1024), wireMagic...)} }

func (w *wireWriter) uint(v uint64) { w.b = binary.AppendUvarint(w.b, v) }
func (w *wireWriter) int(v int64)   { w.b = binary.AppendVarint(w.b, v) }
func (w *wireWriter) bool(v bool) {
	if v {
		w.b = append(w.b, 1)
	} else {
		w.b = append(w.b, 0)
	}
}
func (w *wireWriter) str(s string) { w.uint(uint64(len(s))); w.b = append(w.b, s...) }
func (w *wireWriter) strs(ss []string) {
	w.uint(uint64(len(ss)))
	for _, s := range ss {
		w.str(s)
	}
}

type wireReader struct {
	b   []byte
	err error
}

func newWireReader(b []byte) *wireReader {
	r := &wireReader{b: b}
	if len(b) < len(wireMagic) || string(b[:len(wireMagic)]) != wireMagic {
		r.err = errWireVersion
		return r
	}
	r.b = b[len(wireMagic):]
	return r
}

func (r *wireReader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

func (r *wireReader) uint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail(errWireShort)
		return 0
	}
	r.b = r.b[n:]
	return v
}

// int reads what binary.AppendVarint wrote: a zig-zag encoded uvarint.
func (r *wireReader) int() int64 {
	u := r.uint()
	v := int64(u >> 1)
	if u&1 != 0 {
		v = ^v
	}
	return v
}

// small reads an int that must fit an int without loss.
func (r *wireReader) small() int {
	v := r.int()
	if v < math.MinInt32 || v > math.MaxInt32 {
		r.fail(fmt.Errorf("value %d out of range", v))
		return 0
	}
	return int(v)
}

func (r *wireReader) bool() bool {
	if r.err != nil {
		return false
	}
	if len(r.b) == 0 {
		r.fail(errWireShort)
		return false
	}
	v := r.b[0]
	r.b = r.b[1:]
	if v > 1 {
		r.fail(fmt.Errorf("bad boolean %d", v))
	}
	return v == 1
}

func (r *wireReader) str() string {
	n := r.uint()
	if r.err != nil {
		return ""
	}
	if n > uint64(len(r.b)) {
		r.fail(errWireShort)
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

// count reads a list length; each element takes at least one byte, so a
// count beyond what is left is malformed (and cannot make us allocate).
func (r *wireReader) count() int {
	n := r.uint()
	if r.err == nil && n > uint64(len(r.b)) {
		r.fail(errWireShort)
		return 0
	}
	return int(n)
}

func (r *wireReader) strs() []string {
	n := r.count()
	if n == 0 {
		return nil
	}
	ss := make([]string, 0, n)
	for i := 0; i < n && r.err == nil; i++ {
		ss = append(ss, r.str())
	}
	return ss
}

// end reports the first error, or trailing bytes.
func (r *wireReader) end() error {
	if r.err == nil && len(r.b) > 0 {
		r.err = fmt.Errorf("%d unexpected trailing bytes", len(r.b))
	}
	return r.err
}

func (w *wireWriter) limits(l Limits) {
	w.int(l.Memory)
	w.int(int64(l.Processes))
	w.int(int64(l.CPUTime))
	w.int(int64(l.WallTime))
	w.int(l.FileSize)
	w.int(int64(l.OpenFiles))
	w.int(l.TmpSize)
}

func (r *wireReader) limits() Limits {
	return Limits{
		Memory:    r.int(),
		Processes: r.small(),
		CPUTime:   time.Duration(r.int()),
		WallTime:  time.Duration(r.int()),
		FileSize:  r.int(),
		OpenFiles: r.small(),
		TmpSize:   r.int(),
	}
}

func (w *wireWriter) status(s Status) {
	w.int(int64(s.HostUID))
	w.int(int64(s.HostGID))
	w.int(int64(s.Landlock))
	w.bool(s.LandlockScoped)
	w.bool(s.Seccomp)
	w.bool(s.ExecRecord)
	w.str(s.Limits)
	w.strs(s.Degraded)
}

func (r *wireReader) status() Status {
	return Status{
		HostUID:        r.small(),
		HostGID:        r.small(),
		Landlock:       r.small(),
		LandlockScoped: r.bool(),
		Seccomp:        r.bool(),
		ExecRecord:     r.bool(),
		Limits:         r.str(),
		Degraded:       r.strs(),
	}
}

func (w *wireWriter) exec(e *execConfig) {
	w.strs(e.Argv)
	w.str(e.Dir)
	w.strs(e.Env)
	w.strs(e.ExecAllow)
	w.strs(e.RO)
	w.strs(e.RW)
	w.limits(e.Limits)
	w.bool(e.Rlimits)
	w.bool(e.Notify)
	w.bool(e.TTY)
	w.strs(e.Degrade)
	w.strs(e.ForceMissing)
}

func (r *wireReader) exec() execConfig {
	return execConfig{
		Argv:         r.strs(),
		Dir:          r.str(),
		Env:          r.strs(),
		ExecAllow:    r.strs(),
		RO:           r.strs(),
		RW:           r.strs(),
		Limits:       r.limits(),
		Rlimits:      r.bool(),
		Notify:       r.bool(),
		TTY:          r.bool(),
		Degrade:      r.strs(),
		ForceMissing: r.strs(),
	}
}

// marshalInit encodes the init's configuration.
func marshalInit(c *initConfig) []byte {
	w := newWireWriter()
	w.str(string(c.Source[:]))
	w.uint(uint64(len(c.Mounts)))
	for _, m := range c.Mounts {
		w.str(m.Source)
		w.str(m.Target)
		w.str(m.Symlink)
		w.bool(m.Writable)
		w.bool(m.NoExec)
		w.bool(m.Dev)
		w.bool(m.File)
		w.int(int64(m.Tree))
	}
	w.str(c.Home)
	w.int(c.TmpSize)
	w.str(c.Hostname)
	w.uint(uint64(len(c.Listeners)))
	for _, l := range c.Listeners {
		w.str(l.Network)
		w.str(l.Addr)
	}
	w.bool(c.NoExec)
	w.uint(uint64(c.Rows))
	w.uint(uint64(c.Cols))
	w.bool(c.WaitCgroup)
	w.exec(&c.Exec)
	return w.b
}

// unmarshalInit decodes what marshalInit encoded.
func unmarshalInit(b []byte) (*initConfig, error) {
	r := newWireReader(b)
	c := &initConfig{}
	if src := r.str(); len(src) == len(c.Source) {
		copy(c.Source[:], src)
	} else {
		r.fail(fmt.Errorf("source identity of %d bytes, want %d", len(src), len(c.Source)))
	}
	if n := r.count(); n > 0 {
		c.Mounts = make([]mountSpec, 0, n)
		for i := 0; i < n && r.err == nil; i++ {
			c.Mounts = append(c.Mounts, mountSpec{
				Source: r.str(), Target: r.str(), Symlink: r.str(),
				Writable: r.bool(), NoExec: r.bool(), Dev: r.bool(), File: r.bool(),
				Tree: r.small(),
			})
		}
	}
	c.Home = r.str()
	c.TmpSize = r.int()
	c.Hostname = r.str()
	if n := r.count(); n > 0 {
		c.Listeners = make([]ListenSpec, 0, n)
		for i := 0; i < n && r.err == nil; i++ {
			c.Listeners = append(c.Listeners, ListenSpec{Network: r.str(), Addr: r.str()})
		}
	}
	c.NoExec = r.bool()
	rows, cols := r.uint(), r.uint()
	if rows > math.MaxUint16 || cols > math.MaxUint16 {
		r.fail(fmt.Errorf("window size %dx%d out of range", cols, rows))
	}
	c.Rows, c.Cols = uint16(rows), uint16(cols)
	c.WaitCgroup = r.bool()
	c.Exec = r.exec()
	if err := r.end(); err != nil {
		return nil, fmt.Errorf("decode sandbox configuration: %w", err)
	}
	return c, nil
}

// marshalCtl encodes one control message.
func marshalCtl(m ctlMsg) []byte {
	w := newWireWriter()
	w.str(m.Kind)
	w.str(m.Layer)
	w.str(m.Msg)
	w.status(m.Status)
	return w.b
}

// unmarshalCtl decodes what marshalCtl encoded.
func unmarshalCtl(b []byte) (ctlMsg, error) {
	r := newWireReader(b)
	m := ctlMsg{Kind: r.str(), Layer: r.str(), Msg: r.str(), Status: r.status()}
	if err := r.end(); err != nil {
		return ctlMsg{}, fmt.Errorf("decode sandbox control message: %w", err)
	}
	return m, nil
}
