package reader

import (
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/canopytree/canopy/batch"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// Config configures the reader.
type Config struct {
	// MaxSeries and MaxSamples bound one query; past them the query fails
	// with a clear error instead of exhausting memory. 0 = unbounded.
	MaxSeries  int
	MaxSamples int
	// SeriesPerMessage is how many series one streamed message carries.
	SeriesPerMessage int
	// LatestLookback is how far back "latest" looks for a sample.
	LatestLookback time.Duration
	// LatestMetrics are the dashboard metrics a node's "latest" returns
	// (metric names, regular expressions allowed).
	LatestMetrics []string
	// BearerToken, when set, is required of every reader call (see
	// Authenticator); the root checks it.
	BearerToken string
	// Hub serves Subscribe and SubscribeEvents (nil: no stream).
	Hub *Hub
	Now func() time.Time
}

// DefaultLatestMetrics is the crucial subset of machine metrics of the
// c12s paper's dashboards.
var DefaultLatestMetrics = []string{
	"up",
	"node_memory_MemTotal_bytes", "node_memory_MemAvailable_bytes",
	"node_load1", "node_load5", "node_load15",
	"canopy_machine_cpu_cores", "canopy_machine_cpu_busy_cores",
	"node_filesystem_size_bytes", "node_filesystem_avail_bytes",
	"node_network_receive_bytes_total", "node_network_transmit_bytes_total",
}

// TopologySource reports the live tree.
type TopologySource interface {
	Topology() *canopyv1.TopologyResponse
}

// Service implements ReaderService over a queryable store.
type Service struct {
	canopyv1.UnimplementedReaderServiceServer

	cfg      Config
	db       storage.Queryable
	topology TopologySource
	latest   *labels.Matcher
}

var _ canopyv1.ReaderServiceServer = (*Service)(nil)

// NewService serves db. topology may be nil.
func NewService(cfg Config, db storage.Queryable, topology TopologySource) (*Service, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SeriesPerMessage <= 0 {
		cfg.SeriesPerMessage = 256
	}
	if cfg.LatestLookback <= 0 {
		cfg.LatestLookback = 5 * time.Minute
	}
	if len(cfg.LatestMetrics) == 0 {
		cfg.LatestMetrics = DefaultLatestMetrics
	}
	for _, m := range cfg.LatestMetrics {
		if _, err := regexp.Compile(m); err != nil {
			return nil, fmt.Errorf("latest_metrics: %q: %w", m, err)
		}
	}
	latest, err := labels.NewMatcher(labels.MatchRegexp, labels.MetricName, strings.Join(cfg.LatestMetrics, "|"))
	if err != nil {
		return nil, err
	}
	return &Service{cfg: cfg, db: db, topology: topology, latest: latest}, nil
}

// target names what a Target selects, for matchers and error messages.
type target struct {
	kind, label, id string
}

func resolveTarget(t *canopyv1.Target) (target, error) {
	var set []target
	for _, c := range []target{
		{"node", "node", t.GetNodeId()},
		{"dc", "dc", t.GetDcId()},
		{"container", "container", t.GetContainerId()},
		{"app", "app", t.GetAppId()},
	} {
		if c.id != "" {
			set = append(set, c)
		}
	}
	switch len(set) {
	case 0:
		return target{kind: "all"}, nil
	case 1:
		return set[0], nil
	}
	return target{}, status.Error(codes.InvalidArgument, "at most one of node_id, dc_id, container_id, app_id may be set")
}

func (t target) matchers() []*labels.Matcher {
	if t.kind == "all" {
		return []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, labels.MetricName, ".+")}
	}
	return []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, t.label, t.id)}
}

