package main

// The files in examples/ are what operators copy: every config there is
// validated exactly as `portico validate` does it, and the container,
// compose and systemd files are checked against the CLI they call, so that
// none of them can drift from the code.

import (
	"bufio"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/portico-proxy/portico/config"
)

// repoRoot is the repository's root, two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("no go.mod at %s: %v", root, err)
	}
	return root
}

// exampleConfigs lists every examples/**/*.toml, relative to examples/.
// Stored state (examples/data) holds no configs and is skipped.
func exampleConfigs(t *testing.T) (dir string, files []string) {
	t.Helper()
	dir = filepath.Join(repoRoot(t), "examples")
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path == filepath.Join(dir, "data") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".toml") {
			rel, _ := filepath.Rel(dir, path)
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir, files
}

var envPlaceholder = regexp.MustCompile(`\{env\.([A-Za-z_][A-Za-z0-9_]*)\}`)

// exampleEnv is a plausible value for an {env.NAME} placeholder, chosen by
// the variable's name, so that the value passes validation the way a real
// one would.
func exampleEnv(name string) string {
	n := strings.ToUpper(name)
	switch {
	case strings.Contains(n, "EMAIL"):
		return "ops@example.net"
	case strings.Contains(n, "WEBHOOK"), strings.HasSuffix(n, "_URL"), strings.Contains(n, "ASK"):
		return "https://hooks.example.net/portico"
	case strings.Contains(n, "ACCESS_KEY_ID"):
		return "AKIAIOSFODNN7EXAMPLE" // the form AWS gives: letters and digits
	case strings.Contains(n, "REGION"):
		return "us-east-1"
	case strings.Contains(n, "ZONE"):
		return "Z1D633PJN98FT9"
	case strings.Contains(n, "HMAC"), strings.Contains(n, "TSIG"), strings.HasSuffix(n, "_KEY") && !strings.Contains(n, "ACCESS"):
		return "c2VjcmV0LWV4YW1wbGUta2V5LTAxMjM0NTY3ODk"
	case strings.Contains(n, "PORT"):
		return "587"
	case strings.Contains(n, "HOST") || strings.Contains(n, "SERVER"):
		return "ns1.example.net:53"
	}
	return "example-0123456789abcdef0123456789abcdef"
}

// TestExamplesValidate runs `portico validate` on every example config.
func TestExamplesValidate(t *testing.T) {
	dir, files := exampleConfigs(t)
	for _, want := range []string{"local.toml", "quickstart.toml", filepath.Join("fleet", "portico.toml")} {
		if !slices.Contains(files, want) {
			t.Errorf("examples/%s is missing (found %v)", want, files)
		}
	}
	for _, rel := range files {
		t.Run(rel, func(t *testing.T) {
			path := filepath.Join(dir, rel)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range envPlaceholder.FindAllStringSubmatch(string(data), -1) {
				t.Setenv(m[1], exampleEnv(m[1]))
			}
			code, stdout, stderr := run(t, "validate", "-config", path)
			if code != 0 {
				t.Fatalf("portico validate -config examples/%s: exit %d\n%s%s", rel, code, stdout, stderr)
			}
			if !strings.Contains(stdout, ": OK\n") {
				t.Errorf("summary:\n%s", stdout)
			}
			// An example states its intent: no warning it did not mean.
			for _, line := range strings.Split(stdout, "\n") {
				if strings.HasPrefix(line, "warning: ") && !strings.Contains(string(data), "hsts_max_age") {
					t.Errorf("unexpected %s", line)
				}
			}
		})
	}
}

