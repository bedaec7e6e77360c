package session

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/enclave-dev/enclave/internal/workspace"
)

// DefaultCheckpointEvery is how often enclave run records the copy's tree
// while the agent works.
const DefaultCheckpointEvery = 2 * time.Minute

// checkpoints records the copy's tree every interval until stop closes:
// every process of the sandbox but its init is stopped (SIGSTOP, parents
// before children) while git reads the copy, so nothing changes under it
// and no link can be swapped mid-read, then continued. A checkpoint that
// cannot freeze the sandbox in time is skipped; it never changes what the
// agent does except for the pause.
//
// Each new checkpoint is recorded (through record) with its commit and how
// long the agent was paused.
func checkpoints(ctx context.Context, ws *workspace.Workspace, initPid int, every time.Duration, stop <-chan struct{}, log *slog.Logger, record func(commit string, paused time.Duration)) {
	t := time.NewTicker(every)
	defer t.Stop()
	last := ws.Base
	for {
		select {
		case <-ctx.Done():
			return
		case <-stop:
			return
		case <-t.C:
		}
		stopped, ok := freeze(initPid, 500*time.Millisecond)
		if !ok {
			thaw(stopped)
			log.Warn("checkpoint skipped: the sandbox did not stop in time")
			continue
		}
		start := time.Now()
		id, err := ws.Checkpoint(ctx)
		thaw(stopped)
		paused := time.Since(start)
		if err != nil {
			log.Warn("checkpoint", "err", err)
			continue
		}
		log.Info("checkpoint", "commit", id, "paused", paused)
		if id != last {
			record(id, paused)
			last = id
		}
	}
}

// freeze stops every process below initPid, parents first, until a pass
// finds nothing new and every one of them stopped; it returns what it
// stopped (to continue them) and whether it got there within limit.
func freeze(initPid int, limit time.Duration) ([]int, bool) {
	deadline := time.Now().Add(limit)
	var stopped []int
	seen := map[int]bool{}
	for time.Now().Before(deadline) {
		fresh := false
		for _, pid := range descendants(initPid)[1:] {
			if seen[pid] {
				continue
			}
			seen[pid] = true
			if isStopped(pid) {
				continue // stopped by the agent itself: not ours to continue
			}
			if unix.Kill(pid, unix.SIGSTOP) == nil {
				stopped = append(stopped, pid)
				fresh = true
			}
		}
		if !fresh && allStopped(stopped) {
			return stopped, true
		}
		time.Sleep(time.Millisecond)
	}
	return stopped, false
}

// allStopped reports whether every pid is stopped or gone.
func allStopped(pids []int) bool {
	for _, pid := range pids {
		if !isStopped(pid) {
			return false
		}
	}
	return true
}

// isStopped reports whether pid is stopped, a zombie or gone.
func isStopped(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true // gone
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) == 0 || strings.ContainsAny(f[0], "TtZX")
}

// thaw continues what freeze stopped, children before their parents, so
// a parent never runs to see a child of its still stopped.
func thaw(pids []int) {
	for i := len(pids) - 1; i >= 0; i-- {
		unix.Kill(pids[i], unix.SIGCONT)
	}
}
