// Package h1 is Portico's HTTP/1.x wire code: it reads and writes the
// bytes of HTTP/1.x messages and knows nothing of configuration, routing
// or logging, so that it can be proven on its own against a strict parser
// and a hostile peer.
//
//   - request.go: RequestHead, the parser of the HTTP/1.1 fast path in
//     package proxy. It takes a strict subset of what net/http takes; what
//     it refuses, the fast path hands to net/http.
//   - response.go: ResponseHead, upstream answers read and checked, and
//     the relays of their bodies (Content-Length, chunked, until close).
//   - framing.go: Framing, a tracker that follows the request bytes
//     net/http reads, so that ambiguous framing net/http would accept
//     silently (Content-Length beside chunked, odd chunk extensions) can
//     be refused.
//   - conns.go: Conns, the pool of upstream connections every request path
//     shares. A connection goes back to it only when the exchange ended
//     exactly on the end of the answer, and leaves it only if nothing
//     arrived while it was idle.
//   - transport.go: Transport, the http.RoundTripper of the net/http paths
//     over the same pooled connections.
package h1
