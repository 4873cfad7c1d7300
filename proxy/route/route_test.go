package route

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

func TestAppendNormal(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", "/"},
		{"/", "/"},
		{"/api", "/api"},
		{"/api/", "/api/"},
		{"/API/X", "/API/X"}, // case-sensitive
		// Repeated slashes.
		{"//api", "/api"},
		{"///api//x//", "/api/x/"},
		{"//", "/"},
		// Dot-segments.
		{"/api/../admin", "/admin"},
		{"/api/./x", "/api/x"},
		{"/../x", "/x"},
		{"/../../../etc/passwd", "/etc/passwd"},
		{"/a/b/..", "/a/"},
		{"/a/b/../", "/a/"},
		{"/a/.", "/a/"},
		{"/a/./", "/a/"},
		{"/.", "/"},
		{"/..", "/"},
		{"/a/..", "/"},
		{"/a/...", "/a/..."},       // not a dot-segment
		{"/a/.b/..c", "/a/.b/..c"}, // nor these
		{"/a/..;/b", "/a/..;/b"},   // ';' belongs to the segment
		// Escapes of unreserved characters are decoded, in either case.
		{"/%61pi/x", "/api/x"},
		{"/%41%5a%7e%2D%5F", "/AZ~-_"},
		{"/api/%2e%2e/admin", "/admin"},
		{"/api/%2E%2e/admin", "/admin"},
		{"/api/.%2e/admin", "/admin"},
		{"/api/%2e/x", "/api/x"},
		// Reserved and other escapes stay encoded, hex in upper case.
		{"/api%2Fx", "/api%2Fx"},
		{"/api%2fx", "/api%2Fx"},
		{"/api/%2f..", "/api/%2F.."},
		{"/a%20b", "/a%20b"},
		{"/%c3%a9", "/%C3%A9"},
		{"/%00", "/%00"},
		// A '%' that starts no escape is written %25.
		{"/100%", "/100%25"},
		{"/%zz", "/%25zz"},
		{"/%4", "/%254"},
		{"/%%36%31", "/%2561"},
		// No leading '/': left alone.
		{"*", "*"},
		{"api/../x", "api/../x"},
	} {
		got := string(AppendNormal(nil, c.in))
		if got != c.want {
			t.Errorf("AppendNormal(%q) = %q, want %q", c.in, got, c.want)
		}
		if b := string(AppendNormal([]byte("keep"), []byte(c.in))); b != "keep"+c.want {
			t.Errorf("AppendNormal(keep, []byte(%q)) = %q", c.in, b)
		}
		if again := string(AppendNormal(nil, got)); again != got {
			t.Errorf("AppendNormal(%q) = %q, not idempotent", got, again)
		}
		if c.in != "" && c.in[0] == '/' && IsNormal(c.in) != (c.in == c.want) {
			t.Errorf("IsNormal(%q) = %v", c.in, IsNormal(c.in))
		}
	}
}

// testRoutes is the table most tests match against.
var testRoutes = []string{
	"/api/*",
	"/api/v2/*",
	"/api/v2/health",
	"/health",
	"/a%2Fb/*",
	"/static/",
	"/~user/*",
}

