package config

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Load reads, defaults and validates the config file at path. On any problem
// it returns Errors listing every one found, each with file, line, key and fix.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config %s: %w (fix: pass the right file with -config)", path, err)
	}
	return Parse(path, data)
}

// Parse is Load for config text already in memory; path is used for error
// messages and to resolve relative paths.
func Parse(path string, data []byte) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	v := &validator{file: path, dir: filepath.Dir(abs), lines: indexLines(string(data))}
	// Syntax first, on its own: a syntax error stops the check, as nothing
	// after it can be read.
	var top map[string]toml.Primitive
	md, err := toml.Decode(string(data), &top)
	if err != nil {
		return nil, Errors{v.decodeProblem(data, err, "correct the TOML syntax on that line")}
	}
	// Then every value that has the right type; the others are problems,
	// reported with the rest.
	cfg := &Config{Path: abs}
	d := &decoder{md: &md, data: data, v: v}
	d.decodeTable(top, reflect.ValueOf(cfg).Elem(), "")
	v.unknownKeys(md)
	cfg.ACMEDefined = md.IsDefined("acme")
	v.resolvePlaceholders(cfg)
	unread := len(v.problems)
	applyDefaults(cfg, md)
	v.somethingToServe(md, data, cfg)
	v.validate(cfg)
	if len(v.problems) > 0 {
		return nil, v.report(unread)
	}
	cfg.Warnings = v.warnings
	return cfg, nil
}

// typeErr matches the decoder's type errors, which are plain errors whose
// text carries the line and the key.
var typeErr = regexp.MustCompile(`^toml: (?:line (\d+) )?\(last key "([^"]*)"\): (.*)$`)

// decodeProblem turns an error of the TOML decoder into a Problem with the
// line and key it names.
func (v *validator) decodeProblem(data []byte, err error, fix string) Problem {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		line := pe.Position.Line
		// An error found at a line's end (an unclosed string or header) is
		// reported by the lexer on the next line; the offset says which
		// line the operator must fix.
		if pos := pe.Position; pos.Len > 0 && pos.Start >= 0 && pos.Start < len(data) {
			line = strings.Count(string(data[:pos.Start]), "\n") + 1
		}
		return Problem{File: v.file, Line: line, Key: v.keyAt(pe.LastKey, line), Msg: pe.Message, Fix: fix}
	}
	if m := typeErr.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		return Problem{File: v.file, Line: line, Key: v.keyAt(m[2], line), Msg: m[3], Fix: fix}
	}
	return Problem{File: v.file, Msg: err.Error(), Fix: fix}
}

// keyAt names the key the decoder calls loose ("site.hosts") as the operator
// sees it: "site[2].hosts" when the line is in the second [[site]].
func (v *validator) keyAt(loose string, line int) string {
	for _, exact := range v.lines.occurrences[loose] {
		if v.lines.exact[exact] == line {
			return display(exact)
		}
	}
	return loose
}

// unknownKeys reports every key the schema does not have. A key of an
// unknown table is not reported again: the table is. Keys of the n-th
// [[site]] are named and located as site[n].
func (v *validator) unknownKeys(md toml.MetaData) {
	seen := map[string]int{}
	var reported []string
	for _, k := range md.Keys() {
		loose := k.String()
		n := seen[loose]
		seen[loose] = n + 1
		if inSchema(k) || slices.ContainsFunc(reported, func(r string) bool { return strings.HasPrefix(loose, r+".") }) {
			continue
		}
		reported = append(reported, loose)
		exact := v.lines.occurrence(loose, n)
		line := v.lines.line(exact)
		if line == 0 {
			line = v.lines.line(loose)
		}
		v.problems = append(v.problems, Problem{File: v.file, Line: line, Key: display(exact),
			Msg: "unknown key", Fix: unknownKeyFix(k)})
	}
}

func unknownKeyFix(k toml.Key) string {
	known := knownKeys(k[:len(k)-1])
	if len(known) == 0 {
		return "remove it; see the configuration reference in README.md"
	}
	last := k[len(k)-1]
	best, bestDist := "", 3 // suggest only keys at most 2 edits away
	for _, c := range known {
		if d := editDistance(c, last); d < bestDist && d < len(c) {
			best, bestDist = c, d
		}
	}
	if best != "" {
		return fmt.Sprintf("did you mean %q?", best)
	}
	return "allowed here: " + strings.Join(known, ", ")
}

