package h1

import (
	"bytes"
	"errors"
)

// This file parses HTTP/1.1 request heads for proxy's fast path.
// The request parser accepts a strict subset of what net/http accepts:
// anything it does not take (a request line or header it finds odd, a body
// framed other than by one plain Content-Length, Expect, Upgrade, HTTP/1.0,
// absolute-form targets…) is handed to net/http with the framing tracker in
// front, which answers it as it always has. So the fast path adds no way of
// reading a request that net/http would read differently.

// field is one header line of a parsed head; name and value are slices of
// the head's bytes, the value without surrounding whitespace.
type Field struct {
	Name, Value []byte
	Kind        int // HeaderKind(Name)
}

// maxFastFields is the most header lines a request on the fast path has;
// more go to net/http.
const maxFastFields = 64

// reqHead is a request head parsed by parse. Its slices point into the
// bytes it was parsed from, which must not change while it is used.
type RequestHead struct {
	Method, URI, Host []byte
	Fields            []Field
	ContentLength     int64 // -1: no body
	Close             bool  // Connection: close
	TETrailers        bool  // TE: trailers, which is passed on
	// Dropped are the header names listed in Connection (hop-by-hop).
	Dropped [][]byte
	XFF     int // X-Forwarded-For lines, for a trusted peer's chain
}

// headLen returns the length of the head at the start of b, through the
// blank line that ends it, or 0 when b does not hold all of it yet. odd
// reports a line ending in a bare LF, or a blank line before the request
// line: net/http reads those, the fast path does not.
func HeadLen(b []byte) (n int, odd bool) {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return 0, false
		}
		j += i
		if j == 0 || b[j-1] != '\r' || j == 1 {
			return 0, true
		}
		if j >= 3 && b[j-2] == '\n' && b[j-3] == '\r' {
			return j + 1, false
		}
		i = j + 1
	}
}

// cutLine splits b after its first CRLF (headLen checked they all are).
func cutLine(b []byte) (line, rest []byte) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return b, nil
	}
	return b[:i-1], b[i+1:]
}

// parse reads head b (as measured by headLen) and reports whether the fast
// path may serve it.
func (h *RequestHead) Parse(b []byte) bool {
	h.Method, h.URI, h.Host = nil, nil, nil
	h.Fields, h.Dropped = h.Fields[:0], h.Dropped[:0]
	h.ContentLength, h.Close, h.TETrailers, h.XFF = -1, false, false, 0

	line, rest := cutLine(b)
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 {
		return false
	}
	h.Method, line = line[:sp], line[sp+1:]
	if sp = bytes.IndexByte(line, ' '); sp <= 0 {
		return false
	}
	h.URI = line[:sp]
	if string(line[sp+1:]) != "HTTP/1.1" || !IsToken(h.Method) || !originForm(h.URI) {
		return false
	}
	switch string(h.Method) {
	case "CONNECT", "PRI":
		return false
	}
	for {
		line, rest = cutLine(rest)
		if len(line) == 0 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || len(h.Fields) == maxFastFields {
			return false
		}
		// a token name rules out obs-fold (a leading space) and space
		// before the colon
		name, value := line[:colon], trimSP(line[colon+1:])
		if !IsToken(name) || !ValidFieldValue(value) {
			return false
		}
		kind := HeaderKind(name)
		switch kind {
		case KindHost:
			if h.Host != nil || !hostValue(value) {
				return false
			}
			h.Host = value
		case KindContentLength:
			n, ok := digits(value)
			if h.ContentLength >= 0 || !ok {
				return false
			}
			h.ContentLength = n
		case KindTransferEncoding, KindUpgrade, KindExpect:
			return false
		case KindConnection:
			if !h.connection(value) {
				return false
			}
		case KindTE:
			if hasToken(value, "trailers") {
				h.TETrailers = true
			}
		case KindXForwardedFor:
			h.XFF++
		}
		h.Fields = append(h.Fields, Field{name, value, kind})
	}
	return h.Host != nil
}

// connection notes the options of a Connection header: close, and the
// names of other hop-by-hop headers. An upgrade goes to net/http.
func (h *RequestHead) connection(v []byte) bool {
	for len(v) > 0 {
		var tok []byte
		tok, v = CutItem(v)
		switch {
		case len(tok) == 0 || foldEq(tok, "keep-alive"):
		case foldEq(tok, "close"):
			h.Close = true
		case foldEq(tok, "upgrade"):
			return false
		default:
			h.Dropped = append(h.Dropped, tok)
		}
	}
	return true
}

// cutItem splits the first item off a comma-separated list, without the
// spaces around it.
func CutItem(v []byte) (item, rest []byte) {
	if i := bytes.IndexByte(v, ','); i >= 0 {
		return trimSP(v[:i]), v[i+1:]
	}
	return trimSP(v), nil
}

// Header names the fast path looks at.
const (
	KindOther = iota
	KindHost
	KindContentLength
	KindTransferEncoding
	KindUpgrade
	KindExpect
	KindConnection
	KindTE
	KindXForwardedFor
	KindXForwardedHost
	KindXForwardedProto
	KindForwarded
	KindHopByHop // Keep-Alive, Proxy-Connection, Proxy-Authorization, Proxy-Authenticate
	KindTrailer
	KindXRequestID
)

// headerKind classifies a header name, case-insensitively.
func HeaderKind(name []byte) int {
	switch len(name) {
	case 2:
		if foldEq(name, "te") {
			return KindTE
		}
	case 4:
		if foldEq(name, "host") {
			return KindHost
		}
	case 6:
		if foldEq(name, "expect") {
			return KindExpect
		}
	case 7:
		switch {
		case foldEq(name, "upgrade"):
			return KindUpgrade
		case foldEq(name, "trailer"):
			return KindTrailer
		}
	case 9:
		if foldEq(name, "forwarded") {
			return KindForwarded
		}
	case 10:
		switch {
		case foldEq(name, "connection"):
			return KindConnection
		case foldEq(name, "keep-alive"):
			return KindHopByHop
		}
	case 12:
		if foldEq(name, "x-request-id") {
			return KindXRequestID
		}
	case 14:
		if foldEq(name, "content-length") {
			return KindContentLength
		}
	case 15:
		if foldEq(name, "x-forwarded-for") {
			return KindXForwardedFor
		}
	case 16:
		switch {
		case foldEq(name, "x-forwarded-host"):
			return KindXForwardedHost
		case foldEq(name, "proxy-connection"):
			return KindHopByHop
		}
	case 17:
		switch {
		case foldEq(name, "transfer-encoding"):
			return KindTransferEncoding
		case foldEq(name, "x-forwarded-proto"):
			return KindXForwardedProto
		}
	case 18:
		if foldEq(name, "proxy-authenticate") {
			return KindHopByHop
		}
	case 19:
		if foldEq(name, "proxy-authorization") {
			return KindHopByHop
		}
	}
	return KindOther
}

// trimSP removes spaces and tabs around a header value (net/http's
// framing tracker's trimOWS also drops CRs, which here are an error).
func trimSP(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// foldEq reports whether b equals lower (lower-case ASCII), ignoring case.
func foldEq(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// foldEqBytes is foldEq for two header names of any case.
func foldEqBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// hasToken reports whether the comma-separated list v holds tok (lower
// case), ignoring case and parameters.
func hasToken(v []byte, tok string) bool {
	for len(v) > 0 {
		var t []byte
		t, v = CutItem(v)
		if i := bytes.IndexByte(t, ';'); i >= 0 {
			t = trimSP(t[:i])
		}
		if foldEq(t, tok) {
			return true
		}
	}
	return false
}

// tokenChars marks the bytes of an RFC 9110 token.
var tokenChars = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func IsToken[T string | []byte](b T) bool {
	if len(b) == 0 {
		return false
	}
	for i := 0; i < len(b); i++ {
		if !tokenChars[b[i]] {
			return false
		}
	}
	return true
}

// fieldValue reports whether v has no control characters but tab.
func ValidFieldValue[T string | []byte](v T) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// requestTarget reports whether a request target (of a request line
// about to be written upstream, or of a request received over HTTP/2,
// whose :path no request line checked) is only visible ASCII without a
// fragment: a space would end the target early and let the rest be read
// as another request line's parts by the upstream.
func ValidTarget[T string | []byte](u T) bool {
	if len(u) == 0 {
		return false
	}
	for i := 0; i < len(u); i++ {
		if c := u[i]; c <= ' ' || c >= 0x7f || c == '#' {
			return false
		}
	}
	return true
}

// originForm reports whether a request target is an absolute path with an
// optional query, of visible ASCII only (no fragment).
func originForm(u []byte) bool {
	return len(u) > 0 && u[0] == '/' && ValidTarget(u)
}

// hostValue reports whether a Host value is a plain name, IPv4 address or
// bracketed IPv6 literal with an optional port.
func hostValue(v []byte) bool {
	if len(v) == 0 {
		return false
	}
	for _, c := range v {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '-', c == ':', c == '[', c == ']', c == '_':
		default:
			return false
		}
	}
	return true
}

// digits parses a Content-Length: decimal digits only, at most 18.
func digits(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// idempotent reports whether a request to method may be sent twice.
func Idempotent(method []byte) bool {
	switch string(method) {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		return true
	}
	return false
}

// appendInt appends n in decimal.
func AppendInt(b []byte, n int64) []byte {
	if n == 0 {
		return append(b, '0')
	}
	var d [20]byte
	i := len(d)
	for ; n > 0; n /= 10 {
		i--
		d[i] = byte('0' + n%10)
	}
	return append(b, d[i:]...)
}

// appendHex appends n in lower-case hex, for chunk sizes.
func AppendHex(b []byte, n int64) []byte {
	const hexDigits = "0123456789abcdef"
	if n == 0 {
		return append(b, '0')
	}
	var d [16]byte
	i := len(d)
	for ; n > 0; n >>= 4 {
		i--
		d[i] = hexDigits[n&15]
	}
	return append(b, d[i:]...)
}

// ErrClientBody marks a request body the client did not send whole.
var ErrClientBody = errors.New("client request body")
