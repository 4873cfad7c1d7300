package config

import (
	"encoding/base64"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/miekg/dns"
)

// This file is the one judge of DNS provider settings. `portico validate`
// and config.Load ask it, and so does the running Portico before it builds
// a provider (tlsmgr/dnsprovider calls CheckDNS): two validators once
// disagreed, so that a setting passed `validate` and left a site's names
// unmanaged at run time, or the other way round.

// DNSProblem is one problem with a provider's settings: Key is the setting's
// name inside [acme.dns] (or [site.dns]), Msg what is wrong, Fix what to do.
type DNSProblem struct{ Key, Msg, Fix string }

// String is the problem as one line, "<key>: <msg>; <fix>".
func (p DNSProblem) String() string { return p.Key + ": " + p.Msg + "; " + p.Fix }

// TSIGAlgorithms are the key_alg values accepted for rfc2136: the HMAC
// algorithms github.com/miekg/dns (which libdns/rfc2136 signs with) can
// compute. hmac-md5 is not among them: miekg/dns dropped it.
func TSIGAlgorithms() []string {
	return []string{"hmac-sha1", "hmac-sha224", "hmac-sha256", "hmac-sha384", "hmac-sha512"}
}

var (
	// awsRegion matches AWS region names: us-east-1, eu-central-2,
	// us-gov-west-1, cn-north-1, us-isob-east-1, ... The AWS SDK accepts any
	// string here and only fails when it builds the endpoint, at the first
	// challenge; a typo ("us-east1", "US-EAST-1", "eu-west") is better
	// caught at load. "aws-global" (the SDK's pseudo-region for global
	// services such as Route 53) is accepted too.
	awsRegion = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$`)
	// hostedZoneID matches Route 53 hosted zone IDs (Z0123456789ABCDEFGHIJ):
	// upper-case letters and digits, at most 32 characters.
	hostedZoneID = regexp.MustCompile(`^[A-Z0-9]{1,32}$`)
	// accessKeyID matches AWS access key IDs (AKIA... / ASIA..., 20
	// characters today; the API allows word characters, 16 to 128).
	accessKeyID = regexp.MustCompile(`^\w{16,128}$`)
	// cloudflareGlobalKey matches a Cloudflare Global API Key (37 hex
	// digits), which the Bearer scheme used by libdns/cloudflare rejects.
	cloudflareGlobalKey = regexp.MustCompile(`^[0-9a-f]{37}$`)
)

// CheckDNS returns every problem with d. An empty result means the running
// Portico can build the provider from d (the environment aside: Route 53
// reads the AWS SDK's, which a pure check cannot see).
//
// CheckDNS is pure: it reads neither the network, the environment nor
// files. Messages never contain the values of secrets (api_token,
// secret_access_key, access_key_id, key); they may quote non-secret values
// such as a region or a server address.
//
// Why the strictness: a bad setting would otherwise surface only at the
// first dns-01 challenge, as a failed order that counts against the CA's
// failed-validation limit, or, for Route 53, as an exit of the whole
// process.
func CheckDNS(d *DNS) []DNSProblem {
	if d == nil {
		return nil
	}
	var c dnsChecker
	if d.PropagationTimeout < 0 {
		c.add("propagation_timeout", "is negative", `set a positive duration such as "2m", or leave it out for the default`)
	}
	for i, r := range d.Resolvers {
		c.resolver(fmt.Sprintf("resolvers[%d]", i), r)
	}
	switch d.Provider {
	case "cloudflare":
		c.cloudflare(d)
	case "route53":
		c.route53(d)
	case "rfc2136":
		c.rfc2136(d)
	case "":
		c.add("provider", "is missing", "set provider to one of "+strings.Join(DNSProviders(), ", "))
	default:
		c.add("provider", fmt.Sprintf("unknown DNS provider %q", d.Provider),
			"set provider to one of "+strings.Join(DNSProviders(), ", "))
	}
	return c.problems
}

type dnsChecker struct{ problems []DNSProblem }

func (c *dnsChecker) add(key, what, fix string) {
	c.problems = append(c.problems, DNSProblem{Key: key, Msg: what, Fix: fix})
}

// secret checks a secret without ever quoting it.
func (c *dnsChecker) secret(key, value, missing string) bool {
	switch {
	case value == "":
		c.add(key, "is missing", missing)
		return false
	case strings.TrimSpace(value) != value:
		c.add(key, "has leading or trailing white space (a copy-and-paste slip?)", "remove the white space around the value")
		return false
	case strings.IndexFunc(value, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		c.add(key, "contains white space or control characters", "paste the value again as a single line")
		return false
	}
	return true
}

func (c *dnsChecker) resolver(key, r string) {
	host, port, err := net.SplitHostPort(r)
	if err != nil {
		// certmagic appends ":53" to a resolver given without a port.
		host, port = r, "53"
	}
	if host == "" || !validDNSHost(host) || strings.Contains(r, "/") {
		c.add(key, fmt.Sprintf("%q is not a DNS server address", r), `use "IP:port" or "host:port", e.g. "1.1.1.1:53"`)
		return
	}
	if !validDNSPort(port) {
		c.add(key, fmt.Sprintf("%q has an invalid port", r), "use a port between 1 and 65535, usually 53")
	}
}

func (c *dnsChecker) cloudflare(d *DNS) {
	if !c.secret("api_token", d.APIToken,
		`create an API token with the Zone / DNS / Edit permission for your zones in the Cloudflare dashboard (My Profile > API Tokens) and set api_token = "{env.CLOUDFLARE_API_TOKEN}"`) {
		return
	}
	if cloudflareGlobalKey.MatchString(d.APIToken) {
		c.add("api_token", "looks like a Cloudflare Global API Key, which cannot be used as a bearer token",
			"create a scoped API token with the Zone / DNS / Edit permission instead")
	}
}

// route53 checks the Route 53 settings. Empty credentials and region are
// fine: the AWS SDK's default chain (environment, shared config files,
// instance role) supplies them, and the running Portico checks that chain
// can be loaded before it uses the provider.
func (c *dnsChecker) route53(d *DNS) {
	switch {
	case d.AccessKeyID != "" && d.SecretAccessKey == "":
		c.add("secret_access_key", "is missing while access_key_id is set",
			"set both for static credentials, or remove access_key_id to use the AWS default credential chain")
	case d.AccessKeyID == "" && d.SecretAccessKey != "":
		c.add("access_key_id", "is missing while secret_access_key is set",
			"set both for static credentials, or remove secret_access_key to use the AWS default credential chain")
	}
	if d.AccessKeyID != "" && c.secret("access_key_id", d.AccessKeyID, "") && !accessKeyID.MatchString(d.AccessKeyID) {
		c.add("access_key_id", "is not an AWS access key ID (16 to 128 letters and digits, usually 20 starting with AKIA)",
			"copy the access key ID of the IAM user from the AWS console")
	}
	if d.SecretAccessKey != "" {
		c.secret("secret_access_key", d.SecretAccessKey, "")
	}
	if d.Region != "" && d.Region != "aws-global" && !awsRegion.MatchString(d.Region) {
		c.add("region", fmt.Sprintf("%q is not an AWS region name", d.Region),
			`use a region such as "us-east-1" (Route 53 is global: any region of your partition works), or leave it out to use AWS_REGION`)
	}
	if id := d.HostedZoneID; id != "" && !hostedZoneID.MatchString(id) {
		fix := `use the ID shown in the Route 53 console, upper-case letters and digits such as "Z0123456789ABCDEFGHIJ"`
		if strings.HasPrefix(id, "/hostedzone/") || strings.HasPrefix(id, "hostedzone/") {
			fix = `give only the ID, without the "/hostedzone/" prefix`
		}
		c.add("hosted_zone_id", fmt.Sprintf("%q is not a Route 53 hosted zone ID", id), fix)
	}
}

func (c *dnsChecker) rfc2136(d *DNS) {
	if d.Server == "" {
		c.add("server", "is missing", `set server to the "host:port" of the primary DNS server that accepts dynamic updates, e.g. "ns1.example.net:53"`)
	} else if host, port, err := net.SplitHostPort(d.Server); err != nil || host == "" || !validDNSHost(host) {
		c.add("server", fmt.Sprintf("%q is not a host:port address", d.Server), `use "host:port", e.g. "ns1.example.net:53" or "[2001:db8::53]:53"`)
	} else if !validDNSPort(port) {
		c.add("server", fmt.Sprintf("%q has an invalid port", d.Server), "use a port between 1 and 65535, usually 53")
	}

	if d.KeyName == "" {
		c.add("key_name", "is missing", "set key_name to the name of the TSIG key as configured on the DNS server, e.g. \"portico-acme.\"")
	} else if _, ok := dns.IsDomainName(d.KeyName); !ok || d.KeyName == "." {
		c.add("key_name", fmt.Sprintf("%q is not a valid TSIG key name", d.KeyName), "a TSIG key name is a domain name such as \"portico-acme.\"")
	}

	alg := strings.ToLower(strings.TrimSuffix(d.KeyAlg, "."))
	switch {
	case d.KeyAlg == "":
		c.add("key_alg", "is missing", "set key_alg to the algorithm of the TSIG key on the server: one of "+quoteList(TSIGAlgorithms())+` ("hmac-sha256" is the usual choice)`)
	case alg == "hmac-md5" || alg == "hmac-md5.sig-alg.reg.int":
		c.add("key_alg", "hmac-md5 is not supported", "create a new key on the server with one of "+quoteList(TSIGAlgorithms()))
	case !slices.Contains(TSIGAlgorithms(), alg):
		c.add("key_alg", fmt.Sprintf("%q is not a supported TSIG algorithm", d.KeyAlg), "use one of "+quoteList(TSIGAlgorithms()))
	}

	if c.secret("key", d.Key, "set key to the base64 secret of the TSIG key (the secret: line of the server's key definition)") {
		// miekg/dns decodes the secret with standard, padded base64 when
		// it signs the first update.
		if raw, err := base64.StdEncoding.DecodeString(d.Key); err != nil {
			c.add("key", "is not valid base64", "copy the secret exactly as the server's key definition shows it (standard base64 with = padding)")
		} else if len(raw) == 0 {
			c.add("key", "decodes to an empty secret", "generate a key, e.g. with `keymgr -t portico-acme hmac-sha256` or `tsig-keygen -a hmac-sha256 portico-acme`")
		}
	}
}

// validDNSHost accepts an IP address or a DNS host name.
func validDNSHost(h string) bool {
	if net.ParseIP(h) != nil {
		return true
	}
	if strings.ContainsAny(h, " /:@[]") {
		return false
	}
	_, ok := dns.IsDomainName(h)
	return ok
}

// validDNSPort accepts 1 to 65535 written plainly (validPort allows 0, which
// means "any" for a listener but nothing for a DNS server).
func validDNSPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535 && strconv.Itoa(n) == p
}

func quoteList(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = strconv.Quote(v)
	}
	return strings.Join(q, ", ")
}