// knownKeys lists the keys allowed in a table, from the schema's toml tags.
func knownKeys(table []string) []string {
	var t any = Config{}
	for _, name := range table {
		f, ok := fieldByTag(t, name)
		if !ok {
			return nil
		}
		t = f
	}
	return tagsOf(t)
}

func applyDefaults(cfg *Config, md toml.MetaData) {
	a := &cfg.ACME
	if a.CA == "" {
		a.CA = DefaultCA
	}
	if len(a.Challenges) == 0 {
		a.Challenges = DefaultChallenges()
	}
	if len(a.KeyTypes) == 0 {
		a.KeyTypes = DefaultKeyTypes()
	}
	if a.AccountKeyType == "" {
		a.AccountKeyType = DefaultAccountKey
	}
	if cfg.Listen.HTTP == "" && !md.IsDefined("listen", "http") {
		cfg.Listen.HTTP = DefaultHTTP
	}
	if cfg.Listen.HTTPS == "" && !md.IsDefined("listen", "https") {
		cfg.Listen.HTTPS = DefaultHTTPS
	}
	if !md.IsDefined("listen", "max_connections") {
		cfg.Listen.MaxConnections = DefaultMaxConnections
	}
	if !md.IsDefined("listen", "header_timeout") {
		cfg.Listen.HeaderTimeout = Duration(DefaultHeaderTimeout)
	}
	if !md.IsDefined("listen", "idle_timeout") {
		cfg.Listen.IdleTimeout = Duration(DefaultIdleTimeout)
	}
	if !md.IsDefined("listen", "max_header_bytes") {
		cfg.Listen.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	s := &cfg.Storage
	if s.Backend == "" {
		s.Backend = "file"
	}
	if s.Path == "" {
		s.Path = DefaultStoragePath
	}
	if !filepath.IsAbs(s.Path) {
		s.Path = filepath.Join(filepath.Dir(cfg.Path), s.Path)
	}
	if s.Prefix == "" {
		s.Prefix = DefaultPrefix
	}
	r := &cfg.Renewal
	if !md.IsDefined("renewal", "ratio") {
		r.Ratio = DefaultRatio
	}
	if !md.IsDefined("renewal", "check_interval") {
		r.CheckInterval = Duration(DefaultCheckInterval)
	}
	if !md.IsDefined("renewal", "max_concurrent") {
		r.MaxConcurrent = DefaultMaxConcurrent
	}
	if len(r.Backoff) == 0 {
		r.Backoff = DefaultBackoff()
	}
	if cfg.OnDemand != nil && !md.IsDefined("on_demand", "max_per_minute") {
		cfg.OnDemand.MaxPerMinute = 10
	}
	cfg.Listen.DefaultSNI = strings.ToLower(strings.TrimSuffix(cfg.Listen.DefaultSNI, "."))
	dnsDefaults := func(d *DNS) {
		if d != nil && d.PropagationTimeout == 0 {
			d.PropagationTimeout = Duration(2 * time.Minute)
		}
	}
	dnsDefaults(cfg.ACME.DNS)
	for i := range cfg.Sites {
		dnsDefaults(cfg.Sites[i].DNS)
		if cfg.Sites[i].Certificate == "" {
			cfg.Sites[i].Certificate = "per-host"
		}
	}
	if cfg.SMTP.Port == 0 {
		cfg.SMTP.Port = 587
	}
	for i := range cfg.Sites {
		for j, h := range cfg.Sites[i].Hosts {
			cfg.Sites[i].Hosts[j] = strings.ToLower(strings.TrimSuffix(h, "."))
		}
	}
}

type validator struct {
	file     string
	dir      string
	lines    lineIndex
	problems []Problem
	warnings []string
}

// bad records a problem at a key path such as "site.1.hosts".
func (v *validator) bad(path, fix, format string, args ...any) {
	v.problems = append(v.problems, Problem{File: v.file, Line: v.lines.line(path), Key: display(path),
		Msg: fmt.Sprintf(format, args...), Fix: fix})
}

// display turns "site.1.hosts" into "site[2].hosts": sites are numbered from 1
// for operators.
func display(path string) string {
	parts := strings.Split(path, ".")
	var b strings.Builder
	for i, p := range parts {
		if n, err := strconv.Atoi(p); err == nil && i > 0 {
			fmt.Fprintf(&b, "[%d]", n+1)
			continue
		}
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(p)
	}
	return b.String()
}

func (v *validator) validate(cfg *Config) {
	v.validateListen(cfg)
	v.validateStorage(cfg)
	v.validateRenewal(cfg)
	covered := v.validateCertificates(cfg)
	pools := v.validatePools(cfg)
	needACME := v.validateSites(cfg, covered, pools)
	v.validateLog(cfg)
	if cfg.ACMEDefined || needACME {
		v.validateACME(cfg)
	}
	v.validateNotify(cfg)
	v.validateOnDemand(cfg)
	if h := cfg.Listen.DefaultSNI; h != "" {
		if err := CheckHost(h); err != nil || strings.HasPrefix(h, "*") {
			v.bad("listen.default_sni", "name a host of one of the sites, e.g. \"a.example.net\"", "%q is not a host name", h)
		}
	}
}

func (v *validator) validateACME(cfg *Config) {
	a := &cfg.ACME
	local := a.CA == "local"
	if local {
		// Portico's own CA has no account and no terms
	} else if strings.TrimSpace(a.Email) == "" {
		v.bad("acme.email", `set email = "you@example.net": the CA's account contact is the operator`, "missing: an ACME account needs the operator's email")
	} else if !strings.Contains(a.Email, "@") || strings.ContainsAny(a.Email, " <>") {
		v.bad("acme.email", "write a plain address such as ops@example.net", "%q is not an email address", a.Email)
	}
	if !a.AgreeTOS && !local {
		v.bad("acme.agree_tos", "read the CA's terms of service (its URL is logged at start) and set agree_tos = true",
			"must be true: the CA requires agreement to its terms")
	}
	if a.CA != "local" {
		u, err := url.Parse(a.CA)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			v.bad("acme.ca", `use the CA's ACME directory URL (https://...) or "local"`, "%q is not an ACME directory URL", redactURL(a.CA))
		}
	}
	for i, root := range a.CARoots {
		path := v.resolve(root)
		a.CARoots[i] = path
		data, err := os.ReadFile(path)
		if err != nil {
			v.bad("acme.ca_roots", "point to a readable PEM file with the CA's root certificate", "cannot read %s: %v", path, unwrapPathErr(err))
			continue
		}
		if !hasPEMCert(data) {
			v.bad("acme.ca_roots", "the file must hold PEM \"CERTIFICATE\" blocks", "%s holds no PEM certificate", path)
		}
	}
	for _, c := range a.Challenges {
		if !slices.Contains([]string{"http-01", "tls-alpn-01", "dns-01"}, c) {
			v.bad("acme.challenges", "allowed: http-01, tls-alpn-01, dns-01", "unknown challenge type %q", c)
		}
	}
	if slices.Contains(a.Challenges, "dns-01") && a.DNS == nil {
		v.bad("acme.challenges", `add an [acme.dns] table with provider = "cloudflare", "route53" or "rfc2136"`, "dns-01 needs a DNS provider")
	}
	if a.DNS != nil {
		v.validateDNS("acme.dns", a.DNS)
	}
	if a.ValidationRedirect != "" {
		if u, err := url.Parse(a.ValidationRedirect); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			v.bad("acme.validation_redirect", `write the validation server's base URL, e.g. "http://validation.internal"`, "not a base URL")
		}
	}
	for _, ca := range a.FallbackCA {
		if u, err := url.Parse(ca); err != nil || u.Scheme != "https" && u.Scheme != "http" || u.Host == "" {
			v.bad("acme.fallback_ca", "list ACME directory URLs (https://...)", "%q is not an ACME directory URL", redactURL(ca))
		}
	}
	if (a.EABKeyID == "") != (a.EABHMAC == "") {
		v.bad("acme.eab_kid", "set both eab_kid and eab_hmac (from the CA's account page), or neither", "external account binding needs both the key id and the HMAC key")
	}
	if a.EABHMAC != "" && !isBase64URL(a.EABHMAC) {
		v.bad("acme.eab_hmac", "paste the HMAC key exactly as the CA shows it (base64url)", "not a base64url key")
	}
	if a.Profile != "" && !isToken(a.Profile) {
		v.bad("acme.profile", `use a profile name the CA lists, e.g. "classic", "tlsserver" or "shortlived"`, "not a profile name")
	}
	var rsa, ec int
	for _, kt := range a.KeyTypes {
		if !slices.Contains(AllowedKeyTypes(), kt) {
			v.bad("acme.key_types", "allowed: "+strings.Join(AllowedKeyTypes(), ", "), "key type %q is not allowed by the key policy", kt)
			continue
		}
		if IsRSA(kt) {
			rsa++
		} else {
			ec++
		}
	}
	if rsa > 1 || ec > 1 {
		v.bad("acme.key_types", `for example key_types = ["rsa2048", "p256"]`, "at most one RSA and one ECDSA key type (got %v)", a.KeyTypes)
	}
	if !slices.Contains(AllowedKeyTypes(), a.AccountKeyType) {
		v.bad("acme.account_key_type", "allowed: "+strings.Join(AllowedKeyTypes(), ", "), "key type %q is not allowed by the key policy", a.AccountKeyType)
	}
}

