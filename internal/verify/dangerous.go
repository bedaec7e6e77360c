package verify

import (
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"
)

// dangerousPattern names files that make something run later, outside the
// enclave: when a developer opens the repository, builds it, installs it,
// or when CI runs.
type dangerousPattern struct {
	rule  string
	match func(p, base string) bool
	why   string
}

func hasPrefixDir(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+"/") || strings.Contains(p, "/"+dir+"/")
}

var dangerousPatterns = []dangerousPattern{
	{"git-hooks", func(p, b string) bool {
		return hasPrefixDir(p, ".githooks") || hasPrefixDir(p, ".husky") || b == ".pre-commit-config.yaml" || b == "lefthook.yml" || b == ".lefthook.yml"
	}, "git hooks run on a developer's machine at commit or checkout"},
	{"git-config", func(p, b string) bool { return b == ".gitmodules" || b == ".gitconfig" || b == ".lfsconfig" },
		"git configuration can name programs git runs"},
	{"ci-workflow", func(p, b string) bool {
		return hasPrefixDir(p, ".github/workflows") || hasPrefixDir(p, ".github/actions") || b == ".gitlab-ci.yml" ||
			hasPrefixDir(p, ".circleci") || b == "Jenkinsfile" || b == ".travis.yml" || b == "azure-pipelines.yml" ||
			b == "bitbucket-pipelines.yml" || hasPrefixDir(p, ".buildkite") || b == ".drone.yml" || hasPrefixDir(p, ".woodpecker") ||
			b == "cloudbuild.yaml" || b == "cloudbuild.yml" || hasPrefixDir(p, ".tekton")
	}, "CI runs with the repository's secrets"},
	{"agent-settings", func(p, b string) bool {
		return hasPrefixDir(p, ".claude") || b == ".mcp.json" || b == "CLAUDE.md" || b == "AGENTS.md" || hasPrefixDir(p, ".codex") ||
			hasPrefixDir(p, ".gemini") || hasPrefixDir(p, ".cursor") || b == ".cursorrules" || b == ".aider.conf.yml" ||
			hasPrefixDir(p, ".continue") || hasPrefixDir(p, ".windsurf") || b == ".windsurfrules" || hasPrefixDir(p, ".roo") ||
			hasPrefixDir(p, ".clinerules") || b == "copilot-instructions.md"
	}, "agent settings and instructions steer the next agent, and can grant it tools"},
	{"ide-settings", func(p, b string) bool {
		return hasPrefixDir(p, ".vscode") || hasPrefixDir(p, ".idea") || hasPrefixDir(p, ".devcontainer") || b == ".envrc" ||
			b == ".tool-versions"
	}, "IDE tasks, launch configurations, devcontainers and direnv run code when the project is opened"},
	{"shell-rc", func(p, b string) bool {
		return slices.Contains([]string{".bashrc", ".bash_profile", ".profile", ".zshrc", ".zprofile", ".zshenv", ".bash_logout", ".inputrc", ".npmrc", ".yarnrc", ".yarnrc.yml", ".pypirc", "pip.conf", ".curlrc", ".wgetrc"}, b)
	}, "shell and tool rc files run or configure tools in a developer's environment"},
	{"build-script", func(p, b string) bool {
		return slices.Contains([]string{"Makefile", "makefile", "GNUmakefile", "Justfile", "justfile", "Taskfile.yml", "Rakefile", "build.rs", "build.gradle", "build.gradle.kts", "settings.gradle", "pom.xml", "CMakeLists.txt", "meson.build", "Dockerfile", "docker-compose.yml", "compose.yaml", "Vagrantfile", "Earthfile", "conftest.py", "noxfile.py", "tox.ini"}, b) ||
			strings.HasSuffix(b, ".mk") || strings.HasSuffix(b, ".bzl") || b == "BUILD" || b == "BUILD.bazel" || b == "WORKSPACE"
	}, "build scripts run when the project is built or tested"},
	{"install-script", func(p, b string) bool {
		return slices.Contains([]string{"setup.py", "setup.cfg", "install.sh", ".pth"}, b) || strings.HasSuffix(b, ".pth")
	}, "package install scripts run when the package is installed"},
	{"go-generate-tooling", func(p, b string) bool { return b == "go.work" || b == "tools.go" },
		"go.work and tools.go change which code the Go toolchain builds"},
}

