// Package reader owns how stored data leaves the root: the gRPC
// ReaderService (typed queries, latest values, topology), the same data
// rendered as OpenMetrics text or JSON for the REST gateway under
// /api/metrics-api/ (the c12s paper's Table I), timestamp parsing, and the
// gateway's assembly. It reads through the Prometheus storage interfaces and
// never writes.
package reader