func (v *validator) validateListen(cfg *Config) {
	for _, l := range []struct{ key, addr string }{{"listen.http", cfg.Listen.HTTP}, {"listen.https", cfg.Listen.HTTPS}} {
		key, addr := l.key, l.addr
		if addr == "" {
			continue // "" disables the listener
		}
		if _, port, err := net.SplitHostPort(addr); err != nil || !validPort(port) {
			v.bad(key, `write host:port, e.g. ":443" or "127.0.0.1:8443"`, "%q is not a listen address", addr)
		}
	}
	if cfg.Listen.HTTPS == "" {
		v.bad("listen.https", `set https = ":443"`, "the HTTPS listener cannot be disabled")
	}
	if a := cfg.Listen.Admin; a != "" && !strings.Contains(a, "/") {
		if host, port, err := net.SplitHostPort(a); err != nil || !validPort(port) {
			v.bad("listen.admin", `write host:port such as "127.0.0.1:2019", a unix socket path, or "" to disable`, "%q is not a listen address", a)
		} else if !isLoopbackHost(host) && strings.TrimSpace(cfg.Listen.AdminToken) == "" {
			// Pointed at the admin line: that is what makes the token necessary.
			v.problems = append(v.problems, Problem{File: v.file, Line: v.lines.line("listen.admin"), Key: "listen.admin_token",
				Msg: fmt.Sprintf("missing: admin = %q is reachable from other machines, so the admin API needs a token", a),
				Fix: `set admin_token = "{env.PORTICO_ADMIN_TOKEN}" in [listen] and export a long random value, or listen on "127.0.0.1:2019" or a unix socket path`})
		}
	}
	v.validateHTTP3(&cfg.Listen)
	v.validateAdminToken(cfg.Listen.AdminToken)
	v.validateHardening(&cfg.Listen)
	v.sharedAddresses(&cfg.Listen)
}

