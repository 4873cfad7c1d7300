package config_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/portico-proxy/portico/integration/testkit"
)

// TestParseTypeErrorsWithTheRest: values of the wrong type do not stop the
// check. Every problem of the file is reported at once, type errors among
// the others, in file order, and the report is the same on every run (the
// decoder walks Go maps, whose order changes from run to run).
func TestParseTypeErrorsWithTheRest(t *testing.T) {
	src := `[acme]
email = "ops@example.net"
agree_tos = "yes"

[renewal]
max_concurrent = 2.5
check_interval = "ten minutes"
backoff = "1m"

[[site]]
hosts = ["bad_host.example.net"]
upstreams = ["http://127.0.0.1:8080"]
colour = "blue"

[[site]]
respond = "hi"
hosts = "b.example.net"
redirect_https = "no"
`
	want := []string{
		`3 acme.agree_tos incompatible types`,
		`6 renewal.max_concurrent incompatible types`,
		`7 renewal.check_interval time: invalid duration "ten minutes"`,
		`8 renewal.backoff incompatible types`,
		`11 site[1].hosts "bad_host.example.net"`,
		`13 site[1].colour unknown key`,
		`17 site[2].hosts incompatible types`,
		`18 site[2].redirect_https incompatible types`,
	}
	var first string
	for run := range 20 {
		_, err, _ := parse(t, src, nil)
		errs := problemsOf(t, err)
		var got []string
		for i, p := range errs {
			got = append(got, fmt.Sprintf("%d %s %s", p.Line, p.Key, p.Msg))
			if i < len(want) && !strings.HasPrefix(got[i], want[i]) {
				t.Errorf("problem %d is %q, want %q…", i+1, got[i], want[i])
			}
		}
		if len(errs) != len(want) {
			t.Fatalf("got %d problems, want %d:\n%s", len(errs), len(want), strings.Join(got, "\n"))
		}
		for _, p := range errs {
			if p.Fix == "" {
				t.Errorf("%s: no fix", p.Key)
			}
		}
		if run == 0 {
			first = strings.Join(got, "\n")
		} else if r := strings.Join(got, "\n"); r != first {
			t.Fatalf("run %d reported\n%s\nrun 1 reported\n%s", run+1, r, first)
		}
	}
}

// TestParseTypeErrorNotReportedTwice: a value of the wrong type is one
// problem, not also "missing" or "must be true" for the zero value left in
// its place.
func TestParseTypeErrorNotReportedTwice(t *testing.T) {
	src := acmeOK + `[renewal]
max_concurrent = "4"
[[site]]
hosts = "app.example.net"
upstreams = ["http://127.0.0.1:8080"]
[[site]]
hosts = ["b.example.net"]
upstreams = "http://127.0.0.1:8080"
`
	_, err, _ := parse(t, src, nil)
	errs := problemsOf(t, err)
	var keys []string
	for _, p := range errs {
		keys = append(keys, p.Key)
	}
	if want := []string{"renewal.max_concurrent", "site[1].hosts", "site[2].upstreams"}; !slices.Equal(keys, want) {
		t.Errorf("problems at %v, want %v:\n%v", keys, want, err)
	}
}

// TestParseNothingToServe: a file that serves nothing (empty, truncated,
// or the wrong file) is refused, so that a reload cannot drop every site.
func TestParseNothingToServe(t *testing.T) {
	for _, tt := range []struct{ name, src string }{
		{"empty", ""},
		{"blank and comments", "\n  \n# portico.toml\n"},
		{"truncated before the sites", acmeOK + "[listen]\nhttps = \":8443\"\n"},
		{"storage only", "[storage]\nbackend = \"file\"\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err, _ := parse(t, tt.src, nil)
			errs := problemsOf(t, err)
			if len(errs) != 1 || !strings.Contains(errs[0].Msg, "nothing to serve") ||
				!strings.Contains(errs[0].Fix, "[[site]]") || !strings.Contains(errs[0].Fix, "-config") {
				t.Errorf("got %d problem(s), want one saying nothing to serve with a fix naming [[site]] and -config:\n%v", len(errs), err)
			}
			if tt.src == "" && !strings.Contains(errs[0].Msg, "empty") {
				t.Errorf("an empty file is not called empty: %v", err)
			}
		})
	}
	crt := testkit.SelfSigned(t, "app.example.net")
	for _, tt := range []struct {
		name, src string
		files     map[string]string
	}{
		{"a site", siteOK + "[acme]\nca = \"local\"\n", nil},
		{"a certificate", "[[certificate]]\ncert = \"c.pem\"\nkey = \"k.pem\"\n", map[string]string{"c.pem": string(crt.CertPEM()), "k.pem": string(crt.KeyPEM())}},
		{"a central validation server", acmeOK + "validation_server = true\n", nil},
		{"on demand", acmeOK + "[on_demand]\nask = \"http://127.0.0.1:9000/allowed\"\nupstreams = [\"http://127.0.0.1:8081\"]\n", nil},
	} {
		t.Run("accepts "+tt.name, func(t *testing.T) {
			mustParse(t, tt.src, tt.files)
		})
	}
}

// TestParseListenersShareAnAddress: http, https and admin on one address
// would pass the check and then fail at start with "address already in
// use", which sends the operator after another process.
func TestParseListenersShareAnAddress(t *testing.T) {
	for _, tt := range []struct {
		name, listen, key, msg string
	}{
		{"http and https", "http = \":8443\"\nhttps = \":8443\" " + marker, "listen.https", `":8443" is also the http address`},
		{"wildcard written two ways", "http = \"0.0.0.0:443\" " + marker, "listen.http", `"0.0.0.0:443" is also the https address (":443", the default)`},
		{"IPv6 wildcard", "https = \"[::]:8443\"\nadmin = \"0.0.0.0:8443\" " + marker + "\nadmin_token = \"0123456789abcdef0123\"", "listen.admin", `"0.0.0.0:8443" is also the https address ("[::]:8443")`},
		{"admin on the default http port", "admin = \"127.0.0.1:80\" " + marker, "listen.admin", `"127.0.0.1:80" is also the http address (":80", the default)`},
		{"localhost and loopback", "https = \"127.0.0.1:8443\"\nadmin = \"localhost:8443\" " + marker, "listen.admin", `"localhost:8443" is also the https address`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src := acmeOK + siteOK + "[listen]\n" + tt.listen + "\n"
			_, err, _ := parse(t, src, nil)
			errs := problemsOf(t, err)
			if len(errs) != 1 {
				t.Fatalf("got %d problems, want 1:\n%v", len(errs), err)
			}
			p := errs[0]
			if p.Key != tt.key || !strings.Contains(p.Msg, tt.msg) || p.Line != markedLine(t, src) || !strings.Contains(p.Fix, "own port") {
				t.Errorf("got %s\nwant key %s, line %d, message ~ %q, a fix naming its own port", p.Error(), tt.key, markedLine(t, src), tt.msg)
			}
		})
	}
	for _, listen := range []string{
		"http = \"127.0.0.1:8080\"\nhttps = \"127.0.0.2:8080\"",
		"http = \":0\"\nhttps = \":0\"\nadmin = \"127.0.0.1:0\"",
		"http = \"\"\nhttps = \":8443\"\nadmin = \"/run/portico/admin.sock\"",
		"http = \":8080\"\nhttps = \":8443\"\nadmin = \"127.0.0.1:2019\"",
	} {
		mustParse(t, acmeOK+siteOK+"[listen]\n"+listen+"\n", nil)
	}
}
