package leaf

import (
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type agentMetrics struct {
	targets           prometheus.Gauge
	scrapes           prometheus.Counter
	scrapeFailures    *prometheus.CounterVec
	heartbeats        prometheus.Counter
	heartbeatFailures prometheus.Counter
	rejectedBatches   prometheus.Counter
	bufferBatches     prometheus.Gauge
	bufferSamples     prometheus.Gauge
	bufferBytes       prometheus.Gauge
	droppedSamples    prometheus.Gauge
	filterIn          prometheus.Gauge
	filterOut         prometheus.Gauge
	staleMarkers      prometheus.Gauge
}

func newAgentMetrics(reg prometheus.Registerer) *agentMetrics {
	m := &agentMetrics{
		targets:           prometheus.NewGauge(prometheus.GaugeOpts{Name: "canopy_leaf_targets", Help: "Scrape targets configured on this node."}),
		scrapes:           prometheus.NewCounter(prometheus.CounterOpts{Name: "canopy_leaf_scrapes_total", Help: "Target scrapes attempted."}),
		scrapeFailures:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "canopy_leaf_scrape_failures_total", Help: "Target scrapes that failed, by reason."}, []string{"reason"}),
		heartbeats:        prometheus.NewCounter(prometheus.CounterOpts{Name: "canopy_leaf_heartbeats_total", Help: "Heartbeat messages sent to the parent."}),
		heartbeatFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "canopy_leaf_heartbeat_failures_total", Help: "Windows whose heartbeat did not reach the parent."}),
		rejectedBatches:   prometheus.NewCounter(prometheus.CounterOpts{Name: "canopy_leaf_rejected_batches_total", Help: "Batches the parent refused as invalid and were dropped."}),
		bufferBatches:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "canopy_leaf_buffer_batches", Help: "Batches retained until the root acknowledges them."}),
		bufferSamples:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "canopy_leaf_buffer_samples", Help: "Samples retained until the root acknowledges them."}),
		bufferBytes:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "canopy_leaf_buffer_bytes", Help: "Estimated bytes retained until the root acknowledges them."}),
		droppedSamples:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "canopy_leaf_dropped_samples", Help: "Samples dropped on buffer overflow since start."}),
		filterIn:          prometheus.NewGauge(prometheus.GaugeOpts{Name: "canopy_leaf_filter_input_samples", Help: "Samples collected and offered to the filter since start."}),
		filterOut:         prometheus.NewGauge(prometheus.GaugeOpts{Name: "canopy_leaf_filter_output_samples", Help: "Samples the filter let through since start."}),
		staleMarkers:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "canopy_leaf_stale_markers", Help: "Staleness markers sent for series that disappeared, since start."}),
	}
	if reg != nil {
		reg.MustRegister(m.targets, m.scrapes, m.scrapeFailures, m.heartbeats, m.heartbeatFailures,
			m.rejectedBatches, m.bufferBatches, m.bufferSamples, m.bufferBytes, m.droppedSamples,
			m.filterIn, m.filterOut, m.staleMarkers)
	}
	return m
}

func newHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  false,
	}}
}
