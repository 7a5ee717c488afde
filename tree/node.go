package tree

import (
	"errors"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"time"

	"github.com/cenkalti/backoff/v4"
	"google.golang.org/protobuf/proto"

	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// Envelope is a request the node wants sent. To is an address; an empty To
// on a heartbeat means "no parent": the window passed, nothing to send.
type Envelope struct {
	To  string
	Msg proto.Message // *CandidatesRequest, *PingRequest, *JoinRequest, *HeartbeatRequest, *LeaveRequest
}

// EventKind says what changed in a node's place in the tree.
type EventKind int

// Events the driver acts on.
const (
	// RoleChanged: start or stop the supernode service.
	RoleChanged EventKind = iota
	// ParentChanged: point the data uplink at the new parent (Addr empty:
	// detached).
	ParentChanged
)

// Event reports a change for the driver.
type Event struct {
	Kind EventKind
	Role canopyv1.Role
	Addr string
	ID   string
}

// ErrNotChild is returned to a heartbeat from a node that is not (or no
// longer) a child: it must join first.
var ErrNotChild = errors.New("not a child of this node: join first")

type phase int

const (
	detached phase = iota // waiting to (re)start discovery
	discover              // CandidatesRequest in flight
	probing               // pings in flight
	joining               // JoinRequest in flight
	attached
)

// candidate is a possible parent being evaluated.
type candidate struct {
	info   *canopyv1.NodeInfo
	rtts   []time.Duration
	sent   int
	failed bool
	full   bool // answered FULL (or redirect) during this round
	asked  bool // asked to elect during this round
	// electing: asked, it answered without pointing further down — it is
	// making room itself; nobody deeper should be asked meanwhile.
	electing bool
}

func (c *candidate) rtt() time.Duration {
	if len(c.rtts) == 0 {
		return time.Duration(1<<63 - 1)
	}
	s := slices.Clone(c.rtts)
	slices.Sort(s)
	return s[len(s)/2]
}

// Node is one node's membership state machine. It is not safe for
// concurrent use; Safe wraps it for the real binaries.
type Node struct {
	cfg     Config
	now     time.Time
	started time.Time
	rnd     *rand.Rand
	role    canopyv1.Role

	// child side
	phase      phase
	parent     *canopyv1.NodeInfo
	parentRTT  time.Duration
	path       []string // root … parent
	lastBeat   time.Time
	beatDue    time.Time
	beating    bool
	retryAt    time.Time
	bo         *backoff.ExponentialBackOff
	excluded   map[string]time.Time // address → until
	pool       map[string]*candidate
	pending    int       // requests in flight for the current phase
	deadline   time.Time // of the current phase
	rootIdx    int
	joinTarget string
	allFull    bool
	offered    []*canopyv1.NodeInfo // rejoin candidates pushed by the parent
	// reservedAt is a parent that elected us and holds a slot for us
	// until reservedUntil.
	reservedAt    *canopyv1.NodeInfo
	reservedUntil time.Time
	prevParent    string
	leaving       bool
	// prevCounts is until when the parent we lost may still count us (it
	// forgets us a soft-state timeout after our last heartbeat); dupUntil
	// is until when our new parent must report us as possibly duplicated.
	prevCounts time.Time
	dupUntil   time.Time
	// leaveAfterBeat tells the parent we moved away from (at leaveTo) that
	// we left, once the new parent has our first heartbeat.
	leaveAfterBeat *canopyv1.LeaveRequest
	leaveTo        string

	// parent side
	children  map[string]*child
	reserved  map[string]time.Time // supernode id → slot held for it until
	electing  map[string]time.Time // children told to promote, and when
	idleSince time.Time

	out    []Envelope
	events []Event
	stats  Stats
}

// Stats counts a node's protocol traffic.
type Stats struct {
	Sent      int // requests sent
	Answered  int // requests answered as a parent
	Joins     int // successful joins
	Promoted  int
	Demoted   int
	Reparents int // joins after having had a parent
}

// NewNode starts a node at now. A non-root node begins discovery at once.
func NewNode(cfg Config, now time.Time) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{
		cfg: cfg, now: now, started: now, rnd: cfg.Rand,
		role:      cfg.Role,
		excluded:  map[string]time.Time{},
		pool:      map[string]*candidate{},
		children:  map[string]*child{},
		reserved:  map[string]time.Time{},
		electing:  map[string]time.Time{},
		idleSince: now,
	}
	if n.rnd == nil {
		n.rnd = rand.New(rand.NewPCG(uint64(now.UnixNano()), hash(cfg.ID)))
	}
	if cfg.IsRoot {
		n.role = canopyv1.Role_ROLE_ROOT
		n.phase = attached
	}
	if n.role == canopyv1.Role_ROLE_UNSPECIFIED {
		n.role = canopyv1.Role_ROLE_LEAF
	}
	n.bo = &backoff.ExponentialBackOff{
		InitialInterval: cfg.BackoffInitial, RandomizationFactor: 0, Multiplier: 2,
		MaxInterval: cfg.BackoffMax, MaxElapsedTime: 0, Stop: backoff.Stop, Clock: n,
	}
	n.bo.Reset()
	return n, nil
}

