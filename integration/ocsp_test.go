package integration

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/portico-proxy/portico/integration/acmetest"
	"github.com/portico-proxy/portico/integration/testkit"
)

// ocspResponder answers OCSP requests for Pebble's certificates, signing
// with Pebble's intermediate key. Serials can be marked revoked, and names
// can be given responses signed by a stranger's key (which must never be
// stapled).
type ocspResponder struct {
	pebble   *acmetest.Pebble
	validFor time.Duration
	// bySerial counts requests per certificate serial (hex)
	bySerial sync.Map // string -> *atomic.Int64

	mu      sync.Mutex
	revoked map[string]bool // serial (hex)
	// bogusName's certificates get responses signed by a stranger
	bogusName string
	stranger  crypto.Signer
}

func newOCSPResponder(t *testing.T, validFor time.Duration) (*ocspResponder, *httptest.Server) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	o := &ocspResponder{validFor: validFor, revoked: map[string]bool{}, stranger: key}
	srv := httptest.NewServer(o)
	t.Cleanup(srv.Close)
	return o, srv
}

func (o *ocspResponder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var der []byte
	if r.Method == http.MethodPost {
		der, _ = io.ReadAll(r.Body)
	} else {
		der, _ = base64.StdEncoding.DecodeString(strings.TrimPrefix(r.URL.Path, "/"))
	}
	req, err := ocsp.ParseRequest(der)
	if err != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	serial := req.SerialNumber.Text(16)
	n, _ := o.bySerial.LoadOrStore(serial, new(atomic.Int64))
	n.(*atomic.Int64).Add(1)
	now := time.Now().Truncate(time.Second)
	tmpl := ocsp.Response{Status: ocsp.Good, SerialNumber: req.SerialNumber, ThisUpdate: now, NextUpdate: now.Add(o.validFor)}
	o.mu.Lock()
	signer := o.pebble.IntermediateKey()
	if o.revoked[serial] {
		tmpl.Status, tmpl.RevokedAt, tmpl.RevocationReason = ocsp.Revoked, now, ocsp.Superseded
	}
	for _, ic := range o.pebble.Issued() {
		if ic.SerialNumber.Cmp(req.SerialNumber) == 0 && slices.Contains(ic.DNSNames, o.bogusName) {
			signer = o.stranger
		}
	}
	o.mu.Unlock()
	issuer := o.pebble.IntermediateCert()
	resp, err := ocsp.CreateResponse(issuer, issuer, tmpl, signer)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/ocsp-response")
	w.Write(resp)
}

// hitsFor is how many OCSP requests named the serials of certs.
func (o *ocspResponder) hitsFor(certs ...*x509.Certificate) int64 {
	var total int64
	for _, c := range certs {
		if n, ok := o.bySerial.Load(c.SerialNumber.Text(16)); ok {
			total += n.(*atomic.Int64).Load()
		}
	}
	return total
}

func (o *ocspResponder) revoke(serial *big.Int) {
	o.mu.Lock()
	o.revoked[serial.Text(16)] = true
	o.mu.Unlock()
}

// handshake connects with tweak and returns the connection state.
func handshake(t *testing.T, addr, name string, roots *x509.CertPool, tweak func(*tls.Config)) tls.ConnectionState {
	t.Helper()
	st, err := tryHandshake(addr, name, roots, tweak)
	if err != nil {
		t.Fatalf("handshake for %s: %v", name, err)
	}
	return st
}

func tryHandshake(addr, name string, roots *x509.CertPool, tweak func(*tls.Config)) (tls.ConnectionState, error) {
	tc := &tls.Config{ServerName: name, RootCAs: roots}
	if tweak != nil {
		tweak(tc)
	}
	// bounded: a handshake the server holds (an order in flight) fails
	// the test instead of hanging it
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 20 * time.Second}, "tcp", addr, tc)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer conn.Close()
	return conn.ConnectionState(), nil
}