// validateHTTP3 checks that http3 has a UDP port to listen on: QUIC runs
// on the port of the https address, on the same host, so https must be a
// host:port (checked as such above). It cannot be off today; this check
// says why http3 needs it should that change.
func (v *validator) validateHTTP3(l *Listen) {
	if l.HTTP3 && l.HTTPS == "" {
		v.bad("listen.http3", `set https = ":443", or http3 = false`, "HTTP/3 runs on the UDP port of the https listener, and https is off")
	}
}

// validateHardening checks the [listen] keys that protect the listeners
// from slow and hostile clients.
func (v *validator) validateHardening(l *Listen) {
	for _, p := range l.TrustedProxies {
		_, err := ParseTrustedProxy(p)
		switch {
		case err != nil:
			v.bad("listen.trusted_proxies", `list IP addresses or CIDR networks of your load balancers, e.g. ["10.0.0.0/8", "192.168.1.5"]`,
				"%q: %v", p, err)
		case isEverywhere(p):
			v.warnings = append(v.warnings, fmt.Sprintf(
				"listen.trusted_proxies holds %q, which trusts every client: anyone can then set the X-Forwarded-For, X-Forwarded-Proto and X-Forwarded-Host your upstreams see; list only your load balancers' addresses", p))
		}
	}
	for _, p := range l.ProxyProtocol {
		_, err := ParseTrustedProxy(p)
		switch {
		case err != nil:
			v.bad("listen.proxy_protocol", `list IP addresses or CIDR networks of the load balancers that send PROXY headers, e.g. ["10.0.0.0/8"]`,
				"%q: %v", p, err)
		case isEverywhere(p):
			v.warnings = append(v.warnings, fmt.Sprintf(
				"listen.proxy_protocol holds %q: anyone who reaches the listeners directly can then claim any client address with a PROXY header; list only your load balancers' addresses", p))
		}
	}
	if l.MaxConnections < 0 {
		v.bad("listen.max_connections", "use 0 (no limit) or a positive number such as 10000", "%d is negative", l.MaxConnections)
	}
	for _, d := range []struct {
		key string
		d   Duration
		eg  string
	}{{"listen.header_timeout", l.HeaderTimeout, `"10s"`}, {"listen.idle_timeout", l.IdleTimeout, `"2m"`}} {
		switch {
		case d.d < 0:
			v.bad(d.key, "use a positive duration such as "+d.eg, "%v is negative", d.d.Std())
		case d.d == 0:
			v.bad(d.key, "use a positive duration such as "+d.eg+"; leave the key out for the default",
				"0 would let a client hold a connection open forever")
		}
	}
	if n := l.MaxHeaderBytes; n < MinMaxHeaderBytes || n > MaxMaxHeaderBytes {
		v.bad("listen.max_header_bytes", fmt.Sprintf("use a size between %d (4 KiB) and %d (1 MiB), e.g. %d", MinMaxHeaderBytes, MaxMaxHeaderBytes, DefaultMaxHeaderBytes),
			"%d bytes is out of range", n)
	}
}

