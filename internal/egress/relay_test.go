package egress

import (
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enclave-dev/enclave/internal/policy"
)

// randomBytes returns n bytes from a seeded generator, so a relay that
// reorders, drops or reuses a buffer too early shows up as a hash mismatch.
func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed+1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestTunnelBulkExact moves several relay steps of data each way at once
// and checks every byte arrives in order and every count is exact: the
// flow record, the proxy's totals and the budget's reservation.
func TestTunnelBulkExact(t *testing.T) {
	upData := randomBytes(5*relayBuf+12345, 1)
	downData := randomBytes(3*relayBuf+777, 2)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	gotUp := make(chan [32]byte, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		go c.Write(downData) // both directions at once
		h := sha256.New()
		io.Copy(h, c)
		gotUp <- [32]byte(h.Sum(nil))
	}()
	port := l.Addr().(*net.TCPAddr).Port
	n := &policy.Network{Allow: []policy.HostRule{{Host: "127.0.0.1", Ports: []int{port}}}}
	tp := startProxy(t, n, nil, nil)
	c, br := connectTunnel(t, tp, port)
	defer c.Close()
	go func() {
		c.Write(upData)
		c.(*net.TCPConn).CloseWrite()
	}()
	down, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("read tunnel: %v", err)
	}
	if !bytes.Equal(down, downData) {
		t.Errorf("downloaded %d bytes, want the %d sent, unchanged", len(down), len(downData))
	}
	select {
	case h := <-gotUp:
		if h != sha256.Sum256(upData) {
			t.Errorf("upstream received different bytes than the %d sent", len(upData))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("upstream never saw the end of the upload")
	}
	f := tp.rec.waitEnds(t, 1)[0]
	if f.BytesUp != int64(len(upData)) || f.BytesDown != int64(len(downData)) || f.Partial || f.Err != "" {
		t.Errorf("flow = up %d down %d partial %v err %q, want up %d down %d, complete",
			f.BytesUp, f.BytesDown, f.Partial, f.Err, len(upData), len(downData))
	}
	bUp, bDown, _, _ := tp.p.Stats()
	if bUp != f.BytesUp || bDown != f.BytesDown {
		t.Errorf("Stats() = %d up, %d down, want the flow's %d, %d", bUp, bDown, f.BytesUp, f.BytesDown)
	}
	if used := tp.p.budget.used.Load(); used != bUp+bDown {
		t.Errorf("budget used %d after the flow, want exactly the %d bytes moved", used, bUp+bDown)
	}
}

// TestTunnelStalledReader: the agent half-closes its side and then never
// reads what the upstream sends. Nothing moves once the socket buffers are
// full, so the tunnel must end after IdleTimeout and be recorded as cut,
// instead of holding a goroutine and an unrecorded flow forever.
func TestTunnelStalledReader(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 64<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	port := l.Addr().(*net.TCPAddr).Port
	n := &policy.Network{Allow: []policy.HostRule{{Host: "127.0.0.1", Ports: []int{port}}}}
	tp := startProxy(t, n, nil, func(c *Config) { c.IdleTimeout = 300 * time.Millisecond })
	c, _ := connectTunnel(t, tp, port)
	defer c.Close()
	c.(*net.TCPConn).CloseWrite()
	start := time.Now()
	f := tp.rec.waitEnds(t, 1)[0]
	if !f.Partial || !strings.Contains(f.Err, "idle") || f.BytesDown == 0 {
		t.Errorf("flow = partial %v, err %q, %d bytes down; want cut as idle after some bytes", f.Partial, f.Err, f.BytesDown)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("tunnel ended %s after the agent stopped reading, want about 2 × 300ms", d)
	}
}

// TestStepReaderBuffers checks that a relay direction holds a pooled
// buffer only while it moves bytes: not while it waits on an idle socket,
// not after a step is released, not after the end of the stream.
func TestStepReaderBuffers(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	peer := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		peer <- c
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := <-peer
	defer p.Close()

	r := newStepReader(c)
	if r.rc == nil {
		t.Fatal("newStepReader(*net.TCPConn) has no RawConn: the relay would not use the pool")
	}
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if buf, err := r.read(relayBuf); !isTimeout(err) || len(buf) != 0 {
		t.Errorf("read on an idle socket = %d bytes, %v; want a timeout", len(buf), err)
	}
	if r.bp != nil {
		t.Error("an idle read kept a pooled buffer")
	}
	p.Write([]byte("hello"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf, err := r.read(3) // at most the budget's grant
	if err != nil || string(buf) != "hel" {
		t.Errorf("read(3) = %q, %v; want \"hel\"", buf, err)
	}
	r.release()
	if buf, err = r.read(relayBuf); err != nil || string(buf) != "lo" {
		t.Errorf("read = %q, %v; want \"lo\"", buf, err)
	}
	r.release()
	if r.bp != nil {
		t.Error("release kept the pooled buffer")
	}
	p.Close()
	if buf, err := r.read(relayBuf); err != io.EOF || len(buf) != 0 {
		t.Errorf("read at end of stream = %d bytes, %v; want io.EOF", len(buf), err)
	}
	if r.bp != nil {
		t.Error("end of stream kept a pooled buffer")
	}
}

// TestStepReaderFallback covers connections that are not sockets (test
// fakes, wrappers): the relay reads them through net.Conn.
func TestStepReaderFallback(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	r := newStepReader(a)
	if r.rc != nil {
		t.Fatal("net.Pipe has a RawConn?")
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		b.Write([]byte("abc"))
		b.Close()
	}()
	var got []byte
	for {
		buf, err := r.read(2)
		got = append(got, buf...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
	}
	wg.Wait()
	if string(got) != "abc" {
		t.Errorf("read through net.Pipe = %q, want \"abc\"", got)
	}
}

// TestTunnelUploadWhileDownloadWaits: the upstream answers at once with
// more than the socket buffers hold, while the agent keeps uploading for
// several idle timeouts before it reads the answer. Bytes move all along,
// so the tunnel must not be cut as idle, and every byte must arrive.
func TestTunnelUploadWhileDownloadWaits(t *testing.T) {
	answer := randomBytes(16<<20, 3)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	gotUp := make(chan int64, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		wrote := make(chan struct{})
		go func() { c.Write(answer); close(wrote) }()
		n, _ := io.Copy(io.Discard, c)
		gotUp <- n
		<-wrote
	}()
	port := l.Addr().(*net.TCPAddr).Port
	n := &policy.Network{Allow: []policy.HostRule{{Host: "127.0.0.1", Ports: []int{port}}}}
	const idle = 300 * time.Millisecond
	tp := startProxy(t, n, nil, func(c *Config) { c.IdleTimeout = idle })
	c, br := connectTunnel(t, tp, port)
	defer c.Close()
	var sent int64
	chunk := make([]byte, 4<<10)
	for end := time.Now().Add(4 * idle); time.Now().Before(end); {
		k, err := c.Write(chunk)
		sent += int64(k)
		if err != nil {
			t.Fatalf("upload after %d bytes: %v", sent, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.(*net.TCPConn).CloseWrite()
	down, err := io.ReadAll(br)
	if err != nil || !bytes.Equal(down, answer) {
		t.Errorf("answer: read %d of %d bytes (%v), want all of it once the upload is done", len(down), len(answer), err)
	}
	if got := <-gotUp; got != sent {
		t.Errorf("upstream received %d bytes, want the %d uploaded", got, sent)
	}
	if f := tp.rec.waitEnds(t, 1)[0]; f.Partial || f.Err != "" {
		t.Errorf("flow = partial %v, err %q; want complete", f.Partial, f.Err)
	}
}