// dangerousFiles lists changed files that make something run later.
func dangerousFiles(c *changeSet) []Finding {
	var out []Finding
	for _, f := range c.files {
		p := f.Path
		b := path.Base(p)
		verb := f.Status
		for _, d := range dangerousPatterns {
			if d.match(p, b) {
				out = append(out, Finding{Rule: d.rule, File: p, Message: fmt.Sprintf("%s %s: %s", d.rule, verb, d.why)})
			}
		}
		if f.Status == "deleted" {
			continue
		}
		if b == ".gitattributes" {
			out = append(out, gitattributes(f)...)
		}
		if b == "package.json" {
			out = append(out, npmScripts(c, f)...)
		}
		if f.isSymlink() {
			target := string(f.New)
			msg := fmt.Sprintf("symlink to %q", target)
			if path.IsAbs(target) || escapes(path.Dir(p), target) {
				msg += ": points outside the repository"
			}
			out = append(out, Finding{Rule: "symlink", File: p, Message: scrubLine(msg)})
		}
		if f.OldMode != f.NewMode && f.NewMode == "100755" && f.OldMode != "" {
			out = append(out, Finding{Rule: "made-executable", File: p, Message: "file mode changed to executable"})
		}
		if f.NewMode == "160000" {
			out = append(out, Finding{Rule: "submodule", File: p, Message: "submodule added or moved: its content is not verified"})
		}
	}
	return out
}

func escapes(dir, target string) bool {
	j := path.Clean(path.Join(dir, target))
	return j == ".." || strings.HasPrefix(j, "../")
}

// gitattributes flags filter, diff and merge drivers added to .gitattributes:
// each names a program from git config that runs on checkout or diff.
func gitattributes(f *fileChange) []Finding {
	var out []Finding
	for _, l := range f.Added {
		for _, field := range strings.Fields(l.Text) {
			for _, attr := range []string{"filter=", "diff=", "merge=", "textconv"} {
				if strings.HasPrefix(field, attr) {
					out = append(out, Finding{Rule: "gitattributes-driver", File: f.Path, Line: l.N,
						Message: fmt.Sprintf("attribute %q names a driver that runs a program on checkout, diff or merge", clip(field, 80))})
				}
			}
		}
	}
	return out
}

var npmLifecycle = []string{"preinstall", "install", "postinstall", "prepare", "prepublish", "prepublishOnly", "prepack", "postpack", "preuninstall", "postuninstall", "dependencies"}

// npmScripts flags lifecycle scripts added or changed in a package.json.
func npmScripts(c *changeSet, f *fileChange) []Finding {
	var head, base struct {
		Scripts map[string]any `json:"scripts"`
	}
	if f.Binary || f.Huge {
		return nil
	}
	if err := json.Unmarshal(f.New, &head); err != nil {
		// The dependency check reports the malformed manifest.
		return nil
	}
	_ = json.Unmarshal(f.Old, &base)
	var out []Finding
	for _, name := range npmLifecycle {
		nv, ok := head.Scripts[name]
		if !ok {
			continue
		}
		if ov, had := base.Scripts[name]; had && fmt.Sprint(ov) == fmt.Sprint(nv) {
			continue
		}
		out = append(out, Finding{Rule: "install-script", File: f.Path, Line: lineOf(f.New, `"`+name+`"`),
			Message: scrubLine(fmt.Sprintf("npm %s script added or changed: %q", name, clip(fmt.Sprint(nv), 120)))})
	}
	return out
}

// lineOf is the 1-based line of the first occurrence of s in b, or 0.
func lineOf(b []byte, s string) int {
	i := strings.Index(string(b), s)
	if i < 0 {
		return 0
	}
	return strings.Count(string(b[:i]), "\n") + 1
}