// TestQuickstartIsLetsEncryptProduction: the quick start is what its
// comments say it is.
func TestQuickstartIsLetsEncryptProduction(t *testing.T) {
	cfg, err := config.Load(filepath.Join(repoRoot(t), "examples", "quickstart.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ACME.CA != config.DefaultCA || !cfg.ACME.AgreeTOS || len(cfg.Sites) != 1 {
		t.Errorf("acme %+v, %d sites", cfg.ACME, len(cfg.Sites))
	}
	if !slices.Equal(cfg.ACME.Challenges, []string{"http-01", "tls-alpn-01"}) {
		t.Errorf("challenges %v", cfg.ACME.Challenges)
	}
	if cfg.Storage.Path != "/var/lib/portico" {
		t.Errorf("storage path %q, want the systemd unit's StateDirectory", cfg.Storage.Path)
	}
}

// TestFleetExample: the fleet config shares Redis, and compose.yaml runs
// three Portico containers built from this repository and one Redis, with
// every variable the config needs.
func TestFleetExample(t *testing.T) {
	root := repoRoot(t)
	fleet := filepath.Join(root, "examples", "fleet")
	data, err := os.ReadFile(filepath.Join(fleet, "portico.toml"))
	if err != nil {
		t.Fatal(err)
	}
	var vars []string
	for _, m := range envPlaceholder.FindAllStringSubmatch(string(data), -1) {
		t.Setenv(m[1], exampleEnv(m[1]))
		vars = append(vars, m[1])
	}
	cfg, err := config.Load(filepath.Join(fleet, "portico.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Storage.Backend != "redis" || !strings.Contains(cfg.Storage.RedisURL, "@redis:6379") {
		t.Errorf("storage %q %q: want the compose file's redis service", cfg.Storage.Backend, cfg.Storage.RedisURL)
	}

	var compose struct {
		Services map[string]struct {
			Build *struct {
				Context string `json:"context"`
			} `json:"build"`
			Image       string            `json:"image"`
			Environment map[string]string `json:"environment"`
			Volumes     []string          `json:"volumes"`
			Ports       []string          `json:"ports"`
			Depends     map[string]any    `json:"depends_on"`
		} `json:"services"`
	}
	if err := json.Unmarshal(yamlToJSON(t, filepath.Join(fleet, "compose.yaml")), &compose); err != nil {
		t.Fatal(err)
	}
	var porticos []string
	hostPorts := map[string]bool{}
	for name, s := range compose.Services {
		if s.Build == nil {
			continue
		}
		porticos = append(porticos, name)
		if ctx := filepath.Join(fleet, s.Build.Context); ctx != root {
			t.Errorf("%s builds from %s, want the repository root %s", name, ctx, root)
		}
		if !slices.Contains(s.Volumes, "./portico.toml:/etc/portico/portico.toml:ro") {
			t.Errorf("%s mounts %v, not the fleet config at the Dockerfile's path", name, s.Volumes)
		}
		for _, v := range vars {
			if _, ok := s.Environment[v]; !ok {
				t.Errorf("%s lacks %s, which the config reads", name, v)
			}
		}
		if _, ok := s.Depends["redis"]; !ok {
			t.Errorf("%s does not wait for redis", name)
		}
		for _, p := range s.Ports {
			host, _, _ := strings.Cut(p, ":")
			if hostPorts[host] {
				t.Errorf("host port %s published twice", host)
			}
			hostPorts[host] = true
		}
	}
	if len(porticos) != 3 {
		t.Errorf("%d Portico services %v, want 3", len(porticos), porticos)
	}
	if r, ok := compose.Services["redis"]; !ok || !strings.HasPrefix(r.Image, "redis:") {
		t.Errorf("no redis service: %+v", compose.Services["redis"])
	}
}

// yamlToJSON parses a YAML file with Debian's python3-yaml (.ci/run
// installs it): the module graph has no YAML parser this module requires.
func yamlToJSON(t *testing.T, path string) []byte {
	t.Helper()
	py := "/usr/bin/python3"
	if exec.Command(py, "-c", "import yaml").Run() != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("/usr/bin/python3 with the yaml module is needed: apt-get install python3-yaml (.ci/run does)")
		}
		t.Skip("outside CI without python3-yaml (apt-get install python3-yaml); CI fails instead")
	}
	out, err := exec.Command(py, "-c", "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)", path).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("%s is not valid YAML: %v\n%s", path, err, stderr)
	}
	return out
}

