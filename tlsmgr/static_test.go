package tlsmgr

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/portico-proxy/portico/config"
)

func writePair(t *testing.T, dir, base string, c tls.Certificate) (string, string) {
	t.Helper()
	certFile, keyFile := filepath.Join(dir, base+".crt"), filepath.Join(dir, base+".key")
	der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestOperatorCertificates: [[certificate]] files are served side by side
// (RSA and ECDSA), their names are not ordered, a changed file is re-read,
// and a certificate removed from the config stops being served.
func TestOperatorCertificates(t *testing.T) {
	dir := t.TempDir()
	f := newCertFactory(t)
	ecCert, ecKey := writePair(t, dir, "ec", f.leaf(t, true, "static.example.net"))
	rsaCert, rsaKey := writePair(t, dir, "rsa", f.leaf(t, false, "static.example.net"))
	text := fmt.Sprintf(`
[storage]
path = %q
[[certificate]]
cert = %q
key = %q
[[certificate]]
cert = %q
key = %q
[[site]]
hosts = ["static.example.net"]
respond = "ok"
`, filepath.Join(dir, "data"), ecCert, ecKey, rsaCert, rsaKey)
	cfg, err := config.Parse(filepath.Join(dir, "portico.toml"), []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ACMEDefined {
		t.Fatal("no [acme] in this config")
	}
	m, err := New(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	ctx := context.Background()
	m.Apply(ctx, cfg)
	if st := m.Status(ctx); len(st) != 0 {
		t.Fatalf("names covered by [[certificate]] are managed: %+v", st)
	}
	ec, err := m.GetCertificate(modernHello("static.example.net"))
	if err != nil || ec.Leaf.PublicKeyAlgorithm != x509.ECDSA {
		t.Fatalf("modern client: %v", err)
	}
	rsa, err := m.GetCertificate(rsaOnlyHello("static.example.net"))
	if err != nil || rsa.Leaf.PublicKeyAlgorithm != x509.RSA {
		t.Fatalf("RSA-only client: %v", err)
	}

	// the ECDSA file changes on disk: the next pass serves the new one
	writePair(t, dir, "ec", f.leaf(t, true, "static.example.net"))
	m.reloadChangedStatic(ctx)
	ec2, err := m.GetCertificate(modernHello("static.example.net"))
	if err != nil || ec2.Leaf.SerialNumber.Cmp(ec.Leaf.SerialNumber) == 0 {
		t.Fatalf("changed file not re-read: %v", err)
	}

	// a file that no longer loads keeps the previous certificate
	os.WriteFile(ecCert, []byte("garbage"), 0o600)
	m.reloadChangedStatic(ctx)
	if c, err := m.GetCertificate(modernHello("static.example.net")); err != nil || c.Leaf.SerialNumber.Cmp(ec2.Leaf.SerialNumber) != 0 {
		t.Fatalf("a broken file dropped the certificate in service: %v", err)
	}

	// removed from the config: no longer served
	cfg.Certificates = nil
	cfg.Sites = nil
	m.Apply(ctx, cfg)
	if c, err := m.GetCertificate(modernHello("static.example.net")); err == nil {
		t.Fatalf("removed certificate still served: %v", c.Leaf.DNSNames)
	}
}

// TestLocalCAFirstUseIsIssue: the first thing asked of a new local CA may be
// a certificate (no Root call before): the root is made and used.
func TestLocalCAFirstUseIsIssue(t *testing.T) {
	ca := NewLocalCA(&certmagic.FileStorage{Path: t.TempDir()})
	f := newCertFactory(t)
	der, err := ca.SignLeaf(context.Background(), "first.example.net", []string{"first.example.net"}, nil, f.ecKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := ca.Root(context.Background())
	if err := leaf.CheckSignatureFrom(root); err != nil {
		t.Fatalf("leaf not signed by the stored root: %v", err)
	}
}
