package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// measure starts Portico on the populated storage with all names and takes
// the figures of the table.
func (r *run) measure(ctx context.Context, storageConf string, names []string, roots *x509.CertPool, base *instance) error {
	httpPort, httpsPort, adminPort, err := ports()
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(r.dir, "portico.toml")
	r.cfgPath = cfgPath
	if err := writeConfig(cfgPath, storageConf, names, httpPort, httpsPort, adminPort); err != nil {
		return err
	}
	// names to time first handshakes for, and names to sample; the last
	// name is polled from the start
	last := names[len(names)-1]
	perm := rand.Perm(len(names) - 1)
	firstNames := pick(names, perm, 0, r.fresh)
	sampleNames := pick(names, perm, r.fresh, r.samples)

	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(os.Stderr, "  starting portico with %d hosts (load average %s)\n", len(names), strings.Join(strings.Fields(string(load))[:3], " "))
	var redisCPU0 time.Duration
	if r.redisPID > 0 {
		redisCPU0, _ = cpuTime(r.redisPID)
	}
	in, err := startPortico(r.portico, cfgPath, filepath.Join(r.dir, "portico.log"), httpsPort, adminPort)
	if err != nil {
		return err
	}
	defer in.stop()
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()

	// (b) poll the last name from the start, with each client in turn
	type polled struct {
		at  time.Duration
		err error
	}
	lastCh := make(chan polled, 1)
	managed := make(chan struct{})
	go func() {
		if !r.poll {
			<-managed
		}
		var p polled
		for _, c := range clients {
			at, err := untilServed(ctx, in, last, c, roots, 20*time.Millisecond, managed)
			if err != nil {
				p = polled{err: fmt.Errorf("last name %s, %s client: %w", last, c.label, err)}
				break
			}
			p.at = at
		}
		lastCh <- p
	}()

	// (a) every stored name is servable from the "loading stored
	// certificates" line on: a name not loaded yet is loaded by its first
	// handshake. Time first handshakes of names from the end of the list,
	// which the start-up load reaches last.
	ev, err := in.waitFor(loadingMsg, r.timeout, "names managed")
	if err != nil {
		close(managed)
		<-lastCh
		return r.explain(in, err)
	}
	r.servable = ev.at
	if ev.msg != loadingMsg {
		// a Portico that loads everything before serving it: servable
		// when the last name is
		r.servable = -1
	}
	for i, name := range lazyNames(names, r.lazy) {
		if r.servable < 0 {
			break
		}
		c := clients[i%len(clients)]
		d, err := handshake(ctx, in.https, name, c, roots)
		if err != nil {
			r.failures = append(r.failures, fmt.Sprintf("first handshake during the load %s (%s): %v", name, c.label, err))
			continue
		}
		if _, done := in.event("names managed"); done {
			r.lazyLate++ // the load may have reached it: not counted
			continue
		}
		r.lazies = append(r.lazies, d)
	}

	// (a') "names managed": everything stored is in the cache
	ev, err = in.waitFor("names managed", r.timeout)
	if err != nil {
		close(managed)
		<-lastCh
		return r.explain(in, err)
	}
	r.managed = ev.at
	close(managed)
	r.cpuManaged, _ = cpuTime(in.cmd.Process.Pid)
	if r.redisPID > 0 {
		c, _ := cpuTime(r.redisPID)
		r.redisCPU = c - redisCPU0
	}
	r.rssManaged, _, _ = memory(in.cmd.Process.Pid)
	p := <-lastCh
	if p.err != nil {
		return r.explain(in, p.err)
	}
	r.lastServed = p.at
	if r.servable < 0 {
		r.servable = r.lastServed
	}

	// (d) first handshakes of names not used yet, right after start
	for _, name := range firstNames {
		for _, c := range clients {
			d, err := handshake(ctx, in.https, name, c, roots)
			if err != nil {
				r.failures = append(r.failures, fmt.Sprintf("first handshake %s (%s): %v", name, c.label, err))
				continue
			}
			r.firsts = append(r.firsts, d)
		}
	}
	// (b) the sample: every name must get its own certificate now
	for _, name := range sampleNames {
		for _, c := range clients {
			d, err := handshake(ctx, in.https, name, c, roots)
			if err != nil {
				r.failures = append(r.failures, fmt.Sprintf("sample %s (%s): %v", name, c.label, err))
				continue
			}
			r.handshakes = append(r.handshakes, d)
		}
	}
	r.sampleServed = time.Since(in.start)

	// (c) memory once loaded and the background work after Apply (the
	// scheduler's first pass) is done
	waited, used, idle := waitIdle(in.cmd.Process.Pid, 2*time.Minute)
	r.idleAt = time.Since(in.start)
	if !idle {
		fmt.Fprintf(os.Stderr, "  portico still busy %v after the sample\n", waited.Round(time.Millisecond))
	}
	r.busyAfterSample = used
	r.rss, r.hwm, err = memory(in.cmd.Process.Pid)
	if err != nil {
		return err
	}
	t0 := time.Now()
	r.stats = in.goMemStats()
	fmt.Fprintf(os.Stderr, "  one GET /metrics took %v\n", time.Since(t0).Round(time.Millisecond))
	if r.steady > 0 {
		r.measureSteady(in, base)
	}

	// last, as they allocate in proportion to the cached certificates:
	// handshakes for names Portico does not serve, which must fail
	for i := range 5 {
		name := fmt.Sprintf("unknown%d.scale.test", i)
		t0 := time.Now()
		_, err := handshake(ctx, in.https, name, clients[i%2], roots)
		if err == nil {
			r.failures = append(r.failures, fmt.Sprintf("unknown name %s was served a certificate", name))
		}
		r.unknown = append(r.unknown, time.Since(t0))
	}

	// where the start-up went, from the log's own timestamps
	for _, msg := range []string{"portico started", "storage reachable", "local CA root: trust this certificate in clients",
		"local CA root is in storage; export it with `portico certs -root`", loadingMsg, "names managed"} {
		if ev, ok := in.event(msg); ok {
			fmt.Fprintf(os.Stderr, "  log %-68.68q at %7.3fs (read at %7.3fs)\n", msg, ev.ts.Seconds(), ev.at.Seconds())
		}
	}
	r.report(os.Stderr, in)
	return nil
}

