package supernode

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/canopytree/canopy/batch"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// Sink takes the validated batches of one child heartbeat.
type Sink interface {
	// Accept returns once the batches are durable (root) or queued for the
	// parent (supernode). An error fails the child's heartbeat, so the child
	// keeps the batches and sends them again.
	Accept(ctx context.Context, child string, batches []batch.Batch) error
}

// Membership decides who the children are: the tree protocol (tree.Safe
// in the binaries). Handle answers CandidatesRequest, PingRequest,
// JoinRequest and LeaveRequest, and the membership part of a
// HeartbeatRequest, returning tree.ErrNotChild for a node that has not
// joined.
type Membership interface {
	Handle(msg proto.Message) (proto.Message, error)
}

// Config configures a Parent.
type Config struct {
	// Limits bound what one heartbeat may carry.
	Limits batch.DecodeLimits
	// Instance identifies this process incarnation; it must differ across
	// restarts.
	Instance uint64
	// ForgetAfter drops the data state (dictionary, routes) of a child
	// silent this long.
	ForgetAfter time.Duration
	// Aggregator, when set, caches children's series for aggregation and
	// strips aggregate-only series before the sink.
	Aggregator *Aggregator
	Now        func() time.Time
}

// Parent serves TreeService for a node's children: membership questions
// go to the tree protocol, data to the sink. It is safe for concurrent use;
// heartbeats of one child are processed one at a time.
type Parent struct {
	canopyv1.UnimplementedTreeServiceServer

	cfg     Config
	members Membership
	sink    Sink
	log     *slog.Logger
	metrics *parentMetrics

	mu       sync.Mutex
	children map[string]*child
	route    map[string]string // origin → child it arrives through
	acks     map[string]ack    // origin → newest acknowledgement from above
	upstream uint64            // path instance of our own parent (0 at the root)
	control  *canopyv1.Control // configuration children must apply
}

type ack struct{ epoch, seq uint64 }

type child struct {
	id string

	mu   sync.Mutex // serialises this child's heartbeats
	dec  *batch.Decoder
	told map[string]ack // acknowledgements already sent down

	// guarded by Parent.mu
	origins  map[string]struct{} // origins whose batches arrive through this child
	lastSeen time.Time
}

// NewParent returns a parent that admits children through members and
// hands their batches to sink.
func NewParent(cfg Config, members Membership, sink Sink, reg prometheus.Registerer, log *slog.Logger) *Parent {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Parent{
		cfg: cfg, members: members, sink: sink, log: log, metrics: newParentMetrics(reg),
		children: map[string]*child{},
		route:    map[string]string{},
		acks:     map[string]ack{},
	}
}

var _ canopyv1.TreeServiceServer = (*Parent)(nil)

// Heartbeat validates a child's window, hands its batches to the sink and
// answers with the acknowledgements that concern the child's subtree.
func (p *Parent) Heartbeat(ctx context.Context, req *canopyv1.HeartbeatRequest) (*canopyv1.HeartbeatResponse, error) {
	id := req.GetNode().GetId()
	if id == "" {
		p.metrics.rejected.WithLabelValues("invalid").Inc()
		return nil, status.Error(codes.InvalidArgument, "heartbeat without node id")
	}
	m, err := p.members.Handle(req)
	if err != nil {
		p.metrics.rejected.WithLabelValues("unknown_child").Inc()
		return nil, status.Errorf(codes.NotFound, "node %q: %v", id, err)
	}
	resp := m.(*canopyv1.HeartbeatResponse)
	c := p.child(id)
	c.mu.Lock()
	defer c.mu.Unlock()
	batches, err := c.decode(req, p.cfg.Limits)
	if errors.Is(err, batch.ErrUnknownSession) {
		p.metrics.rejected.WithLabelValues("session").Inc()
		return nil, status.Errorf(codes.FailedPrecondition, "child %s: %v; start a new session", id, err)
	}
	if err != nil {
		p.metrics.rejected.WithLabelValues("invalid").Inc()
		p.log.Warn("rejected heartbeat", "child", id, "err", err)
		return nil, status.Errorf(codes.InvalidArgument, "child %s: %v", id, err)
	}
	if p.cfg.Aggregator != nil {
		batches = p.cfg.Aggregator.Observe(id, req, batches)
	}
	if err := p.sink.Accept(ctx, id, batches); err != nil {
		p.metrics.rejected.WithLabelValues("unavailable").Inc()
		return nil, status.Errorf(codes.Unavailable, "child %s: %v", id, err)
	}
	p.metrics.heartbeats.Inc()
	p.metrics.batches.Add(float64(len(batches)))

	p.mu.Lock()
	defer p.mu.Unlock()
	c.lastSeen = p.cfg.Now()
	resend := map[string]bool{}
	for i := range batches {
		p.routeVia(batches[i].Origin, c)
		// A batch sent again may mean our last acknowledgement was lost
		// on the way down: repeat it.
		resend[batches[i].Origin] = true
	}
	resp.PathInstance, resp.Acks = p.pathInstance(), p.acksFor(c, resend)
	if p.control != nil && req.ConfigVersion < p.control.ConfigVersion {
		resp.Control = withConfig(resp.Control, p.control)
	}
	return resp, nil
}

// withConfig adds the configuration part of cfg to the membership part
// (promote, rejoin) the tree protocol may have put in c.
func withConfig(c, cfg *canopyv1.Control) *canopyv1.Control {
	out := proto.Clone(cfg).(*canopyv1.Control)
	out.Promote, out.Rejoin = c.GetPromote(), c.GetRejoin()
	return out
}

// SetControl sets the configuration (filter and aggregation rules,
// keyframe period) children must apply; each child gets it with its
// heartbeat replies until it reports the version.
func (p *Parent) SetControl(c *canopyv1.Control) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.control = c
}

