package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/portico-proxy/portico/config"
	"github.com/portico-proxy/portico/proxy/admin"
	"github.com/portico-proxy/portico/tlsmgr"
)

// clientTimeout bounds one admin API call; a reload re-reads the config and
// applies it, which may take a few seconds with many names.
const clientTimeout = 2 * time.Minute

// now is the clock of `portico certs`; tests set it.
var now = time.Now

// adminClient talks to the admin API of the Portico running with a config:
// [listen] admin says where (host:port or a unix socket path) and
// admin_token is sent as a bearer token.
type adminClient struct {
	addr  string
	token string
	http  *http.Client
}

// errAdminDisabled is returned when the config has no admin API.
var errAdminDisabled = errors.New(`the admin API is disabled: set [listen] admin = "127.0.0.1:2019" in the config and restart portico`)

func newAdminClient(l config.Listen) (*adminClient, error) {
	if l.Admin == "" {
		return nil, errAdminDisabled
	}
	network, addr := "tcp", l.Admin
	if strings.Contains(addr, "/") {
		network = "unix"
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		Proxy: nil, // never through an environment proxy: the API is local
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
		MaxIdleConns: 1,
	}
	return &adminClient{addr: l.Admin, token: l.AdminToken, http: &http.Client{Transport: tr, Timeout: clientTimeout}}, nil
}

// apiError is an answer of the admin API other than 2xx.
type apiError struct {
	status   int
	msg      string
	problems []string
}

func (e *apiError) Error() string { return e.msg }

// call sends a request and decodes a 2xx JSON answer into out (unless nil);
// it returns the raw body too.
func (c *adminClient) call(method, path string, out any) ([]byte, error) {
	// The URL's host is only the Host header: the transport dials c.addr.
	req, err := http.NewRequest(method, "http://localhost"+path, nil)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Header.Set("User-Agent", "portico-cli")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.unreachable(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return nil, fmt.Errorf("admin API at %s: reading the answer: %w", c.addr, err)
	}
	if resp.StatusCode/100 != 2 {
		return body, c.apiError(resp, body)
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return body, fmt.Errorf("admin API at %s: unexpected answer to %s %s: %v", c.addr, method, path, err)
		}
	}
	return body, nil
}

func (c *adminClient) unreachable(err error) error {
	var op *net.OpError
	if errors.As(err, &op) {
		err = op
	}
	hint := "is portico running?"
	if errors.Is(err, os.ErrPermission) {
		hint = "the socket is only open to the user portico runs as: run this command as that user"
	}
	return fmt.Errorf("cannot reach the admin API at %s (%s): %v", c.addr, hint, err)
}

func (c *adminClient) apiError(resp *http.Response, body []byte) error {
	var e admin.Error
	msg := strings.TrimSpace(string(body))
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	if msg == "" {
		msg = resp.Status
	}
	if resp.StatusCode == http.StatusUnauthorized {
		if c.token == "" {
			msg += " (the running portico requires a token: set [listen] admin_token in the config)"
		} else {
			msg += " ([listen] admin_token differs from the running portico's; a changed token takes effect at restart)"
		}
	}
	return &apiError{status: resp.StatusCode, msg: msg, problems: e.Problems}
}

// clientFlags are the flags of the commands that talk to a running Portico.
func clientFlagSet(name string, stderr io.Writer, configPath *string) *flag.FlagSet {
	fs := flag.NewFlagSet("portico "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(configPath, "config", "portico.toml", "config file of the running portico (for [listen] admin and admin_token)")
	return fs
}

// parseAll parses flags placed before and after positional arguments
// ("retry NAME -config FILE" as well as "retry -config FILE NAME") and
// returns the positional ones.
func parseAll(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos, args = append(pos, args[0]), args[1:]
	}
}

// connect loads the config and makes its admin API client; on failure it
// has printed why and returns the exit code. note is printed after the
// problems of a config that does not load.
func connect(path string, stderr io.Writer, note string) (*adminClient, int) {
	cfg, err := config.Load(path)
	if err != nil {
		printConfigErrors(stderr, path, err)
		if note != "" {
			fmt.Fprintln(stderr, note)
		}
		return nil, 1
	}
	c, err := newAdminClient(cfg.Listen)
	if err != nil {
		fmt.Fprintln(stderr, "portico:", err)
		return nil, 1
	}
	return c, 0
}