// loadingMsg is the log line after which every stored name is servable.
const loadingMsg = "loading stored certificates; until a name is loaded, its first handshake loads it"

// lazyNames picks n names spread over the last tenth of names (the last one
// excepted: it is polled), latest first.
func lazyNames(names []string, n int) []string {
	tail := len(names) / 10
	if n <= 0 || tail < 2 {
		return nil
	}
	n = min(n, tail-1)
	step := max((tail-1)/n, 1)
	var out []string
	for i := range n {
		out = append(out, names[len(names)-2-i*step])
	}
	return out
}

func pick(names []string, perm []int, from, n int) []string {
	var out []string
	for i := from; i < len(perm) && len(out) < n; i++ {
		out = append(out, names[perm[i]])
	}
	return out
}

// explain adds what Portico logged to err.
func (r *run) explain(in *instance, err error) error {
	w := in.warnings()
	if len(w) > 10 {
		w = append(w[:10], fmt.Sprintf("... and %d more", len(w)-10))
	}
	if len(w) == 0 {
		return fmt.Errorf("%w (no warnings logged; its log is %s, kept with -keep)", err, filepath.Join(r.dir, "portico.log"))
	}
	return fmt.Errorf("%w; Portico logged:\n  %s", err, strings.Join(w, "\n  "))
}

// measureSteady waits r.steady with both Portico processes idle (the Go
// runtime forces a GC after two minutes without one) and reads their memory
// again. Nothing is scraped meanwhile: a /metrics scrape runs Status for every
// certificate, whose garbage would start GCs and blur the figures.
func (r *run) measureSteady(in, base *instance) {
	since := float64(time.Now().UnixNano()) / 1e9
	fmt.Fprintf(os.Stderr, "  waiting %v for the runtime's forced GC in both processes\n", r.steady)
	time.Sleep(r.steady)
	r.steadyRSS, _, _ = memory(in.cmd.Process.Pid)
	r.steadyBaseRSS, _, _ = memory(base.cmd.Process.Pid)
	r.steadyStats, r.steadyBaseStats = in.goMemStats(), base.goMemStats()
	for _, st := range []map[string]float64{r.steadyStats, r.steadyBaseStats} {
		if st["go_memstats_last_gc_time_seconds"] < since {
			fmt.Fprintf(os.Stderr, "  no GC in a process during the wait: its live heap figure includes garbage (use a longer -steady)\n")
		}
	}
}