// ParseTrustedProxy parses one trusted_proxies (or proxy_protocol) entry:
// an IP address (a network of one) or a CIDR network. Host bits after the
// mask are ignored.
func ParseTrustedProxy(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, errors.New("not a CIDR network such as 10.0.0.0/8")
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			// peers are compared unmapped: ::ffff:10.0.0.0/104 is 10.0.0.0/8
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, errors.New("not an IP address or CIDR network")
	}
	if a.Zone() != "" {
		return netip.Prefix{}, errors.New("an IPv6 zone cannot be trusted: write the address without %zone")
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// isEverywhere reports whether a trusted_proxies entry is a /0 network.
func isEverywhere(s string) bool {
	p, err := ParseTrustedProxy(s)
	return err == nil && p.Bits() == 0
}

// isLoopbackHost reports whether a listen host only accepts connections
// from this machine: localhost or a loopback IP ("" means every interface).
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// minAdminToken is the token length under which Portico warns.
const minAdminToken = 16

// validateAdminToken checks that the token can travel in an HTTP header.
// Messages never quote it.
func (v *validator) validateAdminToken(tok string) {
	if tok == "" {
		return
	}
	for _, c := range tok {
		if c <= ' ' || c == 0x7f || c > 0x7e {
			v.bad("listen.admin_token", "use printable ASCII without spaces, e.g. the output of `openssl rand -hex 32`",
				"the token holds a space, control or non-ASCII character, which cannot be sent in an Authorization header")
			return
		}
	}
	if len(tok) < minAdminToken {
		v.warnings = append(v.warnings, fmt.Sprintf(
			"listen.admin_token is shorter than %d characters: use a long random value, e.g. the output of `openssl rand -hex 32`", minAdminToken))
	}
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 0 && n <= 65535
}

func (v *validator) validateStorage(cfg *Config) {
	s := &cfg.Storage
	switch s.Backend {
	case "file":
	case "redis":
		if v.validateRedisTopology(s) {
			break
		}
		// The URL may hold a password: messages name its scheme, never its text.
		const fix = "use redis://[user:password@]host:port/db, or rediss:// for TLS"
		u, err := url.Parse(s.RedisURL)
		switch {
		case s.RedisURL == "":
			v.bad("storage.redis_url", `set redis_url = "redis://host:6379/0"`, "missing: the redis backend needs a URL")
		case schemeOf(s.RedisURL) != "redis" && schemeOf(s.RedisURL) != "rediss":
			v.bad("storage.redis_url", fix, "not a Redis URL: scheme %q, want redis or rediss", schemeOf(s.RedisURL))
		case err != nil:
			v.bad("storage.redis_url", fix+"; percent-encode special characters in the password", "not a valid URL")
		case u.Hostname() == "":
			v.bad("storage.redis_url", fix, "no host in the Redis URL")
		}
	default:
		v.bad("storage.backend", `use "file" or "redis"`, "unknown backend %q", s.Backend)
	}
}

// schemeOf returns only the scheme of a URL, so that an error never echoes a
// password written in it.
func schemeOf(raw string) string {
	i := strings.Index(raw, "://")
	if i <= 0 {
		return ""
	}
	for _, c := range raw[:i] {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.') {
			return ""
		}
	}
	return strings.ToLower(raw[:i])
}

