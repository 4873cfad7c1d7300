package accesslog

import (
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"
)

// Record is one request, as the request core fills it. Its fields are
// bytes, strings, numbers and value types, so the HTTP/1.1 fast path fills
// it from its parsed head and net/http from its Request without
// allocating; the zero value of a field is logged as empty (JSON "", 0) or
// '-' (combined). The JSON fields are written in this order.
type Record struct {
	// Time is when the request began (its head was read); in JSON it is
	// written in UTC (ts), in combined in Time's own location, which for
	// time.Now() is local time, as nginx does.
	Time time.Time
	// RemoteIP is the client after trusted_proxies (remote_ip).
	// An IPv4-mapped IPv6 address is written as IPv4.
	RemoteIP netip.Addr
	Host     []byte // the Host header or the authority (host)
	Method   []byte // method
	URI      []byte // the request target as the client sent it (uri)
	Proto    string // "HTTP/1.1", "HTTP/2.0"… (proto)
	Status   int    // status
	Bytes    int64  // body bytes sent to the client (bytes)
	// Duration is from Time to the last byte of the response (duration, in
	// seconds with microseconds).
	Duration time.Duration
	Upstream string // the upstream's address, "" when none served it (upstream)
	// UpstreamDuration is from sending the request to the upstream to
	// the end of its response (upstream_duration, in seconds), 0 when none.
	UpstreamDuration time.Duration
	Site             string // the site's first host (site)
	Route            string // the route's path, "" for the site's default (route)
	RequestID        []byte // request_id
	UserAgent        []byte // user_agent
	Referer          []byte // referer
	// TLSVersion is tls.ConnectionState.Version, 0 for plain HTTP; it is
	// written as OpenSSL and nginx name it ("TLSv1.3") (tls_version).
	TLSVersion uint16
}

// appendTo appends r's line, ending in '\n', in format f.
func (r *Record) appendTo(b []byte, f Format) []byte {
	if f == Combined {
		return r.appendCombined(b)
	}
	return r.appendJSON(b)
}

func (r *Record) appendJSON(b []byte) []byte {
	b = append(b, `{"ts":"`...)
	b = appendISO8601Millis(b, r.Time.UTC())
	b = append(b, `","remote_ip":`...)
	b = appendJSONAddr(b, r.RemoteIP)
	b = append(b, `,"host":`...)
	b = appendJSONString(b, r.Host)
	b = append(b, `,"method":`...)
	b = appendJSONString(b, r.Method)
	b = append(b, `,"uri":`...)
	b = appendJSONString(b, r.URI)
	b = append(b, `,"proto":`...)
	b = appendJSONString(b, r.Proto)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(r.Status), 10)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, r.Bytes, 10)
	b = append(b, `,"duration":`...)
	b = appendSeconds(b, r.Duration)
	b = append(b, `,"upstream":`...)
	b = appendJSONString(b, r.Upstream)
	b = append(b, `,"upstream_duration":`...)
	b = appendSeconds(b, r.UpstreamDuration)
	b = append(b, `,"site":`...)
	b = appendJSONString(b, r.Site)
	b = append(b, `,"route":`...)
	b = appendJSONString(b, r.Route)
	b = append(b, `,"request_id":`...)
	b = appendJSONString(b, r.RequestID)
	b = append(b, `,"user_agent":`...)
	b = appendJSONString(b, r.UserAgent)
	b = append(b, `,"referer":`...)
	b = appendJSONString(b, r.Referer)
	b = append(b, `,"tls_version":"`...)
	b = appendTLSVersion(b, r.TLSVersion)
	return append(b, "\"}\n"...)
}

// appendCombined writes
//
//	remote_ip - - [02/Jan/2006:15:04:05 -0700] "METHOD URI PROTO" status bytes "referer" "user_agent"
//
// with '-' for what is empty (bytes 0 included, as Apache's %b), and
// '"', '\' and bytes outside printable ASCII written \xHH, as nginx does,
// so that a client cannot forge a field or a line.
func (r *Record) appendCombined(b []byte) []byte {
	if r.RemoteIP.IsValid() {
		var buf [64]byte
		b = appendCombinedText(b, r.RemoteIP.Unmap().AppendTo(buf[:0]))
	} else {
		b = append(b, '-')
	}
	b = append(b, " - - ["...)
	b = appendCommonLogTime(b, r.Time)
	b = append(b, `] "`...)
	b = appendCombinedText(b, r.Method)
	b = append(b, ' ')
	b = appendCombinedText(b, r.URI)
	b = append(b, ' ')
	b = appendCombinedText(b, r.Proto)
	b = append(b, `" `...)
	b = strconv.AppendInt(b, int64(r.Status), 10)
	b = append(b, ' ')
	if r.Bytes > 0 {
		b = strconv.AppendInt(b, r.Bytes, 10)
	} else {
		b = append(b, '-')
	}
	b = append(b, ` "`...)
	b = appendCombinedField(b, r.Referer)
	b = append(b, `" "`...)
	b = appendCombinedField(b, r.UserAgent)
	return append(b, "\"\n"...)
}

// text is what a field of a line is held as.
type text interface{ ~string | ~[]byte }

func appendCombinedField[S text](b []byte, s S) []byte {
	if len(s) == 0 {
		return append(b, '-')
	}
	return appendCombinedText(b, s)
}

