package tree

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"

	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// The scripts in testdata/ drive a MemNetwork and check its output; run
// with -rewrite to regenerate the expected output after a deliberate
// change. Commands:
//
//	node id=ID [root] [limit=N] [dc=DC] [cap=(CORES,GIB,MBPS)] [uptime=DUR] [leaf-only] [supernode] [static=ADDR]
//	rtt A B DUR          link round-trip time (default 1ms)
//	run DUR              advance virtual time (100 ms ticks), then print the tree
//	kill ID | restart ID | leave ID | depart ID
//	cut A B | heal
//	tree | stats ID
//	ni                   the root's network imprecision: tree, per dc, per subtree
func TestInteraction(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		env := newScriptEnv()
		datadriven.RunTest(t, path, env.handle)
	})
}

var scriptStart = time.Unix(1_700_000_000, 0)

type scriptEnv struct {
	net  *MemNetwork
	cfgs map[string]Config
	root string
	ni   func(root *Node) string
}

// ScriptData, set by the external test package (which may import the
// supernode package without a cycle), gives the scripts a data plane: the
// supernodes' aggregators carried in heartbeats, and a printer of the
// root's network imprecision for the ni command.
var ScriptData func() (DataPlane, func(root *Node) string)

func newScriptEnv() *scriptEnv {
	e := &scriptEnv{net: NewMemNetwork(scriptStart), cfgs: map[string]Config{}}
	if ScriptData != nil {
		e.net.Data, e.ni = ScriptData()
	}
	return e
}

func scriptConfig(id string) Config {
	c := DefaultConfig(id)
	c.Address = id
	c.Window = time.Second
	c.ForgetAfter = 30 * time.Second
	c.RequestTimeout = 500 * time.Millisecond
	c.MinUptime = 0
	c.MinCapacity = 0
	c.DemoteAfter = time.Minute
	c.BackoffInitial = 500 * time.Millisecond
	c.BackoffMax = 4 * time.Second
	c.Jitter = 0
	c.Capacity = Capacity{Cores: 2, MemoryBytes: 2 << 30, LinkBandwidthBps: 100e6, Boot: scriptStart.Add(-time.Hour)}
	c.Rand = rand.New(rand.NewPCG(1, hash(id)))
	return c
}

func (e *scriptEnv) handle(t *testing.T, d *datadriven.TestData) string {
	switch d.Cmd {
	case "node":
		return e.addNode(t, d)
	case "rtt":
		var a, b, dur string
		d.ScanArgs(t, "a", &a)
		d.ScanArgs(t, "b", &b)
		d.ScanArgs(t, "d", &dur)
		e.net.Latency[key(a, b)] = mustDuration(t, dur)
		return ""
	case "run":
		var dur string
		d.ScanArgs(t, "for", &dur)
		e.net.Run(mustDuration(t, dur), 100*time.Millisecond)
		return e.tree()
	case "tree":
		return e.tree()
	case "kill":
		e.net.Kill(arg(t, d))
		return ""
	case "restart":
		id := arg(t, d)
		cfg := e.cfgs[id]
		cfg.Role = e.net.Node(id).Role() // the state file keeps the role
		if cfg.Role == canopyv1.Role_ROLE_ROOT {
			cfg.Role = canopyv1.Role_ROLE_UNSPECIFIED
		}
		n, err := NewNode(cfg, e.net.Now())
		if err != nil {
			t.Fatal(err)
		}
		e.net.Add(n)
		return ""
	case "leave":
		e.net.Node(arg(t, d)).Leave()
		return ""
	case "depart":
		id := arg(t, d)
		n := e.net.Node(id)
		n.Depart()
		e.net.dispatch(id, n)
		e.net.Step(100 * time.Millisecond)
		e.net.Kill(id)
		return ""
	case "cut":
		var a, b string
		d.ScanArgs(t, "a", &a)
		d.ScanArgs(t, "b", &b)
		for _, x := range strings.Split(a, ",") {
			for _, y := range strings.Split(b, ",") {
				e.net.Cut(x, y)
			}
		}
		return ""
	case "heal":
		e.net.Heal()
		return ""
	case "ni":
		if e.ni == nil {
			t.Fatal("ni needs the data plane (ScriptData)")
		}
		return e.ni(e.net.Node(e.root))
	case "stats":
		s := e.net.Node(arg(t, d)).Stats()
		return fmt.Sprintf("joins=%d reparents=%d promoted=%d demoted=%d", s.Joins, s.Reparents, s.Promoted, s.Demoted)
	}
	t.Fatalf("unknown command %q", d.Cmd)
	return ""
}