func (s *Service) timeRange(r *canopyv1.TimeRange) (mint, maxt int64, err error) {
	now := s.cfg.Now()
	mint, err = ParseTimestamp(r.GetStart(), now)
	if err != nil {
		return 0, 0, status.Errorf(codes.InvalidArgument, "start: %v", err)
	}
	maxt = now.UnixMilli()
	if r.GetEnd() != "" {
		if maxt, err = ParseTimestamp(r.GetEnd(), now); err != nil {
			return 0, 0, status.Errorf(codes.InvalidArgument, "end: %v", err)
		}
	}
	if mint > maxt {
		end := r.GetEnd()
		if end == "" {
			end = "now"
		}
		return 0, 0, status.Errorf(codes.InvalidArgument, "start %s is after end %s", r.GetStart(), end)
	}
	return mint, maxt, nil
}

// scan calls emit for each series of target in [mint, maxt] with all its
// samples (or only the last one when lastOnly), enforcing the limits.
func (s *Service) scan(ctx context.Context, t target, extra []*labels.Matcher, mint, maxt int64, lastOnly bool, emit func(labels.Labels, []batch.Sample) error) (int, error) {
	q, err := s.db.Querier(mint, maxt)
	if err != nil {
		return 0, status.Errorf(codes.Internal, "open querier: %v", err)
	}
	defer q.Close()
	set := q.Select(ctx, true, nil, append(t.matchers(), extra...)...)
	var (
		nSeries, nSamples int
		it                chunkenc.Iterator
		samples           []batch.Sample
	)
	for set.Next() {
		series := set.At()
		it = series.Iterator(it)
		samples = samples[:0]
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			if vt != chunkenc.ValFloat {
				continue
			}
			ts, v := it.At()
			if lastOnly && len(samples) > 0 {
				samples[0] = batch.Sample{T: ts, V: v}
				continue
			}
			samples = append(samples, batch.Sample{T: ts, V: v})
		}
		if err := it.Err(); err != nil {
			return nSeries, status.Errorf(codes.Internal, "read %s: %v", series.Labels(), err)
		}
		if len(samples) == 0 {
			continue
		}
		nSeries++
		nSamples += len(samples)
		if s.cfg.MaxSeries > 0 && nSeries > s.cfg.MaxSeries {
			return nSeries, status.Errorf(codes.ResourceExhausted, "query selects more than %d series; narrow the target or the time range", s.cfg.MaxSeries)
		}
		if s.cfg.MaxSamples > 0 && nSamples > s.cfg.MaxSamples {
			return nSeries, status.Errorf(codes.ResourceExhausted, "query selects more than %d samples; narrow the target or the time range", s.cfg.MaxSamples)
		}
		if err := emit(series.Labels(), samples); err != nil {
			return nSeries, err
		}
	}
	if err := set.Err(); err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return nSeries, status.FromContextError(err).Err()
		}
		return nSeries, status.Errorf(codes.Internal, "select: %v", err)
	}
	return nSeries, nil
}

// notFound turns an empty answer for an id nobody has ever reported into a
// NotFound error; an id with no data in the range is a valid empty answer.
func (s *Service) notFound(ctx context.Context, t target) error {
	if t.kind == "all" {
		return nil
	}
	q, err := s.db.Querier(math.MinInt64, math.MaxInt64)
	if err != nil {
		return status.Errorf(codes.Internal, "open querier: %v", err)
	}
	defer q.Close()
	vals, _, err := q.LabelValues(ctx, t.label, nil, labels.MustNewMatcher(labels.MatchEqual, t.label, t.id))
	if err != nil {
		return status.Errorf(codes.Internal, "label values: %v", err)
	}
	if len(vals) == 0 {
		return status.Errorf(codes.NotFound, "unknown %s %q", t.kind, t.id)
	}
	return nil
}

func toProtoSeries(ls labels.Labels, samples []batch.Sample) *canopyv1.Series {
	out := &canopyv1.Series{Labels: batch.ToProtoLabels(ls), Samples: make([]*canopyv1.Sample, len(samples))}
	for i, smp := range samples {
		out.Samples[i] = &canopyv1.Sample{TimestampMs: smp.T, Value: smp.V}
	}
	return out
}

