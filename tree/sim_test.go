package tree

import (
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

var simNodes = flag.Int("sim.nodes", 100_000, "nodes in TestSimulation (root included)")

// TestSimulation grows a tree of -sim.nodes nodes (100,000 by default) in
// the pure core over the in-memory network: root child limit 10,
// supernode child limit 100, nodes in 20 DCs spread over a plane (RTT
// grows with distance), mixed capacities, 20 % leaf-only devices, all
// arriving within the first minute. It must converge to the seed's three
// level shape (10 + ~1000 supernodes) with every node attached and no
// parent over its limit, and reports virtual time and messages per node.
func TestSimulation(t *testing.T) {
	n := *simNodes
	if testing.Short() || raceEnabled {
		n = min(n, 2_000)
	}
	const (
		tick   = 250 * time.Millisecond
		window = 5 * time.Second
		dcs    = 20
	)
	rng := rand.New(rand.NewPCG(42, 7))
	start := time.Unix(1_700_000_000, 0)
	net := NewMemNetwork(start)
	type point struct{ x, y float64 }
	pos := map[string]point{"root": {0, 0}}
	centres := make([]point, dcs)
	for i := range centres {
		centres[i] = point{rng.Float64()*200 - 100, rng.Float64()*200 - 100}
	}
	net.RTT = func(a, b string) time.Duration {
		pa, pb := pos[a], pos[b]
		d := math.Hypot(pa.x-pb.x, pa.y-pb.y)
		return time.Millisecond + time.Duration(d*float64(time.Millisecond)/2)
	}
	base := func(id string) Config {
		c := DefaultConfig(id)
		c.Address, c.Window = id, window
		c.MinUptime, c.MinCapacity = time.Hour, 3
		c.Roots = []string{"root"}
		c.Rand = rand.New(rand.NewPCG(rng.Uint64(), 1))
		return c
	}
	rootCfg := base("root")
	rootCfg.IsRoot, rootCfg.Roots, rootCfg.ChildLimit = true, nil, 10
	root, err := NewNode(rootCfg, start)
	if err != nil {
		t.Fatal(err)
	}
	net.Add(root)

	arrivals := make([]*Node, 0, n-1)
	for i := 1; i < n; i++ {
		id := fmt.Sprintf("n%06d", i)
		c := centres[rng.IntN(dcs)]
		pos[id] = point{c.x + rng.NormFloat64()*5, c.y + rng.NormFloat64()*5}
		cfg := base(id)
		cfg.DC = fmt.Sprintf("dc%02d", rng.IntN(dcs))
		cfg.ChildLimit = 100
		cfg.LeafOnly = rng.Float64() < 0.2
		cfg.Capacity = Capacity{
			Cores: 1 + rng.IntN(8), MemoryBytes: uint64(1+rng.IntN(16)) << 30,
			LinkBandwidthBps: uint64(10+rng.IntN(990)) * 1e6,
			Boot:             start.Add(-time.Duration(rng.Float64() * 72 * float64(time.Hour))),
		}
		node, err := NewNode(cfg, start)
		if err != nil {
			t.Fatal(err)
		}
		arrivals = append(arrivals, node)
	}
	// Everyone arrives within the first minute.
	perTick := int(math.Ceil(float64(len(arrivals)) / float64(time.Minute/tick)))
	next := 0
	converged := func() bool {
		if next < len(arrivals) {
			end := min(next+perTick, len(arrivals))
			for _, node := range arrivals[next:end] {
				node.now, node.started = net.Now(), net.Now()
				node.beatDue, node.retryAt, node.idleSince = net.Now(), net.Now(), net.Now()
				net.Add(node)
			}
			next = end
			return false
		}
		s := shape(net)
		if el := net.Now().Sub(start); el%(30*time.Second) < tick {
			t.Logf("t=%s: supernodes by level %v, leaves %d, detached %d, deepest %d", el, s.levels, s.leaves, s.detached, s.deepest)
		}
		return s.detached == 0 && s.orphans == 0 && s.levels[1] == 10 && s.deepest <= 3
	}
	ok := net.RunUntil(30*time.Minute, tick, converged)
	s := shape(net)
	msgs := 0
	for _, node := range net.Nodes() {
		msgs += node.Stats().Sent
	}
	elapsed := net.Now().Sub(start)
	t.Logf("%d nodes: converged=%v after %s virtual (%d ticks of %s); supernodes by level %v, leaves %d, deepest level %d, detached %d",
		n, ok, elapsed, int(elapsed/tick), tick, s.levels, s.leaves, s.deepest, s.detached)
	t.Logf("requests sent: %d (%.1f per node), messages carried: %d (%.1f per node)",
		msgs, float64(msgs)/float64(n), net.Delivered, float64(net.Delivered)/float64(n))
	if !ok {
		for _, node := range net.Nodes() {
			if node.role == canopyv1.Role_ROLE_SUPERNODE && node.Level() >= 3 {
				st := node.Stats()
				t.Logf("deep supernode %s level %d: children %d, joins %d, reparents %d, promoted %d, parent %s", node.cfg.ID, node.Level(), node.liveChildren(), st.Joins, st.Reparents, st.Promoted, node.Parent().GetId())
			}
		}
		t.Fatalf("did not converge: %+v", s)
	}
	if s.over > 0 {
		t.Fatalf("%d parents over their child limit", s.over)
	}
	if n >= 100_000 && (s.levels[2] < 990 || s.levels[2] > 1000) {
		t.Fatalf("expected ~1000 supernodes at level 2, got %d", s.levels[2])
	}
}

type treeShape struct {
	levels   map[uint32]int // supernodes by level
	leaves   int
	deepest  uint32
	detached int
	orphans  int // attached to a parent that does not count them
	over     int
}

func shape(net *MemNetwork) treeShape {
	s := treeShape{levels: map[uint32]int{}}
	count := map[string]int{}
	for _, node := range net.Nodes() {
		if node.cfg.IsRoot {
			continue
		}
		p := node.Parent()
		if p == nil {
			s.detached++
			continue
		}
		count[p.Address]++
		parent := net.Node(p.Address)
		if c, ok := parent.children[node.cfg.ID]; !ok || !c.live() {
			s.orphans++
		}
		lvl := node.Level()
		s.deepest = max(s.deepest, lvl)
		if node.role == canopyv1.Role_ROLE_SUPERNODE {
			s.levels[lvl]++
		} else {
			s.leaves++
		}
	}
	for addr, c := range count {
		if c > net.Node(addr).cfg.childLimit() {
			s.over++
		}
	}
	return s
}
