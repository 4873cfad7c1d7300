package h1

import (
	"errors"
	"strconv"
	"sync"
)

// net/http accepts two kinds of request whose framing is ambiguous and
// hides them from handlers:
//
//   - Content-Length together with Transfer-Encoding: chunked. net/http
//     reads the body as chunked and deletes Content-Length, as RFC 9112
//     §6.3 allows; but a front proxy that framed the same bytes by
//     Content-Length would see a different request boundary (request
//     smuggling), so Portico refuses it and closes the connection, which
//     the RFC also allows.
//   - Transfer-Encoding in an HTTP/1.0 request. net/http ignores the header
//     and deletes it; RFC 9112 §6.1 says to treat the framing as faulty.
//
// Since the request a handler gets no longer carries these headers, a
// framing tracker follows the HTTP/1.x bytes of each connection as net/http
// reads them (see sniffConn) and notes, for every request head, which
// framing headers it had. It mirrors net/http's framing rules (chunked,
// Content-Length or no body) to know where the next request starts. It is
// at least as lenient as net/http: on anything it does not understand it
// stops and answers "unknown" for the rest of the connection, so the worst a
// gap in it can do is let net/http's own (safe) handling through.

// headInfo is what the tracker noted about one request head.
type HeadInfo struct {
	line   uint64 // FNV-1a hash of the request line, to match it to a request
	hasCL  bool   // a Content-Length header
	hasTE  bool   // a Transfer-Encoding header
	http10 bool   // HTTP/1.0 (net/http ignores Transfer-Encoding then)
}

// ambiguity says why the head's framing is ambiguous, or "".
func (h HeadInfo) Ambiguity() string {
	switch {
	case h.hasTE && h.http10:
		return "Transfer-Encoding in an HTTP/1.0 request"
	case h.hasTE && h.hasCL:
		return "both Content-Length and Transfer-Encoding"
	}
	return ""
}

// maxPendingHeads bounds the heads kept for handlers: a pipelining client
// cannot make the tracker hold more (the oldest are dropped, and answer
// "unknown").
const maxPendingHeads = 16

type parseState uint8

const (
	stHeadStart    parseState = iota // before a request line (CR and LF skipped)
	stReqLine                        // the request line
	stLineStart                      // start of a header line, or of the blank line ending the head
	stLineCR                         // a header line that is so far only "\r"
	stName                           // a header name
	stValue                          // the value of Content-Length or Transfer-Encoding
	stSkipLine                       // the rest of a header line not kept
	stBody                           // a Content-Length body: remain bytes left
	stChunkSize                      // hex digits of a chunk-size line
	stChunkExt                       // the rest of a chunk-size line
	stChunkData                      // chunk data: remain bytes left
	stChunkEnd                       // the CRLF after chunk data: remain bytes left
	stTrailerStart                   // start of a trailer line, or of the blank line ending it
	stTrailerCR                      // a trailer line that is so far only "\r"
	stTrailerLine                    // the rest of a trailer line
	stStopped                        // lost: every later request is "unknown"
)

// header kinds the tracker keeps the value of
const (
	hdrOther = iota
	hdrCL
	hdrTE
)

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
	maxValue  = 64 // longest Content-Length or Transfer-Encoding value kept
	maxChunk  = 4096 + 2
)

// framing tracks the requests on one connection. feed is called with every
// byte read from the client, in order; claim by the handler of each request.
type Framing struct {
	mu    sync.Mutex
	heads []HeadInfo // heads not claimed yet, oldest first

	limit int // longest head (request line and headers) or trailer, in bytes
	st    parseState
	n     int // bytes of the current head, trailer or chunk-size line

	// request line
	hash      uint64
	pendingCR bool   // a '\r' not yet known to be part of the line
	lineLen   int    // bytes in the line (hashed)
	tail      uint64 // its last 8 bytes
	sep       byte   // the byte before them

	// headers
	http10     bool
	sawHeader  bool
	name       [len("transfer-encoding")]byte
	nameLen    int
	kind       int    // kind of the current header
	val        []byte // value of the current header, if kept
	valLong    bool   // it was longer than maxValue
	skipWS     bool   // skip whitespace before a value or continuation
	clCount    int
	clFirst    string
	clDiffer   bool
	teCount    int
	teFirst    string
	remain     uint64 // body, chunk data or chunk end bytes left
	chunkSize  uint64
	chunkDigit int
	extCR      bool // the chunk-size line's last byte was '\r'

	// refusal says why the connection's bytes are refused, once the
	// tracker has seen what net/http would accept but must not pass on
	// (see sniffConn.Read), or "".
	refusal string
}

