package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = realMain(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestValidateGoodConfig(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "portico.toml", `[acme]
email = "ops@example.net"
agree_tos = true

[listen]
admin = "127.0.0.1:2019"

[[site]]
hosts = ["App.Example.net", "www.example.net"]
upstreams = ["http://127.0.0.1:8080", "http://127.0.0.1:8081"]
hsts_max_age = "1440h"

[[site]]
hosts = ["status.example.net"]
respond = "ok"
redirect_https = false
`)
	code, stdout, stderr := run(t, "validate", "-config", path)
	if code != 0 {
		t.Fatalf("exit %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if stderr != "" {
		t.Errorf("stderr not empty:\n%s", stderr)
	}
	for _, want := range []string{
		path + ": OK",
		"listen: http :80, https :443, admin 127.0.0.1:2019",
		"acme: ca https://acme-v02.api.letsencrypt.org/directory, email ops@example.net",
		"key types rsa2048 p256",
		"storage: file " + filepath.Join(dir, "data"),
		"sites: 2",
		"site[1] app.example.net, www.example.net",
		"upstreams http://127.0.0.1:8080, http://127.0.0.1:8081",
		"HSTS 1440h0m0s",
		"site[2] status.example.net",
		`respond "ok"`,
		"plain http proxied",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, stdout)
		}
	}
	if n := strings.Count(stdout, "warning: "); n != 1 {
		t.Errorf("got %d warnings, want 1 (the HSTS one):\n%s", n, stdout)
	}
	if !strings.Contains(stdout, "60 days") || !strings.Contains(stdout, "certificate errors can no longer be clicked through") {
		t.Errorf("HSTS warning does not say what it commits to:\n%s", stdout)
	}
}

func TestValidateNoHSTSNoWarning(t *testing.T) {
	path := writeFile(t, t.TempDir(), "portico.toml", `[acme]
ca = "local"

[[site]]
hosts = ["localhost"]
upstreams = ["http://127.0.0.1:8080"]
hsts_max_age = "0s"
`)
	code, stdout, stderr := run(t, "validate", "-config", path)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	if strings.Contains(stdout, "warning: ") || strings.Contains(stdout, ", HSTS ") {
		t.Errorf("summary mentions HSTS though it is off:\n%s", stdout)
	}
	if !strings.Contains(stdout, "http→https 308") {
		t.Errorf("summary lacks the default redirect:\n%s", stdout)
	}
}

