package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultWebhookTimeout bounds one webhook request when NewWebhook is given
// no client.
const DefaultWebhookTimeout = 10 * time.Second

// Webhook posts each Event as JSON to a URL. A 2xx answer means delivered;
// any other answer or a network error is retried with exponential backoff.
//
// The URL often carries a secret (a token in the query or the path), so it
// never appears in String, in errors or, through them, in logs: only its
// scheme and host do.
type Webhook struct {
	// Client sends the requests.
	Client *http.Client
	// Attempts is how often one event is tried (DefaultAttempts when 0).
	Attempts int
	// BaseDelay is the wait after the first failure, doubled after each
	// further one (DefaultBaseDelay when 0).
	BaseDelay time.Duration
	// MaxDelay caps the wait between attempts (DefaultMaxDelay when 0).
	MaxDelay time.Duration

	url  string
	safe string
}

// NewWebhook returns a Webhook posting to url. A nil client means a client
// with a DefaultWebhookTimeout timeout.
func NewWebhook(url string, client *http.Client) *Webhook {
	if client == nil {
		client = &http.Client{Timeout: DefaultWebhookTimeout}
	}
	return &Webhook{Client: client, url: url, safe: redactURL(url)}
}

// String names the target without the URL's path, query or credentials.
func (w *Webhook) String() string { return "webhook " + w.safe }

// Notify posts e, retrying as configured.
func (w *Webhook) Notify(ctx context.Context, e Event) error {
	body, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode event for %s: %w", w, err)
	}
	return retry(ctx, w.Attempts, w.BaseDelay, w.MaxDelay, func(ctx context.Context) error {
		return w.post(ctx, body)
	})
}

// post makes one attempt.
func (w *Webhook) post(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		// the parse error would quote the URL
		return permanent(fmt.Errorf("invalid webhook URL %s", w.safe))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Portico")
	resp, err := w.Client.Do(req)
	if err != nil {
		return redactErr(err)
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	// drain a little more so the connection can be reused
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	msg := fmt.Sprintf("POST %s: answered %s", w.safe, resp.Status)
	if s := strings.TrimSpace(oneLine(strings.ToValidUTF8(string(snippet), "?"))); s != "" {
		msg += ": " + s
	}
	return errors.New(msg)
}

// redactURL keeps a URL's scheme and host: "https://hooks.example.net/…
// (path redacted)".
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(invalid URL)"
	}
	s := u.Scheme + "://" + u.Host
	if (u.Path != "" && u.Path != "/") || u.RawPath != "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		s += "/… (path redacted)"
	}
	return s
}

// redactErr replaces the URL in an error from http.Client (which quotes the
// full URL, query included) with its redacted form.
func redactErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s %s: %w", ue.Op, redactURL(ue.URL), ue.Err)
	}
	return err
}
