package e2e

import (
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"

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
	// newest first-arrival timestamp per series, and how often a sample
	// never seen before arrived older than it (order broken).
	newest     map[string]int64
	outOfOrder int
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{series: map[string]map[int64]uint64{}, newest: map[string]int64{}}
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
			if _, seen := r.series[k][s.Timestamp]; !seen {
				if n, ok := r.newest[k]; ok && s.Timestamp < n {
					r.outOfOrder++
				}
				r.newest[k] = max(r.newest[k], s.Timestamp)
			}
			r.series[k][s.Timestamp] = math.Float64bits(s.Value)
			r.samples++
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// lacks counts the samples the leaves sealed that the receiver does not
// hold with the same value.
func (r *receiver) lacks(leaves []*leafRun) (missing, total int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range leaves {
		l.mu.Lock()
		for _, series := range l.sealed {
			for _, s := range series {
				got := r.series[s.Labels.String()]
				for _, smp := range s.Samples {
					total++
					if bits, ok := got[smp.T]; !ok || bits != math.Float64bits(smp.V) {
						missing++
					}
				}
			}
		}
		l.mu.Unlock()
	}
	return missing, total
}

// backUp brings the sink back, stops the leaves (they drain) and waits
// until every sample they sealed is there, checking each series arrived in
// order. It returns how many samples the leaves sealed.
func (r *receiver) backUp(t *testing.T, leaves []*leafRun) int {
	t.Helper()
	r.setFailing(false)
	for _, l := range leaves {
		l.stop()
	}
	var missing, total int
	eventually(t, 60*time.Second, "every sealed sample at the sink", func() bool {
		missing, total = r.lacks(leaves)
		return missing == 0
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.outOfOrder > 0 {
		t.Errorf("%d samples arrived older than a newer sample of their series", r.outOfOrder)
	}
	return total
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
	r.mu.Lock()
	defer r.mu.Unlock()
	eachSample(t, rr, math.MaxInt64, everything, func(ls labels.Labels, ts int64, v float64) {
		total++
		if bits, ok := r.series[withLabels(ls, external).String()][ts]; !ok || bits != math.Float64bits(v) {
			missing++
		}
	})
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
	eventually(t, 20*time.Second, "a few windows stored", func() bool {
		return len(stored(t, r, "w1")) > 0 && len(series(t, r, "dc:node_memory_MemTotal_bytes:sum")) >= 3
	})
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

// TestRemoteWriteThroughRootKill: a root process writing to a sink that is
// down is killed with SIGKILL mid-backlog and restarted; when the sink
// comes back, every sample the leaves sealed is there, and nothing was
// dropped.
func TestRemoteWriteThroughRootKill(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the root as a process")
	}
	sink := newReceiver(t)
	sink.setFailing(true)
	grpcAddr, httpAddr := freeAddr(t), freeAddr(t)
	cfg := filepath.Join(t.TempDir(), "root.yaml")
	os.WriteFile(cfg, fmt.Appendf(nil, `root:
  grpc_listen: %s
  http_listen: %s
  window: %s
storage:
  data_dir: %s
remote_write:
  endpoints:
    - name: sink
      url: %s/api/v1/write
      timeout: 2s
      queue: {batch_send_deadline: 100ms, min_backoff: 10ms, max_backoff: 200ms}
log:
  level: warn
`, grpcAddr, httpAddr, window, t.TempDir(), sink.URL), 0o644)
	startRootProcess := func() *exec.Cmd {
		cmd := exec.Command(rootBinary, "--config", cfg)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		eventually(t, 10*time.Second, "root listening", func() bool {
			c, err := net.Dial("tcp", grpcAddr)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
		return cmd
	}
	rootProc := startRootProcess()
	leaves := []*leafRun{startLeaf(t, "k1", "eu-1", grpcAddr), startLeaf(t, "k2", "eu-2", grpcAddr)}
	acked := func(n uint64) func() bool {
		return func() bool {
			for _, l := range leaves {
				if l.node.Agent.Delivery().LowSeq < n {
					return false
				}
			}
			return true
		}
	}
	eventually(t, 20*time.Second, "the root acknowledged batches (in its logs, not at the sink)", acked(8))
	rootProc.Process.Kill() // SIGKILL: no shutdown, no flush
	rootProc.Wait()
	before := leaves[0].node.Agent.Delivery().LowSeq
	time.Sleep(4 * window) // the leaves keep sealing and buffering
	startRootProcess()
	eventually(t, 30*time.Second, "the restarted root acknowledging again", acked(before+8))
	total := sink.backUp(t, leaves)
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "canopy_remote_dropped_samples_total{") && !strings.HasSuffix(line, " 0") {
			t.Errorf("dropped: %s", line)
		}
	}
	t.Logf("all %d samples the leaves sealed reached the sink through a SIGKILL of the root (%d sent to the sink in all)", total, sink.samples)
}

// TestRemoteWriteSinkDownTwoMinutes: the sink is down for two minutes
// while the tree keeps sending; the root keeps acknowledging the leaves
// (its log holds everything), and when the sink is back every sample the
// leaves sealed arrives, each series in order, nothing dropped.
func TestRemoteWriteSinkDownTwoMinutes(t *testing.T) {
	if testing.Short() {
		t.Skip("takes two minutes")
	}
	sink := newReceiver(t)
	sink.setFailing(true)
	q := remote.DefaultQueueConfig()
	q.BatchSendDeadline = 100 * time.Millisecond
	q.Retry.MinBackoff, q.Retry.MaxBackoff = 50*time.Millisecond, 2*time.Second
	r := startRootWith(t, listen(t), func(o *root.Options) {
		o.Remote = []remote.Endpoint{{Name: "sink", Client: remote.ClientConfig{URL: sink.URL, Timeout: time.Second}, Queue: q}}
	})
	leaves := []*leafRun{startLeaf(t, "d1", "eu-1", r.grpcAddr), startLeaf(t, "d2", "eu-2", r.grpcAddr)}
	outage := time.Now()
	for time.Since(outage) < 2*time.Minute {
		time.Sleep(time.Second)
		for _, l := range leaves {
			if d := l.node.Agent.Delivery(); d.Buffered > 16 {
				t.Fatalf("%s holds %d unacknowledged batches: the root stopped acknowledging while the sink was down", l.id, d.Buffered)
			}
		}
	}
	total := sink.backUp(t, leaves)
	if n := counterValue(t, r, "canopy_remote_dropped_samples_total"); n > 0 {
		t.Errorf("%g samples dropped", n)
	}
	t.Logf("sink down 2 min: all %d samples the leaves sealed arrived afterwards, in order, none dropped", total)
}
