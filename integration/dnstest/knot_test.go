package dnstest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/libdns/libdns"
	"github.com/libdns/rfc2136"
)

// TestKnotRFC2136Update starts knotd and publishes, then removes, an
// _acme-challenge TXT record through the rfc2136 libdns provider (the one
// Portico's "rfc2136" DNS provider wraps), called as certmagic calls it: a
// libdns.RR relative to the zone, the zone with its trailing dot.
func TestKnotRFC2136Update(t *testing.T) {
	k := StartKnot(t, "example.test", map[string]string{
		"example.test": "127.0.0.1",
		"www":          "127.0.0.2",
		"*":            "127.0.0.3",
	})

	if got := k.A("example.test"); !slices.Equal(got, []string{"127.0.0.1"}) {
		t.Errorf("A example.test = %v", got)
	}
	if got := k.A("www.example.test."); !slices.Equal(got, []string{"127.0.0.2"}) {
		t.Errorf("A www.example.test = %v", got)
	}
	if got := k.A("other"); !slices.Equal(got, []string{"127.0.0.3"}) {
		t.Errorf("A other.example.test (wildcard) = %v", got)
	}
	const name = "_acme-challenge.example.test"
	if got := k.TXT(name); len(got) != 0 {
		t.Fatalf("TXT %s before update = %v", name, got)
	}

	p := &rfc2136.Provider{Server: k.Addr(), KeyName: k.KeyName(), KeyAlg: k.KeyAlg(), Key: k.Key()}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	recs := []libdns.Record{
		libdns.RR{Type: "TXT", Name: "_acme-challenge", Data: "token-one", TTL: time.Second},
		libdns.RR{Type: "TXT", Name: "_acme-challenge", Data: "token-two", TTL: time.Second},
	}
	if _, err := p.AppendRecords(ctx, k.Zone(), recs); err != nil {
		t.Fatalf("AppendRecords: %v", err)
	}
	if got := k.TXT(name); !slices.Equal(got, []string{"token-one", "token-two"}) {
		t.Fatalf("TXT %s after AppendRecords = %v, want both tokens", name, got)
	}

	// Deleting one value leaves the other (certmagic deletes the apex and
	// the wildcard challenge of one order separately).
	if _, err := p.DeleteRecords(ctx, k.Zone(), recs[:1]); err != nil {
		t.Fatalf("DeleteRecords: %v", err)
	}
	if got := k.TXT(name); !slices.Equal(got, []string{"token-two"}) {
		t.Fatalf("TXT %s after deleting token-one = %v", name, got)
	}
	if _, err := p.DeleteRecords(ctx, k.Zone(), recs[1:]); err != nil {
		t.Fatalf("DeleteRecords: %v", err)
	}
	if got := k.TXT(name); len(got) != 0 {
		t.Fatalf("TXT %s after DeleteRecords = %v, want none", name, got)
	}

	// A wrong key is refused by the ACL.
	bad := *p
	bad.Key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	if _, err := bad.AppendRecords(ctx, k.Zone(), recs[:1]); err == nil {
		t.Fatal("AppendRecords with a wrong TSIG key succeeded")
	} else {
		t.Logf("wrong key refused as expected: %v", err)
	}
	if got := k.TXT(name); len(got) != 0 {
		t.Fatalf("TXT %s after refused update = %v", name, got)
	}
}
