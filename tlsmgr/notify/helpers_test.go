package notify

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// hookRequest is one request a hookServer received.
type hookRequest struct {
	Method      string
	ContentType string
	UserAgent   string
	Query       string
	Body        []byte
	Event       Event
	Status      int
}

// hookServer is a webhook receiver on 127.0.0.1 that records every request
// and answers with status(n) for the n-th request (1-based).
type hookServer struct {
	*httptest.Server
	mu     sync.Mutex
	reqs   []hookRequest
	status func(n int) int
	// hit gets a value per request (when it has room)
	hit chan struct{}
}

func newHookServer(t *testing.T, status func(n int) int) *hookServer {
	t.Helper()
	h := &hookServer{status: status, hit: make(chan struct{}, 100)}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req := hookRequest{
			Method:      r.Method,
			ContentType: r.Header.Get("Content-Type"),
			UserAgent:   r.Header.Get("User-Agent"),
			Query:       r.URL.RawQuery,
			Body:        body,
		}
		if err := json.Unmarshal(body, &req.Event); err != nil {
			req.Event.Kind = "undecodable: " + err.Error()
		}
		h.mu.Lock()
		req.Status = http.StatusNoContent
		if h.status != nil {
			req.Status = h.status(len(h.reqs) + 1)
		}
		h.reqs = append(h.reqs, req)
		h.mu.Unlock()
		select {
		case h.hit <- struct{}{}:
		default:
		}
		w.WriteHeader(req.Status)
		if req.Status >= 300 {
			fmt.Fprintln(w, "receiver says no")
		}
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hookServer) requests() []hookRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]hookRequest(nil), h.reqs...)
}

// accepted returns the events answered with 2xx.
func (h *hookServer) accepted() []Event {
	var out []Event
	for _, r := range h.requests() {
		if r.Status >= 200 && r.Status < 300 {
			out = append(out, r.Event)
		}
	}
	return out
}

// hangServer is a webhook receiver that reports each event's name on
// arrived and answers only once release is closed (or the client gives up).
type hangServer struct {
	*httptest.Server
	arrived chan string
	release chan struct{}
	once    sync.Once
}

func newHangServer(t *testing.T) *hangServer {
	t.Helper()
	h := &hangServer{arrived: make(chan string, 1000), release: make(chan struct{})}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var e Event
		_ = json.NewDecoder(r.Body).Decode(&e)
		h.arrived <- e.Name
		select {
		case <-h.release:
			w.WriteHeader(http.StatusNoContent)
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(h.Close)      // runs second
	t.Cleanup(h.releaseAll) // runs first: unblock handlers before Close waits for them
	return h
}

func (h *hangServer) releaseAll() { h.once.Do(func() { close(h.release) }) }

// next waits for the next arrival.
func (h *hangServer) next(t *testing.T) string {
	t.Helper()
	select {
	case name := <-h.arrived:
		return name
	case <-time.After(10 * time.Second):
		t.Fatal("no request arrived within 10s")
		return ""
	}
}

// observed returns a logger whose entries are recorded.
func observed() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.DebugLevel)
	return zap.New(core), logs
}

// entryText is everything a log entry says: message and all fields.
func entryText(e observer.LoggedEntry) string {
	return e.Message + " " + fmt.Sprint(e.ContextMap())
}

// sameEvent compares events, times by instant.
func sameEvent(t *testing.T, got, want Event) {
	t.Helper()
	times := [][2]time.Time{{got.NextRetry, want.NextRetry}, {got.NotAfter, want.NotAfter}, {got.Time, want.Time}}
	for i, p := range times {
		if !p[0].Equal(p[1]) {
			t.Errorf("time field %d: got %v, want %v", i, p[0], p[1])
		}
	}
	got.NextRetry, got.NotAfter, got.Time = time.Time{}, time.Time{}, time.Time{}
	want.NextRetry, want.NotAfter, want.Time = time.Time{}, time.Time{}, time.Time{}
	if got != want {
		t.Errorf("event:\n got %+v\nwant %+v", got, want)
	}
}

// sampleEvent is a failure report with every field set.
func sampleEvent() Event {
	at := time.Date(2026, 11, 3, 14, 0, 0, 0, time.UTC)
	return Event{
		Kind:      KindFailure,
		Name:      "app.example.net",
		KeyType:   "p256",
		CA:        "https://acme-v02.api.letsencrypt.org/directory",
		Error:     "acme: authorization failed: urn:ietf:params:acme:error:connection: timeout during connect",
		Failures:  3,
		NextRetry: at.Add(100 * time.Minute),
		NotAfter:  at.Add(20 * 24 * time.Hour),
		Message:   "certificate for app.example.net (p256) could not be renewed: timeout during connect; next attempt in 1h40m",
		Time:      at,
		Instance:  "edge-1",
	}
}

func containsAny(s string, subs ...string) string {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return sub
		}
	}
	return ""
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }
