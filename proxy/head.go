package proxy

import (
	"bytes"
)

// This file parses HTTP/1.1 message heads for the fast path (fastpath.go).
// The request parser accepts a strict subset of what net/http accepts:
// anything it does not take (a request line or header it finds odd, a body
// framed other than by one plain Content-Length, Expect, Upgrade, HTTP/1.0,
// absolute-form targets…) is handed to net/http with the framing tracker in
// front, which answers it as it always has. So the fast path adds no way of
// reading a request that net/http would read differently.

// field is one header line of a parsed head; name and value are slices of
// the head's bytes, the value without surrounding whitespace.
type field struct {
	name, value []byte
	kind        int // headerKind(name)
}

// maxFastFields is the most header lines a request on the fast path has;
// more go to net/http.
const maxFastFields = 64

// reqHead is a request head parsed by parse. Its slices point into the
// bytes it was parsed from, which must not change while it is used.
type reqHead struct {
	method, uri, host []byte
	fields            []field
	contentLength     int64 // -1: no body
	close             bool  // Connection: close
	teTrailers        bool  // TE: trailers, which is passed on
	// dropped are the header names listed in Connection (hop-by-hop).
	dropped [][]byte
	xff     int // X-Forwarded-For lines, for a trusted peer's chain
}

// headLen returns the length of the head at the start of b, through the
// blank line that ends it, or 0 when b does not hold all of it yet. odd
// reports a line ending in a bare LF, or a blank line before the request
// line: net/http reads those, the fast path does not.
func headLen(b []byte) (n int, odd bool) {
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
func (h *reqHead) parse(b []byte) bool {
	h.method, h.uri, h.host = nil, nil, nil
	h.fields, h.dropped = h.fields[:0], h.dropped[:0]
	h.contentLength, h.close, h.teTrailers, h.xff = -1, false, false, 0

	line, rest := cutLine(b)
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 {
		return false
	}
	h.method, line = line[:sp], line[sp+1:]
	if sp = bytes.IndexByte(line, ' '); sp <= 0 {
		return false
	}
	h.uri = line[:sp]
	if string(line[sp+1:]) != "HTTP/1.1" || !isToken(h.method) || !originForm(h.uri) {
		return false
	}
	switch string(h.method) {
	case "CONNECT", "PRI":
		return false
	}
	for {
		line, rest = cutLine(rest)
		if len(line) == 0 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || len(h.fields) == maxFastFields {
			return false
		}
		// a token name rules out obs-fold (a leading space) and space
		// before the colon
		name, value := line[:colon], trimSP(line[colon+1:])
		if !isToken(name) || !fieldValue(value) {
			return false
		}
		kind := headerKind(name)
		switch kind {
		case hkHost:
			if h.host != nil || !hostValue(value) {
				return false
			}
			h.host = value
		case hkContentLength:
			n, ok := digits(value)
			if h.contentLength >= 0 || !ok {
				return false
			}
			h.contentLength = n
		case hkTransferEncoding, hkUpgrade, hkExpect:
			return false
		case hkConnection:
			if !h.connection(value) {
				return false
			}
		case hkTE:
			if hasToken(value, "trailers") {
				h.teTrailers = true
			}
		case hkXForwardedFor:
			h.xff++
		}
		h.fields = append(h.fields, field{name, value, kind})
	}
	return h.host != nil
}

// connection notes the options of a Connection header: close, and the
// names of other hop-by-hop headers. An upgrade goes to net/http.
func (h *reqHead) connection(v []byte) bool {
	for len(v) > 0 {
		var tok []byte
		tok, v = cutItem(v)
		switch {
		case len(tok) == 0 || foldEq(tok, "keep-alive"):
		case foldEq(tok, "close"):
			h.close = true
		case foldEq(tok, "upgrade"):
			return false
		default:
			h.dropped = append(h.dropped, tok)
		}
	}
	return true
}

// cutItem splits the first item off a comma-separated list, without the
// spaces around it.
func cutItem(v []byte) (item, rest []byte) {
	if i := bytes.IndexByte(v, ','); i >= 0 {
		return trimSP(v[:i]), v[i+1:]
	}
	return trimSP(v), nil
}

// Header names the fast path looks at.
const (
	hkOther = iota
	hkHost
	hkContentLength
	hkTransferEncoding
	hkUpgrade
	hkExpect
	hkConnection
	hkTE
	hkXForwardedFor
	hkXForwardedHost
	hkXForwardedProto
	hkForwarded
	hkHopByHop // Keep-Alive, Proxy-Connection, Proxy-Authorization, Proxy-Authenticate
	hkTrailer
)

// headerKind classifies a header name, case-insensitively.
func headerKind(name []byte) int {
	switch len(name) {
	case 2:
		if foldEq(name, "te") {
			return hkTE
		}
	case 4:
		if foldEq(name, "host") {
			return hkHost
		}
	case 6:
		if foldEq(name, "expect") {
			return hkExpect
		}
	case 7:
		switch {
		case foldEq(name, "upgrade"):
			return hkUpgrade
		case foldEq(name, "trailer"):
			return hkTrailer
		}
	case 9:
		if foldEq(name, "forwarded") {
			return hkForwarded
		}
	case 10:
		switch {
		case foldEq(name, "connection"):
			return hkConnection
		case foldEq(name, "keep-alive"):
			return hkHopByHop
		}
	case 14:
		if foldEq(name, "content-length") {
			return hkContentLength
		}
	case 15:
		if foldEq(name, "x-forwarded-for") {
			return hkXForwardedFor
		}
	case 16:
		switch {
		case foldEq(name, "x-forwarded-host"):
			return hkXForwardedHost
		case foldEq(name, "proxy-connection"):
			return hkHopByHop
		}
	case 17:
		switch {
		case foldEq(name, "transfer-encoding"):
			return hkTransferEncoding
		case foldEq(name, "x-forwarded-proto"):
			return hkXForwardedProto
		}
	case 18:
		if foldEq(name, "proxy-authenticate") {
			return hkHopByHop
		}
	case 19:
		if foldEq(name, "proxy-authorization") {
			return hkHopByHop
		}
	}
	return hkOther
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
		t, v = cutItem(v)
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

func isToken[T string | []byte](b T) bool {
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
func fieldValue[T string | []byte](v T) bool {
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
func requestTarget[T string | []byte](u T) bool {
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
	return len(u) > 0 && u[0] == '/' && requestTarget(u)
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
