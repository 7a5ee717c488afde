package supernode

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/canopytree/canopy/batch"
	"github.com/canopytree/canopy/internal/grpcsnappy"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
	"github.com/canopytree/canopy/tree"
)

// recordingSink acknowledges everything it accepts, like a root.
type recordingSink struct {
	mu      sync.Mutex
	parent  *Parent
	batches []batch.Batch
}

func (s *recordingSink) Accept(_ context.Context, _ string, bs []batch.Batch) error {
	s.mu.Lock()
	s.batches = append(s.batches, bs...)
	s.mu.Unlock()
	var acks []*canopyv1.Ack
	for _, b := range bs {
		acks = append(acks, &canopyv1.Ack{Origin: b.Origin, Epoch: b.Epoch, Seq: b.Seq})
	}
	s.parent.Acknowledge(acks)
	return nil
}

const maxMessage = 64 << 10

// members is the tree protocol of a root adopting up to limit children.
func members(t *testing.T, id string, limit int) *tree.Safe {
	cfg := tree.DefaultConfig(id)
	cfg.IsRoot, cfg.ChildLimit, cfg.Address = true, limit, id
	n, err := tree.NewNode(cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tree.NewSafe(n, time.Now)
}

// serve runs a Parent on a loopback gRPC server and returns a client.
func serve(t *testing.T, childLimit int) (*Parent, *recordingSink, canopyv1.TreeServiceClient) {
	t.Helper()
	sink := &recordingSink{}
	p := NewParent(Config{
		Limits:   batch.DecodeLimits{MaxSamples: 1000, MaxLabelValueLen: 100},
		Instance: 42,
	}, members(t, "parent", childLimit), sink, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	sink.parent = p
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(p.ServerOptions(maxMessage)...)
	p.Register(srv)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.UseCompressor(grpcsnappy.Name)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return p, sink, canopyv1.NewTreeServiceClient(conn)
}

func heartbeat(node string, session uint64, lbls []*canopyv1.Label, values int) *canopyv1.HeartbeatRequest {
	return &canopyv1.HeartbeatRequest{
		Node: &canopyv1.NodeInfo{Id: node}, Session: session,
		Series:  []*canopyv1.SeriesDef{{Ref: 1, Labels: lbls}},
		Batches: []*canopyv1.Batch{{Origin: node, Epoch: 1, Seq: 1, LowSeq: 1, Series: []*canopyv1.SeriesSamples{{Ref: 1, TimestampDeltas: make([]int64, values), Values: make([]float64, values)}}}},
	}
}

var goodLabels = []*canopyv1.Label{{Name: "__name__", Value: "up"}, {Name: "node", Value: "c1"}}

func rejected(p *Parent, reason string) float64 {
	return testutil.ToFloat64(p.metrics.rejected.WithLabelValues(reason))
}

func join(t *testing.T, client canopyv1.TreeServiceClient, ids ...string) {
	t.Helper()
	for _, id := range ids {
		resp, err := client.Join(context.Background(), &canopyv1.JoinRequest{Node: &canopyv1.NodeInfo{Id: id}})
		if err != nil || resp.Result != canopyv1.JoinResult_JOIN_RESULT_ACCEPTED {
			t.Fatalf("join %s: %v %v", id, resp, err)
		}
	}
}

func TestHeartbeatAcceptedAndAcked(t *testing.T) {
	_, sink, client := serve(t, 10)
	join(t, client, "c1")
	resp, err := client.Heartbeat(context.Background(), heartbeat("c1", 5, goodLabels, 3))
	if err != nil {
		t.Fatal(err)
	}
	if len(sink.batches) != 1 || sink.batches[0].Series[0].Labels.Get("node") != "c1" {
		t.Fatalf("sink got %+v", sink.batches)
	}
	if resp.PathInstance != 42 || len(resp.Acks) != 1 || resp.Acks[0].Seq != 1 || resp.Parent.GetId() != "parent" {
		t.Fatalf("response %v", resp)
	}
	// A retransmit of the same batch gets the acknowledgement again, in
	// case the first reply was lost.
	resp, err = client.Heartbeat(context.Background(), heartbeat("c1", 5, goodLabels, 3))
	if err != nil || len(resp.Acks) != 1 {
		t.Fatalf("retransmit: %v %v", resp, err)
	}
}

func TestHeartbeatRejections(t *testing.T) {
	p, _, client := serve(t, 10)
	join(t, client, "c1")
	ctx := context.Background()
	cases := []struct {
		name   string
		req    *canopyv1.HeartbeatRequest
		code   codes.Code
		reason string
		msg    string
	}{
		{"invalid label name", heartbeat("c1", 1, []*canopyv1.Label{{Name: "__name__", Value: "up"}, {Name: "bad-label", Value: "x"}}, 1), codes.InvalidArgument, "invalid", `invalid label name "bad-label"`},
		{"label value too long", heartbeat("c1", 1, []*canopyv1.Label{{Name: "__name__", Value: "up"}, {Name: "a", Value: strings.Repeat("x", 101)}}, 1), codes.InvalidArgument, "invalid", "limit is 100"},
		{"too many samples", heartbeat("c1", 1, goodLabels, 1001), codes.InvalidArgument, "invalid", "limit is 1000"},
		{"no node id", heartbeat("", 1, goodLabels, 1), codes.InvalidArgument, "invalid", "without node id"},
		{"not a child", heartbeat("stranger", 1, goodLabels, 1), codes.NotFound, "unknown_child", "join first"},
		{"over the size limit", heartbeat("c1", 1, []*canopyv1.Label{{Name: "__name__", Value: "up"}, {Name: "a", Value: strings.Repeat("x", maxMessage)}}, 1), codes.ResourceExhausted, "too_large", "larger than max"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := rejected(p, tc.reason)
			_, err := client.Heartbeat(ctx, tc.req)
			st := status.Convert(err)
			if st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
				t.Fatalf("got %v %q, want %v containing %q", st.Code(), st.Message(), tc.code, tc.msg)
			}
			if got := rejected(p, tc.reason); got != before+1 {
				t.Fatalf("rejected{reason=%q} = %v, want %v", tc.reason, got, before+1)
			}
		})
	}
	// The bad heartbeats poisoned nothing: the same child goes on.
	if _, err := client.Heartbeat(ctx, heartbeat("c1", 2, goodLabels, 1)); err != nil {
		t.Fatalf("good heartbeat after bad ones: %v", err)
	}
}

