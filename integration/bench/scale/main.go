// Command scale measures Portico's start-up with N certificates already in
// storage, for the file and the Redis backend, and the memory each cached
// certificate costs.
//
// It fills a storage as Portico's local CA (ca = "local", key types
// ["rsa2048", "p256"]) would have left it — a root under localca/ and, for
// each of N names, an RSA-2048 and an ECDSA P-256 certificate under
// certificates-<keytype>/local/<name>/ — then starts the portico binary with
// one site holding all N names and measures:
//
//   - the time until every stored name is servable: the log line "loading
//     stored certificates" (from then on, a name the start-up load has not
//     reached yet is loaded by its first handshake), checked by polling the
//     last name from the start,
//   - how long those first handshakes take: names from the end of the list
//     (the start-up load goes in order) are asked for right after that line,
//     and only handshakes that ended before "names managed" count,
//   - the time to the log line "names managed" (every stored certificate is
//     in the cache), and the CPU time Portico (and redis-server) used until
//     then, which depends less on what else the machine runs,
//   - the time until the last name, then a random sample of names, are served
//     their own certificate to an ECDSA-capable client and to an RSA-only
//     TLS 1.2 client,
//   - VmRSS and VmHWM, and the memory per cached certificate beyond the
//     certificate's own bytes (leaf DER + key DER), against the same binary
//     started on an empty storage with one host,
//   - how long first handshakes for names not used yet take after start,
//   - how long a handshake for a name Portico does not serve takes to be
//     refused (it grows with the number of cached certificates).
//
// With -steady it also waits for the runtime's forced GC and reads the live
// heap, which RSS overstates by the GC's headroom; with -profile it loads the
// same storage in-process and writes CPU and heap profiles.
//
// integration/bench/scale.sh builds Portico and this program and runs both
// backends. By hand:
//
//	go build -o /tmp/portico ./cmd/portico
//	go run ./integration/bench/scale -portico /tmp/portico -n 10000 -backend file
package main

import (
	"context"
	"crypto/x509"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"

	redisstorage "github.com/portico-proxy/portico/tlsmgr/storage/redis"
)

