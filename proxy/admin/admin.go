// Package admin is Portico's admin API: certificate status and early
// retries, config reload and Prometheus metrics, over HTTP on a loopback
// address or a unix socket (or, with a bearer token, any address).
//
//	GET  /certificates               every managed certificate, as JSON
//	POST /certificates/{name}/retry  retry a name's certificates now (202)
//	POST /retry                      retry every certificate with failures (202)
//	POST /reload                     re-read the config file (200, or 400 with the problems)
//	GET  /metrics                    Prometheus metrics
//	GET  /                           the status page: one HTML page for a browser
//
// Errors are JSON objects {"error": "..."}.
//
// The status page lists every certificate with its validity on a time axis
// and a Retry button per name. Without a token it is for a browser on the
// same machine (or through an SSH tunnel to a loopback address): the page's
// own requests carry its Origin, which the browser guard accepts when it is
// the admin API's own loopback origin. With a token, the page asks for it,
// keeps it in the tab's sessionStorage and sends it as a bearer token.
package admin

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/portico-proxy/portico/config"
	"github.com/portico-proxy/portico/proxy"
	"github.com/portico-proxy/portico/tlsmgr"
)

// Certs is what the admin API needs from the certificate manager
// (tlsmgr.Manager).
type Certs interface {
	// Status lists every managed certificate with its failure ledger.
	Status(ctx context.Context) []tlsmgr.CertStatus
	// Retry moves a name's next attempt to now; tlsmgr.ErrNotManaged for
	// a name Portico does not manage.
	Retry(ctx context.Context, name string) error
	// RetryAll retries every certificate with failures and says how many.
	RetryAll(ctx context.Context) (int, error)
}

// Options configure the admin API handler.
type Options struct {
	// Certs answers /certificates and the retry endpoints.
	Certs Certs
	// Reload re-reads the config; on error the running config stays. Nil
	// makes /reload answer 501.
	Reload func() error
	// Gatherer is served at /metrics; nil makes /metrics answer 404.
	Gatherer prometheus.Gatherer
	// Token, when set, is required on every request as
	// "Authorization: Bearer <token>".
	Token string
	// Logger logs refused requests and failed actions; nil logs nothing.
	Logger *zap.Logger
	// Pools lists the upstream pools and each upstream's state
	// (proxy.Server.PoolStatus), for GET /pools and the status page; nil
	// shows none.
	Pools func() []proxy.PoolStatus
}

// Handler returns the admin API. With a Token, every request must carry it.
// Without one, the API is meant for loopback and unix sockets, and requests
// a web browser could be made to send (a cross-site Origin, a Host other
// than localhost) are refused, so that a web page cannot reach it.
func Handler(o Options) http.Handler {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	a := &api{Options: o, now: time.Now}
	if o.Token != "" {
		sum := sha256.Sum256([]byte(o.Token))
		a.tokenSum = sum[:]
	}
	mux := http.NewServeMux()
	route := func(method, path string, h http.HandlerFunc) {
		mux.HandleFunc(method+" "+path, h)
		allow := method
		if method == http.MethodGet {
			allow += ", " + http.MethodHead
		}
		// The same path with any other method: 405 naming the right one.
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s %s is not allowed: use %s", r.Method, r.URL.Path, method))
		})
	}
	route(http.MethodGet, "/certificates", a.certificates)
	route(http.MethodPost, "/certificates/{name}/retry", a.retry)
	route(http.MethodPost, "/retry", a.retryAll)
	route(http.MethodPost, "/reload", a.reload)
	route(http.MethodGet, "/pools", a.pools)
	var metrics http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "metrics are not enabled")
	})
	if o.Gatherer != nil {
		metrics = promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{
			ErrorLog:      zap.NewStdLog(o.Logger),
			ErrorHandling: promhttp.ContinueOnError,
		})
	}
	route(http.MethodGet, "/metrics", metrics.ServeHTTP)
	route(http.MethodGet, "/{$}", a.page)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint %s: see GET / (the status page), GET /certificates, POST /certificates/{name}/retry, POST /retry, POST /reload, GET /pools, GET /metrics", r.URL.Path))
	})
	a.mux = mux
	return a
}

type api struct {
	Options
	tokenSum []byte // SHA-256 of Token; nil when no token is required
	mux      *http.ServeMux
	now      func() time.Time // the status page's clock; tests set it
}

