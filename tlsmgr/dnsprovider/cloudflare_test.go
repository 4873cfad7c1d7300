package dnsprovider

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libdns/cloudflare"
	"github.com/libdns/libdns"

	"github.com/portico-proxy/portico/config"
)

// cfRequest is one request the fake Cloudflare API received.
type cfRequest struct {
	Method, Path string
	Query        url.Values
	Auth         string
	ContentType  string
	Body         map[string]any // nil without a body
}

// fakeCloudflare stands in for https://api.cloudflare.com/client/v4 with one
// zone, example.net (ID "zone-example-net"), and the DNS record endpoints
// libdns/cloudflare uses. It answers like the real API as far as the
// provider can tell: a zone filter with or without the trailing dot, record
// names returned absolute, TXT contents as stored (quoted).
type fakeCloudflare struct {
	t      *testing.T
	mu     sync.Mutex
	reqs   []cfRequest
	nextID int
	recs   map[string]cfRecord // by ID
}

type cfRecord struct {
	ID      string `json:"id"`
	Type    string `json:"type"`
	Name    string `json:"name"`
	Content string `json:"content"`
	TTL     int    `json:"ttl"`
}

const (
	cfZoneID   = "zone-example-net"
	cfZoneName = "example.net"
)

func (f *fakeCloudflare) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	req := cfRequest{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(),
		Auth: r.Header.Get("Authorization"), ContentType: r.Header.Get("Content-Type")}
	if len(body) > 0 {
		if err := json.Unmarshal(body, &req.Body); err != nil {
			f.t.Errorf("%s %s: body is not JSON: %v: %s", r.Method, r.URL, err, body)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, req)

	reply := func(status int, result any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		resp := map[string]any{"success": status < 400, "errors": []any{}, "messages": []any{}, "result": result}
		if status >= 400 {
			resp["errors"] = []any{map[string]any{"code": 1000, "message": "fake: " + http.StatusText(status)}}
		}
		_ = json.NewEncoder(w).Encode(resp)
	}

	const recordsPath = "/client/v4/zones/" + cfZoneID + "/dns_records"
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/client/v4/zones":
		var zones []any
		if strings.TrimSuffix(r.URL.Query().Get("name"), ".") == cfZoneName {
			zones = append(zones, map[string]any{"id": cfZoneID, "name": cfZoneName, "status": "active"})
		}
		reply(http.StatusOK, zones)
	case r.Method == http.MethodGet && r.URL.Path == recordsPath:
		q := r.URL.Query()
		out := []cfRecord{}
		for _, rec := range f.recs {
			if rec.Type == q.Get("type") && rec.Name == q.Get("name") &&
				(!q.Has("content.contains") || strings.Contains(rec.Content, q.Get("content.contains"))) {
				out = append(out, rec)
			}
		}
		reply(http.StatusOK, out)
	case r.Method == http.MethodPost && r.URL.Path == recordsPath:
		var in cfRecord
		_ = json.Unmarshal(body, &in)
		f.nextID++
		in.ID = fmt.Sprintf("rec-%d", f.nextID)
		if !strings.HasSuffix(in.Name, "."+cfZoneName) && in.Name != cfZoneName {
			in.Name += "." + cfZoneName // the API takes names relative to the zone
		}
		if in.TTL == 0 {
			in.TTL = 1 // "automatic"
		}
		f.recs[in.ID] = in
		reply(http.StatusOK, in)
	case strings.HasPrefix(r.URL.Path, recordsPath+"/"):
		id := strings.TrimPrefix(r.URL.Path, recordsPath+"/")
		rec, ok := f.recs[id]
		if !ok {
			reply(http.StatusNotFound, nil)
			return
		}
		switch r.Method {
		case http.MethodPatch:
			var in cfRecord
			_ = json.Unmarshal(body, &in)
			if in.Content != "" {
				rec.Content = in.Content
			}
			f.recs[id] = rec
			reply(http.StatusOK, rec)
		case http.MethodDelete:
			delete(f.recs, id)
			reply(http.StatusOK, map[string]any{"id": id})
		default:
			reply(http.StatusMethodNotAllowed, nil)
		}
	default:
		reply(http.StatusNotFound, nil)
	}
}

