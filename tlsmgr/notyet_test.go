package tlsmgr

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"

	"github.com/portico-proxy/portico/config"
)

// TestConfiguredNamesNotOnDemand: a name obtained on demand that the config
// then puts in a shared certificate is no longer on-demand (not restored
// from its record at the next reload either), and neither it nor any other
// configured name without a certificate reaches the ask endpoint: the
// handshake fails at once with errNotYet. No CA is contacted (the
// scheduler is not started).
func TestConfiguredNamesNotOnDemand(t *testing.T) {
	var asked atomic.Int64
	ask := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { asked.Add(1) }))
	t.Cleanup(ask.Close)
	head := fmt.Sprintf(`
[acme]
email = "ops@example.net"
agree_tos = true
ca = "https://127.0.0.1:1/directory"
[storage]
path = %q
[on_demand]
ask = %q
upstreams = ["http://127.0.0.1:9"]
`, t.TempDir(), ask.URL)
	parse := func(src string) *config.Config {
		t.Helper()
		cfg, err := config.Parse("portico.toml", []byte(src))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	before := parse(head + "[[site]]\nhosts = [\"solo.example.net\"]\nrespond = \"s\"\n")
	after := parse(head + "[[site]]\nhosts = [\"solo.example.net\"]\nrespond = \"s\"\n" +
		"[[site]]\nhosts = [\"od.example.net\", \"two.example.net\"]\ncertificate = \"shared\"\nrespond = \"t\"\n")
	m, err := New(before, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	ctx := context.Background()
	if err := m.storage.Store(ctx, odNameKey("od.example.net"), []byte("2026-11-30T00:00:00Z")); err != nil {
		t.Fatal(err)
	}
	m.Apply(ctx, before)
	if !m.odNames["od.example.net"] {
		t.Fatal("the recorded on-demand name was not restored")
	}
	for range 2 { // the reload, then one more: the record must not bring it back
		m.Apply(ctx, after)
		m.mu.RLock()
		od := m.odNames["od.example.net"]
		m.mu.RUnlock()
		if od {
			t.Fatal("a name in a shared certificate is still on-demand")
		}
	}
	conn, peer := net.Pipe() // certmagic logs the client's address
	t.Cleanup(func() { conn.Close(); peer.Close() })
	for _, name := range []string{"od.example.net", "two.example.net", "solo.example.net"} {
		_, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: name, SupportedVersions: []uint16{tls.VersionTLS13}, Conn: conn})
		if !errors.Is(err, errNotYet) {
			t.Errorf("%s: %v, want errNotYet", name, err)
		}
	}
	if n := asked.Load(); n != 0 {
		t.Errorf("the ask endpoint was consulted %d times for configured names", n)
	}
}
