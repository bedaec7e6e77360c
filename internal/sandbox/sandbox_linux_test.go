//go:build linux

package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestHostSecretsNotReadable(t *testing.T) {
	// A fake HOME with secrets, in a host directory the sandbox does not
	// mount; world-readable so only the view (not file modes) protects it.
	home := t.TempDir()
	os.Chmod(home, 0o755)
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o755)
	secret := "SECRET-" + strconv.Itoa(os.Getpid())
	for _, f := range []string{".ssh/id_ed25519", ".aws_credentials", ".env"} {
		if err := os.WriteFile(filepath.Join(home, f), []byte(secret), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e := newEnv(t, fmt.Sprintf(`
		for f in %[1]s/.ssh/id_ed25519 %[1]s/.aws_credentials %[1]s/.env \
		         /proc/1/root%[1]s/.env /proc/self/root%[1]s/.env /proc/1/cwd/.env; do
			cat "$f" >> /work/leak 2>/dev/null
		done
		ls -la / > /work/root-listing
		exit 0`, home))
	e.mustRun(0)
	if got := e.read("leak"); strings.Contains(got, secret) {
		t.Errorf("agent read a host secret: %q", got)
	}
	if got := e.read("root-listing"); strings.Contains(got, "work") == false || strings.Contains(got, "root\n") || strings.Contains(got, " sys\n") {
		t.Errorf("unexpected root listing:\n%s", got)
	}
}

func TestCannotWriteOutsideWorkspace(t *testing.T) {
	ro := hostDir(t)
	target := filepath.Join(ro, "file")
	if err := os.WriteFile(target, []byte("original"), 0o644); err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir() // not mounted at all
	e := newEnv(t, fmt.Sprintf(`
		echo pwned > /ro/file; echo pwned >> /ro/file; cat /dev/null > /ro/file
		rm -f /ro/file; echo new > /ro/new; chmod 777 /ro/file; ln -s /etc /ro/link
		echo pwned > %[1]s/x
		echo pwned >> /etc/passwd; touch /usr/pwned-by-agent /etc/pwned-by-agent /pwned-by-agent
		mount -o remount,rw /ro 2>/dev/null; echo pwned > /ro/file
		echo ok > /work/written
		exit 0`, outside))
	// Also a read-only mount beneath a system directory, at a mountpoint
	// that exists there (/usr/local), as a toolchain would be.
	e.cfg.Mounts = append(e.cfg.Mounts, Mount{Source: ro, Target: "/ro"}, Mount{Source: ro, Target: "/usr/local"})
	e.cfg.Argv[2] = "test -f /usr/local/file || exit 9; echo pwned > /usr/local/file; " + e.cfg.Argv[2]
	e.mustRun(0)
	if b, _ := os.ReadFile(target); string(b) != "original" {
		t.Errorf("read-only mount changed: file = %q", b)
	}
	for _, p := range []string{filepath.Join(ro, "new"), filepath.Join(ro, "link"), filepath.Join(outside, "x"), "/usr/pwned-by-agent", "/etc/pwned-by-agent", "/pwned-by-agent"} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("agent created %s on the host", p)
		}
	}
	if b, _ := os.ReadFile("/etc/passwd"); strings.Contains(string(b), "pwned") {
		t.Error("agent wrote to the host /etc/passwd")
	}
	if got := e.read("written"); got != "ok\n" {
		t.Errorf("workspace write = %q, want ok", got)
	}
}

func TestEnvironmentNotLeaked(t *testing.T) {
	secret := "sk-test-" + strconv.Itoa(os.Getpid())
	t.Setenv("ENCLAVE_FAKE_API_KEY", secret)
	e := newEnv(t, `
		for p in /proc/[0-9]*; do cat $p/environ; echo; done > /work/environ 2>/dev/null
		cat /proc/self/environ > /work/self-environ
		exit 0`)
	e.mustRun(0)
	if got := e.read("environ"); strings.Contains(got, secret) {
		t.Errorf("a process environment inside holds the launcher's secret: %q", got)
	}
	// cat inherits the shell's environment: Config.Env plus the PWD the
	// shell exports itself.
	got := strings.Split(strings.Trim(e.read("self-environ"), "\x00"), "\x00")
	want := append([]string{"PWD=/work"}, e.cfg.Env...)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("agent environment = %q, want exactly %q", got, want)
	}
}

