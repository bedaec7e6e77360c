// Command checkproof checks an Enclave audit inclusion proof with nothing
// but golang.org/x/mod/sumdb/tlog, golang.org/x/mod/sumdb/note and the log's
// public key. It deliberately does not import Enclave's audit package: it
// is the independent second implementation the proofs are tested against.
//
// Usage: checkproof PUBLIC-KEY < proof.json
//
// proof.json is the output of `enclave audit prove` or one line of
// `enclave audit export`; only the fields seq, leaf, checkpoint and path
// are read. It exits 0 and prints "ok SEQ SIZE" when the proof holds.
package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type proof struct {
	Seq        int64       `json:"seq"`
	Leaf       string      `json:"leaf"`
	Checkpoint string      `json:"checkpoint"`
	Path       []tlog.Hash `json:"path"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: checkproof PUBLIC-KEY < proof.json")
		os.Exit(2)
	}
	if err := check(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "checkproof:", err)
		os.Exit(1)
	}
}

func check(vkey string) error {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return fmt.Errorf("public key: %v", err)
	}
	var p proof
	if err := json.NewDecoder(os.Stdin).Decode(&p); err != nil {
		return fmt.Errorf("read proof: %v", err)
	}
	n, err := note.Open([]byte(p.Checkpoint), note.VerifierList(v))
	if err != nil {
		return fmt.Errorf("checkpoint: %v", err)
	}
	// Checkpoint text: origin, size, base64 root, one per line.
	lines := strings.Split(n.Text, "\n")
	if len(lines) != 4 || lines[3] != "" {
		return fmt.Errorf("checkpoint text has %d lines, want 3", len(lines)-1)
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		return fmt.Errorf("checkpoint size: %v", err)
	}
	rootBytes, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(rootBytes) != tlog.HashSize {
		return fmt.Errorf("checkpoint root %q is not a hash", lines[2])
	}
	var root tlog.Hash
	copy(root[:], rootBytes)
	// The leaf must name its own position: {"v":1,"seq":SEQ,...
	prefix := fmt.Sprintf(`{"v":1,"seq":%d,`, p.Seq)
	if !strings.HasPrefix(p.Leaf, prefix) {
		return fmt.Errorf("leaf does not start with %s", prefix)
	}
	if p.Seq < 0 || p.Seq >= size {
		return fmt.Errorf("seq %d is outside the checkpoint's %d records", p.Seq, size)
	}
	if err := tlog.CheckRecord(p.Path, size, root, p.Seq, tlog.RecordHash([]byte(p.Leaf))); err != nil {
		return fmt.Errorf("inclusion: %v", err)
	}
	fmt.Printf("ok %d %d\n", p.Seq, size)
	return nil
}
