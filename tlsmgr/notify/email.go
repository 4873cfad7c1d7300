package notify

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/portico-proxy/portico/config"
)

// DefaultSMTPTimeout bounds one SMTP conversation.
const DefaultSMTPTimeout = 30 * time.Second

// Email sends each Event as a plain-text message through the [smtp] relay.
//
// It upgrades the connection with STARTTLS when the server offers it (port
// 465 means TLS from the start instead) and authenticates with PLAIN when a
// username is configured. PLAIN is never sent over an unencrypted
// connection, except to localhost. Transient failures are retried with
// exponential backoff; SMTP 5xx replies are permanent and are not.
type Email struct {
	// To is the recipient.
	To string
	// TLSConfig is the base configuration for STARTTLS and implicit TLS
	// (nil means system roots); ServerName defaults to the SMTP host.
	TLSConfig *tls.Config
	// LocalName is the name sent with EHLO ("localhost" when empty).
	LocalName string
	// Timeout bounds one attempt (DefaultSMTPTimeout when 0).
	Timeout time.Duration
	// Attempts is how often one event is tried (DefaultAttempts when 0).
	Attempts int
	// BaseDelay is the wait after the first failure, doubled after each
	// further one (DefaultBaseDelay when 0).
	BaseDelay time.Duration
	// MaxDelay caps the wait between attempts (DefaultMaxDelay when 0).
	MaxDelay time.Duration

	smtp config.SMTP
}

// NewEmail returns an Email sending to to through the relay described by
// smtp.
func NewEmail(to string, smtp config.SMTP) *Email {
	return &Email{To: to, smtp: smtp}
}

// String names the target and relay, without credentials.
func (m *Email) String() string {
	return "email " + m.To + " via " + m.addr()
}

func (m *Email) addr() string {
	port := m.smtp.Port
	if port == 0 {
		port = 587
	}
	return net.JoinHostPort(m.smtp.Host, strconv.Itoa(port))
}

// Notify sends e, retrying as configured.
func (m *Email) Notify(ctx context.Context, e Event) error {
	if m.smtp.Host == "" || m.smtp.From == "" {
		return fmt.Errorf("%s: [smtp] needs host and from", m)
	}
	from, err := mail.ParseAddress(m.smtp.From)
	if err != nil {
		return fmt.Errorf("%s: smtp.from %q: %w", m, m.smtp.From, err)
	}
	to, err := mail.ParseAddress(m.To)
	if err != nil {
		return fmt.Errorf("%s: recipient %q: %w", m, m.To, err)
	}
	return retry(ctx, m.Attempts, m.BaseDelay, m.MaxDelay, func(ctx context.Context) error {
		msg, err := m.message(e, from, to, time.Now())
		if err != nil {
			return permanent(err)
		}
		return m.send(ctx, from.Address, to.Address, msg)
	})
}

// send makes one attempt: one SMTP conversation.
func (m *Email) send(ctx context.Context, from, to string, msg []byte) (err error) {
	timeout := m.Timeout
	if timeout <= 0 {
		timeout = DefaultSMTPTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	addr := m.addr()
	host := m.smtp.Host

	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("connect to SMTP relay %s: %w", addr, err)
	}
	// net/smtp knows no contexts: a deadline bounds every read and write,
	// and closing the connection interrupts them when ctx ends early
	defer context.AfterFunc(ctx, func() { _ = conn.Close() })()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	defer func() {
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", err, context.Cause(ctx))
		}
	}()

	tlsConfig := m.tlsConfig(host)
	implicit := m.smtp.Port == 465
	if implicit {
		tc := tls.Client(conn, tlsConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = conn.Close()
			return fmt.Errorf("TLS handshake with SMTP relay %s: %w", addr, err)
		}
		conn = tc
	}
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		_ = conn.Close()
		return smtpErr("greeting from "+addr, err)
	}
	defer c.Close()
	local := m.LocalName
	if local == "" {
		local = "localhost"
	}
	if err := c.Hello(local); err != nil {
		return smtpErr("EHLO", err)
	}
	secure := implicit
	if !implicit {
		if ok, _ := c.Extension("STARTTLS"); ok {
			if err := c.StartTLS(tlsConfig); err != nil {
				return smtpErr("STARTTLS with "+addr, err)
			}
			secure = true
		}
	}
	if m.smtp.Username != "" {
		if !secure && !isLocalhost(host) {
			return permanent(fmt.Errorf("SMTP relay %s offers no STARTTLS: refusing to send the password unencrypted", addr))
		}
		if ok, _ := c.Extension("AUTH"); !ok {
			return permanent(fmt.Errorf("SMTP relay %s offers no AUTH but smtp.username is set", addr))
		}
		if err := c.Auth(smtp.PlainAuth("", m.smtp.Username, m.smtp.Password, host)); err != nil {
			return smtpErr("AUTH PLAIN as "+m.smtp.Username, err)
		}
	}
	if err := c.Mail(from); err != nil {
		return smtpErr("MAIL FROM "+from, err)
	}
	if err := c.Rcpt(to); err != nil {
		return smtpErr("RCPT TO "+to, err)
	}
	w, err := c.Data()
	if err != nil {
		return smtpErr("DATA", err)
	}
	if _, err := w.Write(msg); err != nil {
		return smtpErr("DATA", err)
	}
	if err := w.Close(); err != nil {
		return smtpErr("end of DATA", err)
	}
	// the message is accepted: a failed QUIT does not matter
	_ = c.Quit()
	return nil
}

