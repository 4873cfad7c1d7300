// Command table prints the summary of integration/bench/compare.sh: for each
// metric, the median and min–max over the rounds for the two targets, and the
// ratio of the medians (second target / first).
//
// Its input is the raw results file the script writes, one measurement per
// line: target, round, metric, value, separated by tabs.
//
//	table -a nginx -b portico integration/bench/out/<run>/results.tsv
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// metric describes a known metric: its label in the table and which way is
// better ("" for information only).
type metric struct {
	key, label, better string
}

var known = []metric{
	{"wrk_rps", "HTTP/1.1 req/s (wrk -t2 -c64)", "higher"},
	{"wrk_p99_ms", "HTTP/1.1 p99 latency ms (wrk)", "lower"},
	{"wrk_cpu_us", "proxy CPU µs per HTTP/1.1 request", "lower"},
	{"wrk_cpu_pct", "proxy CPU % of one core during wrk", ""},
	{"hs_ecdsa_rate", "full handshakes/s, ECDSA P-256", "higher"},
	{"hs_ecdsa_cpu_us", "proxy CPU µs per ECDSA handshake", "lower"},
	{"hs_rsa_rate", "full handshakes/s, RSA-2048", "higher"},
	{"hs_rsa_cpu_us", "proxy CPU µs per RSA handshake", "lower"},
	{"h2_rps", "HTTP/2 req/s (h2load -c16 -m8)", "higher"},
	{"h2_cpu_us", "proxy CPU µs per HTTP/2 request", "lower"},
	{"rss_mib", "peak RSS MiB (VmHWM, all processes)", "lower"},
	{"load1", "machine load (1-min average) before", ""},
	{"wrk_errors", "wrk errors (socket errors + non-2xx)", "lower"},
	{"hs_errors", "failed handshakes", "lower"},
	{"h2_errors", "h2load failed + errored requests", "lower"},
}

func main() {
	a := flag.String("a", "nginx", "first target (the reference)")
	b := flag.String("b", "portico", "second target")
	flag.Parse()
	var in io.Reader = os.Stdin
	if flag.NArg() > 0 {
		f, err := os.Open(flag.Arg(0))
		if err != nil {
			fmt.Fprintln(os.Stderr, "table:", err)
			os.Exit(1)
		}
		defer f.Close()
		in = f
	}
	values := map[string]map[string][]float64{} // metric → target → values
	var order []string
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Split(strings.TrimSpace(sc.Text()), "\t")
		if len(f) != 4 || strings.HasPrefix(f[0], "#") {
			continue
		}
		v, err := strconv.ParseFloat(f[3], 64)
		if err != nil {
			continue
		}
		m := values[f[2]]
		if m == nil {
			m = map[string][]float64{}
			values[f[2]] = m
			order = append(order, f[2])
		}
		m[f[0]] = append(m[f[0]], v)
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "table:", err)
		os.Exit(1)
	}

	var rows []metric
	for _, k := range known {
		if _, ok := values[k.key]; ok {
			rows = append(rows, k)
		}
	}
	for _, k := range order {
		if !slices.ContainsFunc(known, func(m metric) bool { return m.key == k }) {
			rows = append(rows, metric{key: k, label: k})
		}
	}

	rounds := 0
	for _, m := range values {
		for _, vs := range m {
			rounds = max(rounds, len(vs))
		}
	}
	fmt.Printf("medians over %d rounds, (min–max); ratio = %s / %s of the medians\n\n", rounds, *b, *a)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.Debug)
	fmt.Fprintf(tw, "metric\t%s\t%s\t%s/%s\tbetter\t\n", *a, *b, *b, *a)
	for _, r := range rows {
		if strings.HasSuffix(r.key, "_errors") && allZero(values[r.key]) {
			continue
		}
		va, vb := values[r.key][*a], values[r.key][*b]
		ratio := "—"
		if len(va) > 0 && len(vb) > 0 && median(va) != 0 && r.key != "load1" {
			ratio = fmt.Sprintf("%.2f", median(vb)/median(va))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", r.label, summary(va), summary(vb), ratio, r.better)
	}
	tw.Flush()
}

func allZero(m map[string][]float64) bool {
	for _, vs := range m {
		for _, v := range vs {
			if v != 0 {
				return false
			}
		}
	}
	return true
}

func summary(vs []float64) string {
	if len(vs) == 0 {
		return "—"
	}
	lo, hi := slices.Min(vs), slices.Max(vs)
	return fmt.Sprintf("%s (%s–%s)", num(median(vs)), num(lo), num(hi))
}

func median(vs []float64) float64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func num(v float64) string {
	switch a := max(v, -v); {
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}
