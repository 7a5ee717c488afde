package leaf

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/canopytree/canopy/batch"
	"github.com/canopytree/canopy/filter"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// fakeParent answers heartbeats in memory: it decodes them like a real
// parent, refuses any message carrying a poisoned seq, and, when told to,
// acknowledges cumulatively like the root (low_seq lets it pass gaps).
type fakeParent struct {
	dec      *batch.Decoder
	path     uint64
	poisoned uint64
	down     bool
	ackAll   bool
	accepted []uint64
	done     map[uint64]bool
	acked    uint64
	messages int
}

func (f *fakeParent) Invoke(_ context.Context, method string, args, reply any, _ ...grpc.CallOption) error {
	if method != canopyv1.TreeService_Heartbeat_FullMethodName {
		return grpcstatus.Error(codes.Unimplemented, method)
	}
	f.messages++
	if f.down {
		return grpcstatus.Error(codes.Unavailable, "connection refused")
	}
	req := proto.Clone(args.(*canopyv1.HeartbeatRequest)).(*canopyv1.HeartbeatRequest)
	for _, b := range req.Batches {
		if b.Seq == f.poisoned {
			return grpcstatus.Errorf(codes.InvalidArgument, "batch %d: invalid label", b.Seq)
		}
	}
	bs, err := f.dec.Decode(req, batch.DecodeLimits{})
	if err != nil {
		return grpcstatus.Error(codes.FailedPrecondition, err.Error())
	}
	resp := reply.(*canopyv1.HeartbeatResponse)
	resp.PathInstance = f.path
	if f.done == nil {
		f.done = map[uint64]bool{}
	}
	for _, b := range bs {
		f.accepted = append(f.accepted, b.Seq)
		f.done[b.Seq] = true
		f.acked = max(f.acked, b.LowSeq-1)
	}
	for f.done[f.acked+1] {
		f.acked++
	}
	if f.ackAll && f.acked > 0 {
		resp.Acks = []*canopyv1.Ack{{Origin: "n1", Epoch: 7, Seq: f.acked}}
	}
	return nil
}

func (f *fakeParent) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, grpcstatus.Error(codes.Unimplemented, "no streams")
}

var hbStatus = &canopyv1.HeartbeatRequest{Node: &canopyv1.NodeInfo{Id: "n1"}}

