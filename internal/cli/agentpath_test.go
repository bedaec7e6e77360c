package cli

import (
	"os"
	"path/filepath"
	"testing"
)

func TestAgentInstall(t *testing.T) {
	root := t.TempDir()
	home := filepath.Join(root, "home")
	write := func(rel, content string) string {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	native := write("home/.local/share/agent/versions/1/agent", "\x7fELF...")
	os.MkdirAll(filepath.Join(home, ".local/bin"), 0o755)
	os.Symlink(native, filepath.Join(home, ".local/bin/agent"))
	script := write("home/.npm/lib/node_modules/@x/agent/bin/agent.js", "#!/usr/bin/env node\n")
	os.Symlink(script, filepath.Join(home, ".local/bin/jsagent"))
	loose := write("home/bin/loose.sh", "#!/bin/sh\n")
	os.Symlink(loose, filepath.Join(home, ".local/bin/loose"))
	path := filepath.Join(home, ".local/bin") + ":/usr/bin:/bin"

	for _, tt := range []struct {
		argv0, mount string
		ok           bool
	}{
		{"agent", native, true}, // a native binary: the file only
		{"jsagent", filepath.Join(home, ".npm/lib/node_modules"), true}, // a script: its node_modules
		{"loose", "", false}, // a script outside any package: nothing, never HOME
		{"sh", "", false},    // a system program is in the view already
		{"no-such-agent", "", false},
	} {
		mount, _, ok := agentInstall(tt.argv0, path, home)
		if ok != tt.ok || mount != tt.mount {
			t.Errorf("agentInstall(%q) = %q, %v, want %q, %v", tt.argv0, mount, ok, tt.mount, tt.ok)
		}
	}
}
