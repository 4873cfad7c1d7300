// Command handshake is the full-handshake generator of
// integration/bench/compare.sh: W workers each dial, do a TLS 1.3 handshake
// with an X25519 key share and no session resumption, close, and start again,
// for a fixed time. It reports handshakes per second and, given the server's
// process ids, the server's CPU time per handshake (utime+stime from
// /proc/PID/stat, before and after).
//
// -sigalgs picks the signature schemes offered, which is how a server with an
// ECDSA and an RSA certificate is made to use one or the other: "ecdsa"
// offers only ECDSA schemes, "rsa" only RSA-PSS ones. The served key type is
// read from each CertificateVerify and counted.
//
//	handshake -addr 127.0.0.1:8443 -sni bench.test -sigalgs rsa -pids 1234 -duration 10s
//	handshake -addr 127.0.0.1:8443 -sni bench.test -sigalgs ecdsa -check
//
// -check does one handshake, verifies the server's signature, sends a GET
// over the connection and prints what was served and the status line.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	var (
		addr     = flag.String("addr", "", "server address host:port (required)")
		sni      = flag.String("sni", "bench.test", "server_name to send (\"\" sends none)")
		sigalgs  = flag.String("sigalgs", "ecdsa", "signature schemes offered: ecdsa (ECDSA only) or rsa (RSA-PSS only)")
		alpn     = flag.String("alpn", "http/1.1", "ALPN protocol to offer (\"\" offers none)")
		workers  = flag.Int("workers", 32, "concurrent workers")
		duration = flag.Duration("duration", 10*time.Second, "how long to run")
		pidList  = flag.String("pids", "", "comma-separated pids of the server's processes, for its CPU time")
		timeout  = flag.Duration("timeout", 5*time.Second, "timeout of one handshake")
		clkTck   = flag.Float64("clk-tck", 100, "clock ticks per second of /proc/PID/stat (getconf CLK_TCK)")
		check    = flag.Bool("check", false, "do one verified handshake and one GET, print what was served, exit")
	)
	flag.Parse()
	if *addr == "" {
		fatal(errors.New("-addr is required"))
	}
	var schemes []uint16
	switch *sigalgs {
	case "ecdsa":
		schemes = ecdsaSchemes
	case "rsa":
		schemes = rsaSchemes
	default:
		fatal(fmt.Errorf("-sigalgs %q: want ecdsa or rsa", *sigalgs))
	}
	opts := clientOptions{addr: *addr, sni: *sni, schemes: schemes, alpn: *alpn, timeout: *timeout}

	if *check {
		opts.check = true
		res, err := handshake(opts)
		if err != nil {
			fatal(fmt.Errorf("check handshake with %s: %w", *addr, err))
		}
		var sans []string
		sans = append(sans, res.leaf.DNSNames...)
		for _, ip := range res.leaf.IPAddresses {
			sans = append(sans, ip.String())
		}
		fmt.Printf("offered=%s served=%s scheme=0x%04x key=%s sans=%s status=%q\n", *sigalgs, schemeFamily(res.scheme),
			res.scheme, res.leaf.PublicKeyAlgorithm, strings.Join(sans, ","), res.statusLine)
		if !strings.HasPrefix(res.statusLine, "HTTP/1.1 200") {
			os.Exit(1)
		}
		return
	}

	var pids []int
	for _, f := range strings.FieldsFunc(*pidList, func(r rune) bool { return r == ',' || r == ' ' }) {
		p, err := strconv.Atoi(f)
		if err != nil {
			fatal(fmt.Errorf("-pids: %w", err))
		}
		pids = append(pids, p)
	}

	var (
		done     atomic.Int64
		failed   atomic.Int64
		mu       sync.Mutex
		served   = map[string]int64{}
		firstErr error
		wg       sync.WaitGroup
	)
	cpu0, err := cpuTicks(pids)
	if err != nil {
		fatal(err)
	}
	start := time.Now()
	deadline := start.Add(*duration)
	for i := 0; i < *workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := map[string]int64{}
			for time.Now().Before(deadline) {
				res, err := handshake(opts)
				if err != nil {
					failed.Add(1)
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					continue
				}
				done.Add(1)
				local[schemeFamily(res.scheme)]++
			}
			mu.Lock()
			for k, v := range local {
				served[k] += v
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	cpu1, err := cpuTicks(pids)
	if err != nil {
		fatal(err)
	}

	n := done.Load()
	cpuSec := float64(cpu1-cpu0) / *clkTck
	var kinds []string
	for k, v := range served {
		kinds = append(kinds, fmt.Sprintf("%s:%d", k, v))
	}
	sort.Strings(kinds)
	line := fmt.Sprintf("handshakes=%d errors=%d seconds=%.2f rate=%.1f", n, failed.Load(), elapsed, float64(n)/elapsed)
	if len(pids) > 0 {
		perHS := 0.0
		if n > 0 {
			perHS = cpuSec / float64(n) * 1e6
		}
		line += fmt.Sprintf(" server_cpu_s=%.2f server_cpu_pct=%.0f cpu_us_per_hs=%.1f", cpuSec, 100*cpuSec/elapsed, perHS)
	}
	line += " served=" + strings.Join(kinds, ",")
	if firstErr != nil {
		line += fmt.Sprintf(" first_error=%q", firstErr.Error())
	}
	fmt.Println(line)
	if n == 0 {
		os.Exit(1)
	}
}

// cpuTicks sums utime+stime of the given processes, in clock ticks.
func cpuTicks(pids []int) (int64, error) {
	var total int64
	for _, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, err
		}
		// the command name may hold spaces: fields start after the last ')'
		s := string(data)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
		}
		f := strings.Fields(s[i+1:])
		// f[0] is field 3 (state); utime and stime are fields 14 and 15
		if len(f) < 13 {
			return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
		}
		u, err1 := strconv.ParseInt(f[11], 10, 64)
		st, err2 := strconv.ParseInt(f[12], 10, 64)
		if err1 != nil || err2 != nil {
			return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
		}
		total += u + st
	}
	return total, nil
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "handshake:", err)
	os.Exit(1)
}
