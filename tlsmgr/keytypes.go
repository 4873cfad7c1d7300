package tlsmgr

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
)

// keyGenerator is a certmagic.KeyGenerator for one key type of the policy.
// certmagic's own generator has no RSA 3072, which the policy allows.
type keyGenerator string

// GenerateKey makes a new certificate key.
func (k keyGenerator) GenerateKey() (crypto.PrivateKey, error) { return generateKey(string(k)) }

// generateKey makes a fresh private key of a policy key type, for certificates
// and for the ACME account key (which certmagic would otherwise always make P-256).
func generateKey(name string) (crypto.Signer, error) {
	switch name {
	case "rsa2048":
		return rsa.GenerateKey(rand.Reader, 2048)
	case "rsa3072":
		return rsa.GenerateKey(rand.Reader, 3072)
	case "rsa4096":
		return rsa.GenerateKey(rand.Reader, 4096)
	case "p256":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "p384":
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	}
	return nil, fmt.Errorf("key type %q is not allowed", name)
}
