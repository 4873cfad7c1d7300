package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portico-proxy/portico/integration/acmetest"
	"github.com/portico-proxy/portico/integration/testkit"
)

// TestMakeRunExample runs what `make run` runs (examples/local.toml, local
// CA, file storage) on free ports, reads the root path Portico prints, and
// asks curl for the page with that root trusted.
func TestMakeRunExample(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is needed (apt-get install curl); .ci/run installs it")
	}
	makefile, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(makefile), "run -config $(CONFIG)") || !strings.Contains(string(makefile), "CONFIG ?= examples/local.toml") {
		t.Fatal("make run no longer runs examples/local.toml; update this test with it")
	}
	readme, _ := os.ReadFile("../README.md")
	if first := strings.Join(strings.SplitN(string(readme), "\n", 8), "\n"); !strings.Contains(first, "make run") || !strings.Contains(first, "make test") {
		t.Errorf("README does not open with make run and make test:\n%s", first)
	}

	example, err := os.ReadFile("../examples/local.toml")
	if err != nil {
		t.Fatal(err)
	}
	httpPort, httpsPort := acmetest.FreePort(t), acmetest.FreePort(t)
	cfg := strings.NewReplacer("127.0.0.1:8080", fmt.Sprintf("127.0.0.1:%d", httpPort), "127.0.0.1:8443", fmt.Sprintf("127.0.0.1:%d", httpsPort)).Replace(string(example))
	if cfg == string(example) {
		t.Fatal("examples/local.toml no longer listens on 8080/8443; update this test")
	}
	dir := t.TempDir()
	p := startPortico(t, dir, cfg, fmt.Sprintf("127.0.0.1:%d", httpsPort))
	p.waitLog("root_cert", 10*time.Second)
	var root string
	for _, line := range strings.Split(p.log.String(), "\n") {
		var entry struct {
			RootCert string `json:"root_cert"`
		}
		if json.Unmarshal([]byte(line), &entry) == nil && entry.RootCert != "" {
			root = entry.RootCert
		}
	}
	if root != filepath.Join(dir, "data", "localca", "root.crt") {
		t.Fatalf("printed root %q, want it in the storage folder next to the config", root)
	}
	var out []byte
	testkit.Eventually(t, 20*time.Second, "curl to succeed", func() bool {
		out, err = exec.Command("curl", "-sS", "--fail", "--cacert", root,
			"--resolve", fmt.Sprintf("localhost:%d:127.0.0.1", httpsPort),
			fmt.Sprintf("https://localhost:%d/", httpsPort)).CombinedOutput()
		return err == nil
	})
	if !strings.Contains(string(out), "Hello from Portico") {
		t.Fatalf("curl got %q", out)
	}
}
