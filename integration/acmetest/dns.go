package acmetest

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// DNS is a small authoritative test DNS server listening on a loopback UDP
// and TCP port (the same port number for both). It answers:
//
//   - A queries from the records set with SetA (a "*.example.com" record
//     matches any single label in place of the star when no exact record
//     exists), falling back to the default set with SetDefaultA, and
//     NXDOMAIN otherwise;
//   - TXT queries from the records set with SetTXT, NXDOMAIN otherwise;
//   - AAAA and CAA queries always with an empty NOERROR answer (no IPv6
//     addresses, no CAA restrictions);
//   - any other type with an empty NOERROR answer.
//
// Several DNS servers may run in one process; each has its own records.
// All methods are safe for concurrent use.
type DNS struct {
	addr string
	udp  *dns.Server
	tcp  *dns.Server

	mu       sync.RWMutex
	a        map[string]net.IP
	txt      map[string][]string
	defaultA net.IP

	stopOnce sync.Once
}

// StartDNS starts a test DNS server on a free 127.0.0.1 port (UDP and TCP)
// and registers its shutdown with t.Cleanup. It fails the test if the server
// cannot be started.
func StartDNS(t testing.TB) *DNS {
	t.Helper()
	d := &DNS{
		a:   make(map[string]net.IP),
		txt: make(map[string][]string),
	}

	pc, ln, err := listenUDPAndTCP()
	if err != nil {
		t.Fatalf("acmetest: starting DNS server: %v", err)
	}
	d.addr = pc.LocalAddr().String()

	udpStarted := make(chan struct{})
	tcpStarted := make(chan struct{})
	d.udp = &dns.Server{PacketConn: pc, Handler: d, NotifyStartedFunc: func() { close(udpStarted) }}
	d.tcp = &dns.Server{Listener: ln, Handler: d, NotifyStartedFunc: func() { close(tcpStarted) }}
	udpErr := make(chan error, 1)
	tcpErr := make(chan error, 1)
	go func() { udpErr <- d.udp.ActivateAndServe() }()
	go func() { tcpErr <- d.tcp.ActivateAndServe() }()
	for _, ch := range []struct {
		started chan struct{}
		errc    chan error
	}{{udpStarted, udpErr}, {tcpStarted, tcpErr}} {
		select {
		case <-ch.started:
		case err := <-ch.errc:
			_ = pc.Close()
			_ = ln.Close()
			t.Fatalf("acmetest: DNS server failed to start: %v", err)
		case <-time.After(10 * time.Second):
			_ = pc.Close()
			_ = ln.Close()
			t.Fatalf("acmetest: DNS server did not start within 10s")
		}
	}
	t.Cleanup(d.stop)
	return d
}

// listenUDPAndTCP binds a UDP socket on a free loopback port and a TCP
// listener on the same port number, retrying when the TCP port happens to be
// taken.
func listenUDPAndTCP() (net.PacketConn, net.Listener, error) {
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		lastErr = err
		_ = pc.Close()
	}
	return nil, nil, fmt.Errorf("no port free for both UDP and TCP: %w", lastErr)
}

func (d *DNS) stop() {
	d.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = d.udp.ShutdownContext(ctx)
		_ = d.tcp.ShutdownContext(ctx)
	})
}

// Addr returns the server address as "127.0.0.1:PORT"; the same port serves
// UDP and TCP.
func (d *DNS) Addr() string { return d.addr }

func canonicalName(name string) string {
	return strings.ToLower(dns.Fqdn(name))
}

// SetA makes name resolve to the IPv4 address ip (for example "127.0.0.2"),
// replacing any previous A record for name. name may be given with or without
// the trailing dot and may be a wildcard such as "*.example.com". It panics if
// ip is not an IPv4 address.
func (d *DNS) SetA(name string, ip string) {
	parsed := net.ParseIP(ip).To4()
	if parsed == nil {
		panic(fmt.Sprintf("acmetest: SetA(%q, %q): not an IPv4 address", name, ip))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.a[canonicalName(name)] = parsed
}

// ClearA removes the A record for name (it then falls back to the default
// answer set with SetDefaultA, or NXDOMAIN).
func (d *DNS) ClearA(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.a, canonicalName(name))
}

// SetDefaultA sets the address returned for A queries for names without an
// A record. An empty ip restores the initial behaviour: NXDOMAIN. It panics
// if ip is neither empty nor an IPv4 address.
func (d *DNS) SetDefaultA(ip string) {
	var parsed net.IP
	if ip != "" {
		if parsed = net.ParseIP(ip).To4(); parsed == nil {
			panic(fmt.Sprintf("acmetest: SetDefaultA(%q): not an IPv4 address", ip))
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.defaultA = parsed
}

// SetTXT sets the TXT record values for name (for example
// "_acme-challenge.test1.example.com"), replacing previous values. Calling it
// without values removes the record.
func (d *DNS) SetTXT(name string, values ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(values) == 0 {
		delete(d.txt, canonicalName(name))
		return
	}
	d.txt[canonicalName(name)] = append([]string(nil), values...)
}

// lookupA returns the address for name, or nil. Callers hold d.mu.
func (d *DNS) lookupA(name string) net.IP {
	if ip, ok := d.a[name]; ok {
		return ip
	}
	if _, rest, ok := strings.Cut(name, "."); ok && rest != "" {
		if ip, ok := d.a["*."+rest]; ok {
			return ip
		}
	}
	return d.defaultA
}

// ServeDNS implements dns.Handler.
func (d *DNS) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) != 1 || req.Opcode != dns.OpcodeQuery {
		m.Rcode = dns.RcodeNotImplemented
		_ = w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	const ttl = 1

	d.mu.RLock()
	switch q.Qtype {
	case dns.TypeA:
		if ip := d.lookupA(name); ip != nil {
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl},
				A:   ip,
			})
		} else {
			m.Rcode = dns.RcodeNameError
		}
	case dns.TypeTXT:
		if values, ok := d.txt[name]; ok {
			for _, v := range values {
				m.Answer = append(m.Answer, &dns.TXT{
					Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: ttl},
					Txt: splitTXT(v),
				})
			}
		} else {
			m.Rcode = dns.RcodeNameError
		}
	default:
		// AAAA, CAA and everything else: NOERROR with no records.
	}
	d.mu.RUnlock()

	_ = w.WriteMsg(m)
}

// splitTXT splits a TXT value into character-strings of at most 255 bytes.
func splitTXT(v string) []string {
	if len(v) <= 255 {
		return []string{v}
	}
	var parts []string
	for len(v) > 255 {
		parts = append(parts, v[:255])
		v = v[255:]
	}
	return append(parts, v)
}
