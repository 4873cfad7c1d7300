package tlsmgr

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
)

// Storage keys of the local CA. They sit outside "certificates/" so both key
// families and every instance of a fleet share one root.
const (
	localCARootCert = "localca/root.crt"
	localCARootKey  = "localca/root.key"
	localCALock     = "localca_init"
)

// localLeafLifetime is short, like a public CA's shortest profile, so that
// renewal is exercised in development too.
const localLeafLifetime = 7 * 24 * time.Hour

// LocalCA is a certmagic.Issuer that signs certificates with Portico's own
// root, kept in storage. It serves `ca = "local"`: HTTPS for localhost,
// development machines and intranets with no ACME CA in reach. The root is
// created on first use, under a storage lock so a fleet makes one.
type LocalCA struct {
	storage certmagic.Storage

	mu   sync.Mutex
	cert *x509.Certificate
	key  crypto.Signer
}

// NewLocalCA returns a local CA on storage; the root is loaded or created by Root.
func NewLocalCA(storage certmagic.Storage) *LocalCA { return &LocalCA{storage: storage} }

// IssuerKey names this issuer in storage paths.
func (ca *LocalCA) IssuerKey() string { return "local" }

// Root loads the root certificate from storage, creating it on first use.
func (ca *LocalCA) Root(ctx context.Context) (*x509.Certificate, error) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if ca.cert != nil {
		return ca.cert, nil
	}
	if err := ca.load(ctx); err == nil {
		return ca.cert, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err := ca.storage.Lock(ctx, localCALock); err != nil {
		return nil, fmt.Errorf("lock local CA: %w", err)
	}
	defer ca.storage.Unlock(context.WithoutCancel(ctx), localCALock)
	// another instance may have made it while we waited
	if err := ca.load(ctx); err == nil {
		return ca.cert, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err := ca.create(ctx); err != nil {
		return nil, err
	}
	return ca.cert, nil
}

// RootPEM is the root certificate in PEM, for clients to trust.
func (ca *LocalCA) RootPEM(ctx context.Context) ([]byte, error) {
	root, err := ca.Root(ctx)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw}), nil
}

func (ca *LocalCA) load(ctx context.Context) error {
	certPEM, err := ca.storage.Load(ctx, localCARootCert)
	if err != nil {
		return err
	}
	keyPEM, err := ca.storage.Load(ctx, localCARootKey)
	if err != nil {
		return err
	}
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return fmt.Errorf("local CA root %s is not PEM", localCARootCert)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return fmt.Errorf("parse local CA root: %w", err)
	}
	key, err := certmagic.PEMDecodePrivateKey(keyPEM)
	if err != nil {
		return fmt.Errorf("parse local CA key: %w", err)
	}
	ca.cert, ca.key = cert, key
	return nil
}

func (ca *LocalCA) create(ctx context.Context) error {
	key, err := generateKey("p256")
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "Portico Local Root " + now.UTC().Format("2006-01-02"), Organization: []string{"Portico local CA"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("create local CA root: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	keyPEM, err := certmagic.PEMEncodePrivateKey(key)
	if err != nil {
		return err
	}
	// the key first: a root certificate without its key would be useless,
	// a stray key without a certificate is simply replaced next time
	if err := ca.storage.Store(ctx, localCARootKey, keyPEM); err != nil {
		return fmt.Errorf("store local CA key: %w", err)
	}
	if err := ca.storage.Store(ctx, localCARootCert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})); err != nil {
		return fmt.Errorf("store local CA root: %w", err)
	}
	ca.cert, ca.key = cert, key
	return nil
}

// Issue signs the CSR's names with the local root.
func (ca *LocalCA) Issue(ctx context.Context, csr *x509.CertificateRequest) (*certmagic.IssuedCertificate, error) {
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("local CA: bad CSR signature: %w", err)
	}
	der, err := ca.SignLeaf(ctx, firstName(csr), csr.DNSNames, csr.IPAddresses, csr.PublicKey)
	if err != nil {
		return nil, err
	}
	return &certmagic.IssuedCertificate{
		Certificate: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Metadata:    map[string]string{"issuer": "local"},
	}, nil
}

// SignLeaf signs a server certificate for names with the local root and
// returns its DER. Issue uses it for certmagic; the scale benchmark uses it
// to fill storage as Portico would.
func (ca *LocalCA) SignLeaf(ctx context.Context, commonName string, dnsNames []string, ips []net.IP, pub crypto.PublicKey) ([]byte, error) {
	root, err := ca.Root(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: commonName},
		DNSNames:     dnsNames,
		IPAddresses:  ips,
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     now.Add(localLeafLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if _, ok := pub.(*rsa.PublicKey); ok {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	} else if _, ok := pub.(*ecdsa.PublicKey); !ok {
		return nil, fmt.Errorf("local CA: unsupported public key %T", pub)
	}
	ca.mu.Lock()
	key := ca.key
	ca.mu.Unlock()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root, pub, key)
	if err != nil {
		return nil, fmt.Errorf("local CA: sign %v: %w", dnsNames, err)
	}
	return der, nil
}

func firstName(csr *x509.CertificateRequest) string {
	if len(csr.DNSNames) > 0 {
		return csr.DNSNames[0]
	}
	if len(csr.IPAddresses) > 0 {
		return net.IP(csr.IPAddresses[0]).String()
	}
	return csr.Subject.CommonName
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // the OS random source is gone; nothing is safe
	}
	return n
}
