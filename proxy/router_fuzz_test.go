package proxy

import (
	"strings"
	"testing"
)

// FuzzRouterLookup feeds arbitrary Host headers (and SNI values, which take
// the same path) to the router: it must never panic, an unknown host never
// routes to a site it does not match, and every configured host is found
// whatever its case, port or trailing dot.
func FuzzRouterLookup(f *testing.F) {
	for _, seed := range []string{
		"app.example.net", "APP.Example.Net.", "app.example.net:443", "[::1]:8443", "[::1", "::1",
		"x.wild.example.net", "wild.example.net", "a.b.wild.example.net", "", ".", ":", "*.wild.example.net",
		"app.example.net:", "app.example.net::443", "\x00", "é.example.net", strings.Repeat("a.", 200),
	} {
		f.Add(seed)
	}
	exact, wild := &Site{name: "exact"}, &Site{name: "wild"}
	r := newRouter()
	r.add("app.example.net", exact)
	r.add("*.wild.example.net", wild)
	f.Fuzz(func(t *testing.T, host string) {
		s := r.Lookup(host)
		h := strings.ToLower(strings.TrimSuffix(stripPort(host), "."))
		switch s {
		case exact:
			if h != "app.example.net" {
				t.Fatalf("%q routed to app.example.net", host)
			}
		case wild:
			if !strings.HasSuffix(h, ".wild.example.net") || strings.Count(h, ".") != 3 {
				t.Fatalf("%q routed to *.wild.example.net", host)
			}
		}
		// a configured host in any spelling is found
		if h == "app.example.net" && s != exact {
			t.Fatalf("%q did not route to app.example.net", host)
		}
	})
}
