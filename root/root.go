package root

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/prometheus/tsdb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/canopytree/canopy/batch"
	"github.com/canopytree/canopy/filter"
	_ "github.com/canopytree/canopy/internal/grpcsnappy" // children compress heartbeats with snappy
	"github.com/canopytree/canopy/internal/ticker"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
	"github.com/canopytree/canopy/proto/openapi"
	"github.com/canopytree/canopy/reader"
	"github.com/canopytree/canopy/root/remote"
	"github.com/canopytree/canopy/supernode"
	"github.com/canopytree/canopy/tree"
)

// Options is what a Root needs; the root binary fills it from its
// configuration file.
type Options struct {
	ID string
	// Address is the gRPC address children dial, announced in candidate
	// lists.
	Address string
	DataDir string
	// Retention of the embedded TSDB.
	Retention time.Duration
	// OutOfOrderWindow lets retransmitted batches land behind newer data.
	OutOfOrderWindow time.Duration
	// ChildLimit is how many children the root adopts (0: no limit).
	ChildLimit int
	// MissedWindows and DeadWindows drive the failure detector of the
	// root's children (defaults 2 and 3).
	MissedWindows int
	DeadWindows   int
	// MaxCandidates bounds the candidate list a joining node gets.
	MaxCandidates   int
	Window          time.Duration
	MaxMessageBytes int
	Limits          batch.DecodeLimits
	Ingest          IngestConfig
	Reader          reader.Config
	// ForgetAfter is the soft-state timeout for silent children and for
	// the dedup ledger of origins that stopped sending.
	ForgetAfter time.Duration
	// Control is the configuration pushed down the tree: filter rules, the
	// keyframe period and the aggregation rules the root finalises. Its
	// version is assigned here.
	Control *canopyv1.Control
	// Remote lists the remote-write endpoints; RemoteLog bounds the
	// durable queue they read from (in DataDir/remote-write).
	Remote    []remote.Endpoint
	RemoteLog remote.LogConfig
	// TLS, when set, secures both listeners: children and readers over
	// gRPC, REST clients over HTTPS.
	TLS *tls.Config
	// StreamBuffer is how many updates a slow stream subscriber may fall
	// behind before its updates are dropped (and reported to it).
	StreamBuffer int
	// StreamBufferSamples bounds the samples such a subscriber's buffer
	// holds, and so its memory (default 100,000).
	StreamBufferSamples int
	Instance            uint64
	Now                 func() time.Time
}

// Root is the running top of the tree.
type Root struct {
	opts     Options
	log      *slog.Logger
	reg      *prometheus.Registry
	DB       *tsdb.DB
	Members  *tree.Safe
	Parent   *supernode.Parent
	Ingester *Ingester
	Reader   *reader.Service
	// Hub streams what the root stores to subscribers.
	Hub *reader.Hub

	agg       *supernode.Aggregator
	finaliser *finaliser
	remoteLog *remote.Log
	queues    []*remote.Queue
}

