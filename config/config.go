// Package config holds Portico's configuration schema: the TOML file an
// operator writes, its defaults, and the validation that turns a bad file into
// errors naming the file, the line, the key and a fix.
//
// Load is pure: it reads the config file (and checks that the files it names
// exist) but touches no network and no storage, so `portico validate` and a
// reload can call it freely.
package config

import (
	"time"
)

// Config is a loaded, defaulted and validated configuration.
type Config struct {
	ACME         ACME          `toml:"acme"`
	Listen       Listen        `toml:"listen"`
	Storage      Storage       `toml:"storage"`
	Renewal      Renewal       `toml:"renewal"`
	Sites        []Site        `toml:"site"`
	OnDemand     *OnDemand     `toml:"on_demand"`
	Certificates []Certificate `toml:"certificate"`
	Notify       []Notify      `toml:"notify"`
	SMTP         SMTP          `toml:"smtp"`
	Log          Log           `toml:"log"`
	Pools        []Pool        `toml:"pool"`

	// Path is the file the config was loaded from; relative paths in the
	// config are resolved against its directory.
	Path string `toml:"-"`
	// Warnings are things that are allowed but that an operator should know
	// (for example what an HSTS max-age commits them to). `portico validate`
	// prints them; `portico run` logs them.
	Warnings []string `toml:"-"`
	// ACMEDefined reports whether the file had an [acme] table. Without one,
	// only names covered by [[certificate]] may be served.
	ACMEDefined bool `toml:"-"`
}

// ACME configures the certificate authority and the account Portico uses.
type ACME struct {
	// Email is the account contact: the operator, who is the subscriber.
	Email string `toml:"email"`
	// AgreeTOS must be true: the CA's terms are read from its directory.
	AgreeTOS bool `toml:"agree_tos"`
	// CA is the ACME directory URL, or "local" for Portico's own local CA.
	CA string `toml:"ca"`
	// CARoots are PEM files with extra roots trusted for the CA's HTTPS endpoint.
	CARoots []string `toml:"ca_roots"`
	// Challenges are the ACME challenge types Portico may solve.
	Challenges []string `toml:"challenges"`
	// KeyTypes are the certificate key types; each name gets one certificate per type.
	KeyTypes []string `toml:"key_types"`
	// AccountKeyType is the ACME account key type.
	AccountKeyType string `toml:"account_key_type"`
	// Profile is the ACME profile asked of the CA ("" = the CA's default):
	// "classic", "tlsserver" or "shortlived" at Let's Encrypt.
	Profile string `toml:"profile"`
	// DNS configures the dns-01 challenge ([acme.dns]).
	DNS *DNS `toml:"dns"`
	// ValidationRedirect, when set, makes :80 answer ACME http-01 requests
	// with a redirect to this central validation server, path kept.
	ValidationRedirect string `toml:"validation_redirect"`
	// ValidationServer marks the central validation server that other
	// instances' ValidationRedirect points at: it answers http-01 from the
	// shared storage and may have no site.
	ValidationServer bool `toml:"validation_server"`
	// FallbackCA are ACME directories tried in order when the CA fails;
	// each has its own account in storage.
	FallbackCA []string `toml:"fallback_ca"`
	// EABKeyID and EABHMAC are the external account binding for CAs whose
	// directory requires one (ZeroSSL, Google Trust Services).
	EABKeyID string `toml:"eab_kid"`
	EABHMAC  string `toml:"eab_hmac"`
}

