package egress

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/enclave-dev/enclave/internal/looptest"
	"github.com/enclave-dev/enclave/internal/policy"
)

// sinkServer reads 8 bytes of length, then that many bytes, and answers
// the 8 bytes back: one "transfer" of a known size, timed end to end.
// With a negative length it sends that many bytes instead (download).
func startSink(tb testing.TB) int {
	tb.Helper()
	addr := looptest.Serve(tb, func(c net.Conn) {
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
	})
	return looptest.Port(addr)
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
// the latency a small plain-HTTP request gains through the proxy. Set
// ENCLAVE_BENCH=1 to run it.
//
// The processes are laid out as in a session: the agent (the client), the
// proxy and the upstream (the servers) are three processes, so the proxy
// competes for the CPUs as it does beside a real agent. This test is the
// proxy's process; it re-executes the test binary for the servers and for
// the client (TestBenchHelper). The same client and servers, buffer sizes
// and connection handling serve every path; rounds alternate the paths so
// drift hits all of them; medians and ratios come from this one run.
//
// Two bare relays run beside the proxy as peers, in its process and with no
// policy, budget or record: one splicing (io.Copy between two TCP
// connections, which Go turns into splice(2)) and one copying through a
// 1 MiB buffer. They show what any user-space relay costs on this machine,
// apart from what the proxy adds.
func TestProxyBenchReport(t *testing.T) {
	if os.Getenv("ENCLAVE_BENCH") == "" {
		t.Skip("set ENCLAVE_BENCH=1 (bench/proxy.sh does)")
	}
	servers := startHelper(t, "servers", nil)
	ports := map[string]int{}
	for range 2 {
		var name string
		var port int
		if _, err := fmt.Fscan(servers.out, &name, &port); err != nil {
			t.Fatalf("read server ports: %v", err)
		}
		ports[name] = port
	}
	sink, small := ports["sink"], ports["small"]
	if sink == 0 || small == 0 {
		t.Fatalf("server ports %v", ports)
	}
	sinkAddr := fmt.Sprintf("127.0.0.1:%d", sink)
	tp := benchProxy(t, sink, small)
	targets := []string{
		"direct=" + sinkAddr,
		"proxy=" + tp.addr + "/" + sinkAddr,
		"relay-copy=" + looptest.Relay(t, sinkAddr, copyThrough),
		"relay-splice=" + looptest.Relay(t, sinkAddr, spliceThrough),
	}
	vias := []string{"proxy", "relay-copy", "relay-splice"}
	if os.Getenv("ENCLAVE_BENCH_NETNS") != "" {
		// The agent's side in a network namespace of its own, as in a
		// session, with loopback as the init leaves it and with BIG TCP.
		if os.Geteuid() != 0 {
			t.Fatal("ENCLAVE_BENCH_NETNS needs root to make network namespaces")
		}
		for _, v := range []struct {
			name string
			big  bool
		}{{"sandbox", false}, {"sandbox-bigtcp", true}} {
			path, l := sandboxNetns(t, v.big)
			go tp.p.Serve(l)
			targets = append(targets, v.name+"="+l.Addr().String()+"/"+sinkAddr+"@"+path)
			vias = append(vias, v.name)
		}
	}
	client := startHelper(t, "client", []string{
		"ENCLAVE_BENCH_TARGETS=" + strings.Join(targets, ","),
		fmt.Sprintf("ENCLAVE_BENCH_SMALL=http://127.0.0.1:%d/", small),
		"ENCLAVE_BENCH_PROXY=" + tp.addr,
		fmt.Sprintf("ENCLAVE_BENCH_PIDS=%d,%d", servers.cmd.Process.Pid, os.Getpid()),
	})
	tput := map[string][]float64{}       // "upload proxy" -> MiB/s per round
	cpu := map[string][3]time.Duration{} // "upload proxy" -> client, servers, proxy process
	lat := map[string][]time.Duration{}
	var size int64
	sc := bufio.NewScanner(client.out)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 5 && f[0] == "tput":
			v, _ := strconv.ParseFloat(f[3], 64)
			size, _ = strconv.ParseInt(f[4], 10, 64)
			tput[f[1]+" "+f[2]] = append(tput[f[1]+" "+f[2]], v)
		case len(f) == 6 && f[0] == "cpu":
			k := f[1] + " " + f[2]
			c := cpu[k]
			for i := range c {
				ns, _ := strconv.ParseInt(f[3+i], 10, 64)
				c[i] += time.Duration(ns)
			}
			cpu[k] = c
		case len(f) > 2 && f[0] == "lat":
			for _, x := range f[2:] {
				ns, _ := strconv.ParseInt(x, 10, 64)
				lat[f[1]] = append(lat[f[1]], time.Duration(ns))
			}
		case len(f) > 0 && f[0] == "error":
			t.Fatalf("bench client: %s", sc.Text())
		}
	}
	if err := client.wait(); err != nil {
		t.Fatalf("bench client: %v", err)
	}
	for _, dir := range []string{"upload", "download"} {
		d := tput[dir+" direct"]
		if len(d) == 0 {
			t.Fatalf("no %s rounds", dir)
		}
		for _, via := range vias {
			p := tput[dir+" "+via]
			fmt.Printf("throughput %-8s %d MiB x %d rounds: direct median %.0f MiB/s, %-14s median %.0f MiB/s, ratio %.2f\n",
				dir, size>>20, len(p), median(d), via, median(p), median(p)/median(d))
		}
	}
	// CPU seconds per GiB moved, per process, summed over the rounds: the
	// machine's CPUs are what a relay competes for.
	for _, dir := range []string{"upload", "download"} {
		for _, via := range append([]string{"direct"}, vias...) {
			c, gib := cpu[dir+" "+via], float64(size)*float64(len(tput[dir+" "+via]))/(1<<30)
			per := func(d time.Duration) float64 { return d.Seconds() / gib }
			fmt.Printf("cpu per GiB %-8s %-14s client %.3fs, servers %.3fs, proxy process %.3fs, total %.3fs\n",
				dir, via, per(c[0]), per(c[1]), per(c[2]), per(c[0]+c[1]+c[2]))
		}
	}
	for _, q := range []float64{0.50, 0.99} {
		d, p := percentile(lat["direct"], q), percentile(lat["proxy"], q)
		fmt.Printf("latency p%.0f small GET, %d requests each: direct %v, proxy %v, added %v, ratio %.2f\n",
			q*100, len(lat["proxy"]), d, p, p-d, float64(p)/float64(d))
	}
	up, down, allowed, denied := tp.p.Stats()
	fmt.Printf("proxy flows recorded: %d allowed, %d denied; %d MiB up, %d MiB down\n", allowed, denied, up>>20, down>>20)
}

