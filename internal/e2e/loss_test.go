package e2e

import (
	"context"
	"math"
	"net"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/canopytree/canopy/internal/node"
)

// TestOverflowLossReachesRoot: a leaf whose parent is not there yet keeps
// sealing windows into a buffer too small for them, drops the oldest, and
// once the parent appears the loss arrives as the series
// canopy_leaf_dropped_samples_total, and the root's acknowledgement moves
// past the dropped seqs instead of waiting for them forever.
func TestOverflowLossReachesRoot(t *testing.T) {
	addr := freeAddr(t)
	l := startLeafWith(t, "tiny", "eu-1", addr, func(c *node.Config) {
		c.Batch.MaxSamples = 300 // about five windows of this target
	})
	eventually(t, 20*time.Second, "the leaf to overflow", func() bool {
		return l.node.Agent.Delivery().Loss.Batches >= 3
	})
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	r := startRootOn(t, lis)
	var acked uint64
	eventually(t, 20*time.Second, "the backlog to be acknowledged", func() bool {
		d := l.node.Agent.Delivery()
		for _, o := range r.Ingester.Ledger() {
			if o.Origin == "tiny" && o.Epoch == d.Epoch {
				acked = o.Acked
			}
		}
		return d.Buffered <= 1 && acked > d.Loss.Batches+1
	})
	l.stop()
	d := l.node.Agent.Delivery()

	q, err := r.DB.Querier(math.MinInt64, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	set := q.Select(context.Background(), false, nil,
		labels.MustNewMatcher(labels.MatchEqual, "__name__", "canopy_leaf_dropped_samples_total"),
		labels.MustNewMatcher(labels.MatchEqual, "node", "tiny"))
	var maxLoss float64
	for set.Next() {
		it := set.At().Iterator(nil)
		for it.Next() == chunkenc.ValFloat {
			_, v := it.At()
			maxLoss = max(maxLoss, v)
		}
	}
	if maxLoss == 0 {
		t.Fatal("the root never saw the leaf's loss")
	}
	if maxLoss > float64(d.Loss.Samples) {
		t.Fatalf("root saw a loss of %g samples, the leaf counted %d", maxLoss, d.Loss.Samples)
	}
	t.Logf("leaf dropped %d batches (%d samples); root sees %g dropped samples, acked through seq %d", d.Loss.Batches, d.Loss.Samples, maxLoss, acked)
}
