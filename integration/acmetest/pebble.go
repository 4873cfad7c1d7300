package acmetest

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
)

// Pebble endpoint paths the harness relies on. They are unexported in
// Pebble's wfe package; these values match Pebble v2.10.x.
const (
	newOrderPath       = "/order-plz"
	renewalInfoPath    = "/draft-ietf-acme-ari-03/renewalInfo/"
	setRenewalInfoPath = "/set-renewal-info/"
)

// LogEnvVar names an environment variable: when it is non-empty, the Pebble
// log of every test is written to the test log at cleanup. Without it the
// log is only written when the test failed.
const LogEnvVar = "ACMETEST_PEBBLE_LOG"

// Profile is a certificate profile offered by the test CA (ACME profiles
// extension; Pebble advertises them in the directory's meta.profiles).
type Profile struct {
	// Description is shown in the directory.
	Description string
	// Validity is the lifetime of certificates issued under the profile,
	// rounded down to whole seconds (minimum one second). Zero means
	// PebbleOptions.CertValidity, and if that is zero too, Pebble's default
	// of 90 days.
	Validity time.Duration
	// PromoteCommonName copies the first name of the order into the
	// certificate's subject common name.
	PromoteCommonName bool
}

// PebbleOptions configures StartPebble.
type PebbleOptions struct {
	// HTTPPort is the port the validation authority dials for http-01
	// challenges, and TLSPort the one it dials for tls-alpn-01 challenges, on
	// the address the test DNS server gives for the name. Zero leaves the
	// port unusable, so set the ones for the challenge types under test.
	HTTPPort, TLSPort int
	// DNS is the resolver the validation authority uses for every lookup.
	// When nil (and ResolverAddr is empty), StartPebble starts one; get it
	// with (*Pebble).DNS.
	DNS *DNS
	// ResolverAddr, when non-empty, is the "host:port" of another DNS server
	// (for example a real authoritative server such as knotd) that the
	// validation authority queries instead of DNS (Pebble queries it over
	// TCP). DNS is then ignored and (*Pebble).DNS returns nil.
	ResolverAddr string
	// KeyAlgorithm is the key type of the CA's root and intermediate:
	// "ecdsa" (the default when empty) or "rsa".
	KeyAlgorithm string
	// OCSPResponderURL, when non-empty, is put into the authority
	// information access extension of issued certificates. Pebble runs no
	// OCSP responder; sign responses with IntermediateCert/IntermediateKey.
	OCSPResponderURL string
	// CertValidity is the lifetime of issued certificates for profiles that
	// do not set their own (0 = Pebble's default of 90 days).
	CertValidity time.Duration
	// Profiles are the offered certificate profiles. When empty, a single
	// profile named "default" is offered. Pebble assigns a random profile to
	// an order that names none, so with more than one profile clients must
	// request one explicitly to get deterministic results.
	Profiles map[string]Profile
	// DomainBlocklist lists names (and, for entries like "example.org",
	// their subdomains) for which Pebble rejects new orders.
	DomainBlocklist []string
	// ARIRetryAfter, when positive, replaces the Retry-After header Pebble
	// sends with renewalInfo responses (hard-coded by Pebble to 6 hours),
	// rounded down to whole seconds (minimum one second).
	ARIRetryAfter time.Duration
}

// IssuedCert describes one certificate Pebble signed.
type IssuedCert struct {
	// Serial is the serial number in lower-case hex, as Pebble prints it.
	Serial string
	// SerialNumber is the serial number.
	SerialNumber *big.Int
	// DNSNames and IPAddresses are the certificate's subject alternative names.
	DNSNames    []string
	IPAddresses []net.IP
	// KeyAlgorithm is the algorithm of the certificate's (subscriber's)
	// public key, e.g. x509.ECDSA or x509.RSA.
	KeyAlgorithm x509.PublicKeyAlgorithm
	// OrderID is the Pebble order the certificate was issued for.
	OrderID string
	// Profile is the profile of that order ("" if the order was not seen).
	Profile string
	// NotBefore and NotAfter delimit the validity period.
	NotBefore, NotAfter time.Time
	// Cert is the parsed certificate.
	Cert *x509.Certificate
}