func TestPID1EnvironUnreadable(t *testing.T) {
	e := newEnv(t, `
		cat /proc/1/environ > /work/e1 2>/dev/null; echo $? > /work/rc
		for f in /proc/1/fd/* /proc/1/root/etc/hostname /proc/1/cwd/etc/hostname /proc/1/mem /proc/1/maps; do
			cat $f >/dev/null 2>&1 && echo $f >> /work/readable
		done
		exit 0`)
	e.mustRun(0)
	if got := strings.TrimSpace(e.read("rc")); got == "0" {
		t.Errorf("agent could read /proc/1/environ (content %q)", e.read("e1"))
	}
	if got := e.read("readable"); got != "" {
		t.Errorf("agent could read the init's files through /proc/1: %q", got)
	}
}

func TestNoSysAndMinimalDev(t *testing.T) {
	e := newEnv(t, `
		test -e /sys && echo yes > /work/sys
		ls /dev > /work/dev
		exit 0`)
	e.mustRun(0)
	if e.read("sys") != "" {
		t.Error("/sys exists inside the sandbox")
	}
	got := strings.Fields(e.read("dev"))
	want := []string{"fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout", "tty", "urandom", "zero"}
	if !slices.Equal(got, want) {
		t.Errorf("/dev = %v, want %v", got, want)
	}
}

func TestDeniedSyscalls(t *testing.T) {
	e := newEnv(t, `/probe/sandbox.test __sandbox-testprobe syscalls; unshare -U true && echo 1 > /work/escaped-unshare-cmd; unshare -r true && echo 1 > /work/escaped-unshare-r; exit 0`)
	e.mustRun(0)
	ents, _ := os.ReadDir(e.ws)
	for _, d := range ents {
		if strings.HasPrefix(d.Name(), "escaped-") {
			t.Errorf("attack succeeded inside the sandbox: %s", strings.TrimPrefix(d.Name(), "escaped-"))
		}
	}
	// The probe wrote below its attempted mount point; the file reaches
	// the host only if no mount covered it.
	if _, err := os.Stat(filepath.Join(e.ws, "mnt", "visible")); err != nil {
		t.Errorf("write below the attempted mount is not on the host: %v (did the probe run?)\n%s", err, e.out)
	}
}

func TestX32ABIKills(t *testing.T) {
	e := newEnv(t, `exec /probe/sandbox.test __sandbox-testprobe x32`)
	code, err := e.run()
	if err != nil {
		t.Fatal(err)
	}
	if want := 128 + int(syscall.SIGSYS); code != want {
		t.Errorf("exit code = %d, want %d (killed by SIGSYS)", code, want)
	}
	if e.read("escaped-x32") != "" {
		t.Error("x32 system call was not stopped")
	}
}

