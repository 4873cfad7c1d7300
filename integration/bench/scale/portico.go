package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// instance is a running Portico whose log is followed.
type instance struct {
	cmd    *exec.Cmd
	start  time.Time
	https  string
	admin  string
	notify chan struct{} // a line was logged
	exited chan struct{} // closed when the log reaches EOF (the process is gone)

	mu       sync.Mutex
	seen     map[string]logEvent // the first line of each msg
	problems []string            // warn and error lines, shortened
}

func (in *instance) problem(s string) {
	in.mu.Lock()
	in.problems = append(in.problems, s)
	in.mu.Unlock()
}

// warnings returns the warn and error lines logged so far.
func (in *instance) warnings() []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]string(nil), in.problems...)
}

type logEvent struct {
	msg string
	at  time.Duration // since start, when the line was read
	ts  time.Duration // since start, from the line's own timestamp
}

type logLine struct {
	Level string `json:"level"`
	TS    string `json:"ts"`
	Msg   string `json:"msg"`
}

// zap's ISO8601TimeEncoder
const zapTimeLayout = "2006-01-02T15:04:05.000Z0700"

// writeConfig writes a Portico config for hosts with the given storage lines.
func writeConfig(path, storage string, hosts []string, httpPort, httpsPort, adminPort int) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "[acme]\nca = \"local\"\n\n")
	fmt.Fprintf(&b, "[listen]\nhttp = \"127.0.0.1:%d\"\nhttps = \"127.0.0.1:%d\"\nadmin = \"127.0.0.1:%d\"\n\n", httpPort, httpsPort, adminPort)
	fmt.Fprintf(&b, "[storage]\n%s\n\n", storage)
	fmt.Fprintf(&b, "[renewal]\ncheck_interval = \"10m\"\n\n")
	fmt.Fprintf(&b, "[[site]]\nrespond = \"ok\"\nhosts = [\n")
	for _, h := range hosts {
		fmt.Fprintf(&b, "  %q,\n", h)
	}
	b.WriteString("]\n")
	return os.WriteFile(path, b.Bytes(), 0o600)
}

// startPortico runs `portico run -config cfgPath`, its log going to logPath.
func startPortico(bin, cfgPath, logPath string, httpsPort, adminPort int) (*instance, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "run", "-config", cfgPath)
	cmd.Stdout = logFile
	stderr, err := cmd.StderrPipe()
	if err != nil {
		logFile.Close()
		return nil, err
	}
	in := &instance{
		cmd:    cmd,
		https:  net.JoinHostPort("127.0.0.1", strconv.Itoa(httpsPort)),
		admin:  net.JoinHostPort("127.0.0.1", strconv.Itoa(adminPort)),
		notify: make(chan struct{}, 1),
		seen:   map[string]logEvent{},
		exited: make(chan struct{}),
	}
	in.start = time.Now()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	go func() {
		defer close(in.exited)
		defer logFile.Close()
		r := bufio.NewReaderSize(stderr, 1<<20)
		for {
			line, err := r.ReadBytes('\n')
			if len(line) > 0 {
				read := time.Since(in.start)
				logFile.Write(line)
				var l logLine
				if json.Unmarshal(line, &l) == nil {
					ev := logEvent{msg: l.Msg, at: read, ts: -1}
					if t, err := time.Parse(zapTimeLayout, l.TS); err == nil {
						ev.ts = t.Sub(in.start)
					}
					if l.Level == "warn" || l.Level == "error" || l.Level == "fatal" || l.Level == "panic" {
						in.problem(shorten(string(line), 400))
					}
					in.mu.Lock()
					if _, ok := in.seen[ev.msg]; !ok {
						in.seen[ev.msg] = ev
					}
					in.mu.Unlock()
					select {
					case in.notify <- struct{}{}:
					default:
					}
				} else {
					in.problem("unparsed: " + shorten(string(line), 400))
				}
			}
			if err != nil {
				return
			}
		}
	}()
	return in, nil
}

func shorten(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) <= n {
		return s
	}
	return s[:n] + fmt.Sprintf("... (%d bytes)", len(s))
}

// waitFor waits for the first log line with msg, or with one of the
// alternatives (the first of them logged; ev.msg says which).
func (in *instance) waitFor(msg string, timeout time.Duration, or ...string) (logEvent, error) {
	deadline := time.After(timeout)
	msgs := append([]string{msg}, or...)
	first := func() (logEvent, bool) {
		var best logEvent
		found := false
		for _, m := range msgs {
			if ev, ok := in.event(m); ok && (!found || ev.at < best.at) {
				best, found = ev, true
			}
		}
		return best, found
	}
	for {
		if ev, ok := first(); ok {
			return ev, nil
		}
		select {
		case <-in.notify:
		case <-in.exited:
			if ev, ok := first(); ok {
				return ev, nil
			}
			return logEvent{}, fmt.Errorf("portico exited before logging %q", msg)
		case <-deadline:
			return logEvent{}, fmt.Errorf("no %q log line within %v", msg, timeout)
		}
	}
}