// Listen says where Portico listens.
type Listen struct {
	// HTTP is the plain-HTTP address: http-01 answers and redirects.
	HTTP string `toml:"http"`
	// HTTPS is the TLS address.
	HTTPS string `toml:"https"`
	// Admin is the admin API address ("" disables it); a path is a unix socket.
	Admin string `toml:"admin"`
	// AdminToken, when set, must be sent by every admin API client as
	// "Authorization: Bearer <token>". It is required when Admin is a TCP
	// address other than loopback. Write it as a placeholder such as
	// "{env.PORTICO_ADMIN_TOKEN}" rather than in the file.
	AdminToken string `toml:"admin_token"`
	// DefaultSNI names the certificate for clients that send no SNI;
	// without it they get a handshake error, not a random certificate.
	DefaultSNI string `toml:"default_sni"`
	// TrustedProxies are the IP addresses and CIDR networks of proxies in
	// front of Portico (load balancers). A client connecting from one of
	// them has its X-Forwarded-For chain kept (its own address appended)
	// and its X-Forwarded-Proto and X-Forwarded-Host passed on; every other
	// client's X-Forwarded-* headers are replaced. Empty: trust no one.
	TrustedProxies []string `toml:"trusted_proxies"`
	// ProxyProtocol are the IP addresses and CIDR networks of load
	// balancers that open every connection to :80 and :443 with a PROXY
	// protocol header (v1 or v2): the address it carries becomes the
	// client's. A connection from them without one is closed, and so is a
	// connection from anyone else that sends one. Empty: no PROXY protocol.
	ProxyProtocol []string `toml:"proxy_protocol"`
	// MaxConnections caps the connections open at once on each listener
	// (:80 and :443 separately); more wait in the kernel's backlog until one
	// closes. 0 means no limit.
	MaxConnections int `toml:"max_connections"`
	// HeaderTimeout is how long a client has to send a request's headers
	// (and, on :443, to complete the TLS handshake) once it starts.
	HeaderTimeout Duration `toml:"header_timeout"`
	// IdleTimeout is how long a keep-alive connection may wait for its next
	// request.
	IdleTimeout Duration `toml:"idle_timeout"`
	// MaxHeaderBytes caps the size of a request's line and headers;
	// larger requests get 431.
	MaxHeaderBytes int `toml:"max_header_bytes"`
	// HTTP3 serves HTTP/3 (QUIC) on the UDP port of the HTTPS address,
	// beside TCP, and announces it with Alt-Svc on HTTP/1.1 and HTTP/2
	// answers. Off by default: it needs the UDP port open in firewalls and
	// load balancers, which a TCP-only deployment may not have.
	HTTP3 bool `toml:"http3"`
}

// Storage selects where certificates, keys, the ACME account and the
// renewal ledger live.
type Storage struct {
	// Backend is "file" (default) or "redis".
	Backend string `toml:"backend"`
	// Path is the file backend's directory; relative to the config file.
	Path string `toml:"path"`
	// RedisURL is the redis backend's URL: redis:// or rediss://.
	RedisURL string `toml:"redis_url"`
	// Prefix namespaces every key so several fleets can share one Redis.
	Prefix string `toml:"prefix"`

	// RedisSentinels (with RedisMaster, the name they monitor) and
	// RedisCluster (seed nodes) are the other two ways to find Redis;
	// exactly one of them or RedisURL is set. Addresses are host:port.
	RedisSentinels []string `toml:"redis_sentinels"`
	RedisMaster    string   `toml:"redis_master"`
	RedisCluster   []string `toml:"redis_cluster"`
	// RedisUsername, RedisPassword, RedisTLS and RedisDB apply to Sentinel
	// and Cluster (a URL carries its own); RedisDB to Sentinel only, as a
	// Cluster has one database.
	RedisUsername string `toml:"redis_username"`
	RedisPassword string `toml:"redis_password"`
	RedisTLS      bool   `toml:"redis_tls"`
	RedisDB       int    `toml:"redis_db"`
}

// Renewal configures when and how certificates are renewed.
type Renewal struct {
	// Ratio is the fraction of a certificate's lifetime left at which it is
	// renewed when the CA offers no ARI window.
	Ratio float64 `toml:"ratio"`
	// CheckInterval is how often due dates are checked.
	CheckInterval Duration `toml:"check_interval"`
	// MaxConcurrent caps orders in flight at once across the fleet.
	MaxConcurrent int `toml:"max_concurrent"`
	// Backoff is the retry schedule after failures; its last step repeats.
	Backoff []Duration `toml:"backoff"`
}

// Site is one [[site]]: a set of hosts served the same way. Its default
// action (upstreams, pool or respond) answers the requests no route takes.
type Site struct {
	Hosts     []string `toml:"hosts"`
	Upstreams []string `toml:"upstreams"`
	// Pool names a [[pool]], instead of upstreams.
	Pool string `toml:"pool"`
	// Headers are the site's header rules ([site.headers]).
	Headers *Headers `toml:"headers"`
	// Routes are the site's [[site.route]]s, by path.
	Routes []Route `toml:"route"`
	// MaxBodyBytes bounds a request body (413 above it); 0: no limit.
	MaxBodyBytes  int64    `toml:"max_body_bytes"`
	RedirectHTTPS *bool    `toml:"redirect_https"`
	HSTSMaxAge    Duration `toml:"hsts_max_age"`
	Respond       string   `toml:"respond"`
	// Compress are the content codings ("zstd", "gzip") the site's proxied
	// answers may be compressed with, in the site's order of preference
	// among those a client accepts equally. Empty: never compressed.
	Compress []string `toml:"compress"`
	// Certificate is "per-host" (default: one certificate per host) or
	// "shared" (one SAN certificate with every host of the site).
	Certificate string `toml:"certificate"`
	// Challenges and DNS override [acme]'s for this site's hosts.
	Challenges []string `toml:"challenges"`
	DNS        *DNS     `toml:"dns"`
}