func TestLeakedDescriptorNotInherited(t *testing.T) {
	secretDir := t.TempDir()
	os.Chmod(secretDir, 0o755)
	os.WriteFile(filepath.Join(secretDir, "secret"), []byte("LEAKED-DIR-SECRET"), 0o644)
	// Deliberately without O_CLOEXEC, as careless launcher code would.
	fd, err := unix.Open(secretDir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	e := newEnv(t, fmt.Sprintf(`
		cat /proc/self/fd/%d/secret > /work/leak 2>/dev/null
		for f in /proc/self/fd/* /proc/[0-9]*/fd/*; do cat $f/secret; done >> /work/leak 2>/dev/null
		ls /proc/self/fd > /work/fds
		exit 0`, fd))
	e.mustRun(0)
	if got := e.read("leak"); strings.Contains(got, "LEAKED") {
		t.Errorf("agent read through a leaked descriptor: %q", got)
	}
	// ls sees 0,1,2 and its own directory descriptor, nothing else.
	if got := strings.Fields(e.read("fds")); len(got) > 4 {
		t.Errorf("agent has descriptors %v, want only stdio and ls's own", got)
	}
}

func TestHostnameAndIdentity(t *testing.T) {
	e := newEnv(t, `hostname > /work/h; id > /work/id; echo $HOME > /work/home; touch ~/x && echo ok > /work/homerw; exit 0`)
	e.mustRun(0)
	if got := strings.TrimSpace(e.read("h")); got != "enclave" {
		t.Errorf("hostname = %q, want enclave", got)
	}
	if got := e.read("id"); !strings.Contains(got, "uid=1000(agent) gid=1000(agent)") {
		t.Errorf("id = %q", got)
	}
	if e.read("homerw") != "ok\n" {
		t.Error("HOME is not writable")
	}
}

func TestNoNetworkToHost(t *testing.T) {
	var accepted sync.WaitGroup
	count := 0
	var mu sync.Mutex
	var listeners []net.Listener
	for _, network := range []string{"tcp4", "tcp6"} {
		addr := "127.0.0.1:0"
		if network == "tcp6" {
			addr = "[::1]:0"
		}
		l, err := net.Listen(network, addr)
		if err != nil {
			continue
		}
		listeners = append(listeners, l)
		accepted.Add(1)
		go func() {
			defer accepted.Done()
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				count++
				mu.Unlock()
				c.Close()
			}
		}()
	}
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	var script strings.Builder
	for _, l := range listeners {
		a := l.Addr().(*net.TCPAddr)
		host := a.IP.String()
		fmt.Fprintf(&script, "bash -c 'echo x > /dev/tcp/%s/%d' 2>/dev/null && echo 1 > /work/escaped-tcp-%d\n", host, a.Port, a.Port)
	}
	fmt.Fprintf(&script, "bash -c 'echo x > /dev/udp/127.0.0.1/%d' 2>/dev/null\n", udp.LocalAddr().(*net.UDPAddr).Port)
	script.WriteString("exit 0")
	e := newEnv(t, script.String())
	e.mustRun(0)
	udp.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, _, err := udp.ReadFrom(make([]byte, 16)); err == nil {
		t.Error("a UDP datagram from the sandbox reached a host socket")
	}
	for _, l := range listeners {
		l.Close()
	}
	accepted.Wait()
	if count != 0 {
		t.Errorf("%d TCP connections from the sandbox reached host listeners", count)
	}
	ents, _ := os.ReadDir(e.ws)
	for _, d := range ents {
		if strings.HasPrefix(d.Name(), "escaped-") {
			t.Errorf("connect succeeded: %s", d.Name())
		}
	}
}

func TestListenersInsideNetns(t *testing.T) {
	e := newEnv(t, `
		bash -c 'echo hello-tcp > /dev/tcp/127.0.0.1/3128'
		bash -c 'echo hello-udp > /dev/udp/127.0.0.1/53'
		exit 0`)
	e.cfg.Listeners = []ListenSpec{{Network: "tcp", Addr: "127.0.0.1:3128"}, {Network: "udp", Addr: "127.0.0.1:53"}}
	s, err := e.start()
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 2)
	go func() {
		c, err := s.Listener(0).Accept()
		if err != nil {
			got <- "accept: " + err.Error()
			return
		}
		b := make([]byte, 64)
		n, _ := c.Read(b)
		c.Close()
		got <- string(b[:n])
	}()
	go func() {
		b := make([]byte, 64)
		n, _, err := s.PacketConn(1).ReadFrom(b)
		if err != nil {
			got <- "read: " + err.Error()
			return
		}
		got <- string(b[:n])
	}()
	var msgs []string
	for range 2 {
		select {
		case m := <-got:
			msgs = append(msgs, strings.TrimSpace(m))
		case <-time.After(10 * time.Second):
			t.Fatalf("listeners got %v before timeout", msgs)
		}
	}
	slices.Sort(msgs)
	if want := []string{"hello-tcp", "hello-udp"}; !slices.Equal(msgs, want) {
		t.Errorf("listeners received %q, want %q", msgs, want)
	}
	if code, err := s.Wait(); code != 0 || err != nil {
		t.Errorf("Wait() = %d, %v, want 0, nil", code, err)
	}
	if s.Listener(1) != nil || s.PacketConn(0) != nil {
		t.Error("Listener/PacketConn returned a socket of the wrong type")
	}
}

