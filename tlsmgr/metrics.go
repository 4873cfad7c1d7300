package tlsmgr

import (
	"github.com/prometheus/client_golang/prometheus"
)

// RegisterMetrics adds the certificate order counter to reg:
// portico_certificate_orders_total{key_type, kind="obtain"|"renew",
// outcome="success"|"failure"}, and portico_storage_up. Expiry, failures
// and pending retries are read from Status at scrape time by the admin
// API's collector.
func (m *Manager) RegisterMetrics(reg prometheus.Registerer) error {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "portico_certificate_orders_total",
		Help: "Certificate orders (obtain or renew) by key type and outcome, since start.",
	}, []string{"key_type", "kind", "outcome"})
	if err := reg.Register(c); err != nil {
		return err
	}
	m.orders.Store(c)
	return reg.Register(m.storageUpGauge())
}

// storageUpGauge is portico_storage_up: 1 while shared storage answers, 0
// during an outage, read at scrape time. Serving does not depend on it
// (certificates are served from memory), so it is an alert for ordering
// and renewal, not for health. Backends that cannot tell (files) are up.
func (m *Manager) storageUpGauge() prometheus.GaugeFunc {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "portico_storage_up",
		Help: "1 if certificate storage is reachable, 0 during an outage.",
	}, func() float64 {
		if u, ok := m.storage.(upReporter); ok && !u.Up() {
			return 0
		}
		return 1
	})
}

// countOrder records one order's outcome, when metrics are registered.
func (m *Manager) countOrder(keyType string, renewal, ok bool) {
	c := m.orders.Load()
	if c == nil {
		return
	}
	kind, outcome := "obtain", "success"
	if renewal {
		kind = "renew"
	}
	if !ok {
		outcome = "failure"
	}
	c.WithLabelValues(keyType, kind, outcome).Inc()
}