func arg(t *testing.T, d *datadriven.TestData) string {
	if len(d.CmdArgs) != 1 {
		t.Fatalf("%s takes one argument", d.Cmd)
	}
	return d.CmdArgs[0].Key
}

func mustDuration(t *testing.T, s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (e *scriptEnv) addNode(t *testing.T, d *datadriven.TestData) string {
	var id string
	d.ScanArgs(t, "id", &id)
	cfg := scriptConfig(id)
	if d.HasArg("root") {
		cfg.IsRoot = true
		e.root = id
	} else {
		cfg.Roots = []string{e.root}
	}
	if d.HasArg("limit") {
		d.ScanArgs(t, "limit", &cfg.ChildLimit)
	}
	if d.HasArg("cap") {
		var parts []string
		d.ScanArgs(t, "cap", &parts)
		cores, _ := strconv.Atoi(parts[0])
		gib, _ := strconv.Atoi(parts[1])
		mbps, _ := strconv.Atoi(parts[2])
		cfg.Capacity.Cores, cfg.Capacity.MemoryBytes, cfg.Capacity.LinkBandwidthBps = cores, uint64(gib)<<30, uint64(mbps)*1e6
	}
	if d.HasArg("uptime") {
		var up string
		d.ScanArgs(t, "uptime", &up)
		cfg.Capacity.Boot = e.net.Now().Add(-mustDuration(t, up))
	}
	if d.HasArg("min-uptime") {
		var up string
		d.ScanArgs(t, "min-uptime", &up)
		cfg.MinUptime = mustDuration(t, up)
	}
	if d.HasArg("dc") {
		d.ScanArgs(t, "dc", &cfg.DC)
	}
	cfg.LeafOnly = d.HasArg("leaf-only")
	if d.HasArg("supernode") {
		cfg.Role, cfg.Pinned = canopyv1.Role_ROLE_SUPERNODE, true
	}
	if d.HasArg("static") {
		var to string
		d.ScanArgs(t, "static", &to)
		cfg.Roots, cfg.Static = []string{to}, true
	}
	n, err := NewNode(cfg, e.net.Now())
	if err != nil {
		t.Fatal(err)
	}
	e.cfgs[id] = cfg
	e.net.Add(n)
	return ""
}

// tree prints the live topology from every node's own view of its parent,
// and flags any parent over its limit.
func (e *scriptEnv) tree() string {
	kids := map[string][]*Node{}
	var detachedNodes []string
	for _, n := range e.net.Nodes() {
		if n.cfg.IsRoot {
			continue
		}
		if p := n.Parent(); p != nil {
			kids[p.Id] = append(kids[p.Id], n)
		} else {
			detachedNodes = append(detachedNodes, n.cfg.ID)
		}
	}
	var b strings.Builder
	var walk func(n *Node, depth int)
	walk = func(n *Node, depth int) {
		cs := kids[n.cfg.ID]
		sort.Slice(cs, func(i, j int) bool { return cs[i].cfg.ID < cs[j].cfg.ID })
		line := fmt.Sprintf("%s%s %s", strings.Repeat("  ", depth), n.cfg.ID, roleName(n.role))
		if n.isSupernode() {
			line += fmt.Sprintf(" %d/%d", len(cs), n.cfg.childLimit())
			if len(cs) > n.cfg.childLimit() {
				line += " OVER LIMIT"
			}
		}
		if p := n.Parent(); p != nil && n.Level() != uint32(depth) {
			line += fmt.Sprintf(" (thinks level %d)", n.Level())
		}
		b.WriteString(line + "\n")
		for _, c := range cs {
			walk(c, depth+1)
		}
	}
	if r := e.net.Node(e.root); r != nil {
		walk(r, 0)
	}
	slices.Sort(detachedNodes)
	for _, id := range detachedNodes {
		fmt.Fprintf(&b, "%s detached\n", id)
	}
	// Orphans whose parent is dead or not theirs any more.
	seen := map[string]bool{}
	var mark func(id string)
	mark = func(id string) {
		seen[id] = true
		for _, c := range kids[id] {
			mark(c.cfg.ID)
		}
	}
	mark(e.root)
	var lost []string
	for p, cs := range kids {
		if !seen[p] {
			for _, c := range cs {
				lost = append(lost, fmt.Sprintf("%s (under %s, cut off from the root)", c.cfg.ID, p))
			}
		}
	}
	slices.Sort(lost)
	for _, l := range lost {
		b.WriteString(l + "\n")
	}
	return b.String()
}

func roleName(r canopyv1.Role) string {
	switch r {
	case canopyv1.Role_ROLE_ROOT:
		return "root"
	case canopyv1.Role_ROLE_SUPERNODE:
		return "supernode"
	}
	return "leaf"
}
