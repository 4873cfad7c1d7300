package config

import (
	"fmt"
	"strings"
)

// Problem is one thing wrong with a config file: where it is, what is wrong
// and how to fix it.
type Problem struct {
	File string // the config file
	Line int    // 1-based; 0 when TOML gives no position
	Key  string // the key, e.g. "site[2].hosts" (sites are numbered from 1)
	Msg  string // what is wrong
	Fix  string // how to fix it; may be empty
}

func (p Problem) Error() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
	}
	b.WriteString(": ")
	if p.Key != "" {
		b.WriteString(p.Key)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	if p.Fix != "" {
		b.WriteString(" (fix: ")
		b.WriteString(p.Fix)
		b.WriteString(")")
	}
	return b.String()
}

// Errors is every problem found in one config file. Load returns all of them
// at once so an operator fixes the file in one pass.
type Errors []Problem

func (e Errors) Error() string {
	lines := make([]string, len(e))
	for i, p := range e {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}
