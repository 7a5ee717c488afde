package supernode

import "github.com/prometheus/client_golang/prometheus"

type parentMetrics struct {
	heartbeats prometheus.Counter
	wireBytes  prometheus.Counter
	batches    prometheus.Counter
	rejected   *prometheus.CounterVec
	children   prometheus.Gauge
}

func newParentMetrics(reg prometheus.Registerer) *parentMetrics {
	m := &parentMetrics{
		heartbeats: prometheus.NewCounter(prometheus.CounterOpts{Name: "canopy_parent_heartbeats_total", Help: "Child heartbeats accepted."}),
		wireBytes:  prometheus.NewCounter(prometheus.CounterOpts{Name: "canopy_parent_heartbeat_received_bytes_total", Help: "Bytes of child heartbeats as they arrived on the wire (compressed)."}),
		batches:    prometheus.NewCounter(prometheus.CounterOpts{Name: "canopy_parent_batches_total", Help: "Batches received from children (including retransmits)."}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "canopy_parent_rejected_heartbeats_total",
			Help: "Child heartbeats refused, by reason: invalid, too_large, session (dictionary lost, child resends), unknown_child (must join first), unavailable.",
		}, []string{"reason"}),
		children: prometheus.NewGauge(prometheus.GaugeOpts{Name: "canopy_parent_children", Help: "Children currently registered."}),
	}
	for _, r := range []string{"invalid", "too_large", "session", "unknown_child", "unavailable"} {
		m.rejected.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.heartbeats, m.wireBytes, m.batches, m.rejected, m.children)
	}
	return m
}