// errRefusedFraming is what a connection's reads return once its framing
// tracker refused its bytes.
var ErrRefusedFraming = errors.New("refused request framing")

// Refused reports whether the tracker refused the connection's bytes.
func (f *Framing) Refused() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.refusal != ""
}

// refuse stops the tracker and marks the connection's bytes refused.
// net/http ignores chunk extensions whatever they hold (a NUL, a bare CR),
// so a request carrying them would be read here as valid; a peer parsing
// the same bytes strictly may not agree on where the chunk ends.
func (f *Framing) refuse(why string) {
	f.refusal = why
	f.stop()
}

// ctl reports whether b is a control character other than HTAB.
func ctl(b byte) bool { return b < ' ' && b != '\t' || b == 0x7f }

func NewFraming(limit int) *Framing {
	return &Framing{limit: limit, val: make([]byte, 0, maxValue)}
}

// claim returns what the tracker noted about the head of the request whose
// request line is method, uri and proto, and forgets it and every older
// head. false: unknown (the tracker stopped, or never saw it).
func (f *Framing) Claim(method, uri, proto string) (HeadInfo, bool) {
	h := uint64(fnvOffset)
	h = fnvString(h, method)
	h = fnvString(h, " ")
	h = fnvString(h, uri)
	h = fnvString(h, " ")
	h = fnvString(h, proto)
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, head := range f.heads {
		if head.line == h {
			f.heads = f.heads[i+1:]
			return head, true
		}
	}
	f.heads = f.heads[:0]
	return HeadInfo{}, false
}

func fnvString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * fnvPrime
	}
	return h
}

// feed follows the bytes p, read from the client. It returns why the
// connection's bytes are refused, or "" (see refuse).
func (f *Framing) Feed(p []byte) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := 0; i < len(p) && f.st != stStopped; i++ {
		b := p[i]
		switch f.st {
		case stBody, stChunkData:
			k := uint64(len(p) - i)
			if k > f.remain {
				k = f.remain
			}
			f.remain -= k
			i += int(k) - 1
			if f.remain > 0 {
				continue
			}
			if f.st == stBody {
				f.st = stHeadStart
			} else {
				f.st, f.remain = stChunkEnd, 2
			}
			continue
		case stChunkEnd:
			// net/http wants "\r\n" here and fails the body otherwise,
			// which ends the connection: no need to check.
			if f.remain--; f.remain == 0 {
				f.st, f.n, f.chunkSize, f.chunkDigit = stChunkSize, 0, 0, 0
			}
			continue
		}
		f.step(b)
	}
	return f.refusal
}

