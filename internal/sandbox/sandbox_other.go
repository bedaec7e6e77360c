//go:build !linux

package sandbox

import (
	"context"
	"net"
	"os"
)

// Sandbox is a running sandbox; on this platform none can run.
type Sandbox struct{}

// Start fails: the sandbox needs Linux namespaces, Landlock and seccomp.
func Start(ctx context.Context, cfg *Config) (*Sandbox, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return nil, ErrUnsupported
}

func (s *Sandbox) Listener(i int) net.Listener     { return nil }
func (s *Sandbox) PacketConn(i int) net.PacketConn { return nil }
func (s *Sandbox) Wait() (int, error)              { return -1, ErrUnsupported }
func (s *Sandbox) Signal(os.Signal) error          { return ErrUnsupported }
func (s *Sandbox) Status() Status                  { return Status{} }
func (s *Sandbox) Pid() int                        { return 0 }
func HostIDs() (uid, gid int, err error)           { return 0, 0, ErrUnsupported }
func ChownTree(root string, uid, gid int) error    { return ErrUnsupported }
func runStage(name string) (int, bool)             { return 0, false }

// Probe reports every layer missing: none exists off Linux.
func Probe() Report {
	var r Report
	for _, l := range []string{LayerUserNS, LayerLandlock, LayerSeccomp, LayerCgroups} {
		r.Layers = append(r.Layers, LayerReport{Layer: l, Detail: "not Linux"})
	}
	return r
}

// Init reports that no sandbox init runs on this platform.
func Init() InitChoice { return InitChoice{Reason: ErrUnsupported.Error()} }
