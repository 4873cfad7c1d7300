// Package dnstest runs a real authoritative DNS server, Knot DNS (knotd from
// Debian's "knot" package), for dns-01 tests: it serves one zone on a free
// loopback port (UDP and TCP) and accepts RFC 2136 dynamic updates signed
// with a TSIG key, as an operator's own primary server would. Pebble (see
// integration/acmetest, PebbleOptions.ResolverAddr) and certmagic's
// propagation checks can both query it directly.
//
// knotd must be on PATH (apt-get install knot). It runs as the test's user
// on an unprivileged port, with its configuration, zone file, run directory
// and databases under t.TempDir(), and is killed at cleanup (and, on Linux,
// when the test process dies).
package dnstest

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/portico-proxy/portico/config"
	"github.com/portico-proxy/portico/integration/testkit"
)

// Knot is a running knotd serving one zone. Its methods are safe for
// concurrent use, except those taking the test (TXT, A), which must be
// called from the test's goroutine.
type Knot struct {
	t       testing.TB
	zone    string // FQDN, lower case
	addr    string
	keyName string
	keyAlg  string
	key     string
	log     *testkit.Buffer
}

const (
	// keyAlg is the TSIG algorithm of the update key.
	keyAlg = "hmac-sha256"
	// startTimeout bounds the wait for knotd to answer.
	startTimeout = 20 * time.Second
	// queryTimeout bounds one query to knotd.
	queryTimeout = 2 * time.Second
)

// StartKnot starts knotd serving zone (e.g. "example.test") with an SOA, an
// NS record (ns1.<zone>, 127.0.0.1) and the A records in records (name →
// IPv4 address). A name is absolute when it ends with a dot or is the zone
// or a name under it ("www.example.test"); otherwise it is relative to the
// zone ("www", "*"). The server accepts dynamic updates of the zone signed
// with a fresh hmac-sha256 TSIG key (KeyName, KeyAlg, Key).
//
// It fails the test if knotd is not installed or does not answer an SOA
// query over both UDP and TCP within 20 seconds.
func StartKnot(t testing.TB, zone string, records map[string]string) *Knot {
	t.Helper()
	bin, err := exec.LookPath("knotd")
	if err != nil {
		t.Fatalf("dnstest: knotd not found on PATH (%v): install Debian's knot package: apt-get install knot", err)
	}
	zone = strings.ToLower(dns.Fqdn(zone))
	if _, ok := dns.IsDomainName(zone); !ok || zone == "." {
		t.Fatalf("dnstest: %q is not a zone name", zone)
	}

	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		t.Fatalf("dnstest: %v", err)
	}
	k := &Knot{
		t:       t,
		zone:    zone,
		keyName: "portico-test-" + strings.TrimSuffix(strings.ReplaceAll(zone, ".", "-"), "-") + ".",
		keyAlg:  keyAlg,
		key:     base64.StdEncoding.EncodeToString(secret),
		log:     &testkit.Buffer{},
	}

	dir := t.TempDir()
	zonesDir := filepath.Join(dir, "zones")
	if err := os.MkdirAll(zonesDir, 0o700); err != nil {
		t.Fatalf("dnstest: %v", err)
	}
	zoneFile, err := zoneFileText(zone, records)
	if err != nil {
		t.Fatalf("dnstest: %v", err)
	}
	if err := os.WriteFile(filepath.Join(zonesDir, strings.TrimSuffix(zone, ".")+".zone"), []byte(zoneFile), 0o600); err != nil {
		t.Fatalf("dnstest: %v", err)
	}

	// The port is chosen by binding it and handing it over to knotd, so
	// another process may take it in between: then knotd exits (or never
	// answers) and we try another port.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("dnstest: %v", err)
		}
		addr := net.JoinHostPort("127.0.0.1", fmt.Sprint(port))
		conf := filepath.Join(dir, fmt.Sprintf("knot-%d.conf", attempt))
		if err := os.WriteFile(conf, []byte(k.configText(dir, zonesDir, port)), 0o600); err != nil {
			t.Fatalf("dnstest: %v", err)
		}
		if lastErr = k.run(bin, conf, addr); lastErr == nil {
			k.addr = addr
			return k
		}
	}
	t.Fatalf("dnstest: knotd did not start: %v\nknotd log:\n%s", lastErr, k.log.String())
	return nil
}

