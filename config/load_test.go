package config_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portico-proxy/portico/config"
	"github.com/portico-proxy/portico/integration/testkit"
)

// marker ends the line a problem must point at in a test config.
const marker = "# <=="

const acmeOK = `[acme]
email = "ops@example.net"
agree_tos = true
`

const siteOK = `[[site]]
hosts = ["app.example.net"]
upstreams = ["http://127.0.0.1:8080"]
`

// writeConfig puts files (relative names, "{{DIR}}" expanded) and the config
// text into a fresh directory and returns the config's path.
func writeConfig(t *testing.T, src string, files map[string]string) (path, dir string) {
	t.Helper()
	dir = t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	path = filepath.Join(dir, "portico.toml")
	src = strings.ReplaceAll(src, "{{DIR}}", dir)
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, dir
}

// parse runs config.Parse on src as if it were the file portico.toml in a
// fresh directory holding files.
//
//lint:ignore ST1008 the directory comes last: most tests have no use for it
func parse(t *testing.T, src string, files map[string]string) (*config.Config, error, string) {
	t.Helper()
	path, dir := writeConfig(t, src, files)
	cfg, err := config.Parse(path, []byte(strings.ReplaceAll(src, "{{DIR}}", dir)))
	return cfg, err, dir
}

func mustParse(t *testing.T, src string, files map[string]string) (*config.Config, string) {
	t.Helper()
	cfg, err, dir := parse(t, src, files)
	if err != nil {
		t.Fatalf("Parse failed:\n%v\nconfig:\n%s", err, src)
	}
	return cfg, dir
}

func problemsOf(t *testing.T, err error) config.Errors {
	t.Helper()
	if err == nil {
		t.Fatal("Parse accepted the config; want an error")
	}
	var errs config.Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error is %T, want config.Errors: %v", err, err)
	}
	return errs
}

// markedLine returns the 1-based line of src that carries the marker, or 0.
func markedLine(t *testing.T, src string) int {
	t.Helper()
	n := 0
	for i, l := range strings.Split(src, "\n") {
		if strings.Contains(l, marker) {
			if n != 0 {
				t.Fatalf("test bug: two markers in\n%s", src)
			}
			n = i + 1
		}
	}
	return n
}

const allowedList = "rsa2048, rsa3072, rsa4096, p256, p384"

