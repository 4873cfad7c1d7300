package config_test

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portico-proxy/portico/config"
)

// The [listen] keys that protect the listeners: trusted_proxies,
// proxy_protocol, max_connections, header_timeout, idle_timeout,
// max_header_bytes.

func TestListenHardeningDefaults(t *testing.T) {
	cfg, _ := mustParse(t, acmeOK+siteOK, nil)
	l := cfg.Listen
	if len(l.TrustedProxies) != 0 {
		t.Errorf("TrustedProxies = %q, want none", l.TrustedProxies)
	}
	if len(l.ProxyProtocol) != 0 {
		t.Errorf("ProxyProtocol = %q, want none", l.ProxyProtocol)
	}
	if l.MaxConnections != 10000 {
		t.Errorf("MaxConnections = %d, want 10000", l.MaxConnections)
	}
	if l.HeaderTimeout.Std() != 10*time.Second || l.IdleTimeout.Std() != 2*time.Minute {
		t.Errorf("HeaderTimeout, IdleTimeout = %v, %v, want 10s, 2m", l.HeaderTimeout.Std(), l.IdleTimeout.Std())
	}
	if l.MaxHeaderBytes != 65536 {
		t.Errorf("MaxHeaderBytes = %d, want 65536", l.MaxHeaderBytes)
	}
}

func TestListenHardeningSet(t *testing.T) {
	cfg, _ := mustParse(t, acmeOK+siteOK+`[listen]
trusted_proxies = ["10.0.0.0/8", "192.168.1.5", "2001:db8::/32", "::1"]
proxy_protocol = ["10.0.0.0/8", "2001:db8::5"]
max_connections = 0
header_timeout = "2s"
idle_timeout = "30s"
max_header_bytes = 4096
`, nil)
	l := cfg.Listen
	if want := []string{"10.0.0.0/8", "192.168.1.5", "2001:db8::/32", "::1"}; !slices.Equal(l.TrustedProxies, want) {
		t.Errorf("TrustedProxies = %q, want %q", l.TrustedProxies, want)
	}
	if want := []string{"10.0.0.0/8", "2001:db8::5"}; !slices.Equal(l.ProxyProtocol, want) {
		t.Errorf("ProxyProtocol = %q, want %q", l.ProxyProtocol, want)
	}
	if l.MaxConnections != 0 || l.HeaderTimeout.Std() != 2*time.Second || l.IdleTimeout.Std() != 30*time.Second || l.MaxHeaderBytes != 4096 {
		t.Errorf("Listen = %+v", l)
	}
	if len(cfg.Warnings) != 0 {
		t.Errorf("Warnings = %q", cfg.Warnings)
	}
}

func TestParseTrustedProxy(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.0/8":           "10.0.0.0/8",
		"10.1.2.3/8":           "10.0.0.0/8", // host bits dropped
		"192.168.1.5":          "192.168.1.5/32",
		"::1":                  "::1/128",
		"::ffff:192.168.1.5":   "192.168.1.5/32",
		"::ffff:10.0.0.0/104":  "10.0.0.0/8",
		"2001:db8::/32":        "2001:db8::/32",
		"2001:db8::1234/32":    "2001:db8::/32",
		"0.0.0.0/0":            "0.0.0.0/0",
		"fd00:1234:5678::/48":  "fd00:1234:5678::/48",
		"172.16.0.0/12":        "172.16.0.0/12",
		"100.64.0.0/10":        "100.64.0.0/10",
		"203.0.113.255":        "203.0.113.255/32",
		"2001:db8:0:0:0:0:0:1": "2001:db8::1/128",
	} {
		p, err := config.ParseTrustedProxy(in)
		if err != nil || p != netip.MustParsePrefix(want) {
			t.Errorf("ParseTrustedProxy(%q) = %v, %v, want %s", in, p, err, want)
		}
	}
	for _, in := range []string{"", "10.0.0.0/33", "10.0.0/8", "not-an-ip", "fe80::1%eth0", "10.0.0.1:80", "10.0.0.0/8 ", "*"} {
		if p, err := config.ParseTrustedProxy(in); err == nil {
			t.Errorf("ParseTrustedProxy(%q) = %v, want an error", in, p)
		}
	}
}

