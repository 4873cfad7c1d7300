package tlsmgr

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io/fs"
	"strings"
	"sync"

	"github.com/caddyserver/certmagic"
)

// Loading one certificate, certmagic reads its .key, .crt and .json one
// after the other, then its OCSP staple. With pairs (pairs.go) the .key and
// the .crt each read the same .pair, so a load cost four reads, on Redis
// four round trips, each waited for in turn; before pairs existed it cost
// six. A load that carries siteReads in its context instead reads the .pair
// and the .json together (one round trip on a backend that can batch, see
// batchLoader), falls back to the .key and the .crt together when there is
// no usable pair, and answers certmagic's reads from what it read. The OCSP
// staple is not read for a certificate that names no OCSP responder:
// certmagic stores staples only from the responder the certificate names,
// so there is none to find.
//
// siteReads lives only as long as one load's context, so nothing read is
// ever served to a later load: each load sees storage as it is.

type siteReadsKey struct{}

// withSiteReads returns ctx carrying a fresh siteReads for one certificate
// load (certmagic's CacheManagedCertificate).
func withSiteReads(ctx context.Context) context.Context {
	return context.WithValue(ctx, siteReadsKey{}, &siteReads{})
}

func siteReadsFrom(ctx context.Context) *siteReads {
	sr, _ := ctx.Value(siteReadsKey{}).(*siteReads)
	return sr
}

// siteReads holds the files of one site (one certificate of one family).
type siteReads struct {
	mu      sync.Mutex
	stem    string // the mapped key without extension; "" until read
	crt     []byte
	key     []byte
	meta    []byte
	crtErr  error
	keyErr  error
	metaErr error
}

// batchLoader is a storage that reads several keys in one round trip.
// values[i] and errs[i] are what Load(keys[i]) would return.
type batchLoader interface {
	LoadMany(ctx context.Context, keys []string) (values [][]byte, errs []error)
}

// loadMany reads keys in one round trip where the storage can.
func loadMany(ctx context.Context, st certmagic.Storage, keys ...string) ([][]byte, []error) {
	if b, ok := st.(batchLoader); ok {
		return b.LoadMany(ctx, keys)
	}
	values, errs := make([][]byte, len(keys)), make([]error, len(keys))
	for i, k := range keys {
		values[i], errs[i] = st.Load(ctx, k)
	}
	return values, errs
}

// load answers a read of a site's .key, .crt or .json (ext) for stem,
// reading the site's files the first time.
func (sr *siteReads) load(ctx context.Context, s *familyStorage, stem, ext string) ([]byte, error) {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	if sr.stem != stem {
		sr.read(ctx, s, stem)
	}
	switch ext {
	case ".crt":
		return sr.crt, sr.crtErr
	case ".key":
		return sr.key, sr.keyErr
	}
	return sr.meta, sr.metaErr
}

func (sr *siteReads) read(ctx context.Context, s *familyStorage, stem string) {
	sr.stem = stem
	v, errs := loadMany(ctx, s.Storage, stem+".pair", stem+".json")
	sr.meta, sr.metaErr = v[1], errs[1]
	if errs[0] == nil {
		var rec pairRecord
		if json.Unmarshal(v[0], &rec) == nil && len(rec.Cert) > 0 && len(rec.Key) > 0 {
			sr.crt, sr.key, sr.crtErr, sr.keyErr = rec.Cert, rec.Key, nil, nil
			return
		}
	}
	v, errs = loadMany(ctx, s.Storage, stem+".key", stem+".crt")
	sr.key, sr.crt, sr.keyErr, sr.crtErr = v[0], v[1], errs[0], errs[1]
}

// noStaple reports whether the OCSP staple read for key can be answered
// "not stored" without reading: the certificate this load read names no
// OCSP responder.
func (sr *siteReads) noStaple(key string) bool {
	if !strings.HasPrefix(key, "ocsp/") {
		return false
	}
	sr.mu.Lock()
	defer sr.mu.Unlock()
	if sr.stem == "" || sr.crtErr != nil {
		return false
	}
	b, _ := pem.Decode(sr.crt)
	if b == nil || b.Type != "CERTIFICATE" {
		return false
	}
	// id-ad-ocsp is the access method of an OCSP responder in the
	// Authority Information Access extension; a certificate without it
	// has no responder (a chance match elsewhere only costs the read)
	return !bytes.Contains(b.Bytes, []byte(oidOCSPDER))
}

// oidOCSPDER is the DER of id-ad-ocsp (1.3.6.1.5.5.7.48.1).
const oidOCSPDER = "\x06\x08\x2b\x06\x01\x05\x05\x07\x30\x01"

// errNoStaple answers the staple read of a certificate without a responder.
var errNoStaple = fmt.Errorf("no OCSP staple: the certificate names no OCSP responder: %w", fs.ErrNotExist)