func TestUnknownSessionAsksForANewOne(t *testing.T) {
	p, _, client := serve(t, 10)
	join(t, client, "c1")
	req := heartbeat("c1", 9, goodLabels, 1)
	req.Series = nil // refers to ref 1 that this parent never saw
	_, err := client.Heartbeat(context.Background(), req)
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("got %v, want FailedPrecondition", err)
	}
	if rejected(p, "session") != 1 {
		t.Fatal("session loss not counted")
	}
}

func TestMembershipIsTheTreeProtocols(t *testing.T) {
	_, _, client := serve(t, 1)
	ctx := context.Background()
	join(t, client, "c1")
	resp, err := client.Join(ctx, &canopyv1.JoinRequest{Node: &canopyv1.NodeInfo{Id: "c2"}})
	if err != nil || resp.Result != canopyv1.JoinResult_JOIN_RESULT_FULL {
		t.Fatalf("join when full: %v %v", resp, err)
	}
	if _, err := client.Leave(ctx, &canopyv1.LeaveRequest{NodeId: "c1"}); err != nil {
		t.Fatal(err)
	}
	join(t, client, "c2")
	ping, err := client.Ping(ctx, &canopyv1.PingRequest{NodeId: "c3", SentUnixNano: 7})
	if err != nil || ping.SentUnixNano != 7 || ping.Responder.ChildCount != 1 || ping.Responder.ChildLimit != 1 {
		t.Fatalf("ping: %v %v", ping, err)
	}
}

