package e2e

import (
	"context"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
	"github.com/canopytree/canopy/root"
	"github.com/canopytree/canopy/root/remote"
)

// receiver is a remote-write sink that keeps everything: series → ts →
// value bits (so staleness markers compare exactly). With failing set it
// answers 503.
type receiver struct {
	*httptest.Server
	mu      sync.Mutex
	failing bool
	series  map[string]map[int64]uint64
	samples int
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{series: map[string]map[int64]uint64{}}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	failing := r.failing
	r.mu.Unlock()
	if failing {
		http.Error(w, "down for the test", http.StatusServiceUnavailable)
		return
	}
	body, _ := io.ReadAll(req.Body)
	raw, err := snappy.Decode(nil, body)
	var wr prompb.WriteRequest
	if err == nil {
		err = wr.Unmarshal(raw)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ts := range wr.Timeseries {
		b := labels.NewScratchBuilder(len(ts.Labels))
		for _, l := range ts.Labels {
			b.Add(l.Name, l.Value)
		}
		k := b.Labels().String()
		if r.series[k] == nil {
			r.series[k] = map[int64]uint64{}
		}
		for _, s := range ts.Samples {
			r.series[k][s.Timestamp] = math.Float64bits(s.Value)
			r.samples++
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) setFailing(f bool) {
	r.mu.Lock()
	r.failing = f
	r.mu.Unlock()
}

// missing compares the root's TSDB with what the receiver holds: samples
// stored but not received.
func (r *receiver) missing(t *testing.T, rr *rootRun, external labels.Labels) (missing, total int) {
	t.Helper()
	q, err := rr.DB.Querier(math.MinInt64, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	set := q.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchRegexp, labels.MetricName, ".+"))
	r.mu.Lock()
	defer r.mu.Unlock()
	var it chunkenc.Iterator
	for set.Next() {
		b := labels.NewBuilder(set.At().Labels())
		external.Range(func(l labels.Label) { b.Set(l.Name, l.Value) })
		got := r.series[b.Labels().String()]
		it = set.At().Iterator(it)
		for it.Next() == chunkenc.ValFloat {
			ts, v := it.At()
			total++
			if bits, ok := got[ts]; !ok || bits != math.Float64bits(v) {
				missing++
			}
		}
	}
	return missing, total
}

// TestRemoteWriteEverySample: with a remote-write endpoint whose sink is
// down for a while, every sample the root stored — node series, dc
// aggregates, NI series, staleness markers — reaches the sink once it is
// back, with the external label.
func TestRemoteWriteEverySample(t *testing.T) {
	sink := newReceiver(t)
	sink.setFailing(true)
	external := labels.FromStrings("canopy_root", "a")
	q := remote.DefaultQueueConfig()
	q.BatchSendDeadline, q.ShardUpdateEvery = 100*time.Millisecond, time.Second
	q.Retry.MinBackoff, q.Retry.MaxBackoff = 10*time.Millisecond, 200*time.Millisecond
	r := startRootWith(t, listen(t), func(o *root.Options) {
		o.Control = &canopyv1.Control{AggregationRules: []*canopyv1.AggregationRule{{
			Matchers:  []*canopyv1.LabelMatcher{{Name: "__name__", Type: canopyv1.MatchType_MATCH_TYPE_EQUAL, Value: "node_memory_MemTotal_bytes"}},
			Functions: []canopyv1.AggregateFunction{canopyv1.AggregateFunction_AGGREGATE_FUNCTION_SUM},
		}}}
		o.Remote = []remote.Endpoint{{Name: "sink", Client: remote.ClientConfig{URL: sink.URL, Timeout: time.Second}, Queue: q, ExternalLabels: external}}
	})
	a := startLeaf(t, "w1", "eu-1", r.grpcAddr)
	b := startLeaf(t, "w2", "eu-1", r.grpcAddr)
	eventually(t, 20*time.Second, "a few windows stored", func() bool { return len(stored(t, r, "w1")) > 0 && len(series(t, r, "dc:node_memory_MemTotal_bytes:sum")) >= 3 })
	sink.setFailing(false)
	a.stop()
	b.stop()
	var missing, total int
	eventually(t, 30*time.Second, "every stored sample at the sink", func() bool {
		missing, total = sink.missing(t, r, external)
		return missing == 0 && total > 0
	})
	t.Logf("%d samples stored, all at the sink (%d series)", total, len(sink.series))
}