const hexDigits = "0123456789ABCDEF"

func appendCombinedText[S text](b []byte, s S) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			b = append(b, '\\', 'x', hexDigits[c>>4], hexDigits[c&0xF])
			continue
		}
		b = append(b, c)
	}
	return b
}

// appendJSONString appends s as a JSON string: '"' and '\' escaped, control
// characters as \n, \r, \t or \u00XX, U+2028 and U+2029 escaped (for
// readers that take a line for JavaScript), and each byte of invalid UTF-8
// as \ufffd, so every line is valid JSON whatever a client sent.
func appendJSONString[S text](b []byte, s S) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		// Copy the longest run that needs no escape in one append.
		j := i
		for j < len(s) && jsonSafe[s[j]] {
			j++
		}
		b = append(b, s[i:j]...)
		if i = j; i == len(s) {
			break
		}
		c := s[i]
		if c < utf8.RuneSelf {
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, `\n`...)
			case '\r':
				b = append(b, `\r`...)
			case '\t':
				b = append(b, `\t`...)
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			continue
		}
		var rb [utf8.UTFMax]byte
		n := copy(rb[:], s[i:])
		r, size := utf8.DecodeRune(rb[:n])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, `\u202`...)
			b = append(b, hexDigits[r&0xF])
		default:
			b = append(b, rb[:size]...)
		}
		i += size
	}
	return append(b, '"')
}

// jsonSafe[c] is true for the bytes appendJSONString copies as they are:
// printable ASCII other than '"' and '\'.
var jsonSafe = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func appendJSONAddr(b []byte, a netip.Addr) []byte {
	if !a.IsValid() {
		return append(b, `""`...)
	}
	// Escaped, as an IPv6 zone is text of any kind.
	var buf [64]byte
	return appendJSONString(b, a.Unmap().AppendTo(buf[:0]))
}

// appendISO8601Millis writes t, a time in UTC, as RFC 3339 with
// milliseconds: 2006-01-02T15:04:05.000Z. It is written by hand, being on
// every line: time.AppendFormat takes several times as long.
func appendISO8601Millis(b []byte, t time.Time) []byte {
	year, month, day := t.Date()
	hour, min, sec := t.Clock()
	if year < 0 || year > 9999 {
		return t.AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	}
	b = append(b, byte('0'+year/1000), byte('0'+year/100%10), byte('0'+year/10%10), byte('0'+year%10), '-')
	b = appendTwo(b, int(month), '-')
	b = appendTwo(b, day, 'T')
	b = appendTwo(b, hour, ':')
	b = appendTwo(b, min, ':')
	b = appendTwo(b, sec, '.')
	ms := t.Nanosecond() / 1e6
	return append(b, byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10), 'Z')
}

// appendCommonLogTime writes t in its own location as the common log
// format does: 02/Jan/2006:15:04:05 -0700. By hand, as appendISO8601Millis.
func appendCommonLogTime(b []byte, t time.Time) []byte {
	year, month, day := t.Date()
	hour, min, sec := t.Clock()
	_, offset := t.Zone()
	if year < 0 || year > 9999 || offset%60 != 0 {
		return t.AppendFormat(b, "02/Jan/2006:15:04:05 -0700")
	}
	b = appendTwo(b, day, '/')
	b = append(b, month.String()[:3]...)
	b = append(b, '/', byte('0'+year/1000), byte('0'+year/100%10), byte('0'+year/10%10), byte('0'+year%10), ':')
	b = appendTwo(b, hour, ':')
	b = appendTwo(b, min, ':')
	b = appendTwo(b, sec, ' ')
	sign := byte('+')
	if offset < 0 {
		sign, offset = '-', -offset
	}
	offset /= 60 // minutes
	b = append(b, sign)
	b = appendTwo(b, offset/60, byte('0'+offset%60/10))
	return append(b, byte('0'+offset%10))
}

func appendTwo(b []byte, n int, sep byte) []byte {
	return append(b, byte('0'+n/10), byte('0'+n%10), sep)
}

// appendSeconds writes d in seconds with six decimals (microseconds), as
// a JSON number: fixed precision, no exponent, negative durations as 0.
func appendSeconds(b []byte, d time.Duration) []byte {
	us := max(int64(d/time.Microsecond), 0)
	b = strconv.AppendInt(b, us/1e6, 10)
	frac := us % 1e6
	b = append(b, '.')
	for div := int64(1e5); div > 0; div /= 10 {
		b = append(b, byte('0'+frac/div%10))
	}
	return b
}

// appendTLSVersion writes v as OpenSSL names it, nothing for 0 (plain
// HTTP), and 0xXXXX for a version it does not know.
func appendTLSVersion(b []byte, v uint16) []byte {
	switch v {
	case 0:
		return b
	case 0x0300:
		return append(b, "SSLv3"...)
	case 0x0301:
		return append(b, "TLSv1"...)
	case 0x0302:
		return append(b, "TLSv1.1"...)
	case 0x0303:
		return append(b, "TLSv1.2"...)
	case 0x0304:
		return append(b, "TLSv1.3"...)
	}
	return append(b, '0', 'x', hexDigits[v>>12], hexDigits[v>>8&0xF], hexDigits[v>>4&0xF], hexDigits[v&0xF])
}
