package notify

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"io"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico-proxy/portico/config"
	"github.com/portico-proxy/portico/integration/testkit"
)

// smtpSession is what the test SMTP server saw in one connection.
type smtpSession struct {
	Commands     []string // verbs in the order received
	TLS          bool     // the connection was upgraded (or started with TLS)
	AuthAfterTLS bool     // AUTH arrived on a TLS connection
	AuthUser     string
	AuthPass     string
	MailFrom     string
	Rcpts        []string
	Data         string // the message, dot-unstuffed, LF line ends
	Quit         bool
	Err          error // a protocol violation seen by the server
}

func (s *smtpSession) index(verb string) int {
	for i, c := range s.Commands {
		if c == verb {
			return i
		}
	}
	return -1
}

// smtpServer speaks just enough SMTP (RFC 5321) by hand: greeting, EHLO
// with AUTH PLAIN (and STARTTLS when tlsConfig is set), AUTH, MAIL, RCPT,
// DATA, RSET, NOOP and QUIT.
type smtpServer struct {
	ln        net.Listener
	tlsConfig *tls.Config
	user      string
	pass      string
	// rcptReply, when set, may replace the reply to the n-th RCPT (1-based)
	rcptReply func(n int) string
	rcpts     atomic.Int32
	sessions  chan *smtpSession
	wg        sync.WaitGroup
}

func newSMTPServer(t *testing.T, network string, tlsConfig *tls.Config) *smtpServer {
	t.Helper()
	ln, err := net.Listen("tcp", network)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", network, err)
	}
	s := &smtpServer{ln: ln, tlsConfig: tlsConfig, user: "portico", pass: "pa55-w0rd!", sessions: make(chan *smtpSession, 16)}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serve(conn)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *smtpServer) config() config.SMTP {
	host, port, _ := net.SplitHostPort(s.ln.Addr().String())
	p, _ := strconv.Atoi(port)
	return config.SMTP{Host: host, Port: p, Username: s.user, Password: s.pass, From: "portico@example.net"}
}

// next waits for the next finished session.
func (s *smtpServer) next(t *testing.T) *smtpSession {
	t.Helper()
	select {
	case sess := <-s.sessions:
		if sess.Err != nil {
			t.Errorf("SMTP server: %v", sess.Err)
		}
		return sess
	case <-time.After(10 * time.Second):
		t.Fatal("no SMTP session finished within 10s")
		return nil
	}
}