func TestExitCodesAndSignals(t *testing.T) {
	for _, tt := range []struct {
		script string
		want   int
	}{
		{"exit 0", 0},
		{"exit 42", 42},
		{"kill -TERM $$", 128 + int(syscall.SIGTERM)},
		{"kill -KILL $$", 128 + int(syscall.SIGKILL)},
		{"/no/such/program", 127},
	} {
		t.Run(tt.script, func(t *testing.T) {
			e := newEnv(t, tt.script)
			e.mustRun(tt.want)
		})
	}
}

func TestSignalForwarded(t *testing.T) {
	e := newEnv(t, `trap 'echo got > /work/sig; exit 3' TERM; echo > /work/ready; while :; do sleep 0.05; done`)
	s, err := e.start()
	if err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(e.ws, "ready"))
	if err := s.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, err := s.Wait()
	if code != 3 || err != nil {
		t.Errorf("Wait() = %d, %v, want 3, nil", code, err)
	}
	if e.read("sig") != "got\n" {
		t.Error("the agent's TERM trap did not run")
	}
}

func waitFile(t *testing.T, p string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(p); err == nil {
			return
		}
	}
	t.Fatalf("%s did not appear", p)
}

// sandboxPids lists the host pids of init's descendants.
func sandboxPids(root int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, d := range ents {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		children[ppid] = append(children[ppid], pid)
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z"
}

func TestKilledWithContextLeavesNothing(t *testing.T) {
	e := newEnv(t, `(sleep 1000 &) ; sleep 1000 & setsid sleep 1000 & echo > /work/ready; wait`)
	ctx, cancel := context.WithCancel(context.Background())
	r, w, _ := os.Pipe()
	e.cfg.Stdout, e.cfg.Stderr = w, w
	s, err := Start(ctx, &e.cfg)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	waitFile(t, filepath.Join(e.ws, "ready"))
	pids := sandboxPids(s.Pid())
	if len(pids) < 5 {
		t.Fatalf("found only %d sandbox processes: %v", len(pids), pids)
	}
	cancel()
	code, err := s.Wait()
	if !errors.Is(err, context.Canceled) || code != 128+int(syscall.SIGKILL) {
		t.Errorf("Wait() = %d, %v, want %d, context.Canceled", code, err, 128+int(syscall.SIGKILL))
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, p := range pids {
		for alive(p) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if alive(p) {
			t.Errorf("sandbox process %d survived", p)
		}
	}
}

func TestWallTime(t *testing.T) {
	e := newEnv(t, `sleep 100`)
	e.cfg.Limits.WallTime = 300 * time.Millisecond
	start := time.Now()
	code, err := e.run()
	if !errors.Is(err, ErrWallTime) || code != 137 {
		t.Errorf("run() = %d, %v, want 137, ErrWallTime", code, err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("wall time limit took %v", d)
	}
}

func TestForkBombBounded(t *testing.T) {
	const limit = 24
	e := newEnv(t, `exec /probe/sandbox.test __sandbox-testprobe forkbomb`)
	e.cfg.Limits.Processes = limit
	s, err := e.start()
	if err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(e.ws, "ready"))
	// Counted from the host: init, the agent and its children. The limit
	// counts threads (the pids cgroup) or tasks of the agent's uid (the
	// rlimit), and the init's and the Go probe's threads take a share.
	if n := len(sandboxPids(s.Pid())); n > limit+2 || n < limit/3 {
		t.Errorf("sandbox has %d processes with a limit of %d (via %s)", n, limit, s.Status().Limits)
	}
}

func TestMemoryBounded(t *testing.T) {
	e := newEnv(t, `exec /probe/sandbox.test __sandbox-testprobe hog`)
	e.cfg.Limits.Memory = 128 << 20
	code, err := e.run()
	if err != nil {
		t.Fatal(err)
	}
	if code == 0 || e.read("escaped-hog-64") != "" {
		t.Errorf("a 512 MiB allocation succeeded under a 128 MiB limit (exit %d)", code)
	}
}

func TestExecRecord(t *testing.T) {
	var mu sync.Mutex
	var events []ExecEvent
	e := newEnv(t, `/usr/bin/echo one "two words" > /work/echo; /usr/bin/true; echo $? > /work/true-rc; exit 0`)
	e.cfg.OnExec = func(ev ExecEvent) error {
		mu.Lock()
		events = append(events, ev)
		mu.Unlock()
		if ev.Path == "/usr/bin/true" {
			return errors.New("policy refuses true")
		}
		return nil
	}
	e.mustRun(0)
	if got := e.read("echo"); got != "one two words\n" {
		t.Errorf("echo output = %q", got)
	}
	if got := strings.TrimSpace(e.read("true-rc")); got != "126" {
		t.Errorf("refused exec exit status = %q, want 126 (EPERM)", got)
	}
	mu.Lock()
	defer mu.Unlock()
	var argvs []string
	for _, ev := range events {
		argvs = append(argvs, strings.Join(ev.Argv, "|"))
		if ev.PID <= 0 || ev.Time.IsZero() {
			t.Errorf("incomplete event %+v", ev)
		}
	}
	want := []string{"/bin/sh|-c|" + e.cfg.Argv[2], "/usr/bin/echo|one|two words", "/usr/bin/true"}
	if !slices.Equal(argvs, want) {
		t.Errorf("recorded argv = %q, want %q", argvs, want)
	}
	if len(events) > 1 && events[1].Cwd != "/work" {
		t.Errorf("recorded cwd = %q, want /work", events[1].Cwd)
	}
}

func TestExecAllow(t *testing.T) {
	e := newEnv(t, `/usr/bin/touch /work/allowed; /usr/bin/id > /work/id 2>/dev/null; echo $? > /work/id-rc; exit 0`)
	e.cfg.ExecAllow = []string{"/bin/sh", "/usr/bin/touch"}
	e.mustRun(0)
	if _, err := os.Stat(filepath.Join(e.ws, "allowed")); err != nil {
		t.Errorf("allowed program did not run: %v", err)
	}
	if got := strings.TrimSpace(e.read("id-rc")); got != "126" || e.read("id") != "" {
		t.Errorf("program outside ExecAllow ran: status %q, output %q", got, e.read("id"))
	}
}

// execRoutes runs the execroutes probe and returns the routes whose
// program ran (ran-ROUTE markers in the workspace) and each step's errno.
func execRoutes(t *testing.T, execAllow []string) (ran map[string]bool, errno map[string]string) {
	t.Helper()
	e := newEnv(t, `exec /probe/sandbox.test __sandbox-testprobe execroutes`)
	e.cfg.ExecAllow = execAllow
	e.mustRun(0)
	ran, errno = map[string]bool{}, map[string]string{}
	names, err := filepath.Glob(filepath.Join(e.ws, "*-*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		base := filepath.Base(n)
		if r, ok := strings.CutPrefix(base, "ran-"); ok {
			ran[r] = true
		}
		if r, ok := strings.CutPrefix(base, "errno-"); ok {
			errno[r] = e.read(base)
		}
	}
	return ran, errno
}

// TestExecAllowBypasses tries every route around the exec allowlist that
// Landlock's execute right does not see: a program written to a writable
// place run through the dynamic loader (mmap PROT_EXEC), and a program in
// a memfd run by descriptor, by /proc/self/fd or through the loader.
func TestExecAllowBypasses(t *testing.T) {
	ran, errno := execRoutes(t, []string{"/usr/bin", "/bin", "/probe/sandbox.test"})
	t.Logf("errno by route: %v", errno)
	if !ran["allowed"] {
		t.Fatalf("the allowed /usr/bin/touch did not run (%s): the probe is broken", errno["allowed"])
	}
	for r := range ran {
		if r != "allowed" {
			t.Errorf("ESCAPE: a program outside ExecAllow ran by route %s", r)
		}
	}
	for _, place := range []string{"tmp", "work", "home-agent", "dev-shm"} {
		if got := errno["write-"+place]; got != "" {
			t.Errorf("write a file in %s: %s, want it writable", place, got)
		}
		if got := errno["mmap-"+place]; got != "EPERM" {
			t.Errorf("mmap(PROT_EXEC) of a file in %s = %s, want EPERM (noexec mount)", place, got)
		}
	}
	for _, m := range []string{"memfd", "memfd-exec", "memfd-sealed"} {
		if got := errno["create-"+m]; got != "ENOSYS" {
			t.Errorf("memfd_create (%s) = %s, want ENOSYS", m, got)
		}
	}
	if got := errno["opath-execveat-call"]; got != "EPERM" {
		t.Errorf("execveat(fd, \"\", AT_EMPTY_PATH) = %q, want EPERM", got)
	}
}

// TestNoExecAllowRunsAnything checks that without an allowlist nothing of
// the above is refused (an agent builds and runs programs in its
// workspace), and so that the probe of [TestExecAllowBypasses] can see
// each route succeed.
func TestNoExecAllowRunsAnything(t *testing.T) {
	ran, errno := execRoutes(t, nil)
	want := []string{"allowed", "opath-execveat"}
	for _, place := range []string{"tmp", "work", "home-agent", "dev-shm"} {
		want = append(want, "copy-"+place, "ldso-"+place)
	}
	for _, m := range []string{"memfd", "memfd-exec", "memfd-sealed"} {
		want = append(want, m+"-ldso")
	}
	// Without MFD_NOEXEC_SEAL (and with vm.memfd_noexec 0) a memfd is
	// executable by descriptor and by /proc/self/fd too.
	want = append(want, "memfd-execveat", "memfd-procfd", "memfd-exec-execveat", "memfd-exec-procfd")
	for _, r := range want {
		if !ran[r] {
			t.Errorf("without ExecAllow, route %s did not run: %s", r, errno[r])
		}
	}
	if t.Failed() {
		t.Logf("errno by route: %v", errno)
	}
}

func TestExecAllowInWritablePlace(t *testing.T) {
	for _, tt := range []struct {
		allow string
		bad   bool
	}{
		{"/work/bin", true},
		{"/work", true},
		{"/tmp/x", true},
		{"/home/agent/.local/bin", true},
		{"/dev/shm", true},
		{"/usr/bin", false},
		{"/probe/sandbox.test", false},
		{"/tmp/ro/bin", false}, // a read-only mount beneath /tmp
		{"/", false},
	} {
		cfg := Config{
			Argv:      []string{"/bin/true"},
			Mounts:    []Mount{{Source: "/", Target: "/work", Writable: true}, {Source: "/", Target: "/tmp/ro"}},
			ExecAllow: []string{tt.allow},
		}
		err := cfg.validate()
		if got := err != nil; got != tt.bad {
			t.Errorf("validate(ExecAllow %s) = %v, want error %v", tt.allow, err, tt.bad)
		}
		if err != nil && !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("validate(ExecAllow %s) = %v, want ErrInvalidConfig", tt.allow, err)
		}
	}
}

func TestFreshKeyring(t *testing.T) {
	name := "enclave-test-" + strconv.Itoa(os.Getpid())
	id, err := unix.AddKey("user", name, []byte("host-secret"), unix.KEY_SPEC_SESSION_KEYRING)
	if err != nil {
		t.Skipf("cannot add a key on this host: %v", err)
	}
	defer unix.KeyctlInt(unix.KEYCTL_UNLINK, id, unix.KEY_SPEC_SESSION_KEYRING, 0, 0)
	e := newEnv(t, `cat /proc/keys > /work/keys 2>/dev/null; exit 0`)
	e.mustRun(0)
	if strings.Contains(e.read("keys"), name) {
		t.Errorf("the host's key is visible in the sandbox:\n%s", e.read("keys"))
	}
}

func TestTTY(t *testing.T) {
	e := newEnv(t, `test -t 0 && test -t 1 && echo tty > /work/tty; tty > /work/ttyname; echo from-pty`)
	e.cfg.TTY = true
	e.mustRun(0)
	if e.read("tty") != "tty\n" {
		t.Errorf("stdin/stdout are not a terminal inside (tty: %q)", e.read("ttyname"))
	}
	if !strings.Contains(e.out.String(), "from-pty") {
		t.Errorf("pty output not relayed: %q", e.out)
	}
}

// TestTTYName checks, from the relayed output, that the agent's terminal
// has a name that resolves inside the sandbox (the pty is allocated from
// the sandbox's own devpts), that the window size the host set on its
// terminal reached it before it started, and that the terminal is the
// agent's controlling terminal in a session of its own.
func TestTTYName(t *testing.T) {
	e := newEnv(t, `tty; stty size; n=$(tty) && test -c "$n" && test "$n" -ef /dev/stdin && echo name-resolves; `+
		`test -t 2 && echo stderr-is-tty; set -- $(cat /proc/$$/stat); test "$6" = $$ && echo session-leader; `+
		`exec 3</dev/tty && echo has-ctty`)
	e.cfg.TTY = true
	// The caller's terminal: a host pty whose size the relay must copy.
	master, slave := hostPTY(t)
	if err := unix.IoctlSetWinsize(int(slave.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 37, Col: 91}); err != nil {
		t.Fatal(err)
	}
	e.cfg.Stdin = slave
	e.mustRun(0)
	master.Close()
	out := strings.ReplaceAll(e.out.String(), "\r\n", "\n")
	if !regexp.MustCompile(`(?m)^/dev/pts/[0-9]+$`).MatchString(out) || strings.Contains(out, "not a tty") {
		t.Errorf("tty inside printed no /dev/pts/N name:\n%s", out)
	}
	for _, want := range []string{"\n37 91\n", "name-resolves\n", "stderr-is-tty\n", "session-leader\n", "has-ctty\n"} {
		if !strings.Contains("\n"+out, want) {
			t.Errorf("output lacks %q:\n%s", strings.TrimSpace(want), out)
		}
	}
}

// hostPTY opens a pty pair on the host, standing for the user's terminal.
func hostPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no host pty: %v", err)
	}
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	s, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(m), unix.TIOCGPTPEER, uintptr(unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC))
	if errno != 0 {
		t.Fatal(errno)
	}
	master, slave = os.NewFile(uintptr(m), "test-pty-master"), os.NewFile(s, "test-pty-slave")
	t.Cleanup(func() { master.Close(); slave.Close() })
	return master, slave
}

