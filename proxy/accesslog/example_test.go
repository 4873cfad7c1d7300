package accesslog_test

import (
	"net/netip"
	"os"
	"time"

	"github.com/portico-proxy/portico/proxy/accesslog"
)

func ExampleLog_Write() {
	// In Portico: accesslog.Open(cfg.Log.Access, cfg.Log.AccessFormat, dropped).
	l := accesslog.New(os.Stdout, accesslog.JSON, accesslog.NewDroppedCounter())
	defer l.Close()
	r := accesslog.Record{
		Time:       time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC),
		RemoteIP:   netip.MustParseAddr("192.0.2.1"),
		Host:       []byte("example.com"),
		Method:     []byte("GET"),
		URI:        []byte("/"),
		Proto:      "HTTP/1.1",
		Status:     200,
		Bytes:      5,
		Duration:   1500 * time.Microsecond,
		Site:       "example.com",
		TLSVersion: 0x0304,
	}
	l.Write(&r)
	// Output:
	// {"ts":"2026-12-01T00:00:00.000Z","remote_ip":"192.0.2.1","host":"example.com","method":"GET","uri":"/","proto":"HTTP/1.1","status":200,"bytes":5,"duration":0.001500,"upstream":"","upstream_duration":0.000000,"site":"example.com","route":"","request_id":"","user_agent":"","referer":"","tls_version":"TLSv1.3"}
}