func (s *smtpServer) serve(conn net.Conn) {
	sess := &smtpSession{}
	defer func() {
		conn.Close()
		s.sessions <- sess
	}()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	tp := textproto.NewConn(conn)
	reply := func(line string) { _ = tp.PrintfLine("%s", line) }
	reply("220 mx.test ESMTP ready")
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		verb = strings.ToUpper(verb)
		sess.Commands = append(sess.Commands, verb)
		switch verb {
		case "EHLO":
			ext := []string{"mx.test greets " + arg}
			if s.tlsConfig != nil && !sess.TLS {
				ext = append(ext, "STARTTLS")
			}
			ext = append(ext, "AUTH PLAIN")
			for i, e := range ext {
				sep := "-"
				if i == len(ext)-1 {
					sep = " "
				}
				reply("250" + sep + e)
			}
		case "STARTTLS":
			if s.tlsConfig == nil || sess.TLS {
				reply("502 5.5.1 STARTTLS not available")
				continue
			}
			reply("220 2.0.0 ready to start TLS")
			tc := tls.Server(conn, s.tlsConfig)
			if err := tc.Handshake(); err != nil {
				// the client may reject our certificate: not a violation
				return
			}
			conn, tp, sess.TLS = tc, textproto.NewConn(tc), true
		case "AUTH":
			mech, resp, _ := strings.Cut(arg, " ")
			raw, err := base64.StdEncoding.DecodeString(resp)
			parts := strings.Split(string(raw), "\x00")
			if mech != "PLAIN" || err != nil || len(parts) != 3 {
				sess.Err = errorf("bad AUTH line %q", line)
				reply("501 5.5.2 bad AUTH")
				continue
			}
			sess.AuthUser, sess.AuthPass, sess.AuthAfterTLS = parts[1], parts[2], sess.TLS
			if parts[1] != s.user || parts[2] != s.pass {
				reply("535 5.7.8 authentication credentials invalid")
				continue
			}
			reply("235 2.7.0 authentication successful")
		case "MAIL":
			sess.MailFrom = between(arg, "<", ">")
			if !strings.HasPrefix(strings.ToUpper(arg), "FROM:") {
				sess.Err = errorf("bad MAIL line %q", line)
			}
			reply("250 2.1.0 sender ok")
		case "RCPT":
			n := int(s.rcpts.Add(1))
			if s.rcptReply != nil {
				if r := s.rcptReply(n); r != "" {
					reply(r)
					continue
				}
			}
			sess.Rcpts = append(sess.Rcpts, between(arg, "<", ">"))
			reply("250 2.1.5 recipient ok")
		case "DATA":
			if sess.MailFrom == "" || len(sess.Rcpts) == 0 {
				sess.Err = errorf("DATA before MAIL/RCPT")
				reply("503 5.5.1 need MAIL and RCPT first")
				continue
			}
			reply("354 end data with <CR><LF>.<CR><LF>")
			b, err := tp.ReadDotBytes()
			if err != nil {
				sess.Err = errorf("reading DATA: %v", err)
				return
			}
			sess.Data = string(b)
			reply("250 2.0.0 queued")
		case "RSET", "NOOP":
			reply("250 2.0.0 ok")
		case "QUIT":
			sess.Quit = true
			reply("221 2.0.0 bye")
			return
		default:
			reply("502 5.5.2 command not recognized")
		}
	}
}

type protoError string

func (e protoError) Error() string { return string(e) }

func errorf(format string, args ...any) error {
	return protoError(strings.TrimSpace(sprintf(format, args...)))
}

func between(s, open, close string) string {
	_, rest, ok := strings.Cut(s, open)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, close)
	return v
}

// selfSigned returns a server TLS config for 127.0.0.1 and a pool trusting it.
func selfSigned(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	c := testkit.SelfSigned(t, "localhost", "127.0.0.1")
	return &tls.Config{Certificates: []tls.Certificate{c.TLS}}, c.Pool
}

// checkMessage parses the DATA the server received and checks headers and
// body against the event.
func checkMessage(t *testing.T, data string, cfg config.SMTP, to string, e Event) string {
	t.Helper()
	msg, err := mail.ReadMessage(strings.NewReader(data))
	if err != nil {
		t.Fatalf("message does not parse: %v\n%s", err, data)
	}
	h := msg.Header
	if got, want := h.Get("Subject"), "[Portico] certificate failure: "+e.Name+" ("+e.KeyType+")"; got != want {
		t.Errorf("Subject %q, want %q", got, want)
	}
	if got := h.Get("From"); !strings.Contains(got, cfg.From) {
		t.Errorf("From %q, want %s", got, cfg.From)
	}
	if got := h.Get("To"); !strings.Contains(got, to) {
		t.Errorf("To %q, want %s", got, to)
	}
	if d, err := h.Date(); err != nil || time.Since(d) > time.Hour || time.Until(d) > time.Hour {
		t.Errorf("Date %q: %v", h.Get("Date"), err)
	}
	if id := h.Get("Message-Id"); !strings.HasPrefix(id, "<") || !strings.HasSuffix(id, "@example.net>") {
		t.Errorf("Message-ID %q, want <…@example.net>", id)
	}
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q, want text/plain", ct)
	}
	var r io.Reader = msg.Body
	if strings.EqualFold(h.Get("Content-Transfer-Encoding"), "quoted-printable") {
		r = quotedprintable.NewReader(msg.Body)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("body: %v", err)
	}
	body := strings.ReplaceAll(string(b), "\r\n", "\n")
	for _, want := range []string{
		e.Message, e.Error, "Name:       " + e.Name, "Key type:   " + e.KeyType, "CA:         " + e.CA,
		"Failures:   3", "Next retry: 2026-11-03 15:40:00 UTC", "What to check:",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("body lacks %q:\n%s", want, body)
		}
	}
	if !strings.HasPrefix(body, e.Message+"\n\n") {
		t.Errorf("body should start with the message line:\n%s", body)
	}
	for _, line := range strings.Split(data, "\n") {
		if len(line) > 998 {
			t.Errorf("line of %d octets exceeds SMTP's limit", len(line))
		}
	}
	return body
}