// event returns the first log line with msg, if there was one.
func (in *instance) event(msg string) (logEvent, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	ev, ok := in.seen[msg]
	return ev, ok
}

// stop sends SIGTERM and waits for the process, killing it after a while.
func (in *instance) stop() {
	in.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-in.exited:
	case <-time.After(30 * time.Second):
		in.cmd.Process.Kill()
		<-in.exited
	}
	in.cmd.Wait()
}

// memory reads VmRSS and VmHWM (bytes) from /proc.
func memory(pid int) (rss, hwm int64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb * 1024
		case "VmHWM:":
			hwm = kb * 1024
		}
	}
	return rss, hwm, nil
}

// cpuTime is the CPU time (user + system) pid has used.
func cpuTime(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// the fields after the command name, which is in parentheses
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks, nil
}

// waitIdle returns once pid has used less than 5% of a CPU over the last
// half second (its background start-up work is done), or after limit. It
// returns the time it waited and the CPU time pid used meanwhile.
func waitIdle(pid int, limit time.Duration) (waited, used time.Duration, idle bool) {
	const window, step = 500 * time.Millisecond, 100 * time.Millisecond
	start := time.Now()
	first, err := cpuTime(pid)
	if err != nil {
		return 0, 0, false
	}
	hist := []time.Duration{first}
	for time.Since(start) < limit {
		time.Sleep(step)
		c, err := cpuTime(pid)
		if err != nil {
			return time.Since(start), 0, false
		}
		hist = append(hist, c)
		n := int(window / step)
		if len(hist) > n && c-hist[len(hist)-1-n] < window/20 {
			return time.Since(start), c - first, true
		}
	}
	c, _ := cpuTime(pid)
	return time.Since(start), c - first, false
}

// goMemStats scrapes a few Go runtime figures from the admin API's metrics
// (0 when unavailable).
func (in *instance) goMemStats() map[string]float64 {
	out := map[string]float64{}
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + in.admin + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	s := bufio.NewScanner(resp.Body)
	s.Buffer(make([]byte, 1<<16), 1<<20)
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) != 2 {
			continue
		}
		switch f[0] {
		case "go_memstats_heap_inuse_bytes", "go_memstats_heap_alloc_bytes", "go_memstats_sys_bytes", "go_goroutines",
			"go_memstats_last_gc_time_seconds", "go_memstats_next_gc_bytes":
			v, _ := strconv.ParseFloat(f[1], 64)
			out[f[0]] = v
		}
	}
	io.Copy(io.Discard, resp.Body)
	return out
}

// client is one kind of TLS client.
type client struct {
	label string
	rsa   bool // an RSA-only TLS 1.2 client; otherwise a default (ECDSA-capable) one
}

var clients = []client{{label: "ecdsa"}, {label: "rsa-tls12", rsa: true}}

// handshake connects to addr as name and checks the certificate it gets:
// for name, chained to roots (unless roots is nil), of the key type the
// client asked for.
func handshake(ctx context.Context, addr, name string, c client, roots *x509.CertPool) (time.Duration, error) {
	conf := &tls.Config{ServerName: name, RootCAs: roots, MinVersion: tls.VersionTLS12, InsecureSkipVerify: roots == nil}
	if c.rsa {
		conf.MaxVersion = tls.VersionTLS12
		conf.CipherSuites = []uint16{
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	t0 := time.Now()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, err
	}
	defer raw.Close()
	conn := tls.Client(raw, conf)
	if err := conn.HandshakeContext(ctx); err != nil {
		return 0, err
	}
	took := time.Since(t0)
	leaf := conn.ConnectionState().PeerCertificates[0]
	want := x509.ECDSA
	if c.rsa {
		want = x509.RSA
	}
	if err := leaf.VerifyHostname(name); err != nil {
		return took, err
	}
	if leaf.PublicKeyAlgorithm != want {
		return took, fmt.Errorf("%s client got a %v certificate", c.label, leaf.PublicKeyAlgorithm)
	}
	conn.Close()
	return took, nil
}

// untilServed retries a handshake until it succeeds, and returns when it did
// (since start), or an error when in exits or ctx ends. It waits at least
// interval between attempts, and ten times as long as the last failed attempt
// took: a handshake for a name Portico does not hold yet costs it work in
// proportion to the certificates it holds (certmagic hands every cached
// certificate to Portico's selector), so eager polling would slow the very
// start-up it measures. Once wake is closed, it retries at once and then every
// interval.
func untilServed(ctx context.Context, in *instance, name string, c client, roots *x509.CertPool, interval time.Duration, wake <-chan struct{}) (time.Duration, error) {
	var last error
	for {
		t0 := time.Now()
		_, err := handshake(ctx, in.https, name, c, roots)
		if err == nil {
			return time.Since(in.start), nil
		}
		last = err
		select {
		case <-in.exited:
			return 0, fmt.Errorf("portico exited; last handshake error: %v", last)
		case <-ctx.Done():
			return 0, errors.Join(ctx.Err(), last)
		case <-wake:
			wake = nil
		case <-time.After(max(interval, 10*time.Since(t0))):
		}
	}
}
