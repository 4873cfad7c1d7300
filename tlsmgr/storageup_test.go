package tlsmgr

import (
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/portico-proxy/portico/integration/testkit"
	redisstorage "github.com/portico-proxy/portico/tlsmgr/storage/redis"
	"github.com/portico-proxy/portico/tlsmgr/storage/redis/redisserver"
)

// TestStorageUpMetric: portico_storage_up follows a real Redis going away
// and coming back, and is 1 for the file backend, which cannot be away.
func TestStorageUpMetric(t *testing.T) {
	srv := redisserver.Start(t)
	st, err := redisstorage.New(redisstorage.Options{URL: srv.URL(), PingInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	up := storageUp(t, &Manager{storage: st})
	if got := up(); got != 1 {
		t.Fatalf("portico_storage_up = %v with Redis running, want 1", got)
	}
	srv.Stop()
	testkit.Eventually(t, 10*time.Second, "portico_storage_up 0", func() bool { return up() == 0 })
	srv.Restart()
	testkit.Eventually(t, 10*time.Second, "portico_storage_up 1", func() bool { return up() == 1 })

	if got := storageUp(t, &Manager{storage: &certmagic.FileStorage{Path: t.TempDir()}})(); got != 1 {
		t.Errorf("portico_storage_up = %v for the file backend, want 1", got)
	}
}

// storageUp registers m's gauge in a registry of its own and returns a
// function that scrapes it.
func storageUp(t *testing.T, m *Manager) func() float64 {
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.storageUpGauge())
	return func() float64 {
		mfs, err := reg.Gather()
		if err != nil || len(mfs) != 1 || mfs[0].GetName() != "portico_storage_up" {
			t.Fatalf("gather: %v, %v", mfs, err)
		}
		return mfs[0].GetMetric()[0].GetGauge().GetValue()
	}
}
