// Package acmetest runs Let's Encrypt's Pebble ACME CA in-process, together
// with a small test DNS server, for Portico's end-to-end tests.
//
// Typical use:
//
//	dns := acmetest.StartDNS(t)
//	dns.SetA("test1.example.com", "127.0.0.1")
//	httpPort := acmetest.FreePort(t) // where the proxy serves http-01
//	ca := acmetest.StartPebble(t, acmetest.PebbleOptions{
//		HTTPPort:     httpPort,
//		DNS:          dns,
//		CertValidity: time.Minute,
//	})
//	// configure the proxy with ca.DirectoryURL() and ca.RootsFile(),
//	// then check ca.Issued(), ca.Orders(), verify against ca.IssuerRoots().
//
// Everything is torn down with t.Cleanup. Pebble's log is written to the
// test log when the test fails (or always, with ACMETEST_PEBBLE_LOG=1).
//
// Notes and limitations of Pebble (v2.10.x) as used here:
//
//   - Pebble reads PEBBLE_* environment variables in its constructors, so
//     StartPebble sets them with t.Setenv: tests using it must not call
//     t.Parallel (t.Setenv panics in parallel tests). The harness disables
//     VA sleeps, random bad-nonce rejection, authorization reuse and
//     "always valid" validation.
//   - Apart from that, Pebble has no global state (no metrics registry, no
//     package-level mutable variables), so several Pebbles can run in one
//     process. Each leaks one idle goroutine (the VA task loop, which Pebble
//     gives no way to stop).
//   - Pebble gives an order that names no profile a random profile. The
//     harness offers a single "default" profile unless told otherwise.
//   - Pebble runs no OCSP responder; OCSPResponderURL only sets the URL in
//     issued certificates. Pebble only exposes the issuer key when the key
//     algorithm is RSA, so IntermediateKey is nil for ECDSA.
//   - Pebble answers renewalInfo (ARI) with a fixed Retry-After of six
//     hours; PebbleOptions.ARIRetryAfter rewrites it.
//   - Pebble does not check CAA; the DNS server answers CAA and AAAA queries
//     with empty answers anyway.
//   - Stop/Restart only close and reopen the ACME listener: the CA's
//     in-memory state survives a "restart".
package acmetest