func newTestTable(t testing.TB, patterns []string) *Table[int] {
	t.Helper()
	rs := make([]Route[int], len(patterns))
	for i, p := range patterns {
		rs[i] = Route[int]{Pattern: p, Value: i}
	}
	tab, err := New(rs)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func TestMatch(t *testing.T) {
	tab := newTestTable(t, testRoutes)
	for _, c := range []struct{ path, want string }{ // want: pattern, "" for none
		{"/api", "/api/*"},
		{"/api/", "/api/*"},
		{"/api/x", "/api/*"},
		{"/api/x/y", "/api/*"},
		{"/apix", ""},
		{"/ap", ""},
		{"/API/x", ""}, // case-sensitive
		{"/Api", ""},
		{"/api/v2", "/api/v2/*"},
		{"/api/v2/", "/api/v2/*"},
		{"/api/v2/users", "/api/v2/*"},
		{"/api/v2x", "/api/*"},
		{"/api/v2/health", "/api/v2/health"}, // exact beats the prefix
		{"/api/v2/health/", "/api/v2/*"},     // exact is exact
		{"/api/v2/healthz", "/api/v2/*"},
		{"/health", "/health"},
		{"/health/", ""},
		{"/healthz", ""},
		{"/", ""},
		{"", ""},
		{"*", ""},
		// Traversal cannot leave or enter a route the normal form does not name.
		{"/api/../admin", ""},
		{"/api/%2e%2e/admin", ""},
		{"/api/%2E%2E/admin", ""},
		{"/admin/../api/x", "/api/*"},
		{"/x/../health", "/health"},
		{"/../api", "/api/*"},
		{"/api/v2/../health", "/api/*"},
		{"/api/v2/./health", "/api/v2/health"},
		// Encodings.
		{"/%61pi/x", "/api/*"},
		{"/%61%50i/x", ""}, // %50 is 'P': /aPi
		{"/api%2Fx", ""},   // an encoded '/' is not a separator
		{"/api%2fv2/x", ""},
		{"/a%2Fb/c", "/a%2Fb/*"},
		{"/a%2fb/c", "/a%2Fb/*"}, // hex case does not matter
		{"/a/b/c", ""},
		{"/%7Euser/x", "/~user/*"},
		{"/%7euser", "/~user/*"},
		// Repeated slashes.
		{"//api", "/api/*"},
		{"//api//v2//health", "/api/v2/health"},
		{"///health", "/health"},
		{"/static/", "/static/"},
		{"/static", ""},
		{"/static//", "/static/"},
	} {
		v, pat, ok := tab.Match(c.path)
		if pat != c.want || ok != (c.want != "") {
			t.Errorf("Match(%q) = %q, %v; want %q", c.path, pat, ok, c.want)
			continue
		}
		if ok && testRoutes[v] != pat {
			t.Errorf("Match(%q) value %d is route %q, pattern %q", c.path, v, testRoutes[v], pat)
		}
		if v2, pat2, ok2 := tab.MatchBytes([]byte(c.path)); v2 != v || pat2 != pat || ok2 != ok {
			t.Errorf("MatchBytes(%q) = %d %q %v, Match = %d %q %v", c.path, v2, pat2, ok2, v, pat, ok)
		}
	}
}

func TestMatchRoot(t *testing.T) {
	tab := newTestTable(t, []string{"/*", "/", "/api/*"})
	for path, want := range map[string]string{
		"/": "/", "//": "/", "/x": "/*", "/x/": "/*", "/api/x": "/api/*", "/apix": "/*",
		"/..": "/", "*": "",
	} {
		if _, pat, _ := tab.Match(path); pat != want {
			t.Errorf("Match(%q) = %q, want %q", path, pat, want)
		}
	}
	var nilTable *Table[int]
	if _, _, ok := nilTable.Match("/"); ok {
		t.Error("a nil table matched")
	}
	if _, _, ok := nilTable.MatchBytes([]byte("/")); ok {
		t.Error("a nil table matched")
	}
	empty := newTestTable(t, nil)
	if _, _, ok := empty.Match("/x"); ok {
		t.Error("an empty table matched")
	}
}

func TestNewRefuses(t *testing.T) {
	for _, c := range []struct{ pattern, reason string }{
		{"", "is empty"},
		{"api", "must start with '/'"},
		{"*", "must start with '/'"},
		{"/api*", "'*'"},
		{"/*/x", "'*'"},
		{"/api/*/*", "'*'"},
		{"/api/**", "'*'"},
		{"/api?x=1", "query"},
		{"/api#x", "query"},
		{"/a b", "byte 0x20"},
		{"/caf\u00e9", "byte 0xc3"},
		{"/a\x00", "byte 0x00"},
		{"/api/../x", "dot-segment"},
		{"/api/./*", "dot-segment"},
		{"/..", "dot-segment"},
		{"/api/%2e%2E/*", "dot-segment"},
		{"//api", "empty segment"},
		{"/api//*", "empty segment"},
		{"/%61pi/*", `write "/api/*"`},
		{"/%61pi", `write "/api"`},
		{"/a%2fb", `write "/a%2Fb"`},
		{"/100%", `write "/100%25"`},
	} {
		_, err := New([]Route[int]{{Pattern: "/ok"}, {Pattern: c.pattern}})
		var pe *PatternError
		if !errors.As(err, &pe) {
			t.Errorf("New(%q) = %v, want a *PatternError", c.pattern, err)
			continue
		}
		if pe.Index != 1 || pe.Pattern != c.pattern || !strings.Contains(err.Error(), c.reason) {
			t.Errorf("New(%q) = %#v (%v), want index 1 and %q", c.pattern, pe, err, c.reason)
		}
		if CheckPattern(c.pattern) == "" {
			t.Errorf("CheckPattern(%q) accepts it", c.pattern)
		}
	}
	for _, dup := range [][]string{{"/api", "/x", "/api"}, {"/api/*", "/x", "/api/*"}} {
		_, err := New([]Route[int]{{Pattern: dup[0]}, {Pattern: dup[1]}, {Pattern: dup[2]}})
		var pe *PatternError
		if !errors.As(err, &pe) || pe.Index != 2 || !strings.Contains(err.Error(), "routes 1 and 3") {
			t.Errorf("New(%q) = %v, want a duplicate error for index 2", dup, err)
		}
	}
	// Exact and prefix of the same path are distinct, and so are /, /* and /x/.
	if _, err := New([]Route[int]{{Pattern: "/api"}, {Pattern: "/api/*"}, {Pattern: "/api/"},
		{Pattern: "/"}, {Pattern: "/*"}, {Pattern: "/a%2Fb"}, {Pattern: "/~u/*"}}); err != nil {
		t.Errorf("New refused distinct patterns: %v", err)
	}
}

func TestNewCopiesRoutes(t *testing.T) {
	rs := []Route[int]{{Pattern: "/a", Value: 1}}
	tab, err := New(rs)
	if err != nil {
		t.Fatal(err)
	}
	rs[0].Value, rs[0].Pattern = 2, "/b"
	if v, pat, ok := tab.Match("/a"); !ok || v != 1 || pat != "/a" {
		t.Errorf("Match after the caller changed its slice = %d %q %v", v, pat, ok)
	}
	if got := tab.Routes(); len(got) != 1 || got[0].Pattern != "/a" {
		t.Errorf("Routes() = %v", got)
	}
}

func TestStripPrefix(t *testing.T) {
	for _, c := range []struct{ path, prefix, want string }{
		{"/api", "/api", "/"},
		{"/api/", "/api", "/"},
		{"/api/x", "/api", "/x"},
		{"/api/x/", "/api", "/x/"},
		{"/api/x/y", "/api", "/x/y"},
		{"/apix", "/api", "/apix"}, // not a segment prefix: left alone
		{"/other", "/api", "/other"},
		{"/ap", "/api", "/ap"},
		{"/api/x", "/api/", "/x"}, // a trailing '/' on the prefix is ignored
		{"/api/x", "", "/api/x"},
		{"/api/x", "/", "/api/x"},
		{"/", "/api", "/"},
		{"", "", "/"},
		{"/api/v2/x", "/api/v2", "/x"},
		// A path not in normal form is forwarded in normal form.
		{"//api//x", "/api", "/x"},
		{"/api/../admin", "/api", "/admin"},
		{"/x/../api/y", "/api", "/y"},
		{"/%61pi/%78", "/api", "/x"},
		{"/api/%2e%2e", "/api", "/"},
		{"/api/a%2fb", "/api", "/a%2Fb"},
		{"/api/a%2Fb", "/api", "/a%2Fb"}, // normal, forwarded as sent
		{"/api%2Fx", "/api", "/api%2Fx"},
		{"/api/x", "/API", "/api/x"}, // case-sensitive
		{"//x", "", "/x"},
	} {
		if got := StripPrefix(c.path, c.prefix); got != c.want {
			t.Errorf("StripPrefix(%q, %q) = %q, want %q", c.path, c.prefix, got, c.want)
		}
		if got := string(AppendStripPrefix([]byte("GET "), []byte(c.path), c.prefix)); got != "GET "+c.want {
			t.Errorf("AppendStripPrefix(%q, %q) = %q, want %q", c.path, c.prefix, got, "GET "+c.want)
		}
	}
}

// thousandRoutes are the routes of the allocation test and the benchmarks:
// 500 prefixes and 500 exact paths, 1,000 in all.
func thousandRoutes(t testing.TB) *Table[int] {
	t.Helper()
	var ps []string
	for i := range 500 {
		ps = append(ps, fmt.Sprintf("/svc%d/*", i), fmt.Sprintf("/svc%d/v1/items", i))
	}
	return newTestTable(t, ps)
}

// benchPaths are paths in normal form (no copy), not (the stack buffer),
// and longer than the stack buffer, which is the one case that allocates.
var benchPaths = []struct{ name, path, want string }{
	{"normal", "/svc342/v1/users/42", "/svc342/*"},
	{"exact", "/svc342/v1/items", "/svc342/v1/items"},
	{"nomatch", "/other/v1/users/42", ""},
	{"encoded", "/svc342/./v1/%75sers//42", "/svc342/*"},
}

func TestMatchDoesNotAllocate(t *testing.T) {
	tab := thousandRoutes(t)
	for _, c := range benchPaths {
		b := []byte(c.path)
		var got string
		n := testing.AllocsPerRun(100, func() {
			_, got, _ = tab.Match(c.path)
			_, _, _ = tab.MatchBytes(b)
		})
		if n != 0 {
			t.Errorf("Match(%q): %v allocations, want 0", c.path, n)
		}
		if got != c.want {
			t.Errorf("Match(%q) = %q, want %q", c.path, got, c.want)
		}
		dst := make([]byte, 0, 256)
		n = testing.AllocsPerRun(100, func() {
			dst = AppendStripPrefix(dst[:0], b, "/svc342")
		})
		if n != 0 {
			t.Errorf("AppendStripPrefix(%q): %v allocations, want 0", c.path, n)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = StripPrefix("/svc342/v1/users/42", "/svc342") }); n != 0 {
		t.Errorf("StripPrefix of a path in normal form: %v allocations, want 0", n)
	}
}

func BenchmarkMatch1000Routes(b *testing.B) {
	tab := thousandRoutes(b)
	for _, c := range benchPaths {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				tab.Match(c.path)
			}
		})
		p := []byte(c.path)
		b.Run(c.name+"/bytes", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				tab.MatchBytes(p)
			}
		})
	}
}

