package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/portico-proxy/portico/config"
	"github.com/portico-proxy/portico/integration/testkit"
)

// BenchmarkProxyHTTP1 measures one request through a started Server: a
// keep-alive HTTP/1.1 client over TLS 1.3 (ECDSA P-256 certificate) sends GET
// requests to a site whose upstream, on loopback, answers 1 KiB.
//
// The client and the upstream are written by hand so that they allocate
// nothing per request: allocs/op and B/op beyond "baseline-no-proxy"'s
// are the proxy's own (TLS server conn, the HTTP/1.1 fast path and its
// upstream connection; none since the fast path). ns/op includes
// the client and the upstream, which share the machine's cores with the
// proxy; "baseline-no-proxy" is the same client talking TLS straight to the
// same upstream, for the part of ns/op that is not the proxy.
//
//	go test ./proxy -run '^$' -bench BenchmarkProxyHTTP1 -benchtime 3s -cpuprofile /tmp/proxy.prof
//
// "routes-log" is "serial" through a site with 1,000 routes (the request
// takes a prefix route with strip_prefix and header rules) and the JSON
// access log on, written to a file.
func BenchmarkProxyHTTP1(b *testing.B) {
	const host = "bench.test"
	bc := testkit.SelfSigned(b, host)
	up := benchUpstream(b, 1024, nil)
	proxyAddr := startBenchProxy(b, bc, benchConfig(host, up))
	clientTLS := &tls.Config{RootCAs: bc.Pool, ServerName: host, NextProtos: []string{"http/1.1"}}

	b.Run("routes-log", func(b *testing.B) {
		addr := startBenchProxy(b, bc, benchRoutedConfig(b, host, up, 1000))
		c := dialBenchClient(b, addr, clientTLS, host)
		b.SetBytes(1024)
		b.ReportAllocs()
		for b.Loop() {
			if err := c.get(); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("serial", func(b *testing.B) {
		c := dialBenchClient(b, proxyAddr, clientTLS, host)
		b.SetBytes(1024)
		b.ReportAllocs()
		for b.Loop() {
			if err := c.get(); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("parallel", func(b *testing.B) {
		// 4 connections per P: the proxy's goroutines, the client's and the
		// upstream's all compete for the same cores, as on a real box
		b.SetParallelism(4)
		b.SetBytes(1024)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			c, err := dialBenchClientErr(proxyAddr, clientTLS, host)
			if err != nil {
				b.Error(err)
				return
			}
			defer c.conn.Close()
			for pb.Next() {
				if err := c.get(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})

	b.Run("baseline-no-proxy", func(b *testing.B) {
		direct := benchUpstream(b, 1024, &tls.Config{GetCertificate: bc.Source().GetCertificate})
		c := dialBenchClient(b, direct, clientTLS, host)
		b.SetBytes(1024)
		b.ReportAllocs()
		for b.Loop() {
			if err := c.get(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// benchConfig proxies host to up, HTTPS only.
func benchConfig(host, up string) *config.Config {
	return &config.Config{
		Listen: config.Listen{HTTPS: "127.0.0.1:0"}, // no plain-HTTP listener
		Sites:  []config.Site{{Hosts: []string{host}, Upstreams: []string{"http://" + up}}},
	}
}

// benchRoutedConfig is benchConfig with n routes (the client's "/" is
// taken by the prefix route "/*" with strip_prefix-free header rules),
// site header rules and the JSON access log in a file.
func benchRoutedConfig(tb testing.TB, host, up string, n int) *config.Config {
	cfg := benchConfig(host, up)
	s := &cfg.Sites[0]
	s.Headers = &config.Headers{RequestSet: map[string]string{"X-Env": "prod", "X-Client": "{client_ip}"}, ResponseRemove: []string{"X-Powered-By"}}
	for i := range n - 1 {
		s.Routes = append(s.Routes, config.Route{Path: fmt.Sprintf("/r%d/*", i), Respond: "x"})
	}
	s.Routes = append(s.Routes, config.Route{Path: "/*", Upstreams: []string{"http://" + up},
		Headers: &config.Headers{RequestSet: map[string]string{"X-Route": "all"}}})
	cfg.Log = config.Log{Access: filepath.Join(tb.TempDir(), "access.log"), AccessFormat: "json"}
	return cfg
}

// startBenchProxy starts a Server for cfg and returns its HTTPS address.
func startBenchProxy(tb testing.TB, bc *testkit.Cert, cfg *config.Config) string {
	srv, err := New(cfg, bc.Source(), zap.NewNop())
	if err != nil {
		tb.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	_, addr := srv.Addrs()
	return addr
}

// benchUpstream is a minimal HTTP/1.1 server on loopback (over TLS when
// tlsConfig is set) that answers every request, keep-alive, with a body of
// size bytes, allocating nothing per request. It reads request heads only:
// the benchmark's requests have no body.
func benchUpstream(tb testing.TB, size int, tlsConfig *tls.Config) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: " +
		strconv.Itoa(size) + "\r\n\r\n" + string(bytes.Repeat([]byte("a"), size)))
	var (
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if tlsConfig != nil {
				c = tls.Server(c, tlsConfig)
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReaderSize(c, 4096)
				for {
					// a request head: lines up to an empty one
					for {
						line, err := br.ReadSlice('\n')
						if err != nil {
							return
						}
						if len(line) <= 2 {
							break
						}
					}
					if _, err := c.Write(resp); err != nil {
						return
					}
				}
			}()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// benchClient is a keep-alive HTTP/1.1 client on one TLS connection that
// sends the same GET and reads each response without allocating.
type benchClient struct {
	conn *tls.Conn
	br   *bufio.Reader
	req  []byte
}

func dialBenchClient(tb testing.TB, addr string, cfg *tls.Config, host string) *benchClient {
	tb.Helper()
	c, err := dialBenchClientErr(addr, cfg, host)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.conn.Close() })
	return c
}

func dialBenchClientErr(addr string, cfg *tls.Config, host string) (*benchClient, error) {
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	c := &benchClient{
		conn: conn,
		br:   bufio.NewReaderSize(conn, 8192),
		req:  []byte("GET / HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: portico-bench\r\nAccept: */*\r\n\r\n"),
	}
	// one request before timing: the proxy's upstream connection is dialled
	return c, c.get()
}

var (
	status200     = []byte("HTTP/1.1 200 ")
	contentLength = []byte("Content-Length:")
)

func (c *benchClient) get() error {
	if _, err := c.conn.Write(c.req); err != nil {
		return err
	}
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(line, status200) {
		return fmt.Errorf("response %q", bytes.TrimSpace(line))
	}
	n := -1
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			break
		}
		if v, ok := bytes.CutPrefix(line, contentLength); ok {
			n = 0
			for _, ch := range bytes.TrimSpace(v) {
				if ch < '0' || ch > '9' {
					return fmt.Errorf("bad Content-Length %q", v)
				}
				n = n*10 + int(ch-'0')
			}
		}
	}
	if n < 0 {
		return errors.New("response without Content-Length")
	}
	_, err = c.br.Discard(n)
	return err
}

// benchPool is a pool of 8 upstreams with policy, one of them out.
func benchPool(tb testing.TB, policy string) *Pool {
	cfg := config.DefaultPool(nil)
	cfg.Policy = policy
	for i := range 8 {
		cfg.Upstreams = append(cfg.Upstreams, fmt.Sprintf("http://10.0.0.%d:8080", i+1))
	}
	p, err := newPool(cfg, &builder{s: &Server{logger: zap.NewNop(), transport: newTransport()}})
	if err != nil {
		tb.Fatal(err)
	}
	p.upstreams[3].down.Store(true)
	return p
}

// BenchmarkPoolPick: the cost of picking an upstream, per policy.
//
//	go test ./proxy -run '^$' -bench BenchmarkPoolPick
func BenchmarkPoolPick(b *testing.B) {
	for _, policy := range config.Policies {
		b.Run(policy, func(b *testing.B) {
			p := benchPool(b, policy)
			client := []byte("203.0.113.7")
			b.ReportAllocs()
			for b.Loop() {
				p.pick(client, 0)
			}
		})
	}
}
