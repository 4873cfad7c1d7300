package tlsmgr

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/portico-proxy/portico/config"
	"github.com/portico-proxy/portico/integration/testkit"
	redisstorage "github.com/portico-proxy/portico/tlsmgr/storage/redis"
	"github.com/portico-proxy/portico/tlsmgr/storage/redis/redisserver"
)

// gatedStorage holds back the certificate reads of some names until
// released, so a test can catch the start-up load in the middle, and
// counts the reads of certificate files.
type gatedStorage struct {
	certmagic.Storage
	hold    map[string]bool // names whose certificate reads wait for release
	release chan struct{}
	blocked atomic.Int32 // reads waiting for release
	loads   atomic.Int32 // single reads of certificate files and staples
	batches atomic.Int32 // batched reads
}

func newGatedStorage(inner certmagic.Storage, hold ...string) *gatedStorage {
	g := &gatedStorage{Storage: inner, hold: map[string]bool{}, release: make(chan struct{})}
	for _, n := range hold {
		g.hold[n] = true
	}
	return g
}

func (g *gatedStorage) wait(ctx context.Context, key string) error {
	parts := strings.Split(key, "/")
	if len(parts) != 4 || !strings.HasPrefix(parts[0], certsDir+"-") || !g.hold[parts[2]] {
		return nil
	}
	g.blocked.Add(1)
	defer g.blocked.Add(-1)
	select {
	case <-g.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *gatedStorage) counted(key string) bool {
	return strings.HasPrefix(key, certsDir+"-") || strings.HasPrefix(key, "ocsp/")
}

func (g *gatedStorage) Load(ctx context.Context, key string) ([]byte, error) {
	if g.counted(key) {
		g.loads.Add(1)
	}
	if err := g.wait(ctx, key); err != nil {
		return nil, err
	}
	return g.Storage.Load(ctx, key)
}

func (g *gatedStorage) LoadMany(ctx context.Context, keys []string) ([][]byte, []error) {
	g.batches.Add(1)
	if err := g.wait(ctx, keys[0]); err != nil {
		errs := make([]error, len(keys))
		for i := range errs {
			errs[i] = err
		}
		return make([][]byte, len(keys)), errs
	}
	return loadMany(ctx, g.Storage, keys...)
}

func (g *gatedStorage) TryLock(ctx context.Context, name string) (bool, error) {
	return g.Storage.(certmagic.TryLocker).TryLock(ctx, name)
}

// storeLocalCerts stores an RSA and an ECDSA certificate from the local CA
// for each name, as Portico writes them (with pairs), or as older versions
// did (only .key, .crt and .json) when legacy is set.
func storeLocalCerts(t testing.TB, st certmagic.Storage, names []string, legacy bool) {
	t.Helper()
	ctx := context.Background()
	ca := NewLocalCA(st)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range []struct {
		keyType string
		key     crypto.Signer
	}{{"rsa2048", rsaKey}, {"p256", ecKey}} {
		keyPEM, err := certmagic.PEMEncodePrivateKey(fam.key)
		if err != nil {
			t.Fatal(err)
		}
		fs := newFamilyStorage(st, fam.keyType)
		for _, name := range names {
			der, err := ca.SignLeaf(ctx, name, []string{name}, nil, fam.key.Public())
			if err != nil {
				t.Fatal(err)
			}
			meta, _ := json.Marshal(certmagic.CertificateResource{SANs: []string{name}, IssuerData: json.RawMessage(`{}`)})
			for _, kv := range []struct {
				key   string
				value []byte
			}{
				{certmagic.StorageKeys.SitePrivateKey(ca.IssuerKey(), name), keyPEM},
				{certmagic.StorageKeys.SiteCert(ca.IssuerKey(), name), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})},
				{certmagic.StorageKeys.SiteMeta(ca.IssuerKey(), name), meta},
			} {
				if legacy {
					err = st.Store(ctx, fs.mapKey(kv.key), kv.value)
				} else {
					err = fs.Store(ctx, kv.key, kv.value)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

// siteConfig is a local-CA config with one site for names on the given
// [storage] lines.
func siteConfig(t testing.TB, storage string, names []string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("test.toml", fmt.Appendf(nil, `
[acme]
ca = "local"
[storage]
%s
[[site]]
respond = "ok"
hosts = ["%s"]
`, storage, strings.Join(names, `", "`)))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func scaleNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("s%03d.example.net", i)
	}
	return names
}

func served(t testing.TB, m *Manager, hello *tls.ClientHelloInfo, alg x509.PublicKeyAlgorithm) {
	t.Helper()
	c, err := m.GetCertificate(hello)
	if err != nil {
		t.Fatalf("%s: %v", hello.ServerName, err)
	}
	if c.Leaf == nil || c.Leaf.PublicKeyAlgorithm != alg || len(c.Leaf.DNSNames) != 1 || c.Leaf.DNSNames[0] != hello.ServerName {
		t.Fatalf("%s: served %v (%v), want its own %v certificate", hello.ServerName, c.Leaf.DNSNames, c.Leaf.PublicKeyAlgorithm, alg)
	}
}

// testServedBeforeLoaded: while the start-up load is stuck on the first
// names, a handshake for a stored name it has not reached is served that
// name's certificate, loaded at the handshake; a handshake for a name being
// loaded waits for that load; an unknown name is refused at once without
// allocating.
func testServedBeforeLoaded(t *testing.T, inner certmagic.Storage, storageConf string) {
	names := scaleNames(20)
	storeLocalCerts(t, inner, names[:len(names)-1], false)
	storeLocalCerts(t, inner, names[len(names)-1:], true) // an older layout
	target, first := names[len(names)-1], names[0]
	gate := newGatedStorage(inner, names[:len(names)-1]...)
	cfg := siteConfig(t, storageConf, names)
	m, err := NewWithStorage(cfg, gate, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	released := false
	defer func() {
		if !released {
			close(gate.release)
		}
	}()

	applied := make(chan struct{})
	go func() {
		defer close(applied)
		m.Apply(context.Background(), cfg)
	}()
	testkit.Eventually(t, 10*time.Second, "the start-up load reads the first names", func() bool {
		return gate.blocked.Load() >= 1 && m.managed(target)
	})

	// the target's first handshakes, while the load has not reached it
	served(t, m, modernHello(target), x509.ECDSA)
	served(t, m, rsaOnlyHello(target), x509.RSA)
	if !m.loader.isPending(first) {
		t.Fatalf("%s is no longer pending: the start-up load was not caught in the middle", first)
	}
	select {
	case <-applied:
		t.Fatal("Apply returned while loads were held back")
	default:
	}

	// unknown names: refused, without allocating, while loads are pending
	unknown := modernHello("unknown.example.org")
	if _, err := m.GetCertificate(unknown); err == nil {
		t.Fatal("an unknown name was served")
	}
	if a := testing.AllocsPerRun(100, func() { m.GetCertificate(unknown) }); a != 0 {
		t.Fatalf("refusing an unknown name allocates %v times", a)
	}
	// the target again, from the index: no allocation
	hello := modernHello(target)
	if a := testing.AllocsPerRun(100, func() { m.GetCertificate(hello) }); a != 0 {
		t.Fatalf("serving a loaded name allocates %v times", a)
	}

	// a handshake for a name whose load is in flight waits for it
	type result struct {
		c   *tls.Certificate
		err error
	}
	waiting := make(chan result, 1)
	go func() {
		c, err := m.GetCertificate(modernHello(first))
		waiting <- result{c, err}
	}()
	close(gate.release)
	released = true
	select {
	case r := <-waiting:
		if r.err != nil || r.c.Leaf.DNSNames[0] != first {
			t.Fatalf("%s after its load: %v", first, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the handshake for %s did not end with its load", first)
	}
	select {
	case <-applied:
	case <-time.After(30 * time.Second):
		t.Fatal("Apply did not return once loads were released")
	}
	if n := m.loader.count.Load(); n != 0 {
		t.Fatalf("%d names still pending after Apply", n)
	}
	for _, n := range names {
		served(t, m, modernHello(n), x509.ECDSA)
		served(t, m, rsaOnlyHello(n), x509.RSA)
		for _, f := range m.families {
			if _, ok := m.cached(f, n); !ok {
				t.Fatalf("%s (%s) is served but not in certmagic's cache", n, f.keyType)
			}
		}
	}
}

func TestStoredNameServedBeforeLoadedFile(t *testing.T) {
	dir := t.TempDir()
	testServedBeforeLoaded(t, &certmagic.FileStorage{Path: dir}, fmt.Sprintf("path = %q", dir))
}

func TestStoredNameServedBeforeLoadedRedis(t *testing.T) {
	srv := redisserver.Start(t)
	st, err := redisstorage.New(redisstorage.Options{URL: srv.URL(), Prefix: "load"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	testServedBeforeLoaded(t, st, fmt.Sprintf("backend = \"redis\"\nredis_url = %q\nprefix = \"load\"", srv.URL()))
}

// TestNameDroppedDuringLoad: a name that stops being managed while its load
// is in flight is not left in the cache or served when the load ends.
func TestNameDroppedDuringLoad(t *testing.T) {
	dir := t.TempDir()
	inner := &certmagic.FileStorage{Path: dir}
	names := scaleNames(3)
	storeLocalCerts(t, inner, names, false)
	dropped := names[0]
	gate := newGatedStorage(inner, dropped)
	storageConf := fmt.Sprintf("path = %q", dir)
	m, err := NewWithStorage(siteConfig(t, storageConf, names), gate, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	applied := make(chan struct{})
	go func() {
		defer close(applied)
		m.Apply(context.Background(), siteConfig(t, storageConf, names))
	}()
	testkit.Eventually(t, 10*time.Second, "the load of "+dropped+" starts", func() bool { return gate.blocked.Load() >= 1 })
	m.Apply(context.Background(), siteConfig(t, storageConf, names[1:])) // a reload without it
	close(gate.release)
	select {
	case <-applied:
	case <-time.After(30 * time.Second):
		t.Fatal("the first Apply did not return")
	}
	for _, f := range m.families {
		if _, ok := m.cached(f, dropped); ok {
			t.Fatalf("%s (%s) is cached after it stopped being managed", dropped, f.keyType)
		}
	}
	if c, err := m.GetCertificate(modernHello(dropped)); err == nil {
		t.Fatalf("served %v for a name no longer managed", c.Leaf.DNSNames)
	}
	served(t, m, modernHello(names[2]), x509.ECDSA)
}

// TestSiteReadsBatch: a certificate load reads its pair and metadata in one
// batch (one round trip on Redis), falls back to the key and certificate
// files for the older layout, skips the staple of a certificate without an
// OCSP responder, and loads the same certificate as plain reads do.
func TestSiteReadsBatch(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		t.Run(fmt.Sprintf("legacy=%v", legacy), func(t *testing.T) {
			dir := t.TempDir()
			inner := &certmagic.FileStorage{Path: dir}
			storeLocalCerts(t, inner, []string{"a.example.net"}, legacy)
			gate := newGatedStorage(inner)
			m, err := NewWithStorage(siteConfig(t, fmt.Sprintf("path = %q", dir), []string{"a.example.net"}), gate, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			defer m.Stop()
			ctx := context.Background()
			wantBatches := int32(1)
			if legacy {
				wantBatches = 2
			}
			for _, f := range m.families {
				plain, err := f.cfg.CacheManagedCertificate(ctx, "a.example.net")
				if err != nil {
					t.Fatal(err)
				}
				gate.loads.Store(0)
				gate.batches.Store(0)
				batched, err := f.cfg.CacheManagedCertificate(withSiteReads(ctx), "a.example.net")
				if err != nil {
					t.Fatal(err)
				}
				if batched.Hash() != plain.Hash() {
					t.Fatalf("%s: batched reads loaded another certificate", f.keyType)
				}
				if b, l := gate.batches.Load(), gate.loads.Load(); b != wantBatches || l != 0 {
					t.Fatalf("%s: %d batches and %d single reads, want %d and 0", f.keyType, b, l, wantBatches)
				}
			}
		})
	}
}

// TestExpiriesReadNoStorage: the list a metrics scrape takes reads nothing
// from storage for the certificates (their renewal times, which need each
// one's ARI metadata, are left out), where Status reads the metadata.
func TestExpiriesReadNoStorage(t *testing.T) {
	dir := t.TempDir()
	inner := &certmagic.FileStorage{Path: dir}
	names := scaleNames(3)
	storeLocalCerts(t, inner, names, false)
	gate := newGatedStorage(inner)
	storageConf := fmt.Sprintf("path = %q", dir)
	m, err := NewWithStorage(siteConfig(t, storageConf, names), gate, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	ctx := context.Background()
	m.Apply(ctx, siteConfig(t, storageConf, names))
	gate.loads.Store(0)
	list := m.Expiries(ctx)
	if len(list) != 2*len(names) {
		t.Fatalf("%d entries, want %d", len(list), 2*len(names))
	}
	for _, st := range list {
		if st.NotAfter == nil || st.RenewAt != nil {
			t.Errorf("%s %s: not_after %v renew_at %v, want the expiry only", st.Name, st.KeyType, st.NotAfter, st.RenewAt)
		}
	}
	if n := gate.loads.Load(); n != 0 {
		t.Errorf("Expiries read %d certificate files from storage, want none", n)
	}
	for _, st := range m.Status(ctx) {
		if st.RenewAt == nil {
			t.Errorf("Status: %s %s has no renewal time", st.Name, st.KeyType)
		}
	}
	if gate.loads.Load() == 0 {
		t.Error("Status read no metadata: this test no longer tells the two apart")
	}
}
