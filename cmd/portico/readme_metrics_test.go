package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/portico-proxy/portico/config"
	"github.com/portico-proxy/portico/integration/testkit"
	"github.com/portico-proxy/portico/proxy"
	"github.com/portico-proxy/portico/proxy/admin"
	"github.com/portico-proxy/portico/tlsmgr"
)

// helpRecorder is a prometheus.Registerer that keeps each metric's HELP.
type helpRecorder map[string]string

var descRe = regexp.MustCompile(`^Desc\{fqName: ("(?:[^"\\]|\\.)*"), help: ("(?:[^"\\]|\\.)*")`)

func (h helpRecorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		if m := descRe.FindStringSubmatch(d.String()); m != nil {
			name, _ := strconv.Unquote(m[1])
			help, _ := strconv.Unquote(m[2])
			h[name] = help
		}
	}
	return nil
}

func (h helpRecorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		h.Register(c)
	}
}

func (h helpRecorder) Unregister(prometheus.Collector) bool { return true }

// TestREADMEMetricsSayWhatHELPSays: every portico_* metric is in the
// README's table, and its meaning there starts with what its HELP says (the
// README may add to it, never say something else).
func TestREADMEMetricsSayWhatHELPSays(t *testing.T) {
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "portico.toml"), []byte(localSite))
	if err != nil {
		t.Fatal(err)
	}
	help := helpRecorder{}
	srv, err := proxy.New(cfg, testkit.StaticCerts{}, zap.NewNop()) // never started: no handshakes
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.RegisterMetrics(help); err != nil {
		t.Fatal(err)
	}
	help.MustRegister(admin.NewCertCollector(&fakeCerts{}))
	m, err := tlsmgr.New(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	if err := m.RegisterMetrics(help); err != nil {
		t.Fatal(err)
	}

	data, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `(portico_[a-z_]+)(?:\\{[^}]*\\})?` \\| (.*) \\|$")
	documented := map[string]bool{}
	for _, r := range row.FindAllStringSubmatch(string(data), -1) {
		name, meaning := r[1], r[2]
		documented[name] = true
		h, ok := help[name]
		if !ok {
			t.Errorf("README.md documents %s, which Portico does not export", name)
			continue
		}
		if !strings.HasPrefix(plain(meaning), plain(h)) {
			t.Errorf("README.md says %s is\n\t%q\nits HELP says\n\t%q", name, meaning, h)
		}
	}
	for name := range help {
		if strings.HasPrefix(name, "portico_") && !documented[name] {
			t.Errorf("%s is not in README.md's metrics table", name)
		}
	}
}

// plain is a metric's description without Markdown, capital or full stop.
func plain(s string) string {
	s = strings.TrimSuffix(strings.ReplaceAll(s, "`", ""), ".")
	r, n := utf8.DecodeRuneInString(s)
	return string(unicode.ToLower(r)) + s[n:]
}

// TestREADMEBuildAndTestNeeds: what `make test` needs is in the README (every
// package .ci/run installs), and the documented builds stamp the version.
func TestREADMEBuildAndTestNeeds(t *testing.T) {
	root := repoRoot(t)
	read := func(name string) string {
		data, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	readme, ciRun, makefile, dockerfile := read("README.md"), read(".ci/run"), read("Makefile"), read("Dockerfile")
	_, section, ok := strings.Cut(readme, "\n## Building and testing\n")
	if !ok {
		t.Fatal(`README.md has no "## Building and testing" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	needs := regexp.MustCompile(`need\+=\(([^)]*)\)`).FindAllStringSubmatch(ciRun, -1)
	if len(needs) < 5 {
		t.Fatalf(".ci/run: found %d need+=(...) lines; update this test", len(needs))
	}
	for _, n := range needs {
		for _, pkg := range strings.Fields(n[1]) {
			if !regexp.MustCompile(`\b` + regexp.QuoteMeta(pkg) + `\b`).MatchString(section) {
				t.Errorf("README.md's Building and testing does not name %s, which .ci/run installs", pkg)
			}
		}
	}
	if !strings.Contains(makefile, `-X main.version=$(VERSION)`) {
		t.Error("Makefile: make build does not stamp the version (-X main.version=$(VERSION))")
	}
	for name, text := range map[string]string{"README.md": readme, "Dockerfile": dockerfile} {
		for _, line := range strings.Split(text, "\n") {
			if strings.Contains(line, "docker build ") && !strings.Contains(line, "--build-arg VERSION=") {
				t.Errorf("%s: %q builds an image whose version is dev", name, strings.TrimSpace(line))
			}
		}
	}
}
