package accesslog

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// fullRecord has every field set, with a time that is not in UTC.
func fullRecord() *Record {
	return &Record{
		Time:             time.Date(2026, 12, 1, 1, 2, 3, 456789000, time.FixedZone("", 3600)),
		RemoteIP:         netip.MustParseAddr("::ffff:203.0.113.7"),
		Host:             []byte("example.com"),
		Method:           []byte("GET"),
		URI:              []byte("/api/x?q=1"),
		Proto:            "HTTP/1.1",
		Status:           200,
		Bytes:            1234,
		Duration:         1500*time.Millisecond + 42*time.Microsecond,
		Upstream:         "10.0.0.1:8080",
		UpstreamDuration: 1234567 * time.Nanosecond,
		Site:             "example.com",
		Route:            "/api/*",
		RequestID:        []byte("7f3a9c"),
		UserAgent:        []byte("curl/8.5.0"),
		Referer:          []byte("https://example.com/"),
		TLSVersion:       0x0304,
	}
}

func TestJSONGolden(t *testing.T) {
	got := string(fullRecord().appendTo(nil, JSON))
	want := `{"ts":"2026-12-01T00:02:03.456Z","remote_ip":"203.0.113.7","host":"example.com","method":"GET",` +
		`"uri":"/api/x?q=1","proto":"HTTP/1.1","status":200,"bytes":1234,"duration":1.500042,` +
		`"upstream":"10.0.0.1:8080","upstream_duration":0.001234,"site":"example.com","route":"/api/*",` +
		`"request_id":"7f3a9c","user_agent":"curl/8.5.0","referer":"https://example.com/","tls_version":"TLSv1.3"}` + "\n"
	if got != want {
		t.Errorf("JSON line\n got %s\nwant %s", got, want)
	}
}

// TestJSONFields reads a line back with encoding/json: every field, in the
// documented order, with its JSON type.
func TestJSONFields(t *testing.T) {
	line := fullRecord().appendTo(nil, JSON)
	dec := json.NewDecoder(bytes.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("first token %v, %v", tok, err)
	}
	order := []string{"ts", "remote_ip", "host", "method", "uri", "proto", "status", "bytes", "duration",
		"upstream", "upstream_duration", "site", "route", "request_id", "user_agent", "referer", "tls_version"}
	want := map[string]any{
		"ts": "2026-12-01T00:02:03.456Z", "remote_ip": "203.0.113.7", "host": "example.com", "method": "GET",
		"uri": "/api/x?q=1", "proto": "HTTP/1.1", "status": 200.0, "bytes": 1234.0, "duration": 1.500042,
		"upstream": "10.0.0.1:8080", "upstream_duration": 0.001234, "site": "example.com", "route": "/api/*",
		"request_id": "7f3a9c", "user_agent": "curl/8.5.0", "referer": "https://example.com/", "tls_version": "TLSv1.3",
	}
	for i := 0; dec.More(); i++ {
		k, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		if i >= len(order) || k != order[i] {
			t.Fatalf("field %d is %q, want %q", i, k, order[min(i, len(order)-1)])
		}
		if v != want[order[i]] {
			t.Errorf("%s = %#v, want %#v", k, v, want[order[i]])
		}
	}
	if _, err := time.Parse(time.RFC3339, want["ts"].(string)); err != nil {
		t.Error(err)
	}
}

func TestZeroRecord(t *testing.T) {
	got := string((&Record{Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}).appendTo(nil, JSON))
	want := `{"ts":"2026-01-02T03:04:05.000Z","remote_ip":"","host":"","method":"","uri":"","proto":"",` +
		`"status":0,"bytes":0,"duration":0.000000,"upstream":"","upstream_duration":0.000000,"site":"",` +
		`"route":"","request_id":"","user_agent":"","referer":"","tls_version":""}` + "\n"
	if got != want {
		t.Errorf("JSON of a zero record\n got %s\nwant %s", got, want)
	}
	if !json.Valid([]byte(got)) {
		t.Error("not valid JSON")
	}
	got = string((&Record{Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}).appendTo(nil, Combined))
	if want := `- - - [02/Jan/2026:03:04:05 +0000] "  " 0 - "-" "-"` + "\n"; got != want {
		t.Errorf("combined line of a zero record\n got %s\nwant %s", got, want)
	}
}

