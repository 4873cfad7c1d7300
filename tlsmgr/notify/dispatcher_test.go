package notify

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/portico-proxy/portico/config"
)

// sendAll calls Send for each event in another goroutine and fails the test
// if that does not finish within 10s: Send must never block.
func sendAll(t *testing.T, d *Dispatcher, events []Event) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, e := range events {
			d.Send(e)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("Send blocked")
	}
}

func named(from, to int) []Event {
	var out []Event
	for i := from; i <= to; i++ {
		e := sampleEvent()
		e.Name = fmt.Sprintf("h%d.example.net", i)
		out = append(out, e)
	}
	return out
}

func TestDispatcherSendDoesNotBlockOnHangingTarget(t *testing.T) {
	hang := newHangServer(t)
	ok := newHookServer(t, nil)
	d := NewDispatcher([]Notifier{NewWebhook(hang.URL, nil), NewWebhook(ok.URL, nil)}, nil)

	sendAll(t, d, named(1, 10))
	if got := hang.next(t); got != "h1.example.net" {
		t.Errorf("hanging target got %s first", got)
	}
	// the healthy target is not held up by the hanging one
	for i := range 10 {
		select {
		case <-ok.hit:
		case <-time.After(10 * time.Second):
			t.Fatalf("healthy target got %d of 10 events", i)
		}
	}
	// far more than the queue holds: Send still returns at once
	sendAll(t, d, named(11, 10+3*queueSize))

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := d.Close(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "not delivered") {
		t.Errorf("Close with a hanging target: %v, want a deadline error counting undelivered events", err)
	}
}

func TestDispatcherDropsOldestWhenQueueFull(t *testing.T) {
	hang := newHangServer(t)
	logger, logs := observed()
	w := NewWebhook(hang.URL, nil)
	d := NewDispatcher([]Notifier{w}, logger)

	sendAll(t, d, named(0, 0))
	if got := hang.next(t); got != "h0.example.net" {
		t.Fatalf("first delivery is %s", got)
	}
	// h0 is in flight; h1..h{queueSize} fill the queue; the next two
	// events push out h1 and h2
	sendAll(t, d, named(1, queueSize+2))
	drops := logs.FilterMessage("notification queue full; dropped the oldest notification").All()
	if len(drops) != 2 {
		t.Fatalf("%d drop log lines, want 2", len(drops))
	}
	for i, entry := range drops {
		f := entry.ContextMap()
		if want := fmt.Sprintf("h%d.example.net", i+1); f["name"] != want || f["target"] != w.String() {
			t.Errorf("drop %d names %v at %v, want %s at %s", i, f["name"], f["target"], want, w.String())
		}
	}

	hang.releaseAll()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for i := 3; i <= queueSize+2; i++ {
		if got, want := hang.next(t), fmt.Sprintf("h%d.example.net", i); got != want {
			t.Fatalf("delivered %s, want %s", got, want)
		}
	}
	select {
	case extra := <-hang.arrived:
		t.Errorf("unexpected extra delivery %s", extra)
	default:
	}
}

