// Package storagetest is a conformance suite for certmagic.Storage
// implementations.
//
// It checks the file-system semantics certmagic relies on (values,
// implicit directories, Delete of whole subtrees, fs.ErrNotExist for
// missing keys, the directory modification times used to pick the
// newest ACME account) and the locking contract (mutual exclusion,
// blocking, context cancellation, TryLock). It is run against
// certmagic.FileStorage, the reference implementation, so every
// assertion here is one that FileStorage satisfies too; where
// FileStorage and an ideal key-value store legitimately differ (whether
// a recursive List also names the directories it walks, whether a
// directory emptied by Delete still exists) the suite accepts both.
package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

// lockWait bounds how long lock subtests wait for something that should
// happen. It is long because certmagic.FileStorage polls its lock files
// only once a second and -race slows everything down.
const lockWait = 2 * time.Minute

// Run runs the suite. newStorage must return an empty Storage that
// shares no keys or locks with any other Storage it returns; it is
// called once per subtest and should register its own cleanup with t.
func Run(t *testing.T, newStorage func(t *testing.T) certmagic.Storage) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s certmagic.Storage)
	}{
		{"StoreLoad", testStoreLoad},
		{"Overwrite", testOverwrite},
		{"MissingKeys", testMissingKeys},
		{"StoreConflicts", testStoreConflicts},
		{"DeleteFile", testDeleteFile},
		{"DeleteSubtree", testDeleteSubtree},
		{"DeleteMissing", testDeleteMissing},
		{"Exists", testExists},
		{"ListNonRecursive", testListNonRecursive},
		{"ListRecursive", testListRecursive},
		{"StatFile", testStatFile},
		{"StatDirectory", testStatDirectory},
		{"NewestAccountSelection", testNewestAccountSelection},
		{"OddKeys", testOddKeys},
		{"ConcurrentStoreLoad", testConcurrentStoreLoad},
		{"LockMutualExclusion", testLockMutualExclusion},
		{"LockBlocksUntilUnlock", testLockBlocksUntilUnlock},
		{"LockContextCancel", testLockContextCancel},
		{"LockDistinctNames", testLockDistinctNames},
		{"TryLock", testTryLock},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStorage(t))
		})
	}
}

func testStoreLoad(t *testing.T, s certmagic.Storage) {
	binary := make([]byte, 256)
	for i := range binary {
		binary[i] = byte(i)
	}
	cases := map[string][]byte{
		"sl/a/b/c.txt": []byte("hello"),
		"sl/binary":    binary,
		"sl/empty":     {},
		"top":          []byte("at the root"),
	}
	for k, v := range cases {
		mustStore(t, s, k, v)
	}
	for k, v := range cases {
		if got := mustLoad(t, s, k); !bytes.Equal(got, v) {
			t.Errorf("Load(%q) = %q, want %q", k, got, v)
		}
	}
	// Storage must not keep a reference to the caller's buffer.
	buf := []byte("original")
	mustStore(t, s, "sl/buf", buf)
	copy(buf, "MUTATED!")
	if got := mustLoad(t, s, "sl/buf"); string(got) != "original" {
		t.Errorf("Load after mutating the stored slice = %q, want %q", got, "original")
	}
}

func testOverwrite(t *testing.T, s certmagic.Storage) {
	ctx := t.Context()
	mustStore(t, s, "ow/key", []byte("first value, longer"))
	mustStore(t, s, "ow/key", []byte("second"))
	if got := mustLoad(t, s, "ow/key"); string(got) != "second" {
		t.Errorf("Load after overwrite = %q, want %q", got, "second")
	}
	info, err := s.Stat(ctx, "ow/key")
	if err != nil {
		t.Fatalf("Stat after overwrite: %v", err)
	}
	if info.Size != int64(len("second")) {
		t.Errorf("Stat after overwrite: Size = %d, want %d", info.Size, len("second"))
	}
	keys, err := s.List(ctx, "ow", false)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	assertSameKeys(t, "List after overwrite", keys, []string{"ow/key"})
}