// step advances the head, chunk-size and trailer states by one byte.
func (f *Framing) step(b byte) {
	switch f.st {
	case stHeadStart:
		if b == '\r' || b == '\n' {
			return
		}
		f.startHead()
	case stChunkSize, stChunkExt, stTrailerStart, stTrailerCR, stTrailerLine:
		f.stepBody(b)
		return
	}
	if f.n++; f.n > f.limit {
		f.stop() // net/http answers 431 and closes
		return
	}
	switch f.st {
	case stReqLine:
		if b == '\n' {
			f.endRequestLine()
			return
		}
		if f.pendingCR {
			f.lineByte('\r')
			f.pendingCR = false
		}
		if b == '\r' {
			f.pendingCR = true
		} else {
			f.lineByte(b)
		}
	case stLineStart:
		switch b {
		case '\n':
			f.endHead()
		case '\r':
			f.st = stLineCR
		case ' ', '\t':
			// obs-fold: net/http joins the line to the previous header
			if !f.sawHeader {
				f.stop()
				return
			}
			if f.kind == hdrOther {
				f.st = stSkipLine
				return
			}
			f.addValue(' ')
			f.st, f.skipWS = stValue, true
		default:
			f.commit()
			f.sawHeader, f.nameLen = true, 0
			f.st = stName
			f.nameByte(b)
		}
	case stLineCR:
		if b != '\n' {
			f.stop()
			return
		}
		f.endHead()
	case stName:
		switch b {
		case ':':
			f.kind = f.nameKind()
			f.val, f.valLong, f.skipWS = f.val[:0], false, true
			if f.kind == hdrOther {
				f.st = stSkipLine
			} else {
				f.st = stValue
			}
		case '\n':
			f.stop() // no colon: net/http refuses the request
		default:
			f.nameByte(b)
		}
	case stValue:
		switch {
		case b == '\n':
			if n := len(f.val); n > 0 && f.val[n-1] == '\r' {
				f.val = f.val[:n-1]
			}
			f.st = stLineStart
		case f.skipWS && (b == ' ' || b == '\t'):
		default:
			f.skipWS = false
			f.addValue(b)
		}
	case stSkipLine:
		if b == '\n' {
			f.st = stLineStart
		}
	}
}

// stepBody advances the chunk-size and trailer states by one byte.
func (f *Framing) stepBody(b byte) {
	if f.n++; f.n > f.limit || (f.n > maxChunk && (f.st == stChunkSize || f.st == stChunkExt)) {
		f.stop() // net/http fails the body, which ends the connection
		return
	}
	switch f.st {
	case stChunkSize:
		if v, ok := hexValue(b); ok {
			if f.chunkDigit++; f.chunkDigit > 16 {
				f.stop()
				return
			}
			f.chunkSize = f.chunkSize<<4 | uint64(v)
			return
		}
		if f.chunkDigit == 0 {
			f.stop()
			return
		}
		if b == '\n' {
			f.endChunkLine()
			return
		}
		f.st = stChunkExt // extension, whitespace, CR
		f.chunkExtByte(b)
	case stChunkExt:
		f.chunkExtByte(b)
	case stTrailerStart:
		switch b {
		case '\n':
			f.st = stHeadStart
		case '\r':
			f.st = stTrailerCR
		default:
			f.st = stTrailerLine
		}
	case stTrailerCR:
		if b != '\n' {
			f.stop()
			return
		}
		f.st = stHeadStart
	case stTrailerLine:
		if b == '\n' {
			f.st = stTrailerStart
		}
	}
}

func hexValue(b byte) (byte, bool) {
	switch {
	case b >= '0' && b <= '9':
		return b - '0', true
	case b >= 'a' && b <= 'f':
		return b - 'a' + 10, true
	case b >= 'A' && b <= 'F':
		return b - 'A' + 10, true
	}
	return 0, false
}

func (f *Framing) endChunkLine() {
	if f.chunkSize == 0 {
		f.st, f.n = stTrailerStart, 0 // the last chunk: a trailer follows
		return
	}
	f.st, f.remain = stChunkData, f.chunkSize
}

// chunkExtByte follows the rest of a chunk-size line after its digits:
// control characters other than HTAB, and a CR not ending the line, are
// refused.
func (f *Framing) chunkExtByte(b byte) {
	switch {
	case b == '\n':
		f.extCR = false
		f.endChunkLine()
	case f.extCR:
		f.refuse("a CR inside a chunk-size line")
	case b == '\r':
		f.extCR = true
	case ctl(b):
		f.refuse("a control character in a chunk extension")
	}
}

func (f *Framing) stop() {
	f.st = stStopped
	f.val = nil
}

