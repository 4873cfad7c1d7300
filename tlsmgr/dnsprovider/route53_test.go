package dnsprovider

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libdns/libdns"
	"github.com/libdns/route53"

	"github.com/portico-proxy/portico/config"
)

const (
	r53ZoneID = "Z0TEST1234567890ABCD"
	r53AKID   = "AKIAPORTICOTEST00001"
	r53Secret = "portico/test+SECRET/0123456789abcdefghijk"
	r53Region = "us-east-1"
	r53NS     = "https://route53.amazonaws.com/doc/2013-04-01/"
)

// r53Change is the body of a ChangeResourceRecordSets request.
type r53Change struct {
	XMLName xml.Name `xml:"ChangeResourceRecordSetsRequest"`
	Changes []struct {
		Action string `xml:"Action"`
		Set    struct {
			Name   string   `xml:"Name"`
			Type   string   `xml:"Type"`
			TTL    *int64   `xml:"TTL"`
			Values []string `xml:"ResourceRecords>ResourceRecord>Value"`
		} `xml:"ResourceRecordSet"`
	} `xml:"ChangeBatch>Changes>Change"`
}

type r53Request struct {
	Method, Path string
	Query        url.Values
	Auth         string
	ContentType  string
	Change       *r53Change // for POST
	SigErr       error      // SigV4 verification result
}

type r53Set struct {
	Name, Type string
	TTL        int64
	Values     []string
}

// fakeRoute53 stands in for the Route 53 API with one hosted zone,
// example.net (r53ZoneID): ListResourceRecordSets and
// ChangeResourceRecordSets with Route 53's CREATE/UPSERT/DELETE semantics.
type fakeRoute53 struct {
	t    *testing.T
	mu   sync.Mutex
	reqs []r53Request
	sets map[string]r53Set // by name+" "+type
}

func newFakeRoute53(t *testing.T) *fakeRoute53 {
	return &fakeRoute53{t: t, sets: map[string]r53Set{
		"example.net. NS": {Name: "example.net.", Type: "NS", TTL: 172800, Values: []string{"ns-1.awsdns-01.org."}},
	}}
}

func (f *fakeRoute53) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	req := r53Request{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.Query(),
		Auth: r.Header.Get("Authorization"), ContentType: r.Header.Get("Content-Type"),
		SigErr: verifySigV4(r, body, r53AKID, r53Secret, r53Region, "route53")}
	f.mu.Lock()
	defer f.mu.Unlock()
	defer func() { f.reqs = append(f.reqs, req) }()

	fail := func(code, msg string) {
		w.Header().Set("Content-Type", "text/xml")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `<?xml version="1.0"?><ErrorResponse xmlns="%s"><Error><Type>Sender</Type><Code>%s</Code><Message>%s</Message></Error><RequestId>fake</RequestId></ErrorResponse>`, r53NS, code, msg)
	}
	rrsetPath := "/2013-04-01/hostedzone/" + r53ZoneID + "/rrset"
	switch {
	case r.Method == http.MethodGet && r.URL.Path == rrsetPath:
		keys := make([]string, 0, len(f.sets))
		for k := range f.sets {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?><ListResourceRecordSetsResponse xmlns="%s"><ResourceRecordSets>`, r53NS)
		for _, k := range keys {
			s := f.sets[k]
			fmt.Fprintf(&b, "<ResourceRecordSet><Name>%s</Name><Type>%s</Type><TTL>%d</TTL><ResourceRecords>", s.Name, s.Type, s.TTL)
			for _, v := range s.Values {
				b.WriteString("<ResourceRecord><Value>")
				_ = xml.EscapeText(&b, []byte(v))
				b.WriteString("</Value></ResourceRecord>")
			}
			b.WriteString("</ResourceRecords></ResourceRecordSet>")
		}
		b.WriteString("</ResourceRecordSets><IsTruncated>false</IsTruncated><MaxItems>1000</MaxItems></ListResourceRecordSetsResponse>")
		w.Header().Set("Content-Type", "text/xml")
		_, _ = io.WriteString(w, b.String())
	case r.Method == http.MethodPost && r.URL.Path == rrsetPath:
		var ch r53Change
		if err := xml.Unmarshal(body, &ch); err != nil {
			f.t.Errorf("ChangeResourceRecordSets body is not XML: %v: %s", err, body)
			fail("InvalidInput", "bad XML")
			return
		}
		if ch.XMLName.Space != r53NS {
			f.t.Errorf("ChangeResourceRecordSets namespace %q, want %q", ch.XMLName.Space, r53NS)
		}
		req.Change = &ch
		for _, c := range ch.Changes {
			key := c.Set.Name + " " + c.Set.Type
			var ttl int64
			if c.Set.TTL != nil {
				ttl = *c.Set.TTL
			}
			set := r53Set{Name: c.Set.Name, Type: c.Set.Type, TTL: ttl, Values: c.Set.Values}
			old, exists := f.sets[key]
			switch c.Action {
			case "CREATE":
				if exists {
					fail("InvalidChangeBatch", "Tried to create resource record set but it already exists")
					return
				}
				f.sets[key] = set
			case "UPSERT":
				f.sets[key] = set
			case "DELETE":
				if !exists || old.TTL != set.TTL || !slices.Equal(old.Values, set.Values) {
					fail("InvalidChangeBatch", "Tried to delete resource record set but it was not found or values do not match")
					return
				}
				delete(f.sets, key)
			default:
				fail("InvalidInput", "unknown action "+c.Action)
				return
			}
		}
		w.Header().Set("Content-Type", "text/xml")
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><ChangeResourceRecordSetsResponse xmlns="%s"><ChangeInfo><Id>/change/C0FAKE%d</Id><Status>PENDING</Status><SubmittedAt>%s</SubmittedAt></ChangeInfo></ChangeResourceRecordSetsResponse>`,
			r53NS, len(f.reqs), time.Now().UTC().Format("2006-01-02T15:04:05.000Z"))
	default:
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `<ErrorResponse xmlns="%s"><Error><Code>NotFound</Code><Message>fake: no route</Message></Error></ErrorResponse>`, r53NS)
	}
}

