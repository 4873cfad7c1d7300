// Command soak runs Portico under mixed traffic for a while and checks that
// nothing fails on healthy upstreams and that its goroutines and memory stay
// flat.
//
// It starts its own upstreams on 127.0.0.1 — two healthy HTTP/1.1 upstreams
// answering 1 KiB, with a WebSocket echo at /ws, and one that listens for 5 s
// and is gone for 5 s, over and over — writes a config (local CA; site
// soak.test on the two healthy upstreams, site flap.test on the flapping one),
// starts the portico binary, trusts its local root, and for -duration runs:
//
//   - 8 keep-alive HTTPS clients on soak.test, 6 over HTTP/1.1 and 2 over h2,
//   - 2 clients opening a new connection with a full TLS handshake per
//     request (no keep-alive, no session cache),
//   - 2 WebSocket loops through Portico (wss://soak.test/ws) checking each
//     echo: one keeps its connection for the whole run, one reconnects every
//     100 round trips,
//   - 1 client on flap.test, whose errors are expected and only counted,
//   - a reload every 30 s: the config rewritten alternately with and without
//     a respond-only site extra.test, then SIGHUP, then the log line
//     "config reloaded" with the right number of sites awaited.
//
// Every 10 s it reads Portico's goroutine count (go_goroutines from the admin
// API's /metrics), its RSS (VmRSS) and open files, prints a line and keeps
// the sample (samples.csv in -out, with Portico's log portico.log). At the
// end it prints the totals and a verdict, and exits 1 when a request to the
// healthy site failed, a reload was not confirmed, a sample could not be
// taken, Portico did not stop cleanly on SIGTERM, or goroutines or RSS grew:
// after the warm-up (the first minute, or a quarter of a shorter run), the
// last sample must be at most 1.2 × the first + 20 goroutines, and
// 1.2 × the first + 16 MiB of RSS.
//
// integration/bench/soak.sh builds Portico and this program and runs them
// (DURATION=10m by default). By hand:
//
//	go build -o /tmp/portico ./cmd/portico
//	go run ./integration/bench/soak -portico /tmp/portico -duration 10m -out /tmp/soak
package main

import (
	"context"
	"crypto/x509"
	"encoding/csv"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

const (
	sampleEvery = 10 * time.Second
	reloadEvery = 30 * time.Second
	flapPeriod  = 5 * time.Second

	keepAliveClients = 8 // of which h2Clients speak h2
	h2Clients        = 2
	handshakeClients = 2
	wsReconnectEvery = 100 // round trips per connection of the reconnecting websocket loop

	// flat: last ≤ first × growthFactor + slack, after the warm-up
	growthFactor    = 1.2
	goroutineSlack  = 20
	rssSlackMiB     = 16.0
	defaultWarmUp   = time.Minute
	startupTimeout  = 60 * time.Second
	reloadConfirmIn = 10 * time.Second
)

func main() {
	os.Exit(run())
}

func run() int {
	var (
		bin      = flag.String("portico", "", "path to the portico binary (required)")
		duration = flag.Duration("duration", 10*time.Minute, "how long the traffic runs")
		out      = flag.String("out", "soak-out", "folder for samples.csv and portico.log")
		pause    = flag.Duration("pause", 10*time.Millisecond, "pause between two requests of one client (0: as fast as it can)")
		warmUp   = flag.Duration("warmup", defaultWarmUp, "samples before this are not judged for flatness (at most a quarter of -duration)")
	)
	flag.Parse()
	if *bin == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: soak -portico PATH [-duration 10m] [-out DIR]")
		flag.PrintDefaults()
		return 2
	}
	if *duration < 2*sampleEvery {
		fmt.Fprintf(os.Stderr, "soak: -duration %v is too short to judge anything (at least %v)\n", *duration, 2*sampleEvery)
		return 2
	}
	judgeFrom := *warmUp
	if judgeFrom > *duration/4 {
		judgeFrom = *duration / 4
		fmt.Printf("warm-up shortened to %v (a quarter of -duration %v)\n", judgeFrom, *duration)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if err := os.MkdirAll(*out, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 1
	}
	tmp, err := os.MkdirTemp("", "portico-soak-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 1
	}
	defer os.RemoveAll(tmp)

	s := &soak{bin: *bin, out: *out, tmp: tmp, duration: *duration, pause: *pause, judgeFrom: judgeFrom}
	defer s.cleanup()
	if err := s.setUp(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "soak: setting up:", err)
		s.printProblems()
		return 1
	}
	s.runLoad(ctx)
	return s.report()
}

