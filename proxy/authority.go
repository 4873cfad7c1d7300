package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
)

// A client may send, on a connection whose handshake was for one name, a
// request for another. HTTP/2 clients do so on purpose ("connection
// coalescing") when the certificate they were shown covers both names; but
// a Host the certificate does not cover is a request this connection was
// never authenticated for (RFC 9110 §7.4): a misdirected client, or one
// steering requests past the name it presented in SNI. Such a request is
// answered 421 Misdirected Request, which tells a well-behaved client to
// retry on a connection of its own.

// certConn is a client connection on :443 that keeps the certificate its
// handshake presented (set by the GetCertificate that Server.TLSConfig
// wraps), so that each request's Host can be checked against it.
type certConn struct {
	net.Conn
	cert *tls.Certificate // written once, during the handshake

	leafOnce sync.Once
	leaf     *x509.Certificate
	last     atomic.Pointer[string] // the last Host found covered
}

// CloseWrite keeps net/http's half-close before closing (see limitListener).
func (c *certConn) CloseWrite() error { return closeWrite(c.Conn) }

// certConnOf returns the certConn under a TLS connection, or nil.
func certConnOf(tc *tls.Conn) *certConn {
	cc, _ := tc.NetConn().(*certConn)
	return cc
}

// covers reports whether the certificate presented on the connection is
// valid for host (a Host header value; a port is ignored). With no
// certificate known (a connection not made by the TLS listener) it reports
// true. A Host seen last is not checked again, so that a connection's
// requests for one name cost a string comparison.
func (c *certConn) covers(host string) bool {
	if c == nil || c.cert == nil {
		return true
	}
	if last := c.last.Load(); last != nil && *last == host {
		return true
	}
	c.leafOnce.Do(func() {
		c.leaf = c.cert.Leaf
		if c.leaf == nil && len(c.cert.Certificate) > 0 {
			c.leaf, _ = x509.ParseCertificate(c.cert.Certificate[0])
		}
	})
	if c.leaf == nil || c.leaf.VerifyHostname(stripPort(host)) != nil {
		return false
	}
	kept := strings.Clone(host) // host may alias a read buffer
	c.last.Store(&kept)
	return true
}

// certConnKey is the context key of a request's certConn.
type certConnKey struct{}

// misdirected answers 421 for a request whose Host the connection's
// certificate does not cover.
func misdirected(w http.ResponseWriter) {
	http.Error(w, "421 Misdirected Request: the certificate of this connection does not cover this host", http.StatusMisdirectedRequest)
}