// Order describes an order Pebble accepted (created) through newOrder.
type Order struct {
	// ID is Pebble's order identifier (the last element of the order URL).
	ID string
	// URL is the order URL (from the Location header).
	URL string
	// Identifiers are the identifier values of the order (DNS names or IP
	// addresses), sorted.
	Identifiers []string
	// Profile is the profile Pebble assigned to the order.
	Profile string
	// Replaces is the ARI certificate identifier the order replaces, if any.
	Replaces string
}

// Pebble is an in-process Pebble ACME CA serving its ACME API and its
// management interface over HTTPS on loopback ports. All methods are safe for
// concurrent use.
//
// Pebble reads its PEBBLE_* environment variables when constructed, so
// StartPebble sets them with t.Setenv; tests that call StartPebble (and
// their parents) must not call t.Parallel.
type Pebble struct {
	t       testing.TB
	db      *db.MemoryStore
	ca      *ca.CAImpl
	keyAlg  string
	dns     *DNS
	logs    *pebbleLog
	errLog  *log.Logger
	tlsConf *tls.Config

	rootsPEM  []byte
	rootsFile string

	acmeHandler http.Handler
	mgmtHandler http.Handler

	// ariMu orders renewalInfo reads (all ACME requests hold it shared)
	// against SetRenewalInfo writes: Pebble writes the stored ARI response
	// under its db lock but reads it without.
	ariMu         sync.RWMutex
	ariRetryAfter time.Duration

	mu       sync.Mutex
	acmeAddr string
	acmeSrv  *http.Server // nil while stopped
	mgmtAddr string
	mgmtSrv  *http.Server
	closed   bool

	ordersMu sync.Mutex
	orders   []Order
}

// StartPebble starts an in-process Pebble CA as configured by o and
// registers its shutdown with t.Cleanup. It sets PEBBLE_VA_NOSLEEP=1,
// PEBBLE_WFE_NONCEREJECT=0, PEBBLE_AUTHZREUSE=0 and PEBBLE_VA_ALWAYS_VALID=0
// with t.Setenv (so the calling test must not be parallel). The validation
// authority resolves every name through o.ResolverAddr when set, o.DNS
// otherwise.
//
// Several Pebbles may run in one process: Pebble keeps no global state
// beyond the environment variables read at construction.
func StartPebble(t testing.TB, o PebbleOptions) *Pebble {
	t.Helper()

	keyAlg := o.KeyAlgorithm
	switch keyAlg {
	case "":
		keyAlg = "ecdsa"
	case "ecdsa", "rsa":
	default:
		t.Fatalf("acmetest: unsupported KeyAlgorithm %q (want \"ecdsa\" or \"rsa\")", o.KeyAlgorithm)
	}
	resolverAddr := o.ResolverAddr
	switch {
	case resolverAddr != "":
		o.DNS = nil
	case o.DNS == nil:
		o.DNS = StartDNS(t)
		resolverAddr = o.DNS.Addr()
	default:
		resolverAddr = o.DNS.Addr()
	}

	profiles, err := pebbleProfiles(o.Profiles, o.CertValidity)
	if err != nil {
		t.Fatalf("acmetest: %v", err)
	}

	// Read by va.New and wfe.New below.
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	t.Setenv("PEBBLE_AUTHZREUSE", "0")
	t.Setenv("PEBBLE_VA_ALWAYS_VALID", "0")

	p := &Pebble{
		t:             t,
		keyAlg:        keyAlg,
		dns:           o.DNS,
		logs:          newPebbleLog(),
		ariRetryAfter: o.ARIRetryAfter,
	}
	logger := log.New(p.logs, "", 0)
	p.errLog = log.New(p.logs, "http server: ", 0)

	// Dump the log at the end; registered first so it runs last.
	t.Cleanup(func() {
		if t.Failed() || os.Getenv(LogEnvVar) != "" {
			t.Logf("acmetest: Pebble log (most recent %d lines):\n%s", maxLogLines, p.logs.String())
		}
	})

	p.db = db.NewMemoryStore()
	p.ca = ca.New(logger, p.db, o.OCSPResponderURL, keyAlg, 0, 1, profiles)
	vaImpl := va.New(logger, o.HTTPPort, o.TLSPort, false, resolverAddr, p.db)
	for _, name := range o.DomainBlocklist {
		if err := p.db.AddBlockedDomain(name); err != nil {
			t.Fatalf("acmetest: blocking domain %q: %v", name, err)
		}
	}
	wfeImpl := wfe.New(logger, p.db, vaImpl, p.ca, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
	p.acmeHandler = wfeImpl.Handler()
	p.mgmtHandler = wfeImpl.ManagementHandler()

	sc, err := newServerCert()
	if err != nil {
		t.Fatalf("acmetest: generating Pebble HTTPS certificate: %v", err)
	}
	p.rootsPEM = sc.rootPEM
	p.rootsFile = filepath.Join(t.TempDir(), "pebble-https-root.pem")
	if err := os.WriteFile(p.rootsFile, p.rootsPEM, 0o600); err != nil {
		t.Fatalf("acmetest: writing %s: %v", p.rootsFile, err)
	}
	p.tlsConf = &tls.Config{Certificates: []tls.Certificate{sc.leaf}, MinVersion: tls.VersionTLS12}

	t.Cleanup(p.close)

	acmeLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("acmetest: listening for Pebble ACME API: %v", err)
	}
	mgmtLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = acmeLn.Close()
		t.Fatalf("acmetest: listening for Pebble management API: %v", err)
	}
	p.mu.Lock()
	p.acmeAddr = acmeLn.Addr().String()
	p.acmeSrv = p.serve(acmeLn, http.HandlerFunc(p.serveACME))
	p.mgmtAddr = mgmtLn.Addr().String()
	p.mgmtSrv = p.serve(mgmtLn, p.mgmtHandler)
	p.mu.Unlock()
	return p
}