// run starts knotd and waits until it answers on addr. On failure the
// process is gone when run returns.
func (k *Knot) run(bin, conf, addr string) error {
	t := k.t
	cmd := exec.Command(bin, "-c", conf)
	cmd.Stdout = k.log
	cmd.Stderr = k.log
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", bin, err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
	}

	deadline := time.Now().Add(startTimeout)
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		// Both transports: certmagic queries over UDP, Pebble and the
		// rfc2136 provider over TCP.
		errUDP := soaReady(addr, "udp", k.zone)
		errTCP := soaReady(addr, "tcp", k.zone)
		if errUDP == nil && errTCP == nil {
			break
		}
		select {
		case <-exited:
			return fmt.Errorf("knotd exited: %v", waitErr)
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			stop()
			return fmt.Errorf("no SOA answer from %s within %v (udp: %v; tcp: %v)", addr, startTimeout, errUDP, errTCP)
		}
	}

	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("dnstest: knotd log:\n%s", k.log.String())
		}
	})
	return nil
}

func soaReady(addr, network, zone string) error {
	m := new(dns.Msg)
	m.SetQuestion(zone, dns.TypeSOA)
	c := &dns.Client{Net: network, Timeout: 250 * time.Millisecond}
	in, _, err := c.Exchange(m, addr)
	if err != nil {
		return err
	}
	if in.Rcode != dns.RcodeSuccess || len(in.Answer) == 0 {
		return fmt.Errorf("SOA %s: %s with %d answers", zone, dns.RcodeToString[in.Rcode], len(in.Answer))
	}
	return nil
}

// configText is knotd's configuration: everything under dir, one zone whose
// ACL allows dynamic updates signed with the key, from loopback only.
// Updates live in memory (no journal, no zone file sync): the zone is thrown
// away with the test.
func (k *Knot) configText(dir, zonesDir string, port int) string {
	return fmt.Sprintf(`server:
    rundir: %[1]q
    pidfile: %[2]q
    listen: 127.0.0.1@%[3]d
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1

control:
    listen: %[4]q

database:
    storage: %[5]q

log:
  - target: stderr
    any: info

key:
  - id: %[6]s
    algorithm: %[7]s
    secret: %[8]s

acl:
  - id: update_with_key
    address: 127.0.0.0/8
    key: %[6]s
    action: update

template:
  - id: default
    storage: %[9]q
    file: "%%s.zone"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none

zone:
  - domain: %[10]s
    acl: update_with_key
`, dir, filepath.Join(dir, "knot.pid"), port, filepath.Join(dir, "knot.sock"),
		filepath.Join(dir, "db"), k.keyName, k.keyAlg, k.key, zonesDir, k.zone)
}

// zoneFileText renders the zone file. TTLs are one second and the SOA
// refresh is short, so nothing in a test caches for long; certmagic caches
// the zone cut for the SOA refresh interval.
func zoneFileText(zone string, records map[string]string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "$ORIGIN %s\n$TTL 1\n", zone)
	fmt.Fprintf(&b, "@ SOA ns1.%s hostmaster.%s 1 60 60 3600 1\n", zone, zone)
	fmt.Fprintf(&b, "@ NS ns1.%s\n", zone)
	ns1 := "ns1." + zone
	names := make([]string, 0, len(records))
	for n := range records {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fqdn, err := absName(n, zone)
		if err != nil {
			return "", err
		}
		ip := net.ParseIP(records[n]).To4()
		if ip == nil {
			return "", fmt.Errorf("record %q: %q is not an IPv4 address", n, records[n])
		}
		if fqdn == ns1 {
			ns1 = ""
		}
		fmt.Fprintf(&b, "%s A %s\n", fqdn, ip)
	}
	if ns1 != "" {
		fmt.Fprintf(&b, "%s A 127.0.0.1\n", ns1)
	}
	return b.String(), nil
}

