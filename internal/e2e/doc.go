// Package e2e holds the end-to-end tests: a root, supernodes and leaves
// wired over real gRPC on loopback, scraping real HTTP targets, with the
// supernode as a separate canopy-node process that can be killed. Its
// helpers (a node_exporter-like target) exist for those tests only.
package e2e
