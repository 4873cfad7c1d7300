package main

import (
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

// bodySize is what the healthy upstreams answer to every plain request.
const bodySize = 1024

// body is the 1 KiB answer; clients check it byte for byte.
var body = func() []byte {
	b := make([]byte, bodySize)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	b[len(b)-1] = '\n'
	return b
}()

// healthy is an HTTP/1.1 upstream that never goes away: 1 KiB at every path
// and a WebSocket echo at /ws.
type healthy struct {
	name     string
	addr     string
	srv      *http.Server
	requests atomic.Int64 // plain requests answered
	sockets  atomic.Int64 // websocket connections accepted
}

func startHealthy(name string) (*healthy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	h := &healthy{name: name, addr: ln.Addr().String()}
	length := []string{strconv.Itoa(len(body))}
	ctype := []string{"text/plain; charset=utf-8"}
	mux := http.NewServeMux()
	mux.Handle("/ws", websocket.Handler(func(ws *websocket.Conn) {
		h.sockets.Add(1)
		io.Copy(ws, ws) // echo every frame until the client closes
	}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.requests.Add(1)
		io.Copy(io.Discard, r.Body)
		hd := w.Header()
		hd["Content-Length"] = length
		hd["Content-Type"] = ctype
		hd["X-Upstream"] = []string{name}
		w.Write(body)
	})
	h.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute}
	go h.srv.Serve(ln)
	return h, nil
}

func (h *healthy) close() { h.srv.Close() }

// flapper is an upstream that listens for period, then is gone (listener and
// every connection closed, as if it crashed) for period, and so on.
type flapper struct {
	addr   string
	period time.Duration
	stop   chan struct{}
	done   chan struct{}

	ups, downs atomic.Int64 // transitions
	requests   atomic.Int64

	mu         sync.Mutex
	bindErrors []string // failures to listen again on addr
}

func startFlapper(period time.Duration) (*flapper, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &flapper{addr: ln.Addr().String(), period: period, stop: make(chan struct{}), done: make(chan struct{})}
	go f.run(ln)
	return f, nil
}

func (f *flapper) run(ln net.Listener) {
	defer close(f.done)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("flap\n"))
	})
	wait := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-f.stop:
			return false
		case <-t.C:
			return true
		}
	}
	for {
		srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		f.ups.Add(1)
		running := wait(f.period)
		srv.Close() // the listener and every connection, idle or not
		if !running {
			return
		}
		f.downs.Add(1)
		if !wait(f.period) {
			return
		}
		// listen again on the same port; another socket may hold it for a
		// moment, so retry
		for {
			var err error
			ln, err = net.Listen("tcp", f.addr)
			if err == nil {
				break
			}
			f.mu.Lock()
			if len(f.bindErrors) < 10 {
				f.bindErrors = append(f.bindErrors, err.Error())
			}
			f.mu.Unlock()
			if !wait(100 * time.Millisecond) {
				return
			}
		}
	}
}

func (f *flapper) close() {
	close(f.stop)
	<-f.done
}

func (f *flapper) listenErrors() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.bindErrors...)
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	addr, ok := ln.Addr().(*net.TCPAddr)
	if !ok {
		return 0, errors.New("not a TCP address")
	}
	return addr.Port, nil
}

// freePorts returns n distinct free ports.
func freePorts(n int) ([]int, error) {
	seen := map[int]bool{}
	var out []int
	for tries := 0; len(out) < n; tries++ {
		if tries > 100 {
			return nil, fmt.Errorf("could not find %d free ports", n)
		}
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out, nil
}
