package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// siteConfig is what the config says besides the fixed parts.
type siteConfig struct {
	httpsAddr, adminAddr string
	storage              string
	healthy              []string // upstream host:port
	flap                 string
	extra                bool // the respond-only site extra.test
}

const (
	soakHost  = "soak.test"
	flapHost  = "flap.test"
	extraHost = "extra.test"
)

func (c siteConfig) sites() int {
	if c.extra {
		return 3
	}
	return 2
}

// writeConfig writes the config to path atomically (a reload never reads a
// half-written file).
func writeConfig(path string, c siteConfig) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# written by integration/bench/soak\n\n")
	fmt.Fprintf(&b, "[acme]\nca = \"local\"\n\n")
	fmt.Fprintf(&b, "[listen]\nhttp = \"\"\nhttps = %q\nadmin = %q\n\n", c.httpsAddr, c.adminAddr)
	fmt.Fprintf(&b, "[storage]\nbackend = \"file\"\npath = %q\n\n", c.storage)
	fmt.Fprintf(&b, "[[site]]\nhosts = [%q]\nupstreams = [", soakHost)
	for i, u := range c.healthy {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q", "http://"+u)
	}
	b.WriteString("]\n\n")
	fmt.Fprintf(&b, "[[site]]\nhosts = [%q]\nupstreams = [%q]\n", flapHost, "http://"+c.flap)
	if c.extra {
		fmt.Fprintf(&b, "\n[[site]]\nhosts = [%q]\nrespond = \"extra\\n\"\n", extraHost)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b.Bytes(), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// portico is the running binary, its JSON log followed.
type portico struct {
	cmd    *exec.Cmd
	admin  string
	exited chan struct{} // closed when its stderr reaches EOF

	stopOnce sync.Once
	stopErr  error

	mu       sync.Mutex
	counts   map[string]int     // log lines per msg
	last     map[string]logLine // the last line of each msg
	problems map[string]*problem
	unparsed []string
}

// problem is a kind of warn or error log line: level, msg and site.
type problem struct {
	count int
	first time.Time
	last  time.Time
	line  string // the first one, shortened
}

type logLine map[string]any

func (l logLine) str(k string) string {
	s, _ := l[k].(string)
	return s
}

func startPortico(bin, cfgPath, logPath, admin string) (*portico, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "run", "-config", cfgPath)
	cmd.Stdout = logFile
	// if this program dies without cleaning up, Portico goes too
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		logFile.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	p := &portico{
		cmd:      cmd,
		admin:    admin,
		exited:   make(chan struct{}),
		counts:   map[string]int{},
		last:     map[string]logLine{},
		problems: map[string]*problem{},
	}
	go p.follow(stderr, logFile)
	return p, nil
}

func (p *portico) follow(r io.Reader, logFile *os.File) {
	defer close(p.exited)
	defer logFile.Close()
	br := bufio.NewReaderSize(r, 1<<20)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			logFile.Write(line)
			p.parse(line)
		}
		if err != nil {
			return
		}
	}
}

func (p *portico) parse(line []byte) {
	var l logLine
	if err := json.Unmarshal(line, &l); err != nil {
		p.mu.Lock()
		if len(p.unparsed) < 20 {
			p.unparsed = append(p.unparsed, shorten(string(line), 300))
		}
		p.mu.Unlock()
		return
	}
	msg := l.str("msg")
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts[msg]++
	p.last[msg] = l
	switch l.str("level") {
	case "warn", "error", "dpanic", "panic", "fatal":
		key := l.str("level") + ": " + msg
		if site := l.str("site"); site != "" {
			key += " (site " + site + ")"
		}
		pr := p.problems[key]
		if pr == nil {
			pr = &problem{first: now, line: shorten(string(line), 400)}
			p.problems[key] = pr
		}
		pr.count++
		pr.last = now
	}
}

// count is how many lines with msg were logged so far.
func (p *portico) count(msg string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[msg]
}

// lastLine is the last line with msg (nil if none).
func (p *portico) lastLine(msg string) logLine {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last[msg]
}

