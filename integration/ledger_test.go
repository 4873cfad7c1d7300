package integration

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portico-proxy/portico/integration/acmetest"
	"github.com/portico-proxy/portico/integration/testkit"
)

type webhookSink struct {
	mu     sync.Mutex
	events []map[string]any
}

func (w *webhookSink) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	var e map[string]any
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || json.NewDecoder(r.Body).Decode(&e) != nil {
		http.Error(rw, "bad report", http.StatusBadRequest)
		return
	}
	w.mu.Lock()
	w.events = append(w.events, e)
	w.mu.Unlock()
}

func (w *webhookSink) find(kind, name string) []map[string]any {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []map[string]any
	for _, e := range w.events {
		if e["kind"] == kind && e["name"] == name {
			out = append(out, e)
		}
	}
	return out
}

type certRow struct {
	Name      string     `json:"name"`
	KeyType   string     `json:"key_type"`
	NotAfter  *time.Time `json:"not_after"`
	Failures  int        `json:"failures"`
	LastError string     `json:"last_error"`
	NextRetry *time.Time `json:"next_retry"`
}

func adminGet(t *testing.T, base, path string, v any) string {
	t.Helper()
	resp, err := http.Get(base + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s %s", path, resp.Status, body)
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
	}
	return string(body)
}

// TestFailureLedgerWebhookAndRetry: a hostname whose validation fails (its
// DNS answer points where nothing listens) shows 1 failure and a next retry
// about a minute later in the admin API; the webhook gets a JSON report
// naming it; after the DNS answer is fixed, POST /certificates/{name}/retry
// gets it a certificate within seconds, not at the next scheduled step.
func TestFailureLedgerWebhookAndRetry(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	e.dns.SetA("fail.test", "127.0.0.9") // nothing listens there
	sink := &webhookSink{}
	hook := httptest.NewServer(sink)
	t.Cleanup(hook.Close)
	adminAddr := fmt.Sprintf("127.0.0.1:%d", acmetest.FreePort(t))
	dir := t.TempDir()
	cfg := strings.Replace(e.acmeConfig("127.0.0.1", dir+"/data", `"http-01"`), "[storage]",
		fmt.Sprintf("admin = %q\n\n[storage]", adminAddr), 1) +
		fmt.Sprintf("\n[[notify]]\nwebhook = %q\n", hook.URL+"/portico") +
		site([]string{"fail.test"}, `respond = "f"`)
	p := startPortico(t, dir, cfg, e.httpsAddr("127.0.0.1"))
	base := "http://" + adminAddr

	testkit.Eventually(t, 60*time.Second, "a webhook report for each key type", func() bool {
		return len(sink.find("failure", "fail.test")) >= 2
	})
	failedAt := time.Now()
	for _, ev := range sink.find("failure", "fail.test") {
		if ev["error"] == "" || ev["message"] == "" || ev["failures"] != float64(1) || ev["next_retry"] == nil {
			t.Errorf("webhook report lacks detail: %v", ev)
		}
	}
	var rows []certRow
	adminGet(t, base, "/certificates", &rows)
	if len(rows) != 2 {
		t.Fatalf("GET /certificates: %d rows, want one per key type: %+v", len(rows), rows)
	}
	for _, r := range rows {
		if r.Name != "fail.test" || r.Failures != 1 || r.LastError == "" || r.NextRetry == nil || r.NotAfter != nil {
			t.Fatalf("ledger row %+v", r)
		}
		if wait := r.NextRetry.Sub(failedAt); wait < 40*time.Second || wait > 70*time.Second {
			t.Errorf("%s: next retry in %v, want about a minute", r.KeyType, wait)
		}
	}
	if m := adminGet(t, base, "/metrics", nil); !strings.Contains(m, `portico_certificate_failures{key_type="p256",name="fail.test"} 1`) ||
		!strings.Contains(m, "portico_retries_pending 2") {
		t.Errorf("metrics do not show the failures")
	}
	// the operator-facing log line says what to check
	if !strings.Contains(p.log.String(), "certificate attempt failed") {
		t.Error("no failure log line")
	}

	// the DNS answer is fixed; an early retry gets the certificate now
	e.dns.SetA("fail.test", "127.0.0.1")
	resp, err := http.Post(base+"/certificates/fail.test/retry", "", nil)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST retry: %v %v", resp, err)
	}
	resp.Body.Close()
	for _, tweak := range []func(*tls.Config){tls13, rsaOnly} {
		testkit.Eventually(t, 20*time.Second, "certificate after the early retry", func() bool {
			_, err := tryHandshake(e.httpsAddr("127.0.0.1"), "fail.test", e.pebble.IssuerRoots(), tweak)
			return err == nil
		})
	}
	testkit.Eventually(t, 20*time.Second, "both certificates in the admin API, failures cleared", func() bool {
		adminGet(t, base, "/certificates", &rows)
		for _, r := range rows {
			if r.Failures != 0 || r.NotAfter == nil || r.NextRetry != nil {
				return false
			}
		}
		return len(rows) == 2
	})
	if since := time.Since(failedAt); since > 40*time.Second {
		t.Errorf("certificates came %v after the failure: the retry did not act early", since)
	}
	testkit.Eventually(t, 10*time.Second, "a recovery report", func() bool { return len(sink.find("recovered", "fail.test")) >= 1 })
	if m := adminGet(t, base, "/metrics", nil); !strings.Contains(m, `portico_certificate_orders_total{key_type="p256",kind="obtain",outcome="failure"}`) ||
		!strings.Contains(m, `portico_certificate_orders_total{key_type="p256",kind="obtain",outcome="success"} 1`) {
		t.Errorf("order outcomes missing from the metrics")
	}
}