func BenchmarkAppendStripPrefix(b *testing.B) {
	dst := make([]byte, 0, 256)
	for _, c := range benchPaths {
		p := []byte(c.path)
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				dst = AppendStripPrefix(dst[:0], p, "/svc342")
			}
		})
	}
}

// refNormal is the normal form written the slow, obvious way: split into
// segments, decode each, resolve dot-segments with a stack.
func refNormal(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		return p
	}
	segs := strings.Split(p[1:], "/")
	var out []string
	dir := false // the result ends in '/'
	for k, s := range segs {
		last := k == len(segs)-1
		switch s = refDecode(s); s {
		case "", ".":
			dir = last
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			dir = last
		default:
			out = append(out, s)
			dir = false
		}
	}
	r := "/" + strings.Join(out, "/")
	if dir && len(out) > 0 {
		r += "/"
	}
	return r
}

func refDecode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			b.WriteString("%25")
			continue
		}
		v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			b.WriteString("%25")
			continue
		}
		if c := byte(v); strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~", c) >= 0 {
			b.WriteByte(c)
		} else {
			b.WriteString("%" + strings.ToUpper(s[i+1:i+3]))
		}
		i += 2
	}
	return b.String()
}

// refMatch is Match written the slow, obvious way: try every pattern.
func refMatch(patterns []string, path string) string {
	n := refNormal(path)
	if n == "" || n[0] != '/' {
		return ""
	}
	best := ""
	bestLen := -1
	for _, p := range patterns {
		if p == n {
			return p
		}
		if k, ok := strings.CutSuffix(p, "/*"); ok && (n == k || strings.HasPrefix(n, k+"/")) && len(k) > bestLen {
			best, bestLen = p, len(k)
		}
	}
	return best
}