// redactURL hides the user and password of a URL written in the config, so
// an error about it can quote the rest. It works on the text, so it also
// redacts URLs that do not parse; to be safe it hides everything up to the
// last "@", even if that "@" is in the path.
func redactURL(raw string) string {
	at := strings.LastIndexByte(raw, '@')
	if at < 0 {
		return raw
	}
	start := 0
	if i := strings.Index(raw, "://"); i >= 0 && i < at {
		start = i + 3
	}
	return raw[:start] + "REDACTED" + raw[at:]
}

func (v *validator) validateRenewal(cfg *Config) {
	r := &cfg.Renewal
	if r.Ratio <= 0 || r.Ratio >= 1 {
		v.bad("renewal.ratio", "use a fraction such as 0.3333 (one third of the lifetime left)", "%v is not between 0 and 1", r.Ratio)
	}
	if r.CheckInterval.Std() < time.Second {
		v.bad("renewal.check_interval", `use a duration of at least "1s", e.g. "10m"`, "%v is too short", r.CheckInterval.Std())
	}
	if r.MaxConcurrent < 1 {
		v.bad("renewal.max_concurrent", "use 1 or more", "%d orders at once would stop all renewals", r.MaxConcurrent)
	}
	for _, d := range r.Backoff {
		if d.Std() <= 0 {
			v.bad("renewal.backoff", `use positive durations, e.g. ["1m", "10m", "100m", "24h"]`, "step %v is not positive", d.Std())
		}
	}
}

// validateCertificates checks [[certificate]] files and returns the names they
// cover, which need no ACME.
func (v *validator) validateCertificates(cfg *Config) map[string]bool {
	covered := map[string]bool{}
	for i := range cfg.Certificates {
		c := &cfg.Certificates[i]
		base := fmt.Sprintf("certificate.%d", i)
		c.Cert, c.Key = v.resolve(c.Cert), v.resolve(c.Key)
		names, err := CertificateNames(c.Cert, c.Key)
		if err != nil {
			v.bad(base, "cert must be a PEM chain (leaf first) and key its PEM private key", "%v", err)
			continue
		}
		for _, n := range names {
			covered[strings.ToLower(n)] = true
		}
	}
	return covered
}

// validateSites checks every site and reports whether any host needs a
// certificate from ACME.
func (v *validator) validateSites(cfg *Config, covered, pools map[string]bool) bool {
	owner := map[string]int{}
	needACME := false
	for i := range cfg.Sites {
		s := &cfg.Sites[i]
		base := fmt.Sprintf("site.%d", i)
		if len(s.Hosts) == 0 {
			v.bad(base+".hosts", `list the names this site answers, e.g. hosts = ["app.example.net"]`, "missing: a site needs at least one host")
		}
		for _, h := range s.Hosts {
			if err := CheckHost(h); err != nil {
				v.bad(base+".hosts", "use a DNS name such as app.example.net (letters, digits, hyphens; * only as the whole first label)", "%q: %v", h, err)
				continue
			}
			if j, dup := owner[h]; dup {
				v.bad(base+".hosts", "keep each host in one site only", "%q is already in site[%d]", h, j+1)
				continue
			}
			owner[h] = i
			if strings.HasPrefix(h, "*.") && !covered[h] && !slices.Contains(s.EffectiveChallenges(cfg.ACME), "dns-01") {
				v.bad(base+".hosts", `wildcard certificates need challenges = ["dns-01"] (in [acme] or in the site) and a DNS provider, or a [[certificate]] that covers the name`,
					"wildcard host %q cannot be validated with %s", h, strings.Join(s.EffectiveChallenges(cfg.ACME), "/"))
			}
			if !covered[h] && !coveredByWildcard(h, covered) {
				needACME = true
			}
		}
		v.validateSiteACME(cfg, s, base)
		v.validateSiteRouting(base, s, pools)
		for _, up := range s.Upstreams {
			if err := checkUpstream(up); err != nil {
				v.bad(base+".upstreams", "write upstreams as http://host:port or https://host:port", "%q: %v", redactURL(up), err)
			}
		}
		v.validateCompress(base, s.Compress)
		if s.HSTSMaxAge < 0 {
			v.bad(base+".hsts_max_age", `use "0s" (off) or a positive duration such as "1440h"`, "negative duration")
		} else if s.HSTSMaxAge > 0 && len(s.Hosts) > 0 {
			v.warnings = append(v.warnings, fmt.Sprintf(
				"site[%d] (%s): hsts_max_age = %q tells browsers to refuse plain HTTP for this site for %s after their last visit: moving it later to a host without HTTPS breaks it for returning visitors, and certificate errors can no longer be clicked through",
				i+1, s.Hosts[0], time.Duration(s.HSTSMaxAge).String(), humanDuration(s.HSTSMaxAge.Std())))
		}
	}
	return needACME
}

