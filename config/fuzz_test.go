package config

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary text to the config loader: it never panics, it
// either returns a config or config.Errors (each with the file name and a
// message), and a config it accepts is accepted again unchanged when parsed
// twice (validation is deterministic).
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"",
		"[acme]\nca = \"local\"\n[[site]]\nhosts = [\"localhost\"]\nrespond = \"ok\"\n",
		"[acme]\nemail = \"ops@example.net\"\nagree_tos = true\n[[site]]\nhosts = [\"a.example.net\"]\nupstreams = [\"http://127.0.0.1:8080\"]\nhsts_max_age = \"1440h\"\n",
		"[acme]\nemail = \"o@e.net\"\nagree_tos = true\nchallenges = [\"dns-01\"]\n[acme.dns]\nprovider = \"rfc2136\"\nserver = \"127.0.0.1:53\"\nkey_name = \"k.\"\nkey_alg = \"hmac-sha256\"\nkey = \"c2VjcmV0\"\n[[site]]\nhosts = [\"*.e.net\"]\nrespond = \"x\"\n",
		"[storage]\nbackend = \"redis\"\nredis_url = \"redis://:pw@h:6379/0\"\n",
		"[[site]]\nhosts = [\"a..b\", \"A.B\"]\nrespond = \"x\"\ncertificate = \"shared\"\n",
		"[renewal]\nratio = 0.5\nbackoff = [\"1s\", \"-1s\"]\n[listen]\nadmin = \"0.0.0.0:1\"\n",
		"[on_demand]\nask = \"{env.NOPE}\"\n[[notify]]\nemail = \"x\"\n",
		"[[site]]\nhosts = [\"x\"]\n[[site]]\nhosts = [\"x\"]\nupstreams = [\"ftp://x\"]\n",
		"[acme\nemail = ",
		"a = \"\"\"\n[[site]]\n\"\"\"\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, text string) {
		cfg, err := Parse("fuzz.toml", []byte(text))
		if err != nil {
			var errs Errors
			if errors.As(err, &errs) {
				if len(errs) == 0 {
					t.Fatal("empty Errors")
				}
				for _, p := range errs {
					if p.File != "fuzz.toml" || p.Msg == "" {
						t.Fatalf("problem without file or message: %+v", p)
					}
				}
			} else if !strings.Contains(err.Error(), "fuzz.toml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if cfg == nil {
			t.Fatal("nil config without error")
		}
		if _, err := Parse("fuzz.toml", []byte(text)); err != nil {
			t.Fatalf("accepted once, refused the second time: %v", err)
		}
	})
}
