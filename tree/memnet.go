package tree

import (
	"container/heap"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// MemNetwork runs nodes in virtual time over an in-memory network with
// per-link round-trip times, dead nodes and cut links. Everything is
// deterministic: events at the same instant run in the order they were
// scheduled, and nodes tick in address order.
type MemNetwork struct {
	now   time.Time
	nodes map[string]*Node // by address
	order []string         // addresses, sorted
	dead  map[string]bool
	cut   map[[2]string]bool
	// RTT between two addresses; Latency overrides per link.
	RTT     func(a, b string) time.Duration
	Latency map[[2]string]time.Duration
	// Timeout is how long a request into a cut link takes to fail.
	Timeout time.Duration
	// Delivered counts requests and responses carried.
	Delivered int
	// Data, when set, carries the data side of heartbeats.
	Data DataPlane

	queue eventQueue
	seq   int
}

// DataPlane carries the data side of heartbeats in a simulation:
// Annotate completes a heartbeat before it leaves its sender, Observe
// hands a parent a heartbeat it accepted.
type DataPlane interface {
	Annotate(from *Node, req *canopyv1.HeartbeatRequest)
	Observe(at *Node, req *canopyv1.HeartbeatRequest)
}

// Errors a request can meet on the network.
var (
	ErrUnreachable = errors.New("connection refused")
	ErrTimeout     = errors.New("deadline exceeded")
)

// NewMemNetwork starts virtual time at start with a uniform 1 ms RTT.
func NewMemNetwork(start time.Time) *MemNetwork {
	return &MemNetwork{
		now: start, nodes: map[string]*Node{}, dead: map[string]bool{}, cut: map[[2]string]bool{},
		RTT:     func(string, string) time.Duration { return time.Millisecond },
		Latency: map[[2]string]time.Duration{},
		Timeout: 2 * time.Second,
	}
}

// Now is the virtual time.
func (m *MemNetwork) Now() time.Time { return m.now }

// Add places a node on the network at its configured address (its id if
// it has none).
func (m *MemNetwork) Add(n *Node) {
	addr := m.addr(n)
	if _, ok := m.nodes[addr]; !ok {
		i, _ := slices.BinarySearch(m.order, addr)
		m.order = slices.Insert(m.order, i, addr)
	}
	m.nodes[addr] = n
	delete(m.dead, addr)
}

func (m *MemNetwork) addr(n *Node) string {
	if n.cfg.Address != "" {
		return n.cfg.Address
	}
	return n.cfg.ID
}

// Node returns the node at addr.
func (m *MemNetwork) Node(addr string) *Node { return m.nodes[addr] }

// Nodes lists the live nodes in address order.
func (m *MemNetwork) Nodes() []*Node {
	out := make([]*Node, 0, len(m.order))
	for _, a := range m.order {
		if !m.dead[a] {
			out = append(out, m.nodes[a])
		}
	}
	return out
}

// Kill stops a node: it neither ticks nor answers (kill -9).
func (m *MemNetwork) Kill(addr string) { m.dead[addr] = true }

// Cut breaks the link between a and b in both directions; Heal restores
// every link.
func (m *MemNetwork) Cut(a, b string) { m.cut[key(a, b)] = true }

// Heal restores all links.
func (m *MemNetwork) Heal() { clear(m.cut) }

func key(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

func (m *MemNetwork) rtt(a, b string) time.Duration {
	if d, ok := m.Latency[key(a, b)]; ok {
		return d
	}
	return m.RTT(a, b)
}

// Run advances virtual time by d in steps of tick.
func (m *MemNetwork) Run(d, tick time.Duration) {
	end := m.now.Add(d)
	for m.now.Before(end) {
		m.Step(tick)
	}
}

// RunUntil advances in steps of tick until cond holds or limit passes; it
// reports whether cond held.
func (m *MemNetwork) RunUntil(limit, tick time.Duration, cond func() bool) bool {
	end := m.now.Add(limit)
	for !cond() {
		if !m.now.Before(end) {
			return false
		}
		m.Step(tick)
	}
	return true
}

// Step advances time by tick: due deliveries first, then every live node
// ticks and its requests go out.
func (m *MemNetwork) Step(tick time.Duration) {
	end := m.now.Add(tick)
	for m.queue.Len() > 0 && !m.queue[0].at.After(end) {
		ev := heap.Pop(&m.queue).(*event)
		m.now = ev.at // deliveries happen at their own instant, not the tick's
		ev.run()
	}
	m.now = end
	for _, addr := range m.order {
		if m.dead[addr] {
			continue
		}
		n := m.nodes[addr]
		n.Tick(m.now)
		m.dispatch(addr, n)
	}
}

func (m *MemNetwork) dispatch(from string, n *Node) {
	for _, env := range n.Outbox() {
		if env.To == "" {
			continue // a window sealed without a parent: nothing travels
		}
		if hb, ok := env.Msg.(*canopyv1.HeartbeatRequest); ok && m.Data != nil {
			m.Data.Annotate(n, hb)
		}
		m.request(from, n, env)
	}
}

func (m *MemNetwork) schedule(at time.Time, f func()) {
	m.seq++
	heap.Push(&m.queue, &event{at: at, seq: m.seq, run: f})
}

// request carries env from the sender to its target: the target handles
// it half an RTT later and the answer arrives a full RTT after sending.
func (m *MemNetwork) request(from string, sender *Node, env Envelope) {
	rtt := m.rtt(from, env.To)
	sent := m.now
	reply := func(resp proto.Message, err error) {
		m.schedule(sent.Add(rtt), func() {
			if m.dead[from] || m.nodes[from] != sender {
				return
			}
			m.Delivered++
			sender.Deliver(m.now, env, resp, err)
			m.dispatch(from, sender)
		})
	}
	if m.cut[key(from, env.To)] {
		m.schedule(sent.Add(m.Timeout), func() {
			if !m.dead[from] && m.nodes[from] == sender {
				sender.Deliver(m.now, env, nil, ErrTimeout)
				m.dispatch(from, sender)
			}
		})
		return
	}
	m.schedule(sent.Add(rtt/2), func() {
		m.Delivered++
		target, ok := m.nodes[env.To]
		if !ok || m.dead[env.To] {
			reply(nil, ErrUnreachable)
			return
		}
		resp, err := Handle(target, m.now, env.Msg)
		if hb, ok := env.Msg.(*canopyv1.HeartbeatRequest); ok && err == nil && m.Data != nil {
			m.Data.Observe(target, hb)
		}
		m.dispatch(env.To, target)
		reply(resp, err)
	})
}

// Handle runs one request against the node that received it; transports
// (in-memory here, gRPC in the binaries) call it.
func Handle(n *Node, now time.Time, msg proto.Message) (proto.Message, error) {
	switch req := msg.(type) {
	case *canopyv1.CandidatesRequest:
		return n.Candidates(now, req), nil
	case *canopyv1.PingRequest:
		return n.Ping(now, req), nil
	case *canopyv1.JoinRequest:
		return n.Join(now, req), nil
	case *canopyv1.HeartbeatRequest:
		return n.ChildHeartbeat(now, req)
	case *canopyv1.LeaveRequest:
		n.ChildLeave(now, req)
		return &canopyv1.LeaveResponse{}, nil
	}
	return nil, fmt.Errorf("unexpected message %T", msg)
}

type event struct {
	at  time.Time
	seq int
	run func()
}

type eventQueue []*event

func (q eventQueue) Len() int { return len(q) }
func (q eventQueue) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].seq < q[j].seq
}
func (q eventQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)   { *q = append(*q, x.(*event)) }
func (q *eventQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return e
}
