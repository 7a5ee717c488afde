// Package leaf owns collection on a node: scraping OpenMetrics and
// Prometheus-text targets (static and registered at run time through the
// node's local API), the built-in /proc machine collector, labelling, and
// the agent that seals one batch per window and sends it, with whatever
// the node forwards for its subtree, as the heartbeat to the parent the
// tree protocol chose. It must stay small: it must not import the TSDB,
// the REST gateway or anything else only the root needs.
package leaf