// TestParseRefusals feeds one mistake at a time into an otherwise good file
// and checks the problem names the file, the line (the one marked with
// "# <==", or none when the file has no place for it), the key, what is
// wrong and a fix.
func TestParseRefusals(t *testing.T) {
	notPEM := map[string]string{"roots/notpem.pem": "this is not a certificate\n"}
	keyOnly := map[string]string{"roots/key.pem": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}
	label64 := strings.Repeat("a", 64)

	tests := []struct {
		name   string
		src    string
		files  map[string]string
		key    string   // Problem.Key, exactly
		msg    []string // substrings of Problem.Msg ("{{DIR}}" expanded)
		fix    string   // substring of Problem.Fix
		count  int      // problems in all; 0 means 1
		secret string   // must not appear anywhere in the error text
	}{
		// unknown keys
		{name: "typo in site suggests hosts",
			src: acmeOK + "[[site]]\nhots = [\"app.example.net\"] " + marker + "\nupstreams = [\"http://127.0.0.1:8080\"]\n",
			key: "site[1].hots", msg: []string{"unknown key"}, fix: `did you mean "hosts"?`, count: 2},
		{name: "typo in storage suggests path",
			src: acmeOK + siteOK + "[storage]\npth = \"certs\" " + marker + "\n",
			key: "storage.pth", msg: []string{"unknown key"}, fix: `did you mean "path"?`},
		{name: "typo in acme key next to the right one",
			src: acmeOK + "agree_tso = true " + marker + "\n" + siteOK,
			key: "acme.agree_tso", msg: []string{"unknown key"}, fix: `did you mean "agree_tos"?`},
		{name: "misspelt table suggests renewal",
			src: acmeOK + siteOK + "[renwal] " + marker + "\nratio = 0.5\n",
			key: "renwal", msg: []string{"unknown key"}, fix: `did you mean "renewal"?`},
		{name: "unknown table lists the allowed ones once",
			src: acmeOK + siteOK + "[metrics] " + marker + "\nlisten = \":9090\"\npath = \"/metrics\"\n",
			key: "metrics", msg: []string{"unknown key"}, fix: "allowed here: acme, certificate, listen, log, notify, on_demand, pool, renewal, site, smtp, storage"},
		{name: "unknown array table",
			src: acmeOK + siteOK + "[[sites]] " + marker + "\nhosts = [\"b.example.net\"]\n",
			key: "sites[1]", msg: []string{"unknown key"}, fix: `did you mean "site"?`},
		{name: "unknown key far from any known one lists the allowed keys",
			src: acmeOK + siteOK + "[listen]\nbacklog = 128 " + marker + "\n",
			key: "listen.backlog", msg: []string{"unknown key"}, fix: "allowed here: admin, admin_token, default_sni, header_timeout, http, http3, https, idle_timeout, max_connections, max_header_bytes, proxy_protocol, trusted_proxies"},

		// the ACME account
		{name: "missing email",
			src: "[acme] " + marker + "\nagree_tos = true\n" + siteOK,
			key: "acme.email", msg: []string{"missing", "email"}, fix: `email = "you@example.net"`},
		{name: "missing email and terms without an [acme] table at all",
			src: siteOK,
			key: "acme.email", msg: []string{"missing"}, fix: "email =", count: 2},
		{name: "blank email",
			src: "[acme]\nemail = \"  \" " + marker + "\nagree_tos = true\n" + siteOK,
			key: "acme.email", msg: []string{"missing"}, fix: "email ="},
		{name: "email that is not an address",
			src: "[acme]\nemail = \"Ops <ops@example.net>\" " + marker + "\nagree_tos = true\n" + siteOK,
			key: "acme.email", msg: []string{"is not an email address"}, fix: "ops@example.net"},
		{name: "agree_tos false",
			src: "[acme]\nemail = \"ops@example.net\"\nagree_tos = false " + marker + "\n" + siteOK,
			key: "acme.agree_tos", msg: []string{"must be true"}, fix: "agree_tos = true"},
		{name: "agree_tos missing points at [acme]",
			src: "[acme] " + marker + "\nemail = \"ops@example.net\"\n" + siteOK,
			key: "acme.agree_tos", msg: []string{"must be true"}, fix: "agree_tos = true"},
		{name: "ca that is not a URL",
			src: acmeOK + "ca = \"letsencrypt\" " + marker + "\n" + siteOK,
			key: "acme.ca", msg: []string{`"letsencrypt" is not an ACME directory URL`}, fix: `"local"`},
		{name: "ca with credentials is not echoed",
			src: acmeOK + "ca = \"ftp://acme:s3cret@ca.example.net/dir\" " + marker + "\n" + siteOK,
			key: "acme.ca", msg: []string{"is not an ACME directory URL"}, fix: "https://", secret: "s3cret"},
		{name: "ca_roots missing file",
			src: acmeOK + "ca_roots = [\"roots/missing.pem\"] " + marker + "\n" + siteOK,
			key: "acme.ca_roots", msg: []string{"cannot read " + filepath.Join("{{DIR}}", "roots", "missing.pem"), "no such file"}, fix: "readable PEM file"},
		{name: "ca_roots file without PEM",
			src: acmeOK + "ca_roots = [\"roots/notpem.pem\"] " + marker + "\n" + siteOK, files: notPEM,
			key: "acme.ca_roots", msg: []string{filepath.Join("{{DIR}}", "roots", "notpem.pem"), "holds no PEM certificate"}, fix: `"CERTIFICATE"`},
		{name: "ca_roots file with a key but no certificate",
			src: acmeOK + "ca_roots = [\"roots/key.pem\"] " + marker + "\n" + siteOK, files: keyOnly,
			key: "acme.ca_roots", msg: []string{"holds no PEM certificate"}, fix: "CERTIFICATE"},
		{name: "unknown challenge",
			src: acmeOK + "challenges = [\"http-01\", \"http-02\"] " + marker + "\n" + siteOK,
			key: "acme.challenges", msg: []string{`unknown challenge type "http-02"`}, fix: "http-01, tls-alpn-01, dns-01"},

		// hosts
		{name: "host with underscore",
			src: acmeOK + "[[site]]\nhosts = [\"a_b.example.net\"] " + marker + "\nupstreams = [\"http://127.0.0.1:8080\"]\n",
			key: "site[1].hosts", msg: []string{`"a_b.example.net"`, `'_' is not allowed`}, fix: "DNS name"},
		{name: "host with empty label",
			src: acmeOK + "[[site]]\nhosts = [\"a..example.net\"] " + marker + "\nupstreams = [\"http://127.0.0.1:8080\"]\n",
			key: "site[1].hosts", msg: []string{`"a..example.net"`, "empty label"}, fix: "DNS name"},
		{name: "host with leading hyphen",
			src: acmeOK + "[[site]]\nhosts = [\"-app.example.net\"] " + marker + "\nupstreams = [\"http://127.0.0.1:8080\"]\n",
			key: "site[1].hosts", msg: []string{`"-app.example.net"`, "hyphen"}, fix: "DNS name"},
		{name: "host with 64-character label",
			src: acmeOK + "[[site]]\nhosts = [\"" + label64 + ".example.net\"] " + marker + "\nupstreams = [\"http://127.0.0.1:8080\"]\n",
			key: "site[1].hosts", msg: []string{"longer than 63 characters"}, fix: "DNS name"},
		{name: "host with space",
			src: acmeOK + "[[site]]\nhosts = [\"app example.net\"] " + marker + "\nupstreams = [\"http://127.0.0.1:8080\"]\n",
			key: "site[1].hosts", msg: []string{"not allowed"}, fix: "DNS name"},
		{name: "site without hosts",
			src: acmeOK + "[[site]] " + marker + "\nupstreams = [\"http://127.0.0.1:8080\"]\n",
			key: "site[1].hosts", msg: []string{"at least one host"}, fix: "hosts = ["},
		{name: "same host in two sites names the other site",
			src: acmeOK + siteOK + "[[site]]\nhosts = [\"b.example.net\", \"App.Example.NET.\"] " + marker + "\nrespond = \"hi\"\n",
			key: "site[2].hosts", msg: []string{`"app.example.net" is already in site[1]`}, fix: "one site only"},
		{name: "wildcard host without dns-01",
			src: acmeOK + "[[site]]\nhosts = [\"*.example.net\"] " + marker + "\nupstreams = [\"http://127.0.0.1:8080\"]\n",
			key: "site[1].hosts", msg: []string{`wildcard host "*.example.net"`, "http-01/tls-alpn-01"}, fix: `challenges = ["dns-01"]`},
		{name: "wildcard over a public suffix",
			src: acmeOK + "[[site]]\nhosts = [\"*.net\"] " + marker + "\nupstreams = [\"http://127.0.0.1:8080\"]\n",
			key: "site[1].hosts", msg: []string{`"*.net"`, "two labels after *"}, fix: "DNS name"},

		// upstreams and respond
		{name: "upstream without scheme",
			src: acmeOK + "[[site]]\nhosts = [\"app.example.net\"]\nupstreams = [\"127.0.0.1:8080\"] " + marker + "\n",
			key: "site[1].upstreams", msg: []string{`"127.0.0.1:8080"`, "no scheme"}, fix: "http://host:port"},
		{name: "upstream host:port without scheme",
			src: acmeOK + "[[site]]\nhosts = [\"app.example.net\"]\nupstreams = [\"localhost:8080\"] " + marker + "\n",
			key: "site[1].upstreams", msg: []string{`"localhost:8080"`, "no scheme"}, fix: "http://host:port"},
		{name: "upstream with ftp scheme",
			src: acmeOK + "[[site]]\nhosts = [\"app.example.net\"]\nupstreams = [\"ftp://files.internal:21\"] " + marker + "\n",
			key: "site[1].upstreams", msg: []string{`scheme must be http, https or h2c (HTTP/2 cleartext, for gRPC), not "ftp"`}, fix: "http://host:port"},
		{name: "upstream without host",
			src: acmeOK + "[[site]]\nhosts = [\"app.example.net\"]\nupstreams = [\"http://:8080\"] " + marker + "\n",
			key: "site[1].upstreams", msg: []string{`"http://:8080"`, "no host"}, fix: "http://host:port"},
		{name: "upstream that is only a scheme",
			src: acmeOK + "[[site]]\nhosts = [\"app.example.net\"]\nupstreams = [\"https://\"] " + marker + "\n",
			key: "site[1].upstreams", msg: []string{"no host"}, fix: "http://host:port"},
		{name: "upstream with query",
			src: acmeOK + "[[site]]\nhosts = [\"app.example.net\"]\nupstreams = [\"http://127.0.0.1:8080/?debug=1\"] " + marker + "\n",
			key: "site[1].upstreams", msg: []string{"no query"}, fix: "http://host:port"},
		{name: "upstream with bad port",
			src: acmeOK + "[[site]]\nhosts = [\"app.example.net\"]\nupstreams = [\"http://127.0.0.1:99999\"] " + marker + "\n",
			key: "site[1].upstreams", msg: []string{`bad port "99999"`}, fix: "http://host:port"},
		{name: "upstream with credentials is refused without echoing them",
			src: acmeOK + "[[site]]\nhosts = [\"app.example.net\"]\nupstreams = [\"http://admin:s3cret@127.0.0.1:8080\"] " + marker + "\n",
			key: "site[1].upstreams", msg: []string{"credentials", "127.0.0.1:8080"}, fix: "http://host:port", secret: "s3cret"},
		{name: "site with neither upstreams nor respond",
			src: acmeOK + "[[site]] " + marker + "\nhosts = [\"app.example.net\"]\n",
			key: "site[1]", msg: []string{"needs upstreams, a pool, respond or routes"}, fix: "upstreams = ["},
		{name: "site with both upstreams and respond",
			src: acmeOK + siteOK + "respond = \"maintenance\" " + marker + "\n",
			key: "site[1].respond", msg: []string{"more than one default action"}, fix: "keep one of upstreams, pool and respond"},
		{name: "route to an unknown pool",
			src: acmeOK + "[[pool]]\nname = \"web\"\nupstreams = [\"http://127.0.0.1:8080\"]\n" + siteOK + "[[site.route]]\npath = \"/api/*\"\npool = \"apii\" " + marker + "\n",
			key: "site[1].route[1].pool", msg: []string{`unknown pool "apii"`}, fix: "web"},
		{name: "site default pool unknown",
			src: acmeOK + "[[site]]\nhosts = [\"app.example.net\"]\npool = \"nope\" " + marker + "\n",
			key: "site[1].pool", msg: []string{`unknown pool "nope"`}, fix: "add a [[pool]]"},
		{name: "two routes with one path",
			src: acmeOK + siteOK + "[[site.route]]\npath = \"/ping\"\nrespond = \"a\"\n[[site.route]]\npath = \"/ping\" " + marker + "\nrespond = \"b\"\n",
			key: "site[1].route[2].path", msg: []string{"already the path of route[1]"}, fix: "one route per path"},
		{name: "route without an action",
			src: acmeOK + siteOK + "[[site.route]] " + marker + "\npath = \"/x\"\n",
			key: "site[1].route[1]", msg: []string{"no action"}, fix: "one of pool, upstreams, respond or redirect"},
		{name: "route with two actions",
			src: acmeOK + siteOK + "[[site.route]] " + marker + "\npath = \"/x\"\nrespond = \"a\"\nredirect = \"/y\"\n",
			key: "site[1].route[1]", msg: []string{"more than one action"}, fix: "keep one"},
		{name: "route path with a dot segment",
			src: acmeOK + siteOK + "[[site.route]]\npath = \"/a/../b\" " + marker + "\nrespond = \"a\"\n",
			key: "site[1].route[1].path", msg: []string{"dot segments"}, fix: "/api/*"},
		{name: "route path with a star inside",
			src: acmeOK + siteOK + "[[site.route]]\npath = \"/a*\" " + marker + "\nrespond = \"a\"\n",
			key: "site[1].route[1].path", msg: []string{"may only end the path"}, fix: "/api/*"},
		{name: "redirect with a status that is not a redirect",
			src: acmeOK + siteOK + "[[site.route]]\npath = \"/old\"\nredirect = \"https://new.example.net{uri}\"\nstatus = 200 " + marker + "\n",
			key: "site[1].route[1].status", msg: []string{"not a redirect status"}, fix: "301, 302, 307 or 308"},
		{name: "redirect with an unknown placeholder",
			src: acmeOK + siteOK + "[[site.route]]\npath = \"/old\"\nredirect = \"https://new.example.net{path}\" " + marker + "\n",
			key: "site[1].route[1].redirect", msg: []string{"unknown placeholder {path}"}, fix: "{uri}"},
		{name: "strip_prefix not beginning the path",
			src: acmeOK + siteOK + "[[site.route]]\npath = \"/api/*\"\nupstreams = [\"http://127.0.0.1:9000\"]\nstrip_prefix = \"/ap\" " + marker + "\n",
			key: "site[1].route[1].strip_prefix", msg: []string{"does not begin the route's path"}, fix: "/api/*"},
		{name: "method in lower case",
			src: acmeOK + siteOK + "[[site.route]]\npath = \"/x\"\nrespond = \"a\"\nmethods = [\"get\"] " + marker + "\n",
			key: "site[1].route[1].methods", msg: []string{`"get" is not a method`}, fix: "upper case"},
		{name: "header rule on a hop-by-hop header",
			src: acmeOK + siteOK + "[site.headers]\nrequest_remove = [\"Connection\"] " + marker + "\n",
			key: "site[1].headers.request_remove", msg: []string{`"Connection"`, "hop-by-hop"}, fix: "end-to-end headers"},
		{name: "header rule on X-Forwarded-For in a route",
			src: acmeOK + siteOK + "[[site.route]]\npath = \"/x\"\nrespond = \"a\"\n[site.route.headers]\nrequest_set = { \"X-Forwarded-For\" = \"1.2.3.4\" } " + marker + "\n",
			key: "site[1].route[1].headers.request_set", msg: []string{"trusted_proxies"}, fix: "end-to-end headers"},
		{name: "header rule with an unknown placeholder",
			src: acmeOK + siteOK + "[site.headers]\nresponse_set = { \"X-Who\" = \"{user}\" } " + marker + "\n",
			key: "site[1].headers.response_set", msg: []string{"unknown placeholder {user}"}, fix: "{client_ip}"},
		{name: "two pools with one name",
			src: acmeOK + "[[pool]]\nname = \"a\"\nupstreams = [\"http://127.0.0.1:1\"]\n[[pool]]\nname = \"a\" " + marker + "\nupstreams = [\"http://127.0.0.1:2\"]\n" + siteOK,
			key: "pool[2].name", msg: []string{`"a" names two pools`}, fix: "its own name"},
		{name: "access log in a missing folder",
			src: acmeOK + siteOK + "[log]\naccess = \"/nonexistent-dir/access.log\" " + marker + "\n",
			key: "log.access", msg: []string{"/nonexistent-dir does not exist"}, fix: "create the directory"},
		{name: "unknown access log format",
			src: acmeOK + siteOK + "[log]\naccess = \"stdout\"\naccess_format = \"xml\" " + marker + "\n",
			key: "log.access_format", msg: []string{`unknown format "xml"`}, fix: `"combined"`},
		{name: "negative hsts_max_age",
			src: acmeOK + siteOK + "hsts_max_age = \"-1h\" " + marker + "\n",
			key: "site[1].hsts_max_age", msg: []string{"negative"}, fix: `"0s"`},

		// key policy
		{name: "key type rsa1024",
			src: acmeOK + "key_types = [\"rsa1024\"] " + marker + "\n" + siteOK,
			key: "acme.key_types", msg: []string{`"rsa1024" is not allowed by the key policy`}, fix: allowedList},
		{name: "key type p521",
			src: acmeOK + "key_types = [\"p256\", \"p521\"] " + marker + "\n" + siteOK,
			key: "acme.key_types", msg: []string{`"p521" is not allowed`}, fix: allowedList},
		{name: "key type ed25519",
			src: acmeOK + "key_types = [\"ed25519\"] " + marker + "\n" + siteOK,
			key: "acme.key_types", msg: []string{`"ed25519" is not allowed`}, fix: allowedList},
		{name: "key type in upper case",
			src: acmeOK + "key_types = [\"RSA2048\"] " + marker + "\n" + siteOK,
			key: "acme.key_types", msg: []string{`"RSA2048" is not allowed`}, fix: allowedList},
		{name: "two RSA key types",
			src: acmeOK + "key_types = [\"rsa2048\", \"rsa4096\"] " + marker + "\n" + siteOK,
			key: "acme.key_types", msg: []string{"at most one RSA and one ECDSA"}, fix: `["rsa2048", "p256"]`},
		{name: "two ECDSA key types",
			src: acmeOK + "key_types = [\"p256\", \"p384\"] " + marker + "\n" + siteOK,
			key: "acme.key_types", msg: []string{"at most one RSA and one ECDSA"}, fix: `["rsa2048", "p256"]`},
		{name: "account key rsa1024",
			src: acmeOK + "account_key_type = \"rsa1024\" " + marker + "\n" + siteOK,
			key: "acme.account_key_type", msg: []string{`"rsa1024" is not allowed by the key policy`}, fix: allowedList},
		{name: "account key p521",
			src: acmeOK + "account_key_type = \"p521\" " + marker + "\n" + siteOK,
			key: "acme.account_key_type", msg: []string{`"p521" is not allowed`}, fix: allowedList},
		{name: "account key ed25519",
			src: acmeOK + "account_key_type = \"ed25519\" " + marker + "\n" + siteOK,
			key: "acme.account_key_type", msg: []string{`"ed25519" is not allowed`}, fix: allowedList},

		// storage
		{name: "unknown storage backend",
			src: acmeOK + siteOK + "[storage]\nbackend = \"s3\" " + marker + "\n",
			key: "storage.backend", msg: []string{`unknown backend "s3"`}, fix: `"file" or "redis"`},
		{name: "redis without redis_url",
			src: acmeOK + siteOK + "[storage] " + marker + "\nbackend = \"redis\"\n",
			key: "storage.redis_url", msg: []string{"missing", "needs a URL"}, fix: `redis_url = "redis://`},
		{name: "redis_url with http scheme hides the password",
			src: acmeOK + siteOK + "[storage]\nbackend = \"redis\"\nredis_url = \"http://:s3cret@cache.internal:6379/0\" " + marker + "\n",
			key: "storage.redis_url", msg: []string{`scheme "http"`}, fix: "rediss://", secret: "s3cret"},
		{name: "redis_url without scheme hides the password",
			src: acmeOK + siteOK + "[storage]\nbackend = \"redis\"\nredis_url = \":s3cret@cache.internal:6379\" " + marker + "\n",
			key: "storage.redis_url", msg: []string{"not a Redis URL"}, fix: "redis://", secret: "s3cret"},
		{name: "redis_url without host hides the password",
			src: acmeOK + siteOK + "[storage]\nbackend = \"redis\"\nredis_url = \"redis://:s3cret@/0\" " + marker + "\n",
			key: "storage.redis_url", msg: []string{"no host"}, fix: "redis://", secret: "s3cret"},
		{name: "redis_url that does not parse hides the password",
			src: acmeOK + siteOK + "[storage]\nbackend = \"redis\"\nredis_url = \"rediss://user:s3cr%zzet@cache.internal:6379\" " + marker + "\n",
			key: "storage.redis_url", msg: []string{"not a valid URL"}, fix: "percent-encode", secret: "s3cr"},

		// renewal
		{name: "ratio 0",
			src: acmeOK + siteOK + "[renewal]\nratio = 0.0 " + marker + "\n",
			key: "renewal.ratio", msg: []string{"0 is not between 0 and 1"}, fix: "0.3333"},
		{name: "ratio 1.5",
			src: acmeOK + siteOK + "[renewal]\nratio = 1.5 " + marker + "\n",
			key: "renewal.ratio", msg: []string{"1.5 is not between 0 and 1"}, fix: "0.3333"},
		{name: "ratio 1",
			src: acmeOK + siteOK + "[renewal]\nratio = 1.0 " + marker + "\n",
			key: "renewal.ratio", msg: []string{"not between 0 and 1"}, fix: "0.3333"},
		{name: "check_interval 0s",
			src: acmeOK + siteOK + "[renewal]\ncheck_interval = \"0s\" " + marker + "\n",
			key: "renewal.check_interval", msg: []string{"0s is too short"}, fix: `"10m"`},
		{name: "check_interval under a second",
			src: acmeOK + siteOK + "[renewal]\ncheck_interval = \"500ms\" " + marker + "\n",
			key: "renewal.check_interval", msg: []string{"500ms is too short"}, fix: `"1s"`},
		{name: "max_concurrent 0",
			src: acmeOK + siteOK + "[renewal]\nmax_concurrent = 0 " + marker + "\n",
			key: "renewal.max_concurrent", msg: []string{"0 orders at once"}, fix: "1 or more"},
		{name: "max_concurrent negative",
			src: acmeOK + siteOK + "[renewal]\nmax_concurrent = -2 " + marker + "\n",
			key: "renewal.max_concurrent", msg: []string{"-2 orders at once"}, fix: "1 or more"},
		{name: "negative backoff step",
			src: acmeOK + siteOK + "[renewal]\nbackoff = [\"1m\", \"-10m\", \"24h\"] " + marker + "\n",
			key: "renewal.backoff", msg: []string{"step -10m0s is not positive"}, fix: "positive durations"},
		{name: "zero backoff step",
			src: acmeOK + siteOK + "[renewal]\nbackoff = [\"0s\"] " + marker + "\n",
			key: "renewal.backoff", msg: []string{"step 0s is not positive"}, fix: "positive durations"},

		// listen
		{name: "https listener disabled",
			src: acmeOK + siteOK + "[listen]\nhttps = \"\" " + marker + "\n",
			key: "listen.https", msg: []string{"cannot be disabled"}, fix: `https = ":443"`},
		{name: "listen address without port",
			src: acmeOK + siteOK + "[listen]\nhttp = \"0.0.0.0\" " + marker + "\n",
			key: "listen.http", msg: []string{`"0.0.0.0" is not a listen address`}, fix: "host:port"},
		{name: "admin address with bad port",
			src: acmeOK + siteOK + "[listen]\nadmin = \"127.0.0.1:70000\" " + marker + "\n",
			key: "listen.admin", msg: []string{"is not a listen address"}, fix: "unix socket"},
		{name: "admin on every interface without a token",
			src: acmeOK + siteOK + "[listen]\nadmin = \"0.0.0.0:2019\" " + marker + "\n",
			key: "listen.admin_token", msg: []string{"missing", `"0.0.0.0:2019" is reachable from other machines`}, fix: `admin_token = "{env.PORTICO_ADMIN_TOKEN}"`},
		{name: "admin with an empty host without a token",
			src: acmeOK + siteOK + "[listen]\nadmin = \":2019\" " + marker + "\n",
			key: "listen.admin_token", msg: []string{`":2019" is reachable`}, fix: `"127.0.0.1:2019" or a unix socket path`},
		{name: "admin on a private address with a blank token",
			src: acmeOK + siteOK + "[listen]\nadmin = \"10.0.0.5:2019\" " + marker + "\nadmin_token = \"  \"\n",
			key: "listen.admin_token", msg: []string{"missing", "10.0.0.5:2019"}, fix: "admin_token", count: 2},
		{name: "admin on a host name without a token",
			src: acmeOK + siteOK + "[listen]\nadmin = \"admin.internal:2019\" " + marker + "\n",
			key: "listen.admin_token", msg: []string{"needs a token"}, fix: "admin_token"},
		{name: "admin token with a space is refused without echoing it",
			src: acmeOK + siteOK + "[listen]\nadmin = \"127.0.0.1:2019\"\nadmin_token = \"s3cret s3cret s3cret\" " + marker + "\n",
			key: "listen.admin_token", msg: []string{"space"}, fix: "openssl rand -hex 32", secret: "s3cret"},
		{name: "admin token with a newline is refused",
			src: acmeOK + siteOK + "[listen]\nadmin = \"127.0.0.1:2019\"\nadmin_token = \"s3cret-s3cret-s3cret\\n\" " + marker + "\n",
			key: "listen.admin_token", msg: []string{"control"}, fix: "printable ASCII", secret: "s3cret"},

		// notify
		{name: "empty notify",
			src: acmeOK + siteOK + "[[notify]] " + marker + "\n",
			key: "notify[1]", msg: []string{"empty [[notify]]"}, fix: "webhook = "},
		{name: "email notify without smtp",
			src: acmeOK + siteOK + "[[notify]]\nemail = \"oncall@example.net\" " + marker + "\n",
			key: "notify[1].email", msg: []string{"SMTP relay"}, fix: "add [smtp]"},
		{name: "two email notifies without smtp are one problem",
			src: acmeOK + siteOK + "[[notify]]\nemail = \"oncall@example.net\" " + marker + "\n[[notify]]\nemail = \"boss@example.net\"\n",
			key: "notify[1].email", msg: []string{"SMTP relay"}, fix: "add [smtp]"},
		{name: "email notify with smtp lacking from",
			src: acmeOK + siteOK + "[[notify]]\nemail = \"oncall@example.net\"\n[smtp] " + marker + "\nhost = \"smtp.example.net\"\n",
			key: "smtp", msg: []string{"SMTP relay"}, fix: "from"},
		{name: "notify email that is not an address",
			src: acmeOK + siteOK + "[smtp]\nhost = \"smtp.example.net\"\nfrom = \"portico@example.net\"\n[[notify]]\nemail = \"oncall\" " + marker + "\n",
			key: "notify[1].email", msg: []string{`"oncall" is not an email address`}, fix: "ops@example.net"},
		{name: "notify webhook that is not http",
			src: acmeOK + siteOK + "[[notify]]\nwebhook = \"ftp://hooks.example.net/x\" " + marker + "\n",
			key: "notify[1].webhook", msg: []string{"not a webhook URL"}, fix: "http(s)://"},
		{name: "notify with webhook and email",
			src: acmeOK + siteOK + "[[notify]] " + marker + "\nwebhook = \"https://hooks.example.net/x\"\nemail = \"oncall@example.net\"\n",
			key: "notify[1]", msg: []string{"webhook and email"}, fix: "one [[notify]] per target"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, dir := writeConfig(t, tt.src, tt.files)
			_, err := config.Parse(path, []byte(tt.src))
			errs := problemsOf(t, err)
			want := tt.count
			if want == 0 {
				want = 1
			}
			if len(errs) != want {
				t.Errorf("got %d problems, want %d:\n%v", len(errs), want, err)
			}
			var p *config.Problem
			for i := range errs {
				if errs[i].Key == tt.key && containsAll(errs[i].Msg, expand(tt.msg, dir)) {
					p = &errs[i]
					break
				}
			}
			if p == nil {
				t.Fatalf("no problem with key %q and message containing %q in:\n%v", tt.key, expand(tt.msg, dir), err)
			}
			if p.File != path {
				t.Errorf("File = %q, want %q", p.File, path)
			}
			if line := markedLine(t, tt.src); p.Line != line {
				t.Errorf("Line = %d, want %d (%v)", p.Line, line, p)
			}
			if !strings.Contains(p.Fix, tt.fix) {
				t.Errorf("Fix = %q, want it to contain %q", p.Fix, tt.fix)
			}
			// the printed form carries all four parts
			prefix := path + ": "
			if p.Line > 0 {
				prefix = fmt.Sprintf("%s:%d: ", path, p.Line)
			}
			text := p.Error()
			if !strings.HasPrefix(text, prefix+tt.key+": ") || !strings.Contains(text, "(fix: "+p.Fix+")") {
				t.Errorf("Error() = %q, want it to start %q and end with the fix", text, prefix+tt.key+": ")
			}
			if tt.secret != "" && strings.Contains(err.Error(), tt.secret) {
				t.Errorf("error text leaks %q:\n%v", tt.secret, err)
			}
		})
	}
}

