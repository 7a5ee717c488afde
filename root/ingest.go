package root

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/storage"

	"github.com/canopytree/canopy/batch"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// Why a sample was not stored, as the reason label of
// canopy_root_dropped_samples_total.
const (
	DropTooOld      = "too_old"
	DropTooNew      = "too_far_in_future"
	DropOutOfOrder  = "out_of_order"
	DropOutOfBounds = "out_of_bounds"
	DropConflict    = "duplicate_timestamp"
)

// IngestConfig bounds what the root accepts.
type IngestConfig struct {
	// Samples older than MaxAge or newer than MaxFuture (relative to now)
	// are dropped and counted.
	MaxAge    time.Duration
	MaxFuture time.Duration
	Now       func() time.Time
}

// Ingester persists children's batches exactly once per (origin, epoch,
// seq) and produces cumulative acknowledgements. It is safe for concurrent
// use and is the Sink of the root's Parent.
type Ingester struct {
	cfg     IngestConfig
	db      storage.Appendable
	onAck   func([]*canopyv1.Ack)
	metrics *ingestMetrics

	mu     sync.Mutex
	ledger map[ledgerKey]*ledger
}

type ledgerKey struct {
	origin string
	epoch  uint64
}

// ledger tracks one origin incarnation: acked is the cumulative mark;
// done holds persisted seqs above it, inflight those being appended now.
type ledger struct {
	acked    uint64
	done     map[uint64]struct{}
	inflight map[uint64]struct{}
	touched  time.Time
}

// NewIngester appends to db and reports acknowledgements to onAck.
func NewIngester(cfg IngestConfig, db storage.Appendable, onAck func([]*canopyv1.Ack), reg prometheus.Registerer) *Ingester {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Ingester{cfg: cfg, db: db, onAck: onAck, metrics: newIngestMetrics(reg), ledger: map[ledgerKey]*ledger{}}
}

// Accept persists the batches not yet persisted and acknowledges them.
func (in *Ingester) Accept(ctx context.Context, _ string, batches []batch.Batch) error {
	fresh := in.reserve(batches)
	err := in.append(ctx, fresh)
	acks := in.settle(batches, fresh, err == nil)
	if len(acks) > 0 {
		in.onAck(acks)
	}
	return err
}

func (in *Ingester) get(k ledgerKey) *ledger {
	l, ok := in.ledger[k]
	if !ok {
		l = &ledger{done: map[uint64]struct{}{}, inflight: map[uint64]struct{}{}}
		in.ledger[k] = l
	}
	l.touched = in.cfg.Now()
	return l
}

func (in *Ingester) reserve(batches []batch.Batch) []*batch.Batch {
	in.mu.Lock()
	defer in.mu.Unlock()
	var fresh []*batch.Batch
	for i := range batches {
		b := &batches[i]
		l := in.get(ledgerKey{b.Origin, b.Epoch})
		_, done := l.done[b.Seq]
		_, busy := l.inflight[b.Seq]
		if b.Seq <= l.acked || done || busy {
			in.metrics.duplicates.Inc()
			continue
		}
		l.inflight[b.Seq] = struct{}{}
		fresh = append(fresh, b)
	}
	return fresh
}

// settle records the outcome and advances the cumulative marks of every
// origin the heartbeat touched. LowSeq lets the mark pass batches the
// origin dropped on overflow and will never send.
func (in *Ingester) settle(all []batch.Batch, fresh []*batch.Batch, ok bool) []*canopyv1.Ack {
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, b := range fresh {
		l := in.ledger[ledgerKey{b.Origin, b.Epoch}]
		delete(l.inflight, b.Seq)
		if ok {
			l.done[b.Seq] = struct{}{}
			in.metrics.batches.Inc()
		}
	}
	var acks []*canopyv1.Ack
	seen := map[ledgerKey]bool{}
	for i := range all {
		b := &all[i]
		k := ledgerKey{b.Origin, b.Epoch}
		if seen[k] {
			continue
		}
		seen[k] = true
		l := in.ledger[k]
		if b.LowSeq > 0 && b.LowSeq-1 > l.acked {
			for s := range l.done {
				if s < b.LowSeq {
					delete(l.done, s)
				}
			}
			l.acked = b.LowSeq - 1
		}
		for {
			if _, ok := l.done[l.acked+1]; !ok {
				break
			}
			delete(l.done, l.acked+1)
			l.acked++
		}
		if l.acked > 0 {
			acks = append(acks, &canopyv1.Ack{Origin: b.Origin, Epoch: b.Epoch, Seq: l.acked})
		}
	}
	return acks
}

