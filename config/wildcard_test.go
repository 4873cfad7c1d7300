package config

import "testing"

// TestWildcardRule: "*.x" covers the names one label under x, ignoring
// case, and nothing else; the suffix is a slice of the name.
func TestWildcardRule(t *testing.T) {
	for _, tc := range []struct {
		host, name string
		want       bool
	}{
		{"*.example.net", "a.example.net", true},
		{"*.example.net", "A.Example.NET", true},
		{"*.example.net", "example.net", false},
		{"*.example.net", "a.b.example.net", false},
		{"*.example.net", ".example.net", false},
		{"app.example.net", "APP.example.net", true},
		{"app.example.net", "x.app.example.net", false},
		{"*", "localhost", false},
		{"*.net", "example.net", true},
	} {
		if got := HostCovers(tc.host, tc.name); got != tc.want {
			t.Errorf("HostCovers(%q, %q) = %v, want %v", tc.host, tc.name, got, tc.want)
		}
	}
	if s, ok := WildcardSuffix([]byte("a.example.net")); !ok || string(s) != ".example.net" {
		t.Errorf("WildcardSuffix = %q, %v", s, ok)
	}
	if _, ok := WildcardSuffix("localhost"); ok {
		t.Error("a one-label name has a wildcard suffix")
	}
	if w, ok := WildcardFor("a.example.net"); !ok || w != "*.example.net" {
		t.Errorf("WildcardFor = %q, %v", w, ok)
	}
}