func TestRequiredLayerFailsClosed(t *testing.T) {
	forceMissing = []string{LayerLandlock}
	defer func() { forceMissing = nil }()
	e := newEnv(t, `echo ran > /work/ran`)
	_, err := e.run()
	var le *LayerError
	if !errors.As(err, &le) || le.Layer != LayerLandlock {
		t.Fatalf("Start() error = %v, want a LayerError for landlock", err)
	}
	if e.read("ran") != "" {
		t.Error("the agent ran although a required layer was missing")
	}

	e = newEnv(t, `echo ran > /work/ran`)
	e.cfg.Degrade = []string{LayerLandlock}
	s, err := e.start()
	if err != nil {
		t.Fatal(err)
	}
	s.Wait()
	if st := s.Status(); st.Landlock != 0 || !slices.Contains(st.Degraded, LayerLandlock) || !st.Seccomp {
		t.Errorf("Status() = %+v, want landlock degraded, seccomp on", st)
	}
	if e.read("ran") != "ran\n" {
		t.Error("degraded sandbox did not run the agent")
	}
}

func TestStatus(t *testing.T) {
	e := newEnv(t, `true`)
	e.cfg.OnExec = func(ExecEvent) error { return nil }
	s, err := e.start()
	if err != nil {
		t.Fatal(err)
	}
	s.Wait()
	st := s.Status()
	if st.Landlock < MinLandlockABI || !st.Seccomp || !st.ExecRecord || len(st.Degraded) != 0 {
		t.Errorf("Status() = %+v", st)
	}
	if os.Geteuid() == 0 && st.HostUID == 0 {
		t.Error("agent mapped to host root")
	}
}

