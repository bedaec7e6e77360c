package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/enclave-dev/enclave/internal/looptest"
)

// TestBenchRole is one process of bench/gateway.sh, which measures the
// gateway with the fake upstream, the gateway and the load client in three
// processes (so the gateway's CPU and memory are its own, as in a real
// deployment where the upstream is remote and the agent is in a sandbox):
//
//	ENCLAVE_BENCH_ROLE=upstream  the fake model: SSE chunks stamped with the
//	                             time they were written (benchHandler)
//	ENCLAVE_BENCH_ROLE=gateway   one gateway session in front of it, and a
//	                             control listener that reports its memory
//	ENCLAVE_BENCH_ROLE=client    the load: direct and through the gateway,
//	                             alternated, at each concurrency
//
// Servers write their addresses to $ENCLAVE_BENCH_READY and run until
// SIGTERM. Without ENCLAVE_BENCH_ROLE the test skips.
func TestBenchRole(t *testing.T) {
	switch role := os.Getenv("ENCLAVE_BENCH_ROLE"); role {
	case "":
		t.Skip("a process of bench/gateway.sh; set ENCLAVE_BENCH_ROLE to run")
	case "upstream":
		ln := listen(t)
		ready(t, "http://"+ln.Addr().String())
		serveUntilTerm(t, ln, benchHandler(20, 0))
	case "gateway":
		benchGatewayRole(t)
	case "client":
		benchClientRole(t)
	default:
		t.Fatalf("ENCLAVE_BENCH_ROLE=%q: want upstream, gateway or client", role)
	}
}

func listen(t *testing.T) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func ready(t *testing.T, lines ...string) {
	if err := os.WriteFile(os.Getenv("ENCLAVE_BENCH_READY"), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatalf("ENCLAVE_BENCH_READY: %v", err)
	}
}

func serveUntilTerm(t *testing.T, ln net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	<-ctx.Done()
	srv.Close()
}

func benchGatewayRole(t *testing.T) {
	up := os.Getenv("ENCLAVE_BENCH_UPSTREAM")
	g, err := New(Config{
		Environ:   []string{"K=" + realOpenAIKey},
		Providers: []ProviderConfig{{Name: "o", Family: OpenAI, BaseURL: up + "/v1", KeyEnv: "K", Models: []string{"*"}}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The bench holds 1,000 streams open beside the client's idle
	// connections, past one agent's cap: it measures the gateway at a
	// server's scale.
	s, err := g.NewSession(SessionConfig{ID: "bench", Recorder: nopRecorder{}, MaxConns: 1 << 14})
	if err != nil {
		t.Fatal(err)
	}
	ctl := listen(t)
	go http.Serve(ctl, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		var m runtime.MemStats
		if r.URL.Path != "/cpu" { // a forced collection would count as CPU
			runtime.GC()
			runtime.ReadMemStats(&m)
			if f := os.Getenv("ENCLAVE_BENCH_HEAPPROFILE"); f != "" {
				// What the open streams hold (go tool pprof); the last
				// request, with the streams held, leaves its profile.
				if out, err := os.Create(f); err == nil {
					pprof.WriteHeapProfile(out)
					out.Close()
				}
			}
		}
		json.NewEncoder(w).Encode(map[string]uint64{
			"heap": m.HeapInuse, "stack": m.StackInuse, "goroutines": uint64(runtime.NumGoroutine()), "rss": rss(os.Getpid()),
			"cpu": uint64(ru.Utime.Nano() + ru.Stime.Nano()),
		})
	}))
	ln := listen(t)
	relay := looptest.Relay(t, strings.TrimPrefix(up, "http://"), nil)
	rp := listen(t)
	go http.Serve(rp, plainProxy(g.client, up)) // the gateway's own upstream client
	ready(t, "http://"+ln.Addr().String(), s.Token(), "http://"+ctl.Addr().String(), "http://"+relay, "http://"+rp.Addr().String())
	srv := s.Server()
	go srv.Serve(ln)
	if f := os.Getenv("ENCLAVE_BENCH_CPUPROFILE"); f != "" {
		// Where the gateway's CPU goes under load (go tool pprof).
		out, err := os.Create(f)
		if err != nil {
			t.Fatal(err)
		}
		pprof.StartCPUProfile(out)
		defer out.Close()
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	<-ctx.Done()
	srv.Close()
}

// plainProxy forwards each request to upstream with net/http's server and
// client and streams the answer back, flushing after every read: the
// gateway's plumbing with its authentication, inspection, policy and
// records taken out, so that what those cost can be told apart from what
// net/http costs per request.
func plainProxy(c *http.Client, upstream string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, upstream+r.URL.RequestURI(), bytes.NewReader(body))
		req.Header = r.Header.Clone()
		resp, err := c.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, vs := range resp.Header {
			w.Header()[k] = vs
		}
		w.WriteHeader(resp.StatusCode)
		fl := w.(http.Flusher)
		buf := make([]byte, 4<<10)
		for {
			n, err := resp.Body.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					return
				}
				fl.Flush()
			}
			if err != nil {
				return
			}
		}
	}
}

