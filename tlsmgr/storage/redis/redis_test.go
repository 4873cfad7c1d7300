package redisstorage_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/portico-proxy/portico/integration/testkit"
	redisstorage "github.com/portico-proxy/portico/tlsmgr/storage/redis"
	"github.com/portico-proxy/portico/tlsmgr/storage/redis/redisserver"
	"github.com/portico-proxy/portico/tlsmgr/storage/storagetest"
)

// TestMain lets the test binary double as the child process of the
// multi-process lock tests (see lockchild_test.go).
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(runLockChild())
	}
	os.Exit(m.Run())
}

// newStorage returns a Storage on srv that is closed when the test ends.
func newStorage(t testing.TB, srv *redisserver.Server, opts redisstorage.Options) *redisstorage.Storage {
	t.Helper()
	if opts.URL == "" && srv != nil {
		opts.URL = srv.URL()
	}
	if opts.Logger == nil {
		opts.Logger = zaptest.NewLogger(t)
	}
	s, err := redisstorage.New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// rawClient gives tests direct access to the server, to inspect what the
// storage wrote or to simulate what another party does.
func rawClient(t testing.TB, srv *redisserver.Server) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { c.Close() })
	return c
}

// TestConformance runs the shared certmagic.Storage suite. All subtests
// share one server, each with its own prefix, which also exercises
// prefix isolation under load. A short LockTTL makes the lock refresh
// run during the lock subtests.
func TestConformance(t *testing.T) {
	srv := redisserver.Start(t)
	var n atomic.Int32
	storagetest.Run(t, func(t *testing.T) certmagic.Storage {
		return newStorage(t, srv, redisstorage.Options{
			Prefix:  fmt.Sprintf("conformance%d", n.Add(1)),
			LockTTL: time.Second,
		})
	})
}

