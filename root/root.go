package root

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/prometheus/tsdb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/canopytree/canopy/batch"
	_ "github.com/canopytree/canopy/internal/grpcsnappy" // children compress heartbeats with snappy
	"github.com/canopytree/canopy/internal/ticker"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
	"github.com/canopytree/canopy/proto/openapi"
	"github.com/canopytree/canopy/reader"
	"github.com/canopytree/canopy/supernode"
)

// Options is what a Root needs; the root binary fills it from its
// configuration file.
type Options struct {
	ID      string
	DataDir string
	// Retention of the embedded TSDB.
	Retention time.Duration
	// OutOfOrderWindow lets retransmitted batches land behind newer data.
	OutOfOrderWindow time.Duration
	ChildLimit       int
	Window           time.Duration
	MaxMessageBytes  int
	Limits           batch.DecodeLimits
	Ingest           IngestConfig
	Reader           reader.Config
	// ForgetAfter is the soft-state timeout for silent children and for
	// the dedup ledger of origins that stopped sending.
	ForgetAfter time.Duration
	Instance    uint64
	Now         func() time.Time
}

// Root is the running top of the tree.
type Root struct {
	opts     Options
	log      *slog.Logger
	reg      *prometheus.Registry
	DB       *tsdb.DB
	Parent   *supernode.Parent
	Ingester *Ingester
	Reader   *reader.Service
	started  time.Time
}

// Open opens storage and wires the root's components.
func Open(opts Options, log *slog.Logger) (*Root, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Instance == 0 {
		opts.Instance = uint64(time.Now().UnixNano())
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
	r := &Root{opts: opts, log: log, reg: reg, DB: db, started: opts.Now()}
	ingestCfg := opts.Ingest
	ingestCfg.Now = opts.Now
	r.Ingester = NewIngester(ingestCfg, db, func(acks []*canopyv1.Ack) { r.Parent.Acknowledge(acks) }, reg)
	r.Parent = supernode.NewParent(supernode.Config{
		Self:          r.self,
		ChildLimit:    opts.ChildLimit,
		Limits:        opts.Limits,
		Instance:      opts.Instance,
		Window:        opts.Window,
		MissedWindows: 2,
		DeadWindows:   3,
		ForgetAfter:   opts.ForgetAfter,
		Now:           opts.Now,
	}, r.Ingester, reg, log.With("component", "parent"))
	readerCfg := opts.Reader
	readerCfg.Now = opts.Now
	r.Reader, err = reader.NewService(readerCfg, db, r)
	if err != nil {
		db.Close()
		return nil, err
	}
	return r, nil
}

func (r *Root) self() *canopyv1.NodeInfo {
	return &canopyv1.NodeInfo{
		Id:       r.opts.ID,
		Role:     canopyv1.Role_ROLE_ROOT,
		Level:    0,
		Capacity: &canopyv1.Capacity{UptimeSeconds: uint64(r.opts.Now().Sub(r.started).Seconds())},
	}
}

// Topology implements reader.TopologySource.
func (r *Root) Topology() *canopyv1.TopologyResponse {
	nodes, direct, size := r.Parent.Subtree(r.opts.ID)
	self := r.self()
	self.ChildCount = uint32(direct)
	self.ChildLimit = uint32(r.opts.ChildLimit)
	self.SubtreeSize = 1 + size
	resp := &canopyv1.TopologyResponse{Root: self}
	for _, c := range nodes {
		resp.Nodes = append(resp.Nodes, &canopyv1.TopologyNode{
			Node: c.Node, ParentId: c.ParentId, State: c.State,
			LastHeartbeatUnixMs: c.LastHeartbeatUnixMs, RttMicros: c.RttMicros,
		})
	}
	return resp
}

// Registry holds the root's own metrics, served on /metrics.
func (r *Root) Registry() *prometheus.Registry { return r.reg }

// Serve runs the gRPC server (TreeService and ReaderService) on grpcLis
// and the HTTP server (REST gateway, /metrics, /healthz, OpenAPI) on
// httpLis until ctx ends, then shuts both down within a deadline.
func (r *Root) Serve(ctx context.Context, grpcLis, httpLis net.Listener) error {
	srv := grpc.NewServer(r.Parent.ServerOptions(r.opts.MaxMessageBytes)...)
	r.Parent.Register(srv)
	canopyv1.RegisterReaderServiceServer(srv, r.Reader)
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(grpcLis) }()

	conn, err := grpc.NewClient(grpcLis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		srv.Stop()
		return fmt.Errorf("gateway connection: %w", err)
	}
	defer conn.Close()
	gw, err := reader.Gateway(ctx, conn)
	if err != nil {
		srv.Stop()
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
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { errc <- hs.Serve(httpLis) }()

	go ticker.Every(ctx, r.opts.Window, r.housekeeping)

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	r.log.Info("root shutting down")
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
	if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

func (r *Root) housekeeping() {
	r.Parent.Sweep()
	r.Ingester.Forget(r.opts.ForgetAfter)
}

// Close closes storage; call after Serve returned.
func (r *Root) Close() error { return r.DB.Close() }