func expand(subs []string, dir string) []string {
	out := make([]string, len(subs))
	for i, s := range subs {
		out[i] = strings.ReplaceAll(s, "{{DIR}}", dir)
	}
	return out
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// TestParseTOMLErrors: errors the TOML decoder finds (a syntax error stops
// parsing; a value of the wrong type does not) name the line and, where it
// knows it, the key.
func TestParseTOMLErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		line int
		key  string
		msg  string
		fix  string
	}{
		{name: "unterminated string",
			src:  "[acme]\nemail = \"ops@example.net\nagree_tos = true\n",
			line: 2, key: "acme.email", msg: "newlines", fix: "TOML syntax"},
		{name: "missing value",
			src:  acmeOK + siteOK + "[renewal]\nratio = \n",
			line: 8, key: "renewal.ratio", msg: "expected value", fix: "TOML syntax"},
		{name: "unclosed table header",
			src:  acmeOK + "[listen\nhttp = \":80\"\n",
			line: 4, msg: "table name", fix: "TOML syntax"},
		{name: "duplicate key",
			src:  acmeOK + "email = \"other@example.net\"\n",
			line: 4, msg: "already been defined", fix: "TOML syntax"},
		{name: "string where a bool goes",
			src:  "[acme]\nemail = \"ops@example.net\"\nagree_tos = \"yes\"\n" + siteOK,
			line: 3, key: "acme.agree_tos", msg: "incompatible types", fix: "key's type"},
		{name: "hosts as a string in the second site",
			src:  acmeOK + siteOK + "[[site]]\nrespond = \"hi\"\nhosts = \"b.example.net\"\n",
			line: 9, key: "site[2].hosts", msg: "incompatible types", fix: "key's type"},
		{name: "bad duration",
			src:  acmeOK + siteOK + "[renewal]\ncheck_interval = \"ten minutes\"\n",
			line: 8, key: "renewal.check_interval", msg: `invalid duration "ten minutes"`, fix: "format"},
		{name: "float where an integer goes",
			src:  acmeOK + siteOK + "[renewal]\nmax_concurrent = 2.5\n",
			line: 8, key: "renewal.max_concurrent", msg: "incompatible types", fix: "key's type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err, _ := parse(t, tt.src, nil)
			errs := problemsOf(t, err)
			if len(errs) != 1 {
				t.Fatalf("got %d problems, want 1:\n%v", len(errs), err)
			}
			p := errs[0]
			if p.Line != tt.line || (tt.key != "" && p.Key != tt.key) || !strings.Contains(p.Msg, tt.msg) || !strings.Contains(p.Fix, tt.fix) {
				t.Errorf("got %#v\nwant line %d, key %q, msg ~ %q, fix ~ %q", p, tt.line, tt.key, tt.msg, tt.fix)
			}
			if !strings.HasPrefix(p.Error(), fmt.Sprintf("%s:%d: ", p.File, tt.line)) {
				t.Errorf("Error() = %q does not start with file:line", p.Error())
			}
		})
	}
}

