package root

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/canopytree/canopy/batch"
	"github.com/canopytree/canopy/leaf"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
	"github.com/canopytree/canopy/reader"
)

var t0 = time.Unix(1_700_000_000, 0)

func openDB(tb testing.TB) *tsdb.DB {
	tb.Helper()
	opts := tsdb.DefaultOptions()
	opts.OutOfOrderTimeWindow = time.Hour.Milliseconds()
	db, err := tsdb.Open(tb.TempDir(), nil, nil, opts, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

type ackLog struct{ last map[string]uint64 }

func (a *ackLog) record(acks []*canopyv1.Ack) {
	for _, ack := range acks {
		a.last[ack.Origin] = ack.Seq
	}
}

func newIngester(tb testing.TB, db storage.Appendable) (*Ingester, *ackLog) {
	acks := &ackLog{last: map[string]uint64{}}
	in := NewIngester(IngestConfig{MaxAge: time.Hour, MaxFuture: time.Minute, Now: func() time.Time { return t0 }}, db, acks.record, prometheus.NewRegistry())
	return in, acks
}

func mkBatch(origin string, seq, low uint64, ts ...int64) batch.Batch {
	s := batch.Series{Labels: labels.FromStrings("__name__", "m", "node", origin)}
	for _, t := range ts {
		s.Samples = append(s.Samples, batch.Sample{T: t, V: float64(seq)})
	}
	return batch.Batch{ID: batch.ID{Origin: origin, Epoch: 1, Seq: seq}, LowSeq: low, Series: []batch.Series{s}}
}

func count(tb testing.TB, db *tsdb.DB) int {
	q, err := db.Querier(math.MinInt64, math.MaxInt64)
	if err != nil {
		tb.Fatal(err)
	}
	defer q.Close()
	set := q.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+"))
	n := 0
	var it chunkenc.Iterator
	for set.Next() {
		it = set.At().Iterator(it)
		for it.Next() != chunkenc.ValNone {
			n++
		}
	}
	return n
}

func TestIngestDedupAndCumulativeAck(t *testing.T) {
	db := openDB(t)
	in, acks := newIngester(t, db)
	ctx := context.Background()
	ms := t0.UnixMilli()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(in.Accept(ctx, "c", []batch.Batch{mkBatch("a", 1, 1, ms), mkBatch("a", 3, 1, ms+2000)}))
	if acks.last["a"] != 1 {
		t.Fatalf("ack %d, want 1 (seq 2 missing)", acks.last["a"])
	}
	// Seq 2 arrives late; seq 3 again as a retransmit.
	must(in.Accept(ctx, "c", []batch.Batch{mkBatch("a", 2, 1, ms+1000), mkBatch("a", 3, 1, ms+2000)}))
	if acks.last["a"] != 3 {
		t.Fatalf("ack %d, want 3", acks.last["a"])
	}
	if n := count(t, db); n != 3 {
		t.Fatalf("stored %d samples, want 3", n)
	}
	if d := testutil.ToFloat64(in.metrics.duplicates); d != 1 {
		t.Fatalf("duplicates %v, want 1", d)
	}
	// The origin dropped 4 and 5 on overflow: low_seq 6 moves the ack past.
	must(in.Accept(ctx, "c", []batch.Batch{mkBatch("a", 6, 6, ms+5000)}))
	if acks.last["a"] != 6 {
		t.Fatalf("ack %d, want 6 after the gap", acks.last["a"])
	}
}

func TestIngestDropsOutOfRangeSamplesOnly(t *testing.T) {
	db := openDB(t)
	in, acks := newIngester(t, db)
	ms := t0.UnixMilli()
	b := mkBatch("a", 1, 1, ms-2*time.Hour.Milliseconds(), ms, ms+time.Hour.Milliseconds())
	if err := in.Accept(context.Background(), "c", []batch.Batch{b}); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db); n != 1 {
		t.Fatalf("stored %d, want only the in-range sample", n)
	}
	for reason, want := range map[string]float64{DropTooOld: 1, DropTooNew: 1} {
		if got := testutil.ToFloat64(in.metrics.dropped.WithLabelValues(reason)); got != want {
			t.Errorf("dropped{%s} = %v, want %v", reason, got, want)
		}
	}
	if acks.last["a"] != 1 {
		t.Fatal("a batch with bad samples must still be acknowledged: its good samples are stored")
	}
}

type failingAppendable struct{}

func (failingAppendable) Appender(context.Context) storage.Appender { return failingAppender{} }

type failingAppender struct{ storage.Appender }

func (failingAppender) Append(storage.SeriesRef, labels.Labels, int64, float64) (storage.SeriesRef, error) {
	return 0, errors.New("disk full")
}
func (failingAppender) Rollback() error { return nil }

func TestIngestFailureIsNotAcknowledged(t *testing.T) {
	in, acks := newIngester(t, failingAppendable{})
	err := in.Accept(context.Background(), "c", []batch.Batch{mkBatch("a", 1, 1, t0.UnixMilli())})
	if err == nil {
		t.Fatal("storage failure swallowed")
	}
	if _, ok := acks.last["a"]; ok {
		t.Fatal("acknowledged a batch that was not stored")
	}
	// Not marked done either: the retransmit is attempted again.
	if fresh := in.reserve([]batch.Batch{mkBatch("a", 1, 1, t0.UnixMilli())}); len(fresh) != 1 {
		t.Fatal("failed batch treated as duplicate")
	}
}

// BenchmarkIngest measures the root appending node_exporter-sized windows
// (≈510 series × 3 samples, a real scrape recorded in testdata) from 8
// origins into the TSDB, each window 5 s after the previous one; then the
// same with the stream's hub behind the commit: one subscriber following
// one node, 100 subscribers of metrics.nodes.* reading as fast as they
// can, and those plus one that never reads (its buffer fills and its
// updates are dropped: ingest must not slow down).
func BenchmarkIngest(b *testing.B) {
	body, err := os.ReadFile("../batch/testdata/node_exporter.txt")
	if err != nil {
		b.Fatal(err)
	}
	const origins = 8
	windows := make([]batch.Batch, origins)
	for o := range windows {
		id := leaf.Identity{Node: fmt.Sprintf("edge-%04d", o), DC: "eu-1"}
		bld := batch.NewBuilder()
		for j := range int64(3) {
			samples, _, err := leaf.Parse(body, "text/plain; version=0.0.4", leaf.Target{Name: "node_exporter", Level: leaf.LevelMachine}, id, j*2000)
			if err != nil {
				b.Fatal(err)
			}
			for _, smp := range samples {
				bld.Add(smp.Labels, smp.Type, smp.T, smp.V+float64(j))
			}
		}
		windows[o] = batch.Batch{ID: batch.ID{Origin: id.Node, Epoch: 1}, Series: bld.Take()}
	}
	for _, tc := range []struct {
		name    string
		topic   string
		readers int
		stalled bool
	}{
		{"subscribers=0", "", 0, false},
		{"subscribers=1-node", "metrics.nodes.edge-0001", 1, false},
		{"subscribers=100-all-nodes", "metrics.nodes.*", 100, false},
		{"subscribers=100-all-nodes+stalled", "metrics.nodes.*", 100, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			hub := reader.NewHub(1024, 100_000, nil)
			done := make(chan struct{})
			var readers sync.WaitGroup
			defer readers.Wait()
			defer close(done)
			for range tc.readers {
				sub, err := hub.Subscribe(tc.topic)
				if err != nil {
					b.Fatal(err)
				}
				readers.Go(func() {
					for {
						select {
						case <-sub.Updates():
						case <-done:
							return
						}
					}
				})
			}
			if tc.stalled {
				if _, err := hub.Subscribe(tc.topic); err != nil {
					b.Fatal(err)
				}
			}
			store := tee{db: openDB(b), publish: hub.Publisher(), active: hub.Active}
			in := NewIngester(IngestConfig{Now: time.Now}, store, func([]*canopyv1.Ack) {}, nil)
			start := time.Now().UnixMilli()
			samples := windows[0].NumSamples()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				w := &windows[i%origins]
				round := int64(i / origins)
				w.Seq, w.LowSeq = uint64(round)+1, 1
				for si := range w.Series {
					for j := range w.Series[si].Samples {
						w.Series[si].Samples[j].T = start + round*5000 + int64(j)*2000
					}
				}
				if err := in.Accept(context.Background(), "c", []batch.Batch{*w}); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(samples)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
		})
	}
}