var (
	tls13 = func(tc *tls.Config) { tc.MinVersion = tls.VersionTLS13 }
	// an old client: TLS 1.2 with only ECDHE-RSA suites
	rsaOnly = func(tc *tls.Config) {
		tc.MaxVersion = tls.VersionTLS12
		tc.CipherSuites = []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384}
	}
)

// TestDualCertificatesAndOCSP: a TLS 1.3 client gets the ECDSA certificate, a
// TLS 1.2 client offering only ECDHE-RSA suites the RSA one; both chains
// verify and both carry a stapled "good" response. A second instance on the
// same storage staples from storage without asking the responder. A bogus
// response is never stapled. A revoked certificate is reported and replaced.
func TestDualCertificatesAndOCSP(t *testing.T) {
	// responses valid for 60 s: certmagic refreshes a staple after half its
	// validity, so no refresh falls in the second-instance check below, and
	// the revocation is seen within about 30 s
	responder, rsrv := newOCSPResponder(t, 60*time.Second)
	e := newEnv(t, acmetest.PebbleOptions{KeyAlgorithm: "rsa", OCSPResponderURL: rsrv.URL + "/"})
	responder.pebble = e.pebble
	responder.bogusName = "bogus.test"
	e.dns.SetA("dual.test", "127.0.0.1")
	e.dns.SetA("bogus.test", "127.0.0.1")
	dir := t.TempDir()
	cfg := e.acmeConfig("127.0.0.1", dir+"/data", `"http-01"`) +
		site([]string{"dual.test"}, `respond = "dual"`) + site([]string{"bogus.test"}, `respond = "bogus"`)
	p := startPortico(t, dir, cfg, e.httpsAddr("127.0.0.1"))
	roots := e.pebble.IssuerRoots()
	testkit.Eventually(t, 60*time.Second, "both certificates of both names issued", func() bool {
		for _, n := range []string{"dual.test", "bogus.test"} {
			if rsa, ec := countByKey(e.pebble.IssuedFor(n)); rsa < 1 || ec < 1 {
				return false
			}
		}
		return true
	})

	check := func(tweak func(*tls.Config), wantAlg x509.PublicKeyAlgorithm) *x509.Certificate {
		t.Helper()
		var st tls.ConnectionState
		testkit.Eventually(t, 30*time.Second, fmt.Sprintf("a stapled %v certificate", wantAlg), func() bool {
			var err error
			st, err = tryHandshake(e.httpsAddr("127.0.0.1"), "dual.test", roots, tweak)
			return err == nil && st.PeerCertificates[0].PublicKeyAlgorithm == wantAlg && len(st.OCSPResponse) > 0
		})
		leaf, issuer := st.PeerCertificates[0], st.PeerCertificates[1]
		if len(st.VerifiedChains) == 0 {
			t.Fatalf("%v chain not verified", wantAlg)
		}
		resp, err := ocsp.ParseResponseForCert(st.OCSPResponse, leaf, issuer)
		if err != nil {
			t.Fatalf("stapled response for %v does not verify: %v", wantAlg, err)
		}
		if resp.Status != ocsp.Good {
			t.Fatalf("stapled status %d, want good", resp.Status)
		}
		return leaf
	}
	ecLeaf := check(tls13, x509.ECDSA)
	rsaLeaf := check(rsaOnly, x509.RSA)
	if st := handshake(t, e.httpsAddr("127.0.0.1"), "dual.test", roots, tls13); st.Version != tls.VersionTLS13 {
		t.Errorf("TLS 1.3 client negotiated %x", st.Version)
	}
	if st := handshake(t, e.httpsAddr("127.0.0.1"), "dual.test", roots, rsaOnly); st.Version != tls.VersionTLS12 {
		t.Errorf("TLS 1.2 client negotiated %x", st.Version)
	}

	// a response signed by a stranger is never stapled
	for _, tweak := range []func(*tls.Config){tls13, rsaOnly} {
		testkit.Eventually(t, 20*time.Second, "bogus.test served", func() bool {
			_, err := tryHandshake(e.httpsAddr("127.0.0.1"), "bogus.test", roots, tweak)
			return err == nil
		})
		if st := handshake(t, e.httpsAddr("127.0.0.1"), "bogus.test", roots, tweak); len(st.OCSPResponse) != 0 {
			t.Errorf("bogus.test (%v) was served a staple that does not verify", st.PeerCertificates[0].PublicKeyAlgorithm)
		}
	}

	// a second instance on the same storage staples from storage
	// (bogus.test's stranger-signed responses are refused and refetched on
	// every maintenance pass, so only dual.test's requests are counted)
	hits := responder.hitsFor(ecLeaf, rsaLeaf)
	dir2 := t.TempDir()
	e.dns.SetA("dual.test", "127.0.0.1")
	cfg2 := e.acmeConfig("127.0.0.2", dir+"/data", `"http-01"`) +
		site([]string{"dual.test"}, `respond = "dual"`)
	startPortico(t, dir2, cfg2, e.httpsAddr("127.0.0.2"))
	for _, tweak := range []func(*tls.Config){tls13, rsaOnly} {
		st := handshake(t, e.httpsAddr("127.0.0.2"), "dual.test", roots, tweak)
		if len(st.OCSPResponse) == 0 {
			t.Errorf("second instance served %v without a staple", st.PeerCertificates[0].PublicKeyAlgorithm)
		}
	}
	if got := responder.hitsFor(ecLeaf, rsaLeaf); got > hits {
		t.Errorf("second instance fetched OCSP %d times instead of reading storage", got-hits)
	}

	// revoke the ECDSA certificate: reported, and replaced by a new one
	responder.revoke(ecLeaf.SerialNumber)
	p.waitLog("REVOKED", 90*time.Second)
	testkit.Eventually(t, 60*time.Second, "a replacement ECDSA certificate served", func() bool {
		st := handshake(t, e.httpsAddr("127.0.0.1"), "dual.test", roots, tls13)
		return st.PeerCertificates[0].SerialNumber.Cmp(ecLeaf.SerialNumber) != 0
	})
	if st := handshake(t, e.httpsAddr("127.0.0.1"), "dual.test", roots, rsaOnly); st.PeerCertificates[0].SerialNumber.Cmp(rsaLeaf.SerialNumber) != 0 {
		t.Errorf("the RSA certificate was replaced too; only the revoked ECDSA one should be")
	}
}

