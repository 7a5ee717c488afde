// Package remote owns the root's persistence to Prometheus remote-write
// sinks (Prometheus, VictoriaMetrics, Mimir, Thanos Receive): the remote
// write 1.0 encoding (prompb.WriteRequest, snappy block format, sorted
// labels without empty values, external labels, write relabelling), the
// HTTP client with the protocol's headers and authentication, and sending
// with retries — 5xx and 429 retried with capped exponential backoff and
// jitter honouring Retry-After, other 4xx dropped and counted by reason.
//
// It is written to Prometheus's storage/remote behaviour rather than
// linking it: that package tails the TSDB's WAL from its end at startup
// (a restart loses what was not yet sent) and pulls cloud SDKs into the
// binary.
package remote