func newTestAgent(t *testing.T, parent *fakeParent, now *time.Time) *Agent {
	t.Helper()
	session := uint64(0)
	up := NewUplink(parent, 0, func() uint64 { session++; return session })
	a, err := NewAgent(AgentConfig{
		Identity: Identity{Node: "n1", DC: "eu-1"}, ScrapeInterval: time.Second, ScrapeTimeout: time.Second,
		Window: time.Second, Epoch: 7, Buffer: batch.Limits{MaxSamples: 1000}, RetransmitAfter: time.Minute,
		MaxBatchesPerHeartbeat: 8, Now: func() time.Time { return *now },
	}, up, nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAgentRetainsUntilAcknowledged(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	parent := &fakeParent{dec: batch.NewDecoder(), path: 1}
	a := newTestAgent(t, parent, &now)
	ctx := context.Background()
	for range 3 {
		if _, err := a.Heartbeat(ctx, hbStatus); err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Second)
	}
	// Handed over but not acknowledged: retained, not resent.
	if d := a.Delivery(); d.Buffered != 3 || len(parent.accepted) != 3 {
		t.Fatalf("buffered %d, parent saw %v", d.Buffered, parent.accepted)
	}
	// The parent goes away: windows keep being sealed and retained.
	parent.down = true
	if _, err := a.Heartbeat(ctx, hbStatus); grpcstatus.Code(err) != codes.Unavailable {
		t.Fatalf("heartbeat to a dead parent: %v", err)
	}
	// It comes back as a new process (new path instance): everything not
	// acknowledged is sent again, in order, and now acknowledged.
	parent.down, parent.path, parent.ackAll = false, 2, true
	parent.dec, parent.accepted, parent.done, parent.acked = batch.NewDecoder(), nil, nil, 0
	if _, err := a.Heartbeat(ctx, hbStatus); err != nil {
		t.Fatal(err)
	}
	if want := []uint64{4, 5, 1, 2, 3}; !equal(parent.accepted, want) {
		t.Fatalf("resent %v, want %v", parent.accepted, want)
	}
	if d := a.Delivery(); d.Buffered != 0 || d.LowSeq != 6 {
		t.Fatalf("after acks: %+v", d)
	}
}

// A stopping node drains: it keeps heartbeating without sealing new
// windows until everything is acknowledged, and says how much it could not
// hand over when it has to give up.
func TestAgentDrainsUntilAcknowledged(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	parent := &fakeParent{dec: batch.NewDecoder(), path: 1, down: true}
	a := newTestAgent(t, parent, &now)
	ctx := context.Background()
	for range 3 {
		_, _ = a.Heartbeat(ctx, hbStatus)
	}
	gone, cancel := context.WithCancel(ctx)
	cancel()
	if err := a.Drain(gone, hbStatus, time.Millisecond); err == nil || !strings.Contains(err.Error(), "3 batches unacknowledged") {
		t.Fatalf("drain to a dead parent: %v", err)
	}
	parent.down, parent.ackAll = false, true
	if err := a.Drain(ctx, hbStatus, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d := a.Delivery(); d.Buffered != 0 || d.NextSeq != 4 || !equal(parent.accepted, []uint64{1, 2, 3}) {
		t.Fatalf("after drain: %+v, parent saw %v", d, parent.accepted)
	}
}

func TestAgentDropsOnlyTheRejectedBatch(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	parent := &fakeParent{dec: batch.NewDecoder(), path: 1, down: true, ackAll: true, poisoned: 2}
	a := newTestAgent(t, parent, &now)
	ctx := context.Background()
	for range 3 {
		_, _ = a.Heartbeat(ctx, hbStatus) // parent down: batches 1..3 pile up
	}
	parent.down = false
	if _, err := a.Heartbeat(ctx, hbStatus); err != nil {
		t.Fatal(err)
	}
	if want := []uint64{1, 3, 4}; !equal(parent.accepted, want) {
		t.Fatalf("accepted %v, want %v", parent.accepted, want)
	}
	d := a.Delivery()
	if d.Rejected.Batches != 1 || d.Buffered != 0 {
		t.Fatalf("delivery %+v", d)
	}
}

func equal(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestAgentFiltersWindows: with a filter, a window carries only what
// changed; the agent's own series (batch_seq, loss) always travel.
func TestAgentFiltersWindows(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	a, err := NewAgent(AgentConfig{
		Identity: Identity{Node: "n1", DC: "eu-1"}, ScrapeInterval: time.Second, ScrapeTimeout: time.Second,
		Window: time.Second, Epoch: 1, Buffer: batch.Limits{MaxSamples: 1000},
		Filter: filter.New(filter.Config{}), Now: func() time.Time { return now },
	}, nil, nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	var sealed []batch.Series
	a.Observe(func(_ batch.ID, s []batch.Series) { sealed = s })
	names := func() []string {
		var out []string
		for _, s := range sealed {
			out = append(out, s.Labels.Get("__name__"))
		}
		return out
	}
	for i, v := range []float64{21, 21, 22} {
		a.mu.Lock()
		a.builder.Add(labels.FromStrings("__name__", "temp", "node", "n1"), canopyv1.MetricType_METRIC_TYPE_GAUGE, now.UnixMilli(), v)
		a.mu.Unlock()
		_, _ = a.Heartbeat(context.Background(), nil)
		got := names()
		hasTemp := slices.Contains(got, "temp")
		if want := i != 1; hasTemp != want || !slices.Contains(got, "canopy_leaf_batch_seq") {
			t.Fatalf("window %d (value %g): sealed %v", i, v, got)
		}
		now = now.Add(time.Second)
	}
}