// TestParseAccepts: things that look close to a refusal but are fine.
func TestParseAccepts(t *testing.T) {
	wild := testkit.SelfSigned(t, "*.example.net", "example.net")
	roots := map[string]string{"roots/root.pem": string(testkit.SelfSigned(t).CertPEM())} // parsed, never verified
	tests := []struct {
		name  string
		src   string
		files map[string]string
	}{
		{name: "local CA needs neither email nor agree_tos",
			src: "[acme]\nca = \"local\"\n" + siteOK},
		{name: "local CA with agree_tos false",
			src: "[acme]\nca = \"local\"\nagree_tos = false\n" + siteOK},
		{name: "key types rsa2048 and p256", src: acmeOK + "key_types = [\"rsa2048\", \"p256\"]\n" + siteOK},
		{name: "key types rsa4096 and p384", src: acmeOK + "key_types = [\"p384\", \"rsa4096\"]\n" + siteOK},
		{name: "key type rsa3072 alone", src: acmeOK + "key_types = [\"rsa3072\"]\n" + siteOK},
		{name: "key type p256 alone", src: acmeOK + "key_types = [\"p256\"]\n" + siteOK},
		{name: "account key rsa2048", src: acmeOK + "account_key_type = \"rsa2048\"\n" + siteOK},
		{name: "account key rsa4096", src: acmeOK + "account_key_type = \"rsa4096\"\n" + siteOK},
		{name: "account key p384", src: acmeOK + "account_key_type = \"p384\"\n" + siteOK},
		{name: "ca_roots relative to the config", src: acmeOK + "ca_roots = [\"roots/root.pem\"]\n" + siteOK, files: roots},
		{name: "ca_roots absolute", src: acmeOK + "ca_roots = [\"{{DIR}}/roots/root.pem\"]\n" + siteOK, files: roots},
		{name: "redis with password and TLS",
			src: acmeOK + siteOK + "[storage]\nbackend = \"redis\"\nredis_url = \"rediss://portico:s3cret@cache.internal:6380/2\"\n"},
		{name: "upstream https with path",
			src: acmeOK + "[[site]]\nhosts = [\"app.example.net\"]\nupstreams = [\"https://10.0.0.5:8443/app\", \"http://[::1]:8080\"]\n"},
		{name: "respond only", src: acmeOK + "[[site]]\nhosts = [\"app.example.net\"]\nrespond = \"hello\"\n"},
		{name: "IP and localhost hosts",
			src: acmeOK + "[[site]]\nhosts = [\"127.0.0.1\", \"localhost\"]\nrespond = \"hello\"\n"},
		{name: "wildcard covered by a certificate needs no acme",
			src:   "[[certificate]]\ncert = \"wild.crt\"\nkey = \"wild.key\"\n[[site]]\nhosts = [\"*.example.net\", \"a.example.net\", \"example.net\"]\nrespond = \"hi\"\n",
			files: map[string]string{"wild.crt": string(wild.CertPEM()), "wild.key": string(wild.KeyPEM())}},
		{name: "webhook and email notify with smtp",
			src: acmeOK + siteOK + "[smtp]\nhost = \"smtp.example.net\"\nfrom = \"portico@example.net\"\n[[notify]]\nwebhook = \"https://hooks.example.net/x\"\n[[notify]]\nemail = \"oncall@example.net\"\n"},
		{name: "plain http listener disabled", src: acmeOK + siteOK + "[listen]\nhttp = \"\"\nadmin = \"/run/portico/admin.sock\"\n"},
		{name: "admin on loopback needs no token", src: acmeOK + siteOK + "[listen]\nadmin = \"127.0.0.1:2019\"\n"},
		{name: "admin on another loopback address", src: acmeOK + siteOK + "[listen]\nadmin = \"127.0.0.2:2019\"\n"},
		{name: "admin on IPv6 loopback", src: acmeOK + siteOK + "[listen]\nadmin = \"[::1]:2019\"\n"},
		{name: "admin on localhost", src: acmeOK + siteOK + "[listen]\nadmin = \"LocalHost:2019\"\n"},
		{name: "admin on a relative unix socket", src: acmeOK + siteOK + "[listen]\nadmin = \"run/admin.sock\"\n"},
		{name: "admin on every interface with a token",
			src: acmeOK + siteOK + "[listen]\nadmin = \"0.0.0.0:2019\"\nadmin_token = \"0123456789abcdef0123456789abcdef\"\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mustParse(t, tt.src, tt.files)
		})
	}
}