// Open opens storage and wires the root's components.
func Open(opts Options, log *slog.Logger) (*Root, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Instance == 0 {
		opts.Instance = uint64(time.Now().UnixNano())
	}
	if opts.StreamBuffer <= 0 {
		opts.StreamBuffer = 1024
	}
	if opts.StreamBufferSamples <= 0 {
		opts.StreamBufferSamples = 100_000
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	tsdbOpts := tsdb.DefaultOptions()
	tsdbOpts.RetentionDuration = opts.Retention.Milliseconds()
	tsdbOpts.OutOfOrderTimeWindow = opts.OutOfOrderWindow.Milliseconds()
	db, err := tsdb.Open(opts.DataDir, log.With("component", "tsdb"), reg, tsdbOpts, nil)
	if err != nil {
		return nil, fmt.Errorf("open TSDB in %s: %w", opts.DataDir, err)
	}
	r := &Root{opts: opts, log: log, reg: reg, DB: db, Hub: reader.NewHub(opts.StreamBuffer, opts.StreamBufferSamples, reg)}
	if len(opts.Remote) > 0 {
		if err := r.openRemote(); err != nil {
			db.Close()
			return nil, err
		}
	}
	store := tee{db: db, log: r.remoteLog, publish: r.Hub.Publisher(), active: r.Hub.Active}
	ingestCfg := opts.Ingest
	ingestCfg.Now = opts.Now
	r.Ingester = NewIngester(ingestCfg, store, func(acks []*canopyv1.Ack) { r.Parent.Acknowledge(acks) }, reg)
	tc := tree.DefaultConfig(opts.ID)
	tc.IsRoot, tc.Address, tc.Window, tc.ForgetAfter, tc.ChildLimit = true, opts.Address, opts.Window, opts.ForgetAfter, opts.ChildLimit
	if tc.ChildLimit == 0 {
		tc.ChildLimit = math.MaxInt32
	}
	if opts.DeadWindows > 0 {
		tc.MissedWindows, tc.DeadWindows = opts.MissedWindows, opts.DeadWindows
	}
	if opts.MaxCandidates > 0 {
		tc.MaxCandidates = opts.MaxCandidates
	}
	core, err := tree.NewNode(tc, opts.Now())
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("tree: %w", err)
	}
	r.Members = tree.NewSafe(core, opts.Now)
	r.agg = supernode.NewAggregator(nil)
	r.finaliser = newFinaliser(store, r.agg)
	r.Parent = supernode.NewParent(supernode.Config{
		Limits:      opts.Limits,
		Instance:    opts.Instance,
		ForgetAfter: opts.ForgetAfter,
		Aggregator:  r.agg,
		Now:         opts.Now,
	}, r.Members, r.Ingester, reg, log.With("component", "parent"))
	if opts.Control != nil {
		if err := r.SetControl(opts.Control); err != nil {
			r.Close()
			return nil, err
		}
	}
	readerCfg := opts.Reader
	readerCfg.Now, readerCfg.Hub = opts.Now, r.Hub
	r.Reader, err = reader.NewService(readerCfg, db, r)
	if err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// openRemote opens the remote-write log and a queue per endpoint.
func (r *Root) openRemote() error {
	lc := r.opts.RemoteLog
	if lc.Now == nil {
		lc.Now = r.opts.Now
	}
	l, err := remote.OpenLog(filepath.Join(r.opts.DataDir, "remote-write"), lc)
	if err != nil {
		return err
	}
	r.remoteLog = l
	m := remote.NewMetrics(r.reg)
	seen := map[string]bool{}
	for _, ep := range r.opts.Remote {
		if seen[ep.Name] {
			l.Close()
			return fmt.Errorf("remote write: endpoint name %q used twice", ep.Name)
		}
		seen[ep.Name] = true
		c, err := l.Cursor(ep.Name)
		if err == nil {
			var q *remote.Queue
			if q, err = remote.NewQueue(ep, c, m, r.log.With("component", "remote-write", "endpoint", ep.Name)); err == nil {
				r.queues = append(r.queues, q)
			}
		}
		if err != nil {
			l.Close()
			return err
		}
	}
	return nil
}

// SetControl replaces the configuration pushed down the tree (filter
// rules, keyframe period, aggregation rules) under a new version; within a
// few windows every node applies it. The root finalises with the new
// aggregation rules from its next window.
func (r *Root) SetControl(c *canopyv1.Control) error {
	rules, err := supernode.RulesFromProto(c.AggregationRules)
	if err != nil {
		return err
	}
	for i, fr := range c.FilterRules {
		if _, err := filter.RuleFromProto(fr); err != nil {
			return fmt.Errorf("filter rule %d: %w", i, err)
		}
	}
	next := nextControl(c, r.Parent.Control().GetConfigVersion(), time.Now())
	r.agg.SetRules(rules)
	r.Parent.SetControl(next)
	r.log.Info("control configuration", "version", next.ConfigVersion, "filter_rules", len(next.FilterRules), "aggregation_rules", len(rules))
	return nil
}

// Topology implements reader.TopologySource, with the imprecision of the
// tree, of each dc and of each of the root's subtrees as of the last
// window.
func (r *Root) Topology() *canopyv1.TopologyResponse {
	resp := &canopyv1.TopologyResponse{Root: r.Members.Info()}
	rep := r.finaliser.report()
	for _, c := range r.Members.Topology() {
		n := &canopyv1.TopologyNode{
			Node: c.Node, ParentId: c.ParentId, State: c.State,
			LastHeartbeatUnixMs: c.LastHeartbeatUnixMs, RttMicros: c.RttMicros,
		}
		if rep != nil && c.ParentId == resp.Root.Id {
			if ni, ok := rep.Children[c.Node.GetId()]; ok {
				n.Ni = ni.Proto()
			}
		}
		resp.Nodes = append(resp.Nodes, n)
	}
	if rep != nil {
		resp.Ni = rep.NI.Proto()
		for _, dc := range slices.Sorted(maps.Keys(rep.GroupNI)) {
			resp.GroupNi = append(resp.GroupNi, &canopyv1.GroupImprecision{Group: []*canopyv1.Label{{Name: "dc", Value: dc}}, Ni: rep.GroupNI[dc].Proto()})
		}
	}
	return resp
}

// Logger is the root's logger.
func (r *Root) Logger() *slog.Logger { return r.log }

// Registry holds the root's own metrics, served on /metrics.
func (r *Root) Registry() *prometheus.Registry { return r.reg }

// Serve runs the gRPC server (TreeService and ReaderService) on grpcLis
// and the HTTP server (REST gateway, /metrics, /healthz, OpenAPI) on
// httpLis until ctx ends, then shuts both down within a deadline.
func (r *Root) Serve(ctx context.Context, grpcLis, httpLis net.Listener) error {
	auth := reader.NewAuthenticator(r.opts.Reader.BearerToken)
	opts := append(r.Parent.ServerOptions(r.opts.MaxMessageBytes), auth.ServerOptions()...)
	if r.opts.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(r.opts.TLS)))
		httpLis = tls.NewListener(httpLis, r.opts.TLS)
	}
	srv := grpc.NewServer(opts...)
	r.Parent.Register(srv)
	canopyv1.RegisterReaderServiceServer(srv, r.Reader)
	errc := make(chan error, 3)
	go func() { errc <- srv.Serve(grpcLis) }()

	// The gateway reaches the reader in process, through a server of its
	// own: no TLS to itself, the same token check.
	gwSrv := grpc.NewServer(auth.ServerOptions()...)
	canopyv1.RegisterReaderServiceServer(gwSrv, r.Reader)
	local := bufconn.Listen(1 << 20)
	go func() { errc <- gwSrv.Serve(local) }()
	conn, err := grpc.NewClient("passthrough:///reader",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return local.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		srv.Stop()
		gwSrv.Stop()
		return fmt.Errorf("gateway connection: %w", err)
	}
	defer conn.Close()
	gw, err := reader.Gateway(ctx, conn, auth)
	if err != nil {
		srv.Stop()
		gwSrv.Stop()
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/api/", gw)
	mux.Handle("GET /metrics", promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openapi.Document)
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(r.log.Handler(), slog.LevelWarn)}
	go func() { errc <- hs.Serve(httpLis) }()

	// The root's tree core only detects failed children; it sends nothing.
	go ticker.Every(ctx, max(10*time.Millisecond, r.opts.Window/10), func() { r.Members.Tick() })
	go ticker.Every(ctx, r.opts.Window, r.housekeeping)
	queueCtx, stopQueues := context.WithCancel(context.Background())
	var queues sync.WaitGroup
	for _, q := range r.queues {
		queues.Go(func() {
			if err := q.Run(queueCtx); err != nil {
				r.log.Error("remote write stopped", "err", err)
			}
		})
	}

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	r.log.Info("root shutting down")
	r.Hub.Close() // subscribers' streams end; they would hold the graceful stop
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(shutdownCtx)
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-shutdownCtx.Done():
		srv.Stop()
	}
	gwSrv.Stop()
	// Nothing is appended any more: the queues stop where they are;
	// what they had not committed is sent after the next start.
	stopQueues()
	queues.Wait()
	if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

func (r *Root) housekeeping() {
	r.Parent.Sweep()
	r.Ingester.Forget(r.opts.ForgetAfter)
	if err := r.finaliser.run(context.Background(), r.Members.ChildStates(), r.opts.Now()); err != nil {
		r.log.Error("storing aggregates", "err", err)
	}
}

// Close closes storage; call after Serve returned.
func (r *Root) Close() error {
	err := r.DB.Close()
	if r.remoteLog != nil {
		err = errors.Join(err, r.remoteLog.Close())
	}
	return err
}
