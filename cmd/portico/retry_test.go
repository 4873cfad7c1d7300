package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portico-proxy/portico/tlsmgr"
)

// TestRetryWhatCertsPrints: `portico retry` takes a shared certificate's
// label as `portico certs` prints it ("app.localhost (+1 SAN)", in any
// case), or any of its names.
func TestRetryWhatCertsPrints(t *testing.T) {
	f := startAPI(t, "tcp", "", "")
	f.certs.setStatus(append(testStatus(), tlsmgr.CertStatus{Name: "app.localhost (+1 SAN)", Names: []string{"app.localhost", "www.localhost"},
		KeyType: "p256", Failures: 2, LastError: "no route", NextRetry: at(10 * time.Minute)}))
	code, stdout, _ := run(t, "certs", "-config", f.cfgPath)
	if code != 0 || !strings.Contains(stdout, "\napp.localhost (+1 SAN)  p256") {
		t.Fatalf("certs: exit %d, the SAN label is not a row's first column:\n%s", code, stdout)
	}
	for _, typed := range []string{"app.localhost (+1 SAN)", "App.Localhost. (+1 san)"} {
		code, stdout, stderr := run(t, "retry", "-config", f.cfgPath, typed)
		if want := "app.localhost (+1 SAN): retrying now: p256 (2 failure(s)); follow with 'portico certs'\n"; code != 0 || stdout != want {
			t.Errorf("retry %q: exit %d\nstdout %q\nwant   %q\nstderr %q", typed, code, stdout, want, stderr)
		}
	}
	if got, want := f.certs.retriedNames(), []string{"app.localhost (+1 SAN)", "app.localhost (+1 SAN)"}; !slices.Equal(got, want) {
		t.Errorf("retried %q, want %q", got, want)
	}
}

// TestRetryHealthy: a retry of a certificate without failures has nothing
// to move; the CLI says so (and when it renews) instead of "retrying now".
func TestRetryHealthy(t *testing.T) {
	fixClock(t)
	f := startAPI(t, "tcp", "", "")
	code, stdout, stderr := run(t, "retry", "-config", f.cfgPath, "app.example.net")
	want := "app.example.net: no failures, nothing to retry: it is renewed on its schedule (p256: expires in 41d, renews in 20d; rsa2048: expires in 41d, renews in 20d)\n"
	if code != 0 || stdout != want {
		t.Errorf("exit %d\nstdout %q\nwant   %q\nstderr %q", code, stdout, want, stderr)
	}
	if len(f.certs.retriedNames()) != 0 {
		t.Errorf("retried %v", f.certs.retriedNames())
	}
}
