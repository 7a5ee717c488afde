package bench

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/canopytree/canopy/batch"
	"github.com/canopytree/canopy/leaf"
	"github.com/canopytree/canopy/root/remote"
)

// Direct is the centralised baseline: emulated leaves that each send every
// sample they scrape straight to the sink with Prometheus remote write 1.0,
// one request per window, as a Prometheus agent or vmagent on every node
// would. A leaf whose previous request is still running when its window
// ends keeps the samples for the next one (the window is counted late).
type Direct struct {
	Produced atomic.Int64

	requests, failed, samples, bytes, late prometheus.Counter
	delay                                  prometheus.Histogram

	client *remote.Client
	cancel context.CancelFunc
	wg     sync.WaitGroup
	pool   sync.Pool // *remote.Encoder
}

// StartDirect runs count direct leaves (ids leaf-<first>…) writing to url,
// registering their metrics on reg: canopy_bench_direct_*.
func StartDirect(c EmulationConfig, first, count int, url string, reg prometheus.Registerer) (*Direct, error) {
	client, err := remote.NewClient(remote.ClientConfig{URL: url, Timeout: max(30*time.Second, 2*c.Window)})
	if err != nil {
		return nil, err
	}
	d := &Direct{
		client:   client,
		requests: prometheus.NewCounter(prometheus.CounterOpts{Name: "canopy_bench_direct_requests_total", Help: "Remote-write requests the sink accepted."}),
		failed:   prometheus.NewCounter(prometheus.CounterOpts{Name: "canopy_bench_direct_failed_requests_total", Help: "Remote-write requests that failed."}),
		samples:  prometheus.NewCounter(prometheus.CounterOpts{Name: "canopy_bench_direct_samples_total", Help: "Samples the sink accepted."}),
		bytes:    prometheus.NewCounter(prometheus.CounterOpts{Name: "canopy_bench_direct_sent_bytes_total", Help: "Bytes of accepted requests (snappy-compressed)."}),
		late:     prometheus.NewCounter(prometheus.CounterOpts{Name: "canopy_bench_direct_late_windows_total", Help: "Windows that ended while the leaf's previous request was still running."}),
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "canopy_bench_direct_delay_seconds", Help: "Age of samples when the sink accepted them, once per scrape instant of a request.",
			Buckets: prometheus.ExponentialBucketsRange(0.05, 600, 96),
		}),
		pool: sync.Pool{New: func() any { return remote.NewEncoder(labels.EmptyLabels()) }},
	}
	reg.MustRegister(d.requests, d.failed, d.samples, d.bytes, d.late, d.delay)
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	stagger := StartSpread(count, c.Window) / time.Duration(max(1, count))
	for i := first; i < first+count; i++ {
		id := c.leafIdentity(i)
		syn := NewSynthetic(c.Workload, id, uint64(i)+1, &d.Produced)
		d.wg.Go(func() { after(ctx, time.Duration(i-first)*stagger, func() { d.runLeaf(ctx, c, id, syn) }) })
	}
	return d, nil
}

func (d *Direct) runLeaf(ctx context.Context, c EmulationConfig, id leaf.Identity, syn *Synthetic) {
	scrape, window := time.NewTicker(c.ScrapeInterval), time.NewTicker(c.Window)
	defer scrape.Stop()
	defer window.Stop()
	var pending []remote.Sample
	var inflight sync.WaitGroup
	busy := atomic.Bool{}
	defer inflight.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-scrape.C:
			got, _ := syn.Collect(id, now)
			for _, s := range got {
				pending = append(pending, batch.LabeledSample{Labels: s.Labels, T: s.T, V: s.V})
			}
		case <-window.C:
			if len(pending) == 0 {
				continue
			}
			if !busy.CompareAndSwap(false, true) {
				d.late.Inc()
				continue
			}
			send := pending
			pending = nil
			inflight.Go(func() {
				defer busy.Store(false)
				d.send(ctx, send)
			})
		}
	}
}

// send writes one request (the encoder groups samples by series) and
// records how old its samples were when the sink took them.
func (d *Direct) send(ctx context.Context, samples []remote.Sample) {
	enc := d.pool.Get().(*remote.Encoder)
	defer d.pool.Put(enc)
	body, err := enc.Encode(samples)
	if err == nil {
		err = d.client.Send(ctx, body, time.Now())
	}
	if err != nil {
		if ctx.Err() == nil {
			d.failed.Inc()
		}
		return
	}
	now := time.Now()
	d.requests.Inc()
	d.samples.Add(float64(len(samples)))
	d.bytes.Add(float64(len(body)))
	var instants []int64
	for _, s := range samples {
		if !slices.Contains(instants, s.T) {
			instants = append(instants, s.T)
			d.delay.Observe(now.Sub(time.UnixMilli(s.T)).Seconds())
		}
	}
}

// Stop stops the leaves and waits for requests in flight.
func (d *Direct) Stop() {
	d.cancel()
	d.wg.Wait()
}
