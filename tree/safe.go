package tree

import (
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// Safe is the thin wrapper the real binaries use: it serialises access to
// a Node and supplies the wall clock. Servers call Handle from any
// goroutine; one driver goroutine calls Tick and Deliver and sends what
// they return.
type Safe struct {
	mu  sync.Mutex
	n   *Node
	now func() time.Time
}

// NewSafe wraps n; now is the clock (time.Now outside tests).
func NewSafe(n *Node, now func() time.Time) *Safe {
	return &Safe{n: n, now: now}
}

// Tick advances the node and returns what to send and what changed.
func (s *Safe) Tick() ([]Envelope, []Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n.Tick(s.now())
	return s.n.Outbox(), s.n.Events()
}

// Deliver hands over the outcome of a request and returns what follows.
func (s *Safe) Deliver(env Envelope, resp proto.Message, err error) ([]Envelope, []Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n.Deliver(s.now(), env, resp, err)
	return s.n.Outbox(), s.n.Events()
}

// Handle answers a request from a child or a joining node.
func (s *Safe) Handle(msg proto.Message) (proto.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Handle(s.n, s.now(), msg)
}

// Info describes the node now.
func (s *Safe) Info() *canopyv1.NodeInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n.now = s.now()
	return s.n.Info()
}

// Topology lists every node below this one with its parent.
func (s *Safe) Topology() []*canopyv1.ChildStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n.Topology()
}

// ChildStates is the failure detector's verdict on every direct child
// not yet forgotten.
func (s *Safe) ChildStates() map[string]canopyv1.ChildState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n.ChildStates()
}

// Moved reports whether the node's subtree counts in dup.
func (s *Safe) Moved() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n.now = s.now()
	return s.n.Moved()
}

// Parent is the current parent, or nil.
func (s *Safe) Parent() *canopyv1.NodeInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n.Parent()
}

// Leave starts a graceful departure (children are sent elsewhere);
// Depart, a window later, tells the parent.
func (s *Safe) Leave() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n.Leave()
}

// Depart returns the message telling the parent we are gone.
func (s *Safe) Depart() []Envelope {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n.Depart()
	return s.n.Outbox()
}
