package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzProxyDifferential sends arbitrary client bytes through the whole
// proxy (the HTTP/1.1 fast path and what it hands to net/http over TLS,
// cut into records; or plain :80) and holds what comes out against the
// strict reader of strict_test.go:
//
//   - every request the upstream reads must be one the strict reader read
//     from the client's bytes (method, target, Host, body), in the
//     client's order; Portico may answer some itself (404, 421, 400) and
//     pass none of those on;
//   - after bytes whose framing the strict reader refuses (Content-Length
//     beside chunked, a bad length or chunk size…) nothing more may reach
//     the upstream;
//   - every byte Portico sends upstream must pass the strict reader;
//   - each answer the client gets from the upstream stands at the place
//     of its own request.
//
// Where the strict reader refuses bytes for their syntax only (a bare LF,
// obs-fold, HTTP/1.0), Portico may read them as net/http does; what it
// then sends upstream is still held to the strict reader.
func FuzzProxyDifferential(f *testing.F) {
	for _, seed := range []struct {
		raw   string
		cuts  uint64
		plain bool
	}{
		{reqText("GET", "/", "a", ""), 1, false},
		{reqText("POST", "/p", "a", "HEAD") + reqText("GET", "/next", "b", ""), 0x3f, false},
		{reqText("POST", "/p", "a", "body") + reqText("HEAD", "/h", "b", "") + reqText("GET", "/g?x=1", "c", ""), 7, true},
		{"POST /c HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\n\r\n" + reqText("GET", "/after", "b", ""), 5, false},
		{"POST /s HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app.example.com\r\n\r\n", 3, false},
		{"POST /e HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked\r\n\r\n3;\x00\r\nabc\r\n0\r\n\r\n" + reqText("GET", "/hidden", "b", ""), 9, true},
		{"GET /lf HTTP/1.1\nHost: app.example.com\n\n" + reqText("GET", "/next", "b", ""), 2, false},
		{"GET http://app.example.com/abs HTTP/1.1\r\nHost: app.example.com\r\n\r\n", 11, false},
		{"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n" + reqText("GET", "/own", "b", ""), 13, false},
		{"GET / HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi", 4, true},
	} {
		f.Add([]byte(seed.raw), seed.cuts, seed.plain)
	}
	ts, _ := startDesync(f)
	f.Fuzz(func(t *testing.T, data []byte, cuts uint64, plain bool) {
		if len(data) > 8<<10 {
			return
		}
		// an upstream of its own for each input: a request of the last
		// one that Portico was still sending cannot be taken for this
		// one's
		up := newDesyncUpstream(t)
		up.recording = true
		if err := ts.srv.Swap(desyncConfig(up)); err != nil {
			t.Fatal(err)
		}
		ref, refErr := strictRequests(data)
		answers := sendThrough(t, ts, data, cuts, plain, ref, refErr)
		up.mu.Lock()
		got, problems := up.log, up.problems
		up.log, up.problems = nil, nil
		up.mu.Unlock()
		for _, p := range problems {
			t.Error(p)
		}
		at := matchRequests(t, ref, refErr, got)
		for p, a := range answers {
			k, isUp := strings.CutPrefix(a, "n")
			if !isUp {
				continue // Portico's own answer
			}
			i, err := strconv.Atoi(k)
			if err != nil || i >= len(got) {
				t.Fatalf("answer %d carries %q, which is no request the upstream got", p, a)
			}
			if j, ok := at[i]; ok && j != p {
				t.Fatalf("the answer to request %d reached the client in place %d", j, p)
			}
		}
	})
}

// strictRequests reads the requests of a client's bytes with the strict
// reader, up to the first it refuses; refErr is io.EOF when all were read.
func strictRequests(data []byte) ([]*strictRequest, error) {
	br := bufio.NewReader(bytes.NewReader(data))
	var reqs []*strictRequest
	for {
		r, err := readStrictRequest(br)
		if err != nil {
			return reqs, err
		}
		reqs = append(reqs, r)
	}
}

