package dnsprovider

import (
	"strings"
	"testing"
	"time"

	"github.com/libdns/rfc2136"

	"github.com/portico-proxy/portico/config"
)

// Distinctive secret values: no message may contain them.
const (
	secretToken  = "SECRET-cf-token-do-not-print-0123456789"
	secretAKID   = "AKIASECRETDONOTPRINT"
	secretAWSKey = "SECRET-aws-secret-do-not-print-0123456789"
	secretTSIG   = "U0VDUkVULXRzaWcta2V5LWRvLW5vdC1wcmludA==" // base64 of "SECRET-tsig-key-do-not-print"
)

func goodCloudflare() config.DNS {
	return config.DNS{Provider: "cloudflare", APIToken: secretToken}
}

func goodRoute53() config.DNS {
	return config.DNS{Provider: "route53", Region: "eu-central-1", AccessKeyID: secretAKID,
		SecretAccessKey: secretAWSKey, HostedZoneID: "Z0123456789ABCDEFGHIJ"}
}

func goodRFC2136() config.DNS {
	return config.DNS{Provider: "rfc2136", Server: "ns1.example.net:53", KeyName: "portico-acme.",
		KeyAlg: "hmac-sha256", Key: secretTSIG}
}

func TestCheckAcceptsGoodSettings(t *testing.T) {
	for name, d := range map[string]config.DNS{
		"cloudflare":              goodCloudflare(),
		"route53 static":          goodRoute53(),
		"route53 default chain":   {Provider: "route53"},
		"route53 gov region":      {Provider: "route53", Region: "us-gov-west-1"},
		"route53 aws-global":      {Provider: "route53", Region: "aws-global"},
		"rfc2136":                 goodRFC2136(),
		"rfc2136 ip server":       withDNS(goodRFC2136(), func(d *config.DNS) { d.Server = "192.0.2.53:5353" }),
		"rfc2136 ipv6 server":     withDNS(goodRFC2136(), func(d *config.DNS) { d.Server = "[2001:db8::53]:53" }),
		"rfc2136 upper-case alg":  withDNS(goodRFC2136(), func(d *config.DNS) { d.KeyAlg = "HMAC-SHA512." }),
		"rfc2136 key name no dot": withDNS(goodRFC2136(), func(d *config.DNS) { d.KeyName = "portico-acme" }),
		"resolvers with and w/o port": withDNS(goodCloudflare(), func(d *config.DNS) {
			d.Resolvers = []string{"1.1.1.1:53", "8.8.8.8", "[2606:4700:4700::1111]:53", "resolver.example.net:5353"}
		}),
		"propagation timeout": withDNS(goodCloudflare(), func(d *config.DNS) { d.PropagationTimeout = config.Duration(time.Minute) }),
	} {
		if p := Check(&d); len(p) != 0 {
			t.Errorf("%s: Check = %q, want no problems", name, p)
		}
	}
	if p := Check(nil); p != nil {
		t.Errorf("Check(nil) = %q", p)
	}
}

func withDNS(d config.DNS, f func(*config.DNS)) config.DNS {
	f(&d)
	return d
}

