package h1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"syscall"
)

// This file reads and checks upstream answers, and relays their bodies.

// maxResponseHead bounds an upstream's response head.
const maxResponseHead = 1 << 20

// respHead is a parsed upstream response head. Its slices point into the
// upstream connection's head buffer.
type ResponseHead struct {
	Status        int
	Line          []byte // "200 OK": the status code and reason as sent
	Fields        []Field
	Dropped       [][]byte // header names listed in Connection
	ContentLength int64    // -1: not given
	Chunked       bool
	Close         bool // the upstream connection cannot be reused
	Bodyless      bool // HEAD, 1xx, 204, 304
	NothingRead   bool // the read failed before the first byte
}

func WriteField(w *bufio.Writer, f Field) {
	w.Write(f.Name)
	w.WriteString(": ")
	w.Write(f.Value)
	w.WriteString("\r\n")
}

// listed reports whether name is among names, ignoring case.
func Listed(names [][]byte, name []byte) bool {
	for _, n := range names {
		if foldEqBytes(n, name) {
			return true
		}
	}
	return false
}

// readResponse reads and parses the next response head from uc.
func (uc *Conn) ReadResponse(r *ResponseHead, isHead bool) error {
	head, err := readHeadLines(uc.Reader, uc.head[:0], maxResponseHead)
	uc.head = head
	r.NothingRead = false
	if err != nil {
		if len(head) == 0 && (err == io.EOF || errors.Is(err, syscall.ECONNRESET)) {
			r.NothingRead = true
		}
		return fmt.Errorf("read response head: %w", err)
	}
	if err := r.Parse(head, isHead); err != nil {
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
func (r *ResponseHead) Parse(b []byte, isHead bool) error {
	r.Fields, r.Dropped = r.Fields[:0], r.Dropped[:0]
	r.ContentLength, r.Chunked, r.Close, r.Bodyless = -1, false, false, false
	line, rest := nextLine(b)
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return fmt.Errorf("status line %q", line)
	}
	http10 := line[7] == '0'
	if !http10 && line[7] != '1' {
		return fmt.Errorf("status line %q", line)
	}
	code, ok := digits(line[9:12])
	if !ok || code < 100 || !ValidFieldValue(line[9:]) {
		return fmt.Errorf("status line %q", line)
	}
	r.Status, r.Line = int(code), line[9:]
	keepAlive := false
	for {
		line, rest = nextLine(rest)
		if len(line) == 0 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !IsToken(line[:colon]) {
			return fmt.Errorf("header line %q", line)
		}
		name, value := line[:colon], trimSP(line[colon+1:])
		if !ValidFieldValue(value) {
			return fmt.Errorf("header %s: control character in the value", name)
		}
		kind := HeaderKind(name)
		switch kind {
		case KindContentLength:
			n, ok := digits(value)
			if !ok || (r.ContentLength >= 0 && r.ContentLength != n) {
				return fmt.Errorf("Content-Length %q", value)
			}
			r.ContentLength = n
		case KindTransferEncoding:
			if r.Chunked || !foldEq(value, "chunked") {
				return fmt.Errorf("unsupported Transfer-Encoding %q", value)
			}
			r.Chunked = true
		case KindConnection:
			for v := value; len(v) > 0; {
				var tok []byte
				switch tok, v = CutItem(v); {
				case foldEq(tok, "close"):
					r.Close = true
				case foldEq(tok, "keep-alive"):
					keepAlive = true
				case len(tok) > 0:
					r.Dropped = append(r.Dropped, tok)
				}
			}
		}
		r.Fields = append(r.Fields, Field{name, value, kind})
	}
	if http10 && !keepAlive {
		r.Close = true
	}
	r.Bodyless = isHead || r.Status < 200 || r.Status == 204 || r.Status == 304
	switch {
	case r.Bodyless:
	case r.Chunked:
		if r.ContentLength >= 0 {
			// chunked wins (RFC 9112 6.3), but such an upstream is
			// not trusted with another request
			r.ContentLength, r.Close = -1, true
		}
	case r.ContentLength < 0:
		r.Close = true // the body ends when the upstream closes
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

// Pipe copies n bytes from src to dst through dst's buffer, and returns
// how many it copied. rerr is a read error (the body ended early), werr a
// write error.
func Pipe(dst *bufio.Writer, src *bufio.Reader, n int64) (copied int64, rerr, werr error) {
	for n > 0 {
		if werr = flushIfDry(dst, src); werr != nil {
			return copied, nil, werr
		}
		if dst.Available() == 0 {
			if werr = dst.Flush(); werr != nil {
				return copied, nil, werr
			}
		}
		buf := dst.AvailableBuffer()
		buf = buf[:min(int64(cap(buf)), n)]
		m, err := src.Read(buf)
		if m > 0 {
			dst.Write(buf[:m]) // dst's own free space: no copy
			n -= int64(m)
			copied += int64(m)
		}
		if err != nil && n > 0 {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return copied, err, nil
		}
	}
	return copied, nil, nil
}

// RelayChunked relays a chunked body, chunk by chunk, and its trailers,
// and returns the bytes of chunk data it relayed.
func RelayChunked(dst *bufio.Writer, src *bufio.Reader) (copied int64, rerr, werr error) {
	for first := true; ; first = false {
		if !first {
			if err := readChunkEnd(src); err != nil {
				return copied, err, nil
			}
		}
		// what came so far goes out before a read that may wait for the
		// next chunk (server-sent events)
		if werr = flushIfDry(dst, src); werr != nil {
			return copied, nil, werr
		}
		size, err := readChunkSize(src)
		if err != nil {
			return copied, err, nil
		}
		if size == 0 {
			break
		}
		dst.Write(AppendHex(dst.AvailableBuffer(), size))
		dst.WriteString("\r\n")
		m, rerr, werr := Pipe(dst, src, size)
		copied += m
		if rerr != nil || werr != nil {
			return copied, rerr, werr
		}
		dst.WriteString("\r\n")
	}
	dst.WriteString("0\r\n")
	if werr = flushIfDry(dst, src); werr != nil {
		return copied, nil, werr
	}
	err := readTrailers(src, func(line []byte, _ int) error {
		dst.Write(line)
		dst.WriteString("\r\n")
		werr = flushIfDry(dst, src) // before the next read
		return werr
	})
	if werr != nil {
		return copied, nil, werr
	}
	if err != nil {
		return copied, err, nil
	}
	dst.WriteString("\r\n")
	return copied, nil, nil
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
		if colon <= 0 || !IsToken(t[:colon]) || !ValidFieldValue(t[colon+1:]) {
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
		if !ValidFieldValue(line[i:]) {
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

// PipeChunking relays a body that ends when the upstream closes, as chunks
// of what each read brings, and returns the bytes of the body.
func PipeChunking(dst *bufio.Writer, src *bufio.Reader) (copied int64, rerr, werr error) {
	for {
		if werr = flushIfDry(dst, src); werr != nil {
			return copied, nil, werr
		}
		if _, err := src.Peek(1); err != nil {
			if err == io.EOF {
				break
			}
			return copied, err, nil
		}
		b, _ := src.Peek(src.Buffered())
		dst.Write(AppendHex(dst.AvailableBuffer(), int64(len(b))))
		dst.WriteString("\r\n")
		dst.Write(b)
		dst.WriteString("\r\n")
		src.Discard(len(b))
		copied += int64(len(b))
	}
	dst.WriteString("0\r\n\r\n")
	return copied, nil, nil
}
