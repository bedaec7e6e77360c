package verify

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"testing"
	"time"
)

// TestRealChangeReport is the entry point of bench/verify.sh: it runs the
// gate on a real change (ENCLAVE_VERIFY_GITDIR, _BASE, _HEAD, built by the
// script from two releases of a public module) with go vet and the tests
// in real sandboxes, ENCLAVE_VERIFY_ROUNDS times without and with the
// tests check, and prints each check's median time. Skipped unless the
// variables are set.
func TestRealChangeReport(t *testing.T) {
	gitDir, base, head := os.Getenv("ENCLAVE_VERIFY_GITDIR"), os.Getenv("ENCLAVE_VERIFY_BASE"), os.Getenv("ENCLAVE_VERIFY_HEAD")
	if gitDir == "" || base == "" || head == "" {
		t.Skip("set ENCLAVE_VERIFY_GITDIR, ENCLAVE_VERIFY_BASE and ENCLAVE_VERIFY_HEAD (bench/verify.sh does)")
	}
	rounds, _ := strconv.Atoi(os.Getenv("ENCLAVE_VERIFY_ROUNDS"))
	if rounds < 1 {
		rounds = 3
	}
	for _, withTests := range []bool{false, true} {
		cfg := Config{Checks: map[string]Action{}}
		if !withTests {
			cfg.Checks[CheckTests] = "off"
		}
		per := map[string][]float64{}
		var total []float64
		var last *Report
		for i := 0; i < rounds; i++ {
			start := time.Now()
			r, err := Run(context.Background(), Options{GitDir: gitDir, Base: base, Head: head, Config: cfg, Sandbox: &SandboxRunner{}})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			total = append(total, float64(time.Since(start).Microseconds())/1000)
			for _, c := range r.Checks {
				per[c.Name] = append(per[c.Name], c.Duration)
			}
			last = r
		}
		label := "without the tests check"
		if withTests {
			label = "with the tests check"
		}
		m := last.Metrics
		fmt.Printf("\n%s: %d rounds, median wall %.0f ms, result %s\n", label, rounds, median(total), last.Result)
		if m != nil {
			fmt.Printf("  change: %d files (%d renamed), +%d -%d lines (%d moved), %d duplicated, complexity delta %+d, test ratio %.2f\n",
				m.FilesChanged, m.FilesRenamed, m.LinesAdded, m.LinesDeleted, m.LinesMoved, m.DuplicatedLines, m.ComplexityDelta, m.TestRatio)
			fmt.Printf("  churn: %d recent lines rewritten (%.2f of deleted, window %d days, partial %v), %d session lines over %d snapshots\n",
				m.ChurnRecentLines, m.ChurnRecentRatio, m.ChurnWindowDays, m.ChurnPartial, m.ChurnSessionLines, m.SessionSnapshots)
		}
		fmt.Printf("  %-16s %-9s %8s %10s\n", "check", "status", "findings", "median ms")
		for _, c := range last.Checks {
			fmt.Printf("  %-16s %-9s %8d %10.1f\n", c.Name, c.Status, c.Findings, median(per[c.Name]))
		}
		rules := map[string]int{}
		for _, f := range last.Findings {
			rules[string(f.Action)+" "+f.Check+"/"+f.Rule]++
		}
		var keys []string
		for k := range rules {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Printf("  finding %s x%d\n", k, rules[k])
		}
		for _, tr := range last.Tools {
			fmt.Printf("  tool %s: %s %s %s\n", tr.Name, tr.Status, tr.Version, tr.Detail)
		}
		if last.Tests != nil {
			fmt.Printf("  tests: %q outcome %s in %.0f ms\n", last.Tests.Command, last.Tests.Outcome, last.Tests.Duration)
		}
	}
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}
