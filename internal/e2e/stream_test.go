package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
	"github.com/canopytree/canopy/root"
)

// subscriber records what one gRPC subscription received.
type subscriber struct {
	topic   string
	mu      sync.Mutex
	seqs    map[string][]float64 // node → canopy_leaf_batch_seq values in arrival order
	windows map[string][]int64   // dc or "tree" → timestamps of its updates
	maxAll  uint64               // the largest NI all seen
	dropped uint64
}

func (s *subscriber) record(u *canopyv1.SubscribeResponse) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropped += u.Dropped
	s.maxAll = max(s.maxAll, u.GetNi().GetAll())
	for _, ser := range u.Series {
		var name, node, dc, scope string
		for _, l := range ser.Labels {
			switch l.Name {
			case "__name__":
				name = l.Value
			case "node":
				node = l.Value
			case "dc":
				dc = l.Value
			case "scope":
				scope = l.Value
			}
		}
		for _, smp := range ser.Samples {
			switch {
			case name == "canopy_leaf_batch_seq":
				s.seqs[node] = append(s.seqs[node], smp.Value)
			case strings.HasSuffix(name, ":sum"):
				s.windows[dc] = append(s.windows[dc], smp.TimestampMs)
			case name == "canopy_ni_all" && scope == "tree":
				s.windows["tree"] = append(s.windows["tree"], smp.TimestampMs)
			}
		}
	}
}

// TestStreamSubscribers: 100 gRPC subscribers with exact and wildcard
// topics, plus one that never reads, on a root fed by three leaves. Every
// node subscriber gets every batch of its nodes in order (the batch seq
// each batch carries counts 1, 2, 3, … without a gap); dc and tree.ni
// subscribers get every window's update in order, with NI; the one that
// never reads loses updates (reported to it) without delaying anyone.
// Server-sent events carry the same updates over HTTP.
func TestStreamSubscribers(t *testing.T) {
	r := startRootWith(t, listen(t), func(o *root.Options) {
		o.Control = &canopyv1.Control{AggregationRules: []*canopyv1.AggregationRule{{
			Matchers:  []*canopyv1.LabelMatcher{{Name: "__name__", Type: canopyv1.MatchType_MATCH_TYPE_EQUAL, Value: "node_memory_MemTotal_bytes"}},
			Functions: []canopyv1.AggregateFunction{canopyv1.AggregateFunction_AGGREGATE_FUNCTION_SUM},
		}}}
		o.StreamBuffer = 64
	})
	conn, err := grpc.NewClient(r.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := canopyv1.NewReaderServiceClient(conn)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var subs []*subscriber
	var wg sync.WaitGroup
	for i := range 100 {
		topic := []string{"metrics.nodes.*", "metrics.nodes.s1", "metrics.dc.*", "metrics.dc.eu-2", "tree.ni"}[i%5]
		s := &subscriber{topic: topic, seqs: map[string][]float64{}, windows: map[string][]int64{}}
		subs = append(subs, s)
		stream, err := client.Subscribe(ctx, &canopyv1.SubscribeRequest{Topic: topic})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for {
				u, err := stream.Recv()
				if err != nil {
					return
				}
				s.record(u)
			}
		})
	}
	// The subscriber that never reads.
	stalledConn, _ := grpc.NewClient(r.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer stalledConn.Close()
	if _, err := canopyv1.NewReaderServiceClient(stalledConn).Subscribe(ctx, &canopyv1.SubscribeRequest{Topic: "metrics.nodes.*"}); err != nil {
		t.Fatal(err)
	}
	// And one over HTTP as server-sent events.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.httpAddr+"/api/v1/stream/metrics.dc.eu-1", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("SSE answer %s %q", resp.Status, ct)
	}
	sse := &subscriber{seqs: map[string][]float64{}, windows: map[string][]int64{}}
	wg.Go(func() { readSSE(resp.Body, sse) })
	eventually(t, 10*time.Second, "102 subscriptions open", func() bool { return r.Hub.Subscribers() == 102 })

	leaves := []*leafRun{startLeaf(t, "s1", "eu-1", r.grpcAddr), startLeaf(t, "s2", "eu-1", r.grpcAddr), startLeaf(t, "s3", "eu-2", r.grpcAddr)}
	eventually(t, 30*time.Second, "40 batches from each leaf", func() bool {
		for _, l := range leaves {
			if l.node.Agent.Delivery().NextSeq < 40 {
				return false
			}
		}
		return true
	})
	for _, l := range leaves {
		l.stop()
	}
	last := map[string]float64{}
	for _, l := range leaves {
		last[l.id] = lastSeq(t, r, l.id)
	}
	time.Sleep(4 * window) // the last windows' updates in flight
	cancel()
	resp.Body.Close()
	wg.Wait()

	for i, s := range subs {
		s.mu.Lock()
		switch {
		case strings.HasPrefix(s.topic, "metrics.nodes."):
			want := []string{"s1", "s2", "s3"}
			if s.topic == "metrics.nodes.s1" {
				want = want[:1]
			}
			if len(s.seqs) != len(want) {
				t.Errorf("subscriber %d (%s) heard from %d nodes, want %d", i, s.topic, len(s.seqs), len(want))
			}
			for _, n := range want {
				checkSeqs(t, fmt.Sprintf("subscriber %d (%s) node %s", i, s.topic, n), s.seqs[n], last[n])
			}
		case strings.HasPrefix(s.topic, "metrics.dc."):
			dcs := []string{"eu-1", "eu-2"}
			if s.topic == "metrics.dc.eu-2" {
				dcs = dcs[1:]
			}
			for _, dc := range dcs {
				checkWindows(t, fmt.Sprintf("subscriber %d (%s) dc %s", i, s.topic, dc), s.windows[dc])
			}
			if s.maxAll == 0 {
				t.Errorf("subscriber %d (%s): no dc NI with the updates", i, s.topic)
			}
		default:
			checkWindows(t, fmt.Sprintf("subscriber %d (tree.ni)", i), s.windows["tree"])
			if s.maxAll != 3 {
				t.Errorf("subscriber %d (tree.ni): NI all reached %d, want 3", i, s.maxAll)
			}
		}
		if s.dropped != 0 {
			t.Errorf("subscriber %d (%s) reading along lost %d updates", i, s.topic, s.dropped)
		}
		s.mu.Unlock()
	}
	checkWindows(t, "SSE subscriber dc eu-1", sse.windows["eu-1"])
	stalled := counterValue(t, r, "canopy_reader_stream_dropped_updates_total")
	if stalled == 0 {
		t.Error("the subscriber that never reads lost nothing: the test did not fill its buffer")
	}
	t.Logf("100 subscribers got every update in order; SSE got %d dc windows; the stalled one lost %g updates", len(sse.windows["eu-1"]), stalled)
}

