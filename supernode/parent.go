package supernode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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

// Config configures a Parent.
type Config struct {
	// Self describes this node in replies (Ping, Join, Candidates); called
	// on every use so it reflects live load.
	Self func() *canopyv1.NodeInfo
	// ChildLimit is how many children the parent adopts (0 = unlimited).
	ChildLimit int
	// Limits bound what one heartbeat may carry.
	Limits batch.DecodeLimits
	// Instance identifies this process incarnation; it must differ across
	// restarts.
	Instance uint64
	// Window is the children's heartbeat period, for failure detection.
	Window time.Duration
	// MissedWindows and DeadWindows mark a silent child suspect and dead.
	MissedWindows int
	DeadWindows   int
	// ForgetAfter drops a silent child and its routes (soft state).
	ForgetAfter time.Duration
	Now         func() time.Time
}

// Parent serves TreeService for a node's children. It is safe for
// concurrent use; heartbeats of one child are processed one at a time.
type Parent struct {
	canopyv1.UnimplementedTreeServiceServer

	cfg     Config
	sink    Sink
	log     *slog.Logger
	metrics *parentMetrics

	mu       sync.Mutex
	children map[string]*child
	route    map[string]string // origin → child it arrives through
	acks     map[string]ack    // origin → newest acknowledgement from above
	upstream uint64            // path instance of our own parent (0 at the root)
}

type ack struct{ epoch, seq uint64 }

type child struct {
	id string

	mu   sync.Mutex // serialises this child's heartbeats
	dec  *batch.Decoder
	told map[string]ack // acknowledgements already sent down

	// guarded by Parent.mu
	origins  map[string]struct{} // origins whose batches arrive through this child
	info     *canopyv1.NodeInfo
	children []*canopyv1.ChildStatus
	lastSeen time.Time
}

// NewParent returns a parent that hands children's batches to sink.
func NewParent(cfg Config, sink Sink, reg prometheus.Registerer, log *slog.Logger) *Parent {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Parent{
		cfg: cfg, sink: sink, log: log, metrics: newParentMetrics(reg),
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
	c, err := p.child(id)
	if err != nil {
		p.metrics.rejected.WithLabelValues("child_limit").Inc()
		return nil, err
	}
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
	if err := p.sink.Accept(ctx, id, batches); err != nil {
		p.metrics.rejected.WithLabelValues("unavailable").Inc()
		return nil, status.Errorf(codes.Unavailable, "child %s: %v", id, err)
	}
	p.metrics.heartbeats.Inc()
	p.metrics.batches.Add(float64(len(batches)))

	p.mu.Lock()
	defer p.mu.Unlock()
	c.info, c.children, c.lastSeen = req.Node, req.Children, p.cfg.Now()
	resend := map[string]bool{}
	for i := range batches {
		p.routeVia(batches[i].Origin, c)
		// A batch sent again may mean our last acknowledgement was lost
		// on the way down: repeat it.
		resend[batches[i].Origin] = true
	}
	return &canopyv1.HeartbeatResponse{PathInstance: p.pathInstance(), Acks: p.acksFor(c, resend)}, nil
}

func (c *child) decode(req *canopyv1.HeartbeatRequest, lim batch.DecodeLimits) ([]batch.Batch, error) {
	if req.Session != c.dec.Session() {
		// A new session means the child restarted or reconnected: it may
		// have lost acknowledgements in flight, so tell it everything again.
		clear(c.told)
	}
	return c.dec.Decode(req, lim)
}

// child returns the registry entry for id, adopting the child if there is
// room (the topology is static until the tree protocol places nodes).
func (p *Parent) child(id string) (*child, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.children[id]; ok {
		return c, nil
	}
	if p.cfg.ChildLimit > 0 && len(p.children) >= p.cfg.ChildLimit {
		return nil, status.Errorf(codes.ResourceExhausted, "child limit %d reached; %s not adopted", p.cfg.ChildLimit, id)
	}
	c := &child{id: id, dec: batch.NewDecoder(), told: map[string]ack{}, origins: map[string]struct{}{}, lastSeen: p.cfg.Now()}
	p.children[id] = c
	p.metrics.children.Set(float64(len(p.children)))
	p.log.Info("child adopted", "child", id)
	return c, nil
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

// Ping answers an RTT probe with this node's load.
func (p *Parent) Ping(_ context.Context, req *canopyv1.PingRequest) (*canopyv1.PingResponse, error) {
	return &canopyv1.PingResponse{Responder: p.self(), SentUnixNano: req.SentUnixNano}, nil
}

// Join adopts the caller if there is room.
func (p *Parent) Join(_ context.Context, req *canopyv1.JoinRequest) (*canopyv1.JoinResponse, error) {
	id := req.GetNode().GetId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "join without node id")
	}
	if _, err := p.child(id); err != nil {
		return &canopyv1.JoinResponse{Result: canopyv1.JoinResult_JOIN_RESULT_FULL, Parent: p.self()}, nil
	}
	p.mu.Lock()
	p.children[id].info = req.Node
	p.mu.Unlock()
	return &canopyv1.JoinResponse{Result: canopyv1.JoinResult_JOIN_RESULT_ACCEPTED, Parent: p.self()}, nil
}