// TestNoOCSPURLNoNoise: certificates without an OCSP URL (Let's Encrypt's
// since 2025) get no staple and no OCSP warnings in the log.
func TestNoOCSPURLNoNoise(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	e.dns.SetA("quiet.test", "127.0.0.1")
	dir := t.TempDir()
	p := startPortico(t, dir, e.acmeConfig("127.0.0.1", dir+"/data", `"http-01"`)+site([]string{"quiet.test"}, `respond = "q"`), e.httpsAddr("127.0.0.1"))
	c := client(e.httpsAddr("127.0.0.1"), e.pebble.IssuerRoots(), nil)
	waitHTTPS(t, c, "https://quiet.test/", 60*time.Second)
	testkit.Eventually(t, 30*time.Second, "both certificates", func() bool {
		rsa, ec := countByKey(e.pebble.IssuedFor("quiet.test"))
		return rsa > 0 && ec > 0
	})
	for _, tweak := range []func(*tls.Config){tls13, rsaOnly} {
		testkit.Eventually(t, 10*time.Second, "handshake", func() bool {
			_, err := tryHandshake(e.httpsAddr("127.0.0.1"), "quiet.test", e.pebble.IssuerRoots(), tweak)
			return err == nil
		})
		if st := handshake(t, e.httpsAddr("127.0.0.1"), "quiet.test", e.pebble.IssuerRoots(), tweak); len(st.OCSPResponse) != 0 {
			t.Errorf("a certificate without an OCSP URL was stapled")
		}
	}
	for _, line := range strings.Split(p.log.String(), "\n") {
		if strings.Contains(strings.ToLower(line), "ocsp") && (strings.Contains(line, `"level":"warn"`) || strings.Contains(line, `"level":"error"`)) {
			t.Errorf("OCSP noise: %s", line)
		}
	}
}
