package testkit

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Cert is a self-signed server certificate with its ECDSA P-256 key.
type Cert struct {
	// TLS is the certificate and key as a TLS server presents them, with
	// Leaf set.
	TLS tls.Certificate
	// Leaf is the parsed certificate (the same as TLS.Leaf).
	Leaf *x509.Certificate
	// Pool trusts the certificate and nothing else: a client's RootCAs.
	Pool *x509.CertPool
}

// Options are the few things a test may need to set on a certificate.
// The zero value gives SelfSigned's certificate.
type Options struct {
	// NotAfter is when the certificate expires; zero means 24 hours from
	// now. For a test that prints the expiry date.
	NotAfter time.Time
}

// SelfSigned returns a certificate for names, valid from an hour ago for a
// day, for server authentication. A name that parses as an IP address goes
// in the IP SANs, any other (a DNS name, a wildcard such as "*.example.net")
// in the DNS SANs. The common name is the first name ("testkit" when there
// is none: a certificate that is only parsed, never verified against a
// name). The certificate is not a CA: Go's verifier accepts a self-signed
// leaf that is itself in RootCAs.
func SelfSigned(tb testing.TB, names ...string) *Cert {
	tb.Helper()
	return SelfSignedWith(tb, Options{}, names...)
}

// SelfSignedWith is SelfSigned with options.
func SelfSignedWith(tb testing.TB, o Options, names ...string) *Cert {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("testkit: generating a key: %v", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		tb.Fatalf("testkit: a serial number: %v", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "testkit"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if !o.NotAfter.IsZero() {
		tmpl.NotAfter = o.NotAfter
	}
	if len(names) > 0 {
		tmpl.Subject.CommonName = names[0]
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatalf("testkit: creating a certificate for %q: %v", names, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("testkit: parsing the certificate for %q: %v", names, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return &Cert{
		TLS:  tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
		Leaf: leaf,
		Pool: pool,
	}
}

// CertPEM is the certificate as a PEM "CERTIFICATE" block.
func (c *Cert) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.TLS.Certificate[0]})
}

// KeyPEM is the private key as a PEM "PRIVATE KEY" (PKCS #8) block.
func (c *Cert) KeyPEM() []byte {
	der, err := x509.MarshalPKCS8PrivateKey(c.TLS.PrivateKey)
	if err != nil {
		panic("testkit: an ECDSA key that does not marshal: " + err.Error())
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// WritePEM writes the certificate and key as cert.pem and key.pem in dir
// (mode 0600) and returns their paths.
func (c *Cert) WritePEM(tb testing.TB, dir string) (certFile, keyFile string) {
	tb.Helper()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for path, data := range map[string][]byte{certFile: c.CertPEM(), keyFile: c.KeyPEM()} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	return certFile, keyFile
}

// Source is a certificate source serving c for every handshake.
func (c *Cert) Source() StaticCerts { return StaticCerts{Cert: &c.TLS} }
