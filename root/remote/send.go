package remote

import (
	"context"
	"errors"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/prometheus/client_golang/prometheus"
)

// Why samples were not delivered, as the reason label of
// canopy_remote_dropped_samples_total: an HTTP status the sink refused
// them with for good (for example "400"), "relabel" (write relabelling
// dropped the series), "encode" (a request that could not be built),
// "overflow" (the durable queue's bound was passed).
const (
	DropRelabel  = "relabel"
	DropEncode   = "encode"
	DropOverflow = "overflow"
)

// Metrics are the per-endpoint series on the root's /metrics.
type Metrics struct {
	sent, failed, retried *prometheus.CounterVec
	sentBytes             *prometheus.CounterVec
	dropped               *prometheus.CounterVec
	latency               *prometheus.GaugeVec
	requests              *prometheus.HistogramVec
	queue                 *queueGauges
}

// NewMetrics registers the remote-write metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	ep := []string{"endpoint"}
	m := &Metrics{
		sent:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "canopy_remote_sent_samples_total", Help: "Samples the sink accepted."}, ep),
		sentBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "canopy_remote_sent_bytes_total", Help: "Bytes of accepted requests (compressed, as on the wire)."}, ep),
		failed:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "canopy_remote_failed_samples_total", Help: "Samples in sends that failed (each failed attempt counts)."}, ep),
		retried:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "canopy_remote_retried_samples_total", Help: "Samples sent again after a recoverable failure."}, ep),
		dropped:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "canopy_remote_dropped_samples_total", Help: "Samples never delivered, by reason: the HTTP status the sink refused them with, relabel, encode, overflow."}, []string{"endpoint", "reason"}),
		latency:   prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "canopy_remote_last_send_seconds", Help: "Duration of the last send attempt."}, ep),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "canopy_remote_send_seconds", Help: "Duration of send attempts.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}, ep),
	}
	if reg != nil {
		reg.MustRegister(m.sent, m.sentBytes, m.failed, m.retried, m.dropped, m.latency, m.requests)
	}
	m.queue = newQueueGauges(reg)
	return m
}

// RetryConfig bounds retries of recoverable failures.
type RetryConfig struct {
	MinBackoff, MaxBackoff time.Duration
	// Sleep waits d or until ctx ends (injected in tests).
	Sleep func(ctx context.Context, d time.Duration) error
	Now   func() time.Time
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// sender delivers encoded requests to one endpoint.
type sender struct {
	endpoint string
	client   *Client
	retry    RetryConfig
	metrics  *Metrics
}

func newSender(endpoint string, c *Client, r RetryConfig, m *Metrics) *sender {
	if r.Sleep == nil {
		r.Sleep = sleep
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	return &sender{endpoint: endpoint, client: c, retry: r, metrics: m}
}

// ErrDropped is returned when the sink refused a request for good; its
// samples are counted as dropped.
var ErrDropped = errors.New("refused by the sink")

// deliver sends body, which holds n samples, until the sink accepts it
// (nil), refuses it for good (ErrDropped, counted), or ctx ends (ctx's
// error: the samples are still owed). Recoverable failures are retried
// with capped exponential backoff and jitter, never sooner than a
// Retry-After asks.
func (s *sender) deliver(ctx context.Context, body []byte, n int) error {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval, bo.MaxElapsedTime = s.retry.MinBackoff, s.retry.MaxBackoff, 0
	bo.Reset()
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			s.metrics.retried.WithLabelValues(s.endpoint).Add(float64(n))
		}
		start := time.Now()
		err := s.client.Send(ctx, body, s.retry.Now())
		took := time.Since(start).Seconds()
		s.metrics.latency.WithLabelValues(s.endpoint).Set(took)
		s.metrics.requests.WithLabelValues(s.endpoint).Observe(took)
		if err == nil {
			s.metrics.sent.WithLabelValues(s.endpoint).Add(float64(n))
			s.metrics.sentBytes.WithLabelValues(s.endpoint).Add(float64(len(body)))
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.metrics.failed.WithLabelValues(s.endpoint).Add(float64(n))
		var se *SendError
		if !errors.As(err, &se) || !se.Recoverable {
			reason := DropEncode
			if se != nil {
				reason = se.Reason()
			}
			s.metrics.dropped.WithLabelValues(s.endpoint, reason).Add(float64(n))
			return ErrDropped
		}
		wait := bo.NextBackOff()
		if se.RetryAfter > wait {
			wait = se.RetryAfter
		}
		if err := s.retry.Sleep(ctx, wait); err != nil {
			return err
		}
	}
}
