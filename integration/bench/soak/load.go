package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/websocket"
)

// kind is a kind of traffic.
type kind int

const (
	keepAliveH1 kind = iota
	keepAliveH2
	handshake
	webSocket
	flap
	nKinds
)

var kindNames = [nKinds]string{
	keepAliveH1: "keep-alive HTTP/1.1",
	keepAliveH2: "keep-alive HTTP/2",
	handshake:   "new TLS handshake",
	webSocket:   "websocket round trip",
	flap:        "flap.test",
}

// stats are the counters of a run; every loop adds to them.
type stats struct {
	start time.Time // when the load started

	requests [nKinds]atomic.Int64 // attempts (websocket: round trips)
	failures [nKinds]atomic.Int64 // failed attempts on the healthy site
	dials    [nKinds]atomic.Int64 // TCP connections opened to Portico
	resumed  atomic.Int64         // handshake clients that resumed a session (should not)
	wsConns  atomic.Int64         // websocket connections established

	flapOK, flap502, flapOther, flapErr atomic.Int64

	reloads, reloadFailures atomic.Int64
	runFailures             atomic.Int64 // Portico gone during the run, and the like

	mu        sync.Mutex
	firstErrs []string // healthy failures and reload failures, the first few
	flapErrs  []string // the first few flap.test errors
}

const keepErrors = 20

func (s *stats) since() string {
	return fmt.Sprintf("%7.1fs", time.Since(s.start).Seconds())
}

// fail records a failure on the healthy site.
func (s *stats) fail(k kind, who string, err error) {
	s.failures[k].Add(1)
	s.mu.Lock()
	if len(s.firstErrs) < keepErrors {
		s.firstErrs = append(s.firstErrs, fmt.Sprintf("%s %s %s: %v", s.since(), kindNames[k], who, err))
	}
	s.mu.Unlock()
}

func (s *stats) reloadFailed(err error) {
	s.reloadFailures.Add(1)
	s.note("reload: " + err.Error())
}

func (s *stats) runFailed(err error) {
	s.runFailures.Add(1)
	s.note(err.Error())
}

func (s *stats) note(what string) {
	s.mu.Lock()
	if len(s.firstErrs) < keepErrors {
		s.firstErrs = append(s.firstErrs, s.since()+" "+what)
	}
	s.mu.Unlock()
}

func (s *stats) flapError(what string) {
	s.mu.Lock()
	if len(s.flapErrs) < 5 {
		s.flapErrs = append(s.flapErrs, s.since()+" "+what)
	}
	s.mu.Unlock()
}

func (s *stats) errors() (healthy, flap []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.firstErrs...), append([]string(nil), s.flapErrs...)
}

// snapshot is the counters at one moment.
type snapshot struct {
	requests        [nKinds]int64
	healthyFailures int64
	flapErrors      int64 // flap.test answers other than 200
	reloads         int64
}

func (s *stats) snapshot() snapshot {
	var c snapshot
	for k := range nKinds {
		c.requests[k] = s.requests[k].Load()
		if k != flap {
			c.healthyFailures += s.failures[k].Load()
		}
	}
	c.flapErrors = s.flap502.Load() + s.flapOther.Load() + s.flapErr.Load()
	c.reloads = s.reloads.Load()
	return c
}

// target is how clients reach Portico: every connection goes to its HTTPS
// address, the name is in SNI and Host.
type target struct {
	addr  string // 127.0.0.1:port of Portico's HTTPS listener
	port  string
	roots *x509.CertPool
}

func (t target) url(host, path string) string {
	return "https://" + net.JoinHostPort(host, t.port) + path
}

// transport makes a client transport: its own connections, dialed to
// Portico whatever the URL's host, counted in dials.
func (t target) transport(dials *atomic.Int64, h2, keepAlive bool) *http.Transport {
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			dials.Add(1)
			return d.DialContext(ctx, network, t.addr)
		},
		// no ClientSessionCache: every new connection is a full handshake
		TLSClientConfig:       &tls.Config{RootCAs: t.roots, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 10 * time.Second,
		DisableKeepAlives:     !keepAlive,
		MaxIdleConnsPerHost:   1,
		MaxConnsPerHost:       1,
		IdleConnTimeout:       5 * time.Minute,
	}
	var p http.Protocols
	if h2 {
		p.SetHTTP2(true)
	} else {
		p.SetHTTP1(true)
	}
	tr.Protocols = &p
	return tr
}

// loop runs fn until end or ctx ends, pausing between calls.
func loop(ctx context.Context, end time.Time, pause time.Duration, fn func(seq int)) {
	for seq := 0; ctx.Err() == nil && time.Now().Before(end); seq++ {
		fn(seq)
		if pause > 0 {
			t := time.NewTimer(pause)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
	}
}

// requestTimeout bounds every request; loops stop between requests, never
// by cancelling one, so the end of the run fails nothing.
const requestTimeout = 15 * time.Second

// get fetches url and returns the response with its body read.
func get(c *http.Client, url string) (*http.Response, []byte, error) {
	resp, err := c.Get(url)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp, b, fmt.Errorf("reading the body after %d bytes: %w", len(b), err)
	}
	return resp, b, nil
}

// checkHealthy checks an answer of the healthy site.
func checkHealthy(resp *http.Response, b []byte, wantProto int) error {
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s, body %q", resp.Status, shorten(string(b), 200))
	}
	if resp.ProtoMajor != wantProto {
		return fmt.Errorf("answered over %s, want HTTP/%d", resp.Proto, wantProto)
	}
	if !bytes.Equal(b, body) {
		return fmt.Errorf("body of %d bytes is not the upstream's %d", len(b), len(body))
	}
	return nil
}