// TestBenchHelper is not a test: TestProxyBenchReport re-executes the test
// binary into it as the servers or the client process.
func TestBenchHelper(t *testing.T) {
	switch os.Getenv("ENCLAVE_BENCH_HELPER") {
	case "":
		t.Skip("a helper process of TestProxyBenchReport")
	case "servers":
		fmt.Printf("sink %d\nsmall %d\n", startSink(t), smallServer(t))
		io.Copy(io.Discard, os.Stdin) // serve until the parent goes away
	case "client":
		if err := benchClient(); err != nil {
			fmt.Printf("error %v\n", err)
		}
	}
}

// benchClient runs the rounds: for each direction, ENCLAVE_BENCH_ROUNDS
// times, one transfer over each target in turn; then the small GETs,
// alternating direct and proxied. It prints raw samples on stdout.
func benchClient() error {
	rounds := envInt("ENCLAVE_BENCH_ROUNDS", 5)
	size := int64(envInt("ENCLAVE_BENCH_MIB", 1024)) << 20
	requests := envInt("ENCLAVE_BENCH_REQUESTS", 5000)
	pids := []string{"self"}
	pids = append(pids, strings.Split(os.Getenv("ENCLAVE_BENCH_PIDS"), ",")...)
	type target struct{ name, addr, connect, netns string }
	var targets []target
	for _, spec := range strings.Split(os.Getenv("ENCLAVE_BENCH_TARGETS"), ",") {
		// name=addr[/connect-target][@netns]
		name, addr, _ := strings.Cut(spec, "=")
		addr, ns, _ := strings.Cut(addr, "@")
		addr, connect, _ := strings.Cut(addr, "/")
		targets = append(targets, target{name, addr, connect, ns})
	}
	for _, dir := range []struct {
		name string
		n    int64
	}{{"upload", size}, {"download", -size}} {
		for range rounds {
			for _, tg := range targets {
				var c net.Conn
				var err error
				if tg.netns != "" {
					c, err = dialIn(tg.netns, tg.addr)
				} else {
					c, err = net.Dial("tcp", tg.addr)
				}
				if err != nil {
					return err
				}
				if tg.connect != "" {
					if err := connectThrough(c, tg.connect); err != nil {
						return err
					}
				}
				cpu0 := cpuTimes(pids)
				start := time.Now()
				if err := transfer(c, nil, dir.n); err != nil {
					return fmt.Errorf("%s %s: %w", dir.name, tg.name, err)
				}
				mbps := float64(size) / time.Since(start).Seconds() / (1 << 20)
				cpu1 := cpuTimes(pids)
				c.Close()
				fmt.Printf("tput %s %s %.1f %d\n", dir.name, tg.name, mbps, size)
				fmt.Printf("cpu %s %s %d %d %d\n", dir.name, tg.name, cpu1[0]-cpu0[0], cpu1[1]-cpu0[1], cpu1[2]-cpu0[2])
			}
		}
	}
	u := os.Getenv("ENCLAVE_BENCH_SMALL")
	clients := map[string]*http.Client{"direct": httpClient(""), "proxy": httpClient(os.Getenv("ENCLAVE_BENCH_PROXY"))}
	for via, c := range clients { // warm up connections on both paths
		for range 200 {
			if err := get(c, u); err != nil {
				return fmt.Errorf("%s: %w", via, err)
			}
		}
	}
	lat := map[string][]string{}
	for range requests {
		for _, via := range []string{"direct", "proxy"} {
			start := time.Now()
			if err := get(clients[via], u); err != nil {
				return err
			}
			lat[via] = append(lat[via], strconv.FormatInt(int64(time.Since(start)), 10))
		}
	}
	for via, ls := range lat {
		fmt.Printf("lat %s %s\n", via, strings.Join(ls, " "))
	}
	return nil
}