func TestParseDefaults(t *testing.T) {
	src := acmeOK + `
[[site]]
hosts = ["App.Example.NET.", "WWW.example.net"]
upstreams = ["http://127.0.0.1:8080"]
`
	cfg, dir := mustParse(t, src, nil)
	a := cfg.ACME
	if a.CA != "https://acme-v02.api.letsencrypt.org/directory" {
		t.Errorf("CA = %q", a.CA)
	}
	if !slices.Equal(a.Challenges, []string{"http-01", "tls-alpn-01"}) {
		t.Errorf("Challenges = %v", a.Challenges)
	}
	if !slices.Equal(a.KeyTypes, []string{"rsa2048", "p256"}) {
		t.Errorf("KeyTypes = %v", a.KeyTypes)
	}
	if a.AccountKeyType != "p256" {
		t.Errorf("AccountKeyType = %q", a.AccountKeyType)
	}
	if cfg.Listen.HTTP != ":80" || cfg.Listen.HTTPS != ":443" || cfg.Listen.Admin != "" || cfg.Listen.AdminToken != "" {
		t.Errorf("Listen = %+v", cfg.Listen)
	}
	if s := cfg.Storage; s.Backend != "file" || s.Path != filepath.Join(dir, "data") || s.Prefix != "portico" {
		t.Errorf("Storage = %+v, want file at %s, prefix portico", s, filepath.Join(dir, "data"))
	}
	r := cfg.Renewal
	if r.Ratio != 1.0/3.0 {
		t.Errorf("Ratio = %v", r.Ratio)
	}
	if r.CheckInterval.Std() != 10*time.Minute {
		t.Errorf("CheckInterval = %v", r.CheckInterval.Std())
	}
	if r.MaxConcurrent != 4 {
		t.Errorf("MaxConcurrent = %d", r.MaxConcurrent)
	}
	want := []time.Duration{time.Minute, 10 * time.Minute, 100 * time.Minute, 24 * time.Hour}
	var got []time.Duration
	for _, d := range r.Backoff {
		got = append(got, d.Std())
	}
	if !slices.Equal(got, want) {
		t.Errorf("Backoff = %v, want %v", got, want)
	}
	if len(cfg.Sites) != 1 {
		t.Fatalf("Sites = %+v", cfg.Sites)
	}
	s := cfg.Sites[0]
	if !s.Redirects() || s.RedirectHTTPS != nil {
		t.Errorf("redirect_https should default to true")
	}
	if !slices.Equal(s.Hosts, []string{"app.example.net", "www.example.net"}) {
		t.Errorf("Hosts = %v, want lower-cased without the trailing dot", s.Hosts)
	}
	if s.HSTSMaxAge != 0 {
		t.Errorf("HSTSMaxAge = %v, want off", s.HSTSMaxAge)
	}
	if len(cfg.Warnings) != 0 {
		t.Errorf("Warnings = %q", cfg.Warnings)
	}
	if !cfg.ACMEDefined {
		t.Error("ACMEDefined = false with an [acme] table")
	}
	if cfg.Path != filepath.Join(dir, "portico.toml") {
		t.Errorf("Path = %q", cfg.Path)
	}
}

