package proxy

import (
	"fmt"
	"testing"
)

func testRouter() (r *Router, app, wild, exactUnderWild, ip *Site) {
	r = newRouter()
	app = &Site{name: "app.example.com"}
	wild = &Site{name: "*.example.net"}
	exactUnderWild = &Site{name: "www.example.net"}
	ip = &Site{name: "::1"}
	r.add("app.example.com", app)
	r.add("*.example.net", wild)
	r.add("www.example.net", exactUnderWild)
	r.add("::1", ip)
	return
}

func TestRouterLookup(t *testing.T) {
	r, app, wild, exactUnderWild, ip := testRouter()
	for _, tc := range []struct {
		host string
		want *Site
	}{
		{"app.example.com", app},
		{"APP.Example.COM", app},               // case-insensitive
		{"app.example.com:443", app},           // port stripped
		{"app.example.com:8443", app},          // any port
		{"app.example.com.", app},              // trailing dot
		{"App.Example.Com.:8443", app},         // all three
		{"a.example.net", wild},                // wildcard
		{"A.EXAMPLE.NET:443", wild},            // wildcard, case and port
		{"a.example.net.", wild},               // wildcard, trailing dot
		{"example.net", nil},                   // wildcard does not cover its parent
		{"a.b.example.net", nil},               // nor two labels down
		{".example.net", nil},                  // nor an empty label
		{"www.example.net", exactUnderWild},    // exact wins over wildcard
		{"WWW.example.net:80", exactUnderWild}, // exact wins, normalised
		{"[::1]:443", ip},                      // bracketed IPv6 with port
		{"[::1]", ip},
		{"::1", ip},
		{"unknown.example.org", nil},
		{"example.com", nil},
		{"xapp.example.com", nil},
		{"", nil},
		{":443", nil},
		{".", nil},
	} {
		if got := r.Lookup(tc.host); got != tc.want {
			t.Errorf("Lookup(%q) = %v, want %v", tc.host, siteName(got), siteName(tc.want))
		}
	}
}

// TestRouterAddNormalises checks that hosts given in upper case or with a
// trailing dot (a config not passed through config.Load) still route.
func TestRouterAddNormalises(t *testing.T) {
	r := newRouter()
	s := &Site{name: "x"}
	w := &Site{name: "w"}
	r.add("App.Example.COM.", s)
	r.add("*.Example.NET", w)
	if got := r.Lookup("app.example.com"); got != s {
		t.Errorf("Lookup(app.example.com) = %v, want x", siteName(got))
	}
	if got := r.Lookup("a.example.net"); got != w {
		t.Errorf("Lookup(a.example.net) = %v, want w", siteName(got))
	}
}

// TestRouterLookupAllocs pins the hot path: a lower-case Host header, with or
// without a port or trailing dot, found or not, allocates nothing.
func TestRouterLookupAllocs(t *testing.T) {
	r, _, _, _, _ := testRouter()
	for _, host := range []string{"app.example.com", "app.example.com:443", "app.example.com.", "a.example.net", "a.b.example.net", "unknown.example.org", "[::1]:443"} {
		if n := testing.AllocsPerRun(200, func() { r.Lookup(host) }); n != 0 {
			t.Errorf("Lookup(%q): %v allocs/op, want 0", host, n)
		}
	}
}

func siteName(s *Site) string {
	if s == nil {
		return "<nil>"
	}
	return s.name
}

// BenchmarkRouterLookup looks hosts up in a router of 100,000 exact hosts and
// 1,000 wildcards.
func BenchmarkRouterLookup(b *testing.B) {
	const n = 100_000
	r := newRouter()
	hosts := make([]string, n)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("host-%d.customer-%d.example.com", i, i%997)
		r.add(hosts[i], &Site{name: hosts[i]})
	}
	for i := 0; i < 1000; i++ {
		r.add(fmt.Sprintf("*.wild-%d.example.net", i), &Site{})
	}
	withPort := make([]string, 1024)
	upper := make([]string, 1024)
	wild := make([]string, 1024)
	for i := range withPort {
		withPort[i] = hosts[i*97%n] + ":443"
		upper[i] = "HOST-" + hosts[i*97%n][len("host-"):]
		wild[i] = fmt.Sprintf("a.wild-%d.example.net", i%1000)
	}
	run := func(name string, in []string, wantFound bool) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if s := r.Lookup(in[i%len(in)]); (s != nil) != wantFound {
					b.Fatalf("Lookup(%q) = %v", in[i%len(in)], s)
				}
			}
		})
	}
	run("exact", hosts, true)
	run("exact-with-port", withPort, true)
	run("wildcard", wild, true)
	run("miss", []string{"nobody.example.org", "a.b.wild-1.example.net"}, false)
	run("upper-case", upper, true)
}
