package sandbox

import (
	"errors"
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	ok := func() Config {
		return Config{Argv: []string{"sh"}, Mounts: []Mount{{Source: "/src", Target: "/workspace", Writable: true}}}
	}
	for _, tt := range []struct {
		name   string
		mutate func(*Config)
		want   string // substring of the error; "" means valid
	}{
		{"ok", func(c *Config) {}, ""},
		{"no argv", func(c *Config) { c.Argv = nil }, "Argv is empty"},
		{"bad env", func(c *Config) { c.Env = []string{"NOEQUALS"} }, `Env entry "NOEQUALS"`},
		{"relative dir", func(c *Config) { c.Dir = "work" }, `Dir "work"`},
		{"unclean target", func(c *Config) { c.Mounts[0].Target = "/a/../etc" }, "absolute, clean"},
		{"target /etc", func(c *Config) { c.Mounts[0].Target = "/etc" }, "replaces a path the sandbox builds"},
		{"target beneath /opt", func(c *Config) { c.Mounts[0].Target = "/opt/go" }, ""},
		{"target /", func(c *Config) { c.Mounts[0].Target = "/" }, "replaces"},
		{"target /proc", func(c *Config) { c.Mounts[0].Target = "/proc" }, "replaces"},
		{"target beneath /proc", func(c *Config) { c.Mounts[0].Target = "/proc/self/x" }, "beneath /proc"},
		{"target beneath /sys", func(c *Config) { c.Mounts[0].Target = "/sys/fs" }, "beneath /proc"},
		{"relative source", func(c *Config) { c.Mounts[0].Source = "src" }, "absolute host path"},
		{"duplicate target", func(c *Config) { c.Mounts = append(c.Mounts, c.Mounts[0]) }, "is also Mounts[0]"},
		{"home in /usr", func(c *Config) { c.Home = "/usr/home" }, "overlaps a system path"},
		{"bad listener net", func(c *Config) { c.Listeners = []ListenSpec{{Network: "unix", Addr: "x"}} }, `Network "unix"`},
		{"bad listener addr", func(c *Config) { c.Listeners = []ListenSpec{{Network: "tcp", Addr: "localhost:80"}} }, "must be IP:port"},
		{"bad degrade", func(c *Config) { c.Degrade = []string{"userns"} }, `Degrade names "userns"`},
		{"negative limit", func(c *Config) { c.Limits.Memory = -1 }, "negative"},
		{"bad exec allow", func(c *Config) { c.ExecAllow = []string{"bin"} }, "ExecAllow[0]"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := ok()
			tt.mutate(&c)
			err := c.validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("validate() = %v, want ErrInvalidConfig containing %q", err, tt.want)
			}
		})
	}
}

func TestLayerErrorMessage(t *testing.T) {
	inner := errors.New("ENOSYS")
	err := error(&LayerError{Layer: LayerLandlock, Reason: "kernel has Landlock ABI 1, need at least 3", Err: inner})
	want := `sandbox layer landlock unavailable: kernel has Landlock ABI 1, need at least 3: ENOSYS (allow running without it by degrading "landlock" explicitly)`
	if got := err.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(err, inner) {
		t.Error("LayerError does not unwrap")
	}
}
