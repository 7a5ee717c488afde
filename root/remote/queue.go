package remote

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
)

// QueueConfig shapes one endpoint's sending, with Prometheus's
// queue_config defaults.
type QueueConfig struct {
	MinShards, MaxShards int
	MaxSamplesPerSend    int
	// BatchSendDeadline sends a partial batch after this long.
	BatchSendDeadline time.Duration
	// ShardUpdateEvery is how often the shard count is reconsidered.
	ShardUpdateEvery time.Duration
	Retry            RetryConfig
}

// DefaultQueueConfig is Prometheus's default queue configuration.
func DefaultQueueConfig() QueueConfig {
	return QueueConfig{
		MinShards: 1, MaxShards: 50, MaxSamplesPerSend: 2000, BatchSendDeadline: 5 * time.Second,
		ShardUpdateEvery: 10 * time.Second,
		Retry:            RetryConfig{MinBackoff: 30 * time.Millisecond, MaxBackoff: 5 * time.Second},
	}
}

// Endpoint is one remote-write sink.
type Endpoint struct {
	Name           string
	Client         ClientConfig
	Queue          QueueConfig
	Relabel        Relabel
	ExternalLabels labels.Labels
}

// Queue sends one endpoint's share of the log: it reads records from the
// endpoint's cursor, hands each sample to a shard chosen by its series
// (so a series' samples stay in order), and commits the cursor past a
// record once every sample in it was delivered or dropped for good. The
// shard count follows the sink's latency and the backlog, as
// Prometheus's queue manager does.
type Queue struct {
	ep      Endpoint
	cursor  *Cursor
	sender  *sender
	metrics *Metrics
	log     *slog.Logger

	shards int
	// rates since the last reshard: samples and bytes read from the log,
	// samples sent (delivered or refused), seconds spent sending them.
	mu                            sync.Mutex
	in, inBytes, out, sendSeconds float64
	overflowSeen                  uint64
}

// NewQueue prepares the queue for ep reading from cursor.
func NewQueue(ep Endpoint, cursor *Cursor, m *Metrics, log *slog.Logger) (*Queue, error) {
	if ep.Queue.MaxSamplesPerSend <= 0 || ep.Queue.MinShards <= 0 || ep.Queue.MaxShards < ep.Queue.MinShards {
		return nil, fmt.Errorf("endpoint %s: bad queue configuration %+v", ep.Name, ep.Queue)
	}
	c, err := NewClient(ep.Client)
	if err != nil {
		return nil, fmt.Errorf("endpoint %s: %w", ep.Name, err)
	}
	return &Queue{
		ep: ep, cursor: cursor, sender: newSender(ep.Name, c, ep.Queue.Retry, m), metrics: m,
		log: log, shards: ep.Queue.MinShards,
	}, nil
}

// Shards is the current shard count.
func (q *Queue) Shards() int { return q.shards }

// pending tracks the records handed to shards, oldest first, so the
// cursor advances only over records that are wholly done.
type pending struct {
	mu      sync.Mutex
	records []*inflight
	cursor  *Cursor
}

type inflight struct {
	next Position
	left int
}

func (p *pending) add(next Position, n int) *inflight {
	r := &inflight{next: next, left: n}
	p.mu.Lock()
	p.records = append(p.records, r)
	p.mu.Unlock()
	return r
}

// done marks n samples of each record finished and commits past the
// leading finished records.
func (p *pending) done(counts map[*inflight]int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for r, n := range counts {
		r.left -= n
	}
	var commit *Position
	for len(p.records) > 0 && p.records[0].left == 0 {
		commit = &p.records[0].next
		p.records = p.records[1:]
	}
	if commit != nil {
		return p.cursor.Commit(*commit)
	}
	return nil
}

type item struct {
	s   Sample
	rec *inflight
}

