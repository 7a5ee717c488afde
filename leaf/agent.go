package leaf

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/grpc"

	"github.com/canopytree/canopy/batch"
	"github.com/canopytree/canopy/filter"
	"github.com/canopytree/canopy/internal/ticker"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// AgentConfig is what an Agent needs; the node binary fills it from its
// configuration file.
type AgentConfig struct {
	Identity       Identity
	ScrapeInterval time.Duration
	ScrapeTimeout  time.Duration
	Window         time.Duration
	Targets        []Target
	// Collector is the built-in source scraped with the targets: the
	// machine's /proc (MachineCollector) or, in the bench, a synthetic
	// one; nil disables it.
	Collector Collector
	// Filter decides which samples of a window are sent; nil sends all.
	Filter *filter.Filter
	// Epoch is this incarnation's id; batch seqs restart with it.
	Epoch           uint64
	Delivery        batch.Delivery
	Buffer          batch.Limits
	RetransmitAfter time.Duration
	// MaxBatchesPerHeartbeat bounds the node's own batches in one message
	// when catching up a backlog.
	MaxBatchesPerHeartbeat int
	// MaxForwardSamples bounds the children's samples one message carries
	// (a supernode): a window's batches of every child go up in one
	// message when they fit.
	MaxForwardSamples int
	Now               func() time.Time
}

// Collector produces samples without a scrape: the node's own machine
// metrics, or a synthetic workload.
type Collector interface {
	Collect(id Identity, now time.Time) ([]ScrapedSample, error)
}

var _ Collector = (*MachineCollector)(nil)

// Forwarder is the supernode side of a node's heartbeat: what the node's
// subtree sends up with the node's own batches. The leaf defines it so it
// does not depend on the supernode package.
type Forwarder interface {
	// Pending returns the oldest batches waiting to go up, without
	// removing them: up to maxBatches, and up to maxSamples samples in all
	// (at least one batch, however large).
	Pending(maxBatches, maxSamples int) []*batch.Batch
	// Queued is how many batches wait to go up.
	Queued() int
	// Forwarded removes the first n batches Pending returned: the parent
	// accepted them (or rejected them for good).
	Forwarded(n int)
	// Upstream hands over what the parent answered: acknowledgements for
	// the subtree and the path instance.
	Upstream(resp *canopyv1.HeartbeatResponse)
}

// Agent collects a node's samples and delivers them, one heartbeat per
// window, to the parent.
type Agent struct {
	cfg     AgentConfig
	log     *slog.Logger
	scraper *Scraper
	metrics *agentMetrics
	started time.Time

	mu      sync.Mutex // guards builder, targets, runCtx
	builder *batch.Builder
	targets map[string]*targetState
	runCtx  context.Context

	sendMu   sync.Mutex // guards everything below: the send side
	buffer   *batch.Buffer
	uplink   *Uplink
	fwd      Forwarder
	path     uint64
	rejected batch.Loss
	lastErr  error
	observe  func(batch.ID, []batch.Series)
}

type targetState struct {
	target   Target
	cancel   context.CancelFunc
	failures map[string]float64 // by reason, cumulative
	invalid  float64
}

// NewAgent builds an agent that sends through uplink. fwd is nil on a pure
// leaf.
func NewAgent(cfg AgentConfig, uplink *Uplink, fwd Forwarder, reg prometheus.Registerer, log *slog.Logger) (*Agent, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxBatchesPerHeartbeat <= 0 {
		cfg.MaxBatchesPerHeartbeat = 16
	}
	if cfg.MaxForwardSamples <= 0 {
		cfg.MaxForwardSamples = 1_000_000
	}
	a := &Agent{
		cfg:     cfg,
		log:     log,
		scraper: &Scraper{Client: newHTTPClient(), Timeout: cfg.ScrapeTimeout, MaxBody: 16 << 20},
		metrics: newAgentMetrics(reg),
		started: cfg.Now(),
		builder: batch.NewBuilder(),
		targets: map[string]*targetState{},
		buffer:  batch.NewBuffer(cfg.Identity.Node, cfg.Epoch, cfg.Delivery, cfg.Buffer),
		uplink:  uplink,
		fwd:     fwd,
	}
	if uplink != nil && cfg.Filter != nil {
		uplink.onReset = cfg.Filter.Keyframe
	}
	for _, t := range cfg.Targets {
		if err := a.AddTarget(t); err != nil {
			return nil, fmt.Errorf("target %q: %w", t.Name, err)
		}
	}
	return a, nil
}