func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if a.tokenSum != nil {
		if !a.authorized(r) && isPage(r) {
			// The page a browser opens: the token form and no data. Its
			// script sends the token typed into it on every request.
			a.servePage(w, r, http.StatusUnauthorized, false)
			return
		}
		if !a.authorized(r) {
			a.Logger.Warn("admin API request refused: missing or wrong token",
				zap.String("remote", r.RemoteAddr), zap.String("method", r.Method), zap.String("path", r.URL.Path))
			w.Header().Set("WWW-Authenticate", `Bearer realm="portico admin"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong admin token: send Authorization: Bearer <[listen] admin_token>")
			return
		}
	} else if why := browserRequest(r); why != "" {
		a.Logger.Warn("admin API request refused", zap.String("reason", why),
			zap.String("remote", r.RemoteAddr), zap.String("method", r.Method), zap.String("path", r.URL.Path))
		writeError(w, http.StatusForbidden, why+": the admin API without admin_token only answers local tools such as curl and `portico certs`")
		return
	}
	a.mux.ServeHTTP(w, r)
}

// authorized checks the bearer token. Both sides are hashed first so that
// the comparison takes the same time whatever the length and content of
// what was sent.
func (a *api) authorized(r *http.Request) bool {
	scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		got = ""
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(got)))
	return subtle.ConstantTimeCompare(sum[:], a.tokenSum) == 1
}

// browserRequest says why a request looks sent by a web page (a cross-site
// request or DNS rebinding onto loopback), or "" when it does not. A
// request from the status page itself is let through: its Origin is the
// admin API's own (http://127.0.0.1:2019), and the Host is loopback, so no
// other site's page can have sent it.
func browserRequest(r *http.Request) string {
	if o := r.Header.Get("Origin"); o != "" && !sameOrigin(o, r) {
		return fmt.Sprintf("request from another origin (Origin %q)", o)
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return ""
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return ""
	}
	return fmt.Sprintf("Host %q is not localhost", r.Host)
}

// sameOrigin reports whether origin is the request's own scheme://host,
// which a browser sends only for requests made by a page of this server.
func sameOrigin(origin string, r *http.Request) bool {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return r.Host != "" && strings.EqualFold(origin, scheme+"://"+r.Host)
}

func (a *api) certificates(w http.ResponseWriter, r *http.Request) {
	certs := a.Certs.Status(r.Context())
	if certs == nil {
		certs = []tlsmgr.CertStatus{} // [] rather than null
	}
	slices.SortStableFunc(certs, func(x, y tlsmgr.CertStatus) int {
		return cmp.Or(cmp.Compare(x.Name, y.Name), cmp.Compare(x.KeyType, y.KeyType))
	})
	writeJSON(w, http.StatusOK, certs)
}

// pools answers GET /pools: every upstream pool and its upstreams' state.
func (a *api) pools(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.poolStatus())
}

func (a *api) poolStatus() []proxy.PoolStatus {
	if a.Pools == nil {
		return []proxy.PoolStatus{}
	}
	return a.Pools()
}

// RetryResult is the answer of POST /certificates/{name}/retry.
type RetryResult struct {
	Name   string `json:"name"`
	Status string `json:"status"` // "retrying"
}

// RetryAllResult is the answer of POST /retry.
type RetryAllResult struct {
	// Rescheduled is how many certificates (name and key type) with
	// failures were moved to now.
	Rescheduled int `json:"rescheduled"`
}

// ReloadResult is the answer of a successful POST /reload.
type ReloadResult struct {
	Status string `json:"status"` // "reloaded"
}

// Error is the body of every error answer.
type Error struct {
	Error string `json:"error"`
	// Problems lists each problem of a config that a reload refused.
	Problems []string `json:"problems,omitempty"`
}

func (a *api) retry(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	err := a.Certs.Retry(r.Context(), name)
	switch {
	case errors.Is(err, tlsmgr.ErrNotManaged):
		writeError(w, http.StatusNotFound, fmt.Sprintf("%q is not a name Portico manages: see GET /certificates", name))
		return
	case err != nil:
		a.Logger.Error("admin API: retry failed", zap.String("name", name), zap.Error(err))
		writeError(w, http.StatusInternalServerError, "retry "+name+": "+err.Error())
		return
	}
	a.Logger.Info("admin API: retry requested", zap.String("name", name))
	writeJSON(w, http.StatusAccepted, RetryResult{Name: name, Status: "retrying"})
}

func (a *api) retryAll(w http.ResponseWriter, r *http.Request) {
	n, err := a.Certs.RetryAll(r.Context())
	if err != nil {
		a.Logger.Error("admin API: retry of every failed certificate failed", zap.Int("rescheduled", n), zap.Error(err))
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("retry stopped after %d certificate(s): %v", n, err))
		return
	}
	a.Logger.Info("admin API: retry of every failed certificate requested", zap.Int("rescheduled", n))
	writeJSON(w, http.StatusAccepted, RetryAllResult{Rescheduled: n})
}

func (a *api) reload(w http.ResponseWriter, r *http.Request) {
	if a.Reload == nil {
		writeError(w, http.StatusNotImplemented, "reload is not available")
		return
	}
	a.Logger.Info("admin API: reload requested", zap.String("remote", r.RemoteAddr))
	if err := a.Reload(); err != nil {
		body := Error{Error: "reload refused, the running config stays: " + err.Error()}
		var errs config.Errors
		if errors.As(err, &errs) {
			body.Error = fmt.Sprintf("reload refused, the running config stays: %d problem(s) in the config", len(errs))
			for _, p := range errs {
				body.Problems = append(body.Problems, p.Error())
			}
		}
		writeJSON(w, http.StatusBadRequest, body)
		return
	}
	writeJSON(w, http.StatusOK, ReloadResult{Status: "reloaded"})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error": "cannot encode the answer"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, Error{Error: msg})
}

// Listen opens the admin API's listener: a unix socket when addr holds a
// "/" (a stale socket file left by a crash is removed first, and the socket
// is made 0600: only Portico's user may use it), else TCP.
func Listen(addr string) (net.Listener, error) {
	if !strings.Contains(addr, "/") {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("admin API: %w", err)
		}
		return ln, nil
	}
	if err := removeStaleSocket(addr); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", addr)
	if err != nil {
		return nil, fmt.Errorf("admin API: %w", err)
	}
	if err := os.Chmod(addr, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin API: %w", err)
	}
	return ln, nil
}

// removeStaleSocket removes a socket file nobody listens on. A socket in
// use (another Portico) and a file that is not a socket are left alone.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("admin API: %s exists and is not a unix socket: remove it or choose another [listen] admin path", path)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return fmt.Errorf("admin API: %s is in use by another process (is another portico running?)", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("admin API: remove stale socket: %w", err)
	}
	return nil
}