// report prints the details behind the table row.
func (r *run) report(w io.Writer, in *instance) {
	own := float64(r.pop.ownBytes) / float64(r.pop.certs)
	certs := float64(2 * r.n)
	fmt.Fprintf(w, "  CPU time used by portico until \"names managed\": %v (%.0f µs per certificate)\n",
		r.cpuManaged, float64(r.cpuManaged.Microseconds())/float64(2*r.n))
	if r.redisPID > 0 {
		fmt.Fprintf(w, "  CPU time used by redis-server meanwhile: %v\n", r.redisCPU)
	}
	fmt.Fprintf(w, "  idle (< 5%% CPU over 0.5 s) at %.2fs after start; CPU used from the end of the sample until then: %v\n",
		r.idleAt.Seconds(), r.busyAfterSample)
	fmt.Fprintf(w, "  VmRSS at \"names managed\" %s; once idle %s; baseline (idle) %s\n", mib(r.rssManaged), mib(r.rss), mib(r.baseRSS))
	fmt.Fprintf(w, "  own bytes per certificate (leaf DER + key DER): %.0f B\n", own)
	fmt.Fprintf(w, "  RSS per certificate: %.0f B, of which %.0f B beyond its own bytes\n",
		float64(r.rss-r.baseRSS)/certs, float64(r.rss-r.baseRSS)/certs-own)
	if hi, bi := r.stats["go_memstats_heap_inuse_bytes"], r.baseStats["go_memstats_heap_inuse_bytes"]; hi > 0 && bi > 0 {
		fmt.Fprintf(w, "  Go heap in use %s (baseline %s): %.0f B per certificate, %.0f B beyond its own bytes; goroutines %.0f\n",
			mib(int64(hi)), mib(int64(bi)), (hi-bi)/certs, (hi-bi)/certs-own, r.stats["go_goroutines"])
	}
	if g, bg := r.stats["go_memstats_next_gc_bytes"], r.baseStats["go_memstats_next_gc_bytes"]; g > 0 && bg > 0 {
		// the heap grows to its goal between collections under traffic:
		// what RSS approaches once the server allocates, whatever it was
		// right after the start
		fmt.Fprintf(w, "  GC heap goal %s (baseline %s): %.0f B per certificate beyond its own bytes (RSS under traffic approaches the goal)\n",
			mib(int64(g)), mib(int64(bg)), (g-bg)/certs-own)
	}
	if r.steadyRSS > 0 {
		a, b := r.steadyStats, r.steadyBaseStats
		fmt.Fprintf(w, "  steady (after a GC): VmRSS %s (baseline %s): %.0f B per certificate beyond its own bytes\n",
			mib(r.steadyRSS), mib(r.steadyBaseRSS), float64(r.steadyRSS-r.steadyBaseRSS)/certs-own)
		fmt.Fprintf(w, "  steady: Go heap alloc %s (baseline %s): %.0f B per certificate beyond its own bytes; heap in use %s (baseline %s)\n",
			mib(int64(a["go_memstats_heap_alloc_bytes"])), mib(int64(b["go_memstats_heap_alloc_bytes"])),
			(a["go_memstats_heap_alloc_bytes"]-b["go_memstats_heap_alloc_bytes"])/certs-own,
			mib(int64(a["go_memstats_heap_inuse_bytes"])), mib(int64(b["go_memstats_heap_inuse_bytes"])))
	}
	fmt.Fprintf(w, "  sample: %d handshakes ok, p50 %s max %s; first handshakes after start: %d ok, p50 %s max %s, %d over 50 ms\n",
		len(r.handshakes), ms(pct(r.handshakes, 50)), ms(pct(r.handshakes, 100)),
		len(r.firsts), ms(pct(r.firsts, 50)), ms(pct(r.firsts, 100)), over(r.firsts, 50*time.Millisecond))
	fmt.Fprintf(w, "  every stored name servable at %.2fs (last name served at %.2fs); all loaded (\"names managed\") at %.2fs\n",
		r.servable.Seconds(), r.lastServed.Seconds(), r.managed.Seconds())
	fmt.Fprintf(w, "  first handshakes of names not loaded yet (during the start-up load): %d, p50 %s max %s ms, %d over 50 ms; %d more ended after the load and are not counted\n",
		len(r.lazies), ms(pct(r.lazies, 50)), ms(pct(r.lazies, 100)), over(r.lazies, 50*time.Millisecond), r.lazyLate)
	fmt.Fprintf(w, "  handshakes for names not served (refused, as they must be): p50 %s max %s ms\n",
		ms(pct(r.unknown, 50)), ms(pct(r.unknown, 100)))
	if len(r.failures) > 0 {
		fmt.Fprintf(w, "  %d FAILED handshakes:\n", len(r.failures))
		for i, f := range r.failures {
			if i == 10 {
				fmt.Fprintf(w, "    ... and %d more\n", len(r.failures)-10)
				break
			}
			fmt.Fprintf(w, "    %s\n", f)
		}
	}
	if ws := in.warnings(); len(ws) > 0 {
		fmt.Fprintf(w, "  Portico logged %d warnings/errors, the first:\n", len(ws))
		for i, l := range ws {
			if i == 5 {
				break
			}
			fmt.Fprintf(w, "    %s\n", l)
		}
	}
}

