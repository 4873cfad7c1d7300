package h1

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// goRequests parses stream as net/http does, request after request, each
// body read to its end, until the first error: the requests' lines.
func goRequests(stream string) (lines [][3]string, err error) {
	br := bufio.NewReader(strings.NewReader(stream))
	for {
		if _, err := br.Peek(1); err == io.EOF {
			return lines, nil
		}
		req, err := http.ReadRequest(br)
		if err != nil {
			return lines, err
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return lines, err
		}
		lines = append(lines, [3]string{req.Method, req.RequestURI, req.Proto})
	}
}

// feedInPieces feeds stream to a new tracker in pieces of size n (n <= 0:
// all at once).
func feedInPieces(stream string, n int) *Framing {
	f := NewFraming(1 << 20)
	b := []byte(stream)
	if n <= 0 {
		f.Feed(b)
		return f
	}
	for len(b) > 0 {
		k := min(n, len(b))
		f.Feed(b[:k])
		b = b[k:]
	}
	return f
}

// A body that looks like requests with ambiguous framing: the tracker must
// skip it by its framing, not read it as heads.
const decoy = "GET /decoy HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"

// chunked encodes body in chunks of 7 bytes, with a chunk extension, up to
// the last chunk (the trailer and final CRLF are the caller's).
func chunked(body string) string {
	var b strings.Builder
	for len(body) > 0 {
		n := min(7, len(body))
		fmt.Fprintf(&b, "%X;ext=1\r\n%s\r\n", n, body[:n])
		body = body[n:]
	}
	b.WriteString("0\r\n")
	return b.String()
}

func TestFramingFollowsNetHTTP(t *testing.T) {
	tests := []struct {
		name   string
		stream string
		want   []string // per request: "" or the ambiguity
	}{
		{"get", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", []string{""}},
		{"pipelined gets, LF only", "GET /1 HTTP/1.1\nHost: a\n\nGET /2?q=1 HTTP/1.0\r\nHost: a\r\n\r\n", []string{"", ""}},
		{"content-length body with decoy, then get",
			"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: " + strconv.Itoa(len(decoy)) + "\r\n\r\n" + decoy + "GET /next HTTP/1.1\r\nHost: a\r\n\r\n",
			[]string{"", ""}},
		{"chunked body with decoy and trailer, then get",
			"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(decoy) + "X-Trailer: 1\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n",
			[]string{"", ""}},
		{"chunked body without trailer, then get",
			"PUT /c HTTP/1.1\r\nHost: a\r\ntransfer-encoding: Chunked\r\n\r\n" + chunked("hello, world") + "\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n",
			[]string{"", ""}},
		{"content-length and chunked",
			"POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(decoy) + "\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n",
			[]string{"both Content-Length and Transfer-Encoding", ""}},
		{"chunked folded onto the next line, content-length after",
			"POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\nCONTENT-LENGTH: 4\r\n\r\n" + chunked("abcd") + "\r\n",
			[]string{"both Content-Length and Transfer-Encoding"}},
		{"transfer-encoding in HTTP/1.0",
			"POST /old HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhelloGET /next HTTP/1.1\r\nHost: a\r\n\r\n",
			[]string{"Transfer-Encoding in an HTTP/1.0 request", ""}},
		{"duplicate equal content-length",
			"POST /d HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabcGET /next HTTP/1.1\r\nHost: a\r\n\r\n",
			[]string{"", ""}},
		{"long header values and names",
			"GET /l HTTP/1.1\r\nHost: a\r\nX-Long: " + strings.Repeat("v", 5000) + "\r\nX-" + strings.Repeat("n", 300) + ": 1\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n",
			[]string{"", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lines, err := goRequests(tt.stream)
			if err != nil {
				t.Fatalf("net/http refuses the test stream: %v", err)
			}
			if len(lines) != len(tt.want) {
				t.Fatalf("net/http reads %d requests, the test expects %d", len(lines), len(tt.want))
			}
			for _, piece := range []int{0, 1, 2, 3, 7, 64} {
				f := feedInPieces(tt.stream, piece)
				for i, l := range lines {
					head, ok := f.Claim(l[0], l[1], l[2])
					if !ok {
						t.Fatalf("pieces of %d: request %d (%s %s) not seen by the tracker", piece, i+1, l[0], l[1])
					}
					if got := head.Ambiguity(); got != tt.want[i] {
						t.Errorf("pieces of %d: request %d (%s %s): ambiguity %q, want %q", piece, i+1, l[0], l[1], got, tt.want[i])
					}
				}
				if len(f.heads) != 0 {
					t.Errorf("pieces of %d: the tracker saw %d more heads than net/http", piece, len(f.heads))
				}
			}
		})
	}
}

// FuzzFraming: for any byte stream, the heads the tracker notes are the
// requests net/http reads from it, in order, as far as net/http gets; the
// tracker may give up (it then answers "unknown") but never mistakes one
// request for another.
func FuzzFraming(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x\r\nhello\r\n0\r\nT: 1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
		"POST /s HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
		"POST /old HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\nhiGET / HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\r\nA: 1\r\n  folded\r\nTransfer-Encoding:\r\n\tchunked\r\n\r\n0\r\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, stream string) {
		lines, _ := goRequests(stream)
		for _, piece := range []int{0, 1, 5} {
			fr := feedInPieces(stream, piece)
			for i, l := range lines {
				if fr.st == stStopped && len(fr.heads) == 0 {
					break // gave up: unknown from here
				}
				if _, ok := fr.Claim(l[0], l[1], l[2]); !ok {
					if fr.st == stStopped {
						break
					}
					t.Fatalf("pieces of %d: request %d (%q %q %q) not seen by the tracker", piece, i+1, l[0], l[1], l[2])
				}
			}
		}
	})
}

// TestFramingGivesUp: on bytes that are no request (an upgraded
// connection, an overlong head) the tracker stops, keeps nothing, and
// answers "unknown", leaving the request to net/http's own handling.
func TestFramingGivesUp(t *testing.T) {
	for name, stream := range map[string]string{
		"overlong request line": "GET /" + strings.Repeat("x", 3000),
		"overlong header":       "GET / HTTP/1.1\r\nX-A: " + strings.Repeat("x", 3000),
		"header without colon":  "GET / HTTP/1.1\r\nno colon here\r\n\r\n",
		"not HTTP/1":            "GET / HTTP/2.0\r\n\r\n",
		"bad content-length":    "POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n",
		"gzip transfer coding":  "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
	} {
		f := NewFraming(2048)
		f.Feed([]byte(stream))
		if f.st != stStopped || f.val != nil {
			t.Errorf("%s: state %d after %d bytes, want stopped", name, f.st, len(stream))
		}
		f.Feed([]byte("GET /later HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"))
		if _, ok := f.Claim("GET", "/later", "HTTP/1.1"); ok {
			t.Errorf("%s: the tracker still notes heads after giving up", name)
		}
	}
}
