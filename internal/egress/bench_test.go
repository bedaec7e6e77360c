package egress

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/enclave-dev/enclave/internal/policy"
)

// sinkServer reads 8 bytes of length, then that many bytes, and answers
// the 8 bytes back: one "transfer" of a known size, timed end to end.
// With a negative length it sends that many bytes instead (download).
func startSink(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var hdr [8]byte
				for {
					if _, err := io.ReadFull(c, hdr[:]); err != nil {
						return
					}
					n := int64(binary.BigEndian.Uint64(hdr[:]))
					if n >= 0 {
						if err := discardN(c, n); err != nil {
							return
						}
					} else if err := sendN(c, -n); err != nil {
						return
					}
					if _, err := c.Write(hdr[:]); err != nil {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

type zeroReader struct{}

func (zeroReader) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

// Both ends move data in 1 MiB reads and writes, so the measurement is not
// bound by small user-space copies on either side.
const ioBuf = 1 << 20

func sendN(w io.Writer, n int64) error {
	buf := make([]byte, ioBuf)
	for n > 0 {
		k, err := w.Write(buf[:min(n, ioBuf)])
		if err != nil {
			return err
		}
		n -= int64(k)
	}
	return nil
}

func discardN(r io.Reader, n int64) error {
	buf := make([]byte, ioBuf)
	for n > 0 {
		k, err := r.Read(buf[:min(n, ioBuf)])
		n -= int64(k)
		if err != nil && n > 0 {
			return err
		}
	}
	return nil
}

// transfer moves n bytes up (n > 0) or down (n < 0) over c and waits for
// the sink's acknowledgement.
func transfer(c net.Conn, br *bufio.Reader, n int64) error {
	var hdr [8]byte
	binary.BigEndian.PutUint64(hdr[:], uint64(n))
	if _, err := c.Write(hdr[:]); err != nil {
		return err
	}
	var r io.Reader = c
	if br != nil {
		r = br
	}
	if n > 0 {
		if err := sendN(c, n); err != nil {
			return err
		}
	} else if err := discardN(r, -n); err != nil {
		return err
	}
	var ack [8]byte
	_, err := io.ReadFull(r, ack[:])
	return err
}

func benchProxy(tb testing.TB, ports ...int) *testProxy {
	n := &policy.Network{Allow: []policy.HostRule{{Host: "127.0.0.1", Ports: ports}}}
	return startProxy(tb, n, nil, func(c *Config) { c.ByteBudget = 1 << 50 })
}

func dialDirect(tb testing.TB, port int) (net.Conn, *bufio.Reader) {
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		tb.Fatal(err)
	}
	return c, nil
}

func dialTunnel(tb testing.TB, tp *testProxy, port int) (net.Conn, *bufio.Reader) {
	c, err := net.Dial("tcp", tp.addr)
	if err != nil {
		tb.Fatal(err)
	}
	fmt.Fprintf(c, "CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n", port)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil || resp.StatusCode != 200 {
		tb.Fatalf("CONNECT: %v %v", resp, err)
	}
	if br.Buffered() != 0 {
		tb.Fatal("bytes after the 200")
	}
	// Nothing is buffered: use c directly so the client side copies too.
	return c, nil
}

const benchChunk = 64 << 20

func BenchmarkLoopbackDirect(b *testing.B) {
	port := startSink(b)
	c, br := dialDirect(b, port)
	defer c.Close()
	b.SetBytes(benchChunk)
	for b.Loop() {
		if err := transfer(c, br, benchChunk); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkConnectRelay(b *testing.B) {
	port := startSink(b)
	tp := benchProxy(b, port)
	c, br := dialTunnel(b, tp, port)
	defer c.Close()
	b.SetBytes(benchChunk)
	for b.Loop() {
		if err := transfer(c, br, benchChunk); err != nil {
			b.Fatal(err)
		}
	}
}

func smallServer(tb testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "2")
		w.Write([]byte("ok"))
	})}
	go srv.Serve(l)
	tb.Cleanup(func() { srv.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

func httpClient(proxy string) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}
	if proxy != "" {
		u, _ := url.Parse("http://" + proxy)
		tr.Proxy = http.ProxyURL(u)
	}
	return &http.Client{Transport: tr}
}

func get(c *http.Client, u string) error {
	resp, err := c.Get(u)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

func BenchmarkSmallRequestDirect(b *testing.B) {
	port := smallServer(b)
	c := httpClient("")
	u := fmt.Sprintf("http://127.0.0.1:%d/", port)
	for b.Loop() {
		if err := get(c, u); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSmallRequestProxy(b *testing.B) {
	port := smallServer(b)
	tp := benchProxy(b, port)
	c := httpClient(tp.addr)
	u := fmt.Sprintf("http://127.0.0.1:%d/", port)
	for b.Loop() {
		if err := get(c, u); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckHead(b *testing.B) {
	head := []byte("GET http://api.example.com/v1/models?limit=10 HTTP/1.1\r\nHost: api.example.com\r\n" +
		"User-Agent: agent/1.0\r\nAccept: application/json\r\nAuthorization: Bearer xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n" +
		"Content-Length: 0\r\nAccept-Encoding: gzip\r\n\r\n")
	b.SetBytes(int64(len(head)))
	for b.Loop() {
		if s, r := checkHead(head); s != 0 {
			b.Fatal(r)
		}
	}
}

func BenchmarkForbiddenReason(b *testing.B) {
	as := addrs("8.8.8.8", "10.1.2.3", "2606:4700::1", "::ffff:169.254.169.254", "64:ff9b::a00:1")
	for b.Loop() {
		for _, a := range as {
			ForbiddenReason(a)
		}
	}
}

// TestProxyBenchReport is the measurement bench/proxy.sh runs: CONNECT
// throughput against direct loopback for a 1 GiB transfer each way, and
// the latency a small plain-HTTP request gains through the proxy. Rounds
// alternate direct and proxied runs so drift hits both; medians and
// ratios come from this one run. Set ENCLAVE_BENCH=1 to run it.
func TestProxyBenchReport(t *testing.T) {
	if os.Getenv("ENCLAVE_BENCH") == "" {
		t.Skip("set ENCLAVE_BENCH=1 (bench/proxy.sh does)")
	}
	rounds := envInt("ENCLAVE_BENCH_ROUNDS", 5)
	size := int64(envInt("ENCLAVE_BENCH_MIB", 1024)) << 20
	requests := envInt("ENCLAVE_BENCH_REQUESTS", 5000)

	sink := startSink(t)
	tp := benchProxy(t, sink)
	for _, dir := range []struct {
		name string
		n    int64
	}{{"upload", size}, {"download", -size}} {
		var direct, proxied []float64
		for range rounds {
			for _, via := range []string{"direct", "proxy"} {
				var c net.Conn
				if via == "direct" {
					c, _ = dialDirect(t, sink)
				} else {
					c, _ = dialTunnel(t, tp, sink)
				}
				start := time.Now()
				if err := transfer(c, nil, dir.n); err != nil {
					t.Fatal(err)
				}
				mbps := float64(size) / time.Since(start).Seconds() / (1 << 20)
				c.Close()
				if via == "direct" {
					direct = append(direct, mbps)
				} else {
					proxied = append(proxied, mbps)
				}
			}
		}
		d, p := median(direct), median(proxied)
		fmt.Printf("throughput %-8s %d MiB x %d rounds: direct median %.0f MiB/s, CONNECT median %.0f MiB/s, ratio %.2f\n",
			dir.name, size>>20, rounds, d, p, p/d)
	}

	small := smallServer(t)
	tp2 := benchProxy(t, small)
	u := fmt.Sprintf("http://127.0.0.1:%d/", small)
	clients := map[string]*http.Client{"direct": httpClient(""), "proxy": httpClient(tp2.addr)}
	lat := map[string][]time.Duration{}
	for via, c := range clients { // warm up connections on both paths
		for range 200 {
			if err := get(c, u); err != nil {
				t.Fatalf("%s: %v", via, err)
			}
		}
	}
	for range requests {
		for _, via := range []string{"direct", "proxy"} {
			start := time.Now()
			if err := get(clients[via], u); err != nil {
				t.Fatal(err)
			}
			lat[via] = append(lat[via], time.Since(start))
		}
	}
	for _, q := range []float64{0.50, 0.99} {
		d, p := percentile(lat["direct"], q), percentile(lat["proxy"], q)
		fmt.Printf("latency p%.0f small GET, %d requests each: direct %v, proxy %v, added %v, ratio %.2f\n",
			q*100, requests, d, p, p-d, float64(p)/float64(d))
	}
	_, _, allowed, denied := tp2.p.Stats()
	fmt.Printf("proxy flows recorded: %d allowed, %d denied\n", allowed, denied)
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func percentile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(int(float64(len(s))*q), len(s)-1)]
}