func checkSeqs(t *testing.T, who string, got []float64, last float64) {
	t.Helper()
	if len(got) == 0 || got[0] != 1 || got[len(got)-1] != last {
		t.Errorf("%s: seqs from %v to %v, want 1 to %g", who, first(got), lastOf(got), last)
		return
	}
	for i := 1; i < len(got); i++ {
		if got[i] != got[i-1]+1 {
			t.Errorf("%s: seq %g after %g", who, got[i], got[i-1])
			return
		}
	}
}

func first(v []float64) any {
	if len(v) == 0 {
		return "none"
	}
	return v[0]
}

func lastOf(v []float64) any {
	if len(v) == 0 {
		return "none"
	}
	return v[len(v)-1]
}

func checkWindows(t *testing.T, who string, ts []int64) {
	t.Helper()
	if len(ts) < 5 {
		t.Errorf("%s: %d window updates", who, len(ts))
		return
	}
	for i := 1; i < len(ts); i++ {
		if ts[i] <= ts[i-1] {
			t.Errorf("%s: window %d after %d", who, ts[i], ts[i-1])
			return
		}
	}
}

// readSSE decodes "event: update" / "data: {json}" events.
func readSSE(body io.Reader, s *subscriber) {
	buf := make([]byte, 0, 1<<16)
	chunk := make([]byte, 32<<10)
	for {
		n, err := body.Read(chunk)
		buf = append(buf, chunk[:n]...)
		for {
			i := strings.Index(string(buf), "\n\n")
			if i < 0 {
				break
			}
			event := string(buf[:i])
			buf = buf[i+2:]
			for _, line := range strings.Split(event, "\n") {
				if data, ok := strings.CutPrefix(line, "data: "); ok {
					var u canopyv1.SubscribeResponse
					if protojson.Unmarshal([]byte(data), &u) == nil {
						s.record(&u)
					}
				}
			}
		}
		if err != nil {
			return
		}
	}
}

func counterValue(t *testing.T, r *rootRun, name string) float64 {
	t.Helper()
	mfs, err := r.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.Metric {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}