// soak is one run.
type soak struct {
	bin, out, tmp string
	duration      time.Duration
	pause         time.Duration
	judgeFrom     time.Duration

	ups     []*healthy
	flapper *flapper
	cfgPath string
	cfg     siteConfig
	p       *portico
	t       target
	st      stats

	samples     []sample
	stopErr     error
	interrupted bool
}

func (s *soak) setUp(ctx context.Context) error {
	for _, name := range []string{"a", "b"} {
		h, err := startHealthy(name)
		if err != nil {
			return err
		}
		s.ups = append(s.ups, h)
	}
	f, err := startFlapper(flapPeriod)
	if err != nil {
		return err
	}
	s.flapper = f
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	s.cfg = siteConfig{
		httpsAddr: "127.0.0.1:" + strconv.Itoa(ports[0]),
		adminAddr: "127.0.0.1:" + strconv.Itoa(ports[1]),
		storage:   filepath.Join(s.tmp, "data"),
		healthy:   []string{s.ups[0].addr, s.ups[1].addr},
		flap:      f.addr,
	}
	s.cfgPath = filepath.Join(s.tmp, "portico.toml")
	if err := writeConfig(s.cfgPath, s.cfg); err != nil {
		return err
	}
	fmt.Printf("upstreams: healthy %s and %s, flapping %s (%v up, %v down)\n", s.ups[0].addr, s.ups[1].addr, f.addr, flapPeriod, flapPeriod)

	s.p, err = startPortico(s.bin, s.cfgPath, filepath.Join(s.out, "portico.log"), s.cfg.adminAddr)
	if err != nil {
		return err
	}
	fmt.Printf("portico pid %d: https %s, admin %s, log %s\n", s.p.pid(), s.cfg.httpsAddr, s.cfg.adminAddr, filepath.Join(s.out, "portico.log"))
	if err := s.p.waitCount("portico started", 1, startupTimeout); err != nil {
		return err
	}
	const rootMsg = "local CA root: trust this certificate in clients"
	if err := s.p.waitCount(rootMsg, 1, startupTimeout); err != nil {
		return err
	}
	rootPath := s.p.lastLine(rootMsg).str("root_cert")
	if want := filepath.Join(s.cfg.storage, "localca", "root.crt"); rootPath != want {
		return fmt.Errorf("portico logged root_cert %q, want %q (the storage path)", rootPath, want)
	}
	pemBytes, err := os.ReadFile(rootPath)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		return fmt.Errorf("%s holds no PEM certificate", rootPath)
	}
	s.t = target{addr: s.cfg.httpsAddr, port: strconv.Itoa(ports[0]), roots: roots}
	t0 := time.Now()
	for _, host := range []string{soakHost, flapHost} {
		if err := waitServed(ctx, s.t, host, s.p, startupTimeout); err != nil {
			return err
		}
	}
	fmt.Printf("certificates for %s and %s served after %v; local root %s\n", soakHost, flapHost, time.Since(t0).Round(time.Millisecond), rootPath)
	return nil
}