func (f *fakeRoute53) take() []r53Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.reqs
	f.reqs = nil
	return r
}

func (f *fakeRoute53) set(name, typ string) (r53Set, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.sets[name+" "+typ]
	return s, ok
}

// verifySigV4 recomputes the AWS Signature Version 4 of a request received
// by a server and compares it with the Authorization header.
func verifySigV4(r *http.Request, body []byte, akid, secret, region, service string) error {
	auth := r.Header.Get("Authorization")
	rest, ok := strings.CutPrefix(auth, "AWS4-HMAC-SHA256 ")
	if !ok {
		return fmt.Errorf("authorization %q is not AWS4-HMAC-SHA256", auth)
	}
	fields := map[string]string{}
	for _, part := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		fields[k] = v
	}
	amzDate := r.Header.Get("X-Amz-Date")
	if len(amzDate) < 8 {
		return fmt.Errorf("X-Amz-Date = %q", amzDate)
	}
	scope := strings.Join([]string{amzDate[:8], region, service, "aws4_request"}, "/")
	if want := akid + "/" + scope; fields["Credential"] != want {
		return fmt.Errorf("credential %q, want %q", fields["Credential"], want)
	}
	signed := strings.Split(fields["SignedHeaders"], ";")
	if !slices.Contains(signed, "host") || !slices.Contains(signed, "x-amz-date") {
		return fmt.Errorf("SignedHeaders %q lacks host or x-amz-date", fields["SignedHeaders"])
	}
	var canonHeaders strings.Builder
	for _, h := range signed {
		var v string
		switch h {
		case "host":
			v = r.Host
		case "content-length":
			v = r.Header.Get("Content-Length")
			if v == "" {
				v = strconv.FormatInt(r.ContentLength, 10)
			}
		default:
			v = strings.Join(r.Header.Values(h), ",")
		}
		canonHeaders.WriteString(h + ":" + strings.Join(strings.Fields(v), " ") + "\n")
	}
	q := r.URL.Query()
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var canonQuery []string
	esc := func(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }
	for _, k := range keys {
		vals := slices.Clone(q[k])
		sort.Strings(vals)
		for _, v := range vals {
			canonQuery = append(canonQuery, esc(k)+"="+esc(v))
		}
	}
	payload := r.Header.Get("X-Amz-Content-Sha256")
	if payload == "" {
		sum := sha256.Sum256(body)
		payload = hex.EncodeToString(sum[:])
	}
	canonReq := strings.Join([]string{r.Method, r.URL.EscapedPath(), strings.Join(canonQuery, "&"),
		canonHeaders.String(), fields["SignedHeaders"], payload}, "\n")
	reqHash := sha256.Sum256([]byte(canonReq))
	toSign := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(reqHash[:])
	mac := func(key []byte, data string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(data))
		return h.Sum(nil)
	}
	k := mac([]byte("AWS4"+secret), amzDate[:8])
	k = mac(k, region)
	k = mac(k, service)
	k = mac(k, "aws4_request")
	if want := hex.EncodeToString(mac(k, toSign)); fields["Signature"] != want {
		return fmt.Errorf("signature mismatch (canonical request:\n%s)", canonReq)
	}
	return nil
}

