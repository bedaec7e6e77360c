package audit_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/enclave-dev/enclave/internal/audit"
	"github.com/enclave-dev/enclave/internal/store"
)

const crashChildEnv = "ENCLAVE_AUDIT_CRASH_CHILD"

// crashChild appends under load until killed, printing "SEQ ROUND W N" for
// every acknowledged event. It runs in a re-executed test binary.
func crashChild(path string) {
	round := os.Getenv("ENCLAVE_AUDIT_CRASH_ROUND")
	st, err := store.OpenSQLite(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(3)
	}
	l, err := audit.Open(context.Background(), st, fixedKey(&testing.B{}), audit.Options{CheckpointEvery: 500, CheckpointInterval: 20 * time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(4)
	}
	var mu sync.Mutex
	for w := 0; w < 16; w++ {
		go func() {
			for n := 0; ; n++ {
				data := fmt.Sprintf(`{"round":%s,"w":%d,"n":%d}`, round, w, n)
				e, err := l.Append(context.Background(), audit.Event{Session: "crash", Kind: "exec", Actor: "agent", Data: json.RawMessage(data)})
				if err != nil {
					fmt.Fprintln(os.Stderr, "child append:", err)
					os.Exit(5)
				}
				line := fmt.Sprintf("%d %s %d %d\n", e.Seq, round, w, n)
				mu.Lock()
				os.Stdout.WriteString(line)
				mu.Unlock()
			}
		}()
	}
	select {}
}

func TestCrashLoop(t *testing.T) {
	rounds := 12
	if testing.Short() {
		rounds = 3
	}
	path := filepath.Join(t.TempDir(), "state", "enclave.db")
	k := fixedKey(t)
	type ack struct {
		round, w, n int
	}
	acked := map[int64]ack{}
	for round := 0; round < rounds; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+path, "ENCLAVE_AUDIT_CRASH_ROUND="+strconv.Itoa(round))
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1<<16)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text() // Scanner yields only whole lines... and a torn last one:
			}
			close(lines)
		}()
		// Kill at a random point: sometimes during Open's recovery, mostly
		// under full load.
		delay := time.Duration(rand.IntN(400)) * time.Millisecond
		if round%4 == 1 {
			delay = time.Duration(rand.IntN(20)) * time.Millisecond
		}
		time.Sleep(delay)
		cmd.Process.Signal(syscall.SIGKILL)
		var got []string
		for l := range lines {
			got = append(got, l)
		}
		cmd.Wait()
		if strings.Contains(stderr.String(), "child") {
			t.Fatalf("round %d: child failed: %s", round, stderr.String())
		}
		// The last line may be torn by the kill; a line is an ack only if
		// it is whole (four fields).
		n := 0
		for _, l := range got {
			var seq int64
			var a ack
			if c, _ := fmt.Sscanf(l, "%d %d %d %d", &seq, &a.round, &a.w, &a.n); c != 4 {
				continue
			}
			if prev, dup := acked[seq]; dup {
				t.Fatalf("round %d: seq %d acked twice: %v and %v", round, seq, prev, a)
			}
			acked[seq] = a
			n++
		}

		st, err := store.OpenSQLite(path)
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		rep, err := audit.Verify(context.Background(), st, audit.VerifyOptions{Verifier: verifier(t, k)})
		if err != nil {
			st.Close()
			t.Fatalf("round %d (killed after %v, %d acks): Verify = %v", round, delay, n, err)
		}
		missing := 0
		found := map[int64]bool{}
		err = audit.Records(context.Background(), st, audit.Filter{Session: "crash"}, func(r audit.Record) error {
			a, ok := acked[r.Seq]
			if !ok {
				return nil // written but not acknowledged before the kill: fine
			}
			want := fmt.Sprintf(`{"n":%d,"round":%d,"w":%d}`, a.n, a.round, a.w)
			if string(r.Event.Data) != want {
				return fmt.Errorf("record %d = %s, acked as %s", r.Seq, r.Event.Data, want)
			}
			found[r.Seq] = true
			return nil
		})
		st.Close()
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		for seq := range acked {
			if !found[seq] {
				missing++
			}
		}
		if missing > 0 {
			t.Fatalf("round %d: %d acknowledged events missing after kill -9", round, missing)
		}
		newest := int64(0) // a kill before the first commit leaves no checkpoint
		if rep.Latest != nil {
			newest = rep.Latest.Tree.N
		} else if len(acked) > 0 {
			t.Fatalf("round %d: %d events acknowledged but the log has no checkpoint", round, len(acked))
		}
		t.Logf("round %d: killed after %v; %d acks this round, %d in all, log of %d records verifies, newest checkpoint %d", round, delay, n, len(acked), rep.Records, newest)
	}
	if len(acked) == 0 {
		t.Fatalf("no events acknowledged in %d rounds", rounds)
	}
}
