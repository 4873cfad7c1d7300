package config

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// This file validates what the request core reads: [[pool]], a site's
// default action, [[site.route]], header rules and [log].

// HeaderPlaceholders are the placeholders a header rule's value may hold.
var HeaderPlaceholders = []string{"{client_ip}", "{host}", "{request_id}"}

// RedirectPlaceholders are the placeholders a redirect target may hold.
var RedirectPlaceholders = []string{"{uri}", "{host}"}

// RedirectStatuses are the statuses a redirect may answer with.
var RedirectStatuses = []int{301, 302, 307, 308}

// DefaultRedirectStatus is a redirect's status when none is set.
const DefaultRedirectStatus = 308

// ruleForbidden are the headers header rules may not set or remove:
// hop-by-hop and framing headers belong to each connection, and the
// forwarding headers and X-Request-ID are Portico's own.
var ruleForbidden = []string{
	"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
	"te", "trailer", "transfer-encoding", "upgrade", "content-length", "host",
	"forwarded", "x-request-id",
}

// headerRuleForbidden says why a header name cannot be in a rule, or "".
func headerRuleForbidden(name string) string {
	l := strings.ToLower(name)
	switch {
	case !isToken(name):
		return "is not a header name"
	case strings.HasPrefix(l, "x-forwarded-"):
		return "is set by Portico from [listen] trusted_proxies"
	case slices.Contains(ruleForbidden, l):
		return "is hop-by-hop, framing or Portico's own"
	}
	return ""
}

// checkTemplate reports a placeholder in s that is not one of allowed.
func checkTemplate(s string, allowed []string) error {
	for rest := s; ; {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			break
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return fmt.Errorf("unclosed %q", rest[i:])
		}
		if ph := rest[i : i+j+1]; !slices.Contains(allowed, ph) {
			return fmt.Errorf("unknown placeholder %s", ph)
		}
		rest = rest[i+j+1:]
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return fmt.Errorf("control character in %q", s)
		}
	}
	return nil
}

func (v *validator) validateHeaders(base string, h *Headers) {
	if h == nil {
		return
	}
	fix := "set or remove end-to-end headers only, e.g. request_set = { \"X-Env\" = \"prod\" }"
	check := func(key, name string) {
		if why := headerRuleForbidden(name); why != "" {
			v.bad(base+".headers."+key, fix, "%q %s", name, why)
		}
	}
	for _, set := range []struct {
		key string
		m   map[string]string
	}{{"request_set", h.RequestSet}, {"response_set", h.ResponseSet}} {
		names := make([]string, 0, len(set.m))
		for name := range set.m {
			names = append(names, name)
		}
		slices.Sort(names) // the same report every run
		for _, name := range names {
			check(set.key, name)
			if err := checkTemplate(set.m[name], HeaderPlaceholders); err != nil {
				v.bad(base+".headers."+set.key, "values may use "+strings.Join(HeaderPlaceholders, ", "), "%s: %v", name, err)
			}
		}
	}
	for _, name := range h.RequestRemove {
		check("request_remove", name)
	}
	for _, name := range h.ResponseRemove {
		check("response_remove", name)
	}
}

// validatePools checks [[pool]] and returns the pools by name.
func (v *validator) validatePools(cfg *Config) map[string]bool {
	names := map[string]bool{}
	for i, p := range cfg.Pools {
		base := fmt.Sprintf("pool.%d", i)
		switch {
		case p.Name == "":
			v.bad(base+".name", `name the pool, e.g. name = "api", and refer to it with pool = "api"`, "missing")
		case !isToken(p.Name):
			v.bad(base+".name", "use letters, digits, '-' and '_'", "%q is not a plain name", p.Name)
		case names[p.Name]:
			v.bad(base+".name", "give each [[pool]] its own name", "%q names two pools", p.Name)
		}
		names[p.Name] = true
		if len(p.Upstreams) == 0 {
			v.bad(base+".upstreams", `list its upstreams, e.g. upstreams = ["http://10.0.0.7:9000"]`, "missing: a pool needs upstreams")
		}
		for _, up := range p.Upstreams {
			if err := checkUpstream(up); err != nil {
				v.bad(base+".upstreams", "write upstreams as http://host:port or https://host:port", "%q: %v", redactURL(up), err)
			}
		}
		v.validatePoolPolicy(base, &cfg.Pools[i])
	}
	return names
}