// SetParent points the uplink at a new parent connection (a new
// dictionary session); batches not yet acknowledged go there in order.
func (a *Agent) SetParent(conn grpc.ClientConnInterface) {
	a.sendMu.Lock()
	defer a.sendMu.Unlock()
	a.uplink.Retarget(conn)
}

// Reconfigure applies dead-band rules and the keyframe period (0:
// unchanged) pushed down the tree. The next window is a keyframe, so a
// parent that now aggregates different series gets every value.
func (a *Agent) Reconfigure(rules []filter.Rule, keyframeWindows int) {
	if a.cfg.Filter == nil {
		return
	}
	a.sendMu.Lock()
	defer a.sendMu.Unlock()
	a.cfg.Filter.SetRules(rules)
	if keyframeWindows > 0 {
		a.cfg.Filter.SetKeyframeWindows(keyframeWindows)
	}
	a.cfg.Filter.Keyframe()
}

// Observe registers a hook that sees every sealed batch before it is sent,
// for audits of what the node produced.
func (a *Agent) Observe(f func(batch.ID, []batch.Series)) {
	a.sendMu.Lock()
	a.observe = f
	a.sendMu.Unlock()
}

// ErrTargetExists and ErrNoTarget are returned by AddTarget and
// RemoveTarget.
var (
	ErrTargetExists = errors.New("target already exists")
	ErrNoTarget     = errors.New("no such target")
)

// AddTarget validates t and starts scraping it (at once if the agent runs).
func (a *Agent) AddTarget(t Target) error {
	if err := t.Validate(); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.targets[t.Name]; ok {
		return fmt.Errorf("%q: %w", t.Name, ErrTargetExists)
	}
	ts := &targetState{target: t, failures: map[string]float64{}}
	a.targets[t.Name] = ts
	if a.runCtx != nil {
		a.startTarget(ts)
	}
	a.metrics.targets.Set(float64(len(a.targets)))
	return nil
}

// RemoveTarget stops scraping the named target.
func (a *Agent) RemoveTarget(name string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	ts, ok := a.targets[name]
	if !ok {
		return fmt.Errorf("%q: %w", name, ErrNoTarget)
	}
	if ts.cancel != nil {
		ts.cancel()
	}
	delete(a.targets, name)
	a.metrics.targets.Set(float64(len(a.targets)))
	return nil
}

// Targets lists the current targets by name.
func (a *Agent) Targets() []Target {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Target, 0, len(a.targets))
	for _, ts := range a.targets {
		out = append(out, ts.target)
	}
	slices.SortFunc(out, func(x, y Target) int { return compareStrings(x.Name, y.Name) })
	return out
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// must hold a.mu
func (a *Agent) startTarget(ts *targetState) {
	ctx, cancel := context.WithCancel(a.runCtx)
	ts.cancel = cancel
	go a.every(ctx, a.cfg.ScrapeInterval, func(now time.Time) { a.scrapeTarget(ctx, ts, now) })
}

// Run scrapes until ctx ends. Each target has its own loop, so a slow or
// hanging target delays nobody else. Windows are sealed and sent by
// Heartbeat, which the node's tree driver calls once per window.
func (a *Agent) Run(ctx context.Context) {
	a.mu.Lock()
	a.runCtx = ctx
	for _, ts := range a.targets {
		a.startTarget(ts)
	}
	a.mu.Unlock()
	if a.cfg.Collector != nil {
		go a.every(ctx, a.cfg.ScrapeInterval, a.collect)
	}
	<-ctx.Done()
}

