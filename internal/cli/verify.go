package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/enclave-dev/enclave/internal/audit"
	"github.com/enclave-dev/enclave/internal/store"
	"github.com/enclave-dev/enclave/internal/verify"
	"github.com/enclave-dev/enclave/internal/workspace"
)

// Exit codes of enclave verify, beyond 0 (pass) and 2 (usage).
const (
	verifyExitFail        = 1
	verifyExitNeedsReview = 3
)

// verifyReportName is the report's file in the session directory.
const verifyReportName = "verify.json"

func (e *Env) verifyCmd(ctx context.Context, args []string) error {
	fs := e.newFlagSet("verify", "verify [flags] SESSION", `Verify runs the verification gate on what a session changed: the project's
tests in a fresh sandbox without network, a secret scan of added lines,
dangerous files (hooks, CI, agent settings, install scripts), dependency
review (policy, a local OSV database, typosquats), quality metrics and
static analysis. It writes the report to the session directory as
verify.json, records its SHA-256 in the audit log, prints a summary, and
exits 0 on pass, 1 on fail, 3 on needs-review. Progress goes to stderr.`,
		"    enclave verify last\n    enclave verify --osv ~/osv-db --json last")
	jsonOut := fs.Bool("json", false, "print the report as JSON instead of the summary")
	osv := fs.String("osv", "", "directory or .zip of OSV JSON entries to check dependencies against")
	timeout := fs.Duration("test-timeout", 0, "wall-time limit of the test run (default 10m)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("verify takes one SESSION")
	}
	st, err := e.openState(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	s, err := resolveSession(ctx, st.store, fs.Arg(0))
	if err != nil {
		return err
	}
	dir := filepath.Join(st.dir, "sessions", s.ID)
	ws, err := workspace.Open(dir, nil)
	if err != nil {
		return fmt.Errorf("open workspace of %s: %w", s.ID, err)
	}
	c, err := ws.LastChange()
	if err != nil {
		if s.State == store.StateRunning {
			return fmt.Errorf("session %s is still running; verify it after the agent exits", s.ID)
		}
		return fmt.Errorf("change of %s: %w", s.ID, err)
	}
	cfg := verify.Config{OSV: *osv, TestTimeout: *timeout}
	rep, err := verify.Run(ctx, verify.Options{
		Session:  s.ID,
		GitDir:   c.GitDir(),
		Base:     c.Base,
		Head:     c.Head,
		Config:   cfg,
		Progress: workspace.TerminalSafe(e.Stderr),
		Sandbox:  &verify.SandboxRunner{},
	})
	if err != nil {
		return fmt.Errorf("verify %s: %w", s.ID, err)
	}
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	sum := sha256.Sum256(data)
	tmp := filepath.Join(dir, verifyReportName+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, verifyReportName)); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	evData, _ := json.Marshal(map[string]any{
		"report_sha256": hex.EncodeToString(sum[:]),
		"result":        rep.Result,
		"schema":        rep.Schema,
		"base":          rep.Base,
		"head":          rep.Head,
		"findings":      len(rep.Findings),
		"allowlisted":   len(rep.Allowlisted),
		"reasons":       rep.Reasons,
	})
	if _, err := st.log.Append(ctx, audit.Event{Session: s.ID, Kind: "verify", Actor: "enclave", Decision: string(rep.Result), Time: time.Now(), Data: evData}); err != nil {
		// The report must not count unless it is on the record.
		return fmt.Errorf("record verify report in the audit log: %w", err)
	}
	if err := st.checkpoint(ctx); err != nil {
		return err
	}
	if *jsonOut {
		if _, err := e.Stdout.Write(data); err != nil {
			return err
		}
	} else if err := rep.WriteSummary(e.Stdout); err != nil {
		return err
	}
	switch rep.Result {
	case verify.Fail:
		return &exitError{verifyExitFail}
	case verify.NeedsReview:
		return &exitError{verifyExitNeedsReview}
	}
	return nil
}
