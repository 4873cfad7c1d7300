package tlsmgr

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// TestWatchAuthorizationsInstalled: the watch reaches certmagic's ACME HTTP
// client (an unexported field: a certmagic upgrade may move it).
func TestWatchAuthorizationsInstalled(t *testing.T) {
	cache := certmagic.NewCache(certmagic.CacheOptions{GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) {
		return nil, fmt.Errorf("none")
	}})
	defer cache.Stop()
	cfg := certmagic.New(cache, certmagic.Config{})
	iss := certmagic.NewACMEIssuer(cfg, certmagic.ACMEIssuer{CA: "https://127.0.0.1:1/dir"})
	if !watchAuthorizations(iss, zap.NewNop()) {
		t.Fatal("certmagic's ACMEIssuer has no httpClient field of type *http.Client any more")
	}
}

// caReplies is the CA side of authzWatch's tests: it answers each request
// with the next canned body, and a Retry-After when retryAfter is set.
type caReplies struct {
	bodies     []string
	retryAfter string
}

func (c *caReplies) RoundTrip(req *http.Request) (*http.Response, error) {
	body := c.bodies[0]
	c.bodies = c.bodies[1:]
	h := http.Header{"Content-Type": {"application/json"}}
	if c.retryAfter != "" {
		h.Set("Retry-After", c.retryAfter)
	}
	return &http.Response{StatusCode: 200, Header: h, Body: io.NopCloser(strings.NewReader(body)), Request: req}, nil
}

func signedPost(t *testing.T, url, payload string) *http.Request {
	jws, _ := json.Marshal(map[string]string{"protected": "x", "payload": base64.RawURLEncoding.EncodeToString([]byte(payload)), "signature": "x"})
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(jws))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/jose+json")
	return req
}

// TestPendingErrorEndsPolling: a pending authorization whose answered
// challenge carries an error reaches acmez as invalid at once when the CA
// gives no Retry-After, and after pendingErrorGrace when it does; an
// error on a challenge Portico did not answer (left from an earlier try)
// changes nothing.
func TestPendingErrorEndsPolling(t *testing.T) {
	const chal = "https://ca.test/chal/1"
	challenge := `{"type":"http-01","url":"` + chal + `","status":"processing","token":"tok"}`
	pending := `{"status":"pending","identifier":{"type":"dns","value":"n.test"},"challenges":[{"type":"http-01","url":"` + chal +
		`","status":"pending","error":{"type":"urn:ietf:params:acme:error:connection","detail":"The server could not connect to validation target"}}]}`
	status := func(t *testing.T, w *authzWatch, req *http.Request) string {
		t.Helper()
		resp, err := w.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		var a struct{ Status string }
		if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
			t.Fatal(err)
		}
		return a.Status
	}
	newWatch := func(ca *caReplies, now *time.Time) *authzWatch {
		return &authzWatch{next: ca, logger: zap.NewNop(), now: func() time.Time { return *now },
			initiated: map[string]bool{}, erredAt: map[string]time.Time{}}
	}
	now := time.Now()

	// an error left from an earlier try, before Portico answers: untouched
	w := newWatch(&caReplies{bodies: []string{pending, challenge, pending}}, &now)
	if s := status(t, w, signedPost(t, "https://ca.test/authz/1", "")); s != "pending" {
		t.Errorf("authorization before the challenge was answered: %q, want pending", s)
	}
	w.RoundTrip(signedPost(t, chal, "{}"))
	if s := status(t, w, signedPost(t, "https://ca.test/authz/1", "")); s != "invalid" {
		t.Errorf("polled with the CA's error and no Retry-After: %q, want invalid", s)
	}

	// a CA that says it retries gets pendingErrorGrace
	ca := &caReplies{bodies: []string{challenge, pending, pending}, retryAfter: "3"}
	w = newWatch(ca, &now)
	w.RoundTrip(signedPost(t, chal, "{}"))
	if s := status(t, w, signedPost(t, "https://ca.test/authz/1", "")); s != "pending" {
		t.Errorf("polled with the CA's error and Retry-After: %q, want pending", s)
	}
	now = now.Add(pendingErrorGrace)
	if s := status(t, w, signedPost(t, "https://ca.test/authz/1", "")); s != "invalid" {
		t.Errorf("polled with the CA's error standing for %v: %q, want invalid", pendingErrorGrace, s)
	}
}
