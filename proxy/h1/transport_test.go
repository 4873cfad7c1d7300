package h1

import (
	"bufio"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// TestResponseHeader: the http.Header built from a response head has what
// net/http's own reader makes of the same head (names canonical, repeated
// fields in order, Transfer-Encoding left out, Content-Length left out of a
// chunked answer), keeps nothing of the read buffer, and its values, which
// share one array, do not overwrite each other when a caller appends.
func TestResponseHeader(t *testing.T) {
	heads := []string{
		"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ncontent-length: 5\r\nX-A: 1\r\nx-a: 2\r\nSET-COOKIE: a=b\r\nX-Empty:\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\nVary: Accept\r\nVary: Origin\r\n\r\n",
		"HTTP/1.1 204 No Content\r\n\r\n",
	}
	for _, head := range heads {
		raw := []byte(head)
		var r ResponseHead
		if err := r.Parse(raw, false); err != nil {
			t.Fatalf("Parse(%q): %v", head, err)
		}
		got := r.header(r.Chunked)
		want := netHTTPHeader(t, head)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("head %q:\n got  %v\n want %v", head, got, want)
		}
		for i := range raw {
			raw[i] = '#' // the read buffer is reused for the next answer
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("head %q: the header changed with the read buffer: %v", head, got)
		}
		for name := range got {
			got[name] = append(got[name], "appended")
		}
		for name, values := range got {
			if !reflect.DeepEqual(values[:len(values)-1], want[name]) {
				t.Errorf("head %q: %s is %q after appending to every value list", head, name, values)
			}
		}
	}
}

// netHTTPHeader is what http.ReadResponse makes of head's fields.
func netHTTPHeader(t *testing.T, head string) http.Header {
	t.Helper()
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(head)), nil)
	if err != nil {
		t.Fatalf("http.ReadResponse(%q): %v", head, err)
	}
	h := resp.Header
	if len(resp.TransferEncoding) > 0 {
		h.Del("Content-Length") // net/http keeps it; a chunked answer's length is not the body's
	}
	return h
}
