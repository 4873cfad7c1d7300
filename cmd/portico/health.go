package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/portico-proxy/portico/config"
)

// healthTimeout bounds the whole check: connect and TLS handshake.
const healthTimeout = 3 * time.Second

// cmdHealth checks that the HTTPS listener of the config answers: it
// accepts a TCP connection and answers a TLS ClientHello (SNI: the first
// site's first host) within the timeout. Any certificate will do, and so
// will a TLS alert: a Portico still waiting for its first certificate is
// alive and serving the names it has, and says why in its logs and alerts.
// It is the container HEALTHCHECK: exit 0 and one line on stdout, or exit 1
// and a one-line reason on stderr.
func cmdHealth(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("portico health", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "portico.toml", "config file of the portico to check ([listen] https and the first [[site]])")
	timeout := fs.Duration("timeout", healthTimeout, "time allowed for the connection and the TLS handshake")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "portico health: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, "unhealthy: "+configProblem(*path, err))
		return 1
	}
	addr := dialAddr(cfg.Listen.HTTPS)
	sni := healthSNI(cfg)
	msg, err := checkTLS(addr, sni, *timeout)
	if err != nil {
		fmt.Fprintf(stderr, "unhealthy: https %s (SNI %s): %v\n", addr, orNone(sni), err)
		return 1
	}
	fmt.Fprintf(stdout, "healthy: https %s (SNI %s): %s\n", addr, orNone(sni), msg)
	return 0
}

// configProblem is a config that does not load, on one line.
func configProblem(path string, err error) string {
	var errs config.Errors
	if errors.As(err, &errs) && len(errs) > 0 {
		s := fmt.Sprintf("config %s: %s", path, errs[0].Error())
		if len(errs) > 1 {
			s += fmt.Sprintf(" (and %d more problem(s): run portico validate)", len(errs)-1)
		}
		return s
	}
	return oneLine(err.Error(), 300)
}

// dialAddr turns a listen address into one to connect to: a listener on
// every interface (":443", "0.0.0.0:443", "[::]:443") is reached on loopback.
func dialAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

// healthSNI is the first site's first host; a wildcard "*.example.net"
// becomes a name it covers.
func healthSNI(cfg *config.Config) string {
	for _, s := range cfg.Sites {
		if len(s.Hosts) == 0 {
			continue
		}
		if rest, ok := strings.CutPrefix(s.Hosts[0], "*."); ok {
			return "healthcheck." + rest
		}
		return s.Hosts[0]
	}
	return ""
}

// checkTLS connects and sends a ClientHello. It returns what the server
// answered when that is TLS (a certificate or an alert), else why not.
func checkTLS(addr, sni string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", dialProblem(err, timeout)
	}
	defer raw.Close()
	conn := tls.Client(raw, &tls.Config{
		ServerName:         sni,
		InsecureSkipVerify: true, // any certificate: this checks that Portico answers, not which certificate it has
		NextProtos:         []string{"h2", "http/1.1"},
	})
	err = conn.HandshakeContext(ctx)
	if err == nil {
		st := conn.ConnectionState()
		conn.Close()
		if len(st.PeerCertificates) == 0 {
			return "TLS handshake completed", nil
		}
		leaf := st.PeerCertificates[0]
		return fmt.Sprintf("TLS handshake completed; certificate %s, expires %s", certSubject(leaf.Subject.CommonName, leaf.DNSNames),
			leaf.NotAfter.UTC().Format("2006-01-02 15:04 MST")), nil
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" {
		// The server spoke TLS and refused this hello, e.g. no certificate
		// for the name yet: the listener is up.
		return fmt.Sprintf("TLS answered with an alert (%v): the listener is up, but has no certificate for this name yet or refuses it; see portico certs", op.Err), nil
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return "", fmt.Errorf("no TLS answer within %s", timeout)
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
		return "", errors.New("the connection was closed without a TLS answer")
	}
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) {
		return "", errors.New("the answer is not TLS: is another server (plain HTTP?) on this port?")
	}
	return "", fmt.Errorf("TLS handshake: %v", err)
}

func dialProblem(err error, timeout time.Duration) error {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return errors.New("connection refused: nothing listens there (is portico running?)")
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return fmt.Errorf("no connection within %s", timeout)
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		err = op.Err
	}
	return fmt.Errorf("cannot connect: %v", err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}

func certSubject(cn string, dns []string) string {
	switch {
	case len(dns) == 1:
		return dns[0]
	case len(dns) > 1:
		return fmt.Sprintf("%s (+%d names)", dns[0], len(dns)-1)
	case cn != "":
		return cn
	}
	return "(no name)"
}
