package tlsmgr

import (
	"strings"
	"testing"

	"github.com/caddyserver/certmagic"
)

// FuzzFamilyStorageKeys: the per-key-type storage view maps every key and
// maps it back unchanged; two families never share a certificate key; keys
// outside "certificates/" (account, challenges, locks, ledger) stay shared.
func FuzzFamilyStorageKeys(f *testing.F) {
	for _, seed := range []string{
		"certificates/acme-v02.api.letsencrypt.org-directory/a.example.net/a.example.net.crt",
		"certificates", "certificates/", "certificates-p256/x", "acme/ca/users/ops@example.net/ops.key",
		"portico/ledger/p256/wildcard_.example.net.json", "", "/", "certificatesX/y", "ocsp/a-123",
	} {
		f.Add(seed)
	}
	rsa, ec := newFamilyStorage(nil, "rsa2048"), newFamilyStorage(nil, "p256")
	f.Fuzz(func(t *testing.T, key string) {
		for _, fs := range []*familyStorage{rsa, ec} {
			if got := fs.unmapKey(fs.mapKey(key)); got != key && !strings.HasPrefix(key, fs.dir) {
				t.Fatalf("%s: %q → %q → %q", fs.dir, key, fs.mapKey(key), got)
			}
		}
		inCerts := key == certsDir || strings.HasPrefix(key, certsDir+"/")
		if inCerts && rsa.mapKey(key) == ec.mapKey(key) {
			t.Fatalf("%q maps to the same key for both families", key)
		}
		if !inCerts && (rsa.mapKey(key) != key || ec.mapKey(key) != key) {
			t.Fatalf("shared key %q was moved", key)
		}
	})
}

// FuzzSNIIndex: arbitrary SNI values against the handshake index and the
// name matching behind it: no panic, and a certificate is only ever chosen
// for a name it covers.
func FuzzSNIIndex(f *testing.F) {
	for _, seed := range []string{"a.example.net", "A.EXAMPLE.NET", "b.wild.example.net", "wild.example.net",
		"x.y.wild.example.net", "", ".", ".wild.example.net", "*.wild.example.net", "a.example.net."} {
		f.Add(seed)
	}
	ix := newCertIndex()
	exact, wild := &certPair{}, &certPair{}
	ix.set("a.example.net", exact)
	ix.set("*.wild.example.net", wild)
	f.Fuzz(func(t *testing.T, sni string) {
		name := strings.ToLower(sni)
		p := ix.get(name)
		if p == exact && name != "a.example.net" {
			t.Fatalf("%q got a.example.net's certificate", sni)
		}
		if p == wild && !coversName([]string{"*.wild.example.net"}, name) {
			t.Fatalf("%q got the wildcard certificate it is not covered by", sni)
		}
		_ = coversName([]string{sni, "*." + sni}, sni)
		_ = certmagic.StorageKeys.Safe(sni)
	})
}