// TestSupernodeForwardsAndRoutesAcks: batches from two children are queued
// once each (a retransmit is deduplicated), and the root's acks, handed to
// Upstream, reach each child in its next reply.
func TestSupernodeForwardsAndRoutesAcks(t *testing.T) {
	sn := New(Config{Instance: 7}, members(t, "sn", 10), batch.Limits{}, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx := context.Background()
	for _, c := range []string{"a", "b"} {
		if _, err := sn.Join(ctx, &canopyv1.JoinRequest{Node: &canopyv1.NodeInfo{Id: c}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []string{"a", "b"} {
		req := heartbeat(c, 1, []*canopyv1.Label{{Name: "__name__", Value: "up"}, {Name: "node", Value: c}}, 2)
		for range 2 { // the second is a retransmit
			if _, err := sn.Heartbeat(ctx, req); err != nil {
				t.Fatal(err)
			}
		}
	}
	pending := sn.Pending(10, 1_000_000)
	if len(pending) != 2 {
		t.Fatalf("queued %d batches, want 2", len(pending))
	}
	// One upward message carries what fits the sample budget, and at
	// least one batch, however large.
	if n := len(sn.Pending(10, pending[0].NumSamples())); n != 1 {
		t.Fatalf("a budget of one batch's samples took %d batches", n)
	}
	if n := len(sn.Pending(10, 1)); n != 1 {
		t.Fatalf("a budget smaller than a batch took %d batches, want 1", n)
	}
	if n := len(sn.Pending(1, 1_000_000)); n != 1 {
		t.Fatalf("a cap of one batch took %d", n)
	}
	sn.Forwarded(2)
	sn.Upstream(&canopyv1.HeartbeatResponse{PathInstance: 99, Acks: []*canopyv1.Ack{{Origin: "a", Epoch: 1, Seq: 1}}})
	resp, err := sn.Heartbeat(ctx, &canopyv1.HeartbeatRequest{Node: &canopyv1.NodeInfo{Id: "a"}, Session: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Acks) != 1 || resp.Acks[0].Origin != "a" {
		t.Fatalf("child a got acks %v", resp.Acks)
	}
	if resp.PathInstance == 7 {
		t.Fatal("path instance does not reflect the upstream")
	}
	resp, _ = sn.Heartbeat(ctx, &canopyv1.HeartbeatRequest{Node: &canopyv1.NodeInfo{Id: "b"}, Session: 1})
	if len(resp.Acks) != 0 {
		t.Fatalf("child b got someone else's acks: %v", resp.Acks)
	}
	// A persisted batch sent again is not queued again.
	if _, err := sn.Heartbeat(ctx, heartbeat("a", 1, []*canopyv1.Label{{Name: "__name__", Value: "up"}, {Name: "node", Value: "a"}}, 2)); err != nil {
		t.Fatal(err)
	}
	if n := len(sn.Pending(10, 1_000_000)); n != 0 {
		t.Fatalf("acknowledged batch queued again (%d pending)", n)
	}
}

// Configuration set at a parent goes to each child with its heartbeat
// replies until the child reports the version, beside whatever the tree
// protocol itself tells the child.
func TestControlUntilApplied(t *testing.T) {
	p, _, client := serve(t, 10)
	join(t, client, "c1")
	ctx := context.Background()
	p.SetControl(&canopyv1.Control{ConfigVersion: 7, KeyframeWindows: 3, FilterRules: []*canopyv1.FilterRule{{Relative: 0.01}}})
	resp, err := client.Heartbeat(ctx, heartbeat("c1", 1, goodLabels, 1))
	if err != nil {
		t.Fatal(err)
	}
	if c := resp.Control; c.GetConfigVersion() != 7 || c.KeyframeWindows != 3 || len(c.FilterRules) != 1 || c.Promote || c.Rejoin != nil {
		t.Fatalf("first reply's control: %v", c)
	}
	req := heartbeat("c1", 1, goodLabels, 1)
	req.ConfigVersion = 7
	if resp, err = client.Heartbeat(ctx, req); err != nil || resp.Control != nil {
		t.Fatalf("control repeated after the child applied it: %v %v", resp.GetControl(), err)
	}
	// withConfig keeps the tree protocol's part.
	c := withConfig(&canopyv1.Control{Promote: true}, p.Control())
	if !c.Promote || c.ConfigVersion != 7 || p.Control().Promote {
		t.Fatalf("merged %v (config %v)", c, p.Control())
	}
}