func main() {
	var (
		n         = flag.Int("n", 10000, "number of names (each gets an RSA and an ECDSA certificate)")
		backend   = flag.String("backend", "file", "storage backend: file or redis")
		bin       = flag.String("portico", "", "path to the portico binary (required)")
		keep      = flag.Bool("keep", false, "keep the temporary directory (storage, configs, logs)")
		redisURL  = flag.String("redis-url", "", "Redis URL, with -backend redis")
		redisPID  = flag.Int("redis-pid", 0, "redis-server's pid, to report the CPU time it spends on Portico's start-up")
		samples   = flag.Int("sample", 200, "random names to check after start")
		fresh     = flag.Int("first", 10, "names not used yet whose first handshake is timed")
		lazy      = flag.Int("lazy", 20, "names not loaded yet whose first handshake is timed during the start-up load")
		pairs     = flag.Bool("pairs", false, "store each certificate with its key as one .pair value too, as Portico writes them (default: the older layout, .key, .crt and .json only)")
		workers   = flag.Int("workers", 16, "concurrent writers while populating")
		timeout   = flag.Duration("timeout", 10*time.Minute, "give up on Portico's start-up after this long")
		results   = flag.String("results", "", "append this run's table row to this file (TSV)")
		summarize = flag.String("summarize", "", "print the table of the rows in this file and exit")
		freePort  = flag.Bool("free-port", false, "print a free loopback TCP port and exit")
		steady    = flag.Duration("steady", 0, "also wait this long idle (the runtime forces a GC after 2 idle minutes: use 130s or more), then read RSS and the live heap")
		poll      = flag.Bool("poll", true, "poll the last name during start-up (every miss costs Portico work in proportion to the certificates it holds, so polls back off)")
		profile   = flag.String("profile", "", "afterwards, load the same storage in-process into tlsmgr and write CPU and heap profiles to DIR/<backend>-<n>")
	)
	flag.Parse()
	switch {
	case *freePort:
		p, err := pickPort()
		if err != nil {
			fatal(err)
		}
		fmt.Println(p)
		return
	case *summarize != "":
		data, err := os.ReadFile(*summarize)
		if err != nil {
			fatal(err)
		}
		printTable(os.Stdout, strings.Split(strings.TrimSpace(string(data)), "\n"))
		return
	}
	if *bin == "" {
		fatal(fmt.Errorf("-portico is required"))
	}
	if *backend != "file" && *backend != "redis" {
		fatal(fmt.Errorf("-backend %q: use file or redis", *backend))
	}
	if *backend == "redis" && *redisURL == "" {
		fatal(fmt.Errorf("-backend redis needs -redis-url"))
	}
	if *n < 2 {
		fatal(fmt.Errorf("-n must be at least 2"))
	}
	portico, err := filepath.Abs(*bin)
	if err != nil {
		fatal(err)
	}
	r := &run{n: *n, backend: *backend, portico: portico, redisURL: *redisURL,
		samples: *samples, fresh: *fresh, lazy: *lazy, pairs: *pairs, workers: *workers, timeout: *timeout,
		steady: *steady, redisPID: *redisPID, poll: *poll}
	if *profile != "" {
		r.profileDir = filepath.Join(*profile, fmt.Sprintf("%s-%d", *backend, *n))
	}
	r.dir, err = os.MkdirTemp("", "portico-scale-")
	if err != nil {
		fatal(err)
	}
	err = r.main()
	if *keep {
		fmt.Fprintf(os.Stderr, "kept %s\n", r.dir)
	} else {
		os.RemoveAll(r.dir)
	}
	if err != nil {
		fatal(err)
	}
	row := r.row()
	printTable(os.Stdout, []string{row})
	if *results != "" {
		f, err := os.OpenFile(*results, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			fatal(err)
		}
		fmt.Fprintln(f, row)
		f.Close()
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "scale:", err)
	os.Exit(1)
}

// run is one measurement: a backend and N.
type run struct {
	n        int
	backend  string
	portico  string
	redisURL string
	samples  int
	fresh    int
	lazy     int
	pairs    bool
	workers  int
	timeout  time.Duration
	dir      string
	prefix   string // Redis key prefix of this run
	steady   time.Duration
	cfgPath  string // the measured start's config
	redisPID int
	poll     bool

	profileDir string

	pop *populated

	// the baseline: empty storage, one host
	baseRSS, baseHWM int64
	baseStats        map[string]float64

	// the measured start
	servable                          time.Duration // the "loading stored certificates" line
	managed, lastServed, sampleServed time.Duration
	lazies                            []time.Duration // first handshakes that loaded their name
	lazyLate                          int             // lazy handshakes that ended after "names managed"
	rss, hwm, rssManaged              int64
	stats                             map[string]float64
	idleAt, busyAfterSample           time.Duration
	cpuManaged, redisCPU              time.Duration
	steadyRSS, steadyBaseRSS          int64
	steadyStats, steadyBaseStats      map[string]float64
	handshakes, firsts, unknown       []time.Duration
	failures                          []string
}

