package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"syscall"
)

// This file writes the fast path's upstream requests and reads, checks and
// relays the answers (fastpath.go).

// maxResponseHead bounds an upstream's response head.
const maxResponseHead = 1 << 20

// respHead is a parsed upstream response head. Its slices point into the
// upstream connection's head buffer.
type respHead struct {
	status        int
	line          []byte // "200 OK": the status code and reason as sent
	fields        []field
	dropped       [][]byte // header names listed in Connection
	contentLength int64    // -1: not given
	chunked       bool
	close         bool // the upstream connection cannot be reused
	bodyless      bool // HEAD, 1xx, 204, 304
	nothingRead   bool // the read failed before the first byte
}

// writeRequestHead writes the upstream request for h: its request line,
// Host, the client's end-to-end headers, X-Forwarded-* by the peer's trust
// (as trustedProxies.setForwarded does for the net/http path) and its
// Content-Length.
func writeRequestHead(w *bufio.Writer, h *reqHead, c *fastConn, site *Site) {
	w.Write(h.method)
	w.WriteByte(' ')
	w.Write(h.uri)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.Write(h.host)
	w.WriteString("\r\n")
	trusted := len(site.trusted) > 0 && site.trusted.trustsAddr(c.peer)
	var sawHost, sawProto bool
	for _, f := range h.fields {
		switch f.kind {
		case hkHost, hkConnection, hkTE, hkHopByHop, hkTrailer, hkContentLength, hkForwarded, hkXForwardedFor:
			continue
		case hkXForwardedHost:
			if !trusted {
				continue
			}
			sawHost = true
		case hkXForwardedProto:
			if !trusted {
				continue
			}
			sawProto = true
		}
		if listed(h.dropped, f.name) {
			continue
		}
		writeField(w, f)
	}
	if c.peerIP != "" {
		w.WriteString("X-Forwarded-For: ")
		if trusted && h.xff > 0 {
			for _, f := range h.fields {
				if f.kind == hkXForwardedFor && len(f.value) > 0 {
					w.Write(f.value)
					w.WriteString(", ")
				}
			}
		}
		w.WriteString(c.peerIP)
		w.WriteString("\r\n")
	}
	if !sawHost {
		w.WriteString("X-Forwarded-Host: ")
		w.Write(h.host)
		w.WriteString("\r\n")
	}
	if !sawProto {
		w.WriteString("X-Forwarded-Proto: https\r\n")
	}
	if h.teTrailers {
		w.WriteString("Te: trailers\r\n")
	}
	if h.contentLength >= 0 {
		w.WriteString("Content-Length: ")
		w.Write(appendInt(w.AvailableBuffer(), h.contentLength))
		w.WriteString("\r\n")
	}
	w.WriteString("\r\n")
}

func writeField(w *bufio.Writer, f field) {
	w.Write(f.name)
	w.WriteString(": ")
	w.Write(f.value)
	w.WriteString("\r\n")
}

// listed reports whether name is among names, ignoring case.
func listed(names [][]byte, name []byte) bool {
	for _, n := range names {
		if foldEqBytes(n, name) {
			return true
		}
	}
	return false
}

// writeResponseHead writes the client's response head for r: the
// upstream's status and end-to-end headers, HSTS, and framing of its own
// (the body is re-framed: Content-Length when known, chunked otherwise).
// An informational (1xx) head is written as it is.
func writeResponseHead(w *bufio.Writer, r *respHead, site *Site, informational, keep bool) {
	w.WriteString("HTTP/1.1 ")
	w.Write(r.line)
	w.WriteString("\r\n")
	if site.hsts != "" && !informational {
		w.WriteString("Strict-Transport-Security: ")
		w.WriteString(site.hsts)
		w.WriteString("\r\n")
	}
	for _, f := range r.fields {
		switch f.kind {
		case hkConnection, hkHopByHop, hkTE, hkUpgrade, hkTransferEncoding, hkContentLength:
			continue
		case hkTrailer:
			if !r.chunked || r.bodyless {
				continue // no trailers follow
			}
		}
		if listed(r.dropped, f.name) {
			continue
		}
		writeField(w, f)
	}
	if !informational {
		switch {
		case r.bodyless:
			if r.contentLength >= 0 && r.status != 204 {
				w.WriteString("Content-Length: ")
				w.Write(appendInt(w.AvailableBuffer(), r.contentLength))
				w.WriteString("\r\n")
			}
		case r.chunked || r.contentLength < 0:
			w.WriteString("Transfer-Encoding: chunked\r\n")
		default:
			w.WriteString("Content-Length: ")
			w.Write(appendInt(w.AvailableBuffer(), r.contentLength))
			w.WriteString("\r\n")
		}
		if !keep {
			w.WriteString("Connection: close\r\n")
		}
	}
	w.WriteString("\r\n")
}