func testMissingKeys(t *testing.T, s certmagic.Storage) {
	ctx := t.Context()
	mustStore(t, s, "present/file", []byte("x"))

	// Keys below a file are not checked: FileStorage reports ENOTDIR
	// for them, which is not fs.ErrNotExist.
	for _, k := range []string{"absent", "absent/deeper/key", "present/absent"} {
		_, err := s.Load(ctx, k)
		assertNotExist(t, "Load("+k+")", err)
		_, err = s.Stat(ctx, k)
		assertNotExist(t, "Stat("+k+")", err)
	}
	for _, dir := range []string{"absent", "absent/deeper", "present/absent"} {
		for _, rec := range []bool{false, true} {
			_, err := s.List(ctx, dir, rec)
			assertNotExist(t, fmt.Sprintf("List(%q, %v)", dir, rec), err)
		}
	}
}

// testStoreConflicts checks that a key cannot be both a file and a
// directory: FileStorage cannot create such a thing, so certmagic
// never depends on it, and a backend that allowed it would make Delete
// and List ambiguous.
func testStoreConflicts(t *testing.T, s certmagic.Storage) {
	ctx := t.Context()
	mustStore(t, s, "cf/dir/file", []byte("in dir"))
	mustStore(t, s, "cf/file", []byte("a file"))

	if err := s.Store(ctx, "cf/dir", []byte("over a directory")); err == nil {
		t.Error("Store at a key that is a directory succeeded; want an error")
	}
	if err := s.Store(ctx, "cf/file/below", []byte("below a file")); err == nil {
		t.Error("Store below a key that is a file succeeded; want an error")
	}
	if got := mustLoad(t, s, "cf/dir/file"); string(got) != "in dir" {
		t.Errorf("Load(cf/dir/file) after failed Store = %q", got)
	}
	if got := mustLoad(t, s, "cf/file"); string(got) != "a file" {
		t.Errorf("Load(cf/file) after failed Store = %q", got)
	}
	keys, err := s.List(ctx, "cf", true)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	assertSameKeys(t, "List(cf, true) after failed Stores", keys, []string{"cf/dir", "cf/dir/file", "cf/file"})
}