// TestCheckRefusesBadSettings checks each bad setting gives a message that
// names the key, says what to do, and contains no secret; and that New
// refuses the same settings with an error that contains no secret either.
func TestCheckRefusesBadSettings(t *testing.T) {
	cases := []struct {
		name string
		d    config.DNS
		key  string   // the message starts with "<key>: "
		want []string // substrings of that message (the fix)
	}{
		{"no provider", config.DNS{}, "provider", []string{"missing", "cloudflare, route53, rfc2136"}},
		{"unknown provider", config.DNS{Provider: "godaddy"}, "provider", []string{`"godaddy"`, "cloudflare, route53, rfc2136"}},
		{"negative propagation timeout", withDNS(goodCloudflare(), func(d *config.DNS) { d.PropagationTimeout = -1 }),
			"propagation_timeout", []string{"negative", "positive duration"}},
		{"resolver bad port", withDNS(goodCloudflare(), func(d *config.DNS) { d.Resolvers = []string{"1.1.1.1:99999"} }),
			"resolvers[0]", []string{"port", "65535"}},
		{"resolver garbage", withDNS(goodCloudflare(), func(d *config.DNS) { d.Resolvers = []string{"1.1.1.1", "https://dns.example/"} }),
			"resolvers[1]", []string{"not a DNS server address", "IP:port"}},

		{"cloudflare no token", config.DNS{Provider: "cloudflare"}, "api_token", []string{"missing", "Zone / DNS / Edit"}},
		{"cloudflare token with newline", withDNS(goodCloudflare(), func(d *config.DNS) { d.APIToken = secretToken + "\n" }),
			"api_token", []string{"white space", "remove"}},
		{"cloudflare token with inner space", withDNS(goodCloudflare(), func(d *config.DNS) { d.APIToken = "SECRET-a b" }),
			"api_token", []string{"white space", "single line"}},
		{"cloudflare global key", withDNS(goodCloudflare(), func(d *config.DNS) { d.APIToken = "0123456789abcdef0123456789abcdef01234" }),
			"api_token", []string{"Global API Key", "scoped API token"}},

		{"route53 key id without secret", withDNS(goodRoute53(), func(d *config.DNS) { d.SecretAccessKey = "" }),
			"secret_access_key", []string{"missing while access_key_id is set", "set both"}},
		{"route53 secret without key id", withDNS(goodRoute53(), func(d *config.DNS) { d.AccessKeyID = "" }),
			"access_key_id", []string{"missing while secret_access_key is set", "set both"}},
		{"route53 malformed key id", withDNS(goodRoute53(), func(d *config.DNS) { d.AccessKeyID = "AKIA-SECRET-short" }),
			"access_key_id", []string{"not an AWS access key ID", "IAM user"}},
		{"route53 secret with space", withDNS(goodRoute53(), func(d *config.DNS) { d.SecretAccessKey = " " + secretAWSKey }),
			"secret_access_key", []string{"white space"}},
		{"route53 region typo", withDNS(goodRoute53(), func(d *config.DNS) { d.Region = "us-east1" }),
			"region", []string{`"us-east1"`, `"us-east-1"`}},
		{"route53 region upper case", withDNS(goodRoute53(), func(d *config.DNS) { d.Region = "US-EAST-1" }),
			"region", []string{"not an AWS region"}},
		{"route53 region with path", withDNS(goodRoute53(), func(d *config.DNS) { d.Region = "us-east-1/../x" }),
			"region", []string{"not an AWS region"}},
		{"route53 zone id with prefix", withDNS(goodRoute53(), func(d *config.DNS) { d.HostedZoneID = "/hostedzone/Z0123456789ABCDEFGHIJ" }),
			"hosted_zone_id", []string{"without the \"/hostedzone/\" prefix"}},
		{"route53 zone id lower case", withDNS(goodRoute53(), func(d *config.DNS) { d.HostedZoneID = "z0123abc" }),
			"hosted_zone_id", []string{"upper-case letters and digits"}},

		{"rfc2136 no server", withDNS(goodRFC2136(), func(d *config.DNS) { d.Server = "" }),
			"server", []string{"missing", "host:port"}},
		{"rfc2136 server without port", withDNS(goodRFC2136(), func(d *config.DNS) { d.Server = "ns1.example.net" }),
			"server", []string{"not a host:port", "ns1.example.net:53"}},
		{"rfc2136 server bad port", withDNS(goodRFC2136(), func(d *config.DNS) { d.Server = "ns1.example.net:dns" }),
			"server", []string{"invalid port"}},
		{"rfc2136 server url", withDNS(goodRFC2136(), func(d *config.DNS) { d.Server = "udp://ns1.example.net:53" }),
			"server", []string{"not a host:port"}},
		{"rfc2136 no key name", withDNS(goodRFC2136(), func(d *config.DNS) { d.KeyName = "" }),
			"key_name", []string{"missing", "TSIG key"}},
		{"rfc2136 bad key name", withDNS(goodRFC2136(), func(d *config.DNS) { d.KeyName = "a..b" }),
			"key_name", []string{"not a valid TSIG key name"}},
		{"rfc2136 no alg", withDNS(goodRFC2136(), func(d *config.DNS) { d.KeyAlg = "" }),
			"key_alg", []string{"missing", `"hmac-sha256"`}},
		{"rfc2136 md5", withDNS(goodRFC2136(), func(d *config.DNS) { d.KeyAlg = "hmac-md5" }),
			"key_alg", []string{"hmac-md5 is not supported", `"hmac-sha256"`}},
		{"rfc2136 unknown alg", withDNS(goodRFC2136(), func(d *config.DNS) { d.KeyAlg = "sha256" }),
			"key_alg", []string{`"sha256"`, `"hmac-sha1", "hmac-sha224", "hmac-sha256", "hmac-sha384", "hmac-sha512"`}},
		{"rfc2136 no key", withDNS(goodRFC2136(), func(d *config.DNS) { d.Key = "" }),
			"key", []string{"missing", "base64"}},
		{"rfc2136 key not base64", withDNS(goodRFC2136(), func(d *config.DNS) { d.Key = "SECRET-not*base64" }),
			"key", []string{"not valid base64"}},
		{"rfc2136 key unpadded", withDNS(goodRFC2136(), func(d *config.DNS) { d.Key = strings.TrimRight(secretTSIG, "=") }),
			"key", []string{"not valid base64", "padding"}},
		{"rfc2136 key with newline", withDNS(goodRFC2136(), func(d *config.DNS) { d.Key = secretTSIG + "\n" }),
			"key", []string{"white space"}},
	}
	secrets := []string{secretToken, secretAKID, secretAWSKey, secretTSIG, "SECRET"}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			problems := Check(&tc.d)
			var found bool
			for _, p := range problems {
				for _, s := range secrets {
					if strings.Contains(p, s) {
						t.Errorf("message contains a secret (%q): %s", s, p)
					}
				}
				if !strings.HasPrefix(p, tc.key+": ") {
					continue
				}
				found = true
				for _, w := range tc.want {
					if !strings.Contains(p, w) {
						t.Errorf("message %q lacks %q", p, w)
					}
				}
				if !strings.Contains(p, "; ") {
					t.Errorf("message %q has no fix", p)
				}
			}
			if !found {
				t.Fatalf("Check = %q, want a message for %s", problems, tc.key)
			}
			if len(problems) != 1 {
				t.Errorf("Check = %q, want exactly one problem", problems)
			}
			prov, err := New(&tc.d, Options{})
			if err == nil {
				t.Fatalf("New accepted the settings: %T", prov)
			}
			for _, s := range secrets {
				if strings.Contains(err.Error(), s) {
					t.Errorf("New error contains a secret (%q): %v", s, err)
				}
			}
		})
	}
}

// TestNewRFC2136 checks the settings reach the libdns provider, with the
// algorithm normalised for miekg/dns.
func TestNewRFC2136(t *testing.T) {
	d := withDNS(goodRFC2136(), func(d *config.DNS) { d.KeyAlg = "HMAC-SHA256." })
	prov, err := New(&d, Options{})
	if err != nil {
		t.Fatal(err)
	}
	p, ok := prov.(*rfc2136.Provider)
	if !ok {
		t.Fatalf("New returned %T", prov)
	}
	want := rfc2136.Provider{Server: "ns1.example.net:53", KeyName: "portico-acme.", KeyAlg: "hmac-sha256", Key: secretTSIG}
	if *p != want {
		t.Errorf("provider = %+v, want %+v", *p, want)
	}
}

func TestNewNil(t *testing.T) {
	if _, err := New(nil, Options{}); err == nil {
		t.Fatal("New(nil) succeeded")
	}
}
