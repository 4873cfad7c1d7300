package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portico-proxy/portico/integration/testkit"
)

// TestMakeRunStopsCleanly: Ctrl-C on `make run` (SIGINT to make and
// Portico, the terminal's process group) is a clean stop: Portico drains
// and exits 0, and make prints no "*** ... Error", which reads as a failure.
func TestMakeRunStopsCleanly(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	dir := t.TempDir()
	cfg := writeFile(t, dir, "portico.toml", `[acme]
ca = "local"
[listen]
http = "127.0.0.1:0"
https = "127.0.0.1:0"
[storage]
path = "data"
[[site]]
hosts = ["localhost"]
respond = "ok"
`)
	var out testkit.Buffer
	cmd := exec.Command("make", "-s", "run", "CONFIG="+cfg)
	cmd.Dir = repoRoot(t)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // a process group, as a terminal's job is
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	})
	deadline := time.Now().Add(5 * time.Minute) // make builds the binary first
	for !strings.Contains(out.String(), "portico started") {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("make run exited before Portico started (%v):\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("Portico did not start within 5 minutes:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-done:
		done <- err
	case <-time.After(time.Minute):
		t.Fatalf("make run did not stop within a minute of SIGINT:\n%s", out.String())
	}
	log := out.String()
	if !strings.Contains(log, "stopped") || strings.Contains(log, "***") || strings.Contains(log, "Error") {
		t.Errorf("Ctrl-C does not read as a clean stop:\n%s", log)
	}
	if strings.Contains(log, "(devel)") {
		t.Errorf("make run's binary has no version (make build must stamp it):\n%s", log)
	}
	// make itself dies of the SIGINT it got too, as any make does on Ctrl-C;
	// what must not happen is make's own error exit (2).
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !(ws.Signaled() && ws.Signal() == syscall.SIGINT) {
			t.Errorf("make run: %v, want exit 0 or the SIGINT it got:\n%s", err, log)
		}
	} else if err != nil {
		t.Errorf("make run: %v", err)
	}
	if _, err := os.Stat(filepath.Join(repoRoot(t), "bin", "portico")); err != nil {
		t.Errorf("make run did not build bin/portico: %v", err)
	}
}
