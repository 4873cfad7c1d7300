package proxy

// The desync suite: Portico between hostile clients and a hostile
// upstream must never let one request's answer reach another, nor let a
// request reach the upstream that no client sent as one.
//
//   - desyncUpstream reads every upstream connection with the strict
//     reader of strict_test.go and records each request it frames; every
//     request carries an X-Seq that the test registered beforehand with
//     its method, target and body, so a request the upstream reads
//     differently from how the client sent it, or one hidden in another's
//     bytes, is a failure. Its answers echo X-Seq.
//   - In its evil modes (/evil/<mode>) it answers with more than the
//     answer: an answer of its own with X-Seq: INJECTED follows.
//   - Clients are raw: each segment written is its own TLS record (so
//     Portico reads it in a read of its own), over the HTTP/1.1 fast
//     path, a connection the fast path handed to net/http, HTTP/2 (frames
//     written by hand, so pseudo-headers can be malformed) and plain :80.
//   - After every case, fresh clients of every kind must get their own
//     answers, and the upstream must have seen nothing it could not read
//     or did not expect.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/portico-proxy/portico/config"
)

// injected is the answer an evil upstream sends after its real one.
const injected = "HTTP/1.1 200 OK\r\nX-Seq: INJECTED\r\nContent-Length: 8\r\n\r\nINJECTED"

// evilModes are the ways the upstream sends more than its answer. Each
// answer first carries the request's own X-Seq (written as %s).
var evilModes = map[string]string{
	"long-body":        "HTTP/1.1 200 OK\r\nX-Seq: %s\r\nContent-Length: 5\r\n\r\nhello" + injected,
	"utf8-miscount":    "HTTP/1.1 200 OK\r\nX-Seq: %s\r\nContent-Length: 5\r\n\r\nh\u00e9llo",
	"two-answers":      "HTTP/1.1 200 OK\r\nX-Seq: %s\r\nContent-Length: 2\r\n\r\nok" + injected,
	"head-with-body":   "HTTP/1.1 200 OK\r\nX-Seq: %s\r\nContent-Length: 8\r\n\r\n" + "INJECTED",
	"204-with-body":    "HTTP/1.1 204 No Content\r\nX-Seq: %s\r\n\r\n" + injected,
	"304-with-body":    "HTTP/1.1 304 Not Modified\r\nX-Seq: %s\r\n\r\n" + injected,
	"after-last-chunk": "HTTP/1.1 200 OK\r\nX-Seq: %s\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n" + injected,
	"100-then-extra":   "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-Seq: %s\r\nContent-Length: 2\r\n\r\nok" + injected,
	"103-then-extra":   "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nX-Seq: %s\r\nContent-Length: 2\r\n\r\nok" + injected,
	"bare-lf-head":     "HTTP/1.1 200 OK\nX-Seq: %s\nContent-Length: 2\n\nok" + injected,
	"bare-lf-chunks":   "HTTP/1.1 200 OK\r\nX-Seq: %s\r\nTransfer-Encoding: chunked\r\n\r\n2\nok\n0\n\n" + injected,
	"nul-chunk-ext":    "HTTP/1.1 200 OK\r\nX-Seq: %s\r\nTransfer-Encoding: chunked\r\n\r\n2;a=\x00\r\nok\r\n0\r\n\r\n" + injected,
	"cl-and-chunked":   "HTTP/1.1 200 OK\r\nX-Seq: %s\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n" + injected,
	// the extra answer comes in a write of its own once the answer is
	// out, while the connection idles in Portico's pool
	"late": "HTTP/1.1 200 OK\r\nX-Seq: %s\r\nContent-Length: 2\r\n\r\nok",
}

// expectation is a request a client sent, as the upstream must read it.
type expectation struct {
	method, target, body string
}

// desyncUpstream is the strict, recording upstream.
type desyncUpstream struct {
	addr string
	late chan struct{} // a late injected answer was written

	mu       sync.Mutex
	expect   map[string]expectation
	seen     map[string]int
	problems []string
	conns    int
	// recording: every request is taken, given the X-Seq "n<index>" and
	// kept in log, instead of being checked against expect (the fuzz
	// target compares afterwards)
	recording bool
	log       []*strictRequest
}

