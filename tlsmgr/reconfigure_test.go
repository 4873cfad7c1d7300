package tlsmgr

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/portico-proxy/portico/config"
	"github.com/portico-proxy/portico/integration/testkit"
)

func localSitesConfig(t *testing.T, dir, acmeExtra, sites string) *config.Config {
	t.Helper()
	return sitesConfig(t, dir, "ca = \"local\"\n"+acmeExtra, sites)
}

func sitesConfig(t *testing.T, dir, acme, sites string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("test.toml", fmt.Appendf(nil, `
[acme]
%s
[storage]
path = %q
[renewal]
check_interval = "1h"
%s`, acme, dir, sites))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestApplyRefusesSiteItCannotSetUp: a config whose site's DNS provider
// cannot be built (Route 53 with an AWS profile the environment names but
// no file holds: validate cannot see that) is refused as a whole by Apply,
// with the site named; the names managed before stay, and no other name of
// that config is added.
func TestApplyRefusesSiteItCannotSetUp(t *testing.T) {
	t.Setenv("AWS_PROFILE", "portico-no-such-profile")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_REGION", "us-east-1")
	dir := t.TempDir()
	site := func(host, extra string) string {
		return fmt.Sprintf("[[site]]\nhosts = [%q]\nrespond = \"ok\"\n%s\n", host, extra)
	}
	// an ACME CA (the local CA solves no challenges); Start is not called,
	// so no order is attempted
	const acme = "ca = \"https://127.0.0.1:1/dir\"\nemail = \"ops@example.net\"\nagree_tos = true\n"
	good := sitesConfig(t, dir, acme, site("a.example.net", ""))
	m, err := New(good, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	ctx := context.Background()
	if err := m.Apply(ctx, good); err != nil {
		t.Fatal(err)
	}
	bad := sitesConfig(t, dir, acme, site("a.example.net", "")+site("b.example.net", "")+
		site("*.r53.example.net", "challenges = [\"dns-01\"]\n[site.dns]\nprovider = \"route53\""))
	err = m.Apply(ctx, bad)
	if err == nil || !strings.Contains(err.Error(), "*.r53.example.net") || !strings.Contains(err.Error(), "portico-no-such-profile") {
		t.Errorf("Apply = %v, want an error naming the site and the cause", err)
	}
	if got := m.managedNames(); !slices.Equal(got, []string{"a.example.net"}) {
		t.Errorf("after a refused config the managed names are %v, want only a.example.net", got)
	}
	if err := m.Check(bad); err == nil {
		t.Error("Check accepted the config Apply refuses")
	}
}

// TestApplyFollowsACMEChanges: a key type added to [acme] on reload is
// ordered and served (an RSA-only client gets a certificate), and one
// removed leaves service.
func TestApplyFollowsACMEChanges(t *testing.T) {
	dir := t.TempDir()
	const sites = "[[site]]\nhosts = [\"k.example.net\"]\nrespond = \"ok\"\n"
	ecOnly := localSitesConfig(t, dir, `key_types = ["p256"]`, sites)
	m, err := New(ecOnly, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	defer m.Stop()
	ctx := context.Background()
	m.Apply(ctx, ecOnly)
	testkit.Eventually(t, 30*time.Second, "the ECDSA certificate", func() bool {
		c, err := m.GetCertificate(modernHello("k.example.net"))
		return err == nil && c.Leaf != nil
	})
	if _, err := m.GetCertificate(rsaOnlyHello("k.example.net")); err == nil {
		t.Fatal("an RSA-only client got a certificate with key_types = [\"p256\"]")
	}

	m.Apply(ctx, localSitesConfig(t, dir, `key_types = ["p256", "rsa2048"]`, sites))
	testkit.Eventually(t, 30*time.Second, "the RSA certificate after rsa2048 was added by a reload", func() bool {
		c, err := m.GetCertificate(rsaOnlyHello("k.example.net"))
		return err == nil && c.Leaf != nil && c.Leaf.PublicKeyAlgorithm == x509.RSA
	})
	served(t, m, modernHello("k.example.net"), x509.ECDSA)

	m.Apply(ctx, localSitesConfig(t, dir, `key_types = ["rsa2048"]`, sites))
	testkit.Eventually(t, 30*time.Second, "the ECDSA certificate out of service after p256 was removed", func() bool {
		c, err := m.GetCertificate(modernHello("k.example.net"))
		return err == nil && c.Leaf != nil && c.Leaf.PublicKeyAlgorithm == x509.RSA
	})
}

// TestApplyUsesNewCASettings: after a reload that changes the CA, email and
// profile, the issuers that make the next orders carry the new ones, for
// the default variant and for a site's own.
func TestApplyUsesNewCASettings(t *testing.T) {
	dir := t.TempDir()
	const sites = "[[site]]\nhosts = [\"a.example.net\"]\nrespond = \"ok\"\n" +
		"[[site]]\nhosts = [\"b.example.net\"]\nrespond = \"ok\"\nchallenges = [\"tls-alpn-01\"]\n"
	acme := func(ca, email, profile string) string {
		return fmt.Sprintf("ca = %q\nemail = %q\nagree_tos = true\nprofile = %q\n", ca, email, profile)
	}
	first := sitesConfig(t, dir, acme("https://127.0.0.1:1/dir", "old@example.net", "classic"), sites)
	m, err := New(first, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	ctx := context.Background()
	if err := m.Apply(ctx, first); err != nil {
		t.Fatal(err)
	}
	if err := m.Apply(ctx, sitesConfig(t, dir, acme("https://127.0.0.1:2/dir", "new@example.net", "tlsserver"), sites)); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a.example.net", "b.example.net", "unmanaged.example.net"} {
		for _, f := range m.familiesFor(name) {
			iss := f.issuers[0]
			if iss.CA != "https://127.0.0.1:2/dir" || iss.Email != "new@example.net" || iss.Profile != "tlsserver" {
				t.Errorf("%s (%s): the next order goes to %s as %s with profile %q, want the reloaded settings", name, f.keyType, iss.CA, iss.Email, iss.Profile)
			}
		}
	}
}