// isolateAWS gives the AWS SDK a clean environment: no shared files, no
// credentials or region from the environment, no instance metadata, and
// (when endpoint is non-empty) the Route 53 API at endpoint.
func isolateAWS(t *testing.T, endpoint string) {
	t.Helper()
	dir := t.TempDir()
	for _, k := range []string{
		"AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION",
		"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
		"AWS_ENDPOINT_URL", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_MAX_ATTEMPTS",
		"AWS_RETRY_MODE", "AWS_CA_BUNDLE", "AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT",
		"AWS_DEFAULTS_MODE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
	} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_ENDPOINT_URL_ROUTE_53", endpoint)
}

func route53Settings() *config.DNS {
	return &config.DNS{Provider: "route53", Region: r53Region, AccessKeyID: r53AKID,
		SecretAccessKey: r53Secret, HostedZoneID: r53ZoneID}
}

// TestRoute53Requests drives the provider New builds for "route53", with
// hosted_zone_id set (no zone lookup) and the Route 53 API redirected to a
// local server with the SDK's AWS_ENDPOINT_URL_ROUTE_53, and checks every
// request: method, path, SigV4 signature with the configured key, and the
// XML change batch.
func TestRoute53Requests(t *testing.T) {
	fake := newFakeRoute53(t)
	srv := httptest.NewServer(fake)
	defer srv.Close()
	isolateAWS(t, srv.URL)

	prov, err := New(route53Settings(), Options{})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const zone = "example.net."
	const fqdn = "_acme-challenge.example.net."
	rr := func(value string) []libdns.Record {
		// As certmagic's DNSManager passes it (TTL = DNSManager.TTL, 0 by default).
		return []libdns.Record{libdns.RR{Type: "TXT", Name: "_acme-challenge", Data: value}}
	}
	rrsetPath := "/2013-04-01/hostedzone/" + r53ZoneID + "/rrset"
	type want struct {
		method string
		query  url.Values
		action string // for POST
		values []string
	}
	check := func(step string, got []r53Request, wants []want) {
		t.Helper()
		if len(got) != len(wants) {
			t.Fatalf("%s: %d requests, want %d: %+v", step, len(got), len(wants), got)
		}
		for i, w := range wants {
			g := got[i]
			if g.Method != w.method || g.Path != rrsetPath {
				t.Errorf("%s: request %d = %s %s, want %s %s", step, i, g.Method, g.Path, w.method, rrsetPath)
			}
			if g.SigErr != nil {
				t.Errorf("%s: request %d: SigV4: %v (Authorization %q)", step, i, g.SigErr, g.Auth)
			}
			if !strings.Contains(g.Auth, "Credential="+r53AKID+"/") {
				t.Errorf("%s: request %d: Authorization %q does not name the access key id", step, i, g.Auth)
			}
			if strings.Contains(g.Auth, r53Secret) {
				t.Errorf("%s: request %d: Authorization contains the secret", step, i)
			}
			if w.query != nil {
				for k, v := range w.query {
					if !slices.Equal(g.Query[k], v) {
						t.Errorf("%s: request %d: query %s = %v, want %v", step, i, k, g.Query[k], v)
					}
				}
			}
			if w.method != http.MethodPost {
				continue
			}
			if !strings.Contains(g.ContentType, "xml") {
				t.Errorf("%s: request %d: Content-Type %q", step, i, g.ContentType)
			}
			if g.Change == nil || len(g.Change.Changes) != 1 {
				t.Fatalf("%s: request %d: want one change, got %+v", step, i, g.Change)
			}
			c := g.Change.Changes[0]
			if c.Action != w.action || c.Set.Name != fqdn || c.Set.Type != "TXT" ||
				c.Set.TTL == nil || *c.Set.TTL != 0 || !slices.Equal(c.Set.Values, w.values) {
				ttl := "nil"
				if c.Set.TTL != nil {
					ttl = strconv.FormatInt(*c.Set.TTL, 10)
				}
				t.Errorf("%s: request %d: change %s %s %s TTL=%s %q, want %s %s TXT TTL=0 %q",
					step, i, c.Action, c.Set.Name, c.Set.Type, ttl, c.Set.Values, w.action, fqdn, w.values)
			}
		}
	}

	// Present: one record → CREATE, no zone lookup (hosted_zone_id).
	if _, err := prov.AppendRecords(ctx, zone, rr("token-1")); err != nil {
		t.Fatalf("AppendRecords: %v", err)
	}
	check("AppendRecords", fake.take(), []want{{method: "POST", action: "CREATE", values: []string{`"token-1"`}}})

	// SetRecords: UPSERT replaces the set.
	if _, err := prov.(libdns.RecordSetter).SetRecords(ctx, zone, rr("token-2")); err != nil {
		t.Fatalf("SetRecords: %v", err)
	}
	check("SetRecords", fake.take(), []want{{method: "POST", action: "UPSERT", values: []string{`"token-2"`}}})
	if s, ok := fake.set(fqdn, "TXT"); !ok || !slices.Equal(s.Values, []string{`"token-2"`}) {
		t.Errorf("after SetRecords the TXT set is %+v (exists %v)", s, ok)
	}

	// CleanUp: list the zone's sets, then DELETE the whole set with its
	// current values.
	if _, err := prov.DeleteRecords(ctx, zone, rr("token-2")); err != nil {
		t.Fatalf("DeleteRecords: %v", err)
	}
	check("DeleteRecords", fake.take(), []want{
		{method: "GET", query: url.Values{"maxitems": {"1000"}}},
		{method: "POST", action: "DELETE", values: []string{`"token-2"`}},
	})
	if s, ok := fake.set(fqdn, "TXT"); ok {
		t.Errorf("TXT set still there after DeleteRecords: %+v", s)
	}
	if _, ok := fake.set("example.net.", "NS"); !ok {
		t.Error("DeleteRecords removed the zone's NS set")
	}
}