// runLoad runs every loop for the duration, sampling every 10 s.
func (s *soak) runLoad(ctx context.Context) {
	s.st.start = time.Now()
	s.takeSample(0, "before")
	end := s.st.start.Add(s.duration)
	loadCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	start := func(fn func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn()
		}()
	}
	for i := range keepAliveClients {
		k := keepAliveH1
		if i >= keepAliveClients-h2Clients {
			k = keepAliveH2
		}
		start(func() { httpLoop(loadCtx, end, s.pause, s.t, &s.st, k, i) })
	}
	for i := range handshakeClients {
		start(func() { httpLoop(loadCtx, end, s.pause, s.t, &s.st, handshake, i) })
	}
	start(func() { wsLoop(loadCtx, end, s.pause, s.t, &s.st, 0, 0) })
	start(func() { wsLoop(loadCtx, end, s.pause, s.t, &s.st, 1, wsReconnectEvery) })
	start(func() { flapLoop(loadCtx, end, s.pause, s.t, &s.st) })
	start(func() { s.reloadLoop(loadCtx, end) })

	// samples at 10 s, 20 s, … and at the end, while the load runs
	for n := 1; ; n++ {
		at := time.Duration(n) * sampleEvery
		last := at >= s.duration
		if last {
			at = s.duration - 50*time.Millisecond // before the loops see the end
		}
		t := time.NewTimer(time.Until(s.st.start.Add(at)))
		select {
		case <-ctx.Done():
		case <-s.p.exited:
		case <-t.C:
		}
		t.Stop()
		if ctx.Err() != nil {
			s.interrupted = true
			fmt.Println("interrupted: stopping the load")
			break
		}
		if !s.p.alive() {
			s.st.runFailed(fmt.Errorf("portico exited during the run"))
			fmt.Println("portico exited during the run: stopping the load")
			break
		}
		s.takeSample(time.Since(s.st.start), "load")
		if last {
			break
		}
	}
	cancel()
	wg.Wait()
	if s.p.alive() {
		// idle: what the clients' connections held is released
		time.Sleep(3 * time.Second)
		s.takeSample(time.Since(s.st.start), "after")
	}
	s.stopErr = s.p.stop()
}

// reloadLoop rewrites the config every 30 s, alternately with and without
// extra.test, sends SIGHUP and waits for "config reloaded".
func (s *soak) reloadLoop(ctx context.Context, end time.Time) {
	const ok = "config reloaded"
	for n := 1; ; n++ {
		at := s.st.start.Add(time.Duration(n) * reloadEvery)
		if !at.Before(end) {
			return
		}
		t := time.NewTimer(time.Until(at))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		cfg := s.cfg
		cfg.extra = n%2 == 1
		if err := writeConfig(s.cfgPath, cfg); err != nil {
			s.st.reloadFailed(err)
			continue
		}
		before := s.p.count(ok)
		refusedBefore := s.p.count("reload refused: the running config stays")
		t0 := time.Now()
		if err := s.p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			s.st.reloadFailed(err)
			continue
		}
		if err := s.p.waitCount(ok, before+1, reloadConfirmIn); err != nil {
			if s.p.count("reload refused: the running config stays") > refusedBefore {
				err = fmt.Errorf("%w: portico refused the config (see portico.log)", err)
			}
			s.st.reloadFailed(err)
			continue
		}
		line := s.p.lastLine(ok)
		if sites, _ := line["sites"].(float64); int(sites) != cfg.sites() {
			s.st.reloadFailed(fmt.Errorf("config reloaded with %v sites, want %d", line["sites"], cfg.sites()))
			continue
		}
		s.st.reloads.Add(1)
		fmt.Printf("%s reload %d (extra.test %s) confirmed in %v\n", s.st.since(), n,
			map[bool]string{true: "added", false: "removed"}[cfg.extra], time.Since(t0).Round(time.Millisecond))
	}
}

func (s *soak) takeSample(at time.Duration, phase string) {
	sm := s.p.sample(at, phase, s.st.snapshot())
	s.samples = append(s.samples, sm)
	c := sm.counters
	label := fmt.Sprintf("t=%4.0fs", at.Seconds())
	if phase != "load" {
		label = fmt.Sprintf("%-7s", phase)
	}
	fmt.Printf("%s goroutines %4d  rss %6.1f MiB  fds %4d | keep-alive %7d  handshake %6d  ws %6d  flap %5d (%d not ok) | healthy failures %d  reloads %d",
		label, sm.goroutines, sm.rssMiB, sm.fds,
		c.requests[keepAliveH1]+c.requests[keepAliveH2], c.requests[handshake], c.requests[webSocket],
		c.requests[flap], c.flapErrors, c.healthyFailures, c.reloads)
	if sm.err != "" {
		fmt.Printf("  SAMPLE ERROR: %s", sm.err)
	}
	fmt.Println()
}