// matchRequests checks that the upstream got a subsequence of ref, in
// order, and returns for each request it got the index of its match.
func matchRequests(t *testing.T, ref []*strictRequest, refErr error, got []*strictRequest) map[int]int {
	t.Helper()
	at := map[int]int{}
	j := 0
	for k, u := range got {
		for j < len(ref) && !sameRequest(ref[j], u) {
			j++
		}
		if j < len(ref) {
			at[k] = j
			j++
			continue
		}
		switch {
		case refErr == io.EOF:
			t.Fatalf("the upstream got %s %s (body %q), which the client did not send as a request", u.method, u.target, u.body)
		case errors.Is(refErr, errStrictFraming):
			t.Fatalf("after bytes whose framing a strict reader refuses (%v), the upstream got %s %s (body %q)", refErr, u.method, u.target, u.body)
		}
		break // bytes refused for their syntax only: Portico may read on
	}
	return at
}

// sameRequest compares a request the client sent with one the upstream
// got. An absolute-form target reaches the upstream in origin form, and
// net/http re-escapes a path character that RFC 3986 wants escaped
// (a '"' goes as %22): the same resource, in canonical form.
func sameRequest(sent, got *strictRequest) bool {
	target, host := sent.target, strings.Join(sent.get("Host"), ",")
	canonical := target
	if u, err := url.ParseRequestURI(target); err == nil {
		canonical = u.RequestURI()
		if u.IsAbs() {
			target, host = canonical, u.Host
		}
	}
	return sent.method == got.method && (target == got.target || canonical == got.target) &&
		string(sent.body) == string(got.body) && strings.EqualFold(host, strings.Join(got.get("Host"), ","))
}

// sendThrough writes data to the proxy in segments (TLS records, unless
// plain) and returns the X-Seq of each final answer, in order ("" for
// Portico's own). When the strict reader read all of data, the
// connection is read until every request is answered or Portico closes
// it; otherwise the client half-closes after its bytes and reads to the
// end.
func sendThrough(t *testing.T, ts *testServer, data []byte, cuts uint64, plain bool, ref []*strictRequest, refErr error) []string {
	t.Helper()
	d := &net.Dialer{Timeout: waitTimeout}
	var c net.Conn
	var err error
	if plain {
		c, err = d.Dial("tcp", ts.httpAddr)
	} else {
		c, err = tls.DialWithDialer(d, "tcp", ts.https, &tls.Config{ServerName: desyncHost, RootCAs: ts.certs.Pool, NextProtos: []string{"http/1.1"}})
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitTimeout))
	complete := refErr == io.EOF
	wrote := make(chan error, 1)
	go func() {
		rest := data
		for k := 0; len(rest) > 0; k++ {
			n := len(rest)
			if cuts != 0 {
				n = min(n, 1+int(cuts>>(6*(k%10))&63))
			}
			if _, err := c.Write(rest[:n]); err != nil {
				wrote <- err
				return
			}
			rest = rest[n:]
		}
		if !complete {
			closeWrite(c)
		}
		wrote <- nil
	}()
	var answers []string
	br := bufio.NewReader(c)
	for !complete || len(answers) < len(ref) {
		method := "GET"
		if len(answers) < len(ref) {
			method = ref[len(answers)].method
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("after %d answers Portico neither answered nor closed: it read the client's bytes otherwise than a strict reader (%d requests)", len(answers), len(ref))
			}
			break // closed, or an answer this client cannot frame (HTTP/1.0 and such)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if bytes.Contains(body, []byte("INJECTED")) {
			t.Fatalf("answer %d is another's: %q", len(answers), body)
		}
		if resp.StatusCode >= 200 {
			answers = append(answers, resp.Header.Get("X-Seq"))
		}
	}
	c.Close()
	<-wrote
	return answers
}