// DefaultPool is the pool a site's or a route's own upstreams make: the
// [[pool]] defaults.
func DefaultPool(upstreams []string) Pool {
	maxFails, retries := DefaultMaxFails, DefaultRetries
	return Pool{
		Upstreams: upstreams, Policy: DefaultPolicy,
		HealthInterval: Duration(DefaultHealthInterval), HealthTimeout: Duration(DefaultHealthTimeout),
		HealthStatus: DefaultHealthStatus, UnhealthyAfter: DefaultUnhealthyAfter, HealthyAfter: DefaultHealthyAfter,
		MaxFails: &maxFails, FailWindow: Duration(DefaultFailWindow), Retries: &retries,
		DialTimeout: Duration(DefaultDialTimeout), ResponseHeaderTimeout: Duration(DefaultResponseHeaderTimeout),
	}
}

// validatePoolPolicy checks a pool's selection, health, retry, timeout and
// TLS settings, and fills their defaults.
func (v *validator) validatePoolPolicy(base string, p *Pool) {
	if p.Policy == "" {
		p.Policy = DefaultPolicy
	} else if !slices.Contains(Policies, p.Policy) {
		v.bad(base+".policy", "use one of "+strings.Join(Policies, ", "), "unknown policy %q", p.Policy)
	}
	durations := []struct {
		key string
		d   *Duration
		def time.Duration
	}{
		{"health_interval", &p.HealthInterval, DefaultHealthInterval},
		{"health_timeout", &p.HealthTimeout, DefaultHealthTimeout},
		{"fail_window", &p.FailWindow, DefaultFailWindow},
		{"dial_timeout", &p.DialTimeout, DefaultDialTimeout},
		{"response_header_timeout", &p.ResponseHeaderTimeout, DefaultResponseHeaderTimeout},
	}
	for _, d := range durations {
		switch {
		case *d.d == 0:
			*d.d = Duration(d.def)
		case *d.d < 0:
			v.bad(base+"."+d.key, fmt.Sprintf("use a positive duration such as %q", d.def.String()), "negative duration")
		}
	}
	if p.HealthPath != "" && !strings.HasPrefix(p.HealthPath, "/") {
		v.bad(base+".health_path", `write a path such as "/healthz"`, "%q does not start with /", p.HealthPath)
	}
	if p.HealthTimeout > p.HealthInterval {
		v.bad(base+".health_timeout", "keep it at most health_interval", "%s is longer than health_interval %s", p.HealthTimeout.Std(), p.HealthInterval.Std())
	}
	switch s := p.HealthStatus; {
	case s == "":
		p.HealthStatus = DefaultHealthStatus
	case len(s) == 3 && s[0] >= '1' && s[0] <= '5' && (s[1:] == "xx" || s[1] >= '0' && s[1] <= '9' && s[2] >= '0' && s[2] <= '9'):
	default:
		v.bad(base+".health_status", `use a class such as "2xx" or a code such as "204"`, "%q", s)
	}
	counts := []struct {
		key string
		n   *int
		def int
	}{{"unhealthy_after", &p.UnhealthyAfter, DefaultUnhealthyAfter}, {"healthy_after", &p.HealthyAfter, DefaultHealthyAfter}}
	for _, c := range counts {
		switch {
		case *c.n == 0:
			*c.n = c.def
		case *c.n < 0:
			v.bad(base+"."+c.key, "use a count of 1 or more", "%d", *c.n)
		}
	}
	if p.MaxFails == nil {
		n := DefaultMaxFails
		p.MaxFails = &n
	} else if *p.MaxFails < 0 {
		v.bad(base+".max_fails", "use 0 (passive checks off) or a count", "%d", *p.MaxFails)
	}
	if p.Retries == nil {
		n := DefaultRetries
		p.Retries = &n
	} else if *p.Retries < 0 {
		v.bad(base+".retries", "use 0 (no retry) or a count", "%d", *p.Retries)
	}
	https := false
	for _, up := range p.Upstreams {
		https = https || strings.HasPrefix(up, "https://")
	}
	files := []struct {
		key  string
		path *string
	}{{"tls_ca", &p.TLSCA}, {"tls_client_cert", &p.TLSClientCert}, {"tls_client_key", &p.TLSClientKey}}
	for _, f := range files {
		if *f.path == "" {
			continue
		}
		if !https {
			v.bad(base+"."+f.key, "TLS settings are for https:// upstreams", "the pool has no https:// upstream")
		}
		*f.path = v.resolve(*f.path)
		if _, err := os.Stat(*f.path); err != nil {
			v.bad(base+"."+f.key, "name a PEM file that exists", "%v", unwrapPathErr(err))
		}
	}
	if (p.TLSClientCert == "") != (p.TLSClientKey == "") {
		v.bad(base+".tls_client_cert", "set tls_client_cert and tls_client_key together", "one without the other")
	}
	if p.TLSServerName != "" && !https {
		v.bad(base+".tls_server_name", "TLS settings are for https:// upstreams", "the pool has no https:// upstream")
	}
}