// TestParseAdminToken: the token comes from the environment, is kept as
// is, and a short one is allowed with a warning that never quotes it.
func TestParseAdminToken(t *testing.T) {
	const token = "hunter2-0123456789abcdef"
	t.Setenv("PORTICO_TEST_ADMIN_TOKEN", token)
	cfg, _ := mustParse(t, acmeOK+siteOK+"[listen]\nadmin = \"0.0.0.0:2019\"\nadmin_token = \"{env.PORTICO_TEST_ADMIN_TOKEN}\"\n", nil)
	if cfg.Listen.Admin != "0.0.0.0:2019" || cfg.Listen.AdminToken != token {
		t.Errorf("Listen = %+v", cfg.Listen)
	}
	if len(cfg.Warnings) != 0 {
		t.Errorf("Warnings = %q", cfg.Warnings)
	}

	t.Setenv("PORTICO_TEST_ADMIN_TOKEN", "hunter2")
	cfg, _ = mustParse(t, acmeOK+siteOK+"[listen]\nadmin = \"/run/portico/admin.sock\"\nadmin_token = \"{env.PORTICO_TEST_ADMIN_TOKEN}\"\n", nil)
	if len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0], "listen.admin_token is shorter than 16 characters") {
		t.Errorf("Warnings = %q, want one about the short token", cfg.Warnings)
	}
	if strings.Contains(strings.Join(cfg.Warnings, " "), "hunter2") {
		t.Errorf("a warning quotes the token: %q", cfg.Warnings)
	}

	// an unset variable is the placeholder's problem, not a missing token
	_, err, _ := parse(t, acmeOK+siteOK+"[listen]\nadmin = \"0.0.0.0:2019\"\nadmin_token = \"{env.PORTICO_TEST_SURELY_UNSET}\"\n", nil)
	errs := problemsOf(t, err)
	if len(errs) == 0 || errs[0].Key != "listen.admin_token" || !strings.Contains(errs[0].Msg, "PORTICO_TEST_SURELY_UNSET is not set") {
		t.Errorf("problems = %v", err)
	}
}