// row is this run's line of the table, tab-separated.
func (r *run) row() string {
	own := float64(r.pop.ownBytes) / float64(r.pop.certs)
	beyond := (float64(r.rss-r.baseRSS)/float64(2*r.n) - own) / 1024
	steady := "-"
	if r.steadyRSS > 0 {
		live := r.steadyStats["go_memstats_heap_alloc_bytes"] - r.steadyBaseStats["go_memstats_heap_alloc_bytes"]
		steady = fmt.Sprintf("%.1f", (live/float64(2*r.n)-own)/1024)
	}
	fails := "0"
	if len(r.failures) > 0 {
		fails = strconv.Itoa(len(r.failures))
	}
	backend := r.backend
	if r.pairs {
		backend += "+pairs"
	}
	return strings.Join([]string{
		backend,
		strconv.Itoa(r.n),
		secs(r.pop.elapsed),
		secs(r.servable),
		fmt.Sprintf("%s/%s (%d)", ms(pct(r.lazies, 50)), ms(pct(r.lazies, 100)), len(r.lazies)),
		secs(r.managed),
		secs(r.cpuManaged),
		secs(r.lastServed),
		secs(r.sampleServed),
		mib(r.rss),
		mib(r.hwm),
		fmt.Sprintf("%.1f", beyond),
		steady,
		fmt.Sprintf("%s/%s", ms(pct(r.handshakes, 50)), ms(pct(r.handshakes, 100))),
		fmt.Sprintf("%s/%s", ms(pct(r.firsts, 50)), ms(pct(r.firsts, 100))),
		ms(pct(r.unknown, 50)),
		fails,
	}, "\t")
}

var header = []string{"backend", "N", "populate", "all servable", "not-loaded first hs p50/max ms (n)", "names managed", "CPU until then", "last name served", "sample served",
	"VmRSS", "VmHWM", "KiB/cert beyond own", "live heap KiB/cert beyond own", "handshake p50/max ms", "first hs p50/max ms", "unknown-name hs ms", "failed"}

func printTable(w io.Writer, rows []string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		if strings.TrimSpace(r) != "" {
			fmt.Fprintln(tw, r)
		}
	}
	tw.Flush()
}

func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := min(len(s)*p/100, len(s)-1)
	return s[i]
}

func over(ds []time.Duration, limit time.Duration) int {
	n := 0
	for _, d := range ds {
		if d > limit {
			n++
		}
	}
	return n
}

func ms(d time.Duration) string   { return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)) }
func secs(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }
func mib(b int64) string          { return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20)) }
