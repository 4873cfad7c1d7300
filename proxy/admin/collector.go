package admin

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portico-proxy/portico/tlsmgr"
)

// scrapeTimeout bounds how long one scrape waits for the certificate status.
const scrapeTimeout = 10 * time.Second

var (
	expiryDesc = prometheus.NewDesc("portico_certificate_expiry_timestamp_seconds",
		"When the certificate in use expires, as a Unix time; absent until a certificate is obtained.",
		[]string{"name", "key_type"}, nil)
	failuresDesc = prometheus.NewDesc("portico_certificate_failures",
		"Consecutive failed attempts to obtain or renew the certificate, from the failure ledger (0 after a success).",
		[]string{"name", "key_type"}, nil)
	pendingDesc = prometheus.NewDesc("portico_retries_pending",
		"Certificates (name and key type) with failures, waiting for their next retry.",
		nil, nil)
)

// NewCertCollector exports the certificates' state, read from c.Status at
// each scrape: portico_certificate_expiry_timestamp_seconds{name,key_type},
// portico_certificate_failures{name,key_type} and portico_retries_pending.
func NewCertCollector(c Certs) prometheus.Collector {
	return certCollector{c}
}

type certCollector struct{ certs Certs }

// Describe sends the three metrics' descriptions.
func (certCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- expiryDesc
	ch <- failuresDesc
	ch <- pendingDesc
}

// Expiries is implemented by a Certs that can list its certificates without
// their renewal times (tlsmgr.Manager: working those out may read storage
// for every certificate, seconds with 100,000 names); the collector uses
// it when it can, as it exports no renewal time.
type Expiries interface {
	Expiries(ctx context.Context) []tlsmgr.CertStatus
}

// Collect reads the status and sends one sample per certificate.
func (cc certCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	list := cc.certs.Status
	if e, ok := cc.certs.(Expiries); ok {
		list = e.Expiries
	}
	pending := 0
	for _, st := range list(ctx) {
		if st.NotAfter != nil {
			ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue,
				float64(st.NotAfter.Unix()), st.Name, st.KeyType)
		}
		ch <- prometheus.MustNewConstMetric(failuresDesc, prometheus.GaugeValue, float64(st.Failures), st.Name, st.KeyType)
		if st.Failures > 0 {
			pending++
		}
	}
	ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(pending))
}