// rangeScan resolves a target and a time range and streams the selected
// series to emit; an id that nobody ever reported is NotFound. It is the
// one query path behind Query and Export.
func (s *Service) rangeScan(ctx context.Context, tg *canopyv1.Target, tr *canopyv1.TimeRange, emit func(labels.Labels, []batch.Sample) error) (int, error) {
	t, err := resolveTarget(tg)
	if err != nil {
		return 0, err
	}
	mint, maxt, err := s.timeRange(tr)
	if err != nil {
		return 0, err
	}
	n, err := s.scan(ctx, t, nil, mint, maxt, false, emit)
	if err == nil && n == 0 {
		err = s.notFound(ctx, t)
	}
	return n, err
}

// Query streams the target's series over the range.
func (s *Service) Query(req *canopyv1.QueryRequest, stream canopyv1.ReaderService_QueryServer) error {
	msg := &canopyv1.QueryResponse{}
	n, err := s.rangeScan(stream.Context(), req.Target, req.TimeRange, func(ls labels.Labels, samples []batch.Sample) error {
		msg.Series = append(msg.Series, toProtoSeries(ls, samples))
		if len(msg.Series) < s.cfg.SeriesPerMessage {
			return nil
		}
		err := stream.Send(msg)
		msg = &canopyv1.QueryResponse{}
		return err
	})
	if err != nil {
		return err
	}
	if len(msg.Series) > 0 || n == 0 {
		return stream.Send(msg)
	}
	return nil
}

// latestMatchers selects a node's dashboard metrics or a DC's aggregates
// and imprecision series.
func (s *Service) latestMatchers(t target) ([]*labels.Matcher, error) {
	switch t.kind {
	case "node":
		return []*labels.Matcher{s.latest}, nil
	case "dc":
		return []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, labels.MetricName, "dc:.+|canopy_ni_.+")}, nil
	}
	return nil, status.Errorf(codes.InvalidArgument, "latest is served for a node or a dc, not for %s", t.kind)
}

// Latest returns the newest sample of each of the target's dashboard series.
func (s *Service) Latest(ctx context.Context, req *canopyv1.LatestRequest) (*canopyv1.LatestResponse, error) {
	t, extra, mint, maxt, err := s.latestQuery(req.Target)
	if err != nil {
		return nil, err
	}
	resp := &canopyv1.LatestResponse{}
	n, err := s.scan(ctx, t, extra, mint, maxt, true, func(ls labels.Labels, samples []batch.Sample) error {
		resp.Series = append(resp.Series, toProtoSeries(ls, samples))
		groupNI(resp, ls, samples)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if n == 0 {
		if err := s.notFound(ctx, t); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

// groupNI fills the answer's imprecision from the dc's canopy_ni_*
// series (scope "group"); the per-aggregate ones travel as series beside
// each aggregate.
func groupNI(resp *canopyv1.LatestResponse, ls labels.Labels, samples []batch.Sample) {
	if ls.Get("scope") != "group" || len(samples) == 0 {
		return
	}
	v := uint64(samples[len(samples)-1].V)
	if resp.Ni == nil {
		resp.Ni = &canopyv1.NetworkImprecision{}
	}
	switch ls.Get(labels.MetricName) {
	case "canopy_ni_all":
		resp.Ni.All = v
	case "canopy_ni_reachable":
		resp.Ni.Reachable = v
	case "canopy_ni_dup":
		resp.Ni.Dup = v
	}
}

func (s *Service) latestQuery(tg *canopyv1.Target) (target, []*labels.Matcher, int64, int64, error) {
	t, err := resolveTarget(tg)
	if err != nil {
		return t, nil, 0, 0, err
	}
	extra, err := s.latestMatchers(t)
	if err != nil {
		return t, nil, 0, 0, err
	}
	now := s.cfg.Now()
	return t, extra, now.Add(-s.cfg.LatestLookback).UnixMilli(), now.UnixMilli(), nil
}

// Topology returns the live tree.
func (s *Service) Topology(context.Context, *canopyv1.TopologyRequest) (*canopyv1.TopologyResponse, error) {
	if s.topology == nil {
		return nil, status.Error(codes.Unavailable, "no topology source")
	}
	return s.topology.Topology(), nil
}
