package tree_test

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
	"github.com/canopytree/canopy/supernode"
	"github.com/canopytree/canopy/tree"
)

// dataPlane runs a supernode.Aggregator on every node of a script: each
// heartbeat carries the sender's report of its descendants, and each
// parent observes the heartbeats it accepts, as supernode.Parent does.
type dataPlane struct {
	aggs map[string]*supernode.Aggregator
}

func (d *dataPlane) agg(id string) *supernode.Aggregator {
	a, ok := d.aggs[id]
	if !ok {
		a = supernode.NewAggregator(nil)
		d.aggs[id] = a
	}
	return a
}

func (d *dataPlane) Annotate(from *tree.Node, req *canopyv1.HeartbeatRequest) {
	d.agg(from.ID()).Report(from.ChildStates()).Heartbeat(req, from.Now().UnixMilli())
}

func (d *dataPlane) Observe(at *tree.Node, req *canopyv1.HeartbeatRequest) {
	d.agg(at.ID()).Observe(req.Node.GetId(), req, nil)
}

// ni prints what the root would persist as canopy_ni_*: the tree, each
// dc, each of the root's subtrees.
func (d *dataPlane) ni(root *tree.Node) string {
	rep := d.agg(root.ID()).Report(root.ChildStates())
	var b strings.Builder
	line := func(indent, what string, ni supernode.NI) {
		fmt.Fprintf(&b, "%s%s all=%d reachable=%d dup=%d\n", indent, what, ni.All, ni.Reachable, ni.Dup)
	}
	line("", "tree", rep.NI)
	for _, dc := range slices.Sorted(maps.Keys(rep.GroupNI)) {
		line("  ", "dc "+dc, rep.GroupNI[dc])
	}
	for _, id := range slices.Sorted(maps.Keys(rep.Children)) {
		line("  ", "subtree "+id, rep.Children[id])
	}
	return b.String()
}

func init() {
	tree.ScriptData = func() (tree.DataPlane, func(*tree.Node) string) {
		d := &dataPlane{aggs: map[string]*supernode.Aggregator{}}
		return d, d.ni
	}
}