// waitCount waits until at least n lines with msg were logged.
func (p *portico) waitCount(msg string, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for p.count(msg) < n {
		select {
		case <-p.exited:
			if p.count(msg) >= n {
				return nil
			}
			return fmt.Errorf("portico exited before logging %q", msg)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %q log line within %v", msg, timeout)
		}
	}
	return nil
}

func (p *portico) pid() int { return p.cmd.Process.Pid }

func (p *portico) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// problemLines returns the warn and error lines, grouped, most frequent first.
func (p *portico) problemLines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	keys := make([]string, 0, len(p.problems))
	for k := range p.problems {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := p.problems[keys[i]], p.problems[keys[j]]
		if a.count != b.count {
			return a.count > b.count
		}
		return keys[i] < keys[j]
	})
	var out []string
	for _, k := range keys {
		pr := p.problems[k]
		out = append(out, fmt.Sprintf("%6d × %s\n         first: %s", pr.count, k, pr.line))
	}
	for _, u := range p.unparsed {
		out = append(out, "unparsed: "+u)
	}
	return out
}

// stop sends SIGTERM and waits for Portico to drain and exit (killing it
// after 45 s). It returns an error unless Portico exited 0 having logged
// "stopped".
func (p *portico) stop() error {
	p.stopOnce.Do(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(45 * time.Second):
			p.cmd.Process.Kill()
			p.stopErr = fmt.Errorf("portico did not exit within 45 s of SIGTERM; killed")
			<-p.exited
		}
		err := p.cmd.Wait()
		switch {
		case p.stopErr != nil:
		case err != nil:
			p.stopErr = fmt.Errorf("portico exited after SIGTERM: %v", err)
		case p.count("stopped") == 0:
			p.stopErr = fmt.Errorf(`portico exited without logging "stopped"`)
		}
	})
	return p.stopErr
}

// sample is one reading of Portico's footprint with the load counters.
type sample struct {
	at         time.Duration // since the load started (negative: before)
	phase      string        // "before", "load", "after"
	goroutines int           // -1 when unavailable
	rssMiB     float64       // -1 when unavailable
	fds        int           // -1 when unavailable
	counters   snapshot
	err        string
}

// goroutines reads go_goroutines from the admin API's /metrics.
func (p *portico) goroutines() (int, error) {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + p.admin + "/metrics")
	if err != nil {
		return -1, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return -1, fmt.Errorf("/metrics: %s", resp.Status)
	}
	s := bufio.NewScanner(resp.Body)
	s.Buffer(make([]byte, 1<<16), 1<<20)
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) == 2 && f[0] == "go_goroutines" {
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return -1, err
			}
			io.Copy(io.Discard, resp.Body)
			return int(v), nil
		}
	}
	if err := s.Err(); err != nil {
		return -1, err
	}
	return -1, fmt.Errorf("/metrics has no go_goroutines")
}

// rss reads VmRSS from /proc/PID/status, in MiB.
func rss(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return -1, err
			}
			return float64(kb) / 1024, nil
		}
	}
	return -1, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// openFDs counts /proc/PID/fd.
func openFDs(pid int) (int, error) {
	ents, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "fd"))
	if err != nil {
		return -1, err
	}
	return len(ents), nil
}

func (p *portico) sample(at time.Duration, phase string, c snapshot) sample {
	s := sample{at: at, phase: phase, counters: c}
	var errs []string
	var err error
	if s.goroutines, err = p.goroutines(); err != nil {
		errs = append(errs, "goroutines: "+err.Error())
	}
	if s.rssMiB, err = rss(p.pid()); err != nil {
		errs = append(errs, "rss: "+err.Error())
	}
	if s.fds, err = openFDs(p.pid()); err != nil {
		errs = append(errs, "fds: "+err.Error())
	}
	s.err = strings.Join(errs, "; ")
	return s
}

func shorten(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) <= n {
		return s
	}
	return s[:n] + fmt.Sprintf("… (%d bytes)", len(s))
}