func (s *soak) cleanup() {
	if s.p != nil {
		s.p.stop()
	}
	for _, h := range s.ups {
		h.close()
	}
	if s.flapper != nil {
		s.flapper.close()
	}
}

func (s *soak) printProblems() {
	if s.p == nil {
		return
	}
	if lines := s.p.problemLines(); len(lines) > 0 {
		fmt.Println("portico's warn and error log lines:")
		for _, l := range lines {
			fmt.Println("  " + l)
		}
	}
}

func (s *soak) writeCSV() error {
	f, err := os.Create(filepath.Join(s.out, "samples.csv"))
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.Write([]string{"elapsed_s", "phase", "goroutines", "rss_mib", "fds",
		"keepalive_h1", "keepalive_h2", "handshake", "ws_roundtrips", "flap_requests",
		"flap_errors", "healthy_failures", "reloads", "error"})
	for _, sm := range s.samples {
		c := sm.counters
		w.Write([]string{
			strconv.FormatFloat(sm.at.Seconds(), 'f', 1, 64), sm.phase,
			strconv.Itoa(sm.goroutines), strconv.FormatFloat(sm.rssMiB, 'f', 1, 64), strconv.Itoa(sm.fds),
			strconv.FormatInt(c.requests[keepAliveH1], 10), strconv.FormatInt(c.requests[keepAliveH2], 10),
			strconv.FormatInt(c.requests[handshake], 10), strconv.FormatInt(c.requests[webSocket], 10),
			strconv.FormatInt(c.requests[flap], 10), strconv.FormatInt(c.flapErrors, 10),
			strconv.FormatInt(c.healthyFailures, 10), strconv.FormatInt(c.reloads, 10), sm.err,
		})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// report prints the totals and the verdict and returns the exit code.
func (s *soak) report() int {
	failed := false
	bad := func(format string, args ...any) {
		failed = true
		fmt.Printf("FAIL: "+format+"\n", args...)
	}
	st := &s.st
	fmt.Println()
	fmt.Printf("== soak summary (%v of traffic, pause %v between a client's requests)\n", s.duration, s.pause)
	fmt.Println("requests per kind (failures on the healthy site):")
	var healthyFailures int64
	for k := range nKinds {
		if k == flap {
			continue
		}
		n, f := st.requests[k].Load(), st.failures[k].Load()
		healthyFailures += f
		fmt.Printf("  %-22s %9d  failed %d  (connections opened %d)\n", kindNames[k], n, f, st.dials[k].Load())
	}
	fmt.Printf("  %-22s %9d  200 %d, 502 %d, other status %d, errors %d  (informational; connections opened %d)\n",
		kindNames[flap], st.requests[flap].Load(), st.flapOK.Load(), st.flap502.Load(), st.flapOther.Load(), st.flapErr.Load(), st.dials[flap].Load())
	fmt.Printf("websocket: %d round trips over %d connections; upstream sockets accepted: a %d, b %d\n",
		st.requests[webSocket].Load()-st.failures[webSocket].Load(), st.wsConns.Load(), s.ups[0].sockets.Load(), s.ups[1].sockets.Load())
	fmt.Printf("healthy upstreams answered: a %d, b %d; the flapping one %d (%d times up, %d down)\n",
		s.ups[0].requests.Load(), s.ups[1].requests.Load(), s.flapper.requests.Load(), s.flapper.ups.Load(), s.flapper.downs.Load())
	if errs := s.flapper.listenErrors(); len(errs) > 0 {
		fmt.Printf("the flapping upstream could not listen again at once %d time(s), e.g. %s\n", len(errs), errs[0])
	}
	if r := st.resumed.Load(); r > 0 {
		bad("%d new-handshake requests resumed a TLS session: they were meant to do full handshakes", r)
	}
	fmt.Printf("reloads confirmed: %d, failed: %d\n", st.reloads.Load(), st.reloadFailures.Load())

	healthyErrs, flapErrs := st.errors()
	if healthyFailures > 0 {
		bad("%d requests to the healthy site failed", healthyFailures)
	}
	if n := st.reloadFailures.Load(); n > 0 {
		bad("%d reloads were not confirmed", n)
	}
	if st.runFailures.Load() > 0 {
		bad("the run was cut short (see the errors below)")
	}
	if len(healthyErrs) > 0 {
		fmt.Println("first errors:")
		for _, e := range healthyErrs {
			fmt.Println("  " + e)
		}
	}
	if len(flapErrs) > 0 {
		fmt.Println("first flap.test errors (expected while it is down):")
		for _, e := range flapErrs {
			fmt.Println("  " + e)
		}
	}
	if healthyFailures == 0 && st.requests[keepAliveH1].Load() == 0 {
		bad("no traffic ran")
	}

	// goroutines and RSS
	var judged []sample
	var before *sample
	for i, sm := range s.samples {
		if sm.err != "" {
			bad("sample at %v: %s", sm.at.Round(time.Second), sm.err)
		}
		switch {
		case sm.phase == "before":
			before = &s.samples[i]
		case sm.phase == "load" && sm.at >= s.judgeFrom && sm.err == "":
			judged = append(judged, sm)
		}
	}
	if before != nil {
		fmt.Printf("before the load: %d goroutines, %.1f MiB RSS, %d open files\n", before.goroutines, before.rssMiB, before.fds)
	}
	if len(judged) < 2 {
		if !s.interrupted {
			bad("fewer than 2 samples after the %v warm-up: cannot judge flatness", s.judgeFrom)
		}
	} else {
		first, last := judged[0], judged[len(judged)-1]
		maxG, maxR, maxF := 0, 0.0, 0
		for _, sm := range judged {
			maxG, maxR, maxF = max(maxG, sm.goroutines), max(maxR, sm.rssMiB), max(maxF, sm.fds)
		}
		gLimit := float64(first.goroutines)*growthFactor + goroutineSlack
		rLimit := first.rssMiB*growthFactor + rssSlackMiB
		fmt.Printf("after the %v warm-up (%d samples, %v to %v):\n", s.judgeFrom, len(judged), first.at.Round(time.Second), last.at.Round(time.Second))
		fmt.Printf("  goroutines: first %d, last %d, max %d (flat: last ≤ %.0f)\n", first.goroutines, last.goroutines, maxG, gLimit)
		fmt.Printf("  RSS:        first %.1f MiB, last %.1f MiB, max %.1f MiB (flat: last ≤ %.1f MiB)\n", first.rssMiB, last.rssMiB, maxR, rLimit)
		fmt.Printf("  open files: first %d, last %d, max %d (informational)\n", first.fds, last.fds, maxF)
		gFlat := float64(last.goroutines) <= gLimit
		rFlat := last.rssMiB <= rLimit
		if gFlat && rFlat {
			fmt.Println("  verdict: flat")
		} else {
			fmt.Println("  verdict: NOT flat")
			if !gFlat {
				bad("goroutines grew from %d to %d", first.goroutines, last.goroutines)
			}
			if !rFlat {
				bad("RSS grew from %.1f MiB to %.1f MiB", first.rssMiB, last.rssMiB)
			}
		}
	}
	if n := len(s.samples); n > 0 && s.samples[n-1].phase == "after" {
		a := s.samples[n-1]
		fmt.Printf("3 s after the load stopped: %d goroutines, %.1f MiB RSS, %d open files (informational)\n", a.goroutines, a.rssMiB, a.fds)
	}

	if s.stopErr != nil {
		bad("%v", s.stopErr)
	} else {
		fmt.Println("portico stopped cleanly on SIGTERM")
	}
	s.printProblems()
	if err := s.writeCSV(); err != nil {
		bad("writing samples.csv: %v", err)
	} else {
		fmt.Printf("samples: %s\n", filepath.Join(s.out, "samples.csv"))
	}
	if s.interrupted {
		bad("interrupted before the end")
	}
	if failed {
		fmt.Println("RESULT: FAIL")
		return 1
	}
	fmt.Println("RESULT: PASS")
	return 0
}