// pebbleProfiles converts the harness profiles into Pebble's.
func pebbleProfiles(in map[string]Profile, defaultValidity time.Duration) (map[string]ca.Profile, error) {
	if len(in) == 0 {
		in = map[string]Profile{"default": {Description: "The default profile"}}
	}
	out := make(map[string]ca.Profile, len(in))
	for name, prof := range in {
		validity := prof.Validity
		if validity == 0 {
			validity = defaultValidity
		}
		var secs uint64
		switch {
		case validity < 0:
			return nil, fmt.Errorf("profile %q: negative validity %v", name, validity)
		case validity > 0:
			secs = max(uint64(validity/time.Second), 1)
		}
		// secs == 0 makes Pebble use its default validity.
		out[name] = ca.Profile{
			Description:       prof.Description,
			PromoteCommonName: prof.PromoteCommonName,
			ValidityPeriod:    secs,
		}
	}
	return out, nil
}

// serve starts an HTTPS server for h on ln. Callers hold p.mu.
func (p *Pebble) serve(ln net.Listener, h http.Handler) *http.Server {
	srv := &http.Server{
		Handler:           h,
		TLSConfig:         p.tlsConf.Clone(),
		ErrorLog:          p.errLog,
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() {
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.errLog.Printf("serve %s: %v", ln.Addr(), err)
		}
	}()
	return srv
}

// serveACME is the ACME API handler: Pebble's WFE plus order recording and
// the ARI tweaks.
func (p *Pebble) serveACME(w http.ResponseWriter, r *http.Request) {
	p.ariMu.RLock()
	defer p.ariMu.RUnlock()

	switch {
	case r.Method == http.MethodPost && r.URL.Path == newOrderPath:
		rec := &capturingWriter{ResponseWriter: w}
		p.acmeHandler.ServeHTTP(rec, r)
		if rec.status == http.StatusCreated {
			p.recordOrder(rec.Header().Get("Location"), rec.body.Bytes())
		}
	case strings.HasPrefix(r.URL.Path, renewalInfoPath) && p.ariRetryAfter > 0:
		secs := max(int(p.ariRetryAfter/time.Second), 1)
		p.acmeHandler.ServeHTTP(&retryAfterWriter{ResponseWriter: w, value: strconv.Itoa(secs)}, r)
	default:
		p.acmeHandler.ServeHTTP(w, r)
	}
}