// Route is one [[site.route]]: requests whose path matches go to its
// action (exactly one of Pool, Upstreams, Respond, Redirect).
type Route struct {
	// Path is exact ("/ping"), or a prefix when it ends in "/*" ("/api/*"
	// takes /api and everything under /api/). The longest match wins.
	Path      string   `toml:"path"`
	Pool      string   `toml:"pool"`
	Upstreams []string `toml:"upstreams"`
	Respond   string   `toml:"respond"`
	// Redirect is the target of a redirect; {uri} stands for the request's
	// path and query.
	Redirect string `toml:"redirect"`
	// Status is the status of a respond (default 200) or redirect (301,
	// 302, 307 or 308; default 308).
	Status int `toml:"status"`
	// StripPrefix is taken off the path the upstream receives.
	StripPrefix string `toml:"strip_prefix"`
	// Methods, when set, are the only methods the route takes; others are
	// answered 405.
	Methods []string `toml:"methods"`
	// Headers are applied after the site's ([site.route.headers]).
	Headers *Headers `toml:"headers"`
}

// Headers are header rules: set replaces a header (values may hold
// {client_ip}, {host} and {request_id}), remove removes it; request rules
// apply to what goes upstream, response rules to what goes to the client.
type Headers struct {
	RequestSet     map[string]string `toml:"request_set"`
	RequestRemove  []string          `toml:"request_remove"`
	ResponseSet    map[string]string `toml:"response_set"`
	ResponseRemove []string          `toml:"response_remove"`
}

// Pool is one [[pool]]: named upstreams that sites and routes share, with
// how an upstream is picked and how failing ones are routed around.
type Pool struct {
	Name      string   `toml:"name"`
	Upstreams []string `toml:"upstreams"`
	// Policy picks an upstream: "round_robin" (default), "least_conn",
	// "ip_hash", "random_two" or "first".
	Policy string `toml:"policy"`
	// HealthPath turns active checks on: GET HealthPath on each upstream
	// every HealthInterval, within HealthTimeout; HealthStatus ("2xx" or a
	// code) is healthy.
	HealthPath     string   `toml:"health_path"`
	HealthInterval Duration `toml:"health_interval"`
	HealthTimeout  Duration `toml:"health_timeout"`
	HealthStatus   string   `toml:"health_status"`
	// UnhealthyAfter failed checks in a row take an upstream out;
	// HealthyAfter good ones bring it back.
	UnhealthyAfter int `toml:"unhealthy_after"`
	HealthyAfter   int `toml:"healthy_after"`
	// MaxFails failed attempts within FailWindow take an upstream out for
	// FailWindow (passive checks); 0 turns them off.
	MaxFails   *int     `toml:"max_fails"`
	FailWindow Duration `toml:"fail_window"`
	// Retries is how many other upstreams a request may try: an
	// idempotent one after any failure, any one that never reached an
	// upstream.
	Retries               *int     `toml:"retries"`
	DialTimeout           Duration `toml:"dial_timeout"`
	ResponseHeaderTimeout Duration `toml:"response_header_timeout"`
	// TLSCA, TLSServerName, TLSClientCert and TLSClientKey are for
	// https:// upstreams: a CA to trust (default: the system's), the name
	// to verify, and a client certificate (mTLS).
	TLSCA         string `toml:"tls_ca"`
	TLSServerName string `toml:"tls_server_name"`
	TLSClientCert string `toml:"tls_client_cert"`
	TLSClientKey  string `toml:"tls_client_key"`
}

// Pool defaults.
const (
	DefaultPolicy                = "round_robin"
	DefaultHealthInterval        = 5 * time.Second
	DefaultHealthTimeout         = 2 * time.Second
	DefaultHealthStatus          = "2xx"
	DefaultUnhealthyAfter        = 3
	DefaultHealthyAfter          = 2
	DefaultMaxFails              = 3
	DefaultFailWindow            = 10 * time.Second
	DefaultRetries               = 2
	DefaultDialTimeout           = 5 * time.Second
	DefaultResponseHeaderTimeout = 60 * time.Second
)

