//go:build linux

package sandbox

import "syscall"

type syscallStat = syscall.Stat_t

var testProbes = map[string]func(args []string) error{}
