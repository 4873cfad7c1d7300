package testkit_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/portico-proxy/portico/integration/testkit"
)

func TestSelfSignedVerifies(t *testing.T) {
	c := testkit.SelfSigned(t, "app.example.net", "*.example.org", "127.0.0.1", "::1")
	if c.TLS.Leaf != c.Leaf || c.Leaf.Subject.CommonName != "app.example.net" {
		t.Fatalf("Leaf %p / TLS.Leaf %p, CN %q", c.Leaf, c.TLS.Leaf, c.Leaf.Subject.CommonName)
	}
	if got := fmt.Sprint(c.Leaf.DNSNames, c.Leaf.IPAddresses); got != "[app.example.net *.example.org] [127.0.0.1 ::1]" {
		t.Errorf("SANs %s", got)
	}
	for _, name := range []string{"app.example.net", "a.example.org", "127.0.0.1", "::1"} {
		if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: c.Pool}); err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
	if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: "other.example.net", Roots: c.Pool}); err == nil {
		t.Error("verified for a name it does not hold")
	}
	if d := time.Until(c.Leaf.NotAfter); d < 23*time.Hour || d > 25*time.Hour {
		t.Errorf("expires in %v, want a day", d)
	}
	if c.Leaf.IsCA {
		t.Error("a CA certificate")
	}
}

func TestSelfSignedWith(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 0, 0, time.UTC)
	c := testkit.SelfSignedWith(t, testkit.Options{NotAfter: at}, "app.example.net")
	if !c.Leaf.NotAfter.Equal(at) {
		t.Errorf("NotAfter %v, want %v", c.Leaf.NotAfter, at)
	}
	if c := testkit.SelfSigned(t); c.Leaf.Subject.CommonName != "testkit" || len(c.Leaf.DNSNames) != 0 {
		t.Errorf("no names: CN %q, DNS %q", c.Leaf.Subject.CommonName, c.Leaf.DNSNames)
	}
}

func TestWritePEM(t *testing.T) {
	c := testkit.SelfSigned(t, "app.example.net")
	certFile, keyFile := c.WritePEM(t, t.TempDir())
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if !pair.Leaf.Equal(c.Leaf) {
		t.Error("the PEM files hold another certificate")
	}
}

// TestSourceServes: a real handshake through Source, verified with Pool.
func TestSourceServes(t *testing.T) {
	c := testkit.SelfSigned(t, "127.0.0.1")
	src := c.Source()
	// a tls.Config with no Certificates, so GetCertificate answers even
	// without SNI (a client dialling an IP address sends none)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: src.GetCertificate})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: src.HTTPChallengeHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("passed through"))
	}))}
	go srv.Serve(ln)
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: c.Pool}}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "passed through" {
		t.Errorf("body %q", body)
	}
	if !resp.TLS.PeerCertificates[0].Equal(c.Leaf) {
		t.Error("served another certificate")
	}
	if _, err := (testkit.StaticCerts{}).GetCertificate(&tls.ClientHelloInfo{ServerName: "a.example.net"}); !errors.Is(err, testkit.ErrNoCertificate) {
		t.Errorf("zero StaticCerts: %v", err)
	}
}

func TestEventually(t *testing.T) {
	calls := 0
	testkit.Eventually(t, 10*time.Second, "the third call", func() bool { calls++; return calls == 3 })
	if calls != 3 {
		t.Errorf("%d calls", calls)
	}

	ft := &fatalTB{TB: t}
	start := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		testkit.Eventually(ft, 30*time.Millisecond, "never", func() bool { return false })
	}()
	<-done
	if took := time.Since(start); took < 30*time.Millisecond || took > 5*time.Second {
		t.Errorf("gave up after %v, want 30ms", took)
	}
	if want := "timed out after 30ms waiting for never"; ft.msg != want {
		t.Errorf("failure %q, want %q", ft.msg, want)
	}
}

// fatalTB records Fatalf and ends its goroutine, as testing.T does.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = strings.TrimSpace(fmt.Sprintf(format, args...))
	runtime.Goexit()
}