func testDeleteFile(t *testing.T, s certmagic.Storage) {
	ctx := t.Context()
	mustStore(t, s, "df/one", []byte("1"))
	mustStore(t, s, "df/two", []byte("2"))
	if err := s.Delete(ctx, "df/one"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	_, err := s.Load(ctx, "df/one")
	assertNotExist(t, "Load of deleted key", err)
	_, err = s.Stat(ctx, "df/one")
	assertNotExist(t, "Stat of deleted key", err)
	if s.Exists(ctx, "df/one") {
		t.Error("Exists of deleted key = true")
	}
	if got := mustLoad(t, s, "df/two"); string(got) != "2" {
		t.Errorf("sibling of deleted key: Load = %q, want %q", got, "2")
	}
	keys, err := s.List(ctx, "df", false)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	assertSameKeys(t, "List after Delete", keys, []string{"df/two"})

	// A deleted key can be stored again.
	mustStore(t, s, "df/one", []byte("again"))
	if got := mustLoad(t, s, "df/one"); string(got) != "again" {
		t.Errorf("Load after re-Store = %q", got)
	}
}

func testDeleteSubtree(t *testing.T, s certmagic.Storage) {
	ctx := t.Context()
	gone := []string{"ds/a/1", "ds/a/b/2", "ds/a/b/c/3", "ds/a/b/c/d/4"}
	kept := []string{"ds/ab/5", "ds/a.b", "ds/z"} // "ds/ab" shares a string prefix, not a path prefix
	for _, k := range append(slices.Clone(gone), kept...) {
		mustStore(t, s, k, []byte(k))
	}
	if err := s.Delete(ctx, "ds/a"); err != nil {
		t.Fatalf("Delete(ds/a): %v", err)
	}
	for _, k := range append(slices.Clone(gone), "ds/a", "ds/a/b", "ds/a/b/c") {
		if s.Exists(ctx, k) {
			t.Errorf("Exists(%q) = true after deleting its ancestor", k)
		}
		_, err := s.Stat(ctx, k)
		assertNotExist(t, "Stat("+k+") after deleting its ancestor", err)
	}
	for _, k := range gone {
		_, err := s.Load(ctx, k)
		assertNotExist(t, "Load("+k+") after deleting its ancestor", err)
	}
	for _, k := range kept {
		if got := mustLoad(t, s, k); string(got) != k {
			t.Errorf("Load(%q) = %q after deleting ds/a", k, got)
		}
	}
	keys, err := s.List(ctx, "ds", false)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	assertSameKeys(t, "List(ds) after Delete(ds/a)", keys, []string{"ds/ab", "ds/a.b", "ds/z"})

	// The deleted path is free for reuse, as a file or as a directory.
	mustStore(t, s, "ds/a", []byte("now a file"))
	if got := mustLoad(t, s, "ds/a"); string(got) != "now a file" {
		t.Errorf("Load(ds/a) after reuse = %q", got)
	}
}

func testDeleteMissing(t *testing.T, s certmagic.Storage) {
	ctx := t.Context()
	if err := s.Delete(ctx, "never/stored"); err != nil {
		t.Errorf("Delete of a missing key: %v, want nil", err)
	}
	mustStore(t, s, "dm/key", []byte("x"))
	for i := 0; i < 2; i++ {
		if err := s.Delete(ctx, "dm/key"); err != nil {
			t.Errorf("Delete #%d: %v, want nil", i+1, err)
		}
	}
	if err := s.Delete(ctx, "dm/key/below"); err != nil {
		t.Errorf("Delete below a missing key: %v, want nil", err)
	}
}

func testExists(t *testing.T, s certmagic.Storage) {
	ctx := t.Context()
	mustStore(t, s, "ex/d1/d2/file", []byte("x"))
	for _, k := range []string{"ex", "ex/d1", "ex/d1/d2", "ex/d1/d2/file"} {
		if !s.Exists(ctx, k) {
			t.Errorf("Exists(%q) = false, want true", k)
		}
	}
	// Keys below a file are not checked: FileStorage's Exists reports
	// true for them (its stat fails with ENOTDIR, not ErrNotExist).
	for _, k := range []string{"ex/d", "ex/d1/d", "ex/d1/d2/fil", "nothing"} {
		if s.Exists(ctx, k) {
			t.Errorf("Exists(%q) = true, want false", k)
		}
	}
}

// listTreeFiles is the layout the List subtests work on. Directories are
// implicit: only files are stored.
var listTreeFiles = []string{
	"ls/f1",
	"ls/f2",
	"ls/d1/x/y/deep",
	"ls/d2/g",
	"ls/d2/h",
	"lsx/not-below-ls",
	"other/file",
}

func testListNonRecursive(t *testing.T, s certmagic.Storage) {
	ctx := t.Context()
	for _, k := range listTreeFiles {
		mustStore(t, s, k, []byte(k))
	}
	cases := map[string][]string{
		"ls":        {"ls/f1", "ls/f2", "ls/d1", "ls/d2"},
		"ls/d1":     {"ls/d1/x"},
		"ls/d1/x":   {"ls/d1/x/y"},
		"ls/d1/x/y": {"ls/d1/x/y/deep"},
		"ls/d2":     {"ls/d2/g", "ls/d2/h"},
	}
	for dir, want := range cases {
		got, err := s.List(ctx, dir, false)
		if err != nil {
			t.Errorf("List(%q, false): %v", dir, err)
			continue
		}
		assertSameKeys(t, fmt.Sprintf("List(%q, false)", dir), got, want)
	}
}

// testListRecursive checks that a recursive List returns every file
// below the directory and nothing outside it. certmagic.FileStorage
// also returns the directories it walks through; an implementation that
// returns only files is accepted too.
func testListRecursive(t *testing.T, s certmagic.Storage) {
	ctx := t.Context()
	for _, k := range listTreeFiles {
		mustStore(t, s, k, []byte(k))
	}
	cases := map[string]struct{ files, dirs []string }{
		"ls": {
			files: []string{"ls/f1", "ls/f2", "ls/d1/x/y/deep", "ls/d2/g", "ls/d2/h"},
			dirs:  []string{"ls/d1", "ls/d1/x", "ls/d1/x/y", "ls/d2"},
		},
		"ls/d1": {
			files: []string{"ls/d1/x/y/deep"},
			dirs:  []string{"ls/d1/x", "ls/d1/x/y"},
		},
		"ls/d2": {
			files: []string{"ls/d2/g", "ls/d2/h"},
		},
	}
	for dir, want := range cases {
		got, err := s.List(ctx, dir, true)
		if err != nil {
			t.Errorf("List(%q, true): %v", dir, err)
			continue
		}
		seen := map[string]bool{}
		for _, k := range got {
			if seen[k] {
				t.Errorf("List(%q, true) returned %q twice", dir, k)
			}
			seen[k] = true
			if !slices.Contains(want.files, k) && !slices.Contains(want.dirs, k) {
				t.Errorf("List(%q, true) returned %q, which is not below it", dir, k)
			}
		}
		for _, f := range want.files {
			if !seen[f] {
				t.Errorf("List(%q, true) = %q, missing file %q", dir, got, f)
			}
		}
	}
}

func testStatFile(t *testing.T, s certmagic.Storage) {
	ctx := t.Context()
	before := time.Now()
	mustStore(t, s, "st/file.json", []byte(`{"k":"v"}`))
	after := time.Now()
	info, err := s.Stat(ctx, "st/file.json")
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if info.Key != "st/file.json" {
		t.Errorf("Stat: Key = %q, want %q", info.Key, "st/file.json")
	}
	if !info.IsTerminal {
		t.Error("Stat of a file: IsTerminal = false")
	}
	if info.Size != int64(len(`{"k":"v"}`)) {
		t.Errorf("Stat: Size = %d, want %d", info.Size, len(`{"k":"v"}`))
	}
	assertTimeWithin(t, "Stat of a file: Modified", info.Modified, before, after)
}

func testStatDirectory(t *testing.T, s certmagic.Storage) {
	ctx := t.Context()
	before := time.Now()
	mustStore(t, s, "sd/dir/sub/file", []byte("x"))
	after := time.Now()
	for _, k := range []string{"sd", "sd/dir", "sd/dir/sub"} {
		info, err := s.Stat(ctx, k)
		if err != nil {
			t.Errorf("Stat(%q): %v", k, err)
			continue
		}
		if info.Key != k {
			t.Errorf("Stat(%q): Key = %q", k, info.Key)
		}
		if info.IsTerminal {
			t.Errorf("Stat(%q) of a directory: IsTerminal = true", k)
		}
		assertTimeWithin(t, fmt.Sprintf("Stat(%q) of a directory: Modified", k), info.Modified, before, after)
	}
}

// testNewestAccountSelection mirrors how certmagic chooses the ACME
// account to reuse (ACMEIssuer.mostRecentAccountEmail): list the users
// directory, Stat every entry, drop files, pick the directory with the
// newest Modified.
func testNewestAccountSelection(t *testing.T, s certmagic.Storage) {
	ctx := t.Context()
	const users = "acme/ca.example/users"
	mustStore(t, s, users+"/old@example.net/old.json", []byte("{}"))
	mustStore(t, s, users+"/old@example.net/old.key", []byte("key"))
	oldInfo, err := s.Stat(ctx, users+"/old@example.net")
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	// File systems may record times coarsely; let the clock move on
	// visibly before the next write.
	waitForClockPast(t, oldInfo.Modified.Add(50*time.Millisecond))
	mustStore(t, s, users+"/new@example.net/new.json", []byte("{}"))
	mustStore(t, s, users+"/new@example.net/new.key", []byte("key"))
	waitForClockPast(t, time.Now().Add(50*time.Millisecond))
	mustStore(t, s, users+"/.DS_Store", []byte("a stray file must not be chosen"))

	entries, err := s.List(ctx, users, false)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	assertSameKeys(t, "List(users)", entries, []string{users + "/old@example.net", users + "/new@example.net", users + "/.DS_Store"})
	var newest string
	var newestTime time.Time
	for _, e := range entries {
		info, err := s.Stat(ctx, e)
		if err != nil {
			t.Fatalf("Stat(%q): %v", e, err)
		}
		if info.IsTerminal {
			if !strings.HasSuffix(e, ".DS_Store") {
				t.Errorf("Stat(%q): IsTerminal = true for an account directory", e)
			}
			continue
		}
		if newest == "" || info.Modified.After(newestTime) {
			newest, newestTime = e, info.Modified
		}
	}
	if want := users + "/new@example.net"; newest != want {
		t.Errorf("newest account directory = %q, want %q", newest, want)
	}
}

// oddKeys are shaped like real certmagic keys (wildcards, ACME
// directory names, e-mail addresses) plus characters that are special to
// globs, Redis hash tags, URLs or shells, to catch a backend that
// interprets keys instead of treating them as opaque.
var oddKeys = []string{
	"certificates/acme-v02.api.letsencrypt.org-directory/*.example.net/*.example.net.crt",
	"certificates/acme-v02.api.letsencrypt.org-directory/*.example.net/*.example.net.key",
	"certificates/acme-v02.api.letsencrypt.org-directory/wildcard_.example.net/wildcard_.example.net.json",
	"acme/acme-v02.api.letsencrypt.org-directory/users/admin@example.net/admin.json",
	"ocsp/*.example.net-0123abcd",
	"odd/with space/colon:port/[brackets]?{tag}%25.txt",
	"odd/ünïcødé/🔒.pem",
	"odd/glob/*",
	"odd/glob/a",
	"odd/glob/b",
}

func testOddKeys(t *testing.T, s certmagic.Storage) {
	ctx := t.Context()
	for _, k := range oddKeys {
		mustStore(t, s, k, []byte("value of "+k))
	}
	for _, k := range oddKeys {
		if got := mustLoad(t, s, k); string(got) != "value of "+k {
			t.Errorf("Load(%q) = %q", k, got)
		}
		if !s.Exists(ctx, k) {
			t.Errorf("Exists(%q) = false", k)
		}
		info, err := s.Stat(ctx, k)
		if err != nil {
			t.Errorf("Stat(%q): %v", k, err)
		} else if !info.IsTerminal || info.Size != int64(len("value of "+k)) {
			t.Errorf("Stat(%q) = %+v", k, info)
		}
	}
	const issuer = "certificates/acme-v02.api.letsencrypt.org-directory"
	got, err := s.List(ctx, issuer, false)
	if err != nil {
		t.Fatalf("List(%q): %v", issuer, err)
	}
	assertSameKeys(t, "List(issuer)", got, []string{issuer + "/*.example.net", issuer + "/wildcard_.example.net"})
	got, err = s.List(ctx, issuer+"/*.example.net", false)
	if err != nil {
		t.Fatalf("List(wildcard site): %v", err)
	}
	assertSameKeys(t, "List(wildcard site)", got, []string{
		issuer + "/*.example.net/*.example.net.crt",
		issuer + "/*.example.net/*.example.net.key",
	})

	// "*" is a name, not a pattern.
	if err := s.Delete(ctx, "odd/glob/*"); err != nil {
		t.Fatalf("Delete(odd/glob/*): %v", err)
	}
	got, err = s.List(ctx, "odd/glob", false)
	if err != nil {
		t.Fatalf("List(odd/glob): %v", err)
	}
	assertSameKeys(t, "List(odd/glob) after Delete(odd/glob/*)", got, []string{"odd/glob/a", "odd/glob/b"})
}

// testConcurrentStoreLoad has many goroutines overwrite one key with
// values that are each made of a single repeated byte, while reading it
// back: a reader must always see one complete value, never a mix or a
// truncated one.
func testConcurrentStoreLoad(t *testing.T, s certmagic.Storage) {
	ctx := t.Context()
	const (
		goroutines = 16
		iterations = 20
		size       = 8 << 10
	)
	const shared = "conc/shared"
	mustStore(t, s, shared, bytes.Repeat([]byte{0xff}, size))

	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := bytes.Repeat([]byte{byte(g)}, size)
			own := fmt.Sprintf("conc/g%02d/value", g)
			for i := 0; i < iterations; i++ {
				if err := s.Store(ctx, shared, mine); err != nil {
					t.Errorf("goroutine %d: Store(shared): %v", g, err)
					return
				}
				v, err := s.Load(ctx, shared)
				if err != nil {
					t.Errorf("goroutine %d: Load(shared): %v", g, err)
					return
				}
				if len(v) != size || bytes.Count(v, v[:1]) != size {
					t.Errorf("goroutine %d: Load(shared) returned a torn value (len %d)", g, len(v))
					return
				}
				ownValue := []byte(fmt.Sprintf("%s #%d", own, i))
				if err := s.Store(ctx, own, ownValue); err != nil {
					t.Errorf("goroutine %d: Store(own): %v", g, err)
					return
				}
				if v, err := s.Load(ctx, own); err != nil || !bytes.Equal(v, ownValue) {
					t.Errorf("goroutine %d: Load(own) = %q, %v; want %q", g, v, err, ownValue)
					return
				}
			}
		}()
	}
	wg.Wait()

	got, err := s.List(ctx, "conc", false)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(got) != goroutines+1 {
		t.Errorf("List(conc) has %d entries, want %d: %q", len(got), goroutines+1, got)
	}
}

