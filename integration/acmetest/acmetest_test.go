package acmetest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"
	mdns "github.com/miekg/dns"
)

// http01Responder serves http-01 key authorizations on 127.0.0.1:port and
// implements acmez.Solver.
type http01Responder struct {
	mu     sync.Mutex
	tokens map[string]string // path -> key authorization
}

func startHTTP01Responder(t *testing.T, port int) *http01Responder {
	t.Helper()
	r := &http01Responder{tokens: make(map[string]string)}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("http-01 responder: %v", err)
	}
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return r
}

func (r *http01Responder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	ka, ok := r.tokens[req.URL.Path]
	r.mu.Unlock()
	if !ok {
		http.NotFound(w, req)
		return
	}
	_, _ = w.Write([]byte(ka))
}

func (r *http01Responder) Present(_ context.Context, chal acme.Challenge) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tokens[chal.HTTP01ResourcePath()] = chal.KeyAuthorization
	return nil
}

func (r *http01Responder) CleanUp(_ context.Context, chal acme.Challenge) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.tokens, chal.HTTP01ResourcePath())
	return nil
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newClient returns an acmez client for p with a registered account.
func newClient(ctx context.Context, t *testing.T, p *Pebble, solver acmez.Solver) (*acmez.Client, acme.Account) {
	t.Helper()
	client := &acmez.Client{
		Client: &acme.Client{
			Directory:    p.DirectoryURL(),
			HTTPClient:   p.HTTPClient(),
			PollInterval: 50 * time.Millisecond,
			PollTimeout:  15 * time.Second,
		},
		ChallengeSolvers: map[string]acmez.Solver{acme.ChallengeTypeHTTP01: solver},
	}
	acct, err := client.NewAccount(ctx, acme.Account{TermsOfServiceAgreed: true, PrivateKey: newKey(t)})
	if err != nil {
		t.Fatalf("new account: %v", err)
	}
	return client, acct
}

func parseChain(t *testing.T, chainPEM []byte) []*x509.Certificate {
	t.Helper()
	var certs []*x509.Certificate
	for rest := chainPEM; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		t.Fatal("empty chain")
	}
	return certs
}

func TestObtainCertificate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	const name = "test1.example.com"
	d := StartDNS(t)
	d.SetA(name, "127.0.0.1")
	httpPort := FreePort(t)
	responder := startHTTP01Responder(t, httpPort)

	p := StartPebble(t, PebbleOptions{
		HTTPPort:     httpPort,
		DNS:          d,
		CertValidity: time.Minute,
	})

	client, acct := newClient(ctx, t, p, responder)
	certKey := newKey(t)
	certs, err := client.ObtainCertificateForSANs(ctx, acct, certKey, []string{name})
	if err != nil {
		t.Fatalf("obtain certificate: %v", err)
	}
	chain := parseChain(t, certs[0].ChainPEM)
	leaf := chain[0]

	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(p.IssuerRootsPEM()) {
		t.Fatal("IssuerRootsPEM holds no certificate")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter}); err != nil {
		t.Fatalf("verify issued chain: %v", err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: p.IssuerRoots(), Intermediates: inter}); err != nil {
		t.Fatalf("verify issued chain against IssuerRoots: %v", err)
	}
	if !chain[1].Equal(p.IntermediateCert()) {
		t.Error("chain[1] is not IntermediateCert()")
	}
	if p.IntermediateKey() != nil {
		t.Error("IntermediateKey() != nil with ecdsa issuer")
	}
	if got := leaf.NotAfter.Sub(leaf.NotBefore); got < 58*time.Second || got > time.Minute {
		t.Errorf("validity = %v, want ~1m", got)
	}

	issued := p.Issued()
	if len(issued) != 1 {
		t.Fatalf("Issued() = %d certificates, want 1: %+v", len(issued), issued)
	}
	ic := issued[0]
	if len(ic.DNSNames) != 1 || ic.DNSNames[0] != name {
		t.Errorf("issued DNS names = %v", ic.DNSNames)
	}
	if ic.SerialNumber == nil || ic.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Errorf("issued serial %v (%s), downloaded %v", ic.SerialNumber, ic.Serial, leaf.SerialNumber)
	}
	if ic.KeyAlgorithm != x509.ECDSA {
		t.Errorf("issued key algorithm = %v", ic.KeyAlgorithm)
	}
	if ic.Profile != "default" {
		t.Errorf("issued profile = %q", ic.Profile)
	}
	if n := len(p.IssuedFor(name)); n != 1 {
		t.Errorf("IssuedFor(%q) = %d", name, n)
	}
	orders := p.Orders()
	if len(orders) != 1 || len(orders[0].Identifiers) != 1 || orders[0].Identifiers[0] != name ||
		orders[0].ID != ic.OrderID || orders[0].Profile != "default" {
		t.Errorf("Orders() = %+v, issued order %q", orders, ic.OrderID)
	}
	if n := len(p.OrdersFor("other.example.com")); n != 0 {
		t.Errorf("OrdersFor(other) = %d", n)
	}

	// ARI: override the window, with a short Retry-After left as Pebble's.
	start := time.Now().Add(-time.Hour).Truncate(time.Second)
	end := start.Add(30 * time.Minute)
	if err := p.SetRenewalWindow(leaf, start, end); err != nil {
		t.Fatalf("SetRenewalWindow: %v", err)
	}
	ari, err := client.GetRenewalInfo(ctx, leaf)
	if err != nil {
		t.Fatalf("GetRenewalInfo: %v", err)
	}
	if !ari.SuggestedWindow.Start.Equal(start) || !ari.SuggestedWindow.End.Equal(end) {
		t.Errorf("ARI window = %v..%v, want %v..%v", ari.SuggestedWindow.Start, ari.SuggestedWindow.End, start, end)
	}

	// CA outage and recovery on the same address.
	hc := p.HTTPClient()
	p.Stop()
	if resp, err := hc.Get(p.DirectoryURL()); err == nil {
		_ = resp.Body.Close()
		t.Fatal("directory reachable after Stop")
	}
	p.Restart()
	resp, err := hc.Get(p.DirectoryURL())
	if err != nil {
		t.Fatalf("directory after Restart: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("directory after Restart: %s", resp.Status)
	}
	if n := len(p.Issued()); n != 1 {
		t.Errorf("Issued() after restart = %d", n)
	}
}

