package testkit

import (
	"crypto/tls"
	"errors"
	"net/http"
)

// ErrNoCertificate is what an empty StaticCerts answers every handshake
// with.
var ErrNoCertificate = errors.New("testkit: no certificate")

// StaticCerts is a fake certificate source, the proxy's side of a
// certificate manager (proxy.Certificates): it serves Cert for every SNI
// and passes every http-01 request through, as if no challenge were ever
// pending. The zero value has no certificate, for a server whose
// handshakes a test never makes; Cert.Source gives one that serves.
type StaticCerts struct {
	Cert *tls.Certificate
}

// GetCertificate returns Cert whatever the ClientHello asks for, or
// ErrNoCertificate when Cert is nil.
func (s StaticCerts) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if s.Cert == nil {
		return nil, ErrNoCertificate
	}
	return s.Cert, nil
}

// HTTPChallengeHandler returns next: there are no challenges to answer.
func (StaticCerts) HTTPChallengeHandler(next http.Handler) http.Handler { return next }