// CompressEncodings are the content codings a site's compress may list.
func CompressEncodings() []string { return []string{"zstd", "gzip"} }

// validateCompress checks a site's compress list: known codings, each once.
func (v *validator) validateCompress(base string, list []string) {
	seen := map[string]bool{}
	for _, e := range list {
		switch {
		case !slices.Contains(CompressEncodings(), e):
			v.bad(base+".compress", `allowed: "zstd", "gzip", in the order the site prefers them, e.g. compress = ["zstd", "gzip"]`, "unknown encoding %q", e)
		case seen[e]:
			v.bad(base+".compress", "list each encoding once", "%q is listed twice", e)
		}
		seen[e] = true
	}
}

// validateSiteACME checks a site's certificate mode and its challenge
// overrides.
func (v *validator) validateSiteACME(cfg *Config, s *Site, base string) {
	switch s.Certificate {
	case "", "per-host":
	case "shared":
		if limit := SANLimit(cfg.ACME.Profile); len(s.Hosts) > limit {
			v.bad(base+".hosts", fmt.Sprintf("split the site: a shared certificate holds at most %d names with profile %q", limit, profileName(cfg.ACME.Profile)),
				"%d hosts in one shared certificate", len(s.Hosts))
		}
	default:
		v.bad(base+".certificate", `use "per-host" (default) or "shared"`, "unknown certificate mode %q", s.Certificate)
	}
	for _, c := range s.Challenges {
		if !slices.Contains([]string{"http-01", "tls-alpn-01", "dns-01"}, c) {
			v.bad(base+".challenges", "allowed: http-01, tls-alpn-01, dns-01", "unknown challenge type %q", c)
		}
	}
	if s.DNS != nil {
		v.validateDNS(base+".dns", s.DNS)
	}
	if slices.Contains(s.Challenges, "dns-01") && s.DNS == nil && cfg.ACME.DNS == nil {
		v.bad(base+".challenges", "add [site.dns] or [acme.dns] with a provider", "dns-01 needs a DNS provider")
	}
}

// SANLimit is how many names one certificate may hold with an ACME profile
// (Let's Encrypt's limits: 100 for classic, 25 for tlsserver and shortlived).
func SANLimit(profile string) int {
	switch profile {
	case "tlsserver", "shortlived":
		return 25
	}
	return 100
}

func profileName(p string) string {
	if p == "" {
		return "classic"
	}
	return p
}

// EffectiveChallenges are the site's own challenges, or [acme]'s.
func (s Site) EffectiveChallenges(a ACME) []string {
	if len(s.Challenges) > 0 {
		return s.Challenges
	}
	return a.Challenges
}

// EffectiveDNS is the site's DNS provider settings, or [acme]'s.
func (s Site) EffectiveDNS(a ACME) *DNS {
	if s.DNS != nil {
		return s.DNS
	}
	return a.DNS
}