// Leave forgets the caller at once.
func (p *Parent) Leave(_ context.Context, req *canopyv1.LeaveRequest) (*canopyv1.LeaveResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.children[req.NodeId]; !ok {
		return nil, status.Errorf(codes.NotFound, "%s is not a child of this node", req.NodeId)
	}
	p.forget(req.NodeId)
	p.log.Info("child left", "child", req.NodeId, "reason", req.Reason)
	return &canopyv1.LeaveResponse{}, nil
}

// Candidates lists this node and the supernodes among its children.
func (p *Parent) Candidates(_ context.Context, req *canopyv1.CandidatesRequest) (*canopyv1.CandidatesResponse, error) {
	out := []*canopyv1.NodeInfo{p.self()}
	p.mu.Lock()
	for _, c := range p.children {
		if c.info != nil && c.info.Role == canopyv1.Role_ROLE_SUPERNODE && c.info.Address != "" && !slices.Contains(req.Exclude, c.id) {
			out = append(out, c.info)
		}
	}
	p.mu.Unlock()
	if req.Limit > 0 && len(out) > int(req.Limit) {
		out = out[:req.Limit]
	}
	return &canopyv1.CandidatesResponse{Candidates: out}, nil
}

func (p *Parent) self() *canopyv1.NodeInfo {
	info := p.cfg.Self()
	p.mu.Lock()
	info.ChildCount = uint32(len(p.children))
	info.ChildLimit = uint32(p.cfg.ChildLimit)
	p.mu.Unlock()
	return info
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

// state is the failure detector's verdict on a child silent since last.
func (p *Parent) state(last, now time.Time) canopyv1.ChildState {
	silent := now.Sub(last)
	switch {
	case silent > time.Duration(p.cfg.DeadWindows)*p.cfg.Window:
		return canopyv1.ChildState_CHILD_STATE_DEAD
	case silent > time.Duration(p.cfg.MissedWindows)*p.cfg.Window:
		return canopyv1.ChildState_CHILD_STATE_SUSPECT
	}
	return canopyv1.ChildState_CHILD_STATE_HEALTHY
}

// Subtree describes every node below this one: the direct children with
// the failure detector's verdict (parent selfID), followed by what each child
// reported of its own subtree. size counts the nodes below this one.
func (p *Parent) Subtree(selfID string) (nodes []*canopyv1.ChildStatus, direct int, size uint64) {
	now := p.cfg.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	ids := make([]string, 0, len(p.children))
	for id := range p.children {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		c := p.children[id]
		info := c.info
		if info == nil {
			info = &canopyv1.NodeInfo{Id: id}
		}
		nodes = append(nodes, &canopyv1.ChildStatus{Node: info, ParentId: selfID, State: p.state(c.lastSeen, now), LastHeartbeatUnixMs: c.lastSeen.UnixMilli()})
		size += max(info.SubtreeSize, 1)
	}
	direct = len(nodes)
	for _, id := range ids {
		nodes = append(nodes, p.children[id].children...)
	}
	return nodes, direct, size
}

// String names the parent in logs.
func (p *Parent) String() string { return fmt.Sprintf("parent(%d children)", len(p.children)) }