// Now implements backoff.Clock with the node's own notion of time.
func (n *Node) Now() time.Time { return n.now }

func hash(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// Role is what the node is now.
func (n *Node) Role() canopyv1.Role { return n.role }

// ID is the node's id.
func (n *Node) ID() string { return n.cfg.ID }

// Moved reports whether the node re-attached under a new parent while the
// parent it lost may still count it: its subtree counts in dup.
func (n *Node) Moved() bool { return n.now.Before(n.dupUntil) || n.leaveAfterBeat != nil }

// Parent is the current parent, or nil.
func (n *Node) Parent() *canopyv1.NodeInfo {
	if n.phase != attached || n.cfg.IsRoot {
		return nil
	}
	return n.parent
}

// Level is the distance from the root (0 for the root, 0 when detached).
func (n *Node) Level() uint32 {
	if n.cfg.IsRoot || n.parent == nil {
		return 0
	}
	return n.parent.Level + 1
}

// Stats returns the traffic counters.
func (n *Node) Stats() Stats { return n.stats }

// Outbox drains the requests to send.
func (n *Node) Outbox() []Envelope {
	out := n.out
	n.out = nil
	return out
}

// Events drains what changed.
func (n *Node) Events() []Event {
	ev := n.events
	n.events = nil
	return ev
}

func (n *Node) send(to string, msg proto.Message) {
	n.out = append(n.out, Envelope{To: to, Msg: msg})
	if to != "" {
		n.stats.Sent++
	}
}

func (n *Node) jittered(d time.Duration) time.Duration {
	if n.cfg.Jitter == 0 {
		return d
	}
	f := 1 + n.cfg.Jitter*(2*n.rnd.Float64()-1)
	return time.Duration(float64(d) * f)
}

func (n *Node) isSupernode() bool {
	return n.role == canopyv1.Role_ROLE_SUPERNODE || n.role == canopyv1.Role_ROLE_ROOT
}

func (n *Node) setRole(r canopyv1.Role) {
	if n.role == r {
		return
	}
	n.role = r
	n.idleSince = n.now
	n.events = append(n.events, Event{Kind: RoleChanged, Role: r})
}

// eligible reports whether a node with this capacity may be promoted.
func (n *Node) eligible(info *canopyv1.NodeInfo) bool {
	c := info.GetCapacity()
	return c != nil && !c.LeafOnly && info.Address != "" &&
		time.Duration(c.UptimeSeconds)*time.Second >= n.cfg.MinUptime &&
		c.Score >= n.cfg.MinCapacity
}

// Info describes this node as peers see it.
func (n *Node) Info() *canopyv1.NodeInfo {
	limit := 0
	if n.isSupernode() {
		limit = n.cfg.childLimit()
	}
	live, free, electable, size := n.load(limit)
	info := &canopyv1.NodeInfo{
		Id: n.cfg.ID, Address: n.cfg.Address, Dc: n.cfg.DC, Role: n.role, Level: n.Level(),
		Capacity: &canopyv1.Capacity{
			Score: n.cfg.Capacity.Score(n.now), Cores: uint32(n.cfg.Capacity.Cores),
			MemoryBytes: n.cfg.Capacity.MemoryBytes, LinkBandwidthBps: n.cfg.Capacity.LinkBandwidthBps,
			UptimeSeconds: uint64(n.cfg.Capacity.Uptime(n.now).Seconds()), LeafOnly: n.cfg.LeafOnly,
		},
		ChildCount: uint32(live), ChildLimit: uint32(limit),
		SubtreeSize: size, SubtreeFree: free, Electable: uint32(electable),
		ParentRttMicros: n.parentRTT.Microseconds(),
	}
	if n.leaving {
		info.SubtreeFree, info.Electable, info.ChildLimit = 0, 0, 0
	}
	return info
}

// Tick advances time: heartbeats, timeouts, retries, the failure
// detector, elections and demotion.
func (n *Node) Tick(now time.Time) {
	n.now = now
	n.tickChildren()
	if n.cfg.IsRoot {
		return
	}
	n.tickDemotion()
	switch n.phase {
	case attached:
		if !n.beating && !now.Before(n.beatDue) {
			n.heartbeat()
		}
		if now.Sub(n.lastBeat) > time.Duration(n.cfg.DeadWindows)*n.cfg.Window {
			n.parentFailed()
		}
	case detached:
		n.sealWindow()
		if !now.Before(n.retryAt) {
			n.startDiscovery()
		}
	case discover, probing, joining:
		n.sealWindow()
		if now.After(n.deadline) {
			n.phaseTimeout()
		}
	}
}

// sealWindow emits an addressless heartbeat once per window while
// detached, so the data path keeps sealing windows without a parent.
func (n *Node) sealWindow() {
	if !n.now.Before(n.beatDue) {
		n.beatDue = nextBeat(n.beatDue, n.now, n.cfg.Window)
		n.send("", n.heartbeatRequest())
	}
}

func (n *Node) heartbeat() {
	n.beating = true
	n.beatDue = nextBeat(n.beatDue, n.now, n.cfg.Window)
	n.send(n.parent.Address, n.heartbeatRequest())
}

// nextBeat keeps heartbeats a window apart on average: the next one is due
// a window after the last was due, not after it went out (a tick that
// fires late would otherwise lengthen every period), unless the node fell
// more than a window behind.
func nextBeat(due, now time.Time, window time.Duration) time.Time {
	if next := due.Add(window); next.After(now) {
		return next
	}
	return now.Add(window)
}

func (n *Node) heartbeatRequest() *canopyv1.HeartbeatRequest {
	return &canopyv1.HeartbeatRequest{Node: n.Info(), Children: n.subtreeReport(), Moved: n.Moved()}
}

// parentFailed gives up on the parent: it is excluded for a while and
// selection starts again. A supernode moves with its children.
func (n *Node) parentFailed() {
	if n.parent != nil && !n.cfg.Static { // a static node has nowhere else to go
		n.excluded[n.parent.Address] = n.now.Add(n.cfg.ForgetAfter)
	}
	// The lost parent (or, if it died, its own parent, which heard from it
	// up to a window later) keeps counting us until it forgets us.
	n.prevCounts = n.lastBeat.Add(n.cfg.ForgetAfter + n.cfg.Window)
	n.detach()
	n.retryAt = n.now
}

func (n *Node) detach() {
	if n.parent != nil {
		n.prevParent = n.parent.Id
	}
	n.parent, n.path = nil, nil
	n.phase = detached
	n.beating = false
	n.events = append(n.events, Event{Kind: ParentChanged})
}

func (n *Node) startDiscovery() {
	clear(n.pool)
	n.allFull = false
	if n.reservedAt != nil && n.now.Before(n.reservedUntil) {
		// A slot is being freed for us: go straight back for it.
		n.addCandidate(n.reservedAt)
		if c, ok := n.pool[n.reservedAt.Address]; ok {
			n.join(c, false)
			return
		}
	}
	if n.reservedAt != nil && len(n.children) == 0 && !n.cfg.Pinned {
		// Elected but the slot never came: no point being a childless
		// supernode somewhere else.
		n.setRole(canopyv1.Role_ROLE_LEAF)
	}
	n.reservedAt = nil
	if len(n.offered) > 0 {
		// The parent told us where to go (rejoin): probe those.
		for _, c := range n.offered {
			n.addCandidate(c)
		}
		n.offered = nil
		n.startProbing()
		return
	}
	root := n.cfg.Roots[n.rootIdx%len(n.cfg.Roots)]
	if n.cfg.Static {
		n.addCandidate(&canopyv1.NodeInfo{Address: root, ChildLimit: 1})
		n.phase = probing
		n.choose()
		return
	}
	n.phase = discover
	n.pending = 1
	n.deadline = n.now.Add(n.cfg.RequestTimeout)
	n.send(root, &canopyv1.CandidatesRequest{Requester: n.Info(), Exclude: n.excludedIDs(), Limit: uint32(n.cfg.MaxCandidates)})
}

func (n *Node) excludedIDs() []string {
	var out []string
	for addr, until := range n.excluded {
		if n.now.Before(until) {
			out = append(out, addr)
		} else {
			delete(n.excluded, addr)
		}
	}
	slices.Sort(out)
	return out
}

// addCandidate adds a possible parent unless it is us, excluded, or in
// our own subtree (joining a descendant would make a cycle).
func (n *Node) addCandidate(info *canopyv1.NodeInfo) {
	if info.GetAddress() == "" || info.Id == n.cfg.ID || info.Address == n.cfg.Address {
		return
	}
	if until, ok := n.excluded[info.Address]; ok && n.now.Before(until) {
		return
	}
	if info.Id != "" && n.inSubtree(info.Id) {
		return
	}
	if c, ok := n.pool[info.Address]; ok {
		c.info = info
		return
	}
	n.pool[info.Address] = &candidate{info: info}
}

func (n *Node) startProbing() {
	n.phase = probing
	n.pending = 0
	n.deadline = n.now.Add(n.cfg.RequestTimeout)
	for _, addr := range n.sortedPool() {
		c := n.pool[addr]
		for c.sent < n.cfg.Probes {
			c.sent++
			n.pending++
			n.send(addr, &canopyv1.PingRequest{NodeId: n.cfg.ID, SentUnixNano: n.now.UnixNano()})
		}
	}
	if n.pending == 0 {
		n.choose()
	}
}

func (n *Node) sortedPool() []string { return slices.Sorted(maps.Keys(n.pool)) }

func (n *Node) phaseTimeout() {
	switch n.phase {
	case discover:
		n.rootIdx++
		n.retry()
	case probing:
		n.pending = 0
		n.choose()
	case joining:
		if c, ok := n.pool[n.joinTarget]; ok {
			c.failed = true
		}
		n.choose()
	}
}

// retry schedules discovery after backoff.
func (n *Node) retry() {
	n.phase = detached
	n.retryAt = n.now.Add(n.jittered(n.bo.NextBackOff()))
}

// choose picks what to join from the probed pool: the lowest-RTT
// candidate with room (ties: lower load); else the lowest-RTT one whose
// subtree has room, to descend; else, when the tree is full, it asks for
// an election top-down: the shallowest neighbourhood not asked yet, so the
// tree widens before it deepens.
func (n *Node) choose() {
	var room, deeper, ask []*candidate
	ceiling := uint32(1<<32 - 1) // no election deeper than a neighbourhood already electing
	for _, c := range n.pool {
		if c.electing {
			ceiling = min(ceiling, c.info.Level)
		}
	}
	for _, c := range n.pool {
		if c.failed || (len(c.rtts) == 0 && !n.cfg.Static) {
			continue
		}
		switch {
		case !c.full && c.info.ChildCount < c.info.ChildLimit:
			room = append(room, c)
		case c.info.SubtreeFree > 0 && !c.full:
			deeper = append(deeper, c)
		case !c.asked && c.info.Role != canopyv1.Role_ROLE_LEAF && c.info.Level <= ceiling:
			ask = append(ask, c)
		}
	}
	byRTT := func(cs []*candidate) {
		sort.Slice(cs, func(i, j int) bool {
			ri, rj := cs[i].rtt(), cs[j].rtt()
			if ri != rj {
				return ri < rj
			}
			li, lj := load(cs[i].info), load(cs[j].info)
			if li != lj {
				return li < lj
			}
			return cs[i].info.Address < cs[j].info.Address
		})
	}
	byRTT(room)
	byRTT(deeper)
	byRTT(ask)
	sort.SliceStable(ask, func(i, j int) bool {
		a, b := ask[i].info, ask[j].info
		if a.Level != b.Level {
			return a.Level < b.Level
		}
		return (a.Electable > 0) && b.Electable == 0
	})
	switch {
	case len(room) > 0:
		n.join(room[0], false)
	case len(deeper) > 0:
		n.join(deeper[0], false)
	case len(ask) > 0 && !n.treeHasRoom():
		// No room anywhere: the neighbourhood asked elects a supernode
		// (which may be us) or points further down to where one can be.
		n.allFull = true
		ask[0].asked = true
		n.join(ask[0], true)
	case ceiling != 1<<32-1:
		// An election is making room: come back when the elected node
		// has taken its role (two heartbeats), not after a longer backoff.
		n.phase = detached
		n.retryAt = n.now.Add(n.jittered(2 * n.cfg.Window))
	default:
		n.retry()
	}
}

// treeHasRoom reports whether the root, as probed, still counts free slots
// somewhere in the tree: then a full neighbourhood is a matter of finding
// the room (or of a stale count), not a reason to grow the tree deeper.
// Without the root's word (a rejoin among offered candidates) it assumes
// room: only a search that started at the root may ask for an election.
func (n *Node) treeHasRoom() bool {
	for _, c := range n.pool {
		if c.info.Role == canopyv1.Role_ROLE_ROOT && !c.failed && len(c.rtts) > 0 {
			return c.info.SubtreeFree > 0
		}
	}
	return true
}

// reservation is how long a parent holds a slot for a node it elected: long
// enough for a shed leaf to hear its rejoin (one heartbeat) and move.
func reservation(cfg Config) time.Duration {
	return time.Duration(cfg.DeadWindows+2) * cfg.Window
}

// dialled is info with the address we reached it at: what a node says its
// address is may not be what its children can dial.
func dialled(info *canopyv1.NodeInfo, addr string) *canopyv1.NodeInfo {
	if info.Address == addr {
		return info
	}
	c := proto.Clone(info).(*canopyv1.NodeInfo)
	c.Address = addr
	return c
}

func load(info *canopyv1.NodeInfo) float64 {
	if info.ChildLimit == 0 {
		return 1
	}
	return float64(info.ChildCount) / float64(info.ChildLimit)
}

func (n *Node) join(c *candidate, allFull bool) {
	n.phase = joining
	n.joinTarget = c.info.Address
	n.pending = 1
	n.deadline = n.now.Add(n.cfg.RequestTimeout)
	prev := ""
	if n.parent != nil {
		prev = n.parent.Id
	} else {
		prev = n.prevParent
	}
	n.send(c.info.Address, &canopyv1.JoinRequest{Node: n.Info(), PreviousParent: prev, AllFull: allFull})
}

// Deliver hands the node the outcome of a request it sent.
func (n *Node) Deliver(now time.Time, env Envelope, resp proto.Message, err error) {
	n.now = now
	switch req := env.Msg.(type) {
	case *canopyv1.CandidatesRequest:
		n.onCandidates(env.To, resp, err)
	case *canopyv1.PingRequest:
		n.onPing(env.To, req, resp, err)
	case *canopyv1.JoinRequest:
		n.onJoin(env.To, resp, err)
	case *canopyv1.HeartbeatRequest:
		n.onHeartbeat(env.To, resp, err)
	case *canopyv1.LeaveRequest:
		// Best effort: the old parent forgets us by timeout otherwise.
	}
}

func (n *Node) onCandidates(to string, resp proto.Message, err error) {
	if n.phase != discover {
		return
	}
	if err != nil {
		n.rootIdx++
		n.retry()
		return
	}
	for _, c := range resp.(*canopyv1.CandidatesResponse).Candidates {
		if c.Role == canopyv1.Role_ROLE_ROOT && c.Address == "" {
			c = dialled(c, to) // the root may not know its public address
		}
		n.addCandidate(c)
	}
	n.startProbing()
}

func (n *Node) onPing(to string, req *canopyv1.PingRequest, resp proto.Message, err error) {
	c, ok := n.pool[to]
	if n.phase != probing || !ok {
		return
	}
	n.pending--
	if err != nil {
		c.failed = true
	} else {
		r := resp.(*canopyv1.PingResponse)
		c.rtts = append(c.rtts, n.now.Sub(time.Unix(0, req.SentUnixNano)))
		c.info = r.Responder
	}
	if n.pending <= 0 {
		n.choose()
	}
}

func (n *Node) onJoin(to string, resp proto.Message, err error) {
	if n.phase != joining || to != n.joinTarget {
		return
	}
	c := n.pool[to]
	if err != nil {
		c.failed = true
		n.choose()
		return
	}
	r := resp.(*canopyv1.JoinResponse)
	if r.Result != canopyv1.JoinResult_JOIN_RESULT_ACCEPTED {
		c.full = true
		if r.Control.GetPromote() {
			// The full neighbourhood elected us: become a supernode and
			// come back for the slot it reserved, which a shed leaf is
			// freeing.
			n.control(r.Control)
			n.reservedAt = c.info
			n.reservedUntil = n.now.Add(reservation(n.cfg))
			n.phase = detached
			n.retryAt = n.now.Add(n.cfg.Window / 4)
			return
		}
		if r.Parent != nil {
			c.info = r.Parent
		}
		if n.reservedAt != nil && n.reservedAt.Address == to {
			// The slot is not free yet (the shed leaf is still moving):
			// come back soon, not after a growing backoff.
			n.phase = detached
			n.retryAt = n.now.Add(n.jittered(n.cfg.Window / 2))
			return
		}
		if c.asked && len(r.Candidates) == 0 {
			c.electing = true
		}
		fresh := 0
		for _, info := range r.Candidates {
			if _, known := n.pool[info.Address]; !known {
				fresh++
			}
			n.addCandidate(info)
		}
		if fresh > 0 {
			n.startProbing()
			return
		}
		n.choose()
		return
	}
	n.reservedAt = nil
	old := n.parent
	if old == nil && n.prevParent != r.Parent.Id {
		n.dupUntil = n.prevCounts
	}
	n.parent, n.path = dialled(r.Parent, to), r.Path
	n.parentRTT = c.rtt()
	if n.cfg.Static {
		n.parentRTT = 0
	}
	n.phase = attached
	n.lastBeat = n.now
	n.beatDue = n.now
	n.bo.Reset()
	n.stats.Joins++
	if n.prevParent != "" || old != nil {
		n.stats.Reparents++
	}
	if old != nil && old.Address != to {
		// The old parent keeps counting us until our data reaches the new
		// one: tell it we left after the first heartbeat there, which
		// says we moved (both may count us for that moment).
		n.leaveAfterBeat = &canopyv1.LeaveRequest{NodeId: n.cfg.ID, Reason: "moved to " + r.Parent.Id}
		n.leaveTo = old.Address
	}
	n.events = append(n.events, Event{Kind: ParentChanged, Addr: to, ID: r.Parent.Id})
}

func (n *Node) onHeartbeat(to string, resp proto.Message, err error) {
	n.beating = false
	if n.phase != attached || n.parent == nil || to != n.parent.Address {
		return
	}
	if errors.Is(err, ErrNotChild) {
		// The parent forgot us (restarted, or declared us dead): join again.
		n.prevCounts = time.Time{}
		n.detach()
		n.retryAt = n.now
		return
	}
	if err != nil {
		n.beatDue = n.now.Add(n.jittered(min(n.bo.NextBackOff(), n.cfg.Window)))
		return
	}
	n.bo.Reset()
	n.lastBeat = n.now
	if n.leaveAfterBeat != nil {
		n.send(n.leaveTo, n.leaveAfterBeat)
		n.leaveAfterBeat, n.leaveTo = nil, ""
	}
	r := resp.(*canopyv1.HeartbeatResponse)
	if r.Parent != nil {
		n.parent = dialled(r.Parent, to)
	}
	if r.Path != nil {
		n.path = r.Path
	}
	n.control(r.Control)
}

// control applies what the parent asked for.
func (n *Node) control(c *canopyv1.Control) {
	if c == nil {
		return
	}
	if c.Promote && n.role == canopyv1.Role_ROLE_LEAF && !n.cfg.LeafOnly && n.cfg.Address != "" {
		n.setRole(canopyv1.Role_ROLE_SUPERNODE)
		n.stats.Promoted++
	}
	if c.Rejoin != nil {
		n.offered = c.Rejoin.Candidates
		// Stay attached while we look: the old parent keeps our data
		// flowing until the new one accepts us.
		n.reselect()
	}
}

// reselect probes the offered candidates without dropping the parent.
func (n *Node) reselect() {
	clear(n.pool)
	for _, c := range n.offered {
		n.addCandidate(c)
	}
	n.offered = nil
	if len(n.pool) == 0 {
		return
	}
	cur := n.parent
	n.startProbing()
	// Probing replaced the phase; remember we are still attached to cur.
	n.parent = cur
}

// Leave starts a graceful departure: children are told to rejoin
// elsewhere in their next heartbeat reply; call Depart a window later.
func (n *Node) Leave() {
	n.leaving = true
	var offer []*canopyv1.NodeInfo
	if n.parent != nil {
		offer = append(offer, n.parent)
	}
	for _, c := range n.children {
		c.control = &canopyv1.Control{Rejoin: &canopyv1.Rejoin{Candidates: offer, Reason: n.cfg.ID + " is leaving"}}
	}
}

// Depart tells the parent we are gone.
func (n *Node) Depart() {
	if n.parent != nil {
		n.send(n.parent.Address, &canopyv1.LeaveRequest{NodeId: n.cfg.ID, Reason: "shutdown"})
	}
}

func (n *Node) tickDemotion() {
	if n.role != canopyv1.Role_ROLE_SUPERNODE || n.cfg.Pinned || n.cfg.DemoteAfter <= 0 {
		return
	}
	if n.liveChildren() > 0 {
		n.idleSince = n.now
		return
	}
	if n.now.Sub(n.idleSince) >= n.cfg.DemoteAfter {
		n.setRole(canopyv1.Role_ROLE_LEAF)
		n.stats.Demoted++
	}
}
