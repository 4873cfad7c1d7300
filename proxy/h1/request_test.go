package h1

import (
	"bufio"
	"bytes"
	"net/http"
	"testing"
)

// FuzzRequestHead holds RequestHead.Parse to net/http's: a
// head it takes, net/http reads too, with the same method, target, host,
// body length, connection option and header values. So no request reaches
// an upstream differently framed or addressed by the fast path, which
// uses it.
func FuzzRequestHead(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n",
		"POST /x?y=1 HTTP/1.1\r\nHost: a.example:8443\r\nContent-Length: 5\r\nConnection: close, X-A\r\nX-A: 1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: \t v \t\r\nTE: trailers, deflate\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
		"GET /\x80 HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: [::1]:80\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		n, odd := HeadLen(raw)
		if odd || n == 0 {
			return
		}
		var h RequestHead
		if !h.Parse(raw[:n]) {
			return
		}
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw[:n])))
		if err != nil {
			t.Fatalf("the fast path takes what net/http refuses (%v): %q", err, raw[:n])
		}
		wantLength := h.ContentLength
		if wantLength < 0 {
			wantLength = 0
		}
		switch {
		case req.Method != string(h.Method), req.RequestURI != string(h.URI), req.Host != string(h.Host):
			t.Fatalf("%q: net/http reads %s %s host %s, the fast path %s %s host %s", raw[:n], req.Method, req.RequestURI, req.Host, h.Method, h.URI, h.Host)
		case req.ContentLength != wantLength || len(req.TransferEncoding) != 0:
			t.Fatalf("%q: net/http reads length %d %v, the fast path %d", raw[:n], req.ContentLength, req.TransferEncoding, h.ContentLength)
		case req.Close != h.Close:
			t.Fatalf("%q: net/http reads close %v, the fast path %v", raw[:n], req.Close, h.Close)
		}
		for _, fl := range h.Fields {
			if fl.Kind == KindHost {
				continue
			}
			found := false
			for _, v := range req.Header.Values(string(fl.Name)) {
				found = found || v == string(fl.Value)
			}
			if !found {
				t.Fatalf("%q: header %s: %q, net/http has %q", raw[:n], fl.Name, fl.Value, req.Header.Values(string(fl.Name)))
			}
		}
	})
}