func TestParseSetValuesKept(t *testing.T) {
	src := acmeOK + `key_types = ["p384"]
account_key_type = "rsa4096"
challenges = ["tls-alpn-01"]
ca = "https://acme-staging-v02.api.letsencrypt.org/directory"

[listen]
http = ""
https = "127.0.0.1:8443"

[storage]
path = "state/certs"
prefix = "fleet-a"

[renewal]
ratio = 0.5
check_interval = "1m"
max_concurrent = 1
backoff = ["30s", "1h"]

[[site]]
hosts = ["app.example.net"]
upstreams = ["http://127.0.0.1:8080"]
redirect_https = false
`
	cfg, dir := mustParse(t, src, nil)
	if cfg.Listen.HTTP != "" || cfg.Listen.HTTPS != "127.0.0.1:8443" {
		t.Errorf("Listen = %+v", cfg.Listen)
	}
	if cfg.Storage.Path != filepath.Join(dir, "state", "certs") || cfg.Storage.Prefix != "fleet-a" {
		t.Errorf("Storage = %+v", cfg.Storage)
	}
	r := cfg.Renewal
	if r.Ratio != 0.5 || r.CheckInterval.Std() != time.Minute || r.MaxConcurrent != 1 || len(r.Backoff) != 2 || r.Backoff[1].Std() != time.Hour {
		t.Errorf("Renewal = %+v", r)
	}
	if a := cfg.ACME; !slices.Equal(a.KeyTypes, []string{"p384"}) || a.AccountKeyType != "rsa4096" || !slices.Equal(a.Challenges, []string{"tls-alpn-01"}) {
		t.Errorf("ACME = %+v", a)
	}
	if cfg.Sites[0].Redirects() {
		t.Error("redirect_https = false not kept")
	}

	// an absolute storage path is kept as written
	abs := filepath.Join(t.TempDir(), "certs")
	cfg, _ = mustParse(t, acmeOK+siteOK+"[storage]\npath = \""+abs+"\"\n", nil)
	if cfg.Storage.Path != abs {
		t.Errorf("Storage.Path = %q, want %q", cfg.Storage.Path, abs)
	}
}

func TestParseHSTSWarning(t *testing.T) {
	src := acmeOK + `
[[site]]
hosts = ["a.example.net"]
respond = "a"
hsts_max_age = "1440h"

[[site]]
hosts = ["b.example.net"]
respond = "b"
hsts_max_age = "0s"

[[site]]
hosts = ["c.example.net"]
respond = "c"

[[site]]
hosts = ["d.example.net"]
respond = "d"
hsts_max_age = "1440h"
`
	cfg, _ := mustParse(t, src, nil)
	if len(cfg.Warnings) != 2 {
		t.Fatalf("got %d warnings, want 2 (one per site with HSTS):\n%s", len(cfg.Warnings), strings.Join(cfg.Warnings, "\n"))
	}
	for i, host := range []string{"a.example.net", "d.example.net"} {
		w := cfg.Warnings[i]
		for _, want := range []string{host, "60 days", "certificate errors can no longer be clicked through"} {
			if !strings.Contains(w, want) {
				t.Errorf("warning %d does not mention %q: %s", i, want, w)
			}
		}
	}
	if cfg.Sites[0].HSTSMaxAge.Std() != 60*24*time.Hour || cfg.Sites[1].HSTSMaxAge != 0 {
		t.Errorf("HSTSMaxAge = %v, %v", cfg.Sites[0].HSTSMaxAge.Std(), cfg.Sites[1].HSTSMaxAge.Std())
	}

	cfg, _ = mustParse(t, acmeOK+siteOK+"hsts_max_age = \"0s\"\n", nil)
	if len(cfg.Warnings) != 0 {
		t.Errorf("hsts_max_age = \"0s\" warned: %q", cfg.Warnings)
	}
}

