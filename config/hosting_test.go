package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

const acmeHead = `
[acme]
email = "ops@example.net"
agree_tos = true
`

func hostsList(n int, domain string) string {
	q := make([]string, n)
	for i := range q {
		q[i] = fmt.Sprintf("%q", fmt.Sprintf("h%d.%s", i, domain))
	}
	return strings.Join(q, ", ")
}

func TestHostingAndDNSRefusals(t *testing.T) {
	t.Setenv("CF_TOKEN_TEST", "cf-secret-value-123")
	t.Setenv("TSIG_TEST", "c2VjcmV0LXRzaWc=")
	for _, tc := range []struct {
		name, text string
		want       []string // substrings of the error text
	}{
		{"101 hosts in a shared classic certificate", acmeHead + "[[site]]\ncertificate = \"shared\"\nrespond = \"x\"\nhosts = [" + hostsList(101, "example.net") + "]\n",
			[]string{"site[1].hosts", "101 hosts in one shared certificate", "at most 100 names"}},
		{"26 hosts in a shared shortlived certificate", acmeHead + "profile = \"shortlived\"\n[[site]]\ncertificate = \"shared\"\nrespond = \"x\"\nhosts = [" + hostsList(26, "example.net") + "]\n",
			[]string{"26 hosts in one shared certificate", "at most 25 names", `"shortlived"`}},
		{"unknown certificate mode", acmeHead + "[[site]]\ncertificate = \"bundle\"\nrespond = \"x\"\nhosts = [\"a.example.net\"]\n",
			[]string{"site[1].certificate", `"per-host"`}},
		{"unknown DNS provider", acmeHead + "challenges = [\"dns-01\"]\n[acme.dns]\nprovider = \"godaddy\"\n",
			[]string{"acme.dns.provider", `unknown DNS provider "godaddy"`, "cloudflare, route53, rfc2136"}},
		{"dns-01 without a provider", acmeHead + "challenges = [\"dns-01\"]\n",
			[]string{"acme.challenges", "dns-01 needs a DNS provider"}},
		{"cloudflare without a token", acmeHead + "challenges = [\"dns-01\"]\n[acme.dns]\nprovider = \"cloudflare\"\n",
			[]string{"acme.dns.api_token", "CLOUDFLARE_API_TOKEN"}},
		{"route53 half credentials and bad region", acmeHead + "challenges = [\"dns-01\"]\n[acme.dns]\nprovider = \"route53\"\naccess_key_id = \"AKIA\"\nregion = \"moon-1\"\n",
			[]string{"acme.dns.access_key_id", "acme.dns.region"}},
		{"rfc2136 incomplete", acmeHead + "challenges = [\"dns-01\"]\n[acme.dns]\nprovider = \"rfc2136\"\nkey_alg = \"md5\"\nkey = \"{env.TSIG_TEST}\"\n",
			[]string{"acme.dns.server", "acme.dns.key_name", "acme.dns.key_alg"}},
		{"wildcard in a site without dns-01", acmeHead + "[[site]]\nhosts = [\"*.example.net\"]\nrespond = \"x\"\n",
			[]string{"wildcard host"}},
		{"site dns-01 without any provider", acmeHead + "[[site]]\nhosts = [\"*.example.net\"]\nrespond = \"x\"\nchallenges = [\"dns-01\"]\n",
			[]string{"site[1].challenges", "dns-01 needs a DNS provider"}},
		{"on_demand without ask", acmeHead + "[on_demand]\nupstreams = [\"http://127.0.0.1:9\"]\n",
			[]string{"on_demand.ask"}},
		{"bad default_sni", acmeHead + "[listen]\ndefault_sni = \"not a host\"\n", []string{"listen.default_sni"}},
		{"eab half set", acmeHead + "eab_kid = \"kid\"\n", []string{"acme.eab_kid"}},
		{"bad fallback CA", acmeHead + "fallback_ca = [\"ftp://ca.example\"]\n", []string{"acme.fallback_ca"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("portico.toml", []byte(tc.text))
			if err == nil {
				t.Fatal("accepted")
			}
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("not config.Errors: %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
			for _, secret := range []string{"cf-secret-value-123", "c2VjcmV0LXRzaWc="} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("a secret leaked into the error:\n%v", err)
				}
			}
		})
	}
}

func TestHostingAndDNSAccepted(t *testing.T) {
	t.Setenv("CF_TOKEN_TEST", "cf-secret")
	text := acmeHead + `challenges = ["http-01"]
profile = "tlsserver"
validation_redirect = "http://validation.internal"
fallback_ca = ["https://acme.zerossl.com/v2/DV90"]
eab_kid = "kid-1"
eab_hmac = "c2VjcmV0X2htYWM"
[acme.dns]
provider = "cloudflare"
api_token = "{env.CF_TOKEN_TEST}"
[listen]
default_sni = "A.example.net."
[on_demand]
ask = "http://127.0.0.1:9000/allowed"
upstreams = ["http://127.0.0.1:8081"]
[[site]]
hosts = [` + hostsList(25, "example.net") + `, "a.example.net"]
certificate = "shared"
respond = "x"
[[site]]
hosts = ["*.wild.example.net", "wild.example.net"]
challenges = ["dns-01"]
respond = "w"
`
	// 26 hosts would be too many for tlsserver: drop one
	text = strings.Replace(text, `"h24.example.net", `, "", 1)
	cfg, err := Parse("portico.toml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.OnDemand.MaxPerMinute != 10 || cfg.Listen.DefaultSNI != "a.example.net" || cfg.ACME.DNS.PropagationTimeout.Std().Minutes() != 2 {
		t.Fatalf("defaults: %+v %q %v", cfg.OnDemand, cfg.Listen.DefaultSNI, cfg.ACME.DNS.PropagationTimeout)
	}
	if !cfg.Sites[0].SharedCertificate() || cfg.Sites[1].SharedCertificate() || cfg.Sites[1].Certificate != "per-host" {
		t.Fatal("certificate modes")
	}
	if d := cfg.Sites[1].EffectiveDNS(cfg.ACME); d == nil || d.APIToken != "cf-secret" {
		t.Fatal("site does not inherit [acme.dns]")
	}
	if c := cfg.Sites[0].EffectiveChallenges(cfg.ACME); len(c) != 1 || c[0] != "http-01" {
		t.Fatalf("site challenges %v", c)
	}
}

// TestDNSJudgedLikeRun: the settings the running Portico refuses (a hosted
// zone ID with the "/hostedzone/" prefix) are refused by validate, and
// those it accepts ("aws-global", the SDK's region for Route 53) are
// accepted (tlsmgr/dnsprovider's TestValidateAndRunAgree checks the rest).
func TestDNSJudgedLikeRun(t *testing.T) {
	const head = acmeHead + "challenges = [\"dns-01\"]\n[acme.dns]\nprovider = \"route53\"\n"
	_, err := Parse("portico.toml", []byte(head+"hosted_zone_id = \"/hostedzone/Z1D633PJN98FT9\"\n"))
	if err == nil || !strings.Contains(err.Error(), "acme.dns.hosted_zone_id") || !strings.Contains(err.Error(), `without the "/hostedzone/" prefix`) {
		t.Errorf("hosted_zone_id with its /hostedzone/ prefix: %v", err)
	}
	site := "\n[[site]]\nhosts = [\"app.example.net\"]\nrespond = \"ok\"\n"
	if _, err := Parse("portico.toml", []byte(head+"region = \"aws-global\"\n"+site)); err != nil {
		t.Errorf("region aws-global refused: %v", err)
	}
}
