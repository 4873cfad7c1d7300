package dnsprovider

import (
	"fmt"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/portico-proxy/portico/config"
)

// TestValidateAndRunAgree: every [acme.dns] that `portico validate`
// (config.Parse) accepts, the running Portico builds a provider from
// (New), and every one it refuses, New refuses: an operator who ran
// validate is never surprised by the running proxy.
func TestValidateAndRunAgree(t *testing.T) {
	// the AWS SDK's environment, which only New reads, is a good one here
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	for _, dnsTable := range []string{
		`provider = "route53"` + "\n" + `hosted_zone_id = "/hostedzone/Z1D633PJN98FT9"`,
		`provider = "route53"` + "\n" + `hosted_zone_id = "Z1D633PJN98FT9"`,
		`provider = "route53"` + "\n" + `hosted_zone_id = "z1d633"`,
		`provider = "route53"` + "\n" + `region = "aws-global"`,
		`provider = "route53"` + "\n" + `region = "us-gov-west-1"`,
		`provider = "route53"` + "\n" + `region = "us-isob-east-1"`,
		`provider = "route53"` + "\n" + `region = "us-east1"`,
		`provider = "route53"` + "\n" + `access_key_id = "AKIA-short"` + "\n" + `secret_access_key = "s"`,
		`provider = "cloudflare"` + "\n" + `api_token = "0123456789abcdef0123456789abcdef01234"`,
		`provider = "cloudflare"` + "\n" + `api_token = "tok" ` + "\n" + `resolvers = ["1.1.1.1"]`,
		`provider = "cloudflare"` + "\n" + `api_token = "tok"` + "\n" + `resolvers = ["1.1.1.1:0"]`,
		`provider = "rfc2136"` + "\n" + `server = "ns1.example.net:53"` + "\n" + `key_name = "k."` + "\n" + `key_alg = "HMAC-SHA256."` + "\n" + `key = "c2VjcmV0"`,
		`provider = "rfc2136"` + "\n" + `server = "ns1.example.net:0"` + "\n" + `key_name = "k."` + "\n" + `key_alg = "hmac-sha256"` + "\n" + `key = "c2VjcmV0"`,
		`provider = "rfc2136"` + "\n" + `server = "ns1.example.net:53"` + "\n" + `key_name = "k."` + "\n" + `key_alg = "hmac-sha256"` + "\n" + `key = "c2VjcmV0LXRzaWc"`,
	} {
		text := fmt.Sprintf("[acme]\nemail = \"ops@example.net\"\nagree_tos = true\nchallenges = [\"dns-01\"]\n[acme.dns]\n%s\n[[site]]\nhosts = [\"*.example.net\"]\nrespond = \"ok\"\n", dnsTable)
		cfg, verr := config.Parse("portico.toml", []byte(text))
		var d *config.DNS
		if cfg != nil {
			d = cfg.ACME.DNS
		} else {
			// what run would have built from the same table
			var whole struct {
				ACME struct {
					DNS config.DNS `toml:"dns"`
				} `toml:"acme"`
			}
			d = &whole.ACME.DNS
			if _, err := toml.Decode(text, &whole); err != nil {
				t.Fatalf("%s: %v", dnsTable, err)
			}
		}
		_, rerr := New(d, Options{})
		if (verr == nil) != (rerr == nil) {
			t.Errorf("[acme.dns] %q: validate says %v, run says %v", dnsTable, verr, rerr)
		}
	}
}