func (m *Email) tlsConfig(host string) *tls.Config {
	var c *tls.Config
	if m.TLSConfig != nil {
		c = m.TLSConfig.Clone()
	} else {
		c = &tls.Config{}
	}
	if c.ServerName == "" {
		c.ServerName = host
	}
	if c.MinVersion == 0 {
		c.MinVersion = tls.VersionTLS12
	}
	return c
}

// smtpErr adds context; a 5xx reply is permanent.
func smtpErr(step string, err error) error {
	err = fmt.Errorf("SMTP %s: %w", step, err)
	var te *textproto.Error
	if errors.As(err, &te) && te.Code >= 500 && te.Code < 600 {
		return permanent(err)
	}
	return err
}

// isLocalhost matches net/smtp's own test for where PLAIN may go unencrypted.
func isLocalhost(host string) bool {
	return host == "localhost" || host == "127.0.0.1" || host == "::1"
}

// subjects names each kind in the Subject line.
var subjects = map[string]string{
	KindFailure:       "certificate failure",
	KindExpiryWarning: "certificate expiring",
	KindRevoked:       "certificate revoked",
	KindRecovered:     "certificate recovered",
}

// hints is the "what to check" line for each kind.
var hints = map[string]string{
	KindFailure: "What to check: the name's DNS points at Portico, ports 80 and 443 are reachable from the internet " +
		"(or the DNS provider credentials work, for DNS-01), the CA's status page and rate limits, and Portico's log for this name.",
	KindExpiryWarning: "What to check: why renewal has not succeeded (Portico's log and failure ledger for this name); " +
		"the certificate keeps being served until it expires, then clients will refuse it.",
	KindRevoked:   "What to check: whether the key may have been compromised, and that a replacement certificate is obtained (Portico's log for this name).",
	KindRecovered: "What to check: nothing; this closes the earlier failure reports for this name.",
}

// subject is "[Portico] certificate failure: app.example.net (p256)".
func subject(e Event) string {
	s, ok := subjects[e.Kind]
	if !ok {
		s = "certificate " + strings.ReplaceAll(e.Kind, "_", " ")
	}
	return "[Portico] " + s + ": " + describe(e)
}

// body is the plain-text body, before transfer encoding.
func body(e Event, now time.Time) string {
	var b strings.Builder
	msg := e.Message
	if msg == "" {
		msg = defaultMessage(e)
	}
	b.WriteString(msg)
	b.WriteString("\n\n")
	field := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, "%-12s%s\n", k+":", v)
		}
	}
	at := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		s := t.UTC().Format("2006-01-02 15:04:05 MST")
		if d := t.Sub(now); d > 0 {
			s += " (in " + human(d) + ")"
		} else if d < -time.Second {
			s += " (" + human(-d) + " ago)"
		}
		return s
	}
	field("Name", e.Name)
	field("Key type", e.KeyType)
	field("CA", e.CA)
	if e.Failures > 0 {
		field("Failures", strconv.Itoa(e.Failures))
	}
	field("Next retry", at(e.NextRetry))
	field("Not after", at(e.NotAfter))
	field("Error", e.Error)
	field("Instance", e.Instance)
	if !e.Time.IsZero() {
		field("Time", e.Time.UTC().Format(time.RFC3339))
	}
	if h, ok := hints[e.Kind]; ok {
		b.WriteString("\n")
		b.WriteString(h)
		b.WriteString("\n")
	}
	return b.String()
}

// message builds the whole RFC 5322 message with CRLF line ends; the body
// is quoted-printable so long error lines and non-ASCII survive.
func (m *Email) message(e Event, from, to *mail.Address, now time.Time) ([]byte, error) {
	var buf bytes.Buffer
	header := func(k, v string) {
		buf.WriteString(k + ": " + oneLine(v) + "\r\n")
	}
	header("From", from.String())
	header("To", to.String())
	header("Subject", mime.QEncoding.Encode("utf-8", subject(e)))
	header("Date", now.Format(time.RFC1123Z))
	header("Message-ID", messageID(from.Address, e.Instance))
	header("Auto-Submitted", "auto-generated")
	header("MIME-Version", "1.0")
	header("Content-Type", "text/plain; charset=utf-8")
	header("Content-Transfer-Encoding", "quoted-printable")
	buf.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&buf)
	text := strings.ReplaceAll(body(e, now), "\r\n", "\n")
	if _, err := qp.Write([]byte(strings.ReplaceAll(text, "\n", "\r\n"))); err != nil {
		return nil, fmt.Errorf("encode message body: %w", err)
	}
	if err := qp.Close(); err != nil {
		return nil, fmt.Errorf("encode message body: %w", err)
	}
	buf.WriteString("\r\n")
	return buf.Bytes(), nil
}

// messageID is "<random.unixnano@domain>", the domain taken from the From
// address, else the instance's hostname.
func messageID(from, instance string) string {
	domain := ""
	if i := strings.LastIndexByte(from, '@'); i >= 0 {
		domain = from[i+1:]
	}
	if domain == "" {
		domain = instance
	}
	if domain == "" {
		domain, _ = os.Hostname()
	}
	if domain == "" {
		domain = "portico.invalid"
	}
	var r [12]byte
	_, _ = rand.Read(r[:])
	return "<" + hex.EncodeToString(r[:]) + "." + strconv.FormatInt(time.Now().UnixNano(), 36) + "@" + domain + ">"
}