func newDesyncUpstream(t testing.TB) *desyncUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &desyncUpstream{addr: ln.Addr().String(), late: make(chan struct{}, 16),
		expect: map[string]expectation{}, seen: map[string]int{}}
	var wg sync.WaitGroup
	var open sync.Map // net.Conn → struct{}: closed at the end
	t.Cleanup(func() {
		ln.Close()
		open.Range(func(c, _ any) bool { c.(net.Conn).Close(); return true })
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			open.Store(c, struct{}{})
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer open.Delete(c)
				u.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		for _, p := range u.takeProblems() {
			t.Error(p)
		}
	})
	return u
}

// recorder keeps the bytes a connection read, for failure messages.
type recorder struct {
	r   io.Reader
	buf bytes.Buffer
}

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if r.buf.Len() < 64<<10 {
		r.buf.Write(p[:n])
	}
	return n, err
}

func (u *desyncUpstream) serve(c net.Conn) {
	defer c.Close()
	u.mu.Lock()
	u.conns++
	id := u.conns
	u.mu.Unlock()
	rec := &recorder{r: c}
	br := bufio.NewReader(rec)
	for {
		req, err := readStrictRequest(br)
		switch {
		case errors.Is(err, errStrict):
			u.problem("upstream connection %d: bytes a strict reader refuses (%v); the connection read: %q", id, err, rec.buf.String())
			return
		case err != nil:
			return // closed by Portico, at a boundary or not (a request it gave up)
		}
		seq := u.check(id, req)
		path, _, _ := strings.Cut(req.target, "?")
		mode, evil := strings.CutPrefix(path, "/evil/")
		if answer, ok := evilModes[mode]; evil && ok {
			fmt.Fprintf(c, answer, seq)
			if mode == "late" {
				io.WriteString(c, injected)
				u.late <- struct{}{}
			}
			continue
		}
		body := fmt.Sprintf("%s|%s|%d|%s", seq, req.method, len(req.body), req.body)
		if req.method == "HEAD" {
			// an answer framed alike for HEAD and GET: the fuzz target's
			// client does not always know which it asked
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nX-Seq: %s\r\nContent-Length: 0\r\n\r\n", seq)
			continue
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nX-Seq: %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", seq, len(body), body)
	}
}

// check compares a request the upstream read with what its client sent.
func (u *desyncUpstream) check(conn int, req *strictRequest) string {
	seqs := req.get("X-Seq")
	seq := strings.Join(seqs, ",")
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.recording {
		u.log = append(u.log, req)
		return "n" + strconv.Itoa(len(u.log)-1)
	}
	want, ok := u.expect[seq]
	switch {
	case len(seqs) != 1 || !ok:
		u.problems = append(u.problems, fmt.Sprintf("upstream connection %d: a request no client sent as one reached the upstream: %s %s X-Seq=%q body %q",
			conn, req.method, req.target, seq, req.body))
	case u.seen[seq] > 0:
		u.problems = append(u.problems, fmt.Sprintf("upstream connection %d: request %s reached the upstream twice", conn, seq))
	case want.method != req.method || want.target != req.target || want.body != string(req.body):
		u.problems = append(u.problems, fmt.Sprintf("upstream connection %d: request %s read as %s %s body %q; the client sent %s %s body %q",
			conn, seq, req.method, req.target, req.body, want.method, want.target, want.body))
	}
	u.seen[seq]++
	return seq
}

func (u *desyncUpstream) problem(format string, args ...any) {
	u.mu.Lock()
	u.problems = append(u.problems, fmt.Sprintf(format, args...))
	u.mu.Unlock()
}

func (u *desyncUpstream) takeProblems() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	p := u.problems
	u.problems = nil
	return p
}

// register notes a request a client is about to send and returns its X-Seq.
func (u *desyncUpstream) register(method, target, body string) string {
	u.mu.Lock()
	defer u.mu.Unlock()
	seq := "s" + strconv.Itoa(len(u.expect)+1)
	u.expect[seq] = expectation{method, target, body}
	return seq
}

