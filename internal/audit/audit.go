// Package audit is Enclave's tamper-evident audit log: every session event
// (start, exec, egress, DNS, denial, exit, diff, later model calls) as a
// leaf of an RFC 6962 Merkle tree, with signed checkpoints, inclusion
// proofs, full verification, and export.
//
// # What it guarantees
//
//   - Durability before acknowledgement: [Log.Append] returns only once the
//     event is committed to the store (for SQLite: fsync of the WAL).
//     Concurrent appends are group-committed by a single writer goroutine,
//     one transaction per batch. If the store cannot write, Append fails,
//     and callers must then not perform the action (fail closed).
//   - Canonical, versioned encoding ([EncodeLeaf]): the same event at the
//     same position always hashes the same. The leaf names its own
//     position, so a record moved elsewhere is recognised as reordered.
//   - Signed checkpoints: the tree head (size, root) in the transparency
//     log checkpoint layout, signed as a golang.org/x/mod/sumdb/note with
//     an ed25519 key. Every committed batch carries its own signed head
//     checkpoint, written in the same transaction, so no acknowledged event
//     is ever unsigned; records found after the newest checkpoint are
//     reported as forged ([ProblemUnsigned]). Checkpoints are also retained
//     every N events, every T seconds with new events, at Close and on
//     demand, and can be published elsewhere; [Verify] takes published
//     ones too.
//   - [Verify] recomputes the whole tree and names the first bad record
//     and what is wrong with it ([Problem]); [Prove] and
//     [Verifier.CheckProof] give and check inclusion proofs offline.
//
// # What it does not guarantee
//
// Someone who can write the database can delete the newest records
// together with the head and retained checkpoints covering them, back to
// an older retained checkpoint; and can rewrite the whole log including
// its checkpoints if they hold the key. Only checkpoints kept elsewhere
// (published) catch that. If events and
// their stored hashes are rewritten together, Verify can only name the
// range between the two checkpoints around the change, not the record. The
// signing key lives on the same machine as the log: an attacker with root
// there can sign a new history, which again only published checkpoints
// reveal. A kill -9 loses no acknowledged event; surviving power loss also
// depends on the disk honouring fsync.
//
// The Merkle tree, proofs and hashing are golang.org/x/mod/sumdb/tlog;
// signatures are golang.org/x/mod/sumdb/note. EVENTS.md documents each
// event kind.
package audit

import (
	"encoding/json"
	"fmt"

	"github.com/enclave-dev/enclave/internal/store"
)

// Event kinds written by Enclave; EVENTS.md documents the Data of each.
const (
	KindSessionStart = "session.start"
	KindExec         = "exec"
	KindEgress       = "egress"
	KindDNS          = "dns"
	KindDenial       = "denial"
	KindSessionEnd   = "session.end"
	KindDiff         = "diff"
	KindModelCall    = "model.call"
)

// Decisions for Event.Decision.
const (
	DecisionAllow = "allow"
	DecisionDeny  = "deny"
)

// NewEvent builds an Event whose Data is data marshalled as JSON (one of
// the *Data types below, or any value that marshals to a JSON object).
func NewEvent(session, kind, actor, decision string, data any) (Event, error) {
	ev := Event{Session: session, Kind: kind, Actor: actor, Decision: decision}
	if data != nil {
		b, err := json.Marshal(data)
		if err != nil {
			return Event{}, fmt.Errorf("%s event data: %w", kind, err)
		}
		ev.Data = b
	}
	return ev, nil
}

// SessionStartData is the Data of a "session.start" event.
type SessionStartData struct {
	User         string   `json:"user"`
	Command      []string `json:"command"`
	Dir          string   `json:"dir"`
	Workspace    string   `json:"workspace"`
	Branch       string   `json:"branch,omitempty"`
	BaseCommit   string   `json:"base_commit,omitempty"`
	PolicySource string   `json:"policy_source"`
	PolicyHash   string   `json:"policy_hash"`
	Profile      string   `json:"profile"`
	// Layers lists the protection layers active ("userns", "landlock",
	// "seccomp", "cgroups", ...); Degraded those the user waived.
	Layers   []string `json:"layers,omitempty"`
	Degraded []string `json:"degraded,omitempty"`
}

// ExecData is the Data of an "exec" event.
type ExecData struct {
	PID  int      `json:"pid,omitempty"`
	Path string   `json:"path"`
	Argv []string `json:"argv"`
	Cwd  string   `json:"cwd,omitempty"`
	Rule string   `json:"rule,omitempty"`
}

// EgressData is the Data of an "egress" event: one proxied flow or one
// refused request.
type EgressData struct {
	// Proto is "http" (plain, method and path visible) or "connect".
	Proto      string `json:"proto"`
	Host       string `json:"host"`
	Port       int    `json:"port"`
	Method     string `json:"method,omitempty"`
	Path       string `json:"path,omitempty"`
	Addr       string `json:"addr,omitempty"` // the address dialled
	Status     int    `json:"status,omitempty"`
	Rule       string `json:"rule"`
	Reason     string `json:"reason"`
	BytesUp    int64  `json:"bytes_up"`
	BytesDown  int64  `json:"bytes_down"`
	DurationMS int64  `json:"duration_ms"`
}

// DNSData is the Data of a "dns" event.
type DNSData struct {
	Name     string   `json:"name"`
	Type     string   `json:"type"`
	Answered bool     `json:"answered"`
	Answers  []string `json:"answers,omitempty"`
	Rule     string   `json:"rule,omitempty"`
	Reason   string   `json:"reason,omitempty"`
}

// DenialData is the Data of a "denial" event: something a sandbox layer
// refused that is not an egress request.
type DenialData struct {
	// Layer is what refused: "seccomp", "landlock", "exec", "fs",
	// "budget", "limit".
	Layer  string `json:"layer"`
	Action string `json:"action"` // what was tried, e.g. "open", "ptrace"
	Target string `json:"target,omitempty"`
	Rule   string `json:"rule,omitempty"`
	Reason string `json:"reason"`
}

// SessionEndData is the Data of a "session.end" event.
type SessionEndData struct {
	ExitCode     int    `json:"exit_code"`
	Signal       string `json:"signal,omitempty"`
	State        string `json:"state"`
	DurationMS   int64  `json:"duration_ms"`
	Blocked      int    `json:"blocked"`
	BytesUp      int64  `json:"bytes_up"`
	BytesDown    int64  `json:"bytes_down"`
	FilesChanged int    `json:"files_changed"`
}

// DiffData is the Data of a "diff" event: the change the agent made.
type DiffData struct {
	BaseCommit   string   `json:"base_commit"`
	Files        []string `json:"files"`
	FilesChanged int      `json:"files_changed"`
	Insertions   int      `json:"insertions"`
	Deletions    int      `json:"deletions"`
	// PatchSHA256 is the hex SHA-256 of the unified diff, so the exact
	// change can be matched later without storing it in the log.
	PatchSHA256 string `json:"patch_sha256"`
}

// Record is one decoded log entry.
type Record struct {
	Seq   int64
	Event Event
	// Leaf is the canonical encoding, the exact bytes hashed.
	Leaf []byte
}

// Filter selects records for Records, Export and Follow (by sequence
// range, session, kinds, decision, time); the zero Filter selects all.
type Filter = store.Filter