// badAWSEnvironments are environments in which the AWS SDK refuses to load
// its configuration, which makes libdns/route53 call log.Fatalf.
func badAWSEnvironments(t *testing.T) map[string]map[string]string {
	dir := t.TempDir()
	return map[string]map[string]string{
		"missing profile":    {"AWS_PROFILE": "portico-no-such-profile"},
		"bad max attempts":   {"AWS_MAX_ATTEMPTS": "three"},
		"bad retry mode":     {"AWS_RETRY_MODE": "fast"},
		"bad fips flag":      {"AWS_USE_FIPS_ENDPOINT": "maybe"},
		"unreadable ca file": {"AWS_CA_BUNDLE": filepath.Join(dir, "no-such-ca.pem")},
	}
}

// TestRoute53LibraryExitsOnBadEnvironment documents the hazard New guards
// against: called directly, libdns/route53 exits the process (log.Fatalf in
// its lazy client init) when the AWS SDK cannot load its configuration. It
// runs the library in a child process for each bad environment.
func TestRoute53LibraryExitsOnBadEnvironment(t *testing.T) {
	if os.Getenv("DNSPROVIDER_ROUTE53_CHILD") == "1" {
		p := &route53.Provider{Region: r53Region, HostedZoneID: r53ZoneID}
		_, err := p.AppendRecords(context.Background(), "example.net.", []libdns.Record{libdns.RR{Type: "TXT", Name: "x", Data: "y"}})
		fmt.Printf("library returned: %v\n", err)
		os.Exit(0)
	}
	for name, env := range badAWSEnvironments(t) {
		t.Run(name, func(t *testing.T) {
			isolateAWS(t, "http://127.0.0.1:9") // nothing listens: a request fails, it does not exit
			for k, v := range env {
				t.Setenv(k, v)
			}
			cmd := exec.Command(os.Args[0], "-test.run=^TestRoute53LibraryExitsOnBadEnvironment$", "-test.count=1")
			cmd.Env = append(os.Environ(), "DNSPROVIDER_ROUTE53_CHILD=1")
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			if err == nil || !strings.Contains(out.String(), "route53: unable to load AWS SDK config") {
				t.Fatalf("child: err=%v, output:\n%s\nwant an exit from log.Fatalf", err, out.String())
			}
		})
	}
}

