package remote

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// fill appends records × series samples: record r carries one sample of
// every series at timestamp r.
func fill(t *testing.T, l *Log, from, records, series int) {
	t.Helper()
	for r := from; r < from+records; r++ {
		var s []Sample
		for i := range series {
			s = append(s, Sample{Labels: labels.FromStrings("__name__", "m", "s", fmt.Sprint(i)), T: int64(r), V: float64(r)})
		}
		if err := l.Append(s); err != nil {
			t.Fatal(err)
		}
	}
}

func testQueue(t *testing.T, l *Log, url string, shards int) (*Queue, *Metrics) {
	t.Helper()
	c, err := l.Cursor("sink")
	if err != nil {
		t.Fatal(err)
	}
	m := NewMetrics(prometheus.NewRegistry())
	q, err := NewQueue(Endpoint{
		Name: "sink", Client: ClientConfig{URL: url, Timeout: time.Second},
		Queue: QueueConfig{
			MinShards: shards, MaxShards: shards, MaxSamplesPerSend: 50, BatchSendDeadline: 5 * time.Millisecond,
			ShardUpdateEvery: 50 * time.Millisecond,
			Retry:            RetryConfig{MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond},
		},
	}, c, m, quiet)
	if err != nil {
		t.Fatal(err)
	}
	return q, m
}

// received flattens what the sink accepted: per series, its timestamps in
// arrival order.
func received(f *fakeSink) map[string][]int64 {
	_, _, accepted := f.seen()
	out := map[string][]int64{}
	for _, req := range accepted {
		for _, ts := range req.Timeseries {
			k := labelString(ts.Labels)
			for _, s := range ts.Samples {
				out[k] = append(out[k], s.Timestamp)
			}
		}
	}
	return out
}

// run runs q until cond holds (polling what a real sink received is the
// one wait end-to-end style tests need) or fails after a deadline.
func run(t *testing.T, q *Queue, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := q.Run(ctx); err != nil {
			t.Error(err)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for !cond() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if !cond() {
		t.Fatal("timed out")
	}
}

// Through 5xx, 429 with Retry-After, resets and a slow answer, with four
// shards: every sample arrives once, each series in order, and the
// cursor ends past everything.
func TestQueueDeliversInOrderThroughFaults(t *testing.T) {
	sink := newFakeSink(t, answer{status: 500}, answer{reset: true}, answer{status: 429, retryAfter: "0"},
		answer{status: 503}, answer{delay: 50 * time.Millisecond, status: 204}, answer{status: 502})
	l, _ := OpenLog(t.TempDir(), LogConfig{SegmentBytes: 4096})
	defer l.Close()
	fill(t, l, 1, 60, 40)
	q, m := testQueue(t, l, sink.URL, 4)
	run(t, q, func() bool { return testutil.ToFloat64(m.sent.WithLabelValues("sink")) == 60*40 })
	got := received(sink)
	if len(got) != 40 {
		t.Fatalf("%d series arrived, want 40", len(got))
	}
	for k, ts := range got {
		if len(ts) != 60 {
			t.Errorf("%s: %d samples, want 60", k, len(ts))
		}
		for i := 1; i < len(ts); i++ {
			if ts[i] != ts[i-1]+1 {
				t.Errorf("%s: %d after %d", k, ts[i], ts[i-1])
				break
			}
		}
	}
	if b, _ := q.cursor.Backlog(); b != 0 {
		t.Errorf("cursor %d bytes behind after everything was sent", b)
	}
	if testutil.ToFloat64(m.retried.WithLabelValues("sink")) == 0 {
		t.Error("no retry counted")
	}
}

// A request the sink refuses for good is dropped and counted by status;
// the rest goes through and the cursor moves past it.
func TestQueueRefusedIsCounted(t *testing.T) {
	sink := newFakeSink(t, answer{status: 400})
	l, _ := OpenLog(t.TempDir(), LogConfig{})
	defer l.Close()
	fill(t, l, 1, 10, 10) // 100 samples: the first request (50) is refused
	q, m := testQueue(t, l, sink.URL, 1)
	run(t, q, func() bool {
		return testutil.ToFloat64(m.sent.WithLabelValues("sink"))+testutil.ToFloat64(m.dropped.WithLabelValues("sink", "400")) == 100
	})
	if got := testutil.ToFloat64(m.dropped.WithLabelValues("sink", "400")); got != 50 {
		t.Fatalf("dropped{400} = %g, want 50", got)
	}
	if requests, _, _ := sink.seen(); requests != 2 {
		t.Fatalf("%d requests: a refused request was retried", requests)
	}
}

// Stopped mid-backlog (the root going away), a new queue over the
// reopened log sends what was not committed: nothing is lost.
func TestQueueResumesAfterRestart(t *testing.T) {
	sink := newFakeSink(t)
	dir := t.TempDir()
	l, _ := OpenLog(dir, LogConfig{SegmentBytes: 2048})
	fill(t, l, 1, 100, 20)
	q, m := testQueue(t, l, sink.URL, 2)
	run(t, q, func() bool { return testutil.ToFloat64(m.sent.WithLabelValues("sink")) >= 500 })
	l.Close()
	l, _ = OpenLog(dir, LogConfig{SegmentBytes: 2048})
	defer l.Close()
	q, _ = testQueue(t, l, sink.URL, 2)
	run(t, q, func() bool {
		got := received(sink)
		for i := range 20 {
			ts := got[fmt.Sprintf("__name__=m,s=%d", i)]
			if len(ts) == 0 || ts[len(ts)-1] != 100 {
				return false
			}
		}
		return true
	})
	for k, ts := range received(sink) {
		seen := map[int64]bool{}
		for _, x := range ts {
			seen[x] = true
		}
		if len(seen) != 100 {
			t.Errorf("%s: %d distinct samples of 100", k, len(seen))
		}
	}
}

// A sink down while the log passes its bound: the samples lost are
// counted exactly (delivered + dropped for overflow = appended), and
// sending resumes when the sink is back.
func TestQueueOverflowCountedExactly(t *testing.T) {
	var mu sync.Mutex
	down := true
	sink := newFakeSink(t)
	sink.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		d := down
		mu.Unlock()
		if d {
			http.Error(w, "down", 503)
			return
		}
		sink.serve(w, r)
	})
	l, _ := OpenLog(t.TempDir(), LogConfig{SegmentBytes: 1024, MaxBytes: 4096})
	defer l.Close()
	q, m := testQueue(t, l, sink.URL, 1)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := q.Run(ctx); err != nil {
			t.Error(err)
		}
	})
	fill(t, l, 1, 200, 10)
	mu.Lock()
	down = false
	mu.Unlock()
	deadline := time.Now().Add(20 * time.Second)
	total := func() float64 {
		return testutil.ToFloat64(m.sent.WithLabelValues("sink")) + float64(q.cursor.Dropped())
	}
	for total() < 2000 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if total() != 2000 || q.cursor.Dropped() == 0 {
		t.Fatalf("sent %g + dropped %d != 2000 appended", testutil.ToFloat64(m.sent.WithLabelValues("sink")), q.cursor.Dropped())
	}
}