// unitFile reads a systemd unit into section → key → values.
func unitFile(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not key=value in a section: %q", path, n, line)
			}
			out[section][k] = append(out[section][k], v)
		}
	}
	return out
}

// TestSystemdUnit: the unit runs the commands this binary has, with the
// hardening an operator expects.
func TestSystemdUnit(t *testing.T) {
	u := unitFile(t, filepath.Join(repoRoot(t), "examples", "portico.service"))
	svc := u["Service"]
	want := map[string]string{
		"Type":                    "simple",
		"ExecStart":               "/usr/local/bin/portico run -config /etc/portico/portico.toml",
		"ExecReload":              "/bin/kill -HUP $MAINPID",
		"AmbientCapabilities":     "CAP_NET_BIND_SERVICE",
		"CapabilityBoundingSet":   "CAP_NET_BIND_SERVICE",
		"DynamicUser":             "yes",
		"StateDirectory":          "portico",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"NoNewPrivileges":         "yes",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
	}
	for k, v := range want {
		if got := svc[k]; len(got) != 1 || got[0] != v {
			t.Errorf("[Service] %s = %q, want %q", k, got, v)
		}
	}
	if !slices.Contains(svc["SystemCallFilter"], "@system-service") {
		t.Errorf("SystemCallFilter = %q", svc["SystemCallFilter"])
	}
	if got := u["Install"]["WantedBy"]; len(got) != 1 || got[0] != "multi-user.target" {
		t.Errorf("WantedBy = %q", got)
	}
	// the commands exist and take these flags: a missing config is exit 1
	// (a config problem), never 2 (a usage error)
	for _, cmd := range append(svc["ExecStartPre"], svc["ExecStart"]...) {
		args := strings.Fields(strings.TrimPrefix(cmd, "/usr/local/bin/portico "))
		args[len(args)-1] = filepath.Join(t.TempDir(), "missing.toml")
		if code, _, stderr := run(t, args...); code != 1 || !strings.Contains(stderr, "missing.toml") {
			t.Errorf("%s: exit %d: %s", cmd, code, stderr)
		}
	}
}

// dockerInstructions reads a Dockerfile into its instructions (keyword in
// upper case, arguments), joining continuation lines and dropping comments.
func dockerInstructions(t *testing.T, path string) [][2]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out [][2]string
	var cur strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		kw, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, [2]string{strings.ToUpper(kw), strings.Join(strings.Fields(args), " ")})
		cur.Reset()
	}
	return out
}