// unregistered is an X-Seq no request may reach the upstream with.
var unregisteredSeq atomic.Int64

func unregistered() string { return "x" + strconv.FormatInt(unregisteredSeq.Add(1), 10) }

// reached reports whether the request with seq reached the upstream.
func (u *desyncUpstream) reached(seq string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seen[seq] > 0
}

// desyncHost is the site under test; otherHost routes to the same site
// but is not covered by the test certificate (see authority.go).
const (
	desyncHost = "app.example.com"
	otherHost  = "other.test"
)

func startDesync(t testing.TB) (*testServer, *desyncUpstream) {
	t.Helper()
	up := newDesyncUpstream(t)
	return startServer(t, desyncConfig(up)), up
}

// desyncConfig proxies the test's hosts to up, on :80 too.
func desyncConfig(up *desyncUpstream) *config.Config {
	f := false
	site := proxySite([]string{desyncHost, "b.example.com", otherHost}, "http://"+up.addr)
	site.RedirectHTTPS = &f
	return testConfig(site)
}

// reqText builds an HTTP/1.1 request; extra are header lines without CRLF.
func reqText(method, target, seq, body string, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nX-Seq: %s\r\n", method, target, desyncHost, seq)
	for _, e := range extra {
		b.WriteString(e + "\r\n")
	}
	if body != "" || method == "POST" {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n" + body)
	return b.String()
}

// rawClient is an HTTP/1.x client connection whose writes are segments:
// over TLS, each is a record of its own.
type rawClient struct {
	c  net.Conn
	br *bufio.Reader
}

func (rc *rawClient) send(t *testing.T, segments ...string) {
	t.Helper()
	rc.c.SetWriteDeadline(time.Now().Add(waitTimeout))
	for _, s := range segments {
		if _, err := io.WriteString(rc.c, s); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
}

// answer reads the next answer (nil at a closed connection).
func (rc *rawClient) answer(t *testing.T, method string) (*http.Response, string) {
	t.Helper()
	rc.c.SetReadDeadline(time.Now().Add(waitTimeout))
	resp, err := http.ReadResponse(rc.br, &http.Request{Method: method})
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || isReset(err) {
			return nil, ""
		}
		t.Fatalf("read answer: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		// an answer cut short, as Portico ends one whose upstream broke
		// off mid-body: what came is still checked
		b = append(b, " (cut short: "+err.Error()+")"...)
	}
	return resp, string(b)
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && strings.Contains(op.Err.Error(), "reset")
}

// clientKinds are the ways a client reaches the site over HTTP/1.x.
var clientKinds = []string{"fast", "handoff", "plain"}

// dial opens a client of kind: "fast" (TLS, HTTP/1.1), "handoff" (the
// same, after a chunked request that the fast path gives to net/http, so
// that net/http serves the rest) or "plain" (:80).
func dialKind(t *testing.T, ts *testServer, up *desyncUpstream, kind string) *rawClient {
	t.Helper()
	var c net.Conn
	var err error
	d := &net.Dialer{Timeout: waitTimeout}
	if kind == "plain" {
		c, err = d.Dial("tcp", ts.httpAddr)
	} else {
		c, err = tls.DialWithDialer(d, "tcp", ts.https, &tls.Config{ServerName: desyncHost, RootCAs: ts.certs.Pool, NextProtos: []string{"http/1.1"}})
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rc := &rawClient{c: c, br: bufio.NewReader(c)}
	if kind == "handoff" {
		before := ts.srv.fast.handedOff.Load()
		seq := up.register("POST", "/handoff", "abc")
		rc.send(t, fmt.Sprintf("POST /handoff HTTP/1.1\r\nHost: %s\r\nX-Seq: %s\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", desyncHost, seq))
		ownAnswer(t, rc, "POST", seq)
		if ts.srv.fast.handedOff.Load() == before {
			t.Fatal("the fast path did not hand the connection to net/http")
		}
	}
	return rc
}

// ownAnswer reads the next answer and checks it is the one to seq.
func ownAnswer(t *testing.T, rc *rawClient, method, seq string) {
	t.Helper()
	resp, body := rc.answer(t, method)
	checkOwn(t, resp, body, method, seq)
}

func checkOwn(t *testing.T, resp *http.Response, body, method, seq string) {
	t.Helper()
	switch {
	case resp == nil:
		t.Fatalf("request %s: connection closed without an answer", seq)
	case resp.StatusCode != 200 || resp.Header.Get("X-Seq") != seq:
		t.Fatalf("request %s got someone else's answer: %d, X-Seq %q, body %q", seq, resp.StatusCode, resp.Header.Get("X-Seq"), body)
	case method != "HEAD" && !strings.HasPrefix(body, seq+"|"+method+"|"):
		t.Fatalf("request %s: answer body %q", seq, body)
	}
}

// notOthers checks an answer is the request's own, or an error of
// Portico's (no X-Seq), or none: never another request's or injected.
func notOthers(t *testing.T, resp *http.Response, body, seq string) {
	t.Helper()
	if resp == nil {
		return
	}
	if got := resp.Header.Get("X-Seq"); got != "" && got != seq || strings.Contains(body, "INJECTED") {
		t.Fatalf("request %s got someone else's answer: %d, X-Seq %q, body %q", seq, resp.StatusCode, got, body)
	}
}

// freshClientsServed checks that new clients of every kind, HTTP/2
// included, get their own answers (two requests each, on one connection).
func freshClientsServed(t *testing.T, ts *testServer, up *desyncUpstream) {
	t.Helper()
	for _, kind := range clientKinds {
		rc := dialKind(t, ts, up, kind)
		s1 := up.register("GET", "/after", "")
		s2 := up.register("POST", "/after", "data")
		rc.send(t, reqText("GET", "/after", s1, ""), reqText("POST", "/after", s2, "data"))
		ownAnswer(t, rc, "GET", s1)
		ownAnswer(t, rc, "POST", s2)
		rc.c.Close()
	}
	hc := dialH2(t, ts)
	for _, m := range []string{"GET", "POST"} {
		body := ""
		if m == "POST" {
			body = "data"
		}
		seq := up.register(m, "/after", body)
		a := hc.do(t, h2Fields(m, "/after", seq, len(body)), body)
		checkOwn(t, a.resp(), a.body, m, seq)
	}
	hc.c.Close()
	for _, p := range up.takeProblems() {
		t.Error(p)
	}
}

// TestDesyncEvilUpstream: an upstream that sends more than its answer, on
// every client path; the next clients get their own answers.
func TestDesyncEvilUpstream(t *testing.T) {
	ts, up := startDesync(t)
	for mode := range evilModes {
		for _, kind := range append(clientKinds, "h2") {
			t.Run(mode+"/"+kind, func(t *testing.T) {
				method := "GET"
				if mode == "head-with-body" {
					method = "HEAD"
				}
				seq := up.register(method, "/evil/"+mode, "")
				if kind == "h2" {
					hc := dialH2(t, ts)
					a := hc.do(t, h2Fields(method, "/evil/"+mode, seq, -1), "")
					notOthers(t, a.resp(), a.body, seq)
					hc.c.Close()
				} else {
					rc := dialKind(t, ts, up, kind)
					rc.send(t, reqText(method, "/evil/"+mode, seq, ""))
					resp, body := rc.answer(t, method)
					notOthers(t, resp, body, seq)
					rc.c.Close()
				}
				if mode == "late" {
					recv(t, up.late, "the late injected answer")
				}
				freshClientsServed(t, ts, up)
			})
		}
	}
}

// desyncCase is a client's attempt on one HTTP/1.x path.
type desyncCase struct {
	name  string
	kinds []string // nil: every kind
	run   func(t *testing.T, rc *rawClient, up *desyncUpstream)
}

// refusedNotSent checks that an attempt left no answer but the request's
// own or Portico's refusal.
func refusedNotSent(t *testing.T, rc *rawClient, up *desyncUpstream, seq string) {
	t.Helper()
	resp, body := rc.answer(t, "GET")
	notOthers(t, resp, body, seq)
	if resp != nil && resp.StatusCode < 400 {
		t.Fatalf("request %s: %d, want a refusal", seq, resp.StatusCode)
	}
	if up.reached(seq) {
		t.Fatalf("request %s reached the upstream", seq)
	}
}

var desyncCases = []desyncCase{
	{name: "body HEAD in its own record", run: func(t *testing.T, rc *rawClient, up *desyncUpstream) {
		for _, m := range []string{"POST", "PUT", "PATCH", "DELETE"} {
			for _, body := range []string{"HEAD", "HEAD / HTTP/1.1\r\n\r\n", "GET "} {
				seq := up.register(m, "/x", body)
				req := reqText(m, "/x", seq, body)
				rc.send(t, req[:len(req)-len(body)], body)
				ownAnswer(t, rc, m, seq)
			}
		}
	}},
	{name: "head split at every byte", run: func(t *testing.T, rc *rawClient, up *desyncUpstream) {
		seq := up.register("POST", "/split", "0123456789")
		req := reqText("POST", "/split", seq, "0123456789")
		var segs []string
		for i := range len(req) {
			segs = append(segs, req[i:i+1])
		}
		rc.send(t, segs...)
		ownAnswer(t, rc, "POST", seq)
	}},
	{name: "pipelined in one record", run: func(t *testing.T, rc *rawClient, up *desyncUpstream) {
		s1 := up.register("GET", "/p1", "")
		s2 := up.register("POST", "/p2", "body")
		s3 := up.register("HEAD", "/p3", "")
		s4 := up.register("GET", "/p4?q=1", "")
		rc.send(t, reqText("GET", "/p1", s1, "")+reqText("POST", "/p2", s2, "body")+reqText("HEAD", "/p3", s3, "")+reqText("GET", "/p4?q=1", s4, ""))
		ownAnswer(t, rc, "GET", s1)
		ownAnswer(t, rc, "POST", s2)
		ownAnswer(t, rc, "HEAD", s3)
		ownAnswer(t, rc, "GET", s4)
	}},
	{name: "pipelined across records at odd places", run: func(t *testing.T, rc *rawClient, up *desyncUpstream) {
		s1 := up.register("POST", "/q1", "abcdef")
		s2 := up.register("GET", "/q2", "")
		all := reqText("POST", "/q1", s1, "abcdef") + reqText("GET", "/q2", s2, "")
		cut := strings.Index(all, "abc") + 2
		rc.send(t, all[:cut], all[cut:cut+7], all[cut+7:])
		ownAnswer(t, rc, "POST", s1)
		ownAnswer(t, rc, "GET", s2)
	}},
	{name: "a request in a body", run: func(t *testing.T, rc *rawClient, up *desyncUpstream) {
		hidden := reqText("GET", "/hidden", unregistered(), "")
		seq := up.register("POST", "/carrier", hidden)
		rc.send(t, reqText("POST", "/carrier", seq, hidden))
		ownAnswer(t, rc, "POST", seq)
	}},
	{name: "Content-Length and chunked", run: func(t *testing.T, rc *rawClient, up *desyncUpstream) {
		seq, hidden := unregistered(), unregistered()
		smuggled := "0\r\n\r\n" + reqText("GET", "/smuggled", hidden, "")
		rc.send(t, fmt.Sprintf("POST /cl-te HTTP/1.1\r\nHost: %s\r\nX-Seq: %s\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n%s", desyncHost, seq, len(smuggled), smuggled))
		refusedNotSent(t, rc, up, seq)
		if up.reached(hidden) {
			t.Fatal("the smuggled request reached the upstream")
		}
	}},
	{name: "two Content-Lengths", run: func(t *testing.T, rc *rawClient, up *desyncUpstream) {
		seq := unregistered()
		rc.send(t, fmt.Sprintf("POST /cl-cl HTTP/1.1\r\nHost: %s\r\nX-Seq: %s\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc", desyncHost, seq))
		refusedNotSent(t, rc, up, seq)
	}},
	{name: "control character in a chunk extension", run: func(t *testing.T, rc *rawClient, up *desyncUpstream) {
		seq, hidden := unregistered(), unregistered()
		rc.send(t, fmt.Sprintf("POST /ext HTTP/1.1\r\nHost: %s\r\nX-Seq: %s\r\nTransfer-Encoding: chunked\r\n\r\n", desyncHost, seq),
			"3;a=\x00\r\nabc\r\n0\r\n\r\n"+reqText("GET", "/hidden", hidden, ""))
		resp, body := rc.answer(t, "POST")
		notOthers(t, resp, body, seq)
		if resp != nil && resp.StatusCode < 400 {
			t.Fatalf("a chunk extension with NUL was accepted: %d", resp.StatusCode)
		}
		if up.reached(hidden) {
			t.Fatal("the request after it reached the upstream")
		}
	}},
	{name: "bare CR in a chunk line", run: func(t *testing.T, rc *rawClient, up *desyncUpstream) {
		seq := unregistered()
		rc.send(t, fmt.Sprintf("POST /cr HTTP/1.1\r\nHost: %s\r\nX-Seq: %s\r\nTransfer-Encoding: chunked\r\n\r\n3;a\rb\r\nabc\r\n0\r\n\r\n", desyncHost, seq))
		resp, body := rc.answer(t, "POST")
		notOthers(t, resp, body, seq)
		if resp != nil && resp.StatusCode < 400 {
			t.Fatalf("a chunk line with a bare CR was accepted: %d", resp.StatusCode)
		}
	}},
	{name: "method not a token", run: func(t *testing.T, rc *rawClient, up *desyncUpstream) {
		seq := unregistered()
		rc.send(t, fmt.Sprintf("G(T /m HTTP/1.1\r\nHost: %s\r\nX-Seq: %s\r\n\r\n", desyncHost, seq))
		refusedNotSent(t, rc, up, seq)
	}},
	{name: "space in the target", run: func(t *testing.T, rc *rawClient, up *desyncUpstream) {
		seq := unregistered()
		rc.send(t, fmt.Sprintf("GET /a b HTTP/1.1\r\nHost: %s\r\nX-Seq: %s\r\n\r\n", desyncHost, seq))
		refusedNotSent(t, rc, up, seq)
	}},
	{name: "bare LF head", run: func(t *testing.T, rc *rawClient, up *desyncUpstream) {
		seq := up.register("GET", "/lf", "")
		rc.send(t, fmt.Sprintf("GET /lf HTTP/1.1\nHost: %s\nX-Seq: %s\n\n", desyncHost, seq))
		ownAnswer(t, rc, "GET", seq)
	}},
	{name: "obs-fold Transfer-Encoding", run: func(t *testing.T, rc *rawClient, up *desyncUpstream) {
		seq, hidden := unregistered(), unregistered()
		smuggled := "0\r\n\r\n" + reqText("GET", "/smuggled", hidden, "")
		rc.send(t, fmt.Sprintf("POST /fold HTTP/1.1\r\nHost: %s\r\nX-Seq: %s\r\nContent-Length: %d\r\nTransfer-Encoding:\r\n chunked\r\n\r\n%s", desyncHost, seq, len(smuggled), smuggled))
		refusedNotSent(t, rc, up, seq)
		if up.reached(hidden) {
			t.Fatal("the smuggled request reached the upstream")
		}
	}},
	{name: "Expect 100-continue", run: func(t *testing.T, rc *rawClient, up *desyncUpstream) {
		seq := up.register("POST", "/expect", "hello")
		req := reqText("POST", "/expect", seq, "hello", "Expect: 100-continue")
		rc.send(t, req[:len(req)-5])
		resp, _ := rc.answer(t, "POST")
		if resp == nil || resp.StatusCode != 100 {
			t.Fatalf("want 100 Continue first, got %v", resp)
		}
		rc.send(t, "hello")
		ownAnswer(t, rc, "POST", seq)
	}},
	{name: "Host the certificate does not cover", kinds: []string{"fast", "handoff"}, run: func(t *testing.T, rc *rawClient, up *desyncUpstream) {
		seq := unregistered()
		rc.send(t, strings.Replace(reqText("GET", "/misdirected", seq, ""), "Host: "+desyncHost, "Host: "+otherHost, 1))
		resp, _ := rc.answer(t, "GET")
		if resp == nil || resp.StatusCode != http.StatusMisdirectedRequest {
			t.Fatalf("want 421, got %v", resp)
		}
		if up.reached(seq) {
			t.Fatal("a misdirected request reached the upstream")
		}
		// another name of the same certificate is served (coalescing)
		s2 := up.register("GET", "/coalesced", "")
		rc.send(t, strings.Replace(reqText("GET", "/coalesced", s2, ""), "Host: "+desyncHost, "Host: b.example.com", 1))
		ownAnswer(t, rc, "GET", s2)
	}},
}

// TestDesyncClientCases: hostile and unusual client bytes on every
// HTTP/1.x path; then fresh clients get their own answers.
func TestDesyncClientCases(t *testing.T) {
	ts, up := startDesync(t)
	for _, c := range desyncCases {
		kinds := c.kinds
		if kinds == nil {
			kinds = clientKinds
		}
		for _, kind := range kinds {
			t.Run(c.name+"/"+kind, func(t *testing.T) {
				rc := dialKind(t, ts, up, kind)
				c.run(t, rc, up)
				rc.c.Close()
				freshClientsServed(t, ts, up)
			})
		}
	}
}

// h2Client writes HTTP/2 frames by hand: pseudo-headers can be anything.
type h2Client struct {
	c    net.Conn
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
	next uint32
}

func dialH2(t *testing.T, ts *testServer) *h2Client {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: waitTimeout}, "tcp", ts.https,
		&tls.Config{ServerName: desyncHost, RootCAs: ts.certs.Pool, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("negotiated %q, want h2", p)
	}
	hc := &h2Client{c: c, fr: http2.NewFramer(c, c), next: 1}
	hc.enc = hpack.NewEncoder(&hc.hbuf)
	hc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := hc.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return hc
}

// h2Fields are a request's header fields: pseudo-headers, X-Seq and, for
// n >= 0, content-length.
func h2Fields(method, path, seq string, n int) [][2]string {
	f := [][2]string{{":method", method}, {":scheme", "https"}, {":authority", desyncHost}, {":path", path}, {"x-seq", seq}}
	if n >= 0 {
		f = append(f, [2]string{"content-length", strconv.Itoa(n)})
	}
	return f
}

// h2Answer is what came back on a stream: headers and body, or a reset.
type h2Answer struct {
	status int
	header http.Header
	body   string
	reset  bool
}

func (a h2Answer) resp() *http.Response {
	if a.reset || a.status == 0 {
		return nil
	}
	return &http.Response{StatusCode: a.status, Header: a.header}
}

// do sends one request on a new stream, its body in DATA frames of the
// given pieces, and reads its answer.
func (hc *h2Client) do(t *testing.T, fields [][2]string, body ...string) h2Answer {
	t.Helper()
	body = slicesDeleteEmpty(body)
	id := hc.next
	hc.next += 2
	hc.hbuf.Reset()
	for _, f := range fields {
		hc.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	hc.c.SetDeadline(time.Now().Add(waitTimeout))
	if err := hc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hc.hbuf.Bytes(), EndHeaders: true, EndStream: len(body) == 0}); err != nil {
		t.Fatal(err)
	}
	for i, piece := range body {
		if err := hc.fr.WriteData(id, i == len(body)-1, []byte(piece)); err != nil {
			t.Fatal(err)
		}
	}
	return hc.read(t, id)
}

func slicesDeleteEmpty(pieces []string) []string {
	var out []string
	for _, p := range pieces {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// read reads frames until stream id's answer is complete.
func (hc *h2Client) read(t *testing.T, id uint32) h2Answer {
	t.Helper()
	a := h2Answer{header: http.Header{}}
	var b strings.Builder
	for {
		f, err := hc.fr.ReadFrame()
		if err != nil {
			t.Fatalf("stream %d: read frame: %v", id, err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				hc.fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				hc.fr.WritePing(true, f.Data)
			}
		case *http2.GoAwayFrame:
			t.Fatalf("stream %d: GOAWAY %v", id, f.ErrCode)
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				a.reset = true
				return a
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID != id {
				continue
			}
			if s := f.PseudoValue("status"); s != "" {
				a.status, _ = strconv.Atoi(s)
			}
			if a.status >= 200 {
				for _, hf := range f.RegularFields() {
					a.header.Add(hf.Name, hf.Value)
				}
			}
			if f.StreamEnded() && a.status >= 200 {
				a.body = b.String()
				return a
			}
		case *http2.DataFrame:
			if f.StreamID != id {
				continue
			}
			b.Write(f.Data())
			if n := len(f.Data()); n > 0 {
				hc.fr.WriteWindowUpdate(0, uint32(n))
				hc.fr.WriteWindowUpdate(id, uint32(n))
			}
			if f.StreamEnded() {
				a.body = b.String()
				return a
			}
		}
	}
}

// TestDesyncHTTP2 sends malformed HTTP/2 requests, which must never become
// upstream request lines that a strict reader reads otherwise.
func TestDesyncHTTP2(t *testing.T) {
	ts, up := startDesync(t)
	set := func(f [][2]string, name, value string) [][2]string {
		out := append([][2]string(nil), f...)
		for i := range out {
			if out[i][0] == name {
				out[i][1] = value
				return out
			}
		}
		return append(out, [2]string{name, value})
	}
	for _, c := range []struct {
		name   string
		fields func(seq string) [][2]string
		body   string
		status int // 0: refused (400, or the stream reset)
	}{
		{"method with a space", func(s string) [][2]string {
			return set(h2Fields("GET", "/k/first", s, -1), ":method", "GET /k/smuggled")
		}, "", 0},
		{"path with a space", func(s string) [][2]string { return h2Fields("GET", "/k/first?a b HTTP/1.0", s, -1) }, "", 0},
		{"path with a control character", func(s string) [][2]string { return h2Fields("GET", "/k/\x01", s, -1) }, "", 0},
		{"path with a fragment", func(s string) [][2]string { return h2Fields("GET", "/k#frag", s, -1) }, "", 0},
		{"header value with CRLF", func(s string) [][2]string {
			return append(h2Fields("GET", "/k", s, -1), [2]string{"x-a", "1\r\nX-Seq: hidden"})
		}, "", 0},
		{"transfer-encoding", func(s string) [][2]string {
			return append(h2Fields("POST", "/k", s, -1), [2]string{"transfer-encoding", "chunked"})
		}, "0\r\n\r\n", 0},
		{"content-length larger than the body", func(s string) [][2]string { return h2Fields("POST", "/k", s, 40) }, "short", 0},
		{"authority the certificate does not cover", func(s string) [][2]string { return set(h2Fields("GET", "/k", s, -1), ":authority", otherHost) }, "", 421},
	} {
		t.Run(c.name, func(t *testing.T) {
			hc := dialH2(t, ts)
			seq := unregistered()
			a := hc.do(t, c.fields(seq), c.body)
			notOthers(t, a.resp(), a.body, seq)
			switch {
			case c.status != 0 && a.status != c.status:
				t.Fatalf("status %d, want %d", a.status, c.status)
			case c.status == 0 && !a.reset && a.status != 400:
				t.Fatalf("status %d, want 400 or a reset stream", a.status)
			}
			if up.reached(seq) {
				t.Fatal("the request reached the upstream")
			}
			hc.c.Close()
			freshClientsServed(t, ts, up)
		})
	}
	// coalescing: another name of the certificate, on the same connection
	hc := dialH2(t, ts)
	seq := up.register("GET", "/coalesced", "")
	f := h2Fields("GET", "/coalesced", seq, -1)
	f[2][1] = "b.example.com"
	a := hc.do(t, f, "")
	checkOwn(t, a.resp(), a.body, "GET", seq)
	// a body split over several DATA frames
	seq = up.register("POST", "/frames", "0123456789")
	a = hc.do(t, h2Fields("POST", "/frames", seq, 10), "0123", "456", "789")
	checkOwn(t, a.resp(), a.body, "POST", seq)
}