// testLockMutualExclusion has 20 goroutines contend for one lock and
// checks, with a counter incremented on entry and decremented on exit,
// that no two of them are ever inside at the same time.
func testLockMutualExclusion(t *testing.T, s certmagic.Storage) {
	ctx, cancel := context.WithTimeout(t.Context(), lockWait)
	defer cancel()
	const goroutines = 20
	const name = "issue_cert_*.example.net"
	var inside, maxInside, acquired atomic.Int32
	var wg sync.WaitGroup
	start := time.Now()
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Spread the first attempts over a second. All goroutines
			// still contend (each holds the lock only briefly while the
			// others wait), but pollers that start in lockstep stay in
			// lockstep, and then certmagic.FileStorage's waiters keep
			// reading each new lock file in the instant between its
			// creation and its first write; after eight such empty reads
			// FileStorage declares the lock stale and breaks it. That is
			// a weakness of FileStorage under artificial in-process
			// contention, not behaviour certmagic relies on.
			staggered := time.NewTimer(time.Until(start.Add(time.Duration(g) * time.Second / goroutines)))
			select {
			case <-staggered.C:
			case <-ctx.Done():
			}
			if err := s.Lock(ctx, name); err != nil {
				t.Errorf("goroutine %d: Lock: %v", g, err)
				return
			}
			acquired.Add(1)
			n := inside.Add(1)
			for {
				m := maxInside.Load()
				if n <= m || maxInside.CompareAndSwap(m, n) {
					break
				}
			}
			// Do some storage work while holding the lock, giving a
			// second holder time to show up if exclusion is broken.
			key := fmt.Sprintf("lockwork/%d", g)
			if err := s.Store(ctx, key, []byte("x")); err != nil {
				t.Errorf("goroutine %d: Store: %v", g, err)
			}
			if _, err := s.Load(ctx, key); err != nil {
				t.Errorf("goroutine %d: Load: %v", g, err)
			}
			if n := inside.Load(); n != 1 {
				t.Errorf("goroutine %d: %d holders inside the critical section", g, n)
			}
			inside.Add(-1)
			if err := s.Unlock(context.WithoutCancel(ctx), name); err != nil {
				t.Errorf("goroutine %d: Unlock: %v", g, err)
			}
		}()
	}
	wg.Wait()
	if got := acquired.Load(); got != goroutines {
		t.Errorf("%d of %d goroutines acquired the lock", got, goroutines)
	}
	if got := maxInside.Load(); got > 1 {
		t.Errorf("up to %d goroutines held the lock at once", got)
	}
}