// every runs f now and then every interval until ctx ends.
func (a *Agent) every(ctx context.Context, interval time.Duration, f func(time.Time)) {
	f(a.cfg.Now())
	ticker.Every(ctx, interval, func() { f(a.cfg.Now()) })
}

// ScrapeOnce scrapes every target and the collector once, now. Run
// does this on its own; tests and one-shot tools call it directly.
func (a *Agent) ScrapeOnce(ctx context.Context) {
	now := a.cfg.Now()
	a.mu.Lock()
	states := make([]*targetState, 0, len(a.targets))
	for _, ts := range a.targets {
		states = append(states, ts)
	}
	a.mu.Unlock()
	var wg sync.WaitGroup
	for _, ts := range states {
		wg.Go(func() { a.scrapeTarget(ctx, ts, now) })
	}
	wg.Wait()
	if a.cfg.Collector != nil {
		a.collect(now)
	}
}

func (a *Agent) scrapeTarget(ctx context.Context, ts *targetState, now time.Time) {
	rep := a.scraper.Scrape(ctx, ts.target, a.cfg.Identity, now)
	if ctx.Err() != nil {
		return // removed or shutting down mid-scrape
	}
	a.metrics.scrapes.Inc()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.targets[ts.target.Name] != ts {
		return
	}
	up := 1.0
	if rep.Err != nil {
		up = 0
		ts.failures[rep.Reason]++
		a.metrics.scrapeFailures.WithLabelValues(rep.Reason).Inc()
		a.log.Debug("scrape failed", "target", ts.target.Name, "reason", rep.Reason, "err", rep.Err)
	}
	ts.invalid += float64(rep.Invalid)
	for _, s := range rep.Samples {
		a.builder.Add(s.Labels, s.Type, s.T, s.V)
	}
	t := now.UnixMilli()
	health := func(name string, typ canopyv1.MetricType, v float64, kv ...string) {
		a.builder.Add(a.targetLabels(ts.target, name, kv...), typ, t, v)
	}
	health("up", canopyv1.MetricType_METRIC_TYPE_GAUGE, up)
	health("scrape_duration_seconds", canopyv1.MetricType_METRIC_TYPE_GAUGE, rep.Duration.Seconds())
	health("scrape_samples_scraped", canopyv1.MetricType_METRIC_TYPE_GAUGE, float64(len(rep.Samples)))
	health("canopy_scrape_invalid_series_total", canopyv1.MetricType_METRIC_TYPE_COUNTER, ts.invalid)
	for reason, n := range ts.failures {
		health("canopy_scrape_failures_total", canopyv1.MetricType_METRIC_TYPE_COUNTER, n, "reason", reason)
	}
}

func (a *Agent) targetLabels(t Target, name string, kv ...string) labels.Labels {
	b := labels.NewScratchBuilder(8)
	b.Add(labels.MetricName, name)
	b.Add(LabelNode, a.cfg.Identity.Node)
	b.Add(LabelDC, a.cfg.Identity.DC)
	b.Add(LabelLevel, string(t.Level))
	b.Add(LabelJob, t.Name)
	if t.Level == LevelApp {
		b.Add(LabelApp, t.App)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		b.Add(kv[i], kv[i+1])
	}
	b.Sort()
	return b.Labels()
}