// poolKnown reports a pool name no [[pool]] has.
func (v *validator) poolKnown(key, name string, pools map[string]bool) {
	if name == "" || pools[name] {
		return
	}
	known := make([]string, 0, len(pools))
	for n := range pools {
		known = append(known, n)
	}
	slices.Sort(known)
	fix := "add a [[pool]] with this name"
	if len(known) > 0 {
		fix += ", or use one of: " + strings.Join(known, ", ")
	}
	v.bad(key, fix, "unknown pool %q", name)
}

// validateSiteRouting checks a site's default action, its header rules and
// its routes.
func (v *validator) validateSiteRouting(base string, s *Site, pools map[string]bool) {
	v.poolKnown(base+".pool", s.Pool, pools)
	var defaults []string
	for key, set := range map[string]bool{"upstreams": len(s.Upstreams) > 0, "pool": s.Pool != "", "respond": s.Respond != ""} {
		if set {
			defaults = append(defaults, key)
		}
	}
	// the one written last is the one reported
	slices.SortFunc(defaults, func(a, b string) int { return v.lines.line(base+"."+a) - v.lines.line(base+"."+b) })
	switch {
	case len(defaults) == 0 && len(s.Routes) == 0:
		v.bad(base, `add upstreams = ["http://127.0.0.1:8080"], pool = "name", respond = "text" or [[site.route]]s`, "a site needs upstreams, a pool, respond or routes")
	case len(defaults) > 1:
		v.bad(base+"."+defaults[len(defaults)-1], "keep one of upstreams, pool and respond as the site's default action",
			"a site has more than one default action (%s)", strings.Join(defaults, ", "))
	}
	v.validateHeaders(base, s.Headers)
	if s.MaxBodyBytes < 0 {
		v.bad(base+".max_body_bytes", "use 0 (no limit) or a size in bytes, e.g. 10485760", "%d", s.MaxBodyBytes)
	}
	paths := map[string]int{}
	for i := range s.Routes {
		r := &s.Routes[i]
		rb := fmt.Sprintf("%s.route.%d", base, i)
		if err := CheckRoutePath(r.Path); err != nil {
			v.bad(rb+".path", `write an exact path ("/ping") or a prefix ending in /* ("/api/*")`, "%q: %v", r.Path, err)
		} else if j, dup := paths[r.Path]; dup {
			v.bad(rb+".path", "keep one route per path", "%q is already the path of route[%d]", r.Path, j+1)
		} else {
			paths[r.Path] = i
		}
		v.validateRoute(rb, r, pools)
	}
}

