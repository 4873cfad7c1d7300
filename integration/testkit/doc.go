// Package testkit holds the helpers Portico's tests share: a self-signed
// certificate (SelfSigned), a certificate source that serves it to a
// proxy.Server or a tls.Config (StaticCerts), a poll-until with a
// deadline (Eventually), and a buffer a process or server writes its log to
// while the test reads it (Buffer).
//
// Each used to be written again in the package that needed it (a
// self-signed certificate builder in proxy, cmd/portico, config and
// tlsmgr/notify, a fake certificate source in proxy and cmd/portico, a poll
// loop in proxy, proxy/accesslog, tlsmgr, its Redis storage and the
// integration harness), and the copies had drifted: different validity, key
// usage, polling interval and failure message. One copy here means a new
// test is a few lines, and a fix (say, to how long a poll waits between
// tries) reaches every test.
//
// What is not here, on purpose: certificates that must chain to a CA
// (tlsmgr's certFactory signs RSA and ECDSA leaves from one CA with reused
// keys, for benchmarks over thousands of names; acmetest's Pebble identity
// is a root and a leaf) and polls whose failure message reports the last
// state seen (the harness's waitHTTPS).
//
// Typical use:
//
//	c := testkit.SelfSigned(t, "app.example.net", "127.0.0.1")
//	srv, err := proxy.New(cfg, c.Source(), zap.NewNop())
//	...
//	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: c.Pool}}}
//	testkit.Eventually(t, 10*time.Second, "the upstream to see the request", func() bool { ... })
//
// The package imports none of Portico's own packages, so that the tests of
// any of them (proxy, tlsmgr, config, cmd/portico) can import it without a
// cycle. It lives under integration/ because the repository's top level is
// fixed; nothing in it starts a process or needs the network.
package testkit