func TestListenHardeningRefusals(t *testing.T) {
	tests := []struct {
		name, src, key, msg, fix string
	}{
		{"trusted proxy with a bad mask", `trusted_proxies = ["10.0.0.0/33"]`,
			"listen.trusted_proxies", `"10.0.0.0/33": not a CIDR network`, `["10.0.0.0/8", "192.168.1.5"]`},
		{"trusted proxy that is a name", `trusted_proxies = ["10.0.0.0/8", "lb.example.net"]`,
			"listen.trusted_proxies", `"lb.example.net": not an IP address or CIDR network`, "IP addresses or CIDR networks"},
		{"trusted proxy with a port", `trusted_proxies = ["10.0.0.5:80"]`,
			"listen.trusted_proxies", `"10.0.0.5:80": not an IP address`, "IP addresses or CIDR networks"},
		{"trusted proxy with a zone", `trusted_proxies = ["fe80::1%eth0"]`,
			"listen.trusted_proxies", "zone", "IP addresses or CIDR networks"},
		{"proxy_protocol source with a bad mask", `proxy_protocol = ["10.0.0.0/8", "10.0.0.0/40"]`,
			"listen.proxy_protocol", `"10.0.0.0/40": not a CIDR network`, "send PROXY headers"},
		{"proxy_protocol source that is a name", `proxy_protocol = ["lb.example.net"]`,
			"listen.proxy_protocol", `"lb.example.net": not an IP address or CIDR network`, `["10.0.0.0/8"]`},
		{"proxy_protocol source with a port", `proxy_protocol = ["10.0.0.5:80"]`,
			"listen.proxy_protocol", `"10.0.0.5:80": not an IP address`, "IP addresses or CIDR networks"},
		{"proxy_protocol as a string", `proxy_protocol = "10.0.0.0/8"`,
			"listen.proxy_protocol", "", "README.md"},
		{"negative max_connections", `max_connections = -1`,
			"listen.max_connections", "-1 is negative", "0 (no limit)"},
		{"negative header_timeout", `header_timeout = "-10s"`,
			"listen.header_timeout", "-10s is negative", `"10s"`},
		{"zero header_timeout", `header_timeout = "0s"`,
			"listen.header_timeout", "hold a connection open forever", "leave the key out"},
		{"negative idle_timeout", `idle_timeout = "-2m"`,
			"listen.idle_timeout", "-2m0s is negative", `"2m"`},
		{"zero idle_timeout", `idle_timeout = "0s"`,
			"listen.idle_timeout", "hold a connection open forever", `"2m"`},
		{"max_header_bytes too small", `max_header_bytes = 1024`,
			"listen.max_header_bytes", "1024 bytes is out of range", "between 4096 (4 KiB) and 1048576 (1 MiB)"},
		{"max_header_bytes zero", `max_header_bytes = 0`,
			"listen.max_header_bytes", "0 bytes is out of range", "4096"},
		{"max_header_bytes too large", `max_header_bytes = 16777216`,
			"listen.max_header_bytes", "16777216 bytes is out of range", "1048576"},
		{"header_timeout not a duration", `header_timeout = "ten seconds"`,
			"listen.header_timeout", "ten seconds", "README.md"},
		{"max_connections as a string", `max_connections = "10000"`,
			"listen.max_connections", "", "README.md"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := acmeOK + siteOK + "[listen]\n" + tt.src + " " + marker + "\n"
			path, _ := writeConfig(t, src, nil)
			_, err := config.Parse(path, []byte(src))
			errs := problemsOf(t, err)
			if len(errs) != 1 {
				t.Fatalf("got %d problems, want 1:\n%v", len(errs), err)
			}
			p := errs[0]
			if p.Key != tt.key || !strings.Contains(p.Msg, tt.msg) || !strings.Contains(p.Fix, tt.fix) {
				t.Errorf("problem %q, want key %q, message with %q, fix with %q", p.Error(), tt.key, tt.msg, tt.fix)
			}
			if line := markedLine(t, src); p.Line != line {
				t.Errorf("Line = %d, want %d (%v)", p.Line, line, p)
			}
			if want := fmt.Sprintf("%s:%d: %s: ", path, p.Line, tt.key); !strings.HasPrefix(p.Error(), want) {
				t.Errorf("Error() = %q, want it to start %q", p.Error(), want)
			}
		})
	}
}

func TestListenTrustEveryoneWarns(t *testing.T) {
	for _, all := range []string{"0.0.0.0/0", "::/0"} {
		cfg, _ := mustParse(t, acmeOK+siteOK+"[listen]\ntrusted_proxies = [\""+all+"\"]\n", nil)
		if len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0], "trusts every client") {
			t.Errorf("trusted_proxies = [%q]: warnings %q", all, cfg.Warnings)
		}
	}
}

// TestListenHTTP3: http3 is off by default, on when set, and refused
// without the https listener whose UDP port it would use.
func TestListenHTTP3(t *testing.T) {
	cfg, _ := mustParse(t, acmeOK+siteOK, nil)
	if cfg.Listen.HTTP3 {
		t.Error("HTTP3 is on by default")
	}
	cfg, _ = mustParse(t, acmeOK+siteOK+"[listen]\nhttp3 = true\n", nil)
	if !cfg.Listen.HTTP3 {
		t.Error("http3 = true left HTTP3 off")
	}
	src := acmeOK + siteOK + "[listen]\nhttps = \"\"\nhttp3 = true " + marker + "\n"
	path, _ := writeConfig(t, src, nil)
	_, err := config.Parse(path, []byte(src))
	var found bool
	for _, p := range problemsOf(t, err) {
		if p.Key == "listen.http3" {
			found = true
			if !strings.Contains(p.Msg, "UDP port of the https listener") || !strings.Contains(p.Fix, "http3 = false") || p.Line != markedLine(t, src) {
				t.Errorf("problem %q (line %d)", p.Error(), p.Line)
			}
		}
	}
	if !found {
		t.Errorf("no listen.http3 problem in:\n%v", err)
	}
}

func TestListenProxyProtocolEveryoneWarns(t *testing.T) {
	for _, all := range []string{"0.0.0.0/0", "::/0"} {
		cfg, _ := mustParse(t, acmeOK+siteOK+"[listen]\nproxy_protocol = [\""+all+"\"]\n", nil)
		if len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0], "claim any client address") {
			t.Errorf("proxy_protocol = [%q]: warnings %q", all, cfg.Warnings)
		}
	}
}