// TestDockerfile checks what can be checked without a container engine:
// the builder's Go matches go.mod, the build is static, trimmed and
// versioned, the runtime is non-root with the /data volume, and the
// HEALTHCHECK and ENTRYPOINT call commands and flags this binary has.
func TestDockerfile(t *testing.T) {
	root := repoRoot(t)
	ins := dockerInstructions(t, filepath.Join(root, "Dockerfile"))
	var froms []string
	var all []string
	final := map[string][]string{} // instructions of the last stage
	goVersion := ""
	for _, in := range ins {
		all = append(all, in[0]+" "+in[1])
		switch in[0] {
		case "FROM":
			froms = append(froms, in[1])
			final = map[string][]string{}
			continue
		case "ARG":
			if v, ok := strings.CutPrefix(in[1], "GO_VERSION="); ok {
				goVersion = v
			}
		}
		final[in[0]] = append(final[in[0]], in[1])
	}
	if len(froms) != 2 || froms[0] != "golang:${GO_VERSION} AS build" || !strings.HasPrefix(froms[1], "gcr.io/distroless/static") {
		t.Errorf("stages %q: want a golang builder and a distroless runtime", froms)
	}
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod); m == nil || string(m[1]) != goVersion {
		t.Errorf("GO_VERSION=%s, go.mod says go %s", goVersion, m[1])
	}
	build := strings.Join(all, "\n")
	for _, want := range []string{
		`CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}"`,
		"./cmd/portico",
		"setcap cap_net_bind_service=+ep /out/usr/local/bin/portico",
		"COPY go.mod go.sum ./",
		"COPY --from=build /out/usr/local/bin/portico /usr/local/bin/portico",
	} {
		if !strings.Contains(build, want) {
			t.Errorf("the Dockerfile lacks %q", want)
		}
	}
	if u := final["USER"]; len(u) != 1 || u[0] == "0" || strings.HasPrefix(u[0], "root") || strings.HasPrefix(u[0], "0:") {
		t.Errorf("runtime USER %q: want a non-root user", u)
	}
	if v := final["VOLUME"]; len(v) != 1 || v[0] != "/data" {
		t.Errorf("VOLUME %q", v)
	}
	jsonArgs := func(kw, s string) []string {
		t.Helper()
		var args []string
		if err := json.Unmarshal([]byte(s), &args); err != nil || len(args) < 2 {
			t.Fatalf("%s %s: want the exec (JSON) form", kw, s)
		}
		return args
	}
	if len(final["HEALTHCHECK"]) != 1 || len(final["ENTRYPOINT"]) != 1 {
		t.Fatalf("HEALTHCHECK %q, ENTRYPOINT %q", final["HEALTHCHECK"], final["ENTRYPOINT"])
	}
	_, hcCmd, _ := strings.Cut(final["HEALTHCHECK"][0], "CMD ")
	hc := jsonArgs("HEALTHCHECK", hcCmd)
	ep := jsonArgs("ENTRYPOINT", final["ENTRYPOINT"][0])
	if want := []string{"/usr/local/bin/portico", "health", "-config", "/etc/portico/portico.toml"}; !slices.Equal(hc, want) {
		t.Errorf("HEALTHCHECK CMD %q, want %q", hc, want)
	}
	if want := []string{"/usr/local/bin/portico", "run", "-config", "/etc/portico/portico.toml"}; !slices.Equal(ep, want) {
		t.Errorf("ENTRYPOINT %q, want %q", ep, want)
	}
	// the image's commands exist with these flags: without the config they
	// fail as a missing config (1), not as a usage error (2)
	missing := filepath.Join(t.TempDir(), "portico.toml")
	for _, args := range [][]string{hc[1:], ep[1:]} {
		args[len(args)-1] = missing
		if code, _, stderr := run(t, args...); code != 1 || !strings.Contains(stderr, missing) {
			t.Errorf("%q: exit %d: %s", args, code, stderr)
		}
	}
}

// TestDockerignore: the build context keeps what `go build` needs and
// leaves out state, keys and build output.
func TestDockerignore(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot(t), ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, strings.TrimPrefix(line, "/"))
		}
	}
	excluded := func(path string) bool {
		ex := false
		for _, p := range patterns {
			neg := strings.HasPrefix(p, "!")
			p = strings.TrimSuffix(strings.TrimPrefix(p, "!"), "/")
			match := false
			if rest, ok := strings.CutPrefix(p, "**/"); ok {
				match, _ = filepath.Match(rest, filepath.Base(path))
			} else {
				// a pattern matches the path or one of its parent folders
				for q := path; q != "." && q != "/"; q = filepath.Dir(q) {
					if m, _ := filepath.Match(p, q); m {
						match = true
					}
				}
			}
			if match {
				ex = !neg
			}
		}
		return ex
	}
	for _, keep := range []string{"go.mod", "go.sum", "cmd/portico/main.go", "config/config.go", "proxy/admin/page.html", "tlsmgr/manager.go"} {
		if excluded(keep) {
			t.Errorf("%s is excluded from the build context", keep)
		}
	}
	for _, drop := range []string{".git/config", "examples/data/localca/root.key", "bin/portico", "portico", "cmd/portico/portico.test"} {
		if !excluded(drop) {
			t.Errorf("%s is in the build context", drop)
		}
	}
}