// Run sends until ctx ends. Samples read but not delivered when it ends
// are not committed: they are read again by the next run.
func (q *Queue) Run(ctx context.Context) error {
	p := &pending{cursor: q.cursor}
	for ctx.Err() == nil {
		epoch, cancel := context.WithTimeout(ctx, q.ep.Queue.ShardUpdateEvery)
		err := q.runShards(epoch, ctx, p)
		cancel()
		if err != nil && ctx.Err() == nil {
			return err
		}
		q.reshard()
	}
	return nil
}

// runShards runs the current shard count until epoch ends: it stops
// reading, lets the shards finish what they hold, and returns, so the
// next epoch may use another count without reordering any series.
func (q *Queue) runShards(epoch, ctx context.Context, p *pending) error {
	n := q.shards
	q.metrics.queue.shards.WithLabelValues(q.ep.Name).Set(float64(n))
	chans := make([]chan item, n)
	var wg sync.WaitGroup
	errc := make(chan error, n+1)
	for i := range n {
		chans[i] = make(chan item, q.ep.Queue.MaxSamplesPerSend)
		wg.Go(func() {
			if err := q.shard(ctx, chans[i], p); err != nil {
				errc <- err
			}
		})
	}
	readErr := q.read(epoch, ctx, chans, p)
	for _, c := range chans {
		close(c)
	}
	wg.Wait()
	close(errc)
	return errors.Join(readErr, <-errc)
}

// read moves records from the cursor to the shards until epoch ends.
func (q *Queue) read(epoch, ctx context.Context, chans []chan item, p *pending) error {
	for {
		rec, wait, err := q.cursor.Next()
		if err != nil {
			return err
		}
		q.updateBacklog()
		if rec == nil {
			select {
			case <-epoch.Done():
				return nil
			case <-wait:
				continue
			}
		}
		kept := rec.Samples[:0]
		for _, s := range rec.Samples {
			if q.ep.Relabel.Sends(s.Labels) {
				kept = append(kept, s)
			}
		}
		if d := len(rec.Samples) - len(kept); d > 0 {
			q.metrics.dropped.WithLabelValues(q.ep.Name, DropRelabel).Add(float64(d))
		}
		q.mu.Lock()
		q.in += float64(len(rec.Samples))
		q.inBytes += float64(rec.Bytes)
		q.mu.Unlock()
		r := p.add(rec.Next, len(kept))
		if len(kept) == 0 {
			if err := p.done(nil); err != nil {
				return err
			}
		}
		// The whole record goes to the shards even if the epoch ends
		// meanwhile (they drain before it does); only the end of ctx stops
		// it, and then nothing of it is committed.
		for _, s := range kept {
			select {
			case chans[s.Labels.Hash()%uint64(len(chans))] <- item{s: s, rec: r}:
			case <-ctx.Done():
				return nil
			}
		}
		if epoch.Err() != nil {
			return nil
		}
	}
}

