package e2e

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// nodeProcess is a canopy-node process that knows only the root.
type nodeProcess struct {
	t   *testing.T
	id  string
	cmd *exec.Cmd
	env []string
}

const selforgWindow = 500 * time.Millisecond

func startNodeProcess(t *testing.T, id, root, stateDir string, env ...string) *nodeProcess {
	p := &nodeProcess{t: t, id: id}
	p.env = append(os.Environ(),
		"CANOPY_NODE_ID="+id, "CANOPY_NODE_DC=dc"+id[len(id)-1:], "CANOPY_NODE_ROOTS="+root,
		"CANOPY_NODE_LISTEN=127.0.0.1:0", "CANOPY_NODE_TREE_LISTEN=127.0.0.1:0", "CANOPY_NODE_STATE_DIR="+stateDir,
		"CANOPY_TREE_CHILD_LIMIT=4", "CANOPY_TREE_PROMOTE_MIN_UPTIME=0s", "CANOPY_TREE_PROMOTE_MIN_CAPACITY=0",
		"CANOPY_TREE_BACKOFF_INITIAL=250ms", "CANOPY_TREE_BACKOFF_MAX=2s", "CANOPY_TREE_REQUEST_TIMEOUT=500ms",
		"CANOPY_TREE_FORGET_AFTER=20s",
		"CANOPY_BATCH_WINDOW="+selforgWindow.String(), "CANOPY_BATCH_RETRANSMIT_AFTER=10s", "CANOPY_BATCH_DRAIN_TIMEOUT=5s",
		"CANOPY_SCRAPE_INTERVAL=500ms", "CANOPY_SCRAPE_TIMEOUT=500ms", "CANOPY_LOG_LEVEL=warn")
	p.env = append(p.env, env...)
	p.start()
	t.Cleanup(func() { p.signal(syscall.SIGKILL) })
	return p
}

func (p *nodeProcess) start() {
	p.cmd = exec.Command(nodeBinary)
	p.cmd.Env = p.env
	p.cmd.Stderr = os.Stderr
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
}

func (p *nodeProcess) signal(sig syscall.Signal) {
	if p.cmd == nil || p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	_ = p.cmd.Wait()
}

// TestSelfOrganisingTree: a root (child limit 3) and 60 canopy-node
// processes (child limit 4) that know nothing but the root's address form
// a tree with at least two supernode levels; a supernode killed with
// SIGKILL loses its children to other parents within dead_windows plus
// backoff and their data flows again; restarted, it resumes its role from
// its state file. Every node's batches, audited by the seq each batch
// carries as canopy_leaf_batch_seq, arrive without a gap or a duplicate.
func TestSelfOrganisingTree(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 60 processes")
	}
	r := startRootConfigured(t, listen(t), 3, selforgWindow)
	dir := t.TempDir()
	procs := map[string]*nodeProcess{}
	start := time.Now()
	for i := range 60 {
		id := fmt.Sprintf("n%02d", i)
		procs[id] = startNodeProcess(t, id, r.grpcAddr, filepath.Join(dir, id))
	}
	var top *canopyv1.TopologyResponse
	eventually(t, 90*time.Second, "60 nodes attached", func() bool {
		top = r.Topology()
		return attached(top) == 60
	})
	formed := time.Since(start)
	levels := supernodeLevels(top)
	t.Logf("tree formed in %s: supernodes by level %v", formed.Round(time.Millisecond), levels)
	if len(levels) < 2 {
		t.Fatalf("want at least two supernode levels, got %v", levels)
	}
	checkLimits(t, top, 3, 4)

	// Kill -9 a supernode with children, as deep as possible.
	victim, kids := pickSupernode(top)
	if victim == "" {
		t.Fatal("no supernode with children")
	}
	t.Logf("killing supernode %s with children %v", victim, kids)
	before := map[string]float64{}
	for _, k := range kids {
		before[k] = lastSeq(t, r, k)
	}
	procs[victim].signal(syscall.SIGKILL)
	killed := time.Now()
	lastLog := time.Now()
	eventually(t, 60*time.Second, "the orphans re-attached and their data flowing", func() bool {
		top = r.Topology()
		if os.Getenv("CANOPY_DEBUG_HEAL") != "" && time.Since(lastLog) > time.Second {
			lastLog = time.Now()
			for _, k := range kids {
				if n := find(top, k); n != nil {
					t.Logf("%s +%s: %s under %s %v seq %g (was %g)", k, time.Since(killed).Round(time.Second), n.Node.Role, n.ParentId, n.State, lastSeq(t, r, k), before[k])
				}
			}
		}
		for _, k := range kids {
			n := find(top, k)
			if n == nil || n.ParentId == victim || n.State != canopyv1.ChildState_CHILD_STATE_HEALTHY || lastSeq(t, r, k) <= before[k]+2 {
				return false
			}
		}
		return true
	})
	t.Logf("re-parented %d children of %s and their data flows again after %s (dead_windows = 3 × %s)",
		len(kids), victim, time.Since(killed).Round(time.Millisecond), selforgWindow)

	procs[victim].start()
	eventually(t, 60*time.Second, "the restarted supernode back as a supernode", func() bool {
		n := find(r.Topology(), victim)
		return n != nil && n.Node.Role == canopyv1.Role_ROLE_SUPERNODE && n.State == canopyv1.ChildState_CHILD_STATE_HEALTHY
	})

	// Let everything settle, then stop the nodes gracefully, deepest
	// first (each drains what it holds to the root before it exits), and
	// audit.
	time.Sleep(3 * selforgWindow)
	stopBottomUp(r.Topology(), procs)
	ids := make([]string, 0, len(procs))
	for id := range procs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var batches int
	for _, id := range ids {
		batches += auditSeq(t, r, id)
	}
	t.Logf("audited %d batches of %d nodes: no gap, no duplicate", batches, len(ids))
}

