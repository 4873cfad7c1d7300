package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/portico-proxy/portico/config"
)

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	var c commonFlags
	fs := newFlagSet("validate", stderr, &c)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(c.config)
	if err != nil {
		printConfigErrors(stderr, c.config, err)
		return 1
	}
	printSummary(stdout, cfg)
	return 0
}

func printConfigErrors(w io.Writer, path string, err error) {
	var errs config.Errors
	if errors.As(err, &errs) {
		fmt.Fprintf(w, "%s: %d problem(s):\n", path, len(errs))
		for _, p := range errs {
			fmt.Fprintf(w, "  %s\n", p.Error())
		}
		return
	}
	fmt.Fprintf(w, "%v\n", err)
}

// printSummary is one screen: where Portico listens, where certificates come
// from, and every site with its names and upstreams. It never prints secrets.
func printSummary(w io.Writer, cfg *config.Config) {
	fmt.Fprintf(w, "%s: OK\n", cfg.Path)
	fmt.Fprintf(w, "listen: http %s, https %s", orNone(cfg.Listen.HTTP), cfg.Listen.HTTPS)
	if cfg.Listen.Admin != "" {
		fmt.Fprintf(w, ", admin %s", cfg.Listen.Admin)
	}
	fmt.Fprintln(w)
	if cfg.ACMEDefined {
		fmt.Fprintf(w, "acme: ca %s, email %s, challenges %s, key types %s\n",
			cfg.ACME.CA, cfg.ACME.Email, strings.Join(cfg.ACME.Challenges, " "), strings.Join(cfg.ACME.KeyTypes, " "))
	}
	switch cfg.Storage.Backend {
	case "redis":
		st := cfg.Storage
		switch {
		case len(st.RedisSentinels) > 0:
			fmt.Fprintf(w, "storage: redis via Sentinel (master %q, %d sentinels; prefix %q)\n", st.RedisMaster, len(st.RedisSentinels), st.Prefix)
		case len(st.RedisCluster) > 0:
			fmt.Fprintf(w, "storage: redis Cluster (%d seed nodes; prefix %q)\n", len(st.RedisCluster), st.Prefix)
		default:
			fmt.Fprintf(w, "storage: redis (prefix %q)\n", st.Prefix)
		}
	default:
		fmt.Fprintf(w, "storage: file %s\n", cfg.Storage.Path)
	}
	fmt.Fprintf(w, "sites: %d\n", len(cfg.Sites))
	for i, s := range cfg.Sites {
		target := "upstreams " + strings.Join(s.Upstreams, ", ")
		if s.Respond != "" {
			target = fmt.Sprintf("respond %q", truncate(s.Respond, 30))
		}
		var opts []string
		if s.Redirects() {
			opts = append(opts, "http→https 308")
		} else {
			opts = append(opts, "plain http proxied")
		}
		if s.HSTSMaxAge > 0 {
			opts = append(opts, "HSTS "+s.HSTSMaxAge.Std().String())
		}
		fmt.Fprintf(w, "  site[%d] %s\n      → %s (%s)\n", i+1, strings.Join(s.Hosts, ", "), target, strings.Join(opts, ", "))
	}
	for _, warn := range cfg.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
}

func orNone(s string) string {
	if s == "" {
		return "(off)"
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
