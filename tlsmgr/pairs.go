package tlsmgr

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"time"
)

// certmagic writes a certificate as three storage keys (.key, .crt, .json)
// one after the other, and when one write fails it deletes the ones it wrote
// before. On a full disk during a renewal that deletes the new key after it
// replaced the old one, leaving the old certificate without its key; a
// process killed between the writes leaves a key that does not match its
// certificate. Either way the site has no usable certificate.
//
// pairWriter, inside familyStorage, makes the certificate and its key one
// atomic write: a .key write is held back until its .crt arrives, then both
// go to storage as one ".pair" value before the individual files are
// refreshed, and reads of .crt and .key come from the pair. A rollback
// delete that follows a failed write is ignored, so what was in service
// stays: nothing is deleted that cannot be replaced.

// pairRecord is the stored pair.
type pairRecord struct {
	Cert []byte `json:"certificate_pem"`
	Key  []byte `json:"private_key_pem"`
}

type pairWriter struct {
	mu      sync.Mutex
	pending map[string][]byte    // site stem -> staged private key
	failed  map[string]time.Time // site stem -> when a write for it failed
}

// rollbackWindow is how long after a failed write deletes of the same
// certificate are treated as certmagic's rollback.
const rollbackWindow = time.Minute

func newPairWriter() *pairWriter {
	return &pairWriter{pending: map[string][]byte{}, failed: map[string]time.Time{}}
}

// siteFile splits a mapped key "certificates-p256/<issuer>/<name>/<name>.crt"
// into its stem (without extension) and extension, if it is a site's .key,
// .crt or .json.
func (s *familyStorage) siteFile(mapped string) (stem, ext string, ok bool) {
	if !strings.HasPrefix(mapped, s.dir+"/") || strings.Count(mapped, "/") != 3 {
		return "", "", false
	}
	for _, e := range []string{".key", ".crt", ".json"} {
		if strings.HasSuffix(mapped, e) {
			return strings.TrimSuffix(mapped, e), e, true
		}
	}
	return "", "", false
}

func (s *familyStorage) storeSite(ctx context.Context, mapped, stem, ext string, value []byte) error {
	p := s.pairs
	switch ext {
	case ".key":
		p.mu.Lock()
		p.pending[stem] = append([]byte(nil), value...)
		p.mu.Unlock()
		return nil
	case ".crt":
		p.mu.Lock()
		key, staged := p.pending[stem]
		p.mu.Unlock()
		if !staged {
			k, err := s.loadSite(ctx, stem, ".key")
			if err != nil {
				return err
			}
			key = k
		}
		rec, _ := json.Marshal(pairRecord{Cert: value, Key: key})
		if err := s.Storage.Store(ctx, stem+".pair", rec); err != nil {
			s.markFailed(stem)
			return err
		}
		p.mu.Lock()
		delete(p.pending, stem)
		p.mu.Unlock()
		// the individual files, for operators and tools; reads use the pair
		if staged {
			if err := s.Storage.Store(ctx, stem+".key", key); err != nil {
				s.markFailed(stem)
				return err
			}
		}
		if err := s.Storage.Store(ctx, mapped, value); err != nil {
			s.markFailed(stem)
			return err
		}
		return nil
	}
	if err := s.Storage.Store(ctx, mapped, value); err != nil {
		s.markFailed(stem)
		return err
	}
	return nil
}

func (s *familyStorage) markFailed(stem string) {
	s.pairs.mu.Lock()
	s.pairs.failed[stem] = time.Now()
	s.pairs.mu.Unlock()
}

// loadSite reads a site's .crt or .key from its pair when there is one.
func (s *familyStorage) loadSite(ctx context.Context, stem, ext string) ([]byte, error) {
	if ext == ".crt" || ext == ".key" {
		if data, err := s.Storage.Load(ctx, stem+".pair"); err == nil {
			var rec pairRecord
			if json.Unmarshal(data, &rec) == nil && len(rec.Cert) > 0 && len(rec.Key) > 0 {
				if ext == ".crt" {
					return rec.Cert, nil
				}
				return rec.Key, nil
			}
		}
	}
	return s.Storage.Load(ctx, stem+ext)
}

// deleteSite deletes one of a site's files, except certmagic's rollback after
// a failed write, which would take away what is in service.
func (s *familyStorage) deleteSite(ctx context.Context, mapped, stem, ext string) error {
	p := s.pairs
	p.mu.Lock()
	_, staged := p.pending[stem]
	failedAt, failed := p.failed[stem]
	if ext == ".key" && staged {
		delete(p.pending, stem)
		p.mu.Unlock()
		return nil // it never reached storage
	}
	if failed && time.Since(failedAt) < rollbackWindow {
		p.mu.Unlock()
		return nil
	}
	p.mu.Unlock()
	if ext == ".key" || ext == ".crt" {
		// a deliberate delete (a compromised key moved aside): the pair
		// must not bring it back
		if err := s.Storage.Delete(ctx, stem+".pair"); err != nil {
			return err
		}
	}
	return s.Storage.Delete(ctx, mapped)
}
