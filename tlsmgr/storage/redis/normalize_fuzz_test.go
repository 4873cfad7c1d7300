package redisstorage

import (
	"strings"
	"testing"
)

// FuzzNormalize: the canonical form of a storage key is stable (normalizing
// twice changes nothing), has no empty, "." or ".." component, and the Redis
// keys of two different prefixes never collide.
func FuzzNormalize(f *testing.F) {
	for _, seed := range []string{"certificates/a/b.crt", "/a//b/", "a/../../b", "./a", "", "/", "..", "a/./b",
		"wildcard_.example.net", "acme/ca:443/users/ops@example.net", "a\x00b", "a:v:b"} {
		f.Add(seed)
	}
	a := &Storage{prefix: "fleet"}
	b := &Storage{prefix: "fleet2"}
	f.Fuzz(func(t *testing.T, key string) {
		n := normalize(key)
		if normalize(n) != n {
			t.Fatalf("normalize not idempotent: %q → %q → %q", key, n, normalize(n))
		}
		if n != "" {
			for _, part := range strings.Split(n, "/") {
				if part == "" || part == "." || part == ".." {
					t.Fatalf("%q normalized to %q with component %q", key, n, part)
				}
			}
		}
		if a.valueKey(n) == b.valueKey(n) || a.dirKey(n) == b.dirKey(n) || a.valueKey(n) == a.dirKey(n) {
			t.Fatalf("key %q collides across prefixes or kinds", n)
		}
	})
}