// TestRoute53BadEnvironmentIsAnError checks that, in each environment that
// makes the library exit, New returns an error instead, and that a provider
// built in a good environment returns an error (and sends nothing) when the
// environment turns bad before its first use.
func TestRoute53BadEnvironmentIsAnError(t *testing.T) {
	for name, env := range badAWSEnvironments(t) {
		t.Run(name, func(t *testing.T) {
			fake := newFakeRoute53(t)
			srv := httptest.NewServer(fake)
			defer srv.Close()
			isolateAWS(t, srv.URL)

			// Bad at New: an error naming the cause, no secret.
			for k, v := range env {
				t.Setenv(k, v)
			}
			_, err := New(route53Settings(), Options{})
			if err == nil {
				t.Fatal("New succeeded in an environment the AWS SDK cannot load")
			}
			t.Logf("New: %v", err)
			if strings.Contains(err.Error(), r53Secret) {
				t.Errorf("error contains the secret access key: %v", err)
			}

			// Good at New, bad at first use.
			for k := range env {
				t.Setenv(k, "")
			}
			prov, err := New(route53Settings(), Options{})
			if err != nil {
				t.Fatalf("New in a clean environment: %v", err)
			}
			for k, v := range env {
				t.Setenv(k, v)
			}
			rr := []libdns.Record{libdns.RR{Type: "TXT", Name: "_acme-challenge", Data: "token"}}
			if _, err := prov.AppendRecords(context.Background(), "example.net.", rr); err == nil {
				t.Fatal("AppendRecords succeeded in an environment the AWS SDK cannot load")
			} else if !strings.Contains(err.Error(), "AWS SDK cannot load") {
				t.Errorf("AppendRecords error = %v", err)
			}
			if reqs := fake.take(); len(reqs) != 0 {
				t.Errorf("%d requests sent despite the error", len(reqs))
			}

			// Fixed again: the provider works.
			for k := range env {
				t.Setenv(k, "")
			}
			if _, err := prov.AppendRecords(context.Background(), "example.net.", rr); err != nil {
				t.Fatalf("AppendRecords after fixing the environment: %v", err)
			}
			if reqs := fake.take(); len(reqs) != 1 || reqs[0].SigErr != nil {
				t.Errorf("requests after fixing the environment: %+v", reqs)
			}
		})
	}
}

// TestRoute53NeedsRegion checks New refuses a Route 53 provider with no
// region anywhere: the SDK would only fail at the first request.
func TestRoute53NeedsRegion(t *testing.T) {
	isolateAWS(t, "")
	d := route53Settings()
	d.Region = ""
	if _, err := New(d, Options{}); err == nil || !strings.Contains(err.Error(), "region") {
		t.Fatalf("New without a region: %v, want an error about the region", err)
	}
	t.Setenv("AWS_REGION", "eu-west-1")
	if _, err := New(d, Options{}); err != nil {
		t.Fatalf("New with AWS_REGION: %v", err)
	}
}

// TestRoute53ConcurrentFirstUse runs the first calls concurrently: the
// library's lazy init is not synchronised, the wrapper serialises it (the
// race detector fails this test without the wrapper).
func TestRoute53ConcurrentFirstUse(t *testing.T) {
	fake := newFakeRoute53(t)
	srv := httptest.NewServer(fake)
	defer srv.Close()
	isolateAWS(t, srv.URL)
	prov, err := New(route53Settings(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rr := []libdns.Record{libdns.RR{Type: "TXT", Name: fmt.Sprintf("_acme-challenge.h%d", i), Data: "token"}}
			if _, err := prov.AppendRecords(context.Background(), "example.net.", rr); err != nil {
				t.Errorf("AppendRecords %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if reqs := fake.take(); len(reqs) != 4 {
		t.Errorf("%d requests, want 4", len(reqs))
	}
}