// rss is the resident set size of process pid in bytes, 0 if unknown.
func rss(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

type pathResult struct {
	ttfb, chunks []time.Duration
	// later is chunks from each stream's third on: by then the burst of
	// requests that opened the streams has been served, so these show
	// what relaying a chunk costs, apart from what opening a stream does.
	later []time.Duration
	cpu   time.Duration // the gateway process's CPU time meanwhile
}

func (p *pathResult) add(q pathResult) {
	p.ttfb = append(p.ttfb, q.ttfb...)
	p.chunks = append(p.chunks, q.chunks...)
	p.later = append(p.later, q.later...)
	p.cpu += q.cpu
}

func benchClientRole(t *testing.T) {
	up, gw, tok, ctl := os.Getenv("ENCLAVE_BENCH_UPSTREAM"), os.Getenv("ENCLAVE_BENCH_GATEWAY"),
		os.Getenv("ENCLAVE_BENCH_TOKEN"), os.Getenv("ENCLAVE_BENCH_CONTROL")
	chunks, _ := strconv.Atoi(envOr("ENCLAVE_BENCH_CHUNKS", "20"))
	gap := envOr("ENCLAVE_BENCH_GAP", "20ms")
	rounds, _ := strconv.Atoi(envOr("ENCLAVE_BENCH_ROUNDS", "2"))
	gapD, err := time.ParseDuration(gap)
	if err != nil || gapD <= 0 {
		t.Fatalf("ENCLAVE_BENCH_GAP=%q: want a positive duration", gap)
	}
	stagger := os.Getenv("ENCLAVE_BENCH_STAGGER") == "1"
	q := fmt.Sprintf("?chunks=%d&gap=%s", chunks, gap)
	direct, through := up+"/v1/chat/completions"+q, gw+"/openai/v1/chat/completions"+q
	// Two floors, served by the gateway's process beside the gateway: a
	// byte-for-byte TCP relay (what one more hop costs in the kernel and
	// the Go runtime) and plainProxy (what net/http's server and client
	// cost per request, with nothing inspected or recorded).
	relayed := os.Getenv("ENCLAVE_BENCH_RELAY") + "/v1/chat/completions" + q
	plained := os.Getenv("ENCLAVE_BENCH_PLAINPROXY") + "/v1/chat/completions" + q
	c := benchClient()

	cpu := func() time.Duration { return time.Duration(gatewayMem(t, ctl+"/cpu")["cpu"]) }
	run := func(conc, per int, url string) (res pathResult) {
		var mu sync.Mutex
		before := cpu()
		defer func() { res.cpu = cpu() - before }()
		var wg sync.WaitGroup
		for i := 0; i < conc; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if stagger {
					// Independent agents: each stream starts at its own
					// moment within one gap, so chunks do not arrive in
					// lock step (the default measures the worst case).
					time.Sleep(time.Duration(rand.Int64N(int64(gapD))))
				}
				for j := 0; j < per; j++ {
					d, delays, err := doStream(c, url, tok, benchPrompt)
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					res.ttfb = append(res.ttfb, d)
					res.chunks = append(res.chunks, delays...)
					if len(delays) > 2 {
						res.later = append(res.later, delays[2:]...)
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		return res
	}
	var cpuNote strings.Builder
	var out strings.Builder
	start := "together, chunks in lock step (worst case)"
	if stagger {
		start = "staggered over one gap (ENCLAVE_BENCH_STAGGER=1)"
	}
	fmt.Fprintf(&out, "streams of %d chunks %s apart, started %s; %d rounds, paths alternated\n", chunks, gap, start, rounds)
	fmt.Fprintf(&out, "paths: direct; gateway; relay = byte-for-byte TCP relay and plain = net/http server and client with a flushed copy loop (the gateway minus its checks), both in the gateway's process, nothing inspected or recorded\n")
	fmt.Fprintf(&out, "later p99: chunks from each stream's third on; +path: added over direct\n")
	fmt.Fprintf(&out, "%-6s %-9s %10s %10s %10s %10s %10s %9s\n", "conc", "path", "ttfb p50", "ttfb p99", "chunk p50", "chunk p99", "later p99", "chunks")
	for _, f := range strings.Split(envOr("ENCLAVE_BENCH_STREAMS", "1,100,1000"), ",") {
		conc, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || conc < 1 {
			t.Fatalf("ENCLAVE_BENCH_STREAMS: %q is not a positive number", f)
		}
		per := max(3, 50/conc)
		// The paths take turns leading, so that drift over a run (other
		// work on the machine, the CPU's clock) falls on each alike.
		paths := []struct{ name, url string }{{"direct", direct}, {"gateway", through}, {"relay", relayed}, {"plain", plained}}
		res := make([]pathResult, len(paths))
		for _, p := range paths {
			run(min(conc, 100), 1, p.url) // warm the connections
		}
		for r := 0; r < rounds; r++ {
			for i := range paths {
				k := (r + i) % len(paths)
				res[k].add(run(conc, per, paths[k].url))
			}
		}
		type pcts struct{ t50, t99, c50, c99, l99 time.Duration }
		of := func(r *pathResult) pcts {
			return pcts{pct(r.ttfb, 50), pct(r.ttfb, 99), pct(r.chunks, 50), pct(r.chunks, 99), pct(r.later, 99)}
		}
		d := of(&res[0])
		for i, p := range paths {
			v := of(&res[i])
			fmt.Fprintf(&out, "%-6d %-9s %10s %10s %10s %10s %10s %9d\n", conc, p.name, ms(v.t50), ms(v.t99), ms(v.c50), ms(v.c99), ms(v.l99), len(res[i].chunks))
		}
		for i, p := range paths[1:] {
			v := of(&res[i+1])
			fmt.Fprintf(&out, "%-6d %-9s %10s %10s %10s %10s %10s\n", conc, "+"+p.name, ms(v.t50-d.t50), ms(v.t99-d.t99), ms(v.c50-d.c50), ms(v.c99-d.c99), ms(v.l99-d.l99))
		}
		// CPU is what scheduling noise on a shared machine does not blur.
		perChunk := func(i int) float64 {
			return float64(res[i].cpu-res[0].cpu) / 1e3 / float64(max(1, len(res[i].chunks)))
		}
		fmt.Fprintf(&cpuNote, "%d streams: gateway process CPU per chunk, its request's share included: gateway %.1f us (%.1f us per stream of %d chunks), relay %.1f us, plain %.1f us\n",
			conc, perChunk(1), float64(res[1].cpu-res[0].cpu)/1e3/float64(max(1, len(res[1].ttfb))), chunks, perChunk(2), perChunk(3))
	}
	out.WriteString(cpuNote.String())

	// One plain (not streamed) request at a time.
	plain := strings.Replace(benchPrompt, `"stream":true`, `"stream":false`, 1)
	var dp, gp []time.Duration
	cpu0 := cpu()
	plainN, _ := strconv.Atoi(envOr("ENCLAVE_BENCH_REQUESTS", "400"))
	for i := 0; i < plainN; i++ {
		for _, p := range []struct {
			url  string
			into *[]time.Duration
		}{{up + "/v1/chat/completions?plain=1", &dp}, {gw + "/openai/v1/chat/completions?plain=1", &gp}} {
			start := time.Now()
			if _, _, err := doStream(c, p.url, tok, plain); err != nil {
				t.Fatal(err)
			}
			*p.into = append(*p.into, time.Since(start))
		}
	}
	reqCPU := float64(cpu()-cpu0) / 1e3 / float64(plainN)
	fmt.Fprintf(&out, "one request, not streamed: direct p50 %s p99 %s; gateway p50 %s p99 %s; added p50 %s p99 %s; gateway CPU %.1f us per request\n",
		ms(pct(dp, 50)), ms(pct(dp, 99)), ms(pct(gp, 50)), ms(pct(gp, 99)), ms(pct(gp, 50)-pct(dp, 50)), ms(pct(gp, 99)-pct(dp, 99)), reqCPU)

	// Memory per open stream, in the gateway process: hold n streams open
	// (the upstream sends headers and waits) and compare with before.
	n, _ := strconv.Atoi(envOr("ENCLAVE_BENCH_HOLD", "1000"))
	before := gatewayMem(t, ctl)
	ctx, cancel := context.WithCancel(context.Background())
	var opened sync.WaitGroup
	for i := 0; i < n; i++ {
		opened.Add(1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx, "POST", gw+"/openai/v1/chat/completions",
				strings.NewReader(strings.Replace(benchPrompt, `"model":"m"`, `"model":"hold"`, 1)))
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := c.Do(req)
			opened.Done()
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	opened.Wait()
	time.Sleep(300 * time.Millisecond)
	held := gatewayMem(t, ctl)
	cancel()
	per := func(k string) int64 { return (int64(held[k]) - int64(before[k])) / int64(n) }
	// RSS is printed for reference only: the runtime keeps and returns
	// freed memory on its own schedule, so its difference is noisy.
	fmt.Fprintf(&out, "gateway memory per open stream (%d held): Go heap %d B + stacks %d B = %d B; %d goroutines per stream; process RSS %d MiB -> %d MiB\n",
		n, per("heap"), per("stack"), per("heap")+per("stack"), (held["goroutines"]-before["goroutines"])/uint64(n), before["rss"]>>20, held["rss"]>>20)
	fmt.Print(out.String())
}

func gatewayMem(t *testing.T, ctl string) map[string]uint64 {
	resp, err := http.Get(ctl)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]uint64
	b, _ := io.ReadAll(resp.Body)
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(&m); err != nil {
		t.Fatalf("gateway control: %v: %s", err, b)
	}
	return m
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3fms", float64(d)/1e6) }