// stopBottomUp sends SIGTERM level by level, deepest first, and waits for
// each level to exit, so every stopping node still has a path to the root.
func stopBottomUp(top *canopyv1.TopologyResponse, procs map[string]*nodeProcess) {
	parent := map[string]string{}
	for _, n := range top.Nodes {
		parent[n.Node.Id] = n.ParentId
	}
	depth := func(id string) int {
		d := 0
		for p, ok := parent[id]; ok && d <= len(parent); p, ok = parent[p] {
			d++
		}
		return d
	}
	byDepth := map[int][]*nodeProcess{}
	deepest := 0
	for id, p := range procs {
		d := depth(id)
		byDepth[d] = append(byDepth[d], p)
		deepest = max(deepest, d)
	}
	for d := deepest; d >= 0; d-- {
		var wg sync.WaitGroup
		for _, p := range byDepth[d] {
			wg.Go(func() { p.signal(syscall.SIGTERM) })
		}
		wg.Wait()
	}
}

func attached(top *canopyv1.TopologyResponse) int {
	reach := map[string]bool{top.Root.Id: true}
	for changed := true; changed; {
		changed = false
		for _, n := range top.Nodes {
			if !reach[n.Node.Id] && reach[n.ParentId] && n.State == canopyv1.ChildState_CHILD_STATE_HEALTHY {
				reach[n.Node.Id], changed = true, true
			}
		}
	}
	return len(reach) - 1
}

func supernodeLevels(top *canopyv1.TopologyResponse) map[uint32]int {
	out := map[uint32]int{}
	for _, n := range top.Nodes {
		if n.Node.Role == canopyv1.Role_ROLE_SUPERNODE {
			out[n.Node.Level]++
		}
	}
	return out
}

func checkLimits(t *testing.T, top *canopyv1.TopologyResponse, rootLimit, limit int) {
	t.Helper()
	count := map[string]int{}
	for _, n := range top.Nodes {
		if n.State != canopyv1.ChildState_CHILD_STATE_DEAD { // dead slots are free
			count[n.ParentId]++
		}
	}
	for p, c := range count {
		max := limit
		if p == top.Root.Id {
			max = rootLimit
		}
		if c > max {
			t.Errorf("%s has %d children, limit %d", p, c, max)
		}
	}
}

func find(top *canopyv1.TopologyResponse, id string) *canopyv1.TopologyNode {
	for _, n := range top.Nodes {
		if n.Node.Id == id {
			return n
		}
	}
	return nil
}

func pickSupernode(top *canopyv1.TopologyResponse) (string, []string) {
	best, bestLevel := "", uint32(0)
	for _, n := range top.Nodes {
		if n.Node.Role == canopyv1.Role_ROLE_SUPERNODE && n.Node.ChildCount > 0 && (best == "" || n.Node.Level > bestLevel) {
			best, bestLevel = n.Node.Id, n.Node.Level
		}
	}
	var kids []string
	for _, n := range top.Nodes {
		if n.ParentId == best && n.State == canopyv1.ChildState_CHILD_STATE_HEALTHY && !slices.Contains(kids, n.Node.Id) {
			kids = append(kids, n.Node.Id)
		}
	}
	return best, kids
}

func seqSeries(t *testing.T, r *rootRun, id string) []float64 {
	var vals []float64
	eachSample(t, r, math.MaxInt64, []*labels.Matcher{
		labels.MustNewMatcher(labels.MatchEqual, "__name__", "canopy_leaf_batch_seq"),
		labels.MustNewMatcher(labels.MatchEqual, "node", id),
	}, func(_ labels.Labels, _ int64, v float64) { vals = append(vals, v) })
	return vals
}

func lastSeq(t *testing.T, r *rootRun, id string) float64 {
	vals := seqSeries(t, r, id)
	if len(vals) == 0 {
		return 0
	}
	return vals[len(vals)-1]
}

// auditSeq checks that the node's batch seqs at the root count up by one
// within each incarnation (a restart starts again at 1).
func auditSeq(t *testing.T, r *rootRun, id string) int {
	t.Helper()
	vals := seqSeries(t, r, id)
	if len(vals) == 0 {
		t.Errorf("%s: no batches at the root", id)
		return 0
	}
	var problems []string
	for i := 1; i < len(vals); i++ {
		if vals[i] != vals[i-1]+1 && vals[i] != 1 {
			problems = append(problems, fmt.Sprintf("%g after %g", vals[i], vals[i-1]))
		}
	}
	if vals[0] != 1 {
		problems = append(problems, fmt.Sprintf("starts at %g", vals[0]))
	}
	if len(problems) > 0 {
		t.Errorf("%s: batch seqs at the root have gaps or duplicates: %s", id, strings.Join(problems, ", "))
	}
	return len(vals)
}