func (f *Framing) startHead() {
	f.st, f.n = stReqLine, 0
	f.hash, f.pendingCR, f.lineLen, f.tail, f.sep = fnvOffset, false, 0, 0, 0
	f.sawHeader, f.kind = false, hdrOther
	f.clCount, f.clFirst, f.clDiffer, f.teCount, f.teFirst = 0, "", false, 0, ""
}

func (f *Framing) lineByte(b byte) {
	f.hash = (f.hash ^ uint64(b)) * fnvPrime
	f.lineLen++
	f.sep = byte(f.tail >> 56)
	f.tail = f.tail<<8 | uint64(b)
}

// endRequestLine reads the protocol version off the end of the request
// line: net/http accepts only " HTTP/d.d" there, and serves HTTP/1.x only.
func (f *Framing) endRequestLine() {
	var proto [8]byte
	for i := range proto {
		proto[i] = byte(f.tail >> (8 * (7 - i)))
	}
	if f.lineLen < 9 || f.sep != ' ' || string(proto[:7]) != "HTTP/1." || proto[7] < '0' || proto[7] > '9' {
		f.stop()
		return
	}
	f.http10 = proto[7] == '0'
	f.st = stLineStart
}

func (f *Framing) nameByte(b byte) {
	if f.nameLen < len(f.name) {
		if b >= 'A' && b <= 'Z' {
			b += 'a' - 'A'
		}
		f.name[f.nameLen] = b
	}
	f.nameLen++
}

func (f *Framing) nameKind() int {
	if f.nameLen > len(f.name) {
		return hdrOther
	}
	switch string(f.name[:f.nameLen]) {
	case "content-length":
		return hdrCL
	case "transfer-encoding":
		return hdrTE
	}
	return hdrOther
}

func (f *Framing) addValue(b byte) {
	if len(f.val) < maxValue {
		f.val = append(f.val, b)
	} else {
		f.valLong = true
	}
}

// commit records the value of the header just read, once no continuation
// line can extend it.
func (f *Framing) commit() {
	kind := f.kind
	f.kind = hdrOther
	if kind == hdrOther {
		return
	}
	v := string(trimOWS(f.val))
	if f.valLong {
		v = "too long"
	}
	switch kind {
	case hdrCL:
		if f.clCount++; f.clCount == 1 {
			f.clFirst = v
		} else if v != f.clFirst {
			f.clDiffer = true
		}
	case hdrTE:
		if f.teCount++; f.teCount == 1 {
			f.teFirst = v
		}
	}
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\r') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// endHead notes the head and finds the body's framing as net/http does:
// in HTTP/1.1 a Transfer-Encoding must be exactly "chunked" (net/http
// answers 501 otherwise) and then wins over Content-Length; in HTTP/1.0
// Transfer-Encoding is ignored; Content-Length values must agree.
func (f *Framing) endHead() {
	f.commit()
	head := HeadInfo{line: f.hash, hasCL: f.clCount > 0, hasTE: f.teCount > 0, http10: f.http10}
	if len(f.heads) == maxPendingHeads {
		f.heads = append(f.heads[:0], f.heads[1:]...)
	}
	f.heads = append(f.heads, head)

	chunked := false
	if f.teCount > 0 && !f.http10 {
		if f.teCount != 1 || !equalFold(f.teFirst, "chunked") {
			f.stop()
			return
		}
		chunked = true
	}
	var length uint64
	if f.clCount > 0 {
		n, err := strconv.ParseUint(f.clFirst, 10, 63)
		if f.clDiffer || err != nil {
			f.stop() // net/http answers 400 and closes
			return
		}
		length = n
	}
	switch {
	case chunked:
		f.st, f.n, f.chunkSize, f.chunkDigit = stChunkSize, 0, 0, 0
	case length > 0:
		f.st, f.remain = stBody, length
	default:
		f.st = stHeadStart
	}
}

func equalFold(s, t string) bool {
	if len(s) != len(t) {
		return false
	}
	for i := 0; i < len(s); i++ {
		a, b := s[i], t[i]
		if a >= 'A' && a <= 'Z' {
			a += 'a' - 'A'
		}
		if b >= 'A' && b <= 'Z' {
			b += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
}
