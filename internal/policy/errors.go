package policy

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalid is matched (with errors.Is) by every *Error and by an ErrorList:
// the policy text was read but is not a valid policy.
var ErrInvalid = errors.New("invalid policy")

// ErrUnknownProfile is wrapped when a profile name is not in the policy.
var ErrUnknownProfile = errors.New("unknown profile")

// maxErrors is how many problems one Parse reports before it stops; a file
// with more is usually not a policy at all.
const maxErrors = 10

// Error is one problem in a policy file, with where it is and what to write
// instead. It prints as
//
//	enclave.yaml:12:5: profiles.default.network.allow[0].ports: "https" is not a port number; write a number like 443
type Error struct {
	File  string // the name given to Parse, or the path given to Load
	Line  int    // 1-based; 0 when the problem has no place in the text
	Col   int    // 1-based; 0 when unknown
	Field string // the setting's path, e.g. "profiles.ci.limits.memory"
	Msg   string // what is wrong
	Hint  string // what to write instead; may be empty
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(":")
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, "%d:%d:", e.Line, e.Col)
	}
	if b.Len() > 0 {
		b.WriteString(" ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	if e.Hint != "" {
		b.WriteString("; ")
		b.WriteString(e.Hint)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

// ErrorList is every problem Parse found, in file order, at most about ten.
type ErrorList []*Error

func (l ErrorList) Error() string {
	s := make([]string, len(l))
	for i, e := range l {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Unwrap lets errors.As find each *Error.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// Is makes errors.Is(err, ErrInvalid) true.
func (l ErrorList) Is(target error) bool { return target == ErrInvalid }
