package proxy

// A strict RFC 9112 request reader of the tests' own, the reference the
// desync suite and the differential fuzz target hold Portico's upstream
// bytes to. It shares no code with Portico's parsers (head.go, relay.go,
// framing.go) or net/http's: a bug copied into both would prove nothing.
// It accepts only what RFC 9112 and RFC 9110 allow a sender to produce,
// and nothing that a lenient reader might frame differently: CRLF line
// ends only, no obs-fold, one Host, at most one Content-Length, chunked as
// the only transfer coding and never beside Content-Length, chunk
// extensions of tokens and quoted strings only.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// strictRequest is one request as the strict reader framed it.
type strictRequest struct {
	method, target string
	header         [][2]string // in order, names as sent
	body           []byte
	chunked        bool
}

// get returns the values of header name, case-insensitively.
func (r *strictRequest) get(name string) []string {
	var vs []string
	for _, f := range r.header {
		if strings.EqualFold(f[0], name) {
			vs = append(vs, f[1])
		}
	}
	return vs
}

// errStrict marks bytes the strict reader refuses; io.EOF before a
// request's first byte is a clean end, io.ErrUnexpectedEOF a cut one.
var errStrict = errors.New("strict HTTP/1.1")

// errStrictFraming marks the refusals that concern where a message ends:
// after one, a proxy must pass on nothing more of the connection.
var errStrictFraming = fmt.Errorf("%w: framing", errStrict)

func strictErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errStrict}, args...)...)
}

func framingErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errStrictFraming}, args...)...)
}

// readStrictLine reads one CRLF-terminated line, refusing a bare LF or CR.
func readStrictLine(br *bufio.Reader, limit int) (string, error) {
	var b []byte
	for {
		c, err := br.ReadByte()
		if err != nil {
			if err == io.EOF && len(b) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return "", err
		}
		switch {
		case c == '\n':
			return "", strictErr("bare LF")
		case c == '\r':
			n, err := br.ReadByte()
			if err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return "", err
			}
			if n != '\n' {
				return "", strictErr("bare CR")
			}
			return string(b), nil
		}
		if b = append(b, c); len(b) > limit {
			return "", strictErr("line longer than %d bytes", limit)
		}
	}
}

func strictToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// strictTarget: origin-form, absolute-form or "*", visible ASCII only.
func strictTarget(s string) bool {
	if s == "" || !(s[0] == '/' || s == "*" || strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '#' {
			return false
		}
	}
	return true
}

// strictFields reads field lines through the blank line.
func strictFields(br *bufio.Reader) ([][2]string, error) {
	var fields [][2]string
	for {
		line, err := readStrictLine(br, 16<<10)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if line == "" {
			return fields, nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			return nil, strictErr("obs-fold")
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || !strictToken(name) {
			return nil, strictErr("field line %q", line)
		}
		value = strings.Trim(value, " \t")
		for i := 0; i < len(value); i++ {
			if c := value[i]; c < ' ' && c != '\t' || c == 0x7f {
				return nil, strictErr("control character in field %s", name)
			}
		}
		fields = append(fields, [2]string{name, value})
	}
}

// readStrictRequest reads the next request from br.
func readStrictRequest(br *bufio.Reader) (*strictRequest, error) {
	line, err := readStrictLine(br, 16<<10)
	if err != nil {
		return nil, err
	}
	parts := strings.Split(line, " ")
	if len(parts) != 3 || !strictToken(parts[0]) || !strictTarget(parts[1]) || parts[2] != "HTTP/1.1" {
		return nil, strictErr("request line %q", line)
	}
	r := &strictRequest{method: parts[0], target: parts[1]}
	if r.header, err = strictFields(br); err != nil {
		return nil, err
	}
	if hosts := r.get("Host"); len(hosts) != 1 || hosts[0] == "" {
		return nil, strictErr("%d Host fields", len(hosts))
	}
	cls, tes := r.get("Content-Length"), r.get("Transfer-Encoding")
	for len(cls) > 1 && cls[0] == cls[1] {
		cls = cls[1:] // identical copies are one (RFC 9110 §8.6)
	}
	switch {
	case len(tes) > 0 && len(cls) > 0:
		return nil, framingErr("Content-Length and Transfer-Encoding")
	case len(tes) > 1 || len(tes) == 1 && !strings.EqualFold(tes[0], "chunked"):
		return nil, framingErr("transfer coding %q", tes)
	case len(tes) == 1:
		r.chunked = true
		r.body, err = readStrictChunked(br)
	case len(cls) > 1:
		return nil, framingErr("%d different Content-Length fields", len(cls))
	case len(cls) == 1:
		n, perr := strconv.ParseUint(cls[0], 10, 40)
		if perr != nil || cls[0][0] == '+' {
			return nil, framingErr("Content-Length %q", cls[0])
		}
		r.body = make([]byte, n)
		if _, err = io.ReadFull(br, r.body); err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
	}
	if err != nil {
		return nil, err
	}
	return r, nil
}

// readStrictChunked reads a chunked body and its trailer section.
func readStrictChunked(br *bufio.Reader) ([]byte, error) {
	var body []byte
	for {
		line, err := readStrictLine(br, 4<<10)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		size, ext, _ := strings.Cut(line, ";")
		digits := strings.TrimRight(size, " \t") // BWS before an extension
		n, perr := strconv.ParseUint(digits, 16, 40)
		if perr != nil || digits == "" || strings.ContainsAny(digits, "+-xX") {
			return nil, framingErr("chunk size %q", line)
		}
		if !strictChunkExt(line[len(digits):]) {
			return nil, strictErr("chunk extension %q", ext)
		}
		if n == 0 {
			if _, err := strictFields(br); err != nil { // trailers
				return nil, err
			}
			return body, nil
		}
		data := make([]byte, n+2)
		if _, err := io.ReadFull(br, data); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if string(data[n:]) != "\r\n" {
			return nil, framingErr("chunk data longer than its size")
		}
		body = append(body, data[:n]...)
	}
}

// strictChunkExt checks *( BWS ";" BWS token [ BWS "=" BWS ( token /
// quoted-string ) ] ).
func strictChunkExt(s string) bool {
	ws := func() {
		for s != "" && (s[0] == ' ' || s[0] == '\t') {
			s = s[1:]
		}
	}
	tok := func() bool {
		i := 0
		for i < len(s) && strictToken(s[i:i+1]) {
			i++
		}
		s = s[i:]
		return i > 0
	}
	for {
		ws()
		if s == "" {
			return true
		}
		if s[0] != ';' {
			return false
		}
		s = s[1:]
		ws()
		if !tok() {
			return false
		}
		ws()
		if s == "" || s[0] != '=' {
			continue
		}
		s = s[1:]
		ws()
		if s != "" && s[0] == '"' {
			end := -1
			for i := 1; i < len(s); i++ {
				if s[i] == '\\' {
					i++
					continue
				}
				if s[i] == '"' {
					end = i
					break
				}
				if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
					return false
				}
			}
			if end < 0 {
				return false
			}
			s = s[end+1:]
		} else if !tok() {
			return false
		}
	}
}