func (in *Ingester) append(ctx context.Context, batches []*batch.Batch) error {
	if len(batches) == 0 {
		return nil
	}
	start := time.Now()
	now := in.cfg.Now()
	minT, maxT := now.Add(-in.cfg.MaxAge).UnixMilli(), now.Add(in.cfg.MaxFuture).UnixMilli()
	app := in.db.Appender(ctx)
	appended := 0
	var instants []int64 // scrape instants of the batches, for the delay
	for _, b := range batches {
		batchInstants := len(instants)
		for i := range b.Series {
			s := &b.Series[i]
			var ref storage.SeriesRef
			for _, smp := range s.Samples {
				if !slices.Contains(instants[batchInstants:], smp.T) {
					instants = append(instants, smp.T)
				}
				if in.cfg.MaxAge > 0 && smp.T < minT {
					in.metrics.dropped.WithLabelValues(DropTooOld).Inc()
					continue
				}
				if in.cfg.MaxFuture > 0 && smp.T > maxT {
					in.metrics.dropped.WithLabelValues(DropTooNew).Inc()
					continue
				}
				r, err := app.Append(ref, s.Labels, smp.T, smp.V)
				if reason := dropReason(err); reason != "" {
					in.metrics.dropped.WithLabelValues(reason).Inc()
					continue
				}
				if err != nil {
					_ = app.Rollback()
					return fmt.Errorf("append %s: %w", s.Labels, err)
				}
				ref = r
				appended++
			}
		}
	}
	if err := app.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	in.metrics.samples.Add(float64(appended))
	committed := time.Now()
	in.metrics.appendSeconds.Observe(committed.Sub(start).Seconds())
	for _, t := range instants {
		in.metrics.delay.Observe(committed.Sub(time.UnixMilli(t)).Seconds())
	}
	return nil
}

// dropReason classifies the per-sample errors that reject one sample but
// must not fail the batch.
func dropReason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, storage.ErrOutOfOrderSample):
		return DropOutOfOrder
	case errors.Is(err, storage.ErrTooOldSample):
		return DropTooOld
	case errors.Is(err, storage.ErrOutOfBounds):
		return DropOutOfBounds
	case errors.Is(err, storage.ErrDuplicateSampleForTimestamp):
		return DropConflict
	}
	return ""
}

// OriginState is the ledger of one origin incarnation.
type OriginState struct {
	Origin string
	Epoch  uint64
	Acked  uint64 // every seq ≤ Acked is persisted (or was dropped at the origin)
	Above  int    // persisted seqs above Acked, waiting for a gap to fill
}

// Ledger returns the state of every origin incarnation, for audits.
func (in *Ingester) Ledger() []OriginState {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := make([]OriginState, 0, len(in.ledger))
	for k, l := range in.ledger {
		out = append(out, OriginState{Origin: k.origin, Epoch: k.epoch, Acked: l.acked, Above: len(l.done)})
	}
	return out
}

// Forget drops ledgers untouched for longer than idle: their origins are
// gone or restarted into a new epoch.
func (in *Ingester) Forget(idle time.Duration) {
	now := in.cfg.Now()
	in.mu.Lock()
	defer in.mu.Unlock()
	for k, l := range in.ledger {
		if now.Sub(l.touched) > idle && len(l.inflight) == 0 {
			delete(in.ledger, k)
		}
	}
}

type ingestMetrics struct {
	batches       prometheus.Counter
	duplicates    prometheus.Counter
	samples       prometheus.Counter
	dropped       *prometheus.CounterVec
	appendSeconds prometheus.Histogram
	delay         prometheus.Histogram
}

func newIngestMetrics(reg prometheus.Registerer) *ingestMetrics {
	m := &ingestMetrics{
		batches:    prometheus.NewCounter(prometheus.CounterOpts{Name: "canopy_root_batches_persisted_total", Help: "Batches persisted (each (origin, epoch, seq) once)."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "canopy_root_duplicate_batches_total", Help: "Retransmitted batches recognised and skipped."}),
		samples:    prometheus.NewCounter(prometheus.CounterOpts{Name: "canopy_root_samples_appended_total", Help: "Samples appended to storage."}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "canopy_root_dropped_samples_total",
			Help: "Samples not stored, by reason: too_old, too_far_in_future, out_of_order, out_of_bounds, duplicate_timestamp.",
		}, []string{"reason"}),
		appendSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "canopy_root_append_seconds", Help: "Time to append and commit one heartbeat.", Buckets: prometheus.ExponentialBuckets(0.0005, 4, 8)}),
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "canopy_root_sample_delay_seconds",
			Help:    "Age of samples when the root committed them (scrape to storage: the tree's freshness), observed once per scrape instant of each batch.",
			Buckets: prometheus.ExponentialBucketsRange(0.05, 600, 96),
		}),
	}
	for _, r := range []string{DropTooOld, DropTooNew, DropOutOfOrder, DropOutOfBounds, DropConflict} {
		m.dropped.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.batches, m.duplicates, m.samples, m.dropped, m.appendSeconds, m.delay)
	}
	return m
}