// absName makes name absolute within zone (see StartKnot).
func absName(name, zone string) (string, error) {
	n := strings.ToLower(name)
	switch {
	case n == "" || n == "@":
		n = zone
	case strings.HasSuffix(n, "."):
	case n+"." == zone || strings.HasSuffix(n+".", "."+zone):
		n += "."
	default:
		n += "." + zone
	}
	if n != zone && !strings.HasSuffix(n, "."+zone) {
		return "", fmt.Errorf("record %q is outside zone %s", name, zone)
	}
	if _, ok := dns.IsDomainName(n); !ok {
		return "", fmt.Errorf("record %q: not a domain name", name)
	}
	return n, nil
}

func freePort() (int, error) {
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		_ = pc.Close()
		if err == nil {
			_ = ln.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("no loopback port free for both UDP and TCP")
}

// Addr is the server's "127.0.0.1:PORT" (UDP and TCP): the RFC 2136
// server, the resolver for propagation checks and Pebble's resolver.
func (k *Knot) Addr() string { return k.addr }

// Zone is the served zone as an FQDN ("example.test.").
func (k *Knot) Zone() string { return k.zone }

// KeyName is the TSIG key name (an FQDN).
func (k *Knot) KeyName() string { return k.keyName }

// KeyAlg is the TSIG algorithm, "hmac-sha256".
func (k *Knot) KeyAlg() string { return k.keyAlg }

// Key is the base64 TSIG secret.
func (k *Knot) Key() string { return k.key }

// DNSConfig returns Portico's [acme.dns] settings for this server: the
// rfc2136 provider with its key, and the server itself as the only
// propagation resolver.
func (k *Knot) DNSConfig() config.DNS {
	return config.DNS{
		Provider:  "rfc2136",
		Resolvers: []string{k.addr},
		Server:    k.addr,
		KeyName:   k.keyName,
		KeyAlg:    k.keyAlg,
		Key:       k.key,
	}
}

// TXT returns the TXT values at name (absolute, or relative to the zone as
// in StartKnot), each the concatenation of its character strings, sorted;
// none for NXDOMAIN or no TXT record. It queries knotd directly (TCP) and
// fails the test on any other answer.
func (k *Knot) TXT(name string) []string {
	k.t.Helper()
	var out []string
	for _, rr := range k.query(name, dns.TypeTXT) {
		if txt, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(txt.Txt, ""))
		}
	}
	sort.Strings(out)
	return out
}

// A returns the IPv4 addresses of name, like TXT.
func (k *Knot) A(name string) []string {
	k.t.Helper()
	var out []string
	for _, rr := range k.query(name, dns.TypeA) {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	sort.Strings(out)
	return out
}

func (k *Knot) query(name string, qtype uint16) []dns.RR {
	k.t.Helper()
	fqdn, err := absName(name, k.zone)
	if err != nil {
		k.t.Fatalf("dnstest: %v", err)
	}
	m := new(dns.Msg)
	m.SetQuestion(fqdn, qtype)
	m.RecursionDesired = false
	c := &dns.Client{Net: "tcp", Timeout: queryTimeout}
	in, _, err := c.Exchange(m, k.addr)
	if err != nil {
		k.t.Fatalf("dnstest: %s %s @%s: %v", dns.TypeToString[qtype], fqdn, k.addr, err)
	}
	switch in.Rcode {
	case dns.RcodeSuccess:
		return in.Answer
	case dns.RcodeNameError:
		return nil
	}
	k.t.Fatalf("dnstest: %s %s @%s: %s", dns.TypeToString[qtype], fqdn, k.addr, dns.RcodeToString[in.Rcode])
	return nil
}

// Log returns what knotd has logged so far.
func (k *Knot) Log() string { return k.log.String() }
