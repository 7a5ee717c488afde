package tree

import (
	"maps"
	"slices"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"

	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// child is the parent side's record of one child.
type child struct {
	info     *canopyv1.NodeInfo
	joined   time.Time
	lastSeen time.Time
	state    canopyv1.ChildState
	// control goes out with the child's next heartbeat reply.
	control *canopyv1.Control
	// shedding children were asked to rejoin elsewhere (at shedAt).
	shedding bool
	shedAt   time.Time
	shedFor  string // the supernode this leaf makes room for
	// subtree is what a supernode child reported of its own subtree.
	subtree []*canopyv1.ChildStatus
}

func (c *child) live() bool { return c.state != canopyv1.ChildState_CHILD_STATE_DEAD }

func (c *child) isSupernode() bool { return c.info.Role == canopyv1.Role_ROLE_SUPERNODE }

// load sums the parent side: live children, free slots in the subtree,
// leaf children eligible for promotion, and the subtree's size.
func (n *Node) load(limit int) (live int, free uint64, electable int, size uint64) {
	size = 1
	for _, c := range n.children {
		if !c.live() {
			continue
		}
		live++
		size += max(c.info.SubtreeSize, 1)
		if c.isSupernode() {
			free += c.info.SubtreeFree
		} else if !c.shedding && n.eligible(c.info) {
			electable++
		}
	}
	live += len(n.reserved) // promised slots are not free
	if limit > live {
		free += uint64(limit - live)
	}
	return live, free, electable, size
}

// inSubtree reports whether id is below this node.
func (n *Node) inSubtree(id string) bool {
	if _, ok := n.children[id]; ok {
		return true
	}
	for _, c := range n.children {
		for _, s := range c.subtree {
			if s.Node.GetId() == id {
				return true
			}
		}
	}
	return false
}

func (n *Node) tickChildren() {
	missed := time.Duration(n.cfg.MissedWindows) * n.cfg.Window
	dead := time.Duration(n.cfg.DeadWindows) * n.cfg.Window
	for id, c := range n.children {
		silent := n.now.Sub(c.lastSeen)
		switch {
		case silent > n.cfg.ForgetAfter:
			delete(n.children, id)
		case silent > dead:
			c.state = canopyv1.ChildState_CHILD_STATE_DEAD
		case silent > missed:
			c.state = canopyv1.ChildState_CHILD_STATE_SUSPECT
		}
		if c.shedding && n.now.Sub(c.shedAt) > dead {
			c.shedding = false // it found nowhere better; it may be shed again later
		}
	}
	for id, at := range n.electing {
		if c, ok := n.children[id]; !ok || !c.live() || n.now.Sub(at) > dead {
			delete(n.electing, id) // the elected child died or never took the role
		}
	}
}

func (n *Node) liveChildren() int {
	live := 0
	for _, c := range n.children {
		if c.live() {
			live++
		}
	}
	return live
}

// Candidates answers a joining node: this node if it takes children, and
// its supernode children, those with room in their subtrees first.
func (n *Node) Candidates(now time.Time, req *canopyv1.CandidatesRequest) *canopyv1.CandidatesResponse {
	n.now = now
	n.stats.Answered++
	limit := n.cfg.MaxCandidates
	if req.Limit > 0 && int(req.Limit) < limit {
		limit = int(req.Limit)
	}
	var out []*canopyv1.NodeInfo
	if n.isSupernode() && !n.leaving {
		out = append(out, n.Info())
	}
	for _, c := range n.supernodeChildren(req.Exclude) {
		if len(out) >= limit {
			break
		}
		out = append(out, c.info)
	}
	return &canopyv1.CandidatesResponse{Candidates: out}
}

// supernodeChildren lists live supernode children, most free room first,
// then those that can elect.
func (n *Node) supernodeChildren(exclude []string) []*child {
	var sns []*child
	for _, c := range n.children {
		if c.live() && c.isSupernode() && c.info.Address != "" && !slices.Contains(exclude, c.info.Address) {
			sns = append(sns, c)
		}
	}
	sort.Slice(sns, func(i, j int) bool {
		a, b := sns[i].info, sns[j].info
		if a.SubtreeFree != b.SubtreeFree {
			return a.SubtreeFree > b.SubtreeFree
		}
		if a.Electable != b.Electable {
			return a.Electable > b.Electable
		}
		return a.Id < b.Id
	})
	return sns
}

// Ping answers a probe with this node's load.
func (n *Node) Ping(now time.Time, req *canopyv1.PingRequest) *canopyv1.PingResponse {
	n.now = now
	n.stats.Answered++
	return &canopyv1.PingResponse{Responder: n.Info(), SentUnixNano: req.SentUnixNano}
}

func (n *Node) pathDown() []string {
	return append(slices.Clone(n.path), n.cfg.ID)
}

// Join adopts the caller if there is room. Otherwise it answers FULL with
// the supernode children that have room (the caller descends), and, when
// the caller found no room anywhere, elects a supernode among its own
// children to create some. A supernode joiner is made room for by shedding
// a leaf.
func (n *Node) Join(now time.Time, req *canopyv1.JoinRequest) *canopyv1.JoinResponse {
	n.now = now
	n.stats.Answered++
	id := req.GetNode().GetId()
	full := func() *canopyv1.JoinResponse {
		resp := &canopyv1.JoinResponse{Result: canopyv1.JoinResult_JOIN_RESULT_FULL, Parent: n.Info()}
		for _, c := range n.supernodeChildren(nil) {
			if len(resp.Candidates) == n.cfg.MaxCandidates {
				break
			}
			// Where there is room, or, for a joiner that found none and
			// when we have no leaf to elect, where an election can make some.
			if c.info.Id != id && (c.info.SubtreeFree > 0 || (req.AllFull && !n.hasLeaves() && c.info.Role == canopyv1.Role_ROLE_SUPERNODE)) {
				resp.Candidates = append(resp.Candidates, c.info)
			}
		}
		return resp
	}
	switch {
	case !n.isSupernode() || n.leaving:
		return full()
	case id == "" || id == n.cfg.ID || slices.Contains(n.path, id):
		// Adopting an ancestor would close a cycle.
		return &canopyv1.JoinResponse{Result: canopyv1.JoinResult_JOIN_RESULT_REDIRECT, Parent: n.Info()}
	}
	if c, ok := n.children[id]; ok && c.live() {
		c.info, c.lastSeen = req.Node, now
		return n.accepted()
	}
	taken := n.liveChildren() + n.reservations(id)
	if taken < n.cfg.childLimit() {
		delete(n.reserved, id)
		delete(n.children, id) // a dead record of the same node
		n.children[id] = &child{info: req.Node, joined: now, lastSeen: now, state: canopyv1.ChildState_CHILD_STATE_HEALTHY}
		return n.accepted()
	}
	resp := full()
	// A joiner that found no room is trusted over our children's room
	// counts, which lag a window per level: electing here, as high up as the
	// joiner's top-down search reached, at worst widens the tree early.
	// An answer without candidates tells the joiner that room is being made
	// here, so it does not go on to ask (and grow) deeper levels.
	if len(resp.Candidates) == 0 || req.AllFull {
		switch {
		case req.Node.Role == canopyv1.Role_ROLE_SUPERNODE:
			// Make room for a supernode by moving a leaf under it.
			if n.shedFor(req.Node) {
				resp.Candidates = nil
			}
		case req.AllFull:
			// The neighbourhood, joiner included, elects its most capable
			// eligible member.
			if best := n.candidateForElection(); n.eligible(req.Node) && better(req.Node, best) {
				sn := proto.Clone(req.Node).(*canopyv1.NodeInfo)
				sn.Role = canopyv1.Role_ROLE_SUPERNODE
				if n.shedFor(sn) {
					resp.Control = &canopyv1.Control{Promote: true}
					resp.Candidates = nil
				}
			} else if n.elect() {
				resp.Candidates = nil
			}
		}
	}
	return resp
}

func (n *Node) accepted() *canopyv1.JoinResponse {
	return &canopyv1.JoinResponse{Result: canopyv1.JoinResult_JOIN_RESULT_ACCEPTED, Parent: n.Info(), Path: n.pathDown()}
}

func (n *Node) hasLeaves() bool {
	for _, c := range n.children {
		if c.live() && !c.isSupernode() {
			return true
		}
	}
	return false
}

// reservations counts live slot reservations held for others than id.
func (n *Node) reservations(id string) int {
	k := 0
	for who, until := range n.reserved {
		switch {
		case !n.now.Before(until):
			delete(n.reserved, who)
		case who != id:
			k++
		}
	}
	return k
}

// candidateForElection is the most capable eligible leaf child.
func (n *Node) candidateForElection() *canopyv1.NodeInfo {
	var best *canopyv1.NodeInfo
	for _, c := range n.children {
		if _, elected := n.electing[c.info.Id]; !elected && c.live() && !c.isSupernode() && !c.shedding && n.eligible(c.info) && better(c.info, best) {
			best = c.info
		}
	}
	return best
}

// better ranks for election: highest score, then lowest id.
func better(a, b *canopyv1.NodeInfo) bool {
	if b == nil {
		return true
	}
	sa, sb := a.GetCapacity().GetScore(), b.GetCapacity().GetScore()
	return sa > sb || (sa == sb && a.Id < b.Id)
}

// maxElections bounds the promotions one parent has under way: enough for
// a burst of joiners not to wait for one promotion after another (each
// takes two heartbeats), few enough not to promote a whole neighbourhood
// on stale counts.
const maxElections = 8

// elect promotes the most capable eligible leaf child not already elected;
// the child learns it in its next heartbeat reply. It reports whether an
// election is under way now.
func (n *Node) elect() bool {
	if len(n.electing) >= maxElections {
		return true
	}
	best := n.candidateForElection()
	if best == nil {
		return len(n.electing) > 0
	}
	n.children[best.Id].control = &canopyv1.Control{Promote: true}
	n.electing[best.Id] = n.now
	return true
}

// shedFor moves one leaf towards a supernode that wants a slot here and
// reserves the slot for it, unless that is under way already. It reports
// whether a slot is (being) made.
func (n *Node) shedFor(sn *canopyv1.NodeInfo) bool {
	if _, ok := n.reserved[sn.Id]; ok {
		return true
	}
	victim := n.shed(1, sn)
	if victim == nil {
		return false
	}
	victim.shedFor = sn.Id
	n.reserved[sn.Id] = n.now.Add(reservation(n.cfg))
	return true
}

// shed asks up to k leaf children (least capable first) to rejoin among
// offer plus the supernode children with room, and returns the last one.
func (n *Node) shed(k int, offer ...*canopyv1.NodeInfo) (last *child) {
	for _, c := range n.supernodeChildren(nil) {
		if c.info.SubtreeFree > 0 {
			offer = append(offer, c.info)
		}
	}
	if len(offer) == 0 {
		return nil
	}
	var leaves []*child
	for _, c := range n.children {
		if _, elected := n.electing[c.info.Id]; !elected && c.live() && !c.isSupernode() && !c.shedding {
			leaves = append(leaves, c)
		}
	}
	sort.Slice(leaves, func(i, j int) bool {
		a, b := leaves[i].info.GetCapacity().GetScore(), leaves[j].info.GetCapacity().GetScore()
		if a != b {
			return a < b
		}
		return leaves[i].info.Id > leaves[j].info.Id
	})
	for _, c := range leaves[:min(k, len(leaves))] {
		c.shedding, c.shedAt = true, n.now
		c.control = &canopyv1.Control{Rejoin: &canopyv1.Rejoin{Candidates: offer, Reason: "shed by " + n.cfg.ID}}
		last = c
	}
	return last
}

// ChildHeartbeat records a child's heartbeat and returns the membership
// part of the reply: this node's info, its path, and pending control.
func (n *Node) ChildHeartbeat(now time.Time, req *canopyv1.HeartbeatRequest) (*canopyv1.HeartbeatResponse, error) {
	n.now = now
	n.stats.Answered++
	id := req.GetNode().GetId()
	c, ok := n.children[id]
	if !ok {
		return nil, ErrNotChild
	}
	wasDead := !c.live()
	if wasDead && n.liveChildren() >= n.cfg.childLimit() {
		// Its slot was given away while it was dead.
		delete(n.children, id)
		return nil, ErrNotChild
	}
	_, elected := n.electing[id]
	promotedNow := elected && req.Node.Role == canopyv1.Role_ROLE_SUPERNODE
	c.info, c.lastSeen, c.subtree = req.Node, now, req.Children
	c.state = canopyv1.ChildState_CHILD_STATE_HEALTHY
	resp := &canopyv1.HeartbeatResponse{Parent: n.Info(), Path: n.pathDown(), Control: c.control}
	c.control = nil
	if promotedNow {
		delete(n.electing, id)
		if n.cfg.ShedFraction > 0 {
			leaves := 0
			for _, o := range n.children {
				if o.live() && !o.isSupernode() && !o.shedding {
					leaves++
				}
			}
			n.shed(int(float64(leaves)*n.cfg.ShedFraction), req.Node)
		}
	}
	return resp, nil
}

// ChildLeave forgets a child that left (or moved) at once.
func (n *Node) ChildLeave(now time.Time, req *canopyv1.LeaveRequest) bool {
	n.now = now
	n.stats.Answered++
	if _, ok := n.children[req.NodeId]; !ok {
		return false
	}
	delete(n.children, req.NodeId)
	delete(n.electing, req.NodeId)
	return true
}

// subtreeReport lists the subtree for the parent: every node while the
// subtree is small, only supernodes (with their child counts) when large.
func (n *Node) subtreeReport() []*canopyv1.ChildStatus {
	if len(n.children) == 0 {
		return nil
	}
	_, _, _, size := n.load(0)
	all := int(size) <= n.cfg.ReportLeavesUpTo
	var out []*canopyv1.ChildStatus
	for _, id := range n.childIDs() {
		c := n.children[id]
		if all || c.isSupernode() {
			out = append(out, n.status(c))
		}
		if !c.live() {
			continue // what a dead supernode last said of its children is stale: they have moved on
		}
		for _, s := range c.subtree {
			if all || s.Node.GetRole() == canopyv1.Role_ROLE_SUPERNODE {
				out = append(out, s)
			}
		}
	}
	return out
}

// ChildStates is the failure detector's verdict on every direct child
// not yet forgotten.
func (n *Node) ChildStates() map[string]canopyv1.ChildState {
	out := make(map[string]canopyv1.ChildState, len(n.children))
	for id, c := range n.children {
		out[id] = c.state
	}
	return out
}

func (n *Node) childIDs() []string { return slices.Sorted(maps.Keys(n.children)) }

func (n *Node) status(c *child) *canopyv1.ChildStatus {
	return &canopyv1.ChildStatus{
		Node: c.info, ParentId: n.cfg.ID, State: c.state,
		LastHeartbeatUnixMs: c.lastSeen.UnixMilli(), RttMicros: c.info.ParentRttMicros,
	}
}

// Topology is every node this node knows below it, each with its parent.
// A node that moved may be reported by its old and its new parent for a
// window; the fresher report wins. A dead supernode's last report is left
// out: its children have moved on or will show up again when they do.
func (n *Node) Topology() []*canopyv1.ChildStatus {
	var out []*canopyv1.ChildStatus
	at := map[string]int{}
	add := func(s *canopyv1.ChildStatus) {
		id := s.Node.GetId()
		if i, ok := at[id]; ok {
			if s.LastHeartbeatUnixMs > out[i].LastHeartbeatUnixMs {
				out[i] = s
			}
			return
		}
		at[id] = len(out)
		out = append(out, s)
	}
	for _, id := range n.childIDs() {
		c := n.children[id]
		add(n.status(c))
		if c.live() {
			for _, s := range c.subtree {
				add(s)
			}
		}
	}
	return out
}