func (v *validator) validateDNS(base string, d *DNS) {
	// one judge for `validate` and the running Portico: see dnscheck.go
	for _, p := range CheckDNS(d) {
		path := base + "." + p.Key
		line := v.lines.line(path)
		if i := strings.IndexByte(p.Key, '['); i > 0 {
			line = v.lines.line(base + "." + p.Key[:i]) // resolvers[1]: the resolvers line
		}
		v.problems = append(v.problems, Problem{File: v.file, Line: line, Key: display(base) + "." + p.Key, Msg: p.Msg, Fix: p.Fix})
	}
}

var (
	tokenRe   = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
	base64URL = regexp.MustCompile(`^[A-Za-z0-9_-]+={0,2}$`)
)

func isToken(s string) bool     { return tokenRe.MatchString(s) }
func isBase64URL(s string) bool { return base64URL.MatchString(s) }

func (v *validator) validateOnDemand(cfg *Config) {
	od := cfg.OnDemand
	if od == nil {
		return
	}
	if u, err := url.Parse(od.Ask); od.Ask == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.bad("on_demand.ask", `set ask = "http://127.0.0.1:9000/allowed": Portico never orders for a name the ask endpoint has not allowed`, "missing or not an http(s) URL")
	}
	if len(od.Upstreams) == 0 {
		v.bad("on_demand.upstreams", `add upstreams = ["http://10.0.0.9:8080"]`, "missing: where on-demand hostnames are proxied")
	}
	for _, up := range od.Upstreams {
		if err := checkUpstream(up); err != nil {
			v.bad("on_demand.upstreams", "write upstreams as http://host:port", "%q: %v", redactURL(up), err)
		}
	}
	if od.MaxPerMinute < 1 {
		v.bad("on_demand.max_per_minute", "use 1 or more, e.g. 10", "%d would refuse every on-demand name", od.MaxPerMinute)
	}
	if cfg.ACME.CA == "local" {
		v.bad("on_demand", "on-demand TLS is for public names with an ACME CA", `not available with ca = "local"`)
	}
}

func coveredByWildcard(h string, covered map[string]bool) bool {
	w, ok := WildcardFor(h)
	return ok && covered[w]
}

func humanDuration(d time.Duration) string {
	if d >= 48*time.Hour {
		return fmt.Sprintf("%d days", int(d.Hours()/24))
	}
	return d.String()
}

func checkUpstream(raw string) error {
	if !strings.Contains(raw, "://") {
		return errors.New("no scheme: start it with http://, https:// or h2c://")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "h2c" {
		return fmt.Errorf("scheme must be http, https or h2c (HTTP/2 cleartext, for gRPC), not %q", u.Scheme)
	}
	if u.Host == "" || u.Hostname() == "" {
		return errors.New("no host")
	}
	if p := u.Port(); p != "" && !validPort(p) {
		return fmt.Errorf("bad port %q", p)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return errors.New("no query, fragment or credentials allowed")
	}
	return nil
}

func (v *validator) validateNotify(cfg *Config) {
	smtpReported := false
	for i, n := range cfg.Notify {
		base := fmt.Sprintf("notify.%d", i)
		switch {
		case n.Webhook != "" && n.Email != "":
			v.bad(base, "use one [[notify]] per target", "webhook and email in one [[notify]]")
		case n.Webhook != "":
			if u, err := url.Parse(n.Webhook); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				v.bad(base+".webhook", "write an http(s):// URL", "not a webhook URL")
			}
		case n.Email != "":
			if !strings.Contains(n.Email, "@") {
				v.bad(base+".email", "write an address such as ops@example.net", "%q is not an email address", n.Email)
			}
			if (cfg.SMTP.Host == "" || cfg.SMTP.From == "") && !smtpReported {
				smtpReported = true
				// point at [smtp] when it is there but incomplete, else at the email
				key := "smtp"
				if v.lines.line("smtp") == 0 {
					key = base + ".email"
				}
				v.bad(key, "add [smtp] with host, port, username, password and from", "email notifications need an SMTP relay with host and from")
			}
		default:
			v.bad(base, `set webhook = "https://..." or email = "ops@example.net"`, "empty [[notify]]")
		}
	}
}

// resolve makes a path from the config absolute, relative to the config's folder.
func (v *validator) resolve(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(v.dir, p)
}

func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func hasPEMCert(data []byte) bool {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return false
		}
		if b.Type == "CERTIFICATE" {
			if _, err := x509.ParseCertificate(b.Bytes); err == nil {
				return true
			}
		}
	}
}