func TestParsePlaceholders(t *testing.T) {
	t.Setenv("PORTICO_TEST_EMAIL", "ops@example.net")
	t.Setenv("PORTICO_TEST_REDIS_PASSWORD", "hunter2-env")
	src := `[acme]
email = "{env.PORTICO_TEST_EMAIL}"
agree_tos = true

[storage]
backend = "redis"
redis_url = "redis://portico:{env.PORTICO_TEST_REDIS_PASSWORD}@cache.internal:6379/0"

[smtp]
host = "smtp.example.net"
from = "portico@example.net"
username = "portico"
password = "{file.secrets/smtp-password}"

[[notify]]
email = "oncall@example.net"

[[site]]
hosts = ["app.example.net"]
respond = "{literal braces} stay"
`
	cfg, _ := mustParse(t, src, map[string]string{"secrets/smtp-password": "hunter2-file\n"})
	if cfg.ACME.Email != "ops@example.net" {
		t.Errorf("Email = %q", cfg.ACME.Email)
	}
	if cfg.Storage.RedisURL != "redis://portico:hunter2-env@cache.internal:6379/0" {
		t.Errorf("RedisURL = %q", cfg.Storage.RedisURL)
	}
	if cfg.SMTP.Password != "hunter2-file" {
		t.Errorf("SMTP password = %q, want the file's content without its newline", cfg.SMTP.Password)
	}
	if cfg.Sites[0].Respond != "{literal braces} stay" {
		t.Errorf("Respond = %q", cfg.Sites[0].Respond)
	}

	// an absolute {file.} path
	abs := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(abs, []byte("hunter2-abs"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _ = mustParse(t, acmeOK+siteOK+"[smtp]\npassword = \"{file."+abs+"}\"\n", nil)
	if cfg.SMTP.Password != "hunter2-abs" {
		t.Errorf("SMTP password = %q", cfg.SMTP.Password)
	}
}

func TestParsePlaceholderErrors(t *testing.T) {
	t.Setenv("PORTICO_TEST_REDIS_URL", "http://:hunter2-env@cache.internal:6379")
	t.Setenv("PORTICO_TEST_UP_PASSWORD", "hunter2-up")
	tests := []struct {
		name  string
		src   string
		files map[string]string
		key   string
		msg   []string
		fix   string
	}{
		{name: "missing environment variable",
			src: "[acme]\nemail = \"{env.PORTICO_TEST_SURELY_UNSET}\" " + marker + "\nagree_tos = true\n" + siteOK,
			key: "acme.email", msg: []string{"environment variable PORTICO_TEST_SURELY_UNSET is not set"}, fix: "export PORTICO_TEST_SURELY_UNSET"},
		{name: "missing file",
			src: acmeOK + siteOK + "[smtp]\npassword = \"{file.secrets/nope}\" " + marker + "\n",
			key: "smtp.password", msg: []string{"cannot read " + filepath.Join("{{DIR}}", "secrets", "nope"), "no such file"}, fix: "readable"},
		{name: "missing variable in a list",
			src: acmeOK + "[[site]]\nhosts = [\"a.example.net\", \"{env.PORTICO_TEST_SURELY_UNSET}\"] " + marker + "\nrespond = \"x\"\n",
			key: "site[1].hosts", msg: []string{"PORTICO_TEST_SURELY_UNSET"}, fix: "export"},
		{name: "secret from env in a bad redis_url",
			src: acmeOK + siteOK + "[storage]\nbackend = \"redis\"\nredis_url = \"{env.PORTICO_TEST_REDIS_URL}\" " + marker + "\n",
			key: "storage.redis_url", msg: []string{`scheme "http"`}, fix: "redis://"},
		{name: "secret from file in a bad redis_url",
			src:   acmeOK + siteOK + "[storage]\nbackend = \"redis\"\nredis_url = \"{file.redis-url}\" " + marker + "\n",
			files: map[string]string{"redis-url": "redis://:hunter2-file@\n"},
			key:   "storage.redis_url", msg: []string{"no host"}, fix: "redis://"},
		{name: "secret from env in an upstream",
			src: acmeOK + "[[site]]\nhosts = [\"a.example.net\"]\nupstreams = [\"http://u:{env.PORTICO_TEST_UP_PASSWORD}@h:80\"] " + marker + "\n",
			key: "site[1].upstreams", msg: []string{`"http://REDACTED@h:80"`, "credentials"}, fix: "http://host:port"},
		{name: "secret from env in an upstream that does not parse",
			src: acmeOK + "[[site]]\nhosts = [\"a.example.net\"]\nupstreams = [\"http://u:{env.PORTICO_TEST_REDIS_URL}@h:80\"] " + marker + "\n",
			key: "site[1].upstreams", msg: []string{"REDACTED"}, fix: "http://host:port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err, dir := parse(t, tt.src, tt.files)
			errs := problemsOf(t, err)
			var p *config.Problem
			for i := range errs {
				if errs[i].Key == tt.key && containsAll(errs[i].Msg, expand(tt.msg, dir)) {
					p = &errs[i]
				}
			}
			if p == nil {
				t.Fatalf("no problem with key %q and message %q in:\n%v", tt.key, expand(tt.msg, dir), err)
			}
			if line := markedLine(t, tt.src); p.Line != line {
				t.Errorf("Line = %d, want %d", p.Line, line)
			}
			if !strings.Contains(p.Fix, tt.fix) {
				t.Errorf("Fix = %q, want %q", p.Fix, tt.fix)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error text leaks a secret:\n%v", err)
			}
		})
	}
}

// TestParseAllProblemsAtOnce: one pass over a file reports every problem.
func TestParseAllProblemsAtOnce(t *testing.T) {
	src := `[acme]
agree_tos = false
key_types = ["rsa1024"]

[storage]
backend = "s3"

[renewal]
ratio = 2.0

[[site]]
hosts = ["bad_host.example.net"]
upstreams = ["127.0.0.1:8080"]
colour = "blue"

[[site]]
hosts = ["ok.example.net"]

[[notify]]
`
	_, err, _ := parse(t, src, nil)
	errs := problemsOf(t, err)
	wantKeys := []string{
		"site[1].colour",    // unknown key
		"storage.backend",   // s3
		"renewal.ratio",     // 2
		"site[1].hosts",     // underscore
		"site[1].upstreams", // no scheme
		"site[2]",           // neither upstreams nor respond
		"acme.email",        // missing
		"acme.agree_tos",    // false
		"acme.key_types",    // rsa1024
		"notify[1]",         // empty
	}
	var got []string
	for _, p := range errs {
		got = append(got, p.Key)
	}
	if len(errs) != len(wantKeys) {
		t.Errorf("got %d problems, want %d:\n%v", len(errs), len(wantKeys), err)
	}
	for _, k := range wantKeys {
		if !slices.Contains(got, k) {
			t.Errorf("no problem for %s in:\n%v", k, err)
		}
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != len(wantKeys) {
		t.Errorf("Error() has %d lines, want one per problem", n)
	}
}

// TestParseLineNumbers: problems in the second [[site]] point into it, even
// with multi-line values that look like keys or headers in between.
func TestParseLineNumbers(t *testing.T) {
	src := acmeOK + `
[[site]]
hosts = [
  "a.example.net",
]
respond = """
hosts = ["not.a.key"]
[[site]]
colr = 1
"""

[[site]]  # second site
redirect_https = true
hosts = ["b.example.net", "a.example.net"] # <== hosts of site 2
colr = "x" # <== unknown key of site 2
respond = "b"
`
	lines := strings.Split(src, "\n")
	lineOf := func(sub string) int {
		for i, l := range lines {
			if strings.Contains(l, sub) {
				return i + 1
			}
		}
		t.Fatalf("test bug: %q not in config", sub)
		return 0
	}
	_, err, _ := parse(t, src, nil)
	errs := problemsOf(t, err)
	if len(errs) != 2 {
		t.Fatalf("got %d problems, want 2:\n%v", len(errs), err)
	}
	for _, want := range []struct {
		key  string
		line int
	}{
		{"site[2].hosts", lineOf("hosts of site 2")},
		{"site[2].colr", lineOf("unknown key of site 2")},
	} {
		found := false
		for _, p := range errs {
			if p.Key == want.key {
				found = true
				if p.Line != want.line {
					t.Errorf("%s: line %d, want %d", want.key, p.Line, want.line)
				}
			}
		}
		if !found {
			t.Errorf("no problem for %s in:\n%v", want.key, err)
		}
	}

	// the same unknown key in two sites: each points at its own line
	src = acmeOK + siteOK + "colr = 1\n" + siteOK[:len("[[site]]\n")] + "hosts = [\"b.example.net\"]\nrespond = \"b\"\ncolr = 2\n"
	_, err, _ = parse(t, src, nil)
	errs = problemsOf(t, err)
	if len(errs) != 2 || errs[0].Key != "site[1].colr" || errs[0].Line != 7 || errs[1].Key != "site[2].colr" || errs[1].Line != 11 {
		t.Errorf("want site[1].colr at line 7 and site[2].colr at line 11, got:\n%v", err)
	}
}

func TestLoad(t *testing.T) {
	path, dir := writeConfig(t, acmeOK+siteOK, nil)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Storage.Path != filepath.Join(dir, "data") {
		t.Errorf("Storage.Path = %q", cfg.Storage.Path)
	}

	missing := filepath.Join(dir, "nope.toml")
	_, err = config.Load(missing)
	if err == nil || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "-config") {
		t.Errorf("Load(missing) = %v, want an error naming the file and the -config fix", err)
	}
}

func TestCheckHost(t *testing.T) {
	for _, h := range []string{"a.example.net", "localhost", "*.example.net", "127.0.0.1", "::1", "xn--bcher-kva.example", "a-b.c-d.example", strings.Repeat("a", 63) + ".net"} {
		if err := config.CheckHost(h); err != nil {
			t.Errorf("CheckHost(%q) = %v, want nil", h, err)
		}
	}
	for _, tt := range []struct{ host, msg string }{
		{"*.net", "two labels after *"},
		{"*", "two labels after *"},
		{"a.*.example.net", `"*"`},
		{"*.*.example.net", `"*"`},
		{"*a.example.net", `"*a"`},
		{"a..b", "empty label"},
		{".a.b", "empty label"},
		{"-a.b", "hyphen"},
		{"a-.b", "hyphen"},
		{"a_b.c", "'_'"},
		{"a b.c", "' '"},
		{"", "empty host"},
		{strings.Repeat("a", 64) + ".net", "longer than 63"},
		{strings.Repeat("abcdefghi.", 26) + "net", "longer than 253"},
	} {
		err := config.CheckHost(tt.host)
		if err == nil {
			t.Errorf("CheckHost(%q) = nil, want an error", tt.host)
			continue
		}
		if !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("CheckHost(%q) = %v, want it to mention %s", tt.host, err, tt.msg)
		}
	}
}
