package route

// Stripping a prefix (strip_prefix = "/api")
//
// The upstream receives the client's path less strip_prefix, never an empty
// path. Which bytes of the client's path it receives matters: the route was
// chosen on the normal form, so forwarding a different spelling would let
// the upstream read a path that was never matched (/api/../admin matched as
// /admin, then read by the upstream as /admin under the /api route's rules,
// or the reverse). So:
//
//   - a path already in normal form (the common case) is forwarded as the
//     client sent it, less the prefix;
//   - any other path is forwarded in its normal form, less the prefix: the
//     upstream sees exactly what was matched.
//
// The prefix is stripped only as whole segments of the normal form:
// strip_prefix "/api" turns /api into /, /api/ into /, /api/x into /x, and
// leaves /apix alone. A prefix that does not match is not an error (the
// config layer checks that strip_prefix fits its route): the path is
// forwarded whole, in normal form. A prefix of "" or "/" strips nothing; a
// trailing '/' on the prefix is ignored. The prefix is compared as it is
// given, so it must be in normal form (CheckPattern of it is "").

// StripPrefix returns the path the upstream receives for the client's raw
// path (before '?') and the route's strip_prefix. It allocates only when
// path is not in normal form; AppendStripPrefix never does.
func StripPrefix(path, prefix string) string {
	if !clean(path) {
		var buf [stackBuf]byte
		if n := AppendNormal(buf[:0], path); string(n) != path {
			if rest, ok := cut(n, prefix); ok {
				return string(rest)
			}
			return "/"
		}
	}
	if rest, ok := cut(path, prefix); ok {
		return rest
	}
	return "/"
}

// AppendStripPrefix appends the path StripPrefix would return to dst, for a
// caller (the fast path) that writes the upstream's request line into a
// buffer of its own. dst must not overlap path.
func AppendStripPrefix(dst, path []byte, prefix string) []byte {
	if clean(path) {
		if rest, ok := cut(path, prefix); ok {
			return append(dst, rest...)
		}
		return append(dst, '/')
	}
	start := len(dst)
	dst = AppendNormal(dst, path)
	rest, ok := cut(dst[start:], prefix)
	if !ok {
		return append(dst[:start], '/')
	}
	n := copy(dst[start:], rest)
	return dst[:start+n]
}

// cut returns p, a path in normal form, less prefix when prefix is a
// segment prefix of p. ok is false when nothing is left: the path is "/".
func cut[P Path](p P, prefix string) (rest P, ok bool) {
	for len(prefix) > 0 && prefix[len(prefix)-1] == '/' {
		prefix = prefix[:len(prefix)-1]
	}
	if prefix == "" || len(p) < len(prefix) || string(p[:len(prefix)]) != prefix {
		return p, true
	}
	rest = p[len(prefix):]
	switch {
	case len(rest) == 0:
		return rest, false
	case rest[0] != '/':
		return p, true // /apix does not start with the segment /api
	}
	return rest, true
}
