// Package testkit holds the helpers Portico's tests share: a self-signed
// certificate (SelfSigned), a certificate source that serves it to a
// proxy.Server or a tls.Config (StaticCerts), and a poll-until with a
// deadline (Eventually).
//
// Each used to be written again in the package that needed it (seven
// certificate builders, four fake certificate sources, five poll loops),
// and the copies had drifted: different validity, key usage, polling
// interval and failure message. One copy here means a new test is a few
// lines, and a fix (say, to how long a poll waits between tries) reaches
// every test.
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
