package main

import (
	"fmt"
	"strings"
	"testing"
)

// TestValidateEveryProblemInFileOrder: values of the wrong type are reported
// with the other problems, in file order, and the same on every run.
func TestValidateEveryProblemInFileOrder(t *testing.T) {
	path := writeFile(t, t.TempDir(), "portico.toml", `[acme]
email = "ops@example.net"
agree_tos = "yes"

[renewal]
max_concurrent = "4"
check_interval = 10

[[site]]
hosts = ["bad_host.example.net"]
upstreams = "http://127.0.0.1:8080"
colour = "blue"
`)
	var first string
	for i := range 10 {
		code, _, stderr := run(t, "validate", "-config", path)
		if i == 0 {
			first = stderr
			var lines []string
			for _, l := range strings.Split(strings.TrimSpace(stderr), "\n")[1:] {
				// "  FILE:3: acme.agree_tos: incompatible types…" → "3: acme.agree_tos"
				parts := strings.SplitN(strings.TrimPrefix(strings.TrimSpace(l), path+":"), ": ", 3)
				lines = append(lines, parts[0]+": "+parts[1])
			}
			want := []string{"3: acme.agree_tos", "6: renewal.max_concurrent", "7: renewal.check_interval", "10: site[1].hosts", "11: site[1].upstreams", "12: site[1].colour"}
			if code != 1 || !strings.HasPrefix(stderr, fmt.Sprintf("%s: %d problem(s):\n", path, len(want))) || strings.Join(lines, "|") != strings.Join(want, "|") {
				t.Fatalf("exit %d; problems at\n%s\nwant\n%s\nstderr:\n%s", code, strings.Join(lines, "\n"), strings.Join(want, "\n"), stderr)
			}
		} else if stderr != first {
			t.Fatalf("run %d:\n%s\nrun 1:\n%s", i+1, stderr, first)
		}
	}
}