func TestDispatcherCloseDeliversQueued(t *testing.T) {
	srv := newHookServer(t, nil)
	logger, logs := observed()
	d := NewDispatcher([]Notifier{NewWebhook(srv.URL, nil)}, logger)
	events := named(1, 5)
	for _, e := range events {
		d.Send(e)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	got := srv.accepted()
	if len(got) != len(events) {
		t.Fatalf("%d events delivered, want %d", len(got), len(events))
	}
	for i := range events {
		sameEvent(t, got[i], events[i])
	}

	// after Close, events are dropped with a log line, and Close may repeat
	d.Send(sampleEvent())
	if n := logs.FilterMessage("notification dropped: notifier is shut down").Len(); n != 1 {
		t.Errorf("%d 'shut down' log lines, want 1", n)
	}
	if err := d.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if n := len(srv.requests()); n != len(events) {
		t.Errorf("%d requests after Close, want %d", n, len(events))
	}
}

func TestDispatcherFillsDefaults(t *testing.T) {
	srv := newHookServer(t, nil)
	d := NewDispatcher([]Notifier{NewWebhook(srv.URL, nil)}, nil)
	before := time.Now()
	d.Send(Event{
		Kind: KindFailure, Name: "app.example.net", KeyType: "p256",
		Error: "acme: no route to host", Failures: 1, NextRetry: time.Now().Add(10 * time.Minute),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	got := srv.accepted()
	if len(got) != 1 {
		t.Fatalf("%d events delivered, want 1", len(got))
	}
	e := got[0]
	if e.Time.Before(before.Add(-time.Second)) || e.Time.After(time.Now()) {
		t.Errorf("Time %v not set to the time of Send", e.Time)
	}
	if host, _ := os.Hostname(); e.Instance != host {
		t.Errorf("Instance %q, want %q", e.Instance, host)
	}
	if want := "certificate for app.example.net (p256) could not be obtained: acme: no route to host; next attempt in 10m"; e.Message != want {
		t.Errorf("Message %q, want %q", e.Message, want)
	}
}

func TestDefaultMessage(t *testing.T) {
	at := time.Date(2026, 11, 3, 14, 0, 0, 0, time.UTC)
	base := Event{Name: "app.example.net", KeyType: "p256", Time: at}
	for _, tc := range []struct {
		edit func(*Event)
		want string
	}{
		{func(e *Event) {
			e.Kind, e.Error, e.Failures, e.NextRetry, e.NotAfter = KindFailure, "boom\nsecond line", 3, at.Add(100*time.Minute), at.Add(240*time.Hour)
		}, "certificate for app.example.net (p256) could not be renewed: boom second line; 3 failures in a row; next attempt in 1h40m"},
		{func(e *Event) { e.Kind, e.NotAfter = KindExpiryWarning, at.Add(7*24*time.Hour+time.Hour) },
			"certificate for app.example.net (p256) expires in 7d1h (2026-11-10T15:00:00Z) and has not been renewed"},
		{func(e *Event) { e.Kind, e.NotAfter, e.Error = KindExpiryWarning, at.Add(-time.Hour), "rate limited" },
			"certificate for app.example.net (p256) expired at 2026-11-03T13:00:00Z and has not been renewed; last error: rate limited"},
		{func(e *Event) { e.Kind = KindRevoked },
			"certificate for app.example.net (p256) was revoked by its CA; Portico is replacing it"},
		{func(e *Event) { e.Kind, e.Failures, e.NotAfter = KindRecovered, 4, at.Add(90*24*time.Hour) },
			"certificate for app.example.net (p256) was obtained again after 4 failed attempt(s); valid until 2027-02-01T14:00:00Z"},
	} {
		e := base
		tc.edit(&e)
		if got := defaultMessage(e); got != tc.want {
			t.Errorf("defaultMessage(%s):\n got %q\nwant %q", e.Kind, got, tc.want)
		}
	}
}

func TestFromConfig(t *testing.T) {
	cfg := &config.Config{
		Notify: []config.Notify{
			{Webhook: "https://hooks.example.net/services/x?token=abc123"},
			{Email: "ops@example.net"},
			{Webhook: "https://other.example.net/"},
		},
		SMTP: config.SMTP{Host: "smtp.example.net", Port: 587, Username: "portico", Password: "hunter2", From: "portico@example.net"},
	}
	ns := FromConfig(cfg)
	if len(ns) != len(cfg.Notify) {
		t.Fatalf("%d notifiers for %d [[notify]]", len(ns), len(cfg.Notify))
	}
	if _, ok := ns[0].(*Webhook); !ok {
		t.Errorf("notifier 0 is %T, want *Webhook", ns[0])
	}
	if m, ok := ns[1].(*Email); !ok || m.To != "ops@example.net" || m.smtp != cfg.SMTP {
		t.Errorf("notifier 1 is %#v, want an *Email to ops@example.net through [smtp]", ns[1])
	}
	if _, ok := ns[2].(*Webhook); !ok {
		t.Errorf("notifier 2 is %T, want *Webhook", ns[2])
	}
	want := []string{
		"webhook https://hooks.example.net/… (path redacted)",
		"email ops@example.net via smtp.example.net:587",
		"webhook https://other.example.net",
	}
	for i, n := range ns {
		if n.String() != want[i] {
			t.Errorf("notifier %d: %q, want %q", i, n.String(), want[i])
		}
		if s := containsAny(fmt.Sprintf("%v %s", n, n), "abc123", "hunter2"); s != "" {
			t.Errorf("notifier %d leaks %q", i, s)
		}
	}
	if got := FromConfig(&config.Config{}); len(got) != 0 {
		t.Errorf("no [[notify]] gave %d notifiers", len(got))
	}
	if got := FromConfig(nil); got != nil {
		t.Errorf("nil config gave %v", got)
	}
}