// TestTwoPebbles runs two CAs (one RSA) side by side, checks they are
// independent, that blocked names get no order, and ARIRetryAfter.
func TestTwoPebbles(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	d := StartDNS(t)
	d.SetA("*.example.net", "127.0.0.1")
	httpPort := FreePort(t)
	responder := startHTTP01Responder(t, httpPort)

	p1 := StartPebble(t, PebbleOptions{HTTPPort: httpPort, DNS: d, DomainBlocklist: []string{"blocked.example.net"}})
	p2 := StartPebble(t, PebbleOptions{
		HTTPPort:      httpPort,
		DNS:           d,
		KeyAlgorithm:  "rsa",
		Profiles:      map[string]Profile{"short": {Validity: 90 * time.Second}},
		ARIRetryAfter: 2 * time.Second,
	})
	if p1.DirectoryURL() == p2.DirectoryURL() {
		t.Fatal("same directory URL")
	}
	if string(p1.IssuerRootsPEM()) == string(p2.IssuerRootsPEM()) {
		t.Fatal("same issuer roots")
	}
	key := p2.IntermediateKey()
	if key == nil {
		t.Fatal("no RSA intermediate key")
	}
	if !key.Public().(*rsa.PublicKey).Equal(p2.IntermediateCert().PublicKey) {
		t.Fatal("IntermediateKey does not match IntermediateCert")
	}
	if p2.IntermediateCert().PublicKeyAlgorithm != x509.RSA {
		t.Fatalf("intermediate algorithm %v", p2.IntermediateCert().PublicKeyAlgorithm)
	}

	c1, a1 := newClient(ctx, t, p1, responder)
	if _, err := c1.ObtainCertificateForSANs(ctx, a1, newKey(t), []string{"blocked.example.net"}); err == nil {
		t.Fatal("blocked name was issued")
	}
	if n := len(p1.Orders()); n != 0 {
		t.Fatalf("blocked name got %d orders", n)
	}
	if _, err := c1.ObtainCertificateForSANs(ctx, a1, newKey(t), []string{"a.example.net"}); err != nil {
		t.Fatalf("p1: %v", err)
	}

	c2, a2 := newClient(ctx, t, p2, responder)
	certs, err := c2.ObtainCertificateForSANs(ctx, a2, newKey(t), []string{"b.example.net"})
	if err != nil {
		t.Fatalf("p2: %v", err)
	}
	leaf := parseChain(t, certs[0].ChainPEM)[0]
	if err := leaf.CheckSignatureFrom(p2.IntermediateCert()); err != nil {
		t.Fatalf("p2 leaf not signed by its intermediate: %v", err)
	}
	if got := leaf.NotAfter.Sub(leaf.NotBefore); got < 88*time.Second || got > 90*time.Second {
		t.Errorf("p2 validity = %v", got)
	}

	if n := len(p1.Issued()); n != 1 || p1.Issued()[0].DNSNames[0] != "a.example.net" {
		t.Errorf("p1 issued %+v", p1.Issued())
	}
	if n := len(p2.Issued()); n != 1 || p2.Issued()[0].DNSNames[0] != "b.example.net" || p2.Issued()[0].Profile != "short" {
		t.Errorf("p2 issued %+v", p2.Issued())
	}

	ari, err := c2.GetRenewalInfo(ctx, leaf)
	if err != nil {
		t.Fatalf("GetRenewalInfo: %v", err)
	}
	if ari.RetryAfter == nil || time.Until(*ari.RetryAfter) > 5*time.Second {
		t.Errorf("ARI Retry-After = %v, want ~2s", ari.RetryAfter)
	}
}