// httpLoop is one client on the healthy site: keep-alive (HTTP/1.1 or h2)
// or a new connection and full handshake per request.
func httpLoop(ctx context.Context, end time.Time, pause time.Duration, t target, st *stats, k kind, id int) {
	h2 := k == keepAliveH2
	tr := t.transport(&st.dials[k], h2, k != handshake)
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: requestTimeout}
	who := "client " + strconv.Itoa(id)
	want := 1
	if h2 {
		want = 2
	}
	loop(ctx, end, pause, func(seq int) {
		st.requests[k].Add(1)
		resp, b, err := get(c, t.url(soakHost, "/?client="+strconv.Itoa(id)+"&seq="+strconv.Itoa(seq)))
		if err == nil {
			err = checkHealthy(resp, b, want)
		}
		if err != nil {
			st.fail(k, who, err)
			return
		}
		if k == handshake && resp.TLS != nil && resp.TLS.DidResume {
			st.resumed.Add(1)
		}
	})
}

// flapLoop is the client of flap.test: its failures are expected while the
// upstream is down and only counted.
func flapLoop(ctx context.Context, end time.Time, pause time.Duration, t target, st *stats) {
	tr := t.transport(&st.dials[flap], false, true)
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: requestTimeout}
	loop(ctx, end, pause, func(seq int) {
		st.requests[flap].Add(1)
		resp, b, err := get(c, t.url(flapHost, "/?seq="+strconv.Itoa(seq)))
		switch {
		case err != nil:
			st.flapErr.Add(1)
			st.flapError(err.Error())
		case resp.StatusCode == http.StatusOK && string(b) == "flap\n":
			st.flapOK.Add(1)
		case resp.StatusCode == http.StatusBadGateway:
			st.flap502.Add(1)
		default:
			st.flapOther.Add(1)
			st.flapError(fmt.Sprintf("status %s, body %q", resp.Status, shorten(string(b), 200)))
		}
	})
}

// wsLoop sends messages to the echo upstream through Portico
// (wss://soak.test/ws) and checks each comes back. With perConn > 0 it opens
// a new connection after that many round trips; otherwise it keeps one
// connection for the whole run (through every reload), opening a new one only
// after a failure.
func wsLoop(ctx context.Context, end time.Time, pause time.Duration, t target, st *stats, id, perConn int) {
	who := fmt.Sprintf("loop %d", id)
	var ws *websocket.Conn
	var onConn int
	defer func() {
		if ws != nil {
			ws.Close()
		}
	}()
	loop(ctx, end, pause, func(seq int) {
		st.requests[webSocket].Add(1)
		if ws != nil && perConn > 0 && onConn >= perConn {
			ws.Close()
			ws = nil
		}
		if ws == nil {
			var err error
			if ws, err = t.dialWebSocket(&st.dials[webSocket]); err != nil {
				st.fail(webSocket, who, fmt.Errorf("connecting: %w", err))
				return
			}
			st.wsConns.Add(1)
			onConn = 0
		}
		onConn++
		if err := roundTrip(ws, fmt.Sprintf("loop %d message %d ", id, seq)); err != nil {
			st.fail(webSocket, who, fmt.Errorf("connection round trip %d: %w", onConn, err))
			ws.Close()
			ws = nil
		}
	})
}

func (t target) dialWebSocket(dials *atomic.Int64) (*websocket.Conn, error) {
	dials.Add(1)
	d := &tls.Dialer{
		NetDialer: &net.Dialer{Timeout: 5 * time.Second},
		Config:    &tls.Config{ServerName: soakHost, RootCAs: t.roots, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, err
	}
	cfg, err := websocket.NewConfig("wss://"+net.JoinHostPort(soakHost, t.port)+"/ws", "https://"+net.JoinHostPort(soakHost, t.port))
	if err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	ws, err := websocket.NewClient(cfg, conn)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("websocket handshake: %w", err)
	}
	conn.SetDeadline(time.Time{})
	return ws, nil
}

// roundTrip sends a message of about 256 bytes and checks the echo.
func roundTrip(ws *websocket.Conn, prefix string) error {
	msg := prefix
	for len(msg) < 256 {
		msg += "0123456789abcdef"
	}
	ws.SetDeadline(time.Now().Add(requestTimeout))
	if err := websocket.Message.Send(ws, msg); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	var got string
	if err := websocket.Message.Receive(ws, &got); err != nil {
		return fmt.Errorf("receive: %w", err)
	}
	if got != msg {
		return fmt.Errorf("echo %q, sent %q", shorten(got, 60), shorten(msg, 60))
	}
	return nil
}

// waitServed waits until Portico serves host a certificate chained to the
// local root and, for the soak site, answers a request.
func waitServed(ctx context.Context, t target, host string, p *portico, timeout time.Duration) error {
	tr := t.transport(new(atomic.Int64), false, false)
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if !p.alive() {
			return errors.New("portico exited")
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		resp, b, err := get(c, t.url(host, "/"))
		switch {
		case err != nil:
			last = err
		case host == soakHost:
			if last = checkHealthy(resp, b, 1); last == nil {
				return nil
			}
		default:
			return nil // the handshake worked; the upstream may be down
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("%s not served within %v: %v", host, timeout, last)
}
