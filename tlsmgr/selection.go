package tlsmgr

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/portico-proxy/portico/config"
)

// errNoCertificate fails a handshake for which no certificate fits. certmagic
// hands the selector every cached certificate when none matches the name;
// serving one of those would show the client a certificate for some other
// site, so Portico refuses instead.
var errNoCertificate = errors.New("no certificate for this server name")

// selector picks among the cached certificates for a name: an unexpired ECDSA
// certificate when the client supports it, else an RSA one. It runs on every
// full handshake, so it only reads what is already in memory.
type selector struct{}

func (selector) SelectCertificate(hello *tls.ClientHelloInfo, choices []certmagic.Certificate) (certmagic.Certificate, error) {
	name := hello.ServerName
	now := time.Now()
	var rsaPick, expired *certmagic.Certificate
	for i := range choices {
		c := &choices[i]
		if c.Leaf == nil || !coversName(c.Names, name) {
			continue
		}
		if hello.SupportsCertificate(&c.Certificate) != nil {
			continue
		}
		if now.After(c.Leaf.NotAfter) {
			if expired == nil {
				expired = c
			}
			continue
		}
		if c.Leaf.PublicKeyAlgorithm == x509.ECDSA {
			return *c, nil
		}
		if rsaPick == nil {
			rsaPick = c
		}
	}
	switch {
	case rsaPick != nil:
		return *rsaPick, nil
	case expired != nil:
		// an expired certificate tells the client what is wrong better than
		// a handshake failure does
		return *expired, nil
	}
	return certmagic.Certificate{}, errNoCertificate
}

// coversName reports whether a certificate for names is valid for name,
// exactly or through a wildcard for its first label. The comparison is
// case-insensitive without allocating.
func coversName(names []string, name string) bool {
	if name == "" {
		return false
	}
	for _, n := range names {
		if config.HostCovers(n, name) {
			return true
		}
	}
	return false
}