func TestDesiredShards(t *testing.T) {
	// 10 ms per sample, 1,000 samples/s coming in, no backlog: 10 shards.
	if got := desiredShards(0.01, 1000, 0, 10); got != 10 {
		t.Fatalf("got %g", got)
	}
	// A backlog of 100,000 samples adds a tenth of it per 10 s interval.
	if got := desiredShards(0.01, 1000, 100_000, 10); got != 20 {
		t.Fatalf("got %g", got)
	}
}

// Under a backlog and a sink that takes its time, the queue adds shards,
// as Prometheus's queue manager does, and every series stays in order.
func TestQueueReshardsUnderBacklog(t *testing.T) {
	sink := newFakeSink(t)
	slow := sink.Config.Handler
	sink.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond)
		slow.ServeHTTP(w, r)
	})
	l, _ := OpenLog(t.TempDir(), LogConfig{})
	defer l.Close()
	fill(t, l, 1, 300, 50) // 15,000 samples: 300 requests of 50 on one shard
	c, _ := l.Cursor("sink")
	m := NewMetrics(prometheus.NewRegistry())
	q, err := NewQueue(Endpoint{
		Name: "sink", Client: ClientConfig{URL: sink.URL, Timeout: time.Second},
		Queue: QueueConfig{
			MinShards: 1, MaxShards: 8, MaxSamplesPerSend: 50, BatchSendDeadline: 5 * time.Millisecond,
			ShardUpdateEvery: 200 * time.Millisecond, Retry: RetryConfig{MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond},
		},
	}, c, m, quiet)
	if err != nil {
		t.Fatal(err)
	}
	most := 0.0
	run(t, q, func() bool {
		most = max(most, testutil.ToFloat64(m.queue.shards.WithLabelValues("sink")))
		return testutil.ToFloat64(m.sent.WithLabelValues("sink")) == 15000
	})
	if most < 2 {
		t.Fatalf("stayed at %g shard(s) with a backlog of 300 slow requests", most)
	}
	for k, ts := range received(sink) {
		for i := 1; i < len(ts); i++ {
			if ts[i] <= ts[i-1] {
				t.Fatalf("%s: %d after %d across resharding", k, ts[i], ts[i-1])
			}
		}
	}
	t.Logf("up to %g shards", most)
}