func (r *run) main() error {
	ctx := context.Background()
	names := make([]string, r.n)
	for i := range names {
		names[i] = fmt.Sprintf("s%06d.scale.test", i)
	}
	r.prefix = fmt.Sprintf("scale-%d-%d", r.n, time.Now().Unix())

	// 1. populate
	st, storageConf, err := r.openStorage(ctx, r.prefix, filepath.Join(r.dir, "data"))
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "%s N=%d: populating %d certificates in %v\n", r.backend, r.n, 2*r.n, st)
	r.pop, err = populate(ctx, st, names, r.workers, r.pairs)
	if c, ok := st.(interface{ Close() error }); ok {
		c.Close()
	}
	if err != nil {
		return fmt.Errorf("populate: %w", err)
	}
	fmt.Fprintf(os.Stderr, "  populated %d certificates in %v (%.0f B own bytes each)\n",
		r.pop.certs, r.pop.elapsed.Round(time.Millisecond), float64(r.pop.ownBytes)/float64(r.pop.certs))
	roots := x509.NewCertPool()
	roots.AddCert(r.pop.root)

	// 2. the baseline: same binary, same config shape, one host, empty storage
	_, baseConf, err := r.openStorage(ctx, r.prefix+"-base", filepath.Join(r.dir, "base-data"))
	if err != nil {
		return err
	}
	base, err := r.baseline(ctx, baseConf)
	if base != nil {
		// kept running (idle) for the steady-state figures
		defer base.stop()
	}
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}

	// 3. the measured start
	if err := r.measure(ctx, storageConf, names, roots, base); err != nil {
		return err
	}
	if r.profileDir != "" {
		return r.profile(ctx)
	}
	return nil
}

// openStorage opens the backend for populating and returns the [storage]
// lines of a Portico config that reads the same data.
func (r *run) openStorage(ctx context.Context, prefix, path string) (certmagic.Storage, string, error) {
	if r.backend == "file" {
		return &certmagic.FileStorage{Path: path}, fmt.Sprintf("backend = \"file\"\npath = %q", path), nil
	}
	st, err := redisstorage.New(redisstorage.Options{URL: r.redisURL, Prefix: prefix})
	if err != nil {
		return nil, "", err
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err = st.Ping(pctx)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			st.Close()
			return nil, "", err
		}
		time.Sleep(200 * time.Millisecond)
	}
	return st, fmt.Sprintf("backend = \"redis\"\nredis_url = %q\nprefix = %q", r.redisURL, prefix), nil
}

func ports() (httpPort, httpsPort, adminPort int, err error) {
	var ps []int
	for range 3 {
		p, err := pickPort()
		if err != nil {
			return 0, 0, 0, err
		}
		ps = append(ps, p)
	}
	return ps[0], ps[1], ps[2], nil
}

func pickPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// baseline starts Portico on an empty storage with one host, waits until it
// has issued and serves that host's two certificates, and reads its memory.
func (r *run) baseline(ctx context.Context, storageConf string) (*instance, error) {
	httpPort, httpsPort, adminPort, err := ports()
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(r.dir, "base.toml")
	const host = "base.scale.test"
	if err := writeConfig(cfgPath, storageConf, []string{host}, httpPort, httpsPort, adminPort); err != nil {
		return nil, err
	}
	in, err := startPortico(r.portico, cfgPath, filepath.Join(r.dir, "base.log"), httpsPort, adminPort)
	if err != nil {
		return nil, err
	}
	if _, err := in.waitFor("names managed", time.Minute); err != nil {
		return in, r.explain(in, err)
	}
	// Portico makes its own root and issues the host's two certificates in
	// the background: wait until both are served (nil roots: not verified)
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for _, c := range clients {
		if _, err := untilServed(ctx, in, host, c, nil, 50*time.Millisecond, nil); err != nil {
			return in, r.explain(in, fmt.Errorf("%s: %w", c.label, err))
		}
	}
	waitIdle(in.cmd.Process.Pid, time.Minute)
	r.baseRSS, r.baseHWM, err = memory(in.cmd.Process.Pid)
	if err != nil {
		return in, err
	}
	r.baseStats = in.goMemStats()
	fmt.Fprintf(os.Stderr, "  baseline (empty storage, 1 host): VmRSS %s, VmHWM %s, heap in use %s\n",
		mib(r.baseRSS), mib(r.baseHWM), mib(int64(r.baseStats["go_memstats_heap_inuse_bytes"])))
	return in, nil
}