// readResponse reads and parses the next response head from uc.
func (uc *upConn) readResponse(r *respHead, isHead bool) error {
	head, err := readHeadLines(uc.br, uc.head[:0], maxResponseHead)
	uc.head = head
	r.nothingRead = false
	if err != nil {
		if len(head) == 0 && (err == io.EOF || errors.Is(err, syscall.ECONNRESET)) {
			r.nothingRead = true
		}
		return fmt.Errorf("read response head: %w", err)
	}
	if err := r.parse(head, isHead); err != nil {
		return fmt.Errorf("malformed response head: %w", err)
	}
	return nil
}

// readHeadLines appends lines from br to buf through the blank line that
// ends a head.
func readHeadLines(br *bufio.Reader, buf []byte, limit int) ([]byte, error) {
	lineStart := 0
	for {
		frag, err := br.ReadSlice('\n')
		if len(buf)+len(frag) > limit {
			return buf, fmt.Errorf("longer than %d bytes", limit)
		}
		buf = append(buf, frag...)
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err != nil:
			return buf, err
		}
		if len(trimEOL(buf[lineStart:])) == 0 {
			if lineStart == 0 {
				return buf, errors.New("blank line instead of a status line")
			}
			return buf, nil
		}
		lineStart = len(buf)
	}
}

// trimEOL removes a line's LF or CRLF.
func trimEOL(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte{'\n'})
	return bytes.TrimSuffix(b, []byte{'\r'})
}

// nextLine splits a head after its first line, dropping the line end.
func nextLine(b []byte) (line, rest []byte) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return trimEOL(b), nil
	}
	return trimEOL(b[:i+1]), b[i+1:]
}

// parse reads a response head (as read by readHeadLines). Framing it
// cannot trust (conflicting lengths, a transfer coding other than chunked)
// is an error, as it is for net/http's Transport.
func (r *respHead) parse(b []byte, isHead bool) error {
	r.fields, r.dropped = r.fields[:0], r.dropped[:0]
	r.contentLength, r.chunked, r.close, r.bodyless = -1, false, false, false
	line, rest := nextLine(b)
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return fmt.Errorf("status line %q", line)
	}
	http10 := line[7] == '0'
	if !http10 && line[7] != '1' {
		return fmt.Errorf("status line %q", line)
	}
	code, ok := digits(line[9:12])
	if !ok || code < 100 || !fieldValue(line[9:]) {
		return fmt.Errorf("status line %q", line)
	}
	r.status, r.line = int(code), line[9:]
	keepAlive := false
	for {
		line, rest = nextLine(rest)
		if len(line) == 0 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			return fmt.Errorf("header line %q", line)
		}
		name, value := line[:colon], trimSP(line[colon+1:])
		if !fieldValue(value) {
			return fmt.Errorf("header %s: control character in the value", name)
		}
		kind := headerKind(name)
		switch kind {
		case hkContentLength:
			n, ok := digits(value)
			if !ok || (r.contentLength >= 0 && r.contentLength != n) {
				return fmt.Errorf("Content-Length %q", value)
			}
			r.contentLength = n
		case hkTransferEncoding:
			if r.chunked || !foldEq(value, "chunked") {
				return fmt.Errorf("unsupported Transfer-Encoding %q", value)
			}
			r.chunked = true
		case hkConnection:
			for v := value; len(v) > 0; {
				var tok []byte
				switch tok, v = cutItem(v); {
				case foldEq(tok, "close"):
					r.close = true
				case foldEq(tok, "keep-alive"):
					keepAlive = true
				case len(tok) > 0:
					r.dropped = append(r.dropped, tok)
				}
			}
		}
		r.fields = append(r.fields, field{name, value, kind})
	}
	if http10 && !keepAlive {
		r.close = true
	}
	r.bodyless = isHead || r.status < 200 || r.status == 204 || r.status == 304
	switch {
	case r.bodyless:
	case r.chunked:
		if r.contentLength >= 0 {
			// chunked wins (RFC 9112 6.3), but such an upstream is
			// not trusted with another request
			r.contentLength, r.close = -1, true
		}
	case r.contentLength < 0:
		r.close = true // the body ends when the upstream closes
	}
	return nil
}

// flushIfDry flushes dst when src has nothing buffered, before a read that
// may wait: what the upstream sent so far reaches the client now (server-
// sent events, long polls, slow bodies).
func flushIfDry(dst *bufio.Writer, src *bufio.Reader) error {
	if src.Buffered() == 0 && dst.Buffered() > 0 {
		return dst.Flush()
	}
	return nil
}