// Policies are the ways a pool picks an upstream.
var Policies = []string{"round_robin", "least_conn", "ip_hash", "random_two", "first"}

// Log configures the access log ([log]).
type Log struct {
	// Access is where access-log lines go: a file path, "stdout" or
	// "stderr"; "" turns the access log off.
	Access string `toml:"access"`
	// AccessFormat is "json" (default) or "combined" (Apache/nginx).
	AccessFormat string `toml:"access_format"`
}

// SharedCertificate reports whether the site's hosts share one certificate.
func (s Site) SharedCertificate() bool { return s.Certificate == "shared" }

// OnDemand configures on-demand TLS: certificates for hostnames not in the
// config, obtained at their first handshake when the ask endpoint allows.
type OnDemand struct {
	// Ask is called as GET Ask?domain=NAME; 200 means the name may get a
	// certificate, anything else means no.
	Ask string `toml:"ask"`
	// Upstreams receive the requests for on-demand hostnames.
	Upstreams []string `toml:"upstreams"`
	// MaxPerMinute caps new on-demand orders, fleet-wide.
	MaxPerMinute int `toml:"max_per_minute"`
}

// Redirects reports whether plain HTTP requests for the site get a 308 to
// HTTPS (the default) instead of being proxied.
func (s Site) Redirects() bool { return s.RedirectHTTPS == nil || *s.RedirectHTTPS }

// Certificate is a certificate the operator brings: PEM files served for the
// names they cover, which are then not ordered over ACME.
type Certificate struct {
	Cert string `toml:"cert"`
	Key  string `toml:"key"`
}

// Notify is one [[notify]] target for failures and expiry warnings.
type Notify struct {
	Webhook string `toml:"webhook"`
	Email   string `toml:"email"`
}

// SMTP is the mail relay used by email notifications.
type SMTP struct {
	Host     string `toml:"host"`
	Port     int    `toml:"port"`
	Username string `toml:"username"`
	Password string `toml:"password"`
	From     string `toml:"from"`
}

// Duration is a time.Duration written in TOML as a Go duration string
// ("10m", "1440h").
type Duration time.Duration

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the duration as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Std returns the duration as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// Default values, exported so the README's reference and tests name the same numbers.
const (
	DefaultCA            = "https://acme-v02.api.letsencrypt.org/directory"
	DefaultHTTP          = ":80"
	DefaultHTTPS         = ":443"
	DefaultStoragePath   = "data"
	DefaultPrefix        = "portico"
	DefaultRatio         = 1.0 / 3.0
	DefaultCheckInterval = 10 * time.Minute
	DefaultMaxConcurrent = 4
	DefaultAccountKey    = "p256"

	DefaultMaxConnections = 10000
	DefaultHeaderTimeout  = 10 * time.Second
	DefaultIdleTimeout    = 2 * time.Minute
	DefaultMaxHeaderBytes = 64 << 10
	// MinMaxHeaderBytes and MaxMaxHeaderBytes bound max_header_bytes: below
	// 4 KiB ordinary browser requests (cookies) are refused; 1 MiB is Go's
	// own default, far beyond what any client needs.
	MinMaxHeaderBytes = 4 << 10
	MaxMaxHeaderBytes = 1 << 20
)

// DefaultKeyTypes are the certificate key types when key_types is not set:
// RSA for every client, ECDSA for those that support it.
func DefaultKeyTypes() []string { return []string{"rsa2048", "p256"} }

// DefaultChallenges are the challenge types when challenges is not set.
func DefaultChallenges() []string { return []string{"http-01", "tls-alpn-01"} }

// DefaultBackoff is the guide's retry schedule: 1 min, 10 min, 100 min, then daily.
func DefaultBackoff() []Duration {
	return []Duration{Duration(time.Minute), Duration(10 * time.Minute), Duration(100 * time.Minute), Duration(24 * time.Hour)}
}

// AllowedKeyTypes is the key policy: the only key types accepted for
// certificates and the ACME account.
func AllowedKeyTypes() []string { return []string{"rsa2048", "rsa3072", "rsa4096", "p256", "p384"} }

// IsRSA reports whether a key type name is an RSA type.
func IsRSA(keyType string) bool { return len(keyType) > 3 && keyType[:3] == "rsa" }
