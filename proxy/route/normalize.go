package route

// Normal form of a request path
//
// Routes are matched on the normal form of the path, never on the bytes as
// the client sent them, so that a client cannot pick which route serves it
// by spelling a path differently from the way the upstream will read it
// (/api/../admin, /%61pi/x, //api). The normal form of a path that starts
// with '/' is made, in one pass, by:
//
//   - decoding percent-escapes of unreserved characters (RFC 3986 §2.3:
//     A-Z a-z 0-9 - . _ ~), so /%61pi is /api and %2e is '.';
//   - keeping every other escape encoded, its hex digits in upper case
//     (%2f becomes %2F): reserved characters are data when encoded, so
//     /api%2Fx is one segment "api%2Fx", never /api/x;
//   - writing a '%' that does not start a valid escape as %25, so that
//     the normal form is itself a valid path and normalising it again
//     changes nothing (/%%36%31 is /%2561, never /%61 and then /a);
//   - collapsing runs of '/' into one (//api/ is /api/): most upstreams
//     read an empty segment as nothing, so routing must too;
//   - removing dot-segments as RFC 3986 §5.2.4 does, after decoding, so
//     %2e%2e is "..": /a/./b is /a/b, /a/b/.. is /a/, and ".." at the root
//     stays at the root (/../x is /x);
//   - keeping a trailing '/' (/api/ is not /api) and the case of every
//     other byte (paths are case-sensitive).
//
// Bytes that are not valid in a path (space, controls, bytes >= 0x80) are
// kept as they are: the wire code refuses what it must, and such a path
// simply matches no route written in normal form. The empty path is "/".
// A path that does not start with '/' (the "*" of OPTIONS *) is left as it
// is and matches no route.
//
// What is not done, on purpose: '\' is a byte like any other (an upstream
// that reads it as '/' must be routed as a whole), and ';' path parameters
// are part of their segment ("..;" is not a dot-segment).

// Path is the type of a request path: bytes, as the HTTP/1.1 fast path
// holds them, or a string, as net/http does. Functions generic over Path
// do not convert, so neither kind of caller allocates.
type Path interface{ ~string | ~[]byte }

// stackBuf is the size of the buffer Match and StripPrefix normalise a
// path into without allocating; only a longer path (3× for paths full of
// stray '%') makes them allocate.
const stackBuf = 1024

// clean reports whether p is certainly in normal form: it starts with '/'
// and has no '%', no empty segment and no dot-segment. It is the check that
// lets the common path be matched without a copy; a false answer only
// means that p must be normalised to know.
func clean[P Path](p P) bool {
	n := len(p)
	if n == 0 || p[0] != '/' {
		return false
	}
	for i := 0; i < n; i++ {
		switch p[i] {
		case '%':
			return false
		case '/':
			if i+1 == n {
				continue
			}
			switch p[i+1] {
			case '/':
				return false
			case '.':
				if i+2 == n || p[i+2] == '/' {
					return false
				}
				if p[i+2] == '.' && (i+3 == n || p[i+3] == '/') {
					return false
				}
			}
		}
	}
	return true
}

// IsNormal reports whether p is in normal form (see AppendNormal), so that
// it is forwarded as the client sent it.
func IsNormal[P Path](p P) bool {
	if clean(p) {
		return true
	}
	if len(p) == 0 || p[0] != '/' {
		return false
	}
	var buf [stackBuf]byte
	return string(AppendNormal(buf[:0], p)) == string(p)
}

// AppendNormal appends the normal form of the request path p (the part of
// the request target before '?') to dst and returns the extended slice.
// The rules are in this file's comment; in short: unreserved escapes
// decoded, other escapes kept (hex in upper case), a stray '%' written as
// %25, repeated '/' collapsed, dot-segments removed, never above the root.
// dst must not overlap p.
func AppendNormal[P Path](dst []byte, p P) []byte {
	n := len(p)
	if n == 0 {
		return append(dst, '/')
	}
	if p[0] != '/' {
		return append(dst, p...)
	}
	base := len(dst)
	for i := 0; i < n; {
		for i < n && p[i] == '/' {
			i++
		}
		if i == n { // the path ends in '/'
			return append(dst, '/')
		}
		start := len(dst)
		dst = append(dst, '/')
		for i < n && p[i] != '/' {
			c := p[i]
			if c != '%' {
				dst = append(dst, c)
				i++
				continue
			}
			if i+2 < n && isHex(p[i+1]) && isHex(p[i+2]) {
				v := unhex(p[i+1])<<4 | unhex(p[i+2])
				if unreserved(v) {
					dst = append(dst, v)
				} else {
					dst = append(dst, '%', upperHex(p[i+1]), upperHex(p[i+2]))
				}
				i += 3
				continue
			}
			dst = append(dst, '%', '2', '5')
			i++
		}
		switch seg := dst[start+1:]; {
		case len(seg) == 1 && seg[0] == '.':
			dst = dst[:start]
		case len(seg) == 2 && seg[0] == '.' && seg[1] == '.':
			dst = dst[:start]
			for len(dst) > base && dst[len(dst)-1] != '/' {
				dst = dst[:len(dst)-1]
			}
			if len(dst) > base {
				dst = dst[:len(dst)-1] // the '/' before the removed segment
			}
		default:
			continue
		}
		if i == n { // a final dot-segment leaves a directory: /a/b/.. is /a/
			return append(dst, '/')
		}
	}
	if len(dst) == base {
		return append(dst, '/')
	}
	return dst
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	default:
		return c - 'a' + 10
	}
}

func upperHex(c byte) byte {
	if 'a' <= c && c <= 'f' {
		return c - 'a' + 'A'
	}
	return c
}

// unreserved reports whether c is an unreserved character of RFC 3986
// §2.3, whose percent-encoded and plain forms are equivalent.
func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}