// shard batches its samples and sends them, until its channel closes
// (then it sends what it holds) or ctx ends.
func (q *Queue) shard(ctx context.Context, in <-chan item, p *pending) error {
	enc := NewEncoder(q.ep.ExternalLabels)
	batch := make([]item, 0, q.ep.Queue.MaxSamplesPerSend)
	timer := time.NewTimer(q.ep.Queue.BatchSendDeadline)
	defer timer.Stop()
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		defer func() { batch = batch[:0] }()
		samples := make([]Sample, len(batch))
		counts := map[*inflight]int{}
		for i, it := range batch {
			samples[i] = it.s
			counts[it.rec]++
		}
		start := time.Now()
		body, err := enc.Encode(samples)
		if err != nil {
			q.metrics.dropped.WithLabelValues(q.ep.Name, DropEncode).Add(float64(len(samples)))
			q.log.Error("cannot encode a write request; dropped", "endpoint", q.ep.Name, "samples", len(samples), "err", err)
		} else if err := q.sender.deliver(ctx, body, len(samples)); err != nil && !errors.Is(err, ErrDropped) {
			return err // ctx ended: owed, not committed
		}
		q.mu.Lock()
		q.out += float64(len(samples))
		q.sendSeconds += time.Since(start).Seconds()
		q.mu.Unlock()
		return p.done(counts)
	}
	for {
		select {
		case it, ok := <-in:
			if !ok {
				return flush()
			}
			batch = append(batch, it)
			if len(batch) >= q.ep.Queue.MaxSamplesPerSend {
				if err := flush(); err != nil {
					return err
				}
				timer.Reset(q.ep.Queue.BatchSendDeadline)
			}
		case <-timer.C:
			if err := flush(); err != nil {
				return err
			}
			timer.Reset(q.ep.Queue.BatchSendDeadline)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// reshard picks the shard count for the next epoch, Prometheus's way:
// enough shards that, at the measured sending time per sample, the
// incoming rate plus a tenth of the backlog per interval gets sent;
// changed only when the need moves outside ±30 % of the current count.
// While nothing gets through (the sink is down) the count stays.
func (q *Queue) reshard() {
	q.mu.Lock()
	in, inBytes, out, secs := q.in, q.inBytes, q.out, q.sendSeconds
	q.in, q.inBytes, q.out, q.sendSeconds = 0, 0, 0, 0
	q.mu.Unlock()
	if out == 0 {
		return
	}
	interval := q.ep.Queue.ShardUpdateEvery.Seconds()
	backlog := 0.0
	if in > 0 && inBytes > 0 {
		bytes, _ := q.cursor.Backlog()
		backlog = float64(bytes) / (inBytes / in)
	}
	desired := desiredShards(secs/out, in/interval, backlog, interval)
	if desired >= 0.7*float64(q.shards) && desired <= 1.3*float64(q.shards) {
		return
	}
	n := max(q.ep.Queue.MinShards, min(q.ep.Queue.MaxShards, int(math.Ceil(desired))))
	if n != q.shards {
		q.log.Info("resharding", "endpoint", q.ep.Name, "from", q.shards, "to", n,
			"seconds_per_sample", secs/out, "samples_in_per_second", in/interval, "backlog_samples", backlog)
		q.shards = n
	}
}

// desiredShards: each shard sends 1/timePerSample samples a second; the
// need is the incoming rate plus a tenth of the backlog each interval.
func desiredShards(timePerSample, inPerSecond, backlogSamples, interval float64) float64 {
	return timePerSample * (inPerSecond + 0.1*backlogSamples/interval)
}

func (q *Queue) updateBacklog() {
	bytes, oldest := q.cursor.Backlog()
	q.metrics.queue.backlogBytes.WithLabelValues(q.ep.Name).Set(float64(bytes))
	age := 0.0
	if !oldest.IsZero() && bytes > 0 {
		age = time.Since(oldest).Seconds()
	}
	q.metrics.queue.backlogAge.WithLabelValues(q.ep.Name).Set(age)
	if lost := q.cursor.Dropped(); lost > q.overflowSeen {
		q.metrics.dropped.WithLabelValues(q.ep.Name, DropOverflow).Add(float64(lost - q.overflowSeen))
		q.overflowSeen = lost
	}
}

type queueGauges struct {
	shards, backlogBytes, backlogAge *prometheus.GaugeVec
}

func newQueueGauges(reg prometheus.Registerer) *queueGauges {
	ep := []string{"endpoint"}
	g := &queueGauges{
		shards:       prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "canopy_remote_shards", Help: "Shards sending to the endpoint."}, ep),
		backlogBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "canopy_remote_queue_bytes", Help: "Bytes of the durable log the endpoint has not yet taken."}, ep),
		backlogAge:   prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "canopy_remote_queue_age_seconds", Help: "Age of the oldest record the endpoint has not yet taken (upper bound)."}, ep),
	}
	if reg != nil {
		reg.MustRegister(g.shards, g.backlogBytes, g.backlogAge)
	}
	return g
}
