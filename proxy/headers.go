package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"net/textproto"
	"slices"
	"strings"

	"github.com/portico-proxy/portico/config"
)

// headerRules are the header rules of a route: its site's [site.headers],
// then its own [site.route.headers]. A set replaces every value the
// header had; a remove removes it. Request rules change what goes
// upstream, response rules what goes to the client. A nil *headerRules has
// none.
type headerRules struct {
	reqSet, respSet []headerSet
	// reqDrop and respDrop are the names whose values are not passed on:
	// those removed, and those set (which replace them).
	reqDrop, respDrop [][]byte
}

// headerSet is one set rule, its value a template.
type headerSet struct {
	name  string // canonical form
	parts []templatePart
}

// templatePart is a literal, or a placeholder to fill per request.
type templatePart struct {
	lit string
	ph  placeholder
}

type placeholder int

const (
	phNone placeholder = iota
	phClientIP
	phHost
	phRequestID
)

var placeholders = map[string]placeholder{"{client_ip}": phClientIP, "{host}": phHost, "{request_id}": phRequestID}

// ruleVars are what a request's placeholders stand for.
type ruleVars struct {
	clientIP, host, requestID []byte
}

// compileRules returns base's rules followed by h's: h's sets and removes
// override base's for the same header.
func compileRules(base *headerRules, h *config.Headers) (*headerRules, error) {
	if h == nil {
		return base, nil
	}
	r := &headerRules{}
	if base != nil {
		*r = headerRules{
			reqSet: base.reqSet, respSet: base.respSet,
			reqDrop: base.reqDrop, respDrop: base.respDrop,
		}
	}
	var err error
	if r.reqSet, r.reqDrop, err = mergeRules(r.reqSet, r.reqDrop, h.RequestSet, h.RequestRemove); err != nil {
		return nil, err
	}
	if r.respSet, r.respDrop, err = mergeRules(r.respSet, r.respDrop, h.ResponseSet, h.ResponseRemove); err != nil {
		return nil, err
	}
	return r, nil
}

// mergeRules adds set and remove rules to earlier ones, in new slices.
func mergeRules(sets []headerSet, drop [][]byte, set map[string]string, remove []string) ([]headerSet, [][]byte, error) {
	overridden := func(name string) bool {
		if _, ok := set[textproto.CanonicalMIMEHeaderKey(name)]; ok {
			return true
		}
		for n := range set {
			if strings.EqualFold(n, name) {
				return true
			}
		}
		for _, n := range remove {
			if strings.EqualFold(n, name) {
				return true
			}
		}
		return false
	}
	var outSets []headerSet
	for _, s := range sets {
		if !overridden(s.name) {
			outSets = append(outSets, s)
		}
	}
	outDrop := append([][]byte(nil), drop...)
	addDrop := func(name string) {
		if !droppedName(outDrop, []byte(name)) {
			outDrop = append(outDrop, []byte(name))
		}
	}
	for _, name := range remove {
		addDrop(name)
	}
	names := make([]string, 0, len(set))
	for name := range set {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		parts, err := compileTemplate(set[name])
		if err != nil {
			return nil, nil, fmt.Errorf("header %s: %w", name, err)
		}
		outSets = append(outSets, headerSet{name: textproto.CanonicalMIMEHeaderKey(name), parts: parts})
		addDrop(name)
	}
	return outSets, outDrop, nil
}

// compileTemplate splits a rule's value into literals and placeholders.
func compileTemplate(v string) ([]templatePart, error) {
	var parts []templatePart
	for v != "" {
		i := strings.IndexByte(v, '{')
		if i < 0 {
			parts = append(parts, templatePart{lit: v})
			break
		}
		j := strings.IndexByte(v[i:], '}')
		if j < 0 {
			return nil, fmt.Errorf("unclosed placeholder in %q", v)
		}
		ph, ok := placeholders[v[i:i+j+1]]
		if !ok {
			return nil, fmt.Errorf("unknown placeholder %s", v[i:i+j+1])
		}
		if i > 0 {
			parts = append(parts, templatePart{lit: v[:i]})
		}
		parts = append(parts, templatePart{ph: ph})
		v = v[i+j+1:]
	}
	return parts, nil
}

// appendValue appends a set rule's value for a request.
func (s *headerSet) appendValue(b []byte, vars *ruleVars) []byte {
	for _, p := range s.parts {
		switch p.ph {
		case phNone:
			b = append(b, p.lit...)
		case phClientIP:
			b = append(b, vars.clientIP...)
		case phHost:
			b = append(b, vars.host...)
		case phRequestID:
			b = append(b, vars.requestID...)
		}
	}
	return b
}

// dropsRequest reports whether a client's request header is not passed
// upstream (removed or replaced by a rule).
func (r *headerRules) dropsRequest(name []byte) bool {
	return r != nil && droppedName(r.reqDrop, name)
}

// dropsResponse reports whether an upstream's response header is not
// passed to the client.
func (r *headerRules) dropsResponse(name []byte) bool {
	return r != nil && droppedName(r.respDrop, name)
}

func droppedName(drop [][]byte, name []byte) bool {
	for _, d := range drop {
		if bytes.EqualFold(name, d) {
			return true
		}
	}
	return false
}

// writeSets writes set rules as header lines (the fast path).
func writeSets(w *bufio.Writer, sets []headerSet, vars *ruleVars) {
	for i := range sets {
		s := &sets[i]
		w.WriteString(s.name)
		w.WriteString(": ")
		w.Write(s.appendValue(w.AvailableBuffer(), vars))
		w.WriteString("\r\n")
	}
}

// applyRequest applies the request rules to an upstream request's header
// (the net/http path).
func (r *headerRules) applyRequest(h http.Header, vars *ruleVars) {
	if r != nil {
		apply(h, r.reqDrop, r.reqSet, vars)
	}
}

// applyResponse applies the response rules to a client's response header.
func (r *headerRules) applyResponse(h http.Header, vars *ruleVars) {
	if r != nil {
		apply(h, r.respDrop, r.respSet, vars)
	}
}

func apply(h http.Header, drop [][]byte, sets []headerSet, vars *ruleVars) {
	for _, d := range drop {
		h.Del(string(d))
	}
	for i := range sets {
		h[sets[i].name] = []string{string(sets[i].appendValue(nil, vars))}
	}
}
