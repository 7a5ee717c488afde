package supernode

import (
	"context"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/canopytree/canopy/batch"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// Supernode is a node's parent side plus the queue of its children's
// batches waiting to go up in the node's own heartbeat. It is the Sink of
// its Parent and the leaf agent's Forwarder.
type Supernode struct {
	*Parent

	mu      sync.Mutex
	queue   []*batch.Batch
	queued  map[batch.ID]struct{}
	limits  batch.Limits
	samples int
	bytes   int
	metrics *queueMetrics
}

// New returns a supernode whose forwarding queue holds at most limits;
// past them the oldest batches are dropped (their origins still hold them
// under at-least-once delivery and resend them).
func New(cfg Config, members Membership, limits batch.Limits, reg prometheus.Registerer, log *slog.Logger) *Supernode {
	s := &Supernode{queued: map[batch.ID]struct{}{}, limits: limits, metrics: newQueueMetrics(reg)}
	s.Parent = NewParent(cfg, members, s, reg, log)
	return s
}

// Accept queues a child's batches for the next upward heartbeat, skipping
// ones already queued or already persisted at the root.
func (s *Supernode) Accept(_ context.Context, _ string, batches []batch.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range batches {
		b := &batches[i]
		if _, dup := s.queued[b.ID]; dup || s.Parent.Acked(b.ID) {
			s.metrics.duplicates.Inc()
			continue
		}
		s.queued[b.ID] = struct{}{}
		s.queue = append(s.queue, b)
		s.samples += b.NumSamples()
		s.bytes += b.SizeBytes()
	}
	for len(s.queue) > 1 && s.over() {
		s.metrics.overflow.Inc()
		s.pop(1)
	}
	s.metrics.queued.Set(float64(len(s.queue)))
	return nil
}

func (s *Supernode) over() bool {
	return (s.limits.MaxSamples > 0 && s.samples > s.limits.MaxSamples) ||
		(s.limits.MaxBytes > 0 && s.bytes > s.limits.MaxBytes)
}

// must hold s.mu
func (s *Supernode) pop(n int) {
	for _, b := range s.queue[:n] {
		delete(s.queued, b.ID)
		s.samples -= b.NumSamples()
		s.bytes -= b.SizeBytes()
	}
	clear(s.queue[:n])
	s.queue = s.queue[n:]
}

// Pending implements leaf.Forwarder.
func (s *Supernode) Pending(maxBatches, maxSamples int) []*batch.Batch {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, samples := 0, 0
	for n < min(maxBatches, len(s.queue)) {
		k := s.queue[n].NumSamples()
		if n > 0 && samples+k > maxSamples {
			break
		}
		samples += k
		n++
	}
	return append([]*batch.Batch(nil), s.queue[:n]...)
}

// Queued implements leaf.Forwarder.
func (s *Supernode) Queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

// Forwarded implements leaf.Forwarder.
func (s *Supernode) Forwarded(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pop(min(n, len(s.queue)))
	s.metrics.forwarded.Add(float64(n))
	s.metrics.queued.Set(float64(len(s.queue)))
}

// Upstream implements leaf.Forwarder: the root's acknowledgements flow on
// down, and the path instance changes if anything above restarted.
func (s *Supernode) Upstream(resp *canopyv1.HeartbeatResponse) {
	s.Parent.Acknowledge(resp.Acks)
	s.Parent.SetUpstream(resp.PathInstance)
}

type queueMetrics struct {
	queued     prometheus.Gauge
	forwarded  prometheus.Counter
	duplicates prometheus.Counter
	overflow   prometheus.Counter
}

func newQueueMetrics(reg prometheus.Registerer) *queueMetrics {
	m := &queueMetrics{
		queued:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "canopy_supernode_queued_batches", Help: "Children's batches waiting for the next upward heartbeat."}),
		forwarded:  prometheus.NewCounter(prometheus.CounterOpts{Name: "canopy_supernode_forwarded_batches_total", Help: "Children's batches the parent accepted."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "canopy_supernode_duplicate_batches_total", Help: "Retransmitted batches dropped because they were queued or persisted already."}),
		overflow:   prometheus.NewCounter(prometheus.CounterOpts{Name: "canopy_supernode_overflow_batches_total", Help: "Batches dropped from a full queue (their origins resend them)."}),
	}
	if reg != nil {
		reg.MustRegister(m.queued, m.forwarded, m.duplicates, m.overflow)
	}
	return m
}