func TestEmailSendsPlainTextWithAuth(t *testing.T) {
	srv := newSMTPServer(t, "127.0.0.1:0", nil)
	cfg := srv.config()
	m := NewEmail("ops@example.net", cfg)
	m.BaseDelay = time.Millisecond
	e := sampleEvent()
	if err := m.Notify(context.Background(), e); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	sess := srv.next(t)
	if sess.MailFrom != cfg.From {
		t.Errorf("MAIL FROM <%s>, want <%s>", sess.MailFrom, cfg.From)
	}
	if len(sess.Rcpts) != 1 || sess.Rcpts[0] != "ops@example.net" {
		t.Errorf("RCPT TO %v, want [ops@example.net]", sess.Rcpts)
	}
	if sess.AuthUser != cfg.Username || sess.AuthPass != cfg.Password {
		t.Errorf("AUTH PLAIN credentials %q/%q, want %q/%q", sess.AuthUser, sess.AuthPass, cfg.Username, cfg.Password)
	}
	if want := "EHLO AUTH MAIL RCPT DATA QUIT"; strings.Join(sess.Commands, " ") != want {
		t.Errorf("conversation %v, want %s", sess.Commands, want)
	}
	checkMessage(t, sess.Data, cfg, "ops@example.net", e)
}

func TestEmailUpgradesWithSTARTTLSBeforeAuth(t *testing.T) {
	serverTLS, roots := selfSigned(t)
	srv := newSMTPServer(t, "127.0.0.1:0", serverTLS)
	cfg := srv.config()
	m := NewEmail("ops@example.net", cfg)
	m.TLSConfig = &tls.Config{RootCAs: roots}
	m.BaseDelay = time.Millisecond
	e := sampleEvent()
	if err := m.Notify(context.Background(), e); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	sess := srv.next(t)
	if !sess.TLS || !sess.AuthAfterTLS {
		t.Errorf("TLS %v, AUTH after TLS %v: want both", sess.TLS, sess.AuthAfterTLS)
	}
	if st, auth := sess.index("STARTTLS"), sess.index("AUTH"); st < 0 || auth < st {
		t.Errorf("conversation %v: STARTTLS must come before AUTH", sess.Commands)
	}
	if want := "EHLO STARTTLS EHLO AUTH MAIL RCPT DATA QUIT"; strings.Join(sess.Commands, " ") != want {
		t.Errorf("conversation %v, want %s", sess.Commands, want)
	}
	if sess.AuthUser != cfg.Username || sess.AuthPass != cfg.Password {
		t.Errorf("AUTH PLAIN credentials %q/%q, want %q/%q", sess.AuthUser, sess.AuthPass, cfg.Username, cfg.Password)
	}
	checkMessage(t, sess.Data, cfg, "ops@example.net", e)
}

func TestEmailUntrustedCertificateSendsNoPassword(t *testing.T) {
	serverTLS, _ := selfSigned(t)
	srv := newSMTPServer(t, "127.0.0.1:0", serverTLS)
	m := NewEmail("ops@example.net", srv.config())
	m.TLSConfig = &tls.Config{RootCAs: x509.NewCertPool()} // trusts nothing
	m.Attempts, m.BaseDelay = 2, time.Millisecond
	err := m.Notify(context.Background(), sampleEvent())
	if err == nil || !strings.Contains(err.Error(), "STARTTLS") {
		t.Fatalf("Notify: %v, want a STARTTLS failure", err)
	}
	for range 2 {
		if sess := srv.next(t); sess.index("AUTH") >= 0 || sess.AuthPass != "" {
			t.Errorf("password sent although TLS failed: %v", sess.Commands)
		}
	}
}

