package egress

// The tunnel relay. Why it copies through user space instead of splicing:
//
// Go's io.Copy between two *net.TCPConn splices through a pipe, which
// saves the proxy its copy, but the next socket then gets the data as
// page-sized pipe buffers (splice_to_socket sends at most 16 per sendmsg)
// instead of the large page fragments a write builds. Measured with
// bench/proxy.sh on a 2-core VM (Linux 6.18), the client and server then
// spent 0.05-0.1 CPU-seconds more per GiB, and a bare splicing relay moved
// 0.52/0.51 of direct loopback (upload/download) where a bare copying one
// moved 0.58/0.56 and this proxy 0.59/0.60; with BIG TCP on loopback the
// copying relay gained and the splicing one did not.
//
// A relay direction therefore reads into a large pooled buffer and writes
// it out. The buffer is taken from the pool only once the source has
// bytes to read ([syscall.RawConn]), so an idle tunnel holds no buffer:
// 512 idle tunnels cost goroutines, not 2 × 512 × relayBuf bytes.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// relayBuf is the most one relay step moves: one read, one write, one
// budget reservation. Larger steps mean fewer system calls and wake-ups
// per byte; bench/proxy.sh measured 1 MiB steps within noise of 4 MiB.
const relayBuf = 1 << 20

var relayPool = sync.Pool{New: func() any {
	b := make([]byte, relayBuf)
	return &b
}}

// relay copies bytes between the agent side a and the upstream b until
// both directions end. It returns bytes moved each way and the first
// error other than a clean end of stream.
//
// Every step reserves byte budget before it reads and refunds what it
// did not write, so the sum written over all flows never exceeds the
// budget. Idle detection uses short read deadlines ("ticks"): a direction
// whose read times out checks when the tunnel last moved a byte in either
// direction and only gives up once that is IdleTimeout ago. Writes use
// the same rule, so a peer that stops reading cannot hold a tunnel (and
// its unrecorded end) forever.
func (p *Proxy) relay(a, b net.Conn) (up, down int64, err error) {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	tick := max(p.idleTimeout/4, 10*time.Millisecond)
	var (
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	fail := func(e error) {
		errOnce.Do(func() {
			first = e
			a.Close()
			b.Close()
		})
	}
	pump := func(dst, src net.Conn, n *int64, total *atomic.Int64, what string) {
		defer wg.Done()
		r := newStepReader(src)
		for {
			g := p.budget.take(relayBuf)
			if g == 0 {
				fail(fmt.Errorf("%s: %w", what, errBudget))
				return
			}
			src.SetReadDeadline(time.Now().Add(tick))
			buf, rerr := r.read(int(g))
			w, werr := p.writeAll(dst, buf, &last, tick)
			r.release()
			p.budget.refund(g - int64(w))
			*n += int64(w)
			total.Add(int64(w))
			now := time.Now()
			if w > 0 {
				last.Store(now.UnixNano())
			}
			switch {
			case werr != nil:
				if !errors.Is(werr, net.ErrClosed) {
					fail(fmt.Errorf("%s: %w", what, werr))
				}
				fail(nil)
				return
			case rerr == nil:
			case isTimeout(rerr):
				if now.Sub(time.Unix(0, last.Load())) >= p.idleTimeout {
					fail(fmt.Errorf("%s: %w after %s", what, errIdle, p.idleTimeout))
					return
				}
			case rerr == io.EOF:
				// End of stream: pass the half-close on and let the other
				// direction finish.
				if cw, ok := dst.(interface{ CloseWrite() error }); ok {
					cw.CloseWrite()
				}
				return
			default:
				if !errors.Is(rerr, net.ErrClosed) {
					fail(fmt.Errorf("%s: %w", what, rerr))
				}
				fail(nil)
				return
			}
		}
	}
	wg.Add(2)
	go pump(b, a, &up, &p.bytesUp, "agent to upstream")
	pump(a, b, &down, &p.bytesDown, "upstream to agent")
	wg.Wait()
	return up, down, first
}

// writeAll writes buf to dst. A write blocked by a peer that does not
// read is given up only when nothing has moved in either direction for
// IdleTimeout: an agent may upload for minutes before it reads the answer.
func (p *Proxy) writeAll(dst net.Conn, buf []byte, last *atomic.Int64, tick time.Duration) (int, error) {
	done := 0
	for done < len(buf) {
		dst.SetWriteDeadline(time.Now().Add(tick))
		w, err := dst.Write(buf[done:])
		done += w
		now := time.Now()
		if w > 0 {
			last.Store(now.UnixNano())
		}
		switch {
		case err == nil:
		case !isTimeout(err):
			return done, err
		case now.Sub(time.Unix(0, last.Load())) >= p.idleTimeout:
			return done, fmt.Errorf("write: %w after %s", errIdle, p.idleTimeout)
		}
	}
	return done, nil
}

// stepReader reads one relay step from a connection, taking a pooled
// buffer only once there is something to read.
type stepReader struct {
	c  net.Conn
	rc syscall.RawConn // nil: not a socket, read into a buffer of our own
	// bp is the pooled buffer of the current step, nil between steps.
	bp *[]byte
	// own is the fallback buffer for connections without a RawConn (test
	// fakes, wrapped connections); they keep it for the tunnel's life.
	own []byte
}

func newStepReader(c net.Conn) *stepReader {
	r := &stepReader{c: c}
	if sc, ok := c.(syscall.Conn); ok && rawReads {
		if rc, err := sc.SyscallConn(); err == nil {
			r.rc = rc
		}
	}
	return r
}

// read returns k > 0 bytes, or an error: io.EOF at the end of the
// stream, a timeout when the read deadline passed, or the connection's
// error. At most max bytes are read. The bytes stay valid until release.
func (r *stepReader) read(max int) (buf []byte, err error) {
	max = min(max, relayBuf)
	if r.rc == nil {
		if r.own == nil {
			r.own = make([]byte, 64<<10)
		}
		k, err := r.c.Read(r.own[:min(max, len(r.own))])
		if k > 0 {
			// Deliver the bytes; a reader that failed after them fails
			// again on the next call.
			return r.own[:k], nil
		}
		if err == nil {
			err = io.ErrNoProgress
		}
		return nil, err
	}
	var k int
	var rerr error
	err = r.rc.Read(func(fd uintptr) bool {
		if r.bp == nil {
			r.bp = relayPool.Get().(*[]byte)
		}
		for {
			k, rerr = readFD(fd, (*r.bp)[:max])
			if rerr != syscall.EINTR {
				break
			}
		}
		if rerr == syscall.EAGAIN {
			// Nothing yet: give the buffer back while we wait.
			r.release()
			return false
		}
		return true
	})
	switch {
	case err != nil: // deadline, or the connection was closed
	case rerr != nil:
		err = os.NewSyscallError("read", rerr)
	case k <= 0:
		err = io.EOF
	default:
		return (*r.bp)[:k], nil
	}
	r.release()
	return nil, err
}

// release returns the current step's pooled buffer, if any.
func (r *stepReader) release() {
	if r.bp != nil {
		relayPool.Put(r.bp)
		r.bp = nil
	}
}