// TestMatchesFileStorage builds the same tree in certmagic.FileStorage
// and in Redis and requires identical answers from List (both modes),
// Exists and Stat for every path in it and for a few that are not.
func TestMatchesFileStorage(t *testing.T) {
	srv := redisserver.Start(t)
	ctx := t.Context()
	rs := newStorage(t, srv, redisstorage.Options{})
	fsys := &certmagic.FileStorage{Path: t.TempDir()}

	files := []string{
		"certificates/acme-v02.api.letsencrypt.org-directory/example.net/example.net.crt",
		"certificates/acme-v02.api.letsencrypt.org-directory/example.net/example.net.key",
		"certificates/acme-v02.api.letsencrypt.org-directory/example.net/example.net.json",
		"certificates/acme-v02.api.letsencrypt.org-directory/*.example.net/*.example.net.crt",
		"certificates/acme-staging-v02.api.letsencrypt.org-directory/a.example/a.example.crt",
		"acme/acme-v02.api.letsencrypt.org-directory/users/admin@example.net/admin.json",
		"acme/acme-v02.api.letsencrypt.org-directory/users/admin@example.net/admin.key",
		"ocsp/example.net-abc",
		"a/b/c/d/e",
		"a/b-c",
		"a/b.c/x",
		"doomed/dir/x",
		"kept/x",
		"kept/doomed",
		"top",
	}
	for _, s := range []certmagic.Storage{rs, fsys} {
		for _, k := range files {
			if err := s.Store(ctx, k, []byte("v:"+k)); err != nil {
				t.Fatalf("%v Store(%q): %v", s, k, err)
			}
		}
		if err := s.Store(ctx, "a/b-c", []byte("overwritten")); err != nil {
			t.Fatal(err)
		}
		// Deletes that leave their parent non-empty: FileStorage keeps
		// emptied directories, Redis does not, so avoid creating any.
		for _, k := range []string{"doomed", "kept/doomed"} {
			if err := s.Delete(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
	}

	// Every file, every directory, and some paths that do not exist.
	probe := map[string]bool{"": true}
	for _, k := range files {
		for p := k; p != "."; p = path.Dir(p) {
			probe[p] = true
		}
	}
	for _, k := range []string{"doomed", "doomed/dir", "doomed/dir/x", "kept/doomed", "nope", "a/b/nope", "certificates/nope"} {
		probe[k] = true
	}

	for p := range probe {
		if p == "" {
			// FileStorage's root also holds its "locks" directory.
			continue
		}
		for _, rec := range []bool{false, true} {
			want, wantErr := fsys.List(ctx, p, rec)
			got, gotErr := rs.List(ctx, p, rec)
			if errors.Is(wantErr, fs.ErrNotExist) != errors.Is(gotErr, fs.ErrNotExist) || (wantErr == nil) != (gotErr == nil) {
				t.Errorf("List(%q, %v): FileStorage error %v, Redis error %v", p, rec, wantErr, gotErr)
				continue
			}
			slices.Sort(want)
			slices.Sort(got)
			if !slices.Equal(want, got) {
				t.Errorf("List(%q, %v):\n FileStorage %q\n Redis       %q", p, rec, want, got)
			}
		}
		if w, g := fsys.Exists(ctx, p), rs.Exists(ctx, p); w != g {
			t.Errorf("Exists(%q): FileStorage %v, Redis %v", p, w, g)
		}
		wi, wErr := fsys.Stat(ctx, p)
		gi, gErr := rs.Stat(ctx, p)
		if (wErr == nil) != (gErr == nil) || errors.Is(wErr, fs.ErrNotExist) != errors.Is(gErr, fs.ErrNotExist) {
			t.Errorf("Stat(%q): FileStorage error %v, Redis error %v", p, wErr, gErr)
			continue
		}
		if wErr != nil {
			continue
		}
		if wi.Key != gi.Key || wi.IsTerminal != gi.IsTerminal || (wi.IsTerminal && wi.Size != gi.Size) {
			t.Errorf("Stat(%q):\n FileStorage %+v\n Redis       %+v", p, wi, gi)
		}
	}
}

// TestKeyNormalization checks that keys are resolved the way
// FileStorage resolves them to file names: redundant slashes and "."
// components do not create different keys.
func TestKeyNormalization(t *testing.T) {
	srv := redisserver.Start(t)
	ctx := t.Context()
	s := newStorage(t, srv, redisstorage.Options{})
	if err := s.Store(ctx, "/n//a/./b/", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Load(ctx, "n/a/b"); err != nil || string(v) != "x" {
		t.Fatalf("Load(n/a/b) = %q, %v", v, err)
	}
	keys, err := s.List(ctx, "n/a/", false)
	if err != nil || !slices.Equal(keys, []string{"n/a/b"}) {
		t.Fatalf("List(n/a/) = %q, %v", keys, err)
	}
	if err := s.Store(ctx, "//", []byte("x")); err == nil {
		t.Fatal("Store at the root succeeded")
	}
}

// TestPrefixIsolation checks that two fleets sharing a Redis see neither
// each other's keys nor each other's locks.
func TestPrefixIsolation(t *testing.T) {
	srv := redisserver.Start(t)
	ctx := t.Context()
	a := newStorage(t, srv, redisstorage.Options{Prefix: "fleet-a"})
	b := newStorage(t, srv, redisstorage.Options{Prefix: "fleet-b"})

	for _, s := range []*redisstorage.Storage{a, b} {
		if err := s.Store(ctx, "certificates/ca/site/site.crt", []byte(s.String())); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Store(ctx, "only-a/x", []byte("a")); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*redisstorage.Storage{a, b} {
		v, err := s.Load(ctx, "certificates/ca/site/site.crt")
		if err != nil || string(v) != s.String() {
			t.Errorf("%v: Load = %q, %v; want its own value", s, v, err)
		}
	}
	if b.Exists(ctx, "only-a") {
		t.Error("fleet-b sees fleet-a's directory")
	}
	if _, err := b.List(ctx, "only-a", true); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("fleet-b List(only-a): %v, want fs.ErrNotExist", err)
	}
	keys, err := b.List(ctx, "", false)
	if err != nil || !slices.Equal(keys, []string{"certificates"}) {
		t.Errorf("fleet-b List(root) = %q, %v", keys, err)
	}
	if err := b.Delete(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if b.Exists(ctx, "certificates") {
		t.Error("fleet-b still has keys after deleting its root")
	}
	if v, err := a.Load(ctx, "certificates/ca/site/site.crt"); err != nil || string(v) != a.String() {
		t.Errorf("fleet-a lost data when fleet-b deleted its root: %q, %v", v, err)
	}

	// Locks of the same name are independent.
	for _, s := range []*redisstorage.Storage{a, b} {
		if ok, err := s.TryLock(ctx, "issue_cert_site"); !ok || err != nil {
			t.Fatalf("%v: TryLock = %v, %v", s, ok, err)
		}
	}
	for _, s := range []*redisstorage.Storage{a, b} {
		if err := s.Unlock(ctx, "issue_cert_site"); err != nil {
			t.Fatal(err)
		}
	}

	// Nothing was written outside the two prefixes. (SCAN is fine in a
	// test; the storage itself never scans.)
	raw := rawClient(t, srv)
	all, err := raw.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range all {
		if !strings.HasPrefix(k, "fleet-a:") && !strings.HasPrefix(k, "fleet-b:") {
			t.Errorf("key %q is outside both prefixes", k)
		}
	}
}

// TestDeletePrunesEmptyDirectories checks that a directory disappears
// with its last descendant and that no index entry outlives its data.
func TestDeletePrunesEmptyDirectories(t *testing.T) {
	srv := redisserver.Start(t)
	ctx := t.Context()
	s := newStorage(t, srv, redisstorage.Options{Prefix: "prune"})
	if err := s.Store(ctx, "solo/dir/sub/file", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := s.Store(ctx, "other", []byte("y")); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "solo/dir/sub/file"); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"solo", "solo/dir", "solo/dir/sub"} {
		if s.Exists(ctx, k) {
			t.Errorf("Exists(%q) = true after its last file was deleted", k)
		}
	}
	keys, err := s.List(ctx, "", false)
	if err != nil || !slices.Equal(keys, []string{"other"}) {
		t.Errorf("List(root) = %q, %v; want [other]", keys, err)
	}
	if err := s.Delete(ctx, "other"); err != nil {
		t.Fatal(err)
	}
	if n, err := rawClient(t, srv).DBSize(ctx).Result(); err != nil || n != 0 {
		t.Errorf("DBSIZE after deleting everything = %d, %v; want 0", n, err)
	}
}

// TestMissingBelowFile covers keys below a file, where FileStorage
// reports ENOTDIR rather than fs.ErrNotExist; Redis reports ErrNotExist.
func TestMissingBelowFile(t *testing.T) {
	srv := redisserver.Start(t)
	ctx := t.Context()
	s := newStorage(t, srv, redisstorage.Options{})
	if err := s.Store(ctx, "f", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ctx, "f/below"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(f/below): %v", err)
	}
	if _, err := s.Stat(ctx, "f/below"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat(f/below): %v", err)
	}
	if s.Exists(ctx, "f/below") {
		t.Error("Exists(f/below) = true")
	}
	keys, err := s.List(ctx, "f", true)
	if err != nil || len(keys) != 0 {
		t.Errorf("List of a file = %q, %v; want no keys and no error, like FileStorage", keys, err)
	}
}

// TestStatDirectoryModified checks that a directory's Modified is the
// time of its newest descendant, at every level, including after an
// older file is overwritten.
func TestStatDirectoryModified(t *testing.T) {
	srv := redisserver.Start(t)
	ctx := t.Context()
	s := newStorage(t, srv, redisstorage.Options{})
	modified := func(k string) time.Time {
		t.Helper()
		info, err := s.Stat(ctx, k)
		if err != nil {
			t.Fatalf("Stat(%q): %v", k, err)
		}
		return info.Modified
	}
	for _, k := range []string{"m/a/x", "m/b/y", "m/a/deep/z"} {
		if err := s.Store(ctx, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	z := modified("m/a/deep/z")
	if got := modified("m/a"); !got.Equal(z) {
		t.Errorf("Stat(m/a).Modified = %v, want newest descendant's %v", got, z)
	}
	if got := modified("m"); !got.Equal(z) {
		t.Errorf("Stat(m).Modified = %v, want %v", got, z)
	}
	if !modified("m/b").Before(z) {
		t.Errorf("Stat(m/b).Modified is not older than the later write")
	}
	if err := s.Store(ctx, "m/b/y", []byte("again")); err != nil {
		t.Fatal(err)
	}
	y := modified("m/b/y")
	if !y.After(z) {
		t.Fatalf("overwrite did not advance Modified: %v <= %v", y, z)
	}
	for _, d := range []string{"m/b", "m"} {
		if got := modified(d); !got.Equal(y) {
			t.Errorf("Stat(%q).Modified = %v after overwrite, want %v", d, got, y)
		}
	}
}

// TestStoreIsAtomicWithIndex looks at the raw Redis data: a value and
// its index entries are written together, and a failed Store (a
// conflict) writes nothing.
func TestStoreIsAtomicWithIndex(t *testing.T) {
	srv := redisserver.Start(t)
	ctx := t.Context()
	s := newStorage(t, srv, redisstorage.Options{Prefix: "raw"})
	raw := rawClient(t, srv)
	if err := s.Store(ctx, "d/f", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if v, err := raw.HGet(ctx, "raw:v:d/f", "value").Result(); err != nil || v != "v" {
		t.Errorf("HGET raw:v:d/f value = %q, %v", v, err)
	}
	for dir, member := range map[string]string{"raw:d:": "d", "raw:d:d": "f"} {
		if _, err := raw.ZScore(ctx, dir, member).Result(); err != nil {
			t.Errorf("ZSCORE %s %s: %v", dir, member, err)
		}
	}
	before, err := raw.DBSize(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Store(ctx, "d/f/g/h", []byte("below a file")); err == nil {
		t.Fatal("Store below a file succeeded")
	}
	if after, _ := raw.DBSize(ctx).Result(); after != before {
		t.Errorf("failed Store changed the number of keys from %d to %d", before, after)
	}
	if _, err := raw.ZScore(ctx, "raw:d:d", "f").Result(); err != nil {
		t.Errorf("index entry lost after failed Store: %v", err)
	}
}

// TestRedisDownAtConstruction starts with Redis unavailable: New must
// succeed without blocking, operations must fail with real errors (not
// "not found", which would make certmagic think it has to obtain
// certificates), and everything must work once Redis is up.
func TestRedisDownAtConstruction(t *testing.T) {
	srv := redisserver.Start(t)
	srv.Stop()
	start := time.Now()
	// Fewer client-side retries keep the outage phase short.
	s := newStorage(t, srv, redisstorage.Options{URL: srv.URL() + "?max_retries=-1", LockTTL: time.Second})
	if d := time.Since(start); d > time.Second {
		t.Errorf("New took %v with Redis down", d)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, err := s.Load(ctx, "some/key")
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load with Redis down: %v; want an error that is not fs.ErrNotExist", err)
	}
	if _, err := s.Stat(ctx, "some/key"); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat with Redis down: %v; want an error that is not fs.ErrNotExist", err)
	}
	if _, err := s.List(ctx, "some", false); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("List with Redis down: %v; want an error that is not fs.ErrNotExist", err)
	}
	if err := s.Ping(ctx); err == nil {
		t.Error("Ping with Redis down succeeded")
	}
	if err := s.Lock(ctx, "down"); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Lock with Redis down: %v; want a prompt error", err)
	}

	srv.Restart()
	testkit.Eventually(t, 15*time.Second, "storage to reconnect", func() bool { return s.Ping(ctx) == nil })
	if _, err := s.Load(ctx, "some/key"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load after Redis came up: %v; want fs.ErrNotExist", err)
	}
	if err := s.Store(ctx, "some/key", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Load(ctx, "some/key"); err != nil || string(v) != "v" {
		t.Fatalf("Load = %q, %v", v, err)
	}
}

// TestRedactURL covers well-formed URLs and malformed ones, where the
// password's position has to be guessed conservatively.
func TestRedactURL(t *testing.T) {
	cases := []struct{ in, want string }{
		{"redis://localhost:6379/0", "redis://localhost:6379/0"},
		{"redis://user:s3cret@redis.internal:6380/2", "redis://user:xxxxx@redis.internal:6380/2"},
		{"rediss://:s3cret@redis.internal/0?dial_timeout=3s", "rediss://:xxxxx@redis.internal/0?dial_timeout=3s"},
		{"redis://user@host", "redis://user@host"},
		{"redis://user:s3cr%2Fet@host", "redis://user:xxxxx@host"},
		// Unescaped '@' in the password: net/url takes the last '@'.
		{"redis://user:p@ss@host:6379", "redis://user:xxxxx@host:6379"},
		// Unescaped '/' in a numeric password: parses, wrongly, as host
		// "user" with port 123.
		{"redis://user:123/456@host", "redis://xxxxx@host"},
		// Invalid port after a password.
		{"redis://user:s3cret@host:notaport", "redis://xxxxx@host:notaport"},
		{"user:s3cret@host", "xxxxx@host"},
		{"", ""},
	}
	for _, c := range cases {
		got := redisstorage.RedactURL(c.in)
		if got != c.want {
			t.Errorf("RedactURL(%q) = %q, want %q", c.in, got, c.want)
		}
		if strings.Contains(got, "s3cret") || strings.Contains(got, "456") {
			t.Errorf("RedactURL(%q) = %q leaks the password", c.in, got)
		}
	}
}

// TestSecretsNotInErrors checks every place a URL can surface.
func TestSecretsNotInErrors(t *testing.T) {
	const secret = "s3cretpw"
	for _, u := range []string{
		"redis://user:" + secret + "@host:notaport/0",
		"redis://user:" + secret + "@host:6379/notadb",
		"http://user:" + secret + "@host:6379/0",
		"redis://user:" + secret + "@ho st:6379/0",
		"redis://user:" + secret + "@host:6379/0?bogus_option=1",
	} {
		_, err := redisstorage.New(redisstorage.Options{URL: u})
		if err == nil {
			t.Errorf("New(%q) succeeded", redisstorage.RedactURL(u))
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("New error leaks the password: %v", err)
		}
		t.Logf("New error: %v", err)
	}

	// A server without a password rejects AUTH; the resulting errors
	// and the String form must not reveal what was sent.
	srv := redisserver.Start(t)
	s := newStorage(t, srv, redisstorage.Options{URL: "redis://someone:" + secret + "@" + srv.Addr + "/0"})
	if strings.Contains(s.String(), secret) || !strings.Contains(s.String(), srv.Addr) {
		t.Errorf("String() = %q", s.String())
	}
	ctx := t.Context()
	err := s.Ping(ctx)
	if err == nil {
		t.Fatal("Ping with a wrong password succeeded")
	}
	_, loadErr := s.Load(ctx, "k")
	t.Logf("String: %s\nPing error: %v\nLoad error: %v", s, err, loadErr)
	for _, e := range []error{err, loadErr} {
		if e == nil || strings.Contains(e.Error(), secret) {
			t.Errorf("error %v: want an error not containing the password", e)
		}
	}
}

// TestNewValidation checks option validation.
func TestNewValidation(t *testing.T) {
	for name, o := range map[string]redisstorage.Options{
		"no URL":            {},
		"unix scheme":       {URL: "unix:///tmp/redis.sock"},
		"prefix with colon": {URL: "redis://localhost", Prefix: "a:b"},
		"prefix with brace": {URL: "redis://localhost", Prefix: "{a}"},
		"TTL too short":     {URL: "redis://localhost", LockTTL: time.Millisecond},
		"negative TTL":      {URL: "redis://localhost", LockTTL: -time.Second},
	} {
		if _, err := redisstorage.New(o); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
	s, err := redisstorage.New(redisstorage.Options{URL: "rediss://localhost:6380/3"})
	if err != nil {
		t.Fatalf("New with rediss URL: %v", err)
	}
	defer s.Close()
	if want := `prefix="portico"`; !strings.Contains(s.String(), want) {
		t.Errorf("String() = %q, want it to mention %s", s.String(), want)
	}
}

// TestLoadMany: a batched read returns what single reads return, with
// fs.ErrNotExist for missing keys, and an error when it cannot ask.
func TestLoadMany(t *testing.T) {
	srv := redisserver.Start(t)
	s := newStorage(t, srv, redisstorage.Options{Prefix: "many"})
	ctx := context.Background()
	for k, v := range map[string]string{"a/b.crt": "cert", "a/b.json": "{}", "a/empty": ""} {
		if err := s.Store(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	keys := []string{"a/b.crt", "a/missing", "a/b.json", "a/empty", "a"}
	values, errs := s.LoadMany(ctx, keys)
	if len(values) != len(keys) || len(errs) != len(keys) {
		t.Fatalf("%d values and %d errors for %d keys", len(values), len(errs), len(keys))
	}
	for i, k := range keys {
		v, err := s.Load(ctx, k)
		if string(v) != string(values[i]) || errors.Is(err, fs.ErrNotExist) != errors.Is(errs[i], fs.ErrNotExist) || (err == nil) != (errs[i] == nil) {
			t.Errorf("%s: LoadMany gave %q, %v; Load gives %q, %v", k, values[i], errs[i], v, err)
		}
	}
	if !errors.Is(errs[1], fs.ErrNotExist) {
		t.Errorf("missing key: %v", errs[1])
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, errs := s.LoadMany(cancelled, keys[:1]); errs[0] == nil {
		t.Error("a cancelled batch reported no error")
	}
}