// fail prints an admin API call's error, with a refused reload's problems.
func fail(stderr io.Writer, err error) int {
	fmt.Fprintln(stderr, "portico:", err)
	var ae *apiError
	if errors.As(err, &ae) {
		for _, p := range ae.problems {
			fmt.Fprintf(stderr, "  %s\n", p)
		}
	}
	return 1
}

func cmdCerts(args []string, stdout, stderr io.Writer) int {
	var path string
	var asJSON bool
	fs := clientFlagSet("certs", stderr, &path)
	fs.BoolVar(&asJSON, "json", false, "print the admin API's JSON instead of a table")
	pos, err := parseAll(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "portico certs: unexpected argument %q\n", pos[0])
		return 2
	}
	c, code := connect(path, stderr, "")
	if c == nil {
		return code
	}
	var certs []tlsmgr.CertStatus
	body, err := c.call(http.MethodGet, "/certificates", &certs)
	if err != nil {
		return fail(stderr, err)
	}
	if asJSON {
		stdout.Write(body)
		return 0
	}
	printCertTable(stdout, certs, now())
	return 0
}

// printCertTable prints one aligned row per certificate and a summary line.
func printCertTable(w io.Writer, certs []tlsmgr.CertStatus, now time.Time) {
	if len(certs) == 0 {
		fmt.Fprintln(w, "no managed certificates")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKEY\tISSUER\tEXPIRES\tRENEW\tFAILURES\tNEXT RETRY\tLAST ERROR")
	failing := 0
	for _, st := range certs {
		if st.Failures > 0 {
			failing++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", st.Name, st.KeyType, orDash(st.Issuer),
			expiresCell(st.NotAfter, now), renewCell(st.RenewAt, now), st.Failures,
			retryCell(st.Failures, st.NextRetry, now), orDash(oneLine(st.LastError, 60)))
	}
	tw.Flush()
	fmt.Fprintf(w, "\n%d certificate(s)", len(certs))
	if failing > 0 {
		fmt.Fprintf(w, ", %d with failures ('portico retry --all' retries them now)", failing)
	}
	fmt.Fprintln(w)
}

const dash = "—"

func orDash(s string) string {
	if s == "" {
		return dash
	}
	return s
}

func expiresCell(t *time.Time, now time.Time) string {
	switch {
	case t == nil:
		return dash
	case t.After(now):
		return "expires in " + tlsmgr.ShortDuration(t.Sub(now))
	}
	return "expired " + tlsmgr.ShortDuration(now.Sub(*t)) + " ago"
}

func renewCell(t *time.Time, now time.Time) string {
	switch {
	case t == nil:
		return dash
	case t.After(now):
		return "renews in " + tlsmgr.ShortDuration(t.Sub(now))
	}
	return "due " + tlsmgr.ShortDuration(now.Sub(*t)) + " ago"
}

func retryCell(failures int, t *time.Time, now time.Time) string {
	switch {
	case failures == 0 || t == nil:
		return dash
	case t.After(now):
		return "retry in " + tlsmgr.ShortDuration(t.Sub(now))
	}
	return "due now"
}

// oneLine folds s onto one line (runs of white space become one space, so
// the table stays aligned) and cuts it to n characters with "…".
func oneLine(s string, n int) string {
	s = strings.Join(strings.FieldsFunc(s, unicode.IsSpace), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func cmdRetry(args []string, stdout, stderr io.Writer) int {
	var path string
	var all bool
	fs := clientFlagSet("retry", stderr, &path)
	fs.BoolVar(&all, "all", false, "retry every certificate with failures")
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: portico retry [-config FILE] NAME\n       portico retry [-config FILE] --all\n\nRetry a failing certificate now instead of at its next scheduled attempt.\n\n")
		fs.PrintDefaults()
	}
	pos, err := parseAll(fs, args)
	if err != nil {
		return 2
	}
	if all == (len(pos) == 1) || len(pos) > 1 {
		fs.Usage()
		return 2
	}
	c, code := connect(path, stderr, "")
	if c == nil {
		return code
	}
	if all {
		var res admin.RetryAllResult
		if _, err := c.call(http.MethodPost, "/retry", &res); err != nil {
			return fail(stderr, err)
		}
		if res.Rescheduled == 0 {
			fmt.Fprintln(stdout, "no certificate has failures: nothing to retry")
		} else {
			fmt.Fprintf(stdout, "retrying %d certificate(s) with failures now; follow with 'portico certs'\n", res.Rescheduled)
		}
		return 0
	}
	name := certName(pos[0])
	// Retrying moves the next attempt of a failing certificate to now; a
	// certificate without failures has none to move: say so rather than
	// "retrying".
	var certs []tlsmgr.CertStatus
	if _, err := c.call(http.MethodGet, "/certificates", &certs); err != nil {
		return fail(stderr, err)
	}
	rows := certsNamed(certs, name)
	var failing []string
	for _, st := range rows {
		if st.Failures > 0 {
			failing = append(failing, fmt.Sprintf("%s (%d failure(s))", st.KeyType, st.Failures))
		}
	}
	if len(rows) > 0 && len(failing) == 0 {
		var state []string
		for _, st := range rows {
			if st.NotAfter == nil {
				state = append(state, st.KeyType+": not obtained yet, its first order is under way")
			} else {
				state = append(state, st.KeyType+": "+expiresCell(st.NotAfter, now())+", "+renewCell(st.RenewAt, now()))
			}
		}
		fmt.Fprintf(stdout, "%s: no failures, nothing to retry: it is renewed on its schedule (%s)\n", rows[0].Name, strings.Join(state, "; "))
		return 0
	}
	var res admin.RetryResult
	if _, err := c.call(http.MethodPost, "/certificates/"+url.PathEscape(name)+"/retry", &res); err != nil {
		return fail(stderr, err)
	}
	label := res.Name
	if len(rows) > 0 {
		label = rows[0].Name
	}
	fmt.Fprintf(stdout, "%s: retrying now: %s; follow with 'portico certs'\n", label, strings.Join(failing, ", "))
	return 0
}

// sanLabel is how `portico certs` names a shared certificate: its first
// name and how many more it holds, "app.example.net (+2 SAN)".
var sanLabel = regexp.MustCompile(`(?i)^(\S+)\s+\(\+(\d+)\s+SAN\)$`)

// certName is a certificate's name as the admin API knows it, from what an
// operator typed: a host name in any case, with or without its final dot,
// or a shared certificate's label as `portico certs` prints it.
func certName(typed string) string {
	typed = strings.TrimSpace(typed)
	host := func(h string) string { return strings.ToLower(strings.TrimSuffix(h, ".")) }
	if m := sanLabel.FindStringSubmatch(typed); m != nil {
		return fmt.Sprintf("%s (+%s SAN)", host(m[1]), m[2])
	}
	return host(typed)
}

// certsNamed returns the certificates (one per key type) that a retry of
// name reaches: those it names, or the shared one that holds it.
func certsNamed(certs []tlsmgr.CertStatus, name string) []tlsmgr.CertStatus {
	var out []tlsmgr.CertStatus
	for _, st := range certs {
		if st.Name == name || slices.Contains(st.Names, name) {
			out = append(out, st)
		}
	}
	return out
}

func cmdReload(args []string, stdout, stderr io.Writer) int {
	var path string
	fs := clientFlagSet("reload", stderr, &path)
	pos, err := parseAll(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "portico reload: unexpected argument %q\n", pos[0])
		return 2
	}
	c, code := connect(path, stderr, "portico reload: nothing sent: the running config stays")
	if c == nil {
		return code
	}
	var res admin.ReloadResult
	if _, err := c.call(http.MethodPost, "/reload", &res); err != nil {
		return fail(stderr, err)
	}
	fmt.Fprintf(stdout, "%s: config %s\n", c.addr, res.Status)
	return 0
}