func (p *Pebble) recordOrder(location string, body []byte) {
	var resp struct {
		Identifiers []struct {
			Value string `json:"value"`
		} `json:"identifiers"`
		Profile  string `json:"profile"`
		Replaces string `json:"replaces"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		p.errLog.Printf("acmetest: cannot parse newOrder response: %v", err)
	}
	o := Order{
		ID:       location[strings.LastIndex(location, "/")+1:],
		URL:      location,
		Profile:  resp.Profile,
		Replaces: resp.Replaces,
	}
	for _, id := range resp.Identifiers {
		o.Identifiers = append(o.Identifiers, id.Value)
	}
	slices.Sort(o.Identifiers)
	p.ordersMu.Lock()
	p.orders = append(p.orders, o)
	p.ordersMu.Unlock()
}

// capturingWriter records the status and a copy of the body.
type capturingWriter struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (c *capturingWriter) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *capturingWriter) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	c.body.Write(b)
	return c.ResponseWriter.Write(b)
}

// retryAfterWriter replaces a Retry-After header before it is sent.
type retryAfterWriter struct {
	http.ResponseWriter
	value string
	done  bool
}

func (r *retryAfterWriter) fix() {
	if !r.done {
		r.done = true
		if r.Header().Get("Retry-After") != "" {
			r.Header().Set("Retry-After", r.value)
		}
	}
}

func (r *retryAfterWriter) WriteHeader(code int) {
	r.fix()
	r.ResponseWriter.WriteHeader(code)
}

func (r *retryAfterWriter) Write(b []byte) (int, error) {
	r.fix()
	return r.ResponseWriter.Write(b)
}

// DirectoryURL returns the ACME directory URL,
// "https://127.0.0.1:PORT/dir". It stays the same across Stop and Restart.
func (p *Pebble) DirectoryURL() string {
	return "https://" + p.Addr() + wfe.DirectoryPath
}

// Addr returns the "127.0.0.1:PORT" address of the ACME API.
func (p *Pebble) Addr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.acmeAddr
}

// ManagementURL returns the base URL of Pebble's management interface
// (for example ManagementURL()+"/roots/0"), served over HTTPS with the same
// certificate as the ACME API.
func (p *Pebble) ManagementURL() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return "https://" + p.mgmtAddr
}

// DNS returns the DNS server the validation authority uses, or nil when
// PebbleOptions.ResolverAddr pointed it elsewhere.
func (p *Pebble) DNS() *DNS { return p.dns }

// RootsPEM returns the PEM-encoded root certificate that signs the HTTPS
// certificate of the ACME API and management interface. It is unrelated to
// the roots certificates are issued from (see IssuerRootsPEM).
func (p *Pebble) RootsPEM() []byte { return bytes.Clone(p.rootsPEM) }

// RootsFile returns the path of a file (in a t.TempDir) holding RootsPEM.
func (p *Pebble) RootsFile() string { return p.rootsFile }

// HTTPClient returns an HTTP client that trusts RootsPEM.
func (p *Pebble) HTTPClient() *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.rootsPEM)
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		},
	}
}

// IssuerRootsPEM returns the PEM-encoded root certificate(s) of the chains
// Pebble issues certificates from, for verifying issued certificates.
func (p *Pebble) IssuerRootsPEM() []byte {
	var out []byte
	for i := range p.ca.GetNumberOfRootCerts() {
		out = append(out, p.ca.GetRootCert(i).PEM()...)
	}
	return out
}

// IssuerRoots returns IssuerRootsPEM as a certificate pool.
func (p *Pebble) IssuerRoots() *x509.CertPool {
	pool := x509.NewCertPool()
	for i := range p.ca.GetNumberOfRootCerts() {
		pool.AddCert(p.ca.GetRootCert(i).Cert)
	}
	return pool
}

// IntermediateCert returns the intermediate certificate that signs issued
// certificates (whatever the key algorithm).
func (p *Pebble) IntermediateCert() *x509.Certificate {
	return p.ca.GetIntermediateCert(0).Cert
}

// IntermediateKey returns the private key of IntermediateCert when
// KeyAlgorithm is "rsa", and nil otherwise (Pebble only exposes RSA issuer
// keys).
func (p *Pebble) IntermediateKey() crypto.Signer {
	if k := p.ca.GetIntermediateKey(0); k != nil {
		return k
	}
	return nil
}

// Issued returns every end-entity certificate Pebble has signed, in signing
// order. It is derived from the CA's own "Issued certificate serial ... for
// order ..." log line, which Pebble writes once per signature, so a
// certificate that was issued but never downloaded is counted too, and each
// finalization that signed a certificate is counted once.
func (p *Pebble) Issued() []IssuedCert {
	events := p.logs.issuedEvents()
	profiles := make(map[string]string)
	for _, o := range p.Orders() {
		profiles[o.ID] = o.Profile
	}
	out := make([]IssuedCert, 0, len(events))
	for _, ev := range events {
		ic := IssuedCert{Serial: ev.serial, OrderID: ev.orderID, Profile: profiles[ev.orderID]}
		if c := p.db.GetCertificateByID(ev.serial); c != nil && c.Cert != nil {
			ic.SerialNumber = c.Cert.SerialNumber
			ic.DNSNames = slices.Clone(c.Cert.DNSNames)
			ic.IPAddresses = slices.Clone(c.Cert.IPAddresses)
			ic.KeyAlgorithm = c.Cert.PublicKeyAlgorithm
			ic.NotBefore = c.Cert.NotBefore
			ic.NotAfter = c.Cert.NotAfter
			ic.Cert = c.Cert
		}
		out = append(out, ic)
	}
	return out
}

// IssuedFor returns the issued certificates that have name among their DNS
// names (compared case-insensitively).
func (p *Pebble) IssuedFor(name string) []IssuedCert {
	var out []IssuedCert
	for _, ic := range p.Issued() {
		if slices.ContainsFunc(ic.DNSNames, func(n string) bool { return strings.EqualFold(n, name) }) {
			out = append(out, ic)
		}
	}
	return out
}

// Orders returns the orders Pebble created (successful newOrder requests),
// in creation order. Rejected newOrder requests (e.g. blocked names) are not
// included.
func (p *Pebble) Orders() []Order {
	p.ordersMu.Lock()
	defer p.ordersMu.Unlock()
	out := make([]Order, len(p.orders))
	for i, o := range p.orders {
		o.Identifiers = slices.Clone(o.Identifiers)
		out[i] = o
	}
	return out
}

// OrdersFor returns the orders that include the identifier name (compared
// case-insensitively).
func (p *Pebble) OrdersFor(name string) []Order {
	var out []Order
	for _, o := range p.Orders() {
		if slices.ContainsFunc(o.Identifiers, func(n string) bool { return strings.EqualFold(n, name) }) {
			out = append(out, o)
		}
	}
	return out
}

// SetRenewalWindow makes Pebble's renewalInfo (ARI) endpoint suggest the
// window [start, end) for cert, like POST /set-renewal-info/ on the
// management interface. A window in the past asks for immediate renewal.
func (p *Pebble) SetRenewalWindow(cert *x509.Certificate, start, end time.Time) error {
	ari, err := json.Marshal(map[string]any{
		"suggestedWindow": map[string]string{
			"start": start.UTC().Format(time.RFC3339),
			"end":   end.UTC().Format(time.RFC3339),
		},
	})
	if err != nil {
		return err
	}
	return p.SetRenewalInfo(cert, string(ari))
}

// SetRenewalInfo makes Pebble's renewalInfo endpoint answer with the literal
// body ariResponse for cert (which may be malformed on purpose). An empty
// ariResponse restores Pebble's computed window.
func (p *Pebble) SetRenewalInfo(cert *x509.Certificate, ariResponse string) error {
	body, err := json.Marshal(struct {
		Certificate string
		ARIResponse string
	}{
		Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})),
		ARIResponse: ariResponse,
	})
	if err != nil {
		return err
	}
	req := httptest.NewRequest(http.MethodPost, setRenewalInfoPath, bytes.NewReader(body))
	req.Header.Set("User-Agent", "acmetest")
	rec := httptest.NewRecorder()

	p.ariMu.Lock()
	p.mgmtHandler.ServeHTTP(rec, req)
	p.ariMu.Unlock()

	if rec.Code != http.StatusOK {
		return fmt.Errorf("acmetest: set-renewal-info: %d %s", rec.Code, strings.TrimSpace(rec.Body.String()))
	}
	return nil
}

// Stop closes the ACME API listener and its connections, so clients get
// "connection refused" (a CA outage). The management interface and all CA
// state (accounts, orders, certificates) stay. Stopping a stopped Pebble does
// nothing.
func (p *Pebble) Stop() {
	p.mu.Lock()
	srv := p.acmeSrv
	p.acmeSrv = nil
	p.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// Restart serves the ACME API again on the same address after Stop, with the
// same state. It fails the test if the address cannot be bound again within
// five seconds. Restarting a running Pebble does nothing.
func (p *Pebble) Restart() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		p.t.Fatalf("acmetest: Restart after the test finished")
	}
	if p.acmeSrv != nil {
		return
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err := net.Listen("tcp", p.acmeAddr)
		if err == nil {
			p.acmeSrv = p.serve(ln, http.HandlerFunc(p.serveACME))
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("acmetest: Restart: listening on %s: %v", p.acmeAddr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Running reports whether the ACME API is being served (not Stopped).
func (p *Pebble) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.acmeSrv != nil
}

// close stops both servers for good.
func (p *Pebble) close() {
	p.mu.Lock()
	p.closed = true
	servers := []*http.Server{p.acmeSrv, p.mgmtSrv}
	p.acmeSrv, p.mgmtSrv = nil, nil
	p.mu.Unlock()
	for _, srv := range servers {
		if srv != nil {
			_ = srv.Close()
		}
	}
	p.logs.stopRecordingText()
}

// maxLogLines bounds the Pebble log kept for the test log.
const maxLogLines = 2000

var issuedLine = regexp.MustCompile(`^Issued certificate serial ([0-9a-f]+) for order (\S+)$`)

type issuance struct {
	serial  string
	orderID string
}

// pebbleLog is the io.Writer behind Pebble's logger: it extracts issuance
// events and keeps the most recent lines. log.Logger calls Write once per
// message.
type pebbleLog struct {
	mu      sync.Mutex
	issued  []issuance
	lines   []string
	next    int // ring position once len(lines) == maxLogLines
	dropped int
	stopped bool
}

func newPebbleLog() *pebbleLog { return &pebbleLog{} }

func (l *pebbleLog) Write(b []byte) (int, error) {
	msg := strings.TrimRight(string(b), "\n")
	l.mu.Lock()
	defer l.mu.Unlock()
	if m := issuedLine.FindStringSubmatch(msg); m != nil {
		l.issued = append(l.issued, issuance{serial: m[1], orderID: m[2]})
	}
	if l.stopped {
		return len(b), nil
	}
	line := time.Now().Format("15:04:05.000000 ") + msg
	if len(l.lines) < maxLogLines {
		l.lines = append(l.lines, line)
	} else {
		l.lines[l.next] = line
		l.next = (l.next + 1) % maxLogLines
		l.dropped++
	}
	return len(b), nil
}

func (l *pebbleLog) issuedEvents() []issuance {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.issued)
}

func (l *pebbleLog) stopRecordingText() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
}

func (l *pebbleLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var sb strings.Builder
	if l.dropped > 0 {
		fmt.Fprintf(&sb, "(%d earlier lines dropped)\n", l.dropped)
	}
	for i := range l.lines {
		sb.WriteString(l.lines[(l.next+i)%len(l.lines)])
		sb.WriteByte('\n')
	}
	return sb.String()
}
