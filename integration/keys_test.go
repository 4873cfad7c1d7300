package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portico-proxy/portico/integration/acmetest"
	"github.com/portico-proxy/portico/integration/testkit"
)

// TestAccountKeyPolicy: the ACME account key has the configured type, is
// shared by both certificate families (one account), and is never a
// certificate key.
func TestAccountKeyPolicy(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	e.dns.SetA("keys.test", "127.0.0.1")
	dir := t.TempDir()
	cfg := strings.Replace(e.acmeConfig("127.0.0.1", dir+"/data", `"http-01"`), "[listen]", "account_key_type = \"p384\"\nkey_types = [\"rsa3072\", \"p256\"]\n\n[listen]", 1) +
		site([]string{"keys.test"}, `respond = "k"`)
	startPortico(t, dir, cfg, e.httpsAddr("127.0.0.1"))
	testkit.Eventually(t, 60*time.Second, "both certificates", func() bool {
		rsa, ec := countByKey(e.pebble.IssuedFor("keys.test"))
		return rsa > 0 && ec > 0
	})
	var accountKeys, certKeys []string
	testkit.Eventually(t, 10*time.Second, "keys in storage", func() bool {
		accountKeys, _ = filepath.Glob(filepath.Join(dir, "data", "acme", "*", "users", "*", "*.key"))
		certKeys, _ = filepath.Glob(filepath.Join(dir, "data", "certificates-*", "*", "*", "*.key"))
		return len(accountKeys) > 0 && len(certKeys) == 2
	})
	if len(accountKeys) != 1 {
		t.Fatalf("%d account keys, want one account for both families: %v", len(accountKeys), accountKeys)
	}
	acct := readKey(t, accountKeys[0])
	ec, ok := acct.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P384() {
		t.Fatalf("account key is %T, want ECDSA P-384 (account_key_type = \"p384\")", acct)
	}
	for _, k := range certKeys {
		ck := readKey(t, k)
		if ckEC, ok := ck.(*ecdsa.PrivateKey); ok && ckEC.Equal(ec) {
			t.Fatalf("certificate key %s is the account key", k)
		}
		if rk, ok := ck.(interface{ Size() int }); ok && strings.Contains(k, "rsa3072") && rk.Size() != 384 {
			t.Errorf("RSA certificate key is %d bits, want 3072", rk.Size()*8)
		}
	}
	// private keys are 0600 in directories of 0700 (file backend)
	for _, k := range append(certKeys, accountKeys...) {
		if fi, err := os.Stat(k); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", k, fi.Mode().Perm())
		}
		for d := filepath.Dir(k); d != filepath.Join(dir, "data"); d = filepath.Dir(d) {
			if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != 0o700 {
				t.Errorf("%s: mode %v, want 0700", d, fi.Mode().Perm())
			}
		}
	}
}

func readKey(t *testing.T, path string) any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s is not PEM", path)
	}
	for _, parse := range []func([]byte) (any, error){
		x509.ParsePKCS8PrivateKey,
		func(b []byte) (any, error) { return x509.ParseECPrivateKey(b) },
		func(b []byte) (any, error) { return x509.ParsePKCS1PrivateKey(b) },
	} {
		if k, err := parse(block.Bytes); err == nil {
			return k
		}
	}
	t.Fatalf("%s: unknown key format %s", path, block.Type)
	return nil
}
