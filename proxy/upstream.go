package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// Pool is a site's upstreams, used round-robin. A request whose connection to
// one upstream cannot be made moves to the next, so one dead upstream costs a
// failed dial, not a failed request.
type Pool struct {
	upstreams []*url.URL
	// addrs are the upstreams' host:port for the HTTP/1.1 fast path; nil
	// when one is not plain http (https goes through net/http).
	addrs     []string
	next      atomic.Uint64
	transport http.RoundTripper
}

func newPool(raw []string, transport http.RoundTripper) (*Pool, error) {
	p := &Pool{transport: transport}
	for _, r := range raw {
		u, err := url.Parse(r)
		if err != nil {
			return nil, fmt.Errorf("upstream %q: %w", r, err)
		}
		p.upstreams = append(p.upstreams, u)
	}
	for _, u := range p.upstreams {
		if u.Scheme != "http" || u.Host == "" {
			p.addrs = nil
			break
		}
		addr := u.Host
		if u.Port() == "" {
			addr = net.JoinHostPort(u.Hostname(), "80")
		}
		p.addrs = append(p.addrs, addr)
	}
	return p, nil
}

// turn returns the index of the upstream whose turn it is, for the i-th
// attempt of a request (i > 0 after failed dials): round robin, moving on
// to the next on failure. Every path picks upstreams through it.
func (p *Pool) turn(start uint64, i int) int {
	return int((start + uint64(i)) % uint64(len(p.upstreams)))
}

// start begins a request's turn.
func (p *Pool) start() uint64 { return p.next.Add(1) }

// UpstreamsDownError is returned when no upstream of a pool accepted a
// connection; it names each upstream and why.
type UpstreamsDownError struct {
	Failures []string // "http://10.0.0.5:8080: connection refused"
}

func (e *UpstreamsDownError) Error() string {
	return "no upstream accepted a connection: " + strings.Join(e.Failures, "; ")
}

// RoundTrip sends req to the next upstream in turn, moving on when the dial
// fails. A failed dial sent nothing, so the request (and its body, which is
// kept open across attempts) is safe to send again.
func (p *Pool) RoundTrip(req *http.Request) (*http.Response, error) {
	start := p.start()
	body := req.Body
	if body != nil && body != http.NoBody {
		req.Body = keepOpen{body}
	}
	var failures []string
	for i := range p.upstreams {
		u := p.upstreams[p.turn(start, i)]
		out := req
		if i > 0 {
			out = req.Clone(req.Context())
		}
		out.URL.Scheme, out.URL.Host = u.Scheme, u.Host
		if st, ok := req.Context().Value(requestStateKey{}).(*requestState); ok {
			st.upstream = u.Host
			if st.upStart.IsZero() {
				st.upStart = time.Now()
			}
		}
		resp, err := p.transport.RoundTrip(out)
		if err == nil {
			return resp, nil
		}
		if !isDialError(err) || req.Context().Err() != nil {
			return nil, err
		}
		failures = append(failures, u.Redacted()+": "+dialReason(err))
	}
	return nil, &UpstreamsDownError{Failures: failures}
}

type keepOpen struct{ io.ReadCloser }

func (keepOpen) Close() error { return nil }

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial" && !errors.Is(err, context.Canceled)
}

func dialReason(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err.Error()
	}
	return err.Error()
}
