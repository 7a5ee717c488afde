// Package bench owns canopy's measurements: replaying recorded real
// exporter output through the node's filtering and wire encoding beside
// what Prometheus remote write 1.0 would send for the same data.
package bench