func (a *Agent) collect(now time.Time) {
	samples, err := a.cfg.Collector.Collect(a.cfg.Identity, now)
	if err != nil {
		a.log.Debug("collector", "err", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, s := range samples {
		a.builder.Add(s.Labels, s.Type, s.T, s.V)
	}
}

// Heartbeat seals the current window as the next batch and, when status
// is given (the node has a parent), sends what is due: at least one message
// carrying status (the heartbeat is the liveness proof), more while a
// backlog remains. It returns the parent's first reply.
func (a *Agent) Heartbeat(ctx context.Context, status *canopyv1.HeartbeatRequest) (*canopyv1.HeartbeatResponse, error) {
	now := a.cfg.Now()
	a.sendMu.Lock()
	defer a.sendMu.Unlock()
	a.mu.Lock()
	series := a.builder.Take()
	a.mu.Unlock()
	if a.cfg.Filter != nil {
		series = a.cfg.Filter.Apply(now.UnixMilli(), series)
		st := a.cfg.Filter.Stats()
		a.metrics.filterIn.Set(float64(st.In))
		a.metrics.filterOut.Set(float64(st.Out))
		a.metrics.staleMarkers.Set(float64(st.Stale))
	}
	// The agent's own series are never filtered: batch_seq is the audit.
	series = append(series, a.selfSeries(now, a.buffer.NextSeq())...)
	id := a.buffer.Seal(series)
	if a.observe != nil {
		a.observe(id, series)
	}
	var resp *canopyv1.HeartbeatResponse
	err := ErrNoParent
	if status != nil {
		resp, err = a.flush(ctx, now, status)
		a.lastErr = err
	}
	a.updateGauges(err)
	return resp, err
}

// must hold sendMu
func (a *Agent) updateGauges(err error) {
	samples, bytes := a.buffer.Retained()
	a.metrics.bufferBatches.Set(float64(a.buffer.Len()))
	a.metrics.bufferSamples.Set(float64(samples))
	a.metrics.bufferBytes.Set(float64(bytes))
	a.metrics.droppedSamples.Set(float64(a.buffer.Loss().Samples))
	if err != nil && err != ErrNoParent {
		a.metrics.heartbeatFailures.Inc()
	}
}

// selfSeries reports the agent's own delivery health inside the data, so
// loss is visible at the root. canopy_leaf_batch_seq carries the seq of
// the batch it travels in: at the root the series must count 1, 2, 3, …
// within each incarnation, so a gap is a lost batch that anyone can see.
// Must hold sendMu.
func (a *Agent) selfSeries(now time.Time, seq uint64) []batch.Series {
	self := Target{Name: MachineJob, Level: LevelMachine}
	loss := a.buffer.Loss()
	samples, _ := a.buffer.Retained()
	t := now.UnixMilli()
	mk := func(name string, typ canopyv1.MetricType, v float64) batch.Series {
		return batch.Series{Labels: a.targetLabels(self, name), Type: typ, Samples: []batch.Sample{{T: t, V: v}}}
	}
	counter, gauge := canopyv1.MetricType_METRIC_TYPE_COUNTER, canopyv1.MetricType_METRIC_TYPE_GAUGE
	return []batch.Series{
		mk("canopy_leaf_dropped_samples_total", counter, float64(loss.Samples)),
		mk("canopy_leaf_dropped_batches_total", counter, float64(loss.Batches)),
		mk("canopy_leaf_rejected_samples_total", counter, float64(a.rejected.Samples)),
		mk("canopy_leaf_buffered_samples", gauge, float64(samples)),
		mk("canopy_leaf_batch_seq", gauge, float64(seq)),
	}
}

// must hold sendMu
func (a *Agent) flush(ctx context.Context, now time.Time, status *canopyv1.HeartbeatRequest) (*canopyv1.HeartbeatResponse, error) {
	if a.uplink == nil {
		return nil, ErrNoParent
	}
	// limit caps the batches of one message only while halving a
	// rejected one to find the bad batch. Children's batches that arrive
	// while this window's heartbeat is being sent wait for the next one:
	// each level batches a window, as the paper's model has it.
	limit := math.MaxInt
	var queued int
	if a.fwd != nil {
		queued = a.fwd.Queued()
	}
	var first *canopyv1.HeartbeatResponse
	for {
		own := a.buffer.Due(a.path, now, a.cfg.RetransmitAfter, min(limit, a.cfg.MaxBatchesPerHeartbeat))
		var fwd []*batch.Batch
		if a.fwd != nil && limit > len(own) && queued > 0 {
			fwd = a.fwd.Pending(min(limit-len(own), queued), a.cfg.MaxForwardSamples)
		}
		if first != nil && len(own)+len(fwd) == 0 {
			return first, nil
		}
		resp, err := a.uplink.Send(ctx, status, append(own, fwd...))
		a.metrics.heartbeats.Inc()
		if err != nil {
			if !IsRejected(err) {
				return first, err
			}
			if n := len(own) + len(fwd); n > 1 {
				// Find the bad batch by halving the message.
				limit = max(1, n/2)
				continue
			}
			a.discard(own, fwd, err)
			if len(own) == 0 {
				queued-- // it was the child's batch
			}
			continue
		}
		if first == nil {
			first = resp
		}
		limit = math.MaxInt
		a.buffer.Sent(ids(own), resp.PathInstance, now)
		a.path = resp.PathInstance
		for _, ack := range resp.Acks {
			if ack.Origin == a.cfg.Identity.Node {
				a.buffer.Ack(ack.Epoch, ack.Seq)
			}
		}
		if a.fwd != nil {
			a.fwd.Forwarded(len(fwd))
			a.fwd.Upstream(resp)
			queued -= len(fwd)
		}
		if ctx.Err() != nil {
			return first, ctx.Err()
		}
	}
}

// discard drops a single batch the parent refused for good and counts it.
func (a *Agent) discard(own, fwd []*batch.Batch, err error) {
	var b *batch.Batch
	if len(own) == 1 {
		b = own[0]
		a.rejected.Samples += uint64(a.buffer.Discard(b.Seq))
	} else {
		b = fwd[0]
		a.fwd.Forwarded(1)
	}
	a.rejected.Batches++
	a.metrics.rejectedBatches.Inc()
	a.log.Error("parent rejected a batch; dropped it", "origin", b.Origin, "epoch", b.Epoch, "seq", b.Seq, "err", err)
}

func ids(bs []*batch.Batch) []batch.ID {
	out := make([]batch.ID, len(bs))
	for i, b := range bs {
		out[i] = b.ID
	}
	return out
}

// DeliveryState is a snapshot of the agent's send side.
type DeliveryState struct {
	Epoch         uint64
	NextSeq       uint64
	LowSeq        uint64
	Buffered      int
	Loss          batch.Loss
	Rejected      batch.Loss
	LastError     error
	PathInstance  uint64
	BufferSamples int
}

// Delivery reports what the agent has sealed, what is still unacknowledged
// and what was lost.
func (a *Agent) Delivery() DeliveryState {
	a.sendMu.Lock()
	defer a.sendMu.Unlock()
	samples, _ := a.buffer.Retained()
	return DeliveryState{
		Epoch: a.buffer.Epoch(), NextSeq: a.buffer.NextSeq(), LowSeq: a.buffer.LowSeq(),
		Buffered: a.buffer.Len(), Loss: a.buffer.Loss(), Rejected: a.rejected,
		LastError: a.lastErr, PathInstance: a.path, BufferSamples: samples,
	}
}

// Drain sends heartbeats carrying status every interval, without sealing
// new windows, until the parent has acknowledged every batch the agent
// holds and the forwarder (a supernode's queue) is empty, or ctx ends.
// A stopping node calls it after its last Heartbeat so nothing it took
// responsibility for is lost on a clean shutdown.
func (a *Agent) Drain(ctx context.Context, status *canopyv1.HeartbeatRequest, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		a.sendMu.Lock()
		empty := a.buffer.Len() == 0 && (a.fwd == nil || a.fwd.Queued() == 0)
		var err error
		if !empty {
			_, err = a.flush(ctx, a.cfg.Now(), status)
			a.lastErr = err
			a.updateGauges(err)
		}
		a.sendMu.Unlock()
		if empty {
			return nil
		}
		select {
		case <-ctx.Done():
			held := a.Delivery()
			return fmt.Errorf("drain: %d batches unacknowledged: %w", held.Buffered, ctx.Err())
		case <-t.C:
		}
	}
}
