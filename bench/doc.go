// Package bench owns canopy's measurements: the Astral paper's analytic
// sink-load projection (Model, Tables, PaperCharts), replaying recorded
// real exporter output through the node's filtering and wire encoding
// beside what Prometheus remote write 1.0 would send for the same data,
// and remote-write throughput into real sinks.
package bench
