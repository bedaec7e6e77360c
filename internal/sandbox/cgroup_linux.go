//go:build linux

package sandbox

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// cgroupRoot is where the v1 controllers are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// cgroup is one sandbox's v1 memory and pids cgroups, created beneath the
// cgroups enclave itself is in so that a parent's limits still apply.
type cgroup struct {
	dirs []string
}

func newCgroup(l Limits) (*cgroup, error) {
	var b [6]byte
	rand.Read(b[:])
	name := "enclave-" + hex.EncodeToString(b[:])
	cg := &cgroup{}
	type setting struct{ file, value string }
	want := map[string][]setting{}
	if l.Memory > 0 {
		v := strconv.FormatInt(l.Memory, 10)
		want["memory"] = []setting{{"memory.limit_in_bytes", v}, {"memory.memsw.limit_in_bytes", v}}
	}
	if l.Processes > 0 {
		want["pids"] = []setting{{"pids.max", strconv.Itoa(l.Processes)}}
	}
	for _, ctrl := range []string{"memory", "pids"} {
		settings, ok := want[ctrl]
		if !ok {
			continue
		}
		parent, err := ownCgroup(ctrl)
		if err != nil {
			cg.remove()
			return nil, err
		}
		dir := filepath.Join(cgroupRoot, ctrl, parent, name)
		if err := os.Mkdir(dir, 0o700); err != nil {
			cg.remove()
			return nil, fmt.Errorf("create cgroup: %w", err)
		}
		cg.dirs = append(cg.dirs, dir)
		for _, s := range settings {
			p := filepath.Join(dir, s.file)
			if err := os.WriteFile(p, []byte(s.value), 0); err != nil {
				if s.file == "memory.memsw.limit_in_bytes" && errors.Is(err, os.ErrNotExist) {
					continue // no swap accounting: memory.limit_in_bytes alone
				}
				cg.remove()
				return nil, fmt.Errorf("set %s: %w", p, err)
			}
		}
	}
	return cg, nil
}

// ownCgroup returns this process's cgroup path in the v1 hierarchy of ctrl.
func ownCgroup(ctrl string) (string, error) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("read own cgroup: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == ctrl {
				if _, err := os.Stat(filepath.Join(cgroupRoot, ctrl, "cgroup.procs")); err != nil {
					return "", fmt.Errorf("cgroup v1 %s controller not mounted at %s: %w", ctrl, cgroupRoot, err)
				}
				return parts[2], nil
			}
		}
	}
	return "", fmt.Errorf("no cgroup v1 %s controller for this process (cgroup v2 is not supported yet)", ctrl)
}

func (cg *cgroup) add(pid int) error {
	for _, d := range cg.dirs {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			return fmt.Errorf("join cgroup %s: %w", d, err)
		}
	}
	return nil
}

// peak returns memory.max_usage_in_bytes, or -1.
func (cg *cgroup) peak() int64 {
	for _, d := range cg.dirs {
		b, err := os.ReadFile(filepath.Join(d, "memory.max_usage_in_bytes"))
		if err == nil {
			n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			return n
		}
	}
	return -1
}

// remove deletes the cgroups; the init is dead, so its namespace's tasks
// are being killed by the kernel and the directories empty within moments.
func (cg *cgroup) remove() error {
	var errs []error
	for _, d := range cg.dirs {
		var err error
		for i := 0; i < 100; i++ {
			if err = os.Remove(d); err == nil || errors.Is(err, os.ErrNotExist) {
				err = nil
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
		}
	}
	cg.dirs = nil
	return errors.Join(errs...)
}
