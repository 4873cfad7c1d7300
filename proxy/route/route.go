// Package route matches request paths against a site's routes
// ([[site.route]] path = "/api/*").
//
// A pattern is exact ("/health") or a prefix when it ends in "/*"
// ("/api/*"). Prefixes are segment-aware: /api/* matches /api, /api/ and
// /api/x, never /apix. The longest matching pattern wins; an exact pattern
// is always the longest match of the path it names, so it wins over a prefix
// of the same path. No match means the site's default.
//
// Matching runs on the normal form of the path (see AppendNormal), so that
// /api/../admin, /%61pi/x and //api reach the route their normal form names
// and no other; StripPrefix gives the path the upstream then receives, so
// that what the upstream sees is what was matched.
//
// A Table is built once per config and read by every request: Match does not
// allocate, whatever the number of routes (unless the path is longer than
// 1 KiB and not in normal form), so the HTTP/1.1 fast path can route without
// allocating.
package route

import (
	"fmt"
	"strings"
)

// Route is one pattern and what it routes to.
type Route[T any] struct {
	// Pattern is "/exact/path" or "/prefix/*", in normal form.
	Pattern string
	Value   T
}

// Table is an immutable set of routes. A nil *Table matches nothing. It is
// safe for concurrent use.
type Table[T any] struct {
	routes []Route[T]
	exact  map[string]int32 // pattern → index in routes
	prefix map[string]int32 // pattern less "/*" ("" for "/*") → index
	// prefixLen[n] reports whether some prefix key is n bytes long, so that
	// Match hashes only the candidate prefixes that can be in the map.
	prefixLen []bool
}

// PatternError is a pattern New refuses, with the index of its route so
// that the config layer can point at the line that wrote it.
type PatternError struct {
	Index   int    // of the route in the list given to New
	Pattern string // as written
	Reason  string
}

func (e *PatternError) Error() string {
	return fmt.Sprintf("route path %q: %s", e.Pattern, e.Reason)
}

// New builds a table from routes. It refuses, with a *PatternError, a
// pattern that is empty, does not start with '/', has a '*' other than a
// final "/*", a query or fragment, a space, control or non-ASCII byte, a
// dot-segment or an empty segment, or is otherwise not in normal form (the
// error gives the normal form to write), and a pattern that repeats an
// earlier one.
func New[T any](routes []Route[T]) (*Table[T], error) {
	t := &Table[T]{
		routes: make([]Route[T], len(routes)),
		exact:  make(map[string]int32),
		prefix: make(map[string]int32),
	}
	copy(t.routes, routes)
	for i, r := range t.routes {
		if reason := CheckPattern(r.Pattern); reason != "" {
			return nil, &PatternError{Index: i, Pattern: r.Pattern, Reason: reason}
		}
		m, key := t.exact, r.Pattern
		k, isPrefix := strings.CutSuffix(r.Pattern, "/*")
		if isPrefix {
			m, key = t.prefix, k
		}
		if j, dup := m[key]; dup {
			return nil, &PatternError{Index: i, Pattern: r.Pattern,
				Reason: fmt.Sprintf("is repeated (routes %d and %d, counting from 1)", j+1, i+1)}
		}
		m[key] = int32(i)
		if isPrefix {
			for len(t.prefixLen) <= len(key) {
				t.prefixLen = append(t.prefixLen, false)
			}
			t.prefixLen[len(key)] = true
		}
	}
	return t, nil
}

// CheckPattern returns why p is not a valid route pattern, or "" when it
// is. It is what New checks, for a caller that validates a config without
// building a table.
func CheckPattern(p string) string {
	if p == "" {
		return "is empty"
	}
	if p[0] != '/' {
		return "must start with '/'"
	}
	body := p
	if b, ok := strings.CutSuffix(p, "/*"); ok {
		body = b
		if body == "" {
			body = "/"
		}
	}
	for i := 0; i < len(body); i++ {
		switch c := body[i]; {
		case c == '*':
			return "has '*' other than a final \"/*\" (prefix patterns end in \"/*\")"
		case c == '?' || c == '#':
			return fmt.Sprintf("has %q: a route matches the path only, never the query or fragment", c)
		case c <= ' ' || c >= 0x7f:
			return fmt.Sprintf("has byte %#02x: percent-encode it", c)
		}
	}
	if hasDotSegment(body) {
		return "has a dot-segment (\".\" or \"..\")"
	}
	if strings.Contains(body, "//") || body != p && body != "/" && body[len(body)-1] == '/' {
		return "has an empty segment (\"//\")"
	}
	if n := string(AppendNormal(nil, body)); n != body {
		if body != p { // a prefix pattern
			n = strings.TrimSuffix(n, "/") + "/*"
		}
		return fmt.Sprintf("is not in normal form: write %q", n)
	}
	return ""
}

// hasDotSegment reports whether p has a segment that is "." or "..", also
// when percent-encoded (%2e, %2E).
func hasDotSegment(p string) bool {
	for seg := range strings.SplitSeq(p, "/") {
		seg = strings.ReplaceAll(strings.ReplaceAll(seg, "%2e", "."), "%2E", ".")
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// Match returns the value and pattern of the longest route matching the
// normal form of path, the request path as the client sent it (the part of
// the request target before '?'). ok is false when no route matches: the
// site's default applies.
func (t *Table[T]) Match(path string) (value T, pattern string, ok bool) {
	if t == nil {
		return value, "", false
	}
	if clean(path) {
		return lookup(t, path)
	}
	var buf [stackBuf]byte
	return lookup(t, AppendNormal(buf[:0], path))
}

// MatchBytes is Match for a path held as bytes; it neither keeps nor
// changes them.
func (t *Table[T]) MatchBytes(path []byte) (value T, pattern string, ok bool) {
	if t == nil {
		return value, "", false
	}
	if clean(path) {
		return lookup(t, path)
	}
	var buf [stackBuf]byte
	return lookup(t, AppendNormal(buf[:0], path))
}

// lookup finds the longest pattern matching p, a path in normal form:
// p itself as an exact pattern, else p and then each of its prefixes that
// ends before a '/', longest first, as a prefix pattern. Each candidate is
// one map lookup; prefixLen skips the lengths no prefix has.
func lookup[T any, P Path](t *Table[T], p P) (value T, pattern string, ok bool) {
	if len(p) == 0 || p[0] != '/' {
		return value, "", false
	}
	if len(t.exact) > 0 {
		if i, hit := t.exact[string(p)]; hit {
			r := &t.routes[i]
			return r.Value, r.Pattern, true
		}
	}
	j := len(p)
	if j >= len(t.prefixLen) {
		j = len(t.prefixLen) - 1
	}
	for ; j >= 0; j-- {
		if !t.prefixLen[j] || j < len(p) && p[j] != '/' {
			continue
		}
		if i, hit := t.prefix[string(p[:j])]; hit {
			r := &t.routes[i]
			return r.Value, r.Pattern, true
		}
	}
	return value, "", false
}

// Routes returns the table's routes in the order given to New.
func (t *Table[T]) Routes() []Route[T] {
	if t == nil {
		return nil
	}
	return append([]Route[T](nil), t.routes...)
}