// pipe copies n bytes from src to dst through dst's buffer. rerr is a
// read error (the body ended early), werr a write error.
func pipe(dst *bufio.Writer, src *bufio.Reader, n int64) (rerr, werr error) {
	for n > 0 {
		if werr = flushIfDry(dst, src); werr != nil {
			return nil, werr
		}
		if dst.Available() == 0 {
			if werr = dst.Flush(); werr != nil {
				return nil, werr
			}
		}
		buf := dst.AvailableBuffer()
		buf = buf[:min(int64(cap(buf)), n)]
		m, err := src.Read(buf)
		if m > 0 {
			dst.Write(buf[:m]) // dst's own free space: no copy
			n -= int64(m)
		}
		if err != nil && n > 0 {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err, nil
		}
	}
	return nil, nil
}

// relayChunked relays a chunked body, chunk by chunk, and its trailers.
func relayChunked(dst *bufio.Writer, src *bufio.Reader) (rerr, werr error) {
	for first := true; ; first = false {
		if !first {
			if err := readChunkEnd(src); err != nil {
				return err, nil
			}
		}
		// what came so far goes out before a read that may wait for the
		// next chunk (server-sent events)
		if werr = flushIfDry(dst, src); werr != nil {
			return nil, werr
		}
		size, err := readChunkSize(src)
		if err != nil {
			return err, nil
		}
		if size == 0 {
			break
		}
		dst.Write(appendHex(dst.AvailableBuffer(), size))
		dst.WriteString("\r\n")
		if rerr, werr = pipe(dst, src, size); rerr != nil || werr != nil {
			return rerr, werr
		}
		dst.WriteString("\r\n")
	}
	dst.WriteString("0\r\n")
	if werr = flushIfDry(dst, src); werr != nil {
		return nil, werr
	}
	err := readTrailers(src, func(line []byte, _ int) error {
		dst.Write(line)
		dst.WriteString("\r\n")
		werr = flushIfDry(dst, src) // before the next read
		return werr
	})
	if werr != nil {
		return nil, werr
	}
	if err != nil {
		return err, nil
	}
	dst.WriteString("\r\n")
	return nil, nil
}

// readChunkEnd reads the CRLF that ends a chunk's data.
func readChunkEnd(src *bufio.Reader) error {
	end, err := src.ReadSlice('\n')
	if err != nil {
		return chunkErr(err)
	}
	if len(trimEOL(end)) != 0 {
		return errors.New("chunk data longer than its size")
	}
	return nil
}

// readChunkSize reads the line that starts a chunk: its size, 0 for the
// last chunk.
func readChunkSize(src *bufio.Reader) (int64, error) {
	line, err := src.ReadSlice('\n')
	if err != nil {
		return 0, chunkErr(err)
	}
	size, ok := chunkSize(trimEOL(line))
	if !ok {
		return 0, fmt.Errorf("bad chunk size line %q", line)
	}
	return size, nil
}

// readTrailers reads the trailer section after the last chunk, through
// its blank line, giving each line (without its end) and the index of its
// colon to f. The line is valid until the next read from src.
func readTrailers(src *bufio.Reader, f func(line []byte, colon int) error) error {
	for {
		line, err := src.ReadSlice('\n')
		if err != nil {
			return chunkErr(err)
		}
		t := trimEOL(line)
		if len(t) == 0 {
			return nil
		}
		colon := bytes.IndexByte(t, ':')
		if colon <= 0 || !isToken(t[:colon]) || !fieldValue(t[colon+1:]) {
			return fmt.Errorf("bad trailer line %q", t)
		}
		if err := f(t, colon); err != nil {
			return err
		}
	}
}

func chunkErr(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// chunkSize parses a chunk-size line, ignoring chunk extensions (which
// are not passed on) but refusing control characters in them.
func chunkSize(line []byte) (int64, bool) {
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		if !fieldValue(line[i:]) {
			return 0, false
		}
		line = line[:i]
	}
	line = trimSP(line)
	if len(line) == 0 || len(line) > 15 {
		return 0, false
	}
	var n int64
	for _, c := range line {
		v, ok := hexValue(c)
		if !ok {
			return 0, false
		}
		n = n<<4 | int64(v)
	}
	return n, true
}

// pipeChunking relays a body that ends when the upstream closes, as chunks
// of what each read brings.
func pipeChunking(dst *bufio.Writer, src *bufio.Reader) (rerr, werr error) {
	for {
		if werr = flushIfDry(dst, src); werr != nil {
			return nil, werr
		}
		if _, err := src.Peek(1); err != nil {
			if err == io.EOF {
				break
			}
			return err, nil
		}
		b, _ := src.Peek(src.Buffered())
		dst.Write(appendHex(dst.AvailableBuffer(), int64(len(b))))
		dst.WriteString("\r\n")
		dst.Write(b)
		dst.WriteString("\r\n")
		src.Discard(len(b))
	}
	dst.WriteString("0\r\n\r\n")
	return nil, nil
}
