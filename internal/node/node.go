// Package node assembles the canopy-node process from the leaf agent, the
// optional supernode service, the uplink to the parent and the local HTTP
// API, so the binary and the end-to-end tests run the same code. It must
// not import the TSDB or the REST gateway.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/canopytree/canopy/batch"
	_ "github.com/canopytree/canopy/internal/grpcsnappy" // heartbeats are snappy-compressed
	"github.com/canopytree/canopy/internal/ticker"
	"github.com/canopytree/canopy/leaf"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
	"github.com/canopytree/canopy/supernode"
)

// Node is a running canopy-node.
type Node struct {
	cfg   Config
	log   *slog.Logger
	reg   *prometheus.Registry
	conn  *grpc.ClientConn
	Agent *leaf.Agent
	// Supernode is nil in the leaf role.
	Supernode *supernode.Supernode
	treeAddr  atomic.Value // advertised address of the tree listener
}

// New builds a node from a validated configuration. epoch identifies this
// incarnation (batch seqs restart with it); pass 0 to derive it from the
// clock.
func New(cfg Config, epoch uint64, log *slog.Logger) (*Node, error) {
	if epoch == 0 {
		epoch = uint64(time.Now().UnixNano())
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	n := &Node{cfg: cfg, log: log, reg: reg}
	n.treeAddr.Store(cfg.Node.TreeListen)

	conn, err := grpc.NewClient(cfg.Node.Parent,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(cfg.Limits.MaxMessageBytes)),
		// gRPC's default reconnect backoff grows to two minutes; a parent
		// that comes back must see its children within a few windows.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: cfg.Batch.Window / 4, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * cfg.Batch.Window},
			MinConnectTimeout: cfg.Batch.Window,
		}))
	if err != nil {
		return nil, fmt.Errorf("node.parent: %w", err)
	}
	n.conn = conn
	session := epoch
	uplink := leaf.NewUplink(conn, cfg.Batch.MaxDictionary, func() uint64 { session++; return session })

	var fwd leaf.Forwarder
	if cfg.Node.Role == "supernode" {
		n.Supernode = supernode.New(supernode.Config{
			Self:          n.self,
			ChildLimit:    cfg.Node.ChildLimit,
			Limits:        cfg.Limits.Decode(),
			Instance:      epoch,
			Window:        cfg.Batch.Window,
			MissedWindows: 2,
			DeadWindows:   3,
			ForgetAfter:   20 * cfg.Batch.Window,
		}, batch.Limits{MaxSamples: cfg.Forward.MaxSamples, MaxBytes: cfg.Forward.MaxBytes}, reg, log.With("component", "supernode"))
		fwd = n.Supernode
	}

	var machine *leaf.MachineCollector
	if cfg.Scrape.Machine {
		if machine, err = leaf.NewMachineCollector(cfg.Scrape.ProcPath, cfg.Scrape.SysPath); err != nil {
			return nil, fmt.Errorf("scrape.machine: %w", err)
		}
	}
	n.Agent, err = leaf.NewAgent(leaf.AgentConfig{
		Identity:               leaf.Identity{Node: cfg.Node.ID, DC: cfg.Node.DC},
		ScrapeInterval:         cfg.Scrape.Interval,
		ScrapeTimeout:          cfg.Scrape.Timeout,
		Window:                 cfg.Batch.Window,
		Targets:                cfg.Scrape.Targets,
		Machine:                machine,
		Epoch:                  epoch,
		Delivery:               cfg.delivery(),
		Buffer:                 batch.Limits{MaxSamples: cfg.Batch.MaxSamples, MaxBytes: cfg.Batch.MaxBytes},
		RetransmitAfter:        cfg.Batch.RetransmitAfter,
		MaxBatchesPerHeartbeat: cfg.Batch.MaxBatchesPerHeartbeat,
	}, uplink, fwd, reg, log.With("component", "agent"))
	if err != nil {
		return nil, err
	}
	n.Agent.SetStatus(func(info *canopyv1.NodeInfo) {
		if n.Supernode != nil {
			info.Address = n.treeAddr.Load().(string)
		}
	})
	return n, nil
}

func (n *Node) self() *canopyv1.NodeInfo {
	return &canopyv1.NodeInfo{
		Id:       n.cfg.Node.ID,
		Address:  n.treeAddr.Load().(string),
		Dc:       n.cfg.Node.DC,
		Role:     canopyv1.Role_ROLE_SUPERNODE,
		Capacity: &canopyv1.Capacity{Cores: uint32(runtime.NumCPU())},
	}
}

// Registry holds the node's own metrics, served on /metrics.
func (n *Node) Registry() *prometheus.Registry { return n.reg }

// Run serves the local API on apiLis and, for a supernode, TreeService on
// treeLis, and runs the agent until ctx ends. Then it stops accepting
// children, sends a last heartbeat with what is sealed, and closes.
func (n *Node) Run(ctx context.Context, apiLis, treeLis net.Listener) error {
	errc := make(chan error, 2)
	var srv *grpc.Server
	if n.Supernode != nil {
		if treeLis == nil {
			return errors.New("supernode role needs a tree listener")
		}
		n.treeAddr.Store(treeLis.Addr().String())
		srv = grpc.NewServer(n.Supernode.ServerOptions(n.cfg.Limits.MaxMessageBytes)...)
		n.Supernode.Register(srv)
		go func() { errc <- srv.Serve(treeLis) }()
		go ticker.Every(ctx, n.cfg.Batch.Window, n.Supernode.Sweep)
	}
	mux := http.NewServeMux()
	mux.Handle("/api/", n.Agent.APIHandler())
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if apiLis != nil {
		go func() { errc <- hs.Serve(apiLis) }()
	}

	agentDone := make(chan error, 1)
	go func() { agentDone <- n.Agent.Run(ctx) }()
	var err error
	select {
	case err = <-errc:
	case err = <-agentDone:
	}
	n.log.Info("node shutting down", "node", n.cfg.Node.ID)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(shutdownCtx)
	if srv != nil {
		srv.Stop()
	}
	// Flush what was collected since the last window; under at-least-once
	// anything unacknowledged is gone with the process, so try once.
	if ferr := n.Agent.Heartbeat(shutdownCtx); ferr != nil {
		n.log.Warn("final heartbeat failed", "err", ferr)
	}
	n.conn.Close()
	if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}