// take returns and forgets the requests received so far.
func (f *fakeCloudflare) take() []cfRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.reqs
	f.reqs = nil
	return r
}

func (f *fakeCloudflare) records() []cfRecord {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []cfRecord
	for _, r := range f.recs {
		out = append(out, r)
	}
	return out
}

// rewriteTransport sends requests for api.cloudflare.com to the test server.
type rewriteTransport struct {
	target *url.URL
	t      *testing.T
}

func (rt rewriteTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Host != "api.cloudflare.com" || r.URL.Scheme != "https" {
		rt.t.Errorf("request to %s, want https://api.cloudflare.com only", r.URL)
		return nil, fmt.Errorf("unexpected host %s", r.URL.Host)
	}
	r = r.Clone(r.Context())
	r.URL.Scheme = rt.target.Scheme
	r.URL.Host = rt.target.Host
	r.Host = rt.target.Host
	return http.DefaultTransport.RoundTrip(r)
}

// TestCloudflareRequests drives the provider New builds for "cloudflare"
// the way certmagic's DNS01Solver does (zone with its trailing dot, a
// libdns.RR relative to the zone) and checks every request it sends.
func TestCloudflareRequests(t *testing.T) {
	const token = "cf-token-Zr4Xq0Example000000000000000000000"
	fake := &fakeCloudflare{t: t, recs: map[string]cfRecord{}}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	target, _ := url.Parse(srv.URL)
	client := &http.Client{Transport: rewriteTransport{target: target, t: t}, Timeout: 10 * time.Second}

	prov, err := New(&config.DNS{Provider: "cloudflare", APIToken: token}, Options{HTTPClient: client})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const zone = "example.net."
	rr := func(value string) []libdns.Record {
		return []libdns.Record{libdns.RR{Type: "TXT", Name: "_acme-challenge", Data: value}}
	}
	wantAuth := "Bearer " + token
	check := func(step string, got []cfRequest, want []cfRequest) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d requests, want %d:\n got %+v\nwant %+v", step, len(got), len(want), got, want)
		}
		for i := range want {
			g, w := got[i], want[i]
			if g.Auth != wantAuth {
				t.Errorf("%s: request %d (%s %s): Authorization = %q, want the bearer token", step, i, g.Method, g.Path, g.Auth)
			}
			if g.Method != w.Method || g.Path != w.Path || !reflect.DeepEqual(g.Query, w.Query) {
				t.Errorf("%s: request %d = %s %s?%s, want %s %s?%s", step, i, g.Method, g.Path, g.Query.Encode(), w.Method, w.Path, w.Query.Encode())
			}
			if w.Body == nil {
				if g.Body != nil {
					t.Errorf("%s: request %d: unexpected body %v", step, i, g.Body)
				}
				continue
			}
			if g.ContentType != "application/json" {
				t.Errorf("%s: request %d: Content-Type = %q", step, i, g.ContentType)
			}
			for k, v := range w.Body {
				if !reflect.DeepEqual(g.Body[k], v) {
					t.Errorf("%s: request %d: body[%q] = %#v, want %#v", step, i, k, g.Body[k], v)
				}
			}
			// Everything else the library sends must be a zero value
			// (it marshals a struct without omitempty on some fields).
			for k, v := range g.Body {
				if _, ok := w.Body[k]; !ok && !isZeroJSON(v) {
					t.Errorf("%s: request %d: unexpected body field %q = %#v", step, i, k, v)
				}
			}
		}
	}
	const recs = "/client/v4/zones/" + cfZoneID + "/dns_records"

	// Present: zone lookup, then create.
	if _, err := prov.AppendRecords(ctx, zone, rr("token-1")); err != nil {
		t.Fatalf("AppendRecords: %v", err)
	}
	check("AppendRecords", fake.take(), []cfRequest{
		{Method: "GET", Path: "/client/v4/zones", Query: url.Values{"name": {"example.net."}}},
		{Method: "POST", Path: recs, Query: url.Values{}, Body: map[string]any{
			"type": "TXT", "name": "_acme-challenge", "content": `"token-1"`}},
	})

	// SetRecords (libdns.RecordSetter) on the same name: the zone is
	// cached; look the record up by name and type, then PATCH it.
	setter, ok := prov.(libdns.RecordSetter)
	if !ok {
		t.Fatalf("%T is not a libdns.RecordSetter", prov)
	}
	if _, err := setter.SetRecords(ctx, zone, rr("token-2")); err != nil {
		t.Fatalf("SetRecords: %v", err)
	}
	check("SetRecords", fake.take(), []cfRequest{
		{Method: "GET", Path: recs, Query: url.Values{"type": {"TXT"}, "name": {"_acme-challenge.example.net"}}},
		{Method: "PATCH", Path: recs + "/rec-1", Query: url.Values{}, Body: map[string]any{
			"type": "TXT", "name": "_acme-challenge", "content": `"token-2"`}},
	})

	// CleanUp: look the record up by content, then DELETE it by ID.
	if _, err := prov.DeleteRecords(ctx, zone, rr("token-2")); err != nil {
		t.Fatalf("DeleteRecords: %v", err)
	}
	check("DeleteRecords", fake.take(), []cfRequest{
		{Method: "GET", Path: recs, Query: url.Values{"type": {"TXT"}, "name": {"_acme-challenge.example.net"}, "content.contains": {"token-2"}}},
		{Method: "DELETE", Path: recs + "/rec-1", Query: url.Values{}},
	})
	if left := fake.records(); len(left) != 0 {
		t.Errorf("records left in the zone: %+v", left)
	}

	// A fresh provider with SetRecords on a new name: zone lookup, lookup,
	// create.
	prov2, err := New(&config.DNS{Provider: "cloudflare", APIToken: token}, Options{HTTPClient: client})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := prov2.(libdns.RecordSetter).SetRecords(ctx, zone, rr("token-3")); err != nil {
		t.Fatalf("SetRecords (create): %v", err)
	}
	check("SetRecords (create)", fake.take(), []cfRequest{
		{Method: "GET", Path: "/client/v4/zones", Query: url.Values{"name": {"example.net."}}},
		{Method: "GET", Path: recs, Query: url.Values{"type": {"TXT"}, "name": {"_acme-challenge.example.net"}}},
		{Method: "POST", Path: recs, Query: url.Values{}, Body: map[string]any{
			"type": "TXT", "name": "_acme-challenge", "content": `"token-3"`}},
	})

	// An unknown zone is an error, not a request to the wrong zone.
	if _, err := prov2.AppendRecords(ctx, "example.org.", rr("x")); err == nil {
		t.Error("AppendRecords in a zone the account lacks succeeded")
	}
}

func isZeroJSON(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case string:
		return v == "" || v == "0001-01-01T00:00:00Z"
	case float64:
		return v == 0
	case bool:
		return !v
	case map[string]any:
		for _, e := range v {
			if !isZeroJSON(e) {
				return false
			}
		}
		return true
	case []any:
		return len(v) == 0
	}
	return false
}

// TestCloudflareDefaultClient checks New leaves the provider's HTTPClient
// nil (so it uses http.DefaultClient) when Options has none: a nil
// *http.Client stored in the interface field would not be nil and would
// panic on the first request.
func TestCloudflareDefaultClient(t *testing.T) {
	prov, err := New(&config.DNS{Provider: "cloudflare", APIToken: "token-0123456789abcdef"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	p, ok := prov.(*cloudflare.Provider)
	if !ok {
		t.Fatalf("New returned %T", prov)
	}
	if p.HTTPClient != nil {
		t.Errorf("HTTPClient = %#v, want nil", p.HTTPClient)
	}
	if p.APIToken != "token-0123456789abcdef" || p.ZoneToken != "" {
		t.Errorf("APIToken/ZoneToken not set as configured")
	}
}
