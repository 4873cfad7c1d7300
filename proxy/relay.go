package proxy

import (
	"bufio"

	"github.com/portico-proxy/portico/proxy/h1"
	"github.com/portico-proxy/portico/proxy/route"
)

// This file writes the fast path's upstream requests and reads, checks and
// relays the answers (fastpath.go).

// writeRequestHead writes the upstream request for h: its request line
// (less the route's strip_prefix), Host, the client's end-to-end headers
// less the route's removed ones, X-Request-ID, the route's set rules,
// X-Forwarded-* by the forwarding policy (forwarded.go) and its
// Content-Length.
func writeRequestHead(w *bufio.Writer, h *h1.RequestHead, c *fastConn, site *Site) {
	rt := c.route
	w.Write(h.Method)
	w.WriteByte(' ')
	if rt.strip == "" {
		w.Write(h.URI)
	} else {
		path := pathOf(h.URI)
		w.Write(route.AppendStripPrefix(w.AvailableBuffer(), path, rt.strip))
		w.Write(h.URI[len(path):]) // the query
	}
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.Write(h.Host)
	w.WriteString("\r\n")
	trusted := len(site.trusted) > 0 && site.trusted.trustsAddr(c.peer)
	var sawHost, sawProto bool
	for _, f := range h.Fields {
		switch f.Kind {
		case h1.KindHost, h1.KindConnection, h1.KindTE, h1.KindHopByHop, h1.KindTrailer, h1.KindContentLength, h1.KindForwarded, h1.KindXForwardedFor, h1.KindXRequestID:
			continue
		case h1.KindXForwardedHost:
			if !trusted {
				continue
			}
			sawHost = true
		case h1.KindXForwardedProto:
			if !trusted {
				continue
			}
			sawProto = true
		}
		if h1.Listed(h.Dropped, f.Name) || rt.rules.dropsRequest(f.Name) {
			continue
		}
		h1.WriteField(w, f)
	}
	w.WriteString("X-Request-Id: ")
	w.Write(c.reqID)
	w.WriteString("\r\n")
	if rt.rules != nil {
		writeSets(w, rt.rules.reqSet, &c.vars)
	}
	if c.peerIP != "" {
		w.WriteString("X-Forwarded-For: ")
		w.Write(appendForwardedFor(w.AvailableBuffer(), trusted, c.xff, c.peerIP))
		w.WriteString("\r\n")
	}
	if !sawHost {
		w.WriteString("X-Forwarded-Host: ")
		w.Write(h.Host)
		w.WriteString("\r\n")
	}
	if !sawProto {
		w.WriteString("X-Forwarded-Proto: https\r\n")
	}
	if h.TETrailers {
		w.WriteString("Te: trailers\r\n")
	}
	if h.ContentLength >= 0 {
		w.WriteString("Content-Length: ")
		w.Write(h1.AppendInt(w.AvailableBuffer(), h.ContentLength))
		w.WriteString("\r\n")
	}
	w.WriteString("\r\n")
}

// writeAltSvc writes the Alt-Svc field announcing HTTP/3 (http3.go), when
// it is on.
func writeAltSvc(w *bufio.Writer, altSvc string) {
	if altSvc != "" {
		w.WriteString("Alt-Svc: ")
		w.WriteString(altSvc)
		w.WriteString("\r\n")
	}
}

// writeResponseHead writes the client's response head for r: the
// upstream's status and end-to-end headers, HSTS, Alt-Svc, and framing of its own
// (the body is re-framed: Content-Length when known, chunked otherwise).
// An informational (1xx) head is written as it is.
func writeResponseHead(w *bufio.Writer, r *h1.ResponseHead, site *Site, c *fastConn, informational, keep bool) {
	rules := c.route.rules
	w.WriteString("HTTP/1.1 ")
	w.Write(r.Line)
	w.WriteString("\r\n")
	if site.hsts != "" && !informational {
		w.WriteString("Strict-Transport-Security: ")
		w.WriteString(site.hsts)
		w.WriteString("\r\n")
	}
	if !informational {
		writeAltSvc(w, c.altSvc)
	}
	for _, f := range r.Fields {
		switch f.Kind {
		case h1.KindConnection, h1.KindHopByHop, h1.KindTE, h1.KindUpgrade, h1.KindTransferEncoding, h1.KindContentLength:
			continue
		case h1.KindTrailer:
			if !r.Chunked || r.Bodyless {
				continue // no trailers follow
			}
		}
		if h1.Listed(r.Dropped, f.Name) || !informational && rules.dropsResponse(f.Name) {
			continue
		}
		h1.WriteField(w, f)
	}
	if !informational && rules != nil {
		writeSets(w, rules.respSet, &c.vars)
	}
	if !informational {
		switch {
		case r.Bodyless:
			if r.ContentLength >= 0 && r.Status != 204 {
				w.WriteString("Content-Length: ")
				w.Write(h1.AppendInt(w.AvailableBuffer(), r.ContentLength))
				w.WriteString("\r\n")
			}
		case r.Chunked || r.ContentLength < 0:
			w.WriteString("Transfer-Encoding: chunked\r\n")
		default:
			w.WriteString("Content-Length: ")
			w.Write(h1.AppendInt(w.AvailableBuffer(), r.ContentLength))
			w.WriteString("\r\n")
		}
		if !keep {
			w.WriteString("Connection: close\r\n")
		}
	}
	w.WriteString("\r\n")
}