func TestEmailRefusesPlainAuthWithoutTLS(t *testing.T) {
	// 127.0.0.2 is loopback but, unlike 127.0.0.1, not "localhost" to net/smtp
	srv := newSMTPServer(t, "127.0.0.2:0", nil)
	m := NewEmail("ops@example.net", srv.config())
	m.BaseDelay = time.Hour // a retry would hang the test
	err := m.Notify(context.Background(), sampleEvent())
	if err == nil || !strings.Contains(err.Error(), "unencrypted") || !strings.Contains(err.Error(), "failed permanently") {
		t.Fatalf("Notify: %v, want a permanent refusal to send the password unencrypted", err)
	}
	if strings.Contains(err.Error(), srv.pass) {
		t.Errorf("error leaks the password: %v", err)
	}
	if sess := srv.next(t); sess.index("AUTH") >= 0 || sess.index("MAIL") >= 0 {
		t.Errorf("conversation %v: nothing may follow EHLO", sess.Commands)
	}
}

func TestEmailRetriesTransientReply(t *testing.T) {
	srv := newSMTPServer(t, "127.0.0.1:0", nil)
	srv.rcptReply = func(n int) string {
		if n == 1 {
			return "451 4.3.0 try again later"
		}
		return ""
	}
	m := NewEmail("ops@example.net", srv.config())
	m.BaseDelay = time.Millisecond
	e := sampleEvent()
	if err := m.Notify(context.Background(), e); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	if n := srv.rcpts.Load(); n != 2 {
		t.Errorf("%d attempts, want 2", n)
	}
	first, second := srv.next(t), srv.next(t)
	if first.Data != "" {
		t.Errorf("first session delivered data despite 451")
	}
	checkMessage(t, second.Data, srv.config(), "ops@example.net", e)
}

func TestEmailDoesNotRetryPermanentReply(t *testing.T) {
	srv := newSMTPServer(t, "127.0.0.1:0", nil)
	srv.rcptReply = func(int) string { return "550 5.1.1 no such user" }
	m := NewEmail("nobody@example.net", srv.config())
	m.BaseDelay = time.Millisecond
	err := m.Notify(context.Background(), sampleEvent())
	if err == nil || !strings.Contains(err.Error(), "550") || !strings.Contains(err.Error(), "RCPT TO nobody@example.net") {
		t.Fatalf("Notify: %v, want the 550 reply to RCPT", err)
	}
	if n := srv.rcpts.Load(); n != 1 {
		t.Errorf("%d attempts, want 1: 5xx is permanent", n)
	}
}

func TestEmailStringHidesPassword(t *testing.T) {
	m := NewEmail("ops@example.net", config.SMTP{Host: "smtp.example.net", Port: 587, Username: "u", Password: "hunter2", From: "p@example.net"})
	if got, want := m.String(), "email ops@example.net via smtp.example.net:587"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if s := sprintf("%v %+v %s", m, m, m); strings.Contains(s, "hunter2") {
		t.Errorf("formatting leaks the password: %s", s)
	}
}

func TestEmailSubjects(t *testing.T) {
	for kind, want := range map[string]string{
		KindFailure:       "[Portico] certificate failure: app.example.net (p256)",
		KindExpiryWarning: "[Portico] certificate expiring: app.example.net (p256)",
		KindRevoked:       "[Portico] certificate revoked: app.example.net (p256)",
		KindRecovered:     "[Portico] certificate recovered: app.example.net (p256)",
	} {
		if got := subject(Event{Kind: kind, Name: "app.example.net", KeyType: "p256"}); got != want {
			t.Errorf("subject(%s) = %q, want %q", kind, got, want)
		}
	}
}
