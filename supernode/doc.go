// Package supernode owns the parent side of the data path: each child's
// series-dictionary session, validation of what children send, routing of
// the root's end-to-end acknowledgements back down the subtree, and the
// forwarding queue that merges children's batches into the node's own
// upward heartbeat, and aggregation: the per-child caches of rule-selected
// series, the mergeable partials and the network-imprecision counts a node
// reports for its descendants (Aggregator). Who is a child is the tree protocol's decision: Parent
// hands membership requests to a Membership (tree.Safe in the binaries).
// The root runs the same Parent with its storage as the Sink. It must not
// import the TSDB or the REST gateway: it is linked into the node binary.
package supernode