func (v *validator) validateRoute(base string, r *Route, pools map[string]bool) {
	actions := 0
	for _, set := range []bool{r.Pool != "", len(r.Upstreams) > 0, r.Respond != "", r.Redirect != ""} {
		if set {
			actions++
		}
	}
	switch {
	case actions == 0:
		v.bad(base, `give the route one of pool, upstreams, respond or redirect`, "the route has no action")
	case actions > 1:
		v.bad(base, "keep one of pool, upstreams, respond and redirect", "the route has more than one action")
	}
	v.poolKnown(base+".pool", r.Pool, pools)
	for _, up := range r.Upstreams {
		if err := checkUpstream(up); err != nil {
			v.bad(base+".upstreams", "write upstreams as http://host:port or https://host:port", "%q: %v", redactURL(up), err)
		}
	}
	switch {
	case r.Redirect != "":
		if err := checkTemplate(r.Redirect, RedirectPlaceholders); err != nil {
			v.bad(base+".redirect", `redirect to a URL or path; {uri} is the request's path and query, e.g. "https://new.example.net{uri}"`, "%v", err)
		} else if !strings.HasPrefix(r.Redirect, "/") && !strings.HasPrefix(r.Redirect, "https://") && !strings.HasPrefix(r.Redirect, "http://") {
			v.bad(base+".redirect", `start it with https://, http:// or /`, "%q is neither a URL nor a path", r.Redirect)
		}
		if r.Status == 0 {
			r.Status = DefaultRedirectStatus
		} else if !slices.Contains(RedirectStatuses, r.Status) {
			v.bad(base+".status", "a redirect answers 301, 302, 307 or 308", "%d is not a redirect status", r.Status)
		}
	case r.Respond != "":
		if r.Status == 0 {
			r.Status = 200
		} else if r.Status < 200 || r.Status > 599 || r.Status == 204 || r.Status == 304 {
			v.bad(base+".status", "answer with a status from 200 to 599 that has a body", "%d cannot carry respond's text", r.Status)
		}
	case r.Status != 0:
		v.bad(base+".status", "status goes with respond or redirect", "a route that proxies answers with its upstream's status")
	}
	if r.StripPrefix != "" {
		prefix := strings.TrimSuffix(strings.TrimSuffix(r.Path, "*"), "/")
		switch {
		case r.Respond != "" || r.Redirect != "":
			v.bad(base+".strip_prefix", "strip_prefix goes with pool or upstreams", "the route does not proxy")
		case !strings.HasPrefix(r.StripPrefix, "/") || strings.HasSuffix(r.StripPrefix, "/"):
			v.bad(base+".strip_prefix", `write it like the path, without a trailing slash: strip_prefix = "/api"`, "%q", r.StripPrefix)
		case prefix != r.StripPrefix && !strings.HasPrefix(prefix, r.StripPrefix+"/"):
			v.bad(base+".strip_prefix", fmt.Sprintf("strip a leading part of the path %q", r.Path), "%q does not begin the route's path", r.StripPrefix)
		}
	}
	for _, m := range r.Methods {
		if !isToken(m) || strings.ToUpper(m) != m {
			v.bad(base+".methods", `write methods in upper case, e.g. methods = ["GET", "POST"]`, "%q is not a method", m)
		}
	}
	v.validateHeaders(base, r.Headers)
}

// CheckRoutePath reports what is wrong with a route's path pattern: an
// absolute path without dot segments, empty segments, percent-encoding, a
// query or white space, ending in "/*" for a prefix.
func CheckRoutePath(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("must start with /")
	}
	body := strings.TrimSuffix(p, "/*")
	if strings.Contains(body, "*") {
		return fmt.Errorf("* may only end the path, as /*")
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c >= 0x7f || c == '?' || c == '#' || c == '%' {
			return fmt.Errorf("%q is not allowed in a route's path (write it decoded, without query)", c)
		}
	}
	if strings.Contains(p, "//") {
		return fmt.Errorf("empty segment (//)")
	}
	for _, seg := range strings.Split(body, "/") {
		if seg == "." || seg == ".." {
			return fmt.Errorf("dot segments are not allowed")
		}
	}
	return nil
}

// AccessFormats are the access log formats.
var AccessFormats = []string{"json", "combined"}

func (v *validator) validateLog(cfg *Config) {
	l := &cfg.Log
	if l.AccessFormat == "" {
		l.AccessFormat = "json"
	} else if !slices.Contains(AccessFormats, l.AccessFormat) {
		v.bad("log.access_format", `use "json" or "combined"`, "unknown format %q", l.AccessFormat)
	}
	switch l.Access {
	case "", "stdout", "stderr":
		return
	}
	path := v.resolve(l.Access)
	dir := filepath.Dir(path)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		v.bad("log.access", "create the directory, or log to \"stdout\"", "the directory %s does not exist", dir)
		return
	}
	l.Access = path
}