// cpuTimes returns the user plus system CPU time each process has used so
// far, from /proc (in clock ticks of 10ms; a 1 GiB round takes tens of
// them). A process that cannot be read counts as 0.
func cpuTimes(pids []string) []time.Duration {
	ds := make([]time.Duration, len(pids))
	for i, pid := range pids {
		b, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			continue
		}
		// Fields after the command name, which is in parentheses and may
		// hold spaces: state is field 3, utime and stime fields 14 and 15.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		ds[i] = time.Duration(u+s) * 10 * time.Millisecond
	}
	return ds
}

// connectThrough opens a CONNECT tunnel to target over c.
func connectThrough(c net.Conn, target string) error {
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil {
		return fmt.Errorf("CONNECT %s: %w", target, err)
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("CONNECT %s: %s", target, resp.Status)
	}
	if br.Buffered() != 0 {
		return fmt.Errorf("CONNECT %s: bytes after the 200", target)
	}
	return nil
}

type helper struct {
	cmd *exec.Cmd
	out io.Reader
}

func (h *helper) wait() error { return h.cmd.Wait() }

// startHelper re-executes the test binary as a bench helper process. Its
// stdin is a pipe the test closes at cleanup, which ends a server helper.
func startHelper(t *testing.T, role string, env []string) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchHelper$", "-test.count=1")
	cmd.Env = append(append(os.Environ(), "ENCLAVE_BENCH_HELPER="+role), env...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close()
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return &helper{cmd: cmd, out: out}
}

// copyThrough and spliceThrough are the two ways a bare relay moves one
// direction: through a user-space buffer, or with io.Copy between the two
// *net.TCPConn, which Go implements with splice(2).
func copyThrough(dst, src *net.TCPConn) {
	io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, make([]byte, 1<<20))
}

func spliceThrough(dst, src *net.TCPConn) { io.Copy(dst, src) }

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
