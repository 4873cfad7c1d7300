package proxy

import (
	"fmt"
	"net/http"
	"net/http/httputil"
	"slices"
	"strconv"
	"strings"

	"github.com/portico-proxy/portico/config"
	"github.com/portico-proxy/portico/proxy/route"
)

// The request core: what every request path (the HTTP/1.1 fast path and
// net/http's HTTP/1.x and HTTP/2) asks before it moves a byte. It holds the
// decisions; the paths only carry them out on their own wire.
//
//	Host ──► Router.Lookup ──► Site
//	path, method ──► Site.route ──► Route: an action (proxy to a pool,
//	                                respond, redirect), strip_prefix and
//	                                the header rules (site's, then route's)
//
// Routes, their rules and their pools are built once per config (Swap), so
// a request only reads them.

// The answers Portico gives itself when a route's pool fails, on every
// path.
const (
	msgUpstreamsDown  = "502 Bad Gateway: no upstream of this site is reachable"
	msgUpstreamFailed = "502 Bad Gateway: the upstream did not answer"
	msgBodyRefused    = "400 Bad Request: the request body was malformed or ended early"
	logUpstreamsDown  = "every upstream is down"
	logUpstreamFailed = "upstream request failed"
)

// Route actions.
const (
	actProxy    = iota // to the route's pool
	actRespond         // a fixed answer
	actRedirect        // a redirect
)

// Route is one [[site.route]], or a site's default action (path "").
type Route struct {
	path    string   // the pattern as configured; "" for the default
	methods []string // the methods taken; nil: all
	allow   string   // methods, for a 405's Allow header

	action   int
	pool     *Pool
	proxy    *httputil.ReverseProxy // the net/http path's proxy to pool
	strip    string                 // strip_prefix
	status   int                    // of respond or redirect
	respond  []byte
	redirect string // the target, with {uri} and {host}

	rules *headerRules // the site's, then the route's
}

// takes reports whether the route takes method m.
func (r *Route) takes(m string) bool {
	return r.methods == nil || slices.Contains(r.methods, m)
}

// takesBytes is takes for a method held as bytes (the fast path).
func (r *Route) takesBytes(m []byte) bool {
	if r.methods == nil {
		return true
	}
	for _, x := range r.methods {
		if x == string(m) {
			return true
		}
	}
	return false
}

// match returns the route for a request path as the client sent it (the
// part of the target before '?'): the longest matching [[site.route]], or
// the site's default; nil when the site has neither.
func (s *Site) match(path string) *Route {
	if r, _, ok := s.routes.Match(path); ok {
		return r
	}
	return s.def
}

// matchBytes is match for a path held as bytes; it does not allocate.
func (s *Site) matchBytes(path []byte) *Route {
	if r, _, ok := s.routes.MatchBytes(path); ok {
		return r
	}
	return s.def
}

// buildRoutes makes a site's default action and routes from its config.
func (s *Site) buildRoutes(sc config.Site, b *builder) error {
	siteRules, err := compileRules(nil, sc.Headers)
	if err != nil {
		return err
	}
	def := config.Route{Upstreams: sc.Upstreams, Pool: sc.Pool, Respond: sc.Respond}
	if len(sc.Upstreams) > 0 || sc.Pool != "" || sc.Respond != "" {
		if s.def, err = s.newRoute(def, siteRules, b); err != nil {
			return err
		}
	}
	if len(sc.Routes) == 0 {
		return nil
	}
	list := make([]route.Route[*Route], 0, len(sc.Routes))
	for _, rc := range sc.Routes {
		rules, err := compileRules(siteRules, rc.Headers)
		if err != nil {
			return fmt.Errorf("route %s: %w", rc.Path, err)
		}
		r, err := s.newRoute(rc, rules, b)
		if err != nil {
			return fmt.Errorf("route %s: %w", rc.Path, err)
		}
		list = append(list, route.Route[*Route]{Pattern: rc.Path, Value: r})
	}
	s.routes, err = route.New(list)
	return err
}