func TestValidateBadConfig(t *testing.T) {
	path := writeFile(t, t.TempDir(), "portico.toml", `[acme]
email = "ops@example.net"
agree_tos = false
key_types = ["rsa1024"]

[[site]]
hots = ["app.example.net"]
upstreams = ["127.0.0.1:8080"]

[renewal]
max_concurrent = 0
`)
	code, stdout, stderr := run(t, "validate", "-config", path)
	if code != 1 {
		t.Fatalf("exit %d, want 1\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if stdout != "" {
		t.Errorf("stdout not empty for a bad config:\n%s", stdout)
	}
	wants := []string{
		fmt.Sprintf("%s:3: acme.agree_tos: must be true", path),
		fmt.Sprintf("%s:4: acme.key_types: key type \"rsa1024\" is not allowed by the key policy (fix: allowed: rsa2048, rsa3072, rsa4096, p256, p384)", path),
		fmt.Sprintf("%s:7: site[1].hots: unknown key (fix: did you mean \"hosts\"?)", path),
		fmt.Sprintf("%s:6: site[1].hosts: missing", path),
		fmt.Sprintf("%s:8: site[1].upstreams: \"127.0.0.1:8080\": no scheme", path),
		fmt.Sprintf("%s:11: renewal.max_concurrent: 0 orders at once", path),
	}
	if !strings.HasPrefix(stderr, fmt.Sprintf("%s: %d problem(s):\n", path, len(wants))) {
		t.Errorf("stderr does not start with the count of %d problems:\n%s", len(wants), stderr)
	}
	for _, want := range wants {
		if !strings.Contains(stderr, "  "+want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if n := strings.Count(stderr, "\n"); n != len(wants)+1 {
		t.Errorf("stderr has %d lines, want a header and one per problem:\n%s", n, stderr)
	}
}

func TestValidateSyntaxError(t *testing.T) {
	path := writeFile(t, t.TempDir(), "portico.toml", "[acme]\nemail = \"ops@example.net\nagree_tos = true\n")
	code, _, stderr := run(t, "validate", "-config", path)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.Contains(stderr, path+":2: acme.email: ") || !strings.Contains(stderr, "fix: correct the TOML syntax") {
		t.Errorf("stderr:\n%s", stderr)
	}
}

func TestValidateMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.toml")
	code, stdout, stderr := run(t, "validate", "-config", path)
	if code != 1 || stdout != "" || !strings.Contains(stderr, path) {
		t.Errorf("exit %d, stdout %q, stderr %q; want 1 and an error naming %s", code, stdout, stderr, path)
	}
}

func TestValidateBadFlag(t *testing.T) {
	code, _, stderr := run(t, "validate", "-no-such-flag")
	if code != 2 || !strings.Contains(stderr, "no-such-flag") {
		t.Errorf("exit %d, stderr %q; want 2 and the flag named", code, stderr)
	}
}

// TestValidateNeverPrintsSecrets: secrets given with {env.X} and {file.X}
// appear neither in the summary of a good file nor in the errors of a bad one.
func TestValidateNeverPrintsSecrets(t *testing.T) {
	const redisPW, smtpPW, filePW = "hunter2-redis", "hunter2-smtp", "hunter2-file"
	t.Setenv("PORTICO_TEST_REDIS_URL", "rediss://portico:"+redisPW+"@cache.internal:6380/0")
	t.Setenv("PORTICO_TEST_BAD_REDIS_URL", "https://portico:"+redisPW+"@cache.internal:6380/0")
	t.Setenv("PORTICO_TEST_SMTP_PASSWORD", smtpPW)
	t.Setenv("PORTICO_TEST_REDIS_PASSWORD", redisPW)

	good := `[acme]
email = "ops@example.net"
agree_tos = true

[storage]
backend = "redis"
redis_url = "{env.PORTICO_TEST_REDIS_URL}"

[smtp]
host = "smtp.example.net"
from = "portico@example.net"
username = "portico"
password = "{env.PORTICO_TEST_SMTP_PASSWORD}"

[[notify]]
email = "oncall@example.net"

[[notify]]
webhook = "https://hooks.example.net/{file.hook-token}"

[[site]]
hosts = ["app.example.net"]
upstreams = ["http://127.0.0.1:8080"]
`
	tests := []struct {
		name string
		src  string
		code int
		want string
	}{
		{name: "good file", src: good, code: 0, want: "storage: redis"},
		{name: "bad redis scheme from env",
			src:  strings.Replace(good, "{env.PORTICO_TEST_REDIS_URL}", "{env.PORTICO_TEST_BAD_REDIS_URL}", 1),
			code: 1, want: `storage.redis_url: not a Redis URL: scheme "https"`},
		{name: "redis without host",
			src:  strings.Replace(good, "{env.PORTICO_TEST_REDIS_URL}", "redis://:{env.PORTICO_TEST_REDIS_PASSWORD}@", 1),
			code: 1, want: "storage.redis_url: no host"},
		{name: "credentials in an upstream",
			src:  strings.Replace(good, "http://127.0.0.1:8080", "http://admin:{env.PORTICO_TEST_REDIS_PASSWORD}@127.0.0.1:8080", 1),
			code: 1, want: "site[1].upstreams: \"http://REDACTED@127.0.0.1:8080\""},
		{name: "other problems next to secrets",
			src:  good + "[renewal]\nratio = 3.0\n" + "[[notify]]\nwebhook = \"ftp://hooks.example.net/{file.hook-token}\"\n",
			code: 1, want: "notify[3].webhook: not a webhook URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, dir, "hook-token", filePW+"\n")
			path := writeFile(t, dir, "portico.toml", tt.src)
			code, stdout, stderr := run(t, "validate", "-config", path)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, stdout, stderr)
			}
			if !strings.Contains(stdout+stderr, tt.want) {
				t.Errorf("output lacks %q:\n%s%s", tt.want, stdout, stderr)
			}
			for _, secret := range []string{redisPW, filePW} {
				if strings.Contains(stdout, secret) || strings.Contains(stderr, secret) {
					t.Errorf("output leaks %q:\nstdout:\n%s\nstderr:\n%s", secret, stdout, stderr)
				}
			}
			if tt.code == 0 && strings.Contains(stdout, smtpPW) {
				t.Errorf("summary leaks the SMTP password:\n%s", stdout)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	for _, arg := range []string{"version", "-version", "--version"} {
		code, stdout, stderr := run(t, arg)
		if code != 0 || !strings.HasPrefix(stdout, "portico ") || stderr != "" {
			t.Errorf("%s: exit %d, stdout %q, stderr %q", arg, code, stdout, stderr)
		}
	}
}

func TestUsage(t *testing.T) {
	if code, _, stderr := run(t); code != 2 || !strings.Contains(stderr, "usage: portico") {
		t.Errorf("no args: exit %d, stderr %q", code, stderr)
	}
	if code, _, stderr := run(t, "frobnicate"); code != 2 || !strings.Contains(stderr, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: exit %d, stderr %q", code, stderr)
	}
	if code, stdout, _ := run(t, "help"); code != 0 || !strings.Contains(stdout, "validate") {
		t.Errorf("help: exit %d, stdout %q", code, stdout)
	}
}