// BenchmarkStartVersusBubblewrap starts /bin/true in a sandbox and in
// bubblewrap with the same namespaces and view, alternately, both from this
// running process (as `enclave run` starts its sandbox), and reports the
// medians and their ratio. bench/sandbox.sh runs it.
func BenchmarkStartVersusBubblewrap(b *testing.B) {
	if l := probeUserNS(); !l.OK {
		b.Skip(l.Detail)
	}
	bwrap, err := exec.LookPath("bwrap")
	if err != nil {
		b.Skip("bubblewrap is not installed (apt-get install -y bubblewrap)")
	}
	ws, cfg := benchTrue(b)
	// bench/sandbox.sh points this at enclave-init, and at the enclave
	// binary (the init when enclave-init is not installed), whose
	// start-up is what users pay.
	cfg.Exe = os.Getenv("ENCLAVE_BENCH_EXE")
	args := []string{"--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
		"--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"}
	for _, l := range []string{"bin", "sbin", "lib", "lib64"} {
		if t, err := os.Readlink("/" + l); err == nil {
			args = append(args, "--symlink", t, "/"+l)
		}
	}
	if fi, err := os.Stat("/opt"); err == nil && fi.IsDir() {
		args = append(args, "--ro-bind", "/opt", "/opt")
	}
	args = append(args, "--bind", ws, "/work", "--tmpfs", "/tmp", "--tmpfs", "/home/agent",
		"--proc", "/proc", "--dev", "/dev", "--hostname", "enclave", "--chdir", "/work", "/bin/true")
	var ours, theirs []time.Duration
	for b.Loop() {
		t0 := time.Now()
		s, err := Start(context.Background(), &cfg)
		if err != nil {
			b.Fatal(err)
		}
		if code, err := s.Wait(); code != 0 || err != nil {
			b.Fatalf("Wait() = %d, %v", code, err)
		}
		t1 := time.Now()
		if err := exec.Command(bwrap, args...).Run(); err != nil {
			b.Fatalf("bwrap: %v", err)
		}
		ours, theirs = append(ours, t1.Sub(t0)), append(theirs, time.Since(t1))
	}
	median := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2].Microseconds()) / 1000
	}
	e, w := median(ours), median(theirs)
	b.ReportMetric(e, "enclave-ms")
	b.ReportMetric(w, "bwrap-ms")
	b.ReportMetric(e/w, "ratio")
}

// benchTrue is a workspace the sandbox's user owns and a sandbox that
// runs /bin/true in it at /work.
func benchTrue(b *testing.B) (string, Config) {
	ws, err := os.MkdirTemp("", "sbbench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(ws) })
	os.Chmod(ws, 0o755)
	if os.Geteuid() == 0 {
		uid, gid, _ := HostIDs()
		ChownTree(ws, uid, gid)
	}
	return ws, Config{
		Argv:   []string{"/bin/true"},
		Env:    []string{"PATH=/usr/bin:/bin"},
		Mounts: []Mount{{Source: ws, Target: "/work", Writable: true}},
		Dir:    "/work",
	}
}

func BenchmarkStartTrue(b *testing.B) {
	if l := probeUserNS(); !l.OK {
		b.Skip(l.Detail)
	}
	_, cfg := benchTrue(b)
	for b.Loop() {
		s, err := Start(context.Background(), &cfg)
		if err != nil {
			b.Fatal(err)
		}
		if code, err := s.Wait(); code != 0 || err != nil {
			b.Fatalf("Wait() = %d, %v", code, err)
		}
	}
}
