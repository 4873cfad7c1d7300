package tlsmgr

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
)

// familyStorage keeps the certificates of one key type apart from those of
// another. certmagic's storage keys name the issuer and the domain but not the
// key type, so an RSA and an ECDSA config on one storage would find each
// other's certificate and serve it. Only keys under "certificates/" are moved
// (to "certificates-<keytype>/"); the ACME account, challenge tokens, OCSP
// staples and the issuance locks stay shared, so one account serves both
// families and the fleet still issues each name under one lock.
type familyStorage struct {
	certmagic.Storage
	dir   string // e.g. "certificates-p256"
	pairs *pairWriter
}

const certsDir = "certificates"

func newFamilyStorage(inner certmagic.Storage, keyType string) *familyStorage {
	return &familyStorage{Storage: inner, dir: certsDir + "-" + keyType, pairs: newPairWriter()}
}

func (s *familyStorage) mapKey(key string) string {
	if key == certsDir {
		return s.dir
	}
	if rest, ok := strings.CutPrefix(key, certsDir+"/"); ok {
		return s.dir + "/" + rest
	}
	return key
}

func (s *familyStorage) unmapKey(key string) string {
	if key == s.dir {
		return certsDir
	}
	if rest, ok := strings.CutPrefix(key, s.dir+"/"); ok {
		return certsDir + "/" + rest
	}
	return key
}

func (s *familyStorage) Store(ctx context.Context, key string, value []byte) error {
	mapped := s.mapKey(key)
	if stem, ext, ok := s.siteFile(mapped); ok {
		return s.storeSite(ctx, mapped, stem, ext, value)
	}
	return s.Storage.Store(ctx, mapped, value)
}

func (s *familyStorage) Load(ctx context.Context, key string) ([]byte, error) {
	mapped := s.mapKey(key)
	sr := siteReadsFrom(ctx)
	if stem, ext, ok := s.siteFile(mapped); ok {
		if sr != nil {
			return sr.load(ctx, s, stem, ext)
		}
		return s.loadSite(ctx, stem, ext)
	}
	if sr != nil && sr.noStaple(mapped) {
		return nil, errNoStaple
	}
	return s.Storage.Load(ctx, mapped)
}

func (s *familyStorage) Delete(ctx context.Context, key string) error {
	mapped := s.mapKey(key)
	if stem, ext, ok := s.siteFile(mapped); ok {
		return s.deleteSite(ctx, mapped, stem, ext)
	}
	return s.Storage.Delete(ctx, mapped)
}

func (s *familyStorage) Exists(ctx context.Context, key string) bool {
	return s.Storage.Exists(ctx, s.mapKey(key))
}

func (s *familyStorage) List(ctx context.Context, path string, recursive bool) ([]string, error) {
	keys, err := s.Storage.List(ctx, s.mapKey(path), recursive)
	for i, k := range keys {
		keys[i] = s.unmapKey(k)
	}
	return keys, err
}

func (s *familyStorage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	info, err := s.Storage.Stat(ctx, s.mapKey(key))
	info.Key = s.unmapKey(info.Key)
	return info, err
}

// TryLock forwards to the backend; both of Portico's backends implement it.
func (s *familyStorage) TryLock(ctx context.Context, name string) (bool, error) {
	tl, ok := s.Storage.(certmagic.TryLocker)
	if !ok {
		return false, fmt.Errorf("storage %T cannot try a lock", s.Storage)
	}
	return tl.TryLock(ctx, name)
}

// RenewLockLease forwards to the backend when it keeps leases; backends that
// keep their own locks alive need nothing.
func (s *familyStorage) RenewLockLease(ctx context.Context, name string, d time.Duration) error {
	if r, ok := s.Storage.(certmagic.LockLeaseRenewer); ok {
		return r.RenewLockLease(ctx, name, d)
	}
	return nil
}

func (s *familyStorage) String() string { return fmt.Sprintf("%v (%s)", s.Storage, s.dir) }