func FuzzMatch(f *testing.F) {
	patterns := append([]string{"/*", "/", "/a/*", "/a/b/*", "/a/b", "/a/", "/%25/*", "/.a/*", "/~/*"}, testRoutes...)
	tab := newTestTable(f, patterns)
	for _, s := range []string{"/", "", "//a", "/a/../b", "/%61/b/c", "/a/%2e%2e/x", "/a%2fb/c", "/%%36%31",
		"/a/b/..", "*", "/%2E%2e/%2e", "/api/v2/./health", "/%7E/x", "/a/b%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		n := string(AppendNormal(nil, path))
		if want := refNormal(path); n != want {
			t.Fatalf("AppendNormal(%q) = %q, reference %q", path, n, want)
		}
		if again := string(AppendNormal(nil, n)); again != n {
			t.Fatalf("AppendNormal(%q) = %q, again %q: not idempotent", path, n, again)
		}
		if clean(path) && n != path {
			t.Fatalf("clean(%q) but its normal form is %q", path, n)
		}
		if IsNormal(path) != (n == path && path != "" && path[0] == '/') {
			t.Fatalf("IsNormal(%q) = %v, normal form %q", path, IsNormal(path), n)
		}
		v, pat, ok := tab.Match(path)
		if want := refMatch(patterns, path); pat != want || ok != (want != "") {
			t.Fatalf("Match(%q) = %q %v, reference %q", path, pat, ok, want)
		}
		if ok {
			if patterns[v] != pat {
				t.Fatalf("Match(%q) value %d, pattern %q", path, v, pat)
			}
			if k, prefix := strings.CutSuffix(pat, "/*"); prefix && n != k && !strings.HasPrefix(n, k+"/") {
				t.Fatalf("Match(%q) = %q, not a segment prefix of %q", path, pat, n)
			} else if !prefix && n != pat {
				t.Fatalf("Match(%q) = exact %q, normal form %q", path, pat, n)
			}
		}
		if _, pat2, ok2 := tab.MatchBytes([]byte(path)); pat2 != pat || ok2 != ok {
			t.Fatalf("MatchBytes(%q) = %q %v, Match %q %v", path, pat2, ok2, pat, ok)
		}
		if path == "" || path[0] != '/' {
			return
		}
		for _, prefix := range []string{"", "/a", "/a/b"} {
			up := StripPrefix(path, prefix)
			if b := string(AppendStripPrefix(nil, []byte(path), prefix)); b != up {
				t.Fatalf("AppendStripPrefix(%q, %q) = %q, StripPrefix %q", path, prefix, b, up)
			}
			switch {
			case up == "" || up[0] != '/':
				t.Fatalf("StripPrefix(%q, %q) = %q", path, prefix, up)
			case prefix == "" && up != n:
				t.Fatalf("StripPrefix(%q, \"\") = %q, normal form %q", path, up, n)
			case prefix != "" && n == prefix && up != "/":
				t.Fatalf("StripPrefix(%q, %q) = %q, want /", path, prefix, up)
			case prefix != "" && strings.HasPrefix(n, prefix+"/") && prefix+up != n:
				t.Fatalf("StripPrefix(%q, %q) = %q, normal form %q", path, prefix, up, n)
			case prefix != "" && n != prefix && !strings.HasPrefix(n, prefix+"/") && up != n:
				t.Fatalf("StripPrefix(%q, %q) = %q, want the normal form %q", path, prefix, up, n)
			}
		}
	})
}

// TestLongPath: a path longer than the stack buffer and not in normal form
// is normalised on the heap, with the same answer.
func TestLongPath(t *testing.T) {
	tab := newTestTable(t, testRoutes)
	long := "//api/" + strings.Repeat("%61/", 1000) + "x"
	if _, pat, ok := tab.Match(long); !ok || pat != "/api/*" {
		t.Errorf("Match(long) = %q, %v", pat, ok)
	}
	if _, pat, ok := tab.Match("/" + strings.Repeat("../", 2000) + "health"); !ok || pat != "/health" {
		t.Errorf("Match(long traversal) = %q, %v", pat, ok)
	}
	if got, want := StripPrefix(long, "/api"), "/"+strings.Repeat("a/", 1000)+"x"; got != want {
		t.Errorf("StripPrefix(long) = %.40q…, want %.40q…", got, want)
	}
}
