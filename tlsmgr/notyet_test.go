package tlsmgr

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"

	"github.com/portico-proxy/portico/config"
)

// TestConfiguredNamesNotOnDemand: a name obtained on demand that the config
// then puts in a shared certificate or an operator's is no longer on-demand
// (not restored from its record at the next reload either), and neither it
// nor any other
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
	opCert, opKey := writePair(t, t.TempDir(), "op", newCertFactory(t).leaf(t, true, "op.example.net"))
	before := parse(head + "[[site]]\nhosts = [\"solo.example.net\"]\nrespond = \"s\"\n")
	after := parse(head + "[[site]]\nhosts = [\"solo.example.net\"]\nrespond = \"s\"\n" +
		"[[site]]\nhosts = [\"od.example.net\", \"two.example.net\"]\ncertificate = \"shared\"\nrespond = \"t\"\n" +
		fmt.Sprintf("[[site]]\nhosts = [\"op.example.net\"]\nrespond = \"o\"\n[[certificate]]\ncert = %q\nkey = %q\n", opCert, opKey))
	m, err := New(before, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	ctx := context.Background()
	recorded := []string{"od.example.net", "op.example.net"}
	for _, n := range recorded {
		if err := m.storage.Store(ctx, odNameKey(n), []byte("2026-11-30T00:00:00Z")); err != nil {
			t.Fatal(err)
		}
	}
	m.Apply(ctx, before)
	for _, n := range recorded {
		if !m.odNames[n] {
			t.Fatalf("the recorded on-demand name %s was not restored", n)
		}
	}
	for range 2 { // the reload, then one more: the record must not bring them back
		m.Apply(ctx, after)
		for _, n := range recorded {
			m.mu.RLock()
			od := m.odNames[n]
			m.mu.RUnlock()
			if od {
				t.Fatalf("%s, now in the config, is still on-demand", n)
			}
		}
	}
	if c, err := m.GetCertificate(modernHello("op.example.net")); err != nil || c.Leaf.DNSNames[0] != "op.example.net" {
		t.Fatalf("op.example.net not served from the operator's certificate: %v", err)
	}
	for _, name := range []string{"od.example.net", "two.example.net", "solo.example.net"} {
		_, err := m.GetCertificate(modernHello(name))
		if !errors.Is(err, errNotYet) {
			t.Errorf("%s: %v, want errNotYet", name, err)
		}
	}
	if n := asked.Load(); n != 0 {
		t.Errorf("the ask endpoint was consulted %d times for configured names", n)
	}
}