// newRoute builds one route's action.
func (s *Site) newRoute(rc config.Route, rules *headerRules, b *builder) (*Route, error) {
	r := &Route{path: rc.Path, strip: rc.StripPrefix, status: rc.Status, rules: rules}
	if len(rc.Methods) > 0 {
		r.methods = rc.Methods
		r.allow = strings.Join(rc.Methods, ", ")
	}
	switch {
	case rc.Respond != "":
		r.action, r.respond = actRespond, []byte(rc.Respond)
		if r.status == 0 {
			r.status = http.StatusOK
		}
	case rc.Redirect != "":
		r.action, r.redirect = actRedirect, rc.Redirect
		if r.status == 0 {
			r.status = config.DefaultRedirectStatus
		}
	default:
		pool, err := b.pool(rc.Pool, rc.Upstreams)
		if err != nil {
			return nil, err
		}
		r.action, r.pool = actProxy, pool
		r.proxy = s.reverseProxy(r, b)
	}
	return r, nil
}

// builder makes the pieces of one routing table: pools by name are built
// once and shared by every site and route that names them; a named pool
// whose settings a reload leaves as they were is the running one (its
// health and connections go on).
type builder struct {
	s     *Server
	pools map[string]*Pool
	fresh []*Pool // pools made by this build (their checkers start on commit)
}

// pool returns the named pool, or a new unnamed one for upstreams.
func (b *builder) pool(name string, upstreams []string) (*Pool, error) {
	if name != "" {
		p := b.pools[name]
		if p == nil {
			return nil, fmt.Errorf("unknown pool %q", name)
		}
		return p, nil
	}
	return newPool(config.DefaultPool(upstreams), b)
}

// serveRoute carries out a route's action on the net/http path.
func (s *Site) serveRoute(w http.ResponseWriter, r *http.Request, rt *Route) {
	if !rt.takes(r.Method) {
		w.Header().Set("Allow", rt.allow)
		http.Error(w, "405 Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}
	switch rt.action {
	case actRespond:
		rt.rules.applyResponse(w.Header(), &stateOf(r).vars)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(rt.respond)))
		w.WriteHeader(rt.status)
		w.Write(rt.respond)
	case actRedirect:
		rt.rules.applyResponse(w.Header(), &stateOf(r).vars)
		http.Redirect(w, r, expandRedirect(rt.redirect, r), rt.status)
	default:
		if coding := mayCompress(r, s.compress); coding != "" {
			cw := newCompressWriter(w, coding)
			defer func() {
				if p := recover(); p != nil {
					cw.abandon() // an answer cut short (http.ErrAbortHandler): no end for it
					panic(p)
				}
				// an error here is a client gone, which ReverseProxy saw
				// already; the answer cannot be changed any more
				cw.close()
			}()
			w = cw
		}
		rt.proxy.ServeHTTP(w, r)
	}
}

// expandRedirect fills a redirect target's {uri} (the request's path and
// query as sent) and {host} (its Host without port).
func expandRedirect(target string, r *http.Request) string {
	if !strings.Contains(target, "{") {
		return target
	}
	uri := r.RequestURI
	if !strings.HasPrefix(uri, "/") {
		uri = r.URL.RequestURI() // absolute form: its path and query
	}
	return strings.NewReplacer("{uri}", uri, "{host}", stripPort(r.Host)).Replace(target)
}

// requestPath is the path of r as the client sent it, before '?', for
// routing: the fast path routes on the same bytes.
func requestPath(r *http.Request) string {
	uri := r.RequestURI
	if !strings.HasPrefix(uri, "/") {
		return r.URL.EscapedPath() // absolute form, or HTTP/2's :path "*"
	}
	if i := strings.IndexByte(uri, '?'); i >= 0 {
		return uri[:i]
	}
	return uri
}
