package proxy

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"unsafe"

	"github.com/portico-proxy/portico/config"
)

// trustedProxies are the networks of [listen] trusted_proxies.
type trustedProxies []netip.Prefix

func parseTrustedProxies(list []string) (trustedProxies, error) {
	return parseSources("listen.trusted_proxies", list)
}

// parseSources parses a list of addresses and networks written as
// trusted_proxies is (proxy_protocol is too); key names it in errors.
func parseSources(key string, list []string) (trustedProxies, error) {
	out := make(trustedProxies, 0, len(list))
	for _, s := range list {
		p, err := config.ParseTrustedProxy(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %q: %w", key, s, err)
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

// The forwarding policy, one copy for both request paths: ReverseProxy's
// Rewrite (setForwarded) and the fast path's request writer (relay.go).
// From an untrusted peer the client's X-Forwarded-* are replaced:
// X-Forwarded-For is the peer's address alone, X-Forwarded-Proto how it
// reached Portico, X-Forwarded-Host its Host. From a trusted proxy, its
// X-Forwarded-For chain is kept with the proxy's address appended, and its
// X-Forwarded-Proto and X-Forwarded-Host (what the original client used)
// are passed on. Forwarded (RFC 7239) is never passed on.

// appendForwardedFor appends the X-Forwarded-For value of an upstream
// request: a trusted proxy's chain (its non-empty values, in order), then
// the peer's address; for any other peer, its address alone.
func appendForwardedFor[T string | []byte](dst []byte, trusted bool, chain []T, peer string) []byte {
	if trusted {
		for _, v := range chain {
			if len(v) > 0 {
				dst = append(dst, v...)
				dst = append(dst, ", "...)
			}
		}
	}
	return append(dst, peer...)
}

// setForwarded sets the X-Forwarded-* headers of an upstream request on
// the net/http paths. ReverseProxy has already removed the client's
// X-Forwarded-For, X-Forwarded-Host, X-Forwarded-Proto and Forwarded from
// pr.Out.
func (t trustedProxies) setForwarded(pr *httputil.ProxyRequest) {
	in, out := pr.In, pr.Out.Header
	trusted := t.trusts(in.RemoteAddr)
	if peer, _, err := net.SplitHostPort(in.RemoteAddr); err == nil {
		out["X-Forwarded-For"] = []string{string(appendForwardedFor(nil, trusted, in.Header["X-Forwarded-For"], peer))}
	}
	proto := "http"
	if in.TLS != nil {
		proto = "https"
	}
	for _, h := range [...]struct{ name, own string }{{"X-Forwarded-Host", in.Host}, {"X-Forwarded-Proto", proto}} {
		if v := in.Header[h.name]; trusted && len(v) > 0 {
			out[h.name] = append([]string(nil), v...)
		} else {
			out[h.name] = []string{h.own}
		}
	}
}

// clientIP is the address of the client a request comes from (the
// net/http paths): see chainClient.
func (t trustedProxies) clientIP(r *http.Request) string {
	peer, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		peer = r.RemoteAddr
	}
	if !t.trusts(r.RemoteAddr) {
		return peer
	}
	if c, ok := chainClient(t, r.Header["X-Forwarded-For"]); ok {
		return c
	}
	return peer
}

// appendClient is clientIP for the fast path: the peer is a trusted proxy
// and xff are its X-Forwarded-For values.
func (t trustedProxies) appendClient(dst []byte, peer string, xff [][]byte) []byte {
	if c, ok := chainClient(t, xff); ok {
		return append(dst, c...)
	}
	return append(dst, peer...)
}

// chainClient reads the client's address off a trusted proxy's
// X-Forwarded-For chain: from its end, skipping the trusted proxies it
// passed, as nginx's real_ip_recursive does, so that an address an
// untrusted client wrote at the start of the chain is never taken. When
// every address is trusted, the first is the client. ok is false for an
// empty chain, or one with an item that is no address (then the peer is
// the client).
func chainClient[T string | []byte](t trustedProxies, values []T) (client T, ok bool) {
	for i := len(values) - 1; i >= 0; i-- {
		v := values[i]
		for len(v) > 0 {
			item := v
			v = v[:0]
			for j := len(item) - 1; j >= 0; j-- {
				if item[j] == ',' {
					item, v = item[j+1:], item[:j]
					break
				}
			}
			item = trimSpace(item)
			var a netip.Addr
			var err error
			switch x := any(item).(type) {
			case string:
				a, err = netip.ParseAddr(x)
			case []byte:
				a, err = netip.ParseAddr(unsafe.String(unsafe.SliceData(x), len(x)))
			}
			if err != nil {
				return client, false
			}
			client, ok = item, true
			if !t.trustsAddr(a) {
				return client, true
			}
		}
	}
	return client, ok
}

// trimSpace removes spaces and tabs around a list item.
func trimSpace[T string | []byte](s T) T {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// requestID is the X-Request-ID of a request: a trusted proxy's, when it
// sent a usable one, else a new one.
func (t trustedProxies) requestID(r *http.Request) []byte {
	if v := r.Header.Get("X-Request-Id"); v != "" && t.trusts(r.RemoteAddr) && usableRequestID(v) {
		return []byte(v)
	}
	return appendRequestID(nil)
}

// usableRequestID reports whether a request ID from a trusted proxy can be
// passed on and logged as it is: 1 to 128 visible ASCII characters.
func usableRequestID[T string | []byte](v T) bool {
	if len(v) == 0 || len(v) > 128 {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] <= ' ' || v[i] >= 0x7f || v[i] == '"' || v[i] == '\\' {
			return false
		}
	}
	return true
}

// appendRequestID appends a new request ID: 16 hexadecimal digits, random
// (64 bits: unique enough to find one request in a day's logs).
func appendRequestID(b []byte) []byte {
	const hex = "0123456789abcdef"
	n := rand.Uint64()
	for i := 60; i >= 0; i -= 4 {
		b = append(b, hex[n>>uint(i)&15])
	}
	return b
}
