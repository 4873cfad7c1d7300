package proxy

import (
	"slices"
	"strings"

	"github.com/portico-proxy/portico/config"
)

// Router maps a request's host to its site. Lookups are O(1) in the number of
// hosts: one map probe for the exact name and, failing that, one for the
// wildcard of its parent domain.
type Router struct {
	exact    map[string]*Site
	wildcard map[string]*Site // key: ".example.net" for "*.example.net"
	// onDemand serves hostnames not in the config that got an on-demand
	// certificate; nil without [on_demand].
	onDemand *Site
	// validationRedirect is [acme] validation_redirect, without a trailing slash.
	validationRedirect string
	// trusted are [listen] trusted_proxies, for what is decided before a
	// site is (a request no site serves is logged with its client too).
	trusted trustedProxies
	// pools are the [[pool]]s by name.
	pools map[string]*Pool
}

func newRouter() *Router {
	return &Router{exact: map[string]*Site{}, wildcard: map[string]*Site{}}
}

// add routes host (a name, "*.parent" wildcard or IP address) to s. Hosts
// are normalised as Lookup normalises requests, so a config not passed
// through config.Load still routes.
func (r *Router) add(host string, s *Site) {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if rest, ok := strings.CutPrefix(host, "*"); ok {
		r.wildcard[rest] = s
		return
	}
	r.exact[host] = s
}

// Lookup returns the site for a Host header or SNI value (port and trailing
// dot ignored, case-insensitive), or nil. An exact host wins over a wildcard.
func (r *Router) Lookup(host string) *Site {
	host = stripPort(host)
	if n := len(host); n > 0 && host[n-1] == '.' {
		host = host[:n-1]
	}
	if hasUpper(host) {
		if len(host) > maxHostLen {
			return nil // longer than any DNS name or IP literal
		}
		// lowered on the stack: a map index with string(bytes) does not
		// allocate
		var buf [maxHostLen]byte
		b := buf[:len(host)]
		for i := 0; i < len(host); i++ {
			c := host[i]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			b[i] = c
		}
		if s := r.exact[string(b)]; s != nil {
			return s
		}
		if suffix, ok := config.WildcardSuffix(b); ok {
			return r.wildcard[string(suffix)]
		}
		return nil
	}
	if s := r.exact[host]; s != nil {
		return s
	}
	if suffix, ok := config.WildcardSuffix(host); ok {
		return r.wildcard[suffix]
	}
	return nil
}

// sites returns the table's sites, each once, on-demand's last.
func (r *Router) sites() []*Site {
	seen := map[*Site]bool{}
	var out []*Site
	for _, m := range []map[string]*Site{r.exact, r.wildcard} {
		for _, s := range m {
			if !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	slices.SortFunc(out, func(a, b *Site) int { return strings.Compare(a.name, b.name) })
	if r.onDemand != nil {
		out = append(out, r.onDemand)
	}
	return out
}

// maxHostLen bounds the hosts Lookup lowers: 253 for a DNS name, with room
// for a trailing dot.
const maxHostLen = 255

// stripPort removes a ":port" suffix, keeping bracketed IPv6 literals whole
// (without the brackets).
func stripPort(host string) string {
	if len(host) > 0 && host[0] == '[' {
		if end := strings.IndexByte(host, ']'); end > 0 {
			return host[1:end]
		}
		return host
	}
	if i := strings.LastIndexByte(host, ':'); i >= 0 && strings.IndexByte(host, ':') == i {
		return host[:i]
	}
	return host
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return true
		}
	}
	return false
}
