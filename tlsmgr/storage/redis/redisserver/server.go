// Package redisserver runs throwaway redis-server processes for tests.
//
// Tests of the Redis storage backend must exercise a real server: the
// behaviour that matters (Lua scripts, MULTI/EXEC, key expiry, what a
// client sees during an outage) cannot be faked convincingly. Each
// Server listens on its own loopback port with persistence disabled and
// lives in the test's temporary directory, so tests do not interfere
// with each other or with a Redis that may already run on the machine.
//
// redis-server must be on PATH. When it is not, Start fails the test
// instead of skipping it, so that a missing dependency cannot make a
// test run look green while testing nothing.
package redisserver

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// startTimeout bounds how long Start and Restart wait for the server to
// answer PING. It is generous because CI machines (and -race builds
// running in parallel) can be slow.
const startTimeout = 15 * time.Second

// Server is a redis-server child process owned by one test.
//
// Its methods are safe for concurrent use, but Restart reports failure
// through t.Fatal and so, like any t.Fatal caller, must be called from
// the goroutine running the test.
type Server struct {
	// Addr is the "127.0.0.1:port" address the server listens on. It
	// stays the same across Stop and Restart so that clients created
	// before an outage reconnect to the restarted server.
	Addr string

	t          testing.TB
	bin        string
	dir        string
	persistent bool
	extra      []string // more command-line options, e.g. --replicaof
	sentinel   []string // sentinel directives: the process is a sentinel

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed once cmd has been waited for
	logPath string
}

// Start launches redis-server on a free loopback port and returns once
// it answers PING. The process is killed by a t.Cleanup callback, which
// runs whether the test passes, fails or calls t.Fatal.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, false)
}

// StartPersistent is Start with an append-only file synced on every write,
// as operators run Redis: data written before Stop is there after Restart,
// so an outage test sees an outage and not a data loss.
func StartPersistent(t testing.TB) *Server {
	t.Helper()
	return start(t, true)
}

func start(t testing.TB, persistent bool) *Server {
	t.Helper()
	return startWith(t, &Server{persistent: persistent})
}

// startWith starts the server s describes (persistent, extra, sentinel)
// on a free port.
func startWith(t testing.TB, s *Server) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server is required by this test but was not found on PATH (%v); install it, e.g. `apt-get install redis-server`", err)
	}
	s.t, s.bin, s.dir = t, bin, t.TempDir()
	s.logPath = filepath.Join(s.dir, "redis.log")
	// Registered before the process exists so that every exit path
	// below, including t.Fatal, still kills whatever got started.
	t.Cleanup(s.Stop)

	// The free port is found by binding port 0 and releasing it, so
	// another process can take it before redis-server binds it. Such
	// a collision is rare; picking a new port is the cure.
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("redisserver: finding a free port: %v", err)
		}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if lastErr = s.start(); lastErr == nil {
			return s
		}
	}
	t.Fatalf("redisserver: starting redis-server: %v", lastErr)
	return nil
}

// URL returns a redis:// URL for the server, usable with redis.ParseURL.
func (s *Server) URL() string {
	return "redis://" + s.Addr + "/0"
}

// Stop kills the server (SIGKILL) and waits for the process to exit.
// Without StartPersistent all data is lost. Stop is
// idempotent, and clients keep working against the same Addr after a
// Restart.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

// Restart stops the server if it is running and starts it again on the
// same port (empty, unless it was started with StartPersistent), returning once it answers PING. It is meant for
// outage tests. It calls t.Fatal when the server cannot be started.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	s.stopLocked()
	s.mu.Unlock()

	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = s.start(); err == nil {
			return
		}
	}
	s.t.Fatalf("redisserver: restarting redis-server on %s: %v", s.Addr, err)
}

func (s *Server) stopLocked() {
	if s.cmd == nil {
		return
	}
	// Kill only this child, by its own process handle.
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
	s.exited = nil
}

// start launches the process on s.Addr and polls PING until it answers,
// the process exits, or startTimeout passes.
func (s *Server) start() error {
	_, port, err := net.SplitHostPort(s.Addr)
	if err != nil {
		return err
	}
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	appendOnly := []string{"--appendonly", "no"}
	if s.persistent {
		appendOnly = []string{"--appendonly", "yes", "--appendfsync", "always"}
	}
	args := append([]string{
		"--port", port,
		"--bind", "127.0.0.1",
		"--save", "",
		"--dir", s.dir,
		"--daemonize", "no",
	}, appendOnly...)
	args = append(args, s.extra...)
	if s.sentinel != nil {
		// A sentinel rewrites its configuration file, which must
		// therefore exist and be its first argument.
		conf := filepath.Join(s.dir, "sentinel.conf")
		body := "port " + port + "\nbind 127.0.0.1\ndir " + s.dir + "\n" + strings.Join(s.sentinel, "\n") + "\n"
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			logFile.Close()
			return err
		}
		args = []string{conf, "--sentinel"}
	}
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(exited)
	}()

	s.mu.Lock()
	s.cmd = cmd
	s.exited = exited
	s.mu.Unlock()

	deadline := time.Now().Add(startTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-exited:
			s.mu.Lock()
			if s.cmd == cmd {
				s.cmd, s.exited = nil, nil
			}
			s.mu.Unlock()
			return fmt.Errorf("redis-server on %s exited during startup; log:\n%s", s.Addr, s.logTail())
		default:
		}
		if err = ping(s.Addr); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			s.Stop()
			return fmt.Errorf("redis-server on %s did not answer PING within %v (last error: %v); log:\n%s",
				s.Addr, startTimeout, err, s.logTail())
		}
		select {
		case <-tick.C:
		case <-exited:
		}
	}
}

func (s *Server) logTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

// ping speaks just enough RESP to tell whether the server accepts
// commands, so that this helper does not depend on a client library.
func ping(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(time.Second)); err != nil {
		return err
	}
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		// e.g. "-LOADING ..." while the server is still starting.
		return errors.New("unexpected PING reply " + strconv.Quote(line))
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Signal sends sig to the running server, e.g. SIGSTOP to make a replica
// stop acknowledging writes while its connections stay open.
func (s *Server) Signal(sig os.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return errors.New("redisserver: not running")
	}
	return s.cmd.Process.Signal(sig)
}
