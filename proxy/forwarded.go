package proxy

import (
	"fmt"
	"net/http/httputil"
	"net/netip"

	"github.com/portico-proxy/portico/config"
)

// trustedProxies are the networks of [listen] trusted_proxies.
type trustedProxies []netip.Prefix

func parseTrustedProxies(list []string) (trustedProxies, error) {
	out := make(trustedProxies, 0, len(list))
	for _, s := range list {
		p, err := config.ParseTrustedProxy(s)
		if err != nil {
			return nil, fmt.Errorf("listen.trusted_proxies: %q: %w", s, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// trusts reports whether the peer of a connection (Request.RemoteAddr,
// "ip:port") is a trusted proxy.
func (t trustedProxies) trusts(remoteAddr string) bool {
	if len(t) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return false
	}
	return t.trustsAddr(ap.Addr())
}

// trustsAddr reports whether a peer address is a trusted proxy.
func (t trustedProxies) trustsAddr(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	for _, p := range t {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// setForwarded sets the X-Forwarded-* headers of an upstream request.
// ReverseProxy has already removed the client's X-Forwarded-For,
// X-Forwarded-Host, X-Forwarded-Proto and Forwarded from pr.Out. From an
// untrusted peer they stay replaced: X-Forwarded-For is the peer's address
// alone, X-Forwarded-Proto is how it reached Portico, X-Forwarded-Host its
// Host. From a trusted proxy, its X-Forwarded-For chain is kept with the
// proxy's address appended, and its X-Forwarded-Proto and X-Forwarded-Host
// (what the original client used) are passed on. Forwarded (RFC 7239) is
// never passed on.
func (t trustedProxies) setForwarded(pr *httputil.ProxyRequest) {
	if !t.trusts(pr.In.RemoteAddr) {
		pr.SetXForwarded()
		return
	}
	var chain []string
	for _, v := range pr.In.Header["X-Forwarded-For"] {
		if v != "" {
			chain = append(chain, v)
		}
	}
	if chain != nil {
		pr.Out.Header["X-Forwarded-For"] = chain // SetXForwarded appends the peer
	}
	pr.SetXForwarded()
	for _, h := range []string{"X-Forwarded-Proto", "X-Forwarded-Host"} {
		if v := pr.In.Header[h]; len(v) > 0 {
			pr.Out.Header[h] = append([]string(nil), v...)
		}
	}
}
