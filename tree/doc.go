// Package tree owns membership and election: discovering candidates,
// probing RTT and load, joining, the failure detector on both sides of a
// parent link, promotion and demotion of supernodes, shedding, graceful
// leave and re-parenting. The core (Node) is a pure state machine driven by
// Tick and by the requests and responses handed to it, with time passed in:
// the same code runs in deterministic simulation (MemNetwork) and, behind
// the thin Safe wrapper and a gRPC transport, in the real binaries. It must
// not import gRPC, storage or the data path.
package tree
