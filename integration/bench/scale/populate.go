package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"github.com/portico-proxy/portico/tlsmgr"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
)

// The local CA's storage keys (tlsmgr/localca.go) and issuer key.
const (
	rootCertKey = "localca/root.crt"
	rootKeyKey  = "localca/root.key"
	issuerKey   = "local"
)

// family is one of the default key types, ["rsa2048", "p256"].
type family struct {
	keyType string
	key     crypto.Signer
	keyPEM  []byte
	keyDER  int // bytes of the key's DER, counted as the certificate's own bytes
	rsa     bool
}

// populated is what populate made: the root to trust and the certificates'
// own bytes (leaf DER + key DER), summed over all of them.
type populated struct {
	root     *x509.Certificate
	ownBytes int64
	certs    int
	elapsed  time.Duration
}

// familyKey is certmagic's storage key with Portico's per-key-type prefix
// (tlsmgr/familystorage.go): "certificates/..." becomes "certificates-<kt>/...".
func familyKey(key, keyType string) string {
	rest, ok := strings.CutPrefix(key, "certificates/")
	if !ok {
		panic("unexpected certmagic storage key " + key)
	}
	return "certificates-" + keyType + "/" + rest
}

// populate stores, for each name, an RSA-2048 and an ECDSA P-256 certificate
// signed by a new local root, laid out as Portico's local CA would leave them.
func populate(ctx context.Context, st certmagic.Storage, names []string, workers int, pairs bool) (*populated, error) {
	start := time.Now()
	// the local CA's own root, made and stored as Portico makes it
	ca := tlsmgr.NewLocalCA(st)
	root, err := ca.Root(ctx)
	if err != nil {
		return nil, err
	}

	// One key per family for every leaf: generating 2N keys would take
	// longer than the measurement, and Portico parses each stored copy
	// into its own object anyway.
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	var fams []*family
	for _, f := range []*family{{keyType: "rsa2048", key: rsaKey, rsa: true}, {keyType: "p256", key: ecKey}} {
		f.keyPEM, err = certmagic.PEMEncodePrivateKey(f.key)
		if err != nil {
			return nil, err
		}
		b, _ := pem.Decode(f.keyPEM)
		f.keyDER = len(b.Bytes)
		fams = append(fams, f)
	}

	var (
		own      atomic.Int64
		done     atomic.Int64
		firstErr error
		errOnce  sync.Once
		wg       sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan string)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range jobs {
				for _, f := range fams {
					n, err := storeLeaf(ctx, st, ca, f, name, pairs)
					if err != nil {
						errOnce.Do(func() { firstErr = fmt.Errorf("%s %s: %w", name, f.keyType, err); cancel() })
						continue
					}
					own.Add(int64(n))
				}
				done.Add(1)
			}
		}()
	}
	step := max(len(names)/10, 1)
	for i, name := range names {
		if ctx.Err() != nil {
			break
		}
		jobs <- name
		if (i+1)%step == 0 {
			fmt.Fprintf(os.Stderr, "  populate: %d/%d names queued (%s)\n", i+1, len(names), time.Since(start).Round(100*time.Millisecond))
		}
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	return &populated{root: root, ownBytes: own.Load(), certs: 2 * int(done.Load()), elapsed: time.Since(start)}, nil
}

// pairRecord is tlsmgr's .pair value (tlsmgr/pairs.go): the certificate and
// its key, written as one value.
type pairRecord struct {
	Cert []byte `json:"certificate_pem"`
	Key  []byte `json:"private_key_pem"`
}

// storeLeaf signs and stores one certificate as certmagic's saveCertResource
// does (key, certificate, metadata), with the .pair Portico adds when pairs
// is set, and returns its own bytes.
func storeLeaf(ctx context.Context, st certmagic.Storage, ca *tlsmgr.LocalCA, f *family, name string, pairs bool) (int, error) {
	der, err := ca.SignLeaf(ctx, name, []string{name}, nil, f.key.Public())
	if err != nil {
		return 0, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if pairs {
		rec, err := json.Marshal(pairRecord{Cert: certPEM, Key: f.keyPEM})
		if err != nil {
			return 0, err
		}
		key := strings.TrimSuffix(familyKey(certmagic.StorageKeys.SiteCert(issuerKey, name), f.keyType), ".crt") + ".pair"
		if err := st.Store(ctx, key, rec); err != nil {
			return 0, err
		}
	}
	meta, err := json.MarshalIndent(certmagic.CertificateResource{
		SANs:       []string{name},
		IssuerData: json.RawMessage(`{"issuer":"local"}`),
	}, "", "\t")
	if err != nil {
		return 0, err
	}
	for _, kv := range []struct {
		key   string
		value []byte
	}{
		{certmagic.StorageKeys.SitePrivateKey(issuerKey, name), f.keyPEM},
		{certmagic.StorageKeys.SiteCert(issuerKey, name), certPEM},
		{certmagic.StorageKeys.SiteMeta(issuerKey, name), meta},
	} {
		if err := st.Store(ctx, familyKey(kv.key, f.keyType), kv.value); err != nil {
			return 0, err
		}
	}
	return len(der) + f.keyDER, nil
}
