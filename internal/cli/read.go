package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/enclave-dev/enclave/internal/audit"
	"github.com/enclave-dev/enclave/internal/review"
	"github.com/enclave-dev/enclave/internal/store"
	"github.com/enclave-dev/enclave/internal/workspace"
)

func (e *Env) sessionsCmd(ctx context.Context, args []string) error {
	fs := e.newFlagSet("sessions", "sessions [flags]", "Sessions lists sessions, newest first.", "    enclave sessions\n    enclave sessions --state running --json")
	jsonOut := fs.Bool("json", false, "print JSON, one session object per line")
	state := fs.String("state", "", "only sessions in `state` (running, needs-review, approved, rejected, merged, failed)")
	agent := fs.String("agent", "", "only sessions whose agent command is `name` (e.g. claude)")
	tier := fs.String("tier", "", "only sessions of task `tier` (docs-tests, routine, sensitive)")
	limit := fs.Int("n", 50, "show at most `n` sessions (0: all)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("sessions takes no arguments")
	}
	st, err := e.openStore(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	all, err := st.store.ListSessions(ctx, store.SessionFilter{})
	if err != nil {
		return err
	}
	status := reviewStatus(st.dir)
	var list []*store.Session
	for _, s := range all {
		if SessionMatch(s, *state, *agent, *tier) {
			list = append(list, s)
		}
		if *limit > 0 && len(list) == *limit {
			break
		}
	}
	if *jsonOut {
		enc := json.NewEncoder(e.Stdout)
		for _, s := range list {
			m := sessionJSON(s)
			// The team lead's view: review state, tier, compact status.
			m["review_state"], m["review"] = sessionState(s), status(s)
			if sum, err := review.ReadSummary(s); err == nil {
				m["tier"] = sum.Tier
			}
			if err := enc.Encode(m); err != nil {
				return err
			}
		}
		return nil
	}
	if len(list) == 0 {
		fmt.Fprintln(e.Stderr, "enclave: no sessions yet; try: enclave demo")
		return nil
	}
	tw := tabwriter.NewWriter(e.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SESSION\tSTARTED\tSTATE\tTIER\tEXIT\tBLOCKED\tFILES\tOUT\tREVIEW\tCOMMAND")
	for _, s := range list {
		exit := "-"
		if s.ExitCode != nil {
			exit = fmt.Sprint(*s.ExitCode)
		}
		tierName := "-"
		if sum, err := review.ReadSummary(s); err == nil && sum.Tier != "" {
			tierName = sum.Tier
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", s.ID, s.Started.Local().Format("2006-01-02 15:04"),
			sessionState(s), safeText(tierName), exit, s.Blocked, s.FilesChanged, humanBytes(s.BytesUp),
			safeText(status(s)), safeText(clip(strings.Join(s.Command, " "), 48)))
	}
	return tw.Flush()
}

func sessionJSON(s *store.Session) map[string]any {
	m := map[string]any{
		"id": s.ID, "user": s.User, "command": s.Command, "dir": s.Dir, "workspace": s.Workspace,
		"branch": s.Branch, "base": s.BaseCommit, "policy": s.PolicySource, "policy_sha256": s.PolicyHash,
		"profile": s.Profile, "started": s.Started, "state": s.State, "blocked": s.Blocked,
		"bytes_up": s.BytesUp, "bytes_down": s.BytesDown, "files_changed": s.FilesChanged,
	}
	if s.Ended != nil {
		m["ended"] = *s.Ended
	}
	if s.ExitCode != nil {
		m["exit_code"] = *s.ExitCode
	}
	return m
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// resolveSession turns "last" or an id prefix into a session.
func resolveSession(ctx context.Context, st store.Store, arg string) (*store.Session, error) {
	if arg == "last" {
		list, err := st.ListSessions(ctx, store.SessionFilter{Limit: 1})
		if err != nil {
			return nil, err
		}
		if len(list) == 0 {
			return nil, withHint(errors.New("there are no sessions yet"), "run one: enclave demo")
		}
		return list[0], nil
	}
	s, err := st.GetSession(ctx, arg)
	if err == nil {
		return s, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	// Accept a unique suffix or prefix, as people copy the random part.
	list, lerr := st.ListSessions(ctx, store.SessionFilter{})
	if lerr != nil {
		return nil, lerr
	}
	var found []*store.Session
	for _, s := range list {
		if strings.HasPrefix(s.ID, arg) || strings.HasSuffix(s.ID, arg) {
			found = append(found, s)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return nil, withHint(fmt.Errorf("no session %q", arg), "list them: enclave sessions")
	}
	return nil, fmt.Errorf("%q matches %d sessions; give more of the id", arg, len(found))
}

func (e *Env) logCmd(ctx context.Context, args []string) error {
	fs := e.newFlagSet("log", "log [flags] SESSION", `Log prints the timeline of one session from the audit log: its start, every
exec, egress flow and DNS query with the decision and reason, and its end.
SESSION is an id, a unique part of one, or "last".`, "    enclave log last\n    enclave log --json s-20261124-150405-a1b2c3")
	jsonOut := fs.Bool("json", false, "print the events as JSON Lines")
	kind := fs.String("kind", "", "only events of these comma-separated `kinds` (exec, egress, dns, ...)")
	decision := fs.String("decision", "", "only events with this `decision` (allow, deny)")
	follow := fs.Bool("follow", false, "keep printing new events until interrupted")
	if err := fs.Parse(args); err != nil {
		return err
	}
	st, s, err := e.sessionArg(ctx, fs, false)
	if err != nil {
		return err
	}
	defer st.Close()
	enc := json.NewEncoder(e.Stdout)
	tw := tabwriter.NewWriter(e.Stdout, 0, 4, 2, ' ', 0)
	if !*jsonOut {
		fmt.Fprintf(e.Stdout, "session %s: %s\n", s.ID, strings.Join(s.Command, " "))
	}
	each := func(r audit.Record) error {
		ev := r.Event
		if *jsonOut {
			return enc.Encode(map[string]any{"seq": r.Seq, "time": ev.Time, "session": ev.Session, "kind": ev.Kind,
				"actor": ev.Actor, "decision": ev.Decision, "data": ev.Data})
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", ev.Time.Local().Format("15:04:05.000"), r.Seq, safeText(ev.Kind), safeText(ev.Decision), safeText(describeEvent(ev)))
		if *follow {
			return tw.Flush()
		}
		return nil
	}
	f := audit.Filter{Session: s.ID, Kinds: kinds(*kind), Decision: *decision}
	if *follow {
		return audit.Follow(ctx, st.store, f, 250*time.Millisecond, each)
	}
	if err := audit.Records(ctx, st.store, f, each); err != nil {
		return err
	}
	return tw.Flush()
}

// describeEvent is the one-line form of an event for the timeline.
func describeEvent(ev audit.Event) string {
	var d map[string]any
	_ = json.Unmarshal(ev.Data, &d)
	str := func(k string) string {
		if v, ok := d[k]; ok && v != nil {
			switch v := v.(type) {
			case string:
				return v
			case float64:
				return fmt.Sprint(int64(v))
			default:
				b, _ := json.Marshal(v)
				return string(b)
			}
		}
		return ""
	}
	switch ev.Kind {
	case "session.start":
		pol, _ := d["policy"].(map[string]any)
		return fmt.Sprintf("%s ran %s (policy %v %.12v, profile %v)", str("user"), argvString(d["command"]), pol["source"], pol["sha256"], pol["profile"])
	case "workspace":
		return fmt.Sprintf("copy of %s on %s, base %.12s", str("source"), str("branch"), str("base"))
	case "sandbox":
		return fmt.Sprintf("host uid %s, landlock ABI %s, seccomp %s, exec record %s, limits %s, degraded %s",
			str("HostUID"), str("Landlock"), str("Seccomp"), str("ExecRecord"), str("Limits"), str("Degraded"))
	case "exec":
		return argvString(d["argv"])
	case "egress":
		s := fmt.Sprintf("%s %s:%s%s", str("method"), str("host"), str("port"), str("path"))
		if ev.Decision == "deny" {
			s += ": " + str("reason")
		}
		return s
	case "egress.end":
		s := fmt.Sprintf("%s:%s %s up, %s down, %sms", str("host"), str("port"), str("bytes_up"), str("bytes_down"), str("duration_ms"))
		if e := str("error"); e != "" {
			s += ", " + e
		}
		return s
	case "dns":
		return fmt.Sprintf("%s %s: %s", str("type"), str("name"), str("reason"))
	case "diff":
		files, _ := d["files"].([]any)
		return fmt.Sprintf("%d files changed, head %s", len(files), clip(str("head"), 12))
	case "session.end":
		s := fmt.Sprintf("exit %s after %sms, %s blocked, %s bytes out", str("exit_code"), str("duration_ms"), str("blocked"), str("bytes_up"))
		if e := str("error"); e != "" {
			s += ": " + e
		}
		return s
	}
	return clip(string(ev.Data), 120)
}

// firstNonPrint returns the first rune of s that is not printable, or 'a'.
func firstNonPrint(s string) rune {
	for _, r := range s {
		if !strconv.IsPrint(r) {
			return r
		}
	}
	return 'a'
}

func argvString(v any) string {
	list, _ := v.([]any)
	var parts []string
	for _, a := range list {
		s := fmt.Sprint(a)
		if strings.ContainsAny(s, " \t\"'\\") || s == "" || !strconv.IsPrint(firstNonPrint(s)) {
			s = strconv.Quote(s)
		}
		parts = append(parts, s)
	}
	return clip(strings.Join(parts, " "), 160)
}

func (e *Env) diffCmd(ctx context.Context, args []string) error {
	fs := e.newFlagSet("diff", "diff [flags] SESSION", `Diff prints what the agent changed against the session's base commit, as a
unified diff computed by enclave in its own repository (never with the
agent's git configuration). SESSION is an id, a unique part of one, or "last".`, "    enclave diff last\n    enclave diff --stat last")
	stat := fs.Bool("stat", false, "print changed files with line counts only")
	jsonOut := fs.Bool("json", false, "print the change summary as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	st, s, err := e.sessionArg(ctx, fs, false)
	if err != nil {
		return err
	}
	defer st.Close()
	c, err := st.sessionChange(s)
	if err != nil {
		return err
	}
	switch {
	case *jsonOut:
		enc := json.NewEncoder(e.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(c)
	case *stat:
		return writeStat(e.Stdout, c)
	}
	// The patch is the agent's text: TerminalSafe neutralises control
	// characters; bidi and other format characters (which reorder what a
	// reviewer sees) are escaped here.
	var buf bytes.Buffer
	if err := c.Patch(ctx, &buf); err != nil {
		return err
	}
	_, err = workspace.TerminalSafe(e.Stdout).Write(escapeFormat(buf.Bytes()))
	return err
}

func writeStat(w io.Writer, c *workspace.Change) error {
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	for _, f := range c.Files {
		name := f.Path
		if f.OldPath != "" {
			name = f.OldPath + " => " + f.Path
		}
		counts := fmt.Sprintf("+%d -%d", f.Added, f.Deleted)
		if f.Binary {
			counts = "binary"
		}
		fmt.Fprintf(tw, " %s\t%s\t%s\n", f.Status, safeText(name), counts)
	}
	fmt.Fprintf(tw, " %d files changed, %d insertions(+), %d deletions(-)\n", len(c.Files), c.Insertions, c.Deletions)
	return tw.Flush()
}

func kinds(k string) []string {
	if k == "" {
		return nil
	}
	return strings.Split(k, ",")
}

// safeText escapes what a terminal would interpret in text the agent
// controls (file names, hosts, arguments): control characters, including
// newlines that could forge a line of enclave's own output, and format
// characters such as bidi overrides that reorder what is displayed.
func safeText(s string) string {
	clean := true
	for _, r := range s {
		if !strconv.IsPrint(r) && r != ' ' {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if strconv.IsPrint(r) || r == ' ' {
			b.WriteRune(r)
			continue
		}
		q := strconv.QuoteRune(r)
		b.WriteString(q[1 : len(q)-1])
	}
	return b.String()
}

// escapeFormat escapes Unicode format characters (bidi overrides and
// isolates, zero-width marks) in text, leaving everything else as is.
func escapeFormat(b []byte) []byte {
	if !bytes.ContainsFunc(b, func(r rune) bool { return unicode.Is(unicode.Cf, r) }) {
		return b
	}
	var out bytes.Buffer
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if unicode.Is(unicode.Cf, r) {
			fmt.Fprintf(&out, "\\u%04x", r)
		} else {
			out.Write(b[:n])
		}
		b = b[n:]
	}
	return out.Bytes()
}

// sessionArg resolves the one SESSION argument of a command and returns it
// with the opened state (for writing when write is set), which the caller
// closes.
func (e *Env) sessionArg(ctx context.Context, fs *flagSet, write bool) (*state, *store.Session, error) {
	if fs.NArg() != 1 {
		return nil, nil, usagef("%s takes one SESSION", fs.Name())
	}
	return e.openSession(ctx, fs.Arg(0), write)
}

// openSession opens the state (for writing when write is set) and resolves
// the session named by arg ("last", an id or a unique part of one); the
// caller closes the state.
func (e *Env) openSession(ctx context.Context, arg string, write bool) (*state, *store.Session, error) {
	open := e.openStore
	if write {
		open = e.openState
	}
	st, err := open(ctx)
	if err != nil {
		return nil, nil, err
	}
	s, err := resolveSession(ctx, st.store, arg)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return st, s, nil
}

// sessionChange is what session s changed, as recorded when its agent
// exited.
func (st *state) sessionChange(s *store.Session) (*workspace.Change, error) {
	ws, err := workspace.Open(filepath.Join(st.dir, "sessions", s.ID), nil)
	if err != nil {
		return nil, fmt.Errorf("open workspace of %s: %w", s.ID, err)
	}
	c, err := ws.LastChange()
	if err != nil {
		if s.State == store.StateRunning {
			return nil, fmt.Errorf("session %s is still running; its change is recorded when the agent exits", s.ID)
		}
		return nil, fmt.Errorf("change of %s: %w", s.ID, err)
	}
	return c, nil
}