func TestJSONEscaping(t *testing.T) {
	for _, in := range []string{
		`plain`,
		`quote " and backslash \`,
		"controls \x00\x01\x1f\x7f \n\r\t",
		"invalid \xff\xfe utf-8 \xc3",
		"truncated \xe2\x82",
		"valid é € 𝄞 \ufffd",
		"separators \u2028 \u2029",
		`</script><!--`,
	} {
		line := (&Record{UserAgent: []byte(in), Site: in}).appendTo(nil, JSON)
		if !json.Valid(line) || bytes.Count(line, []byte{'\n'}) != 1 {
			t.Errorf("%q: not one line of valid JSON: %s", in, line)
			continue
		}
		var got struct {
			UserAgent string `json:"user_agent"`
			Site      string `json:"site"`
		}
		if err := json.Unmarshal(line, &got); err != nil {
			t.Fatal(err)
		}
		// encoding/json writes each invalid byte as U+FFFD, as we do.
		want, _ := json.Marshal(in)
		var wantS string
		if err := json.Unmarshal(want, &wantS); err != nil {
			t.Fatal(err)
		}
		if got.UserAgent != wantS || got.Site != wantS {
			t.Errorf("%q read back as %q and %q, want %q", in, got.UserAgent, got.Site, wantS)
		}
	}
	if got := string(appendJSONString(nil, "a\u2028\x01\"")); got != `"a\u2028\u0001\""` {
		t.Errorf("escaped as %s", got)
	}
}

func FuzzJSONString(f *testing.F) {
	f.Add([]byte("a\"\\\x00\xff\u2028é"))
	f.Fuzz(func(t *testing.T, in []byte) {
		line := (&Record{URI: in}).appendTo(nil, JSON)
		var got struct{ URI string }
		if err := json.Unmarshal(line, &got); err != nil {
			t.Fatalf("%q: %v in %s", in, err, line)
		}
		want, _ := json.Marshal(string(in))
		var wantS string
		_ = json.Unmarshal(want, &wantS)
		if got.URI != wantS || bytes.Count(line, []byte{'\n'}) != 1 {
			t.Fatalf("%q read back as %q, want %q", in, got.URI, wantS)
		}
		c := (&Record{URI: in, UserAgent: in}).appendTo(nil, Combined)
		if bytes.Count(c, []byte{'\n'}) != 1 || bytes.Count(c, []byte{'"'}) != 6 {
			t.Fatalf("%q: combined line %q", in, c)
		}
	})
}

func TestCombinedGolden(t *testing.T) {
	got := string(fullRecord().appendTo(nil, Combined))
	want := `203.0.113.7 - - [01/Dec/2026:01:02:03 +0100] "GET /api/x?q=1 HTTP/1.1" 200 1234 "https://example.com/" "curl/8.5.0"` + "\n"
	if got != want {
		t.Errorf("combined line\n got %s\nwant %s", got, want)
	}
	r := fullRecord()
	r.RemoteIP = netip.MustParseAddr("2001:db8::1")
	r.Bytes, r.Referer, r.UserAgent = 0, nil, nil
	r.URI = []byte("/a\"b\\c\x01\x7f\xc3\xa9 d")
	r.Status = 304
	got = string(r.appendTo(nil, Combined))
	want = `2001:db8::1 - - [01/Dec/2026:01:02:03 +0100] "GET /a\x22b\x5Cc\x01\x7F\xC3\xA9 d HTTP/1.1" 304 - "-" "-"` + "\n"
	if got != want {
		t.Errorf("combined line\n got %s\nwant %s", got, want)
	}
	r.UserAgent = []byte("evil\" \"forged\n1.2.3.4 - - [")
	if got := string(r.appendTo(nil, Combined)); strings.Count(got, `"`) != 6 || strings.Count(got, "\n") != 1 {
		t.Errorf("a user agent forged fields: %s", got)
	}
}

func TestCommonLogTime(t *testing.T) {
	for _, tm := range []time.Time{
		time.Date(2026, 12, 1, 1, 2, 3, 0, time.FixedZone("", 3600)),
		time.Date(2026, 1, 9, 23, 59, 59, 999999999, time.FixedZone("", -(9*3600+30*60))),
		time.Date(1999, 7, 4, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 5, 5, 5, 5, 5, 0, time.FixedZone("", 5*3600+45*60)),
		time.Date(2026, 5, 5, 5, 5, 5, 0, time.FixedZone("", 14*3600)),
		time.Date(2026, 5, 5, 5, 5, 5, 0, time.FixedZone("LMT", 37)), // seconds: the slow way
		time.Date(12345, 5, 5, 5, 5, 5, 0, time.UTC),
	} {
		want := tm.Format("02/Jan/2006:15:04:05 -0700")
		if got := string(appendCommonLogTime(nil, tm)); got != want {
			t.Errorf("%v: %s, want %s", tm, got, want)
		}
		want = tm.UTC().Format("2006-01-02T15:04:05.000Z07:00")
		if got := string(appendISO8601Millis(nil, tm.UTC())); got != want {
			t.Errorf("%v: %s, want %s", tm, got, want)
		}
	}
}

func TestTLSVersion(t *testing.T) {
	for v, want := range map[uint16]string{0: "", 0x0300: "SSLv3", 0x0301: "TLSv1", 0x0302: "TLSv1.1",
		0x0303: "TLSv1.2", 0x0304: "TLSv1.3", 0x7f1c: "0x7F1C"} {
		if got := string(appendTLSVersion(nil, v)); got != want {
			t.Errorf("TLS version %#x = %q, want %q", v, got, want)
		}
	}
}

func TestSeconds(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "0.000000", -time.Second: "0.000000",
		time.Nanosecond * 999: "0.000000", time.Microsecond: "0.000001", 61*time.Second + 5*time.Millisecond: "61.005000"} {
		if got := string(appendSeconds(nil, d)); got != want {
			t.Errorf("%v = %s, want %s", d, got, want)
		}
	}
}
