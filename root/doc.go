// Package root owns the top of the tree: ingest of children's heartbeats
// with end-to-end deduplication (the ledger of persisted batches per origin
// and epoch), persistence to the embedded Prometheus TSDB, acknowledgement
// back down the tree, finalising aggregates and network imprecision into
// series once per window, the configuration pushed down the tree, and the
// assembly of the root process (TreeService,
// ReaderService, REST gateway, /metrics).
package root