func TestDNS(t *testing.T) {
	d := StartDNS(t)
	d.SetA("Host.Example.com.", "127.0.0.5")
	d.SetTXT("_acme-challenge.host.example.com", "v1", strings.Repeat("x", 300))

	query := func(netw, name string, qtype uint16) *mdns.Msg {
		t.Helper()
		m := new(mdns.Msg)
		m.SetQuestion(mdns.Fqdn(name), qtype)
		c := &mdns.Client{Net: netw, Timeout: 2 * time.Second}
		in, _, err := c.Exchange(m, d.Addr())
		if err != nil {
			t.Fatalf("%s %s: %v", netw, name, err)
		}
		return in
	}
	for _, netw := range []string{"udp", "tcp"} {
		in := query(netw, "host.example.com", mdns.TypeA)
		if len(in.Answer) != 1 || in.Answer[0].(*mdns.A).A.String() != "127.0.0.5" {
			t.Errorf("%s A = %v", netw, in.Answer)
		}
	}
	if in := query("udp", "unknown.example.com", mdns.TypeA); in.Rcode != mdns.RcodeNameError {
		t.Errorf("unknown A rcode = %d", in.Rcode)
	}
	for _, qt := range []uint16{mdns.TypeAAAA, mdns.TypeCAA} {
		if in := query("tcp", "host.example.com", qt); in.Rcode != mdns.RcodeSuccess || len(in.Answer) != 0 {
			t.Errorf("type %d: rcode %d answers %v", qt, in.Rcode, in.Answer)
		}
	}
	in := query("tcp", "_acme-challenge.host.example.com", mdns.TypeTXT)
	if len(in.Answer) != 2 || strings.Join(in.Answer[1].(*mdns.TXT).Txt, "") != strings.Repeat("x", 300) {
		t.Errorf("TXT = %v", in.Answer)
	}

	d.SetDefaultA("127.0.0.9")
	if in := query("udp", "unknown.example.com", mdns.TypeA); len(in.Answer) != 1 || in.Answer[0].(*mdns.A).A.String() != "127.0.0.9" {
		t.Errorf("default A = %v", in.Answer)
	}
	d.ClearA("host.example.com")
	if in := query("udp", "host.example.com", mdns.TypeA); len(in.Answer) != 1 || in.Answer[0].(*mdns.A).A.String() != "127.0.0.9" {
		t.Errorf("cleared A = %v", in.Answer)
	}
}

// TestConcurrentOrders obtains certificates for several names at once from
// one account, as a proxy issuing on demand would, to check that Pebble holds
// up under the race detector and that Issued counts each name once.
func TestConcurrentOrders(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	d := StartDNS(t)
	d.SetDefaultA("127.0.0.1")
	httpPort := FreePort(t)
	responder := startHTTP01Responder(t, httpPort)
	p := StartPebble(t, PebbleOptions{HTTPPort: httpPort, DNS: d})
	client, acct := newClient(ctx, t, p, responder)

	names := []string{"c1.example.org", "c2.example.org", "c3.example.org", "c4.example.org"}
	var wg sync.WaitGroup
	errs := make(chan error, len(names))
	for _, name := range names {
		key := newKey(t)
		wg.Go(func() {
			if _, err := client.ObtainCertificateForSANs(ctx, acct, key, []string{name}); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, name := range names {
		if n := len(p.IssuedFor(name)); n != 1 {
			t.Errorf("IssuedFor(%s) = %d", name, n)
		}
		if n := len(p.OrdersFor(name)); n != 1 {
			t.Errorf("OrdersFor(%s) = %d", name, n)
		}
	}
}
