package sandbox

import (
	"reflect"
	"testing"
	"time"
)

func sampleInit() *initConfig {
	return &initConfig{
		Source: [32]byte{1, 2, 3, 31: 9},
		Mounts: []mountSpec{
			{Source: "/usr", Target: "/usr", Tree: 6},
			{Target: "/bin", Symlink: "usr/bin", Tree: -1},
			{Source: "/home/u/ws", Target: "/workspace", Writable: true, NoExec: true, Tree: -1},
			{Source: "/dev/null", Target: "/dev/null", Dev: true, File: true, Tree: 7},
		},
		Home: "/home/agent", TmpSize: 1 << 30, Hostname: "enclave",
		Listeners: []ListenSpec{{Network: "tcp", Addr: "127.0.0.1:3128"}, {Network: "udp", Addr: "127.0.0.1:53"}},
		NoExec:    true, Rows: 50, Cols: 200, WaitCgroup: true,
		Exec: execConfig{
			Argv: []string{"claude", "--print", "héllo\x00world"}, Dir: "/workspace",
			Env:       []string{"PATH=/usr/bin", "HOME=/home/agent"},
			ExecAllow: []string{"/usr/bin"}, RO: []string{"/usr", "/etc"}, RW: []string{"/workspace"},
			Limits:  Limits{Memory: 4 << 30, Processes: 1024, CPUTime: 2 * time.Hour, WallTime: -1, FileSize: 1 << 31, OpenFiles: 4096, TmpSize: 7},
			Rlimits: true, Notify: true, TTY: true,
			Degrade: []string{LayerSeccomp}, ForceMissing: []string{LayerLandlock},
		},
	}
}

func TestWireInitRoundTrip(t *testing.T) {
	for _, c := range []*initConfig{sampleInit(), {}} {
		got, err := unmarshalInit(marshalInit(c))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Errorf("unmarshalInit(marshalInit(c)) =\n%+v\nwant\n%+v", got, c)
		}
	}
}

func TestWireCtlRoundTrip(t *testing.T) {
	m := ctlMsg{Kind: "started", Layer: "landlock", Msg: "a message", Status: Status{HostUID: 2000000000, HostGID: 1, Landlock: 7, LandlockScoped: true, Seccomp: true, ExecRecord: true, Limits: "rlimit", Degraded: []string{"cgroups"}}}
	got, err := unmarshalCtl(marshalCtl(m))
	if err != nil || !reflect.DeepEqual(got, m) {
		t.Errorf("unmarshalCtl(marshalCtl(m)) = %+v, %v; want %+v", got, err, m)
	}
}

// Every proper prefix of a message, and a message with a byte more, is an
// error.
func TestWireTruncated(t *testing.T) {
	b := marshalInit(sampleInit())
	for n := 0; n < len(b); n++ {
		if _, err := unmarshalInit(b[:n]); err == nil {
			t.Fatalf("unmarshalInit(first %d of %d bytes) = nil error", n, len(b))
		}
	}
	if _, err := unmarshalInit(append(b, 0)); err == nil {
		t.Fatal("unmarshalInit with a trailing byte = nil error")
	}
	c := marshalCtl(ctlMsg{Kind: "pty"})
	for n := 0; n < len(c); n++ {
		if _, err := unmarshalCtl(c[:n]); err == nil {
			t.Fatalf("unmarshalCtl(first %d of %d bytes) = nil error", n, len(c))
		}
	}
}

func FuzzWireInit(f *testing.F) {
	f.Add(marshalInit(sampleInit()))
	f.Add(marshalInit(&initConfig{}))
	f.Add(marshalCtl(ctlMsg{Kind: "started"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		// Whatever decodes survives a round trip unchanged (encodings
		// need not be minimal, so the bytes may differ).
		if c, err := unmarshalInit(b); err == nil {
			again, err := unmarshalInit(marshalInit(c))
			if err != nil || !reflect.DeepEqual(again, c) {
				t.Errorf("round trip of %+v = %+v, %v", c, again, err)
			}
		}
		if m, err := unmarshalCtl(b); err == nil {
			again, err := unmarshalCtl(marshalCtl(m))
			if err != nil || !reflect.DeepEqual(again, m) {
				t.Errorf("ctl round trip of %+v = %+v, %v", m, again, err)
			}
		}
	})
}
