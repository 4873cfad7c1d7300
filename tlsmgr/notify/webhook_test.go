package notify

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestWebhookPostsEventAsJSON(t *testing.T) {
	srv := newHookServer(t, nil)
	w := NewWebhook(srv.URL+"/portico?token=abc", nil)
	e := sampleEvent()
	if err := w.Notify(context.Background(), e); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	reqs := srv.requests()
	if len(reqs) != 1 {
		t.Fatalf("got %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.Method != http.MethodPost {
		t.Errorf("method %s, want POST", r.Method)
	}
	if r.ContentType != "application/json" {
		t.Errorf("Content-Type %q, want application/json", r.ContentType)
	}
	if r.UserAgent != "Portico" {
		t.Errorf("User-Agent %q, want Portico", r.UserAgent)
	}
	if r.Query != "token=abc" {
		t.Errorf("query %q: the URL must be used as configured", r.Query)
	}
	sameEvent(t, r.Event, e)

	var raw map[string]any
	if err := json.Unmarshal(r.Body, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"kind", "name", "key_type", "ca", "error", "failures", "next_retry", "not_after", "message", "time", "instance"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, r.Body)
		}
	}
}

func TestEventJSONOmitsZeroFields(t *testing.T) {
	b, err := json.Marshal(Event{Kind: KindRevoked, Name: "a.example.net", KeyType: "rsa2048", Message: "m", Time: time.Unix(0, 0)})
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"ca", "error", "failures", "next_retry", "not_after", "instance"} {
		if _, ok := raw[k]; ok {
			t.Errorf("zero %q should be omitted: %s", k, b)
		}
	}
	for _, k := range []string{"kind", "name", "key_type", "message", "time"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, b)
		}
	}
}

func TestWebhookRetriesUntilAccepted(t *testing.T) {
	srv := newHookServer(t, func(n int) int {
		if n <= 2 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	w := NewWebhook(srv.URL, nil)
	w.BaseDelay = 2 * time.Millisecond
	e := sampleEvent()
	if err := w.Notify(context.Background(), e); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	if n := len(srv.requests()); n != 3 {
		t.Errorf("%d attempts, want 3", n)
	}
	acc := srv.accepted()
	if len(acc) != 1 {
		t.Fatalf("event accepted %d times, want once", len(acc))
	}
	sameEvent(t, acc[0], e)
}

func TestWebhookGivesUpAndLogsWithoutSecret(t *testing.T) {
	srv := newHookServer(t, func(int) int { return http.StatusInternalServerError })
	const pathSecret, querySecret = "T0PS3CRETPATH", "s3cr3t-t0ken"
	w := NewWebhook(srv.URL+"/hooks/"+pathSecret+"?token="+querySecret, nil)
	w.BaseDelay = time.Millisecond
	logger, logs := observed()
	d := NewDispatcher([]Notifier{w}, logger)
	e := sampleEvent()
	d.Send(e)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n := len(srv.requests()); n != DefaultAttempts {
		t.Errorf("%d attempts, want %d", n, DefaultAttempts)
	}
	failed := logs.FilterMessage("notification not delivered").All()
	if len(failed) != 1 {
		t.Fatalf("%d 'not delivered' log lines, want 1; all logs: %v", len(failed), logs.All())
	}
	f := failed[0].ContextMap()
	if f["target"] != w.String() || !strings.Contains(w.String(), strings.TrimPrefix(srv.URL, "http://")) {
		t.Errorf("target field %q, want %q naming the receiver's host", f["target"], w.String())
	}
	if f["kind"] != e.Kind || f["name"] != e.Name {
		t.Errorf("kind/name fields %v/%v, want %v/%v", f["kind"], f["name"], e.Kind, e.Name)
	}
	errText, _ := f["error"].(string)
	if !strings.Contains(errText, "500") || !strings.Contains(errText, "gave up after 5 attempts") {
		t.Errorf("error field %q should name the 500 answer and the attempts", errText)
	}
	for _, entry := range logs.All() {
		if s := containsAny(entryText(entry), querySecret, pathSecret); s != "" {
			t.Errorf("log line leaks %q: %s", s, entryText(entry))
		}
	}
}

func TestWebhookNetworkErrorHidesURL(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: connections are refused
	w := NewWebhook("http://"+addr+"/hooks/T0PS3CRETPATH?token=s3cr3t-t0ken", nil)
	w.Attempts, w.BaseDelay = 2, time.Millisecond
	err = w.Notify(context.Background(), sampleEvent())
	if err == nil {
		t.Fatal("Notify to a closed port succeeded")
	}
	if s := containsAny(err.Error(), "s3cr3t", "T0PS3CRETPATH"); s != "" {
		t.Errorf("error leaks %q: %v", s, err)
	}
	if !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "gave up after 2 attempts") {
		t.Errorf("error %q should name %s and the attempts", err, addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("error %v should wrap ECONNREFUSED", err)
	}
}

func TestWebhookStopsRetryingWhenContextEnds(t *testing.T) {
	srv := newHookServer(t, func(int) int { return http.StatusServiceUnavailable })
	w := NewWebhook(srv.URL, nil)
	w.BaseDelay = time.Hour // only ctx can end the wait
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Notify(ctx, sampleEvent()) }()
	select {
	case <-srv.hit:
	case <-time.After(10 * time.Second):
		t.Fatal("no attempt within 10s")
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "stopped after 1 attempt") {
			t.Errorf("error %q should wrap context.Canceled and say it stopped after 1 attempt", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Notify kept waiting after ctx was cancelled")
	}
}

func TestWebhookString(t *testing.T) {
	for url, want := range map[string]string{
		"https://hooks.example.net/services/T000/B000/XXXX": "webhook https://hooks.example.net/… (path redacted)",
		"https://user:pass@hooks.example.net/?token=abc":    "webhook https://hooks.example.net/… (path redacted)",
		"https://hooks.example.net:8443":                    "webhook https://hooks.example.net:8443",
		"http://hooks.example.net/":                         "webhook http://hooks.example.net",
		"::not a url":                                       "webhook (invalid URL)",
	} {
		if got := NewWebhook(url, nil).String(); got != want {
			t.Errorf("String() for %q = %q, want %q", url, got, want)
		}
	}
	if c := NewWebhook("https://x.example", nil).Client; c == nil || c.Timeout != DefaultWebhookTimeout {
		t.Errorf("default client %+v, want timeout %v", c, DefaultWebhookTimeout)
	}
}

func TestWebhookInvalidURLIsNotRetried(t *testing.T) {
	w := NewWebhook("http://bad host/?token=s3cr3t", nil)
	w.BaseDelay = time.Hour // a retry would hang the test
	err := w.Notify(context.Background(), sampleEvent())
	if err == nil || !strings.Contains(err.Error(), "failed permanently") || strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("error %v: want a permanent failure without the URL's secret", err)
	}
}
