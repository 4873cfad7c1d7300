package tlsmgr

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/portico-proxy/portico/config"
	"github.com/portico-proxy/portico/integration/testkit"
)

// faultyStorage fails certificate writes whose key ends with failOn, while it is set:
// a full disk, a read-only mount, a storage cluster refusing writes.
type faultyStorage struct {
	certmagic.Storage
	failOn atomic.Value // string
}

var errDiskFull = errors.New("no space left on device")

func (s *faultyStorage) Store(ctx context.Context, key string, value []byte) error {
	if f, _ := s.failOn.Load().(string); f != "" && strings.HasPrefix(key, "certificates-") && strings.HasSuffix(key, f) {
		return fmt.Errorf("write %s: %w", key, errDiskFull)
	}
	return s.Storage.Store(ctx, key, value)
}

func (s *faultyStorage) TryLock(ctx context.Context, name string) (bool, error) {
	return s.Storage.(certmagic.TryLocker).TryLock(ctx, name)
}

func localConfig(t *testing.T, dir string) *config.Config {
	cfg, err := config.Parse("test.toml", []byte(fmt.Sprintf(`
[acme]
ca = "local"
[storage]
path = %q
[renewal]
check_interval = "1s"
[[site]]
hosts = ["keep.example.net"]
respond = "ok"
`, dir)))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestFullDiskKeepsCertificate: a renewal whose certificate write fails (a
// full disk) is reported and leaves the certificate in service intact in
// storage: a restart still loads a certificate with its matching key.
func TestFullDiskKeepsCertificate(t *testing.T) {
	dir := t.TempDir()
	cfg := localConfig(t, dir)
	fs := &faultyStorage{Storage: &certmagic.FileStorage{Path: dir}}
	m, err := NewWithStorage(cfg, fs, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m.Start()
	m.Apply(ctx, cfg)
	testkit.Eventually(t, 30*time.Second, "both certificates of keep.example.net", func() bool {
		_, rsaReady := m.cached(m.familyFor("keep.example.net", "rsa2048"), "keep.example.net")
		_, ecReady := m.cached(m.familyFor("keep.example.net", "p256"), "keep.example.net")
		return rsaReady && ecReady
	})
	before, _ := m.GetCertificate(modernHello("keep.example.net"))

	for _, fail := range []string{".crt", ".json", ".pair"} {
		f := m.familyFor("keep.example.net", "p256")
		// the next pass would have loaded what storage holds now
		if _, err := f.cfg.CacheManagedCertificate(ctx, "keep.example.net"); err != nil {
			t.Fatalf("before failing %s: stored certificate unusable: %v", fail, err)
		}
		fs.failOn.Store(fail)
		m.sched.attempt(ctx, "keep.example.net", f, true) // a renewal, now
		e, ok, _ := m.ledger.get(ctx, "keep.example.net", "p256")
		if !ok || e.Failures == 0 || !strings.Contains(e.LastError, "no space left") {
			t.Fatalf("failing %s: the failure was not recorded: %+v", fail, e)
		}
		fs.failOn.Store("")
		m.ledger.success(ctx, "keep.example.net", "p256")
	}
	m.Stop()

	// a restart finds a complete certificate: the key matches
	m2, err := New(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Stop()
	for _, f := range m2.families {
		c, err := f.cfg.CacheManagedCertificate(ctx, "keep.example.net")
		if err != nil {
			t.Fatalf("%s: after failed writes the stored certificate is unusable: %v", f.keyType, err)
		}
		if f.ecdsa && c.Leaf.NotAfter.Before(before.Leaf.NotAfter) {
			t.Fatalf("%s: stored certificate is older than the one in service", f.keyType)
		}
	}
}