func testLockBlocksUntilUnlock(t *testing.T, s certmagic.Storage) {
	ctx, cancel := context.WithTimeout(t.Context(), lockWait)
	defer cancel()
	const name = "blocking"
	if err := s.Lock(ctx, name); err != nil {
		t.Fatalf("Lock: %v", err)
	}
	var released atomic.Bool
	acquired := make(chan error, 1)
	go func() {
		err := s.Lock(ctx, name)
		if err == nil && !released.Load() {
			err = errors.New("second Lock returned while the first holder still held the lock")
		}
		acquired <- err
	}()

	// Nothing can signal "the second Lock is blocked", so give it a
	// moment in which it must not return.
	select {
	case err := <-acquired:
		t.Fatalf("second Lock returned while the lock was held: %v", err)
	case <-time.After(300 * time.Millisecond):
	}

	released.Store(true)
	if err := s.Unlock(ctx, name); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	select {
	case err := <-acquired:
		if err != nil {
			t.Fatalf("second Lock: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("second Lock did not return after Unlock")
	}
	if err := s.Unlock(ctx, name); err != nil {
		t.Fatalf("second Unlock: %v", err)
	}
}

func testLockContextCancel(t *testing.T, s certmagic.Storage) {
	ctx, cancel := context.WithTimeout(t.Context(), lockWait)
	defer cancel()
	const name = "cancel"
	if err := s.Lock(ctx, name); err != nil {
		t.Fatalf("Lock: %v", err)
	}

	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancelShort()
	start := time.Now()
	err := s.Lock(short, name)
	if err == nil {
		t.Fatal("Lock of a held lock returned nil after its context expired")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Lock with an expired context: %v, want an error wrapping context.DeadlineExceeded", err)
	}
	// FileStorage notices cancellation while waiting between polls.
	if elapsed := time.Since(start); elapsed > 10*time.Second {
		t.Errorf("Lock took %v to notice its context expired", elapsed)
	}

	// The cancelled attempt must not leave anything behind.
	if err := s.Unlock(ctx, name); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	again, cancelAgain := context.WithTimeout(ctx, 30*time.Second)
	defer cancelAgain()
	if err := s.Lock(again, name); err != nil {
		t.Fatalf("Lock after the cancelled attempt: %v", err)
	}
	if err := s.Unlock(ctx, name); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
}

func testLockDistinctNames(t *testing.T, s certmagic.Storage) {
	ctx, cancel := context.WithTimeout(t.Context(), lockWait)
	defer cancel()
	if err := s.Lock(ctx, "name-a"); err != nil {
		t.Fatalf("Lock(name-a): %v", err)
	}
	other, cancelOther := context.WithTimeout(ctx, 10*time.Second)
	defer cancelOther()
	if err := s.Lock(other, "name-b"); err != nil {
		t.Fatalf("Lock(name-b) while name-a is held: %v", err)
	}
	for _, n := range []string{"name-b", "name-a"} {
		if err := s.Unlock(ctx, n); err != nil {
			t.Errorf("Unlock(%s): %v", n, err)
		}
	}
}

func testTryLock(t *testing.T, s certmagic.Storage) {
	tl, ok := s.(certmagic.TryLocker)
	if !ok {
		t.Skipf("%T does not implement certmagic.TryLocker", s)
	}
	ctx, cancel := context.WithTimeout(t.Context(), lockWait)
	defer cancel()
	const name = "trylock"

	got, err := tl.TryLock(ctx, name)
	if err != nil || !got {
		t.Fatalf("TryLock of a free lock = %v, %v; want true, nil", got, err)
	}
	got, err = tl.TryLock(ctx, name)
	if err != nil || got {
		t.Fatalf("TryLock of a held lock = %v, %v; want false, nil", got, err)
	}
	// A lock taken by TryLock excludes Lock too.
	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancelShort()
	if err := s.Lock(short, name); err == nil {
		t.Fatal("Lock succeeded while TryLock held the lock")
	}
	if err := tl.Unlock(ctx, name); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	got, err = tl.TryLock(ctx, name)
	if err != nil || !got {
		t.Fatalf("TryLock after Unlock = %v, %v; want true, nil", got, err)
	}
	if err := tl.Unlock(ctx, name); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
}

func mustStore(t *testing.T, s certmagic.Storage, key string, value []byte) {
	t.Helper()
	if err := s.Store(t.Context(), key, value); err != nil {
		t.Fatalf("Store(%q): %v", key, err)
	}
}

func mustLoad(t *testing.T, s certmagic.Storage, key string) []byte {
	t.Helper()
	v, err := s.Load(t.Context(), key)
	if err != nil {
		t.Fatalf("Load(%q): %v", key, err)
	}
	return v
}

func assertNotExist(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want one satisfying errors.Is(err, fs.ErrNotExist)", what)
	} else if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s: %v, want an error satisfying errors.Is(err, fs.ErrNotExist)", what, err)
	}
}

func assertSameKeys(t *testing.T, what string, got, want []string) {
	t.Helper()
	g, w := slices.Clone(got), slices.Clone(want)
	slices.Sort(g)
	slices.Sort(w)
	if !slices.Equal(g, w) {
		t.Errorf("%s = %q, want %q (in any order)", what, g, w)
	}
}

// assertTimeWithin allows some slack: file systems store times with
// limited precision and their clock is not exactly time.Now's.
func assertTimeWithin(t *testing.T, what string, got, from, to time.Time) {
	t.Helper()
	const slack = 2 * time.Second
	if got.Before(from.Add(-slack)) || got.After(to.Add(slack)) {
		t.Errorf("%s = %v, want between %v and %v", what, got, from, to)
	}
}

// waitForClockPast polls the clock until it is past when. It is used to
// order two writes in time, not to wait for anything to happen.
func waitForClockPast(t *testing.T, when time.Time) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(when) {
		select {
		case <-tick.C:
		case <-t.Context().Done():
			t.Fatal("test context done while waiting for the clock")
		}
	}
}