// Control is the configuration in force, or nil.
func (p *Parent) Control() *canopyv1.Control {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.control
}

func (c *child) decode(req *canopyv1.HeartbeatRequest, lim batch.DecodeLimits) ([]batch.Batch, error) {
	if req.Session != c.dec.Session() {
		// A new session means the child restarted or reconnected: it may
		// have lost acknowledgements in flight, so tell it everything again.
		clear(c.told)
	}
	return c.dec.Decode(req, lim)
}

// child returns the data state of a member child, creating it on its first
// heartbeat.
func (p *Parent) child(id string) *child {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.children[id]; ok {
		return c
	}
	c := &child{id: id, dec: batch.NewDecoder(), told: map[string]ack{}, origins: map[string]struct{}{}, lastSeen: p.cfg.Now()}
	p.children[id] = c
	p.metrics.children.Set(float64(len(p.children)))
	p.log.Info("child's first heartbeat", "child", id)
	return c
}

// routeVia records that origin's batches now arrive through c (an origin
// moves when its subtree is re-parented). Must hold p.mu.
func (p *Parent) routeVia(origin string, c *child) {
	prev, ok := p.route[origin]
	if ok && prev == c.id {
		return
	}
	if old, ok := p.children[prev]; ok {
		delete(old.origins, origin)
	}
	p.route[origin] = c.id
	c.origins[origin] = struct{}{}
}

// must hold p.mu and c.mu
func (p *Parent) acksFor(c *child, resend map[string]bool) []*canopyv1.Ack {
	var out []*canopyv1.Ack
	for origin := range c.origins {
		a, ok := p.acks[origin]
		if !ok || (c.told[origin] == a && !resend[origin]) {
			continue
		}
		c.told[origin] = a
		out = append(out, &canopyv1.Ack{Origin: origin, Epoch: a.epoch, Seq: a.seq})
	}
	return out
}

// Acknowledge records end-to-end acknowledgements from above (or, at the
// root, from storage). They go down with each child's next heartbeat reply.
func (p *Parent) Acknowledge(acks []*canopyv1.Ack) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, a := range acks {
		cur, ok := p.acks[a.Origin]
		if !ok || a.Epoch != cur.epoch || a.Seq > cur.seq {
			p.acks[a.Origin] = ack{a.Epoch, a.Seq}
		}
	}
}

// Acked reports whether the root has persisted (origin, epoch, seq).
func (p *Parent) Acked(id batch.ID) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	a, ok := p.acks[id.Origin]
	return ok && a.epoch == id.Epoch && id.Seq <= a.seq
}

// SetUpstream records the path instance our own parent answered with.
func (p *Parent) SetUpstream(path uint64) {
	p.mu.Lock()
	p.upstream = path
	p.mu.Unlock()
}

// PathInstance is what children see as the path to the root: it changes
// whenever this process or anything above it restarts.
func (p *Parent) PathInstance() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pathInstance()
}

func (p *Parent) pathInstance() uint64 {
	if p.upstream == 0 {
		return p.cfg.Instance
	}
	return mix(p.cfg.Instance ^ mix(p.upstream))
}

// mix is splitmix64's finaliser: a cheap bijective scramble.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// Ping, Join, Leave and Candidates are the tree protocol's.

func (p *Parent) Ping(_ context.Context, req *canopyv1.PingRequest) (*canopyv1.PingResponse, error) {
	resp, err := p.members.Handle(req)
	return asResponse[*canopyv1.PingResponse](resp, err)
}

func (p *Parent) Join(_ context.Context, req *canopyv1.JoinRequest) (*canopyv1.JoinResponse, error) {
	if req.GetNode().GetId() == "" || req.GetNode().GetAddress() == "" && req.GetNode().GetRole() == canopyv1.Role_ROLE_SUPERNODE {
		return nil, status.Error(codes.InvalidArgument, "join needs a node id (and an address for a supernode)")
	}
	resp, err := p.members.Handle(req)
	return asResponse[*canopyv1.JoinResponse](resp, err)
}

func (p *Parent) Leave(_ context.Context, req *canopyv1.LeaveRequest) (*canopyv1.LeaveResponse, error) {
	resp, err := p.members.Handle(req)
	p.mu.Lock()
	if _, ok := p.children[req.NodeId]; ok {
		p.forget(req.NodeId)
	}
	p.mu.Unlock()
	p.log.Info("child left", "child", req.NodeId, "reason", req.Reason)
	return asResponse[*canopyv1.LeaveResponse](resp, err)
}

func (p *Parent) Candidates(_ context.Context, req *canopyv1.CandidatesRequest) (*canopyv1.CandidatesResponse, error) {
	resp, err := p.members.Handle(req)
	return asResponse[*canopyv1.CandidatesResponse](resp, err)
}

func asResponse[T proto.Message](resp proto.Message, err error) (T, error) {
	var zero T
	if err != nil {
		return zero, status.Error(codes.Internal, err.Error())
	}
	return resp.(T), nil
}

// must hold p.mu
func (p *Parent) forget(id string) {
	for origin := range p.children[id].origins {
		delete(p.route, origin)
		delete(p.acks, origin)
	}
	delete(p.children, id)
	p.metrics.children.Set(float64(len(p.children)))
}

// Sweep forgets children silent for longer than ForgetAfter.
func (p *Parent) Sweep() {
	now := p.cfg.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, c := range p.children {
		if p.cfg.ForgetAfter > 0 && now.Sub(c.lastSeen) > p.cfg.ForgetAfter {
			p.log.Info("child forgotten", "child", id, "silent", now.Sub(c.lastSeen))
			p.forget(id)
		}
	}
}
