// Package node assembles the canopy-node process from the leaf agent, the
// supernode service, the tree membership core and its gRPC transport, and
// the local HTTP API, so the binary and the end-to-end tests run the same
// code. It must not import the TSDB or the REST gateway.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/procfs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/canopytree/canopy/batch"
	"github.com/canopytree/canopy/filter"
	"github.com/canopytree/canopy/internal/treegrpc"
	"github.com/canopytree/canopy/leaf"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
	"github.com/canopytree/canopy/supernode"
	"github.com/canopytree/canopy/tree"
)

// Node is a running canopy-node.
type Node struct {
	cfg       Config
	log       *slog.Logger
	reg       *prometheus.Registry
	conns     *treegrpc.Conns
	ownConns  bool // false: shared with other nodes of the process
	Members   *tree.Safe
	Agent     *leaf.Agent
	Supernode *supernode.Supernode // nil on a leaf-only node
	state     *stateFile
	agg       *supernode.Aggregator
	local     filter.Config // the node's own filter section

	serverCreds credentials.TransportCredentials // the tree listener's TLS; nil: plaintext

	configMu      sync.Mutex
	configVersion uint64 // of the control configuration applied

	wg sync.WaitGroup
}

// Option adjusts what New builds beyond the configuration file; the bench
// runs thousands of nodes in one process with them.
type Option func(*options)

type options struct {
	conns     *treegrpc.Conns
	collector leaf.Collector
}

// WithConns makes the node use a connection pool shared with the other
// nodes of its process (one connection per parent, however many nodes);
// the node does not close it. Such a node does not report the process's
// Go and process metrics, which are not its own.
func WithConns(c *treegrpc.Conns) Option { return func(o *options) { o.conns = c } }

// WithCollector replaces the machine collector with c.
func WithCollector(c leaf.Collector) Option { return func(o *options) { o.collector = c } }

// New builds a node from a validated configuration. epoch identifies this
// incarnation (batch seqs restart with it); pass 0 to derive it from the
// clock.
func New(cfg Config, epoch uint64, log *slog.Logger, opts ...Option) (*Node, error) {
	var o options
	for _, f := range opts {
		f(&o)
	}
	now := time.Now()
	if epoch == 0 {
		epoch = uint64(now.UnixNano())
	}
	reg := prometheus.NewRegistry()
	if o.conns == nil {
		reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	}
	n := &Node{cfg: cfg, log: log, reg: reg, state: &stateFile{dir: cfg.Node.StateDir}}
	var creds credentials.TransportCredentials
	if cfg.TLS.ClientEnabled() {
		tc, err := cfg.TLS.Client()
		if err != nil {
			return nil, fmt.Errorf("tls.%w", err)
		}
		creds = credentials.NewTLS(tc)
	}
	if cfg.TLS.ServerEnabled() {
		tc, err := cfg.TLS.Server()
		if err != nil {
			return nil, fmt.Errorf("tls.%w", err)
		}
		n.serverCreds = credentials.NewTLS(tc)
	}
	n.conns, n.ownConns = o.conns, o.conns == nil
	if n.ownConns {
		n.conns = treegrpc.NewConns(cfg.Batch.Window, cfg.Limits.MaxMessageBytes, creds)
	}

	tc := cfg.treeConfig(detectCapacity(cfg, now))
	if role, ok, err := n.state.role(); err != nil {
		return nil, err
	} else if ok && !tc.Pinned && !tc.LeafOnly {
		tc.Role = role // a promotion survives restarts
	}
	core, err := tree.NewNode(tc, now)
	if err != nil {
		return nil, fmt.Errorf("tree: %w", err)
	}
	n.Members = tree.NewSafe(core, time.Now)

	var fwd leaf.Forwarder
	if !tc.LeafOnly {
		// Aggregation rules come from the root with the first heartbeat
		// reply.
		n.agg = supernode.NewAggregator(nil)
		n.Supernode = supernode.New(supernode.Config{
			Limits:      cfg.Limits.Decode(),
			Instance:    epoch,
			ForgetAfter: cfg.Tree.ForgetAfter,
			Aggregator:  n.agg,
		}, n.Members, batch.Limits{MaxSamples: cfg.Forward.MaxSamples, MaxBytes: cfg.Forward.MaxBytes}, reg, log.With("component", "supernode"))
		fwd = n.Supernode
	}

	collector := o.collector
	if collector == nil && cfg.Scrape.Machine {
		if collector, err = leaf.NewMachineCollector(cfg.Scrape.ProcPath, cfg.Scrape.SysPath); err != nil {
			return nil, fmt.Errorf("scrape.machine: %w", err)
		}
	}
	fcfg, err := cfg.Filter.filterConfig()
	if err != nil {
		return nil, err
	}
	n.local = fcfg
	session := epoch
	uplink := leaf.NewUplink(n.conns.Dummy(), cfg.Batch.MaxDictionary, func() uint64 { session++; return session })
	n.Agent, err = leaf.NewAgent(leaf.AgentConfig{
		Identity:               leaf.Identity{Node: cfg.Node.ID, DC: cfg.Node.DC},
		ScrapeInterval:         cfg.Scrape.Interval,
		ScrapeTimeout:          cfg.Scrape.Timeout,
		Window:                 cfg.Batch.Window,
		Targets:                cfg.Scrape.Targets,
		Collector:              collector,
		Filter:                 filter.New(fcfg),
		Epoch:                  epoch,
		Delivery:               cfg.delivery(),
		Buffer:                 batch.Limits{MaxSamples: cfg.Batch.MaxSamples, MaxBytes: cfg.Batch.MaxBytes},
		RetransmitAfter:        cfg.Batch.RetransmitAfter,
		MaxBatchesPerHeartbeat: cfg.Batch.MaxBatchesPerHeartbeat,
		MaxForwardSamples:      cfg.Forward.MaxMessageSamples,
	}, uplink, fwd, reg, log.With("component", "agent"))
	if err != nil {
		return nil, err
	}
	return n, nil
}

// detectCapacity reads cores, memory and boot time from the machine; the
// link bandwidth comes from configuration.
func detectCapacity(cfg Config, now time.Time) tree.Capacity {
	c := tree.Capacity{Cores: runtime.NumCPU(), LinkBandwidthBps: uint64(cfg.Tree.LinkBandwidthMbps) * 1e6, Boot: now}
	if fs, err := procfs.NewFS(cfg.Scrape.ProcPath); err == nil {
		if mi, err := fs.Meminfo(); err == nil && mi.MemTotalBytes != nil {
			c.MemoryBytes = *mi.MemTotalBytes
		}
		if st, err := fs.Stat(); err == nil && st.BootTime > 0 {
			c.Boot = time.Unix(int64(st.BootTime), 0)
		}
	}
	return c
}

// Registry holds the node's own metrics, served on /metrics.
func (n *Node) Registry() *prometheus.Registry { return n.reg }

// Run serves the local API on apiLis and TreeService on treeLis (nil on a
// leaf-only node), and drives the tree until ctx ends. Then a node with
// children hands them a candidate list and waits a window for them to
// hear it, drains what it holds to the root, and tells its parent it
// leaves.
func (n *Node) Run(ctx context.Context, apiLis, treeLis net.Listener) error {
	errc := make(chan error, 2)
	var srv *grpc.Server
	if n.Supernode != nil && treeLis != nil {
		opts := n.Supernode.ServerOptions(n.cfg.Limits.MaxMessageBytes)
		if n.serverCreds != nil {
			opts = append(opts, grpc.Creds(n.serverCreds))
		}
		srv = grpc.NewServer(opts...)
		n.Supernode.Register(srv)
		go func() { errc <- srv.Serve(treeLis) }()
	}
	mux := http.NewServeMux()
	mux.Handle("/api/", n.Agent.APIHandler())
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if apiLis != nil {
		go func() { errc <- hs.Serve(apiLis) }()
	}
	scrapeCtx, stopScraping := context.WithCancel(context.Background())
	go n.Agent.Run(scrapeCtx)

	// The driver: the tree core decides when to probe, join and send a
	// heartbeat; requests go out on their own goroutines and come back
	// through Deliver.
	tick := time.NewTicker(tickEvery(n.cfg.Batch.Window))
	var err error
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case err = <-errc:
			done = true
		case <-tick.C:
			n.step(n.Members.Tick())
		}
	}
	tick.Stop()
	n.log.Info("node shutting down", "node", n.cfg.Node.ID)
	n.leave()
	stopScraping()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(shutdownCtx)
	if srv != nil {
		srv.Stop()
	}
	n.wg.Wait()
	if n.ownConns {
		n.conns.Close()
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

// tickEvery is the driver's clock: a twentieth of a window, at most 250 ms
// (heartbeats stay a window apart when the window is a multiple of it,
// and a process emulating thousands of nodes does not spend its CPU
// waking them).
func tickEvery(window time.Duration) time.Duration {
	return max(10*time.Millisecond, min(250*time.Millisecond, window/20))
}

// leave departs gracefully: children get a rejoin offer with their next
// heartbeat (they send one every window), the parent is told, and the last
// window goes out.
func (n *Node) leave() {
	if top := n.Members.Topology(); len(top) > 0 {
		n.Members.Leave()
		deadline := time.Now().Add(n.cfg.Batch.Window + n.cfg.Batch.Window/2)
		for time.Now().Before(deadline) {
			time.Sleep(tickEvery(n.cfg.Batch.Window))
			n.step(n.Members.Tick())
		}
	}
	if p := n.Members.Parent(); p != nil {
		n.drain()
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.Tree.RequestTimeout)
	defer cancel()
	for _, env := range n.Members.Depart() {
		if _, err := n.conns.Call(ctx, env.To, env.Msg); err != nil {
			n.log.Debug("leave", "err", err)
		}
	}
}

// drain seals the last window and keeps heartbeating, up to
// batch.drain_timeout, until the root has acknowledged everything the node
// holds, its children's queued batches included.
func (n *Node) drain() {
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.Batch.DrainTimeout)
	defer cancel()
	status := &canopyv1.HeartbeatRequest{Node: n.Members.Info(), Moved: n.Members.Moved()}
	n.annotate(status)
	if _, err := n.Agent.Heartbeat(ctx, status); err != nil {
		n.log.Warn("final heartbeat failed", "err", err)
	}
	if err := n.Agent.Drain(ctx, status, max(10*time.Millisecond, n.cfg.Batch.Window/4)); err != nil {
		n.log.Warn("stopping with data not acknowledged", "err", err)
	}
}

// ConfigVersion is the version of the configuration pushed down from the
// root that the node applied (0: none yet).
func (n *Node) ConfigVersion() uint64 {
	n.configMu.Lock()
	defer n.configMu.Unlock()
	return n.configVersion
}

// annotate adds the data part of a heartbeat: the configuration version
// applied and, on a supernode, the report of its descendants.
func (n *Node) annotate(hb *canopyv1.HeartbeatRequest) {
	n.configMu.Lock()
	hb.ConfigVersion = n.configVersion
	n.configMu.Unlock()
	if n.agg != nil {
		n.agg.Report(n.Members.ChildStates()).Heartbeat(hb, time.Now().UnixMilli())
	}
}

// applyControl applies configuration pushed down from the root once per
// version: dead-band rules go ahead of the node's own, aggregation rules
// replace what the node had, and children get the same with their next
// replies.
func (n *Node) applyControl(c *canopyv1.Control) {
	n.configMu.Lock()
	defer n.configMu.Unlock()
	if c.GetConfigVersion() <= n.configVersion {
		return
	}
	rules := make([]filter.Rule, 0, len(c.FilterRules)+len(n.local.Rules))
	for i, r := range c.FilterRules {
		fr, err := filter.RuleFromProto(r)
		if err != nil {
			n.log.Error("ignoring pushed configuration", "version", c.ConfigVersion, "err", fmt.Errorf("filter rule %d: %w", i, err))
			return
		}
		rules = append(rules, fr)
	}
	aggs, err := supernode.RulesFromProto(c.AggregationRules)
	if err != nil {
		n.log.Error("ignoring pushed configuration", "version", c.ConfigVersion, "err", err)
		return
	}
	keyframes := n.local.KeyframeWindows
	if c.KeyframeWindows > 0 {
		keyframes = int(c.KeyframeWindows)
	}
	n.Agent.Reconfigure(append(rules, n.local.Rules...), keyframes)
	if n.Supernode != nil {
		n.agg.SetRules(aggs)
		n.Supernode.SetControl(c)
	}
	n.configVersion = c.ConfigVersion
	n.log.Info("applied pushed configuration", "version", c.ConfigVersion, "filter_rules", len(c.FilterRules), "aggregation_rules", len(aggs))
}

// step acts on what the core decided.
func (n *Node) step(envs []tree.Envelope, events []tree.Event) {
	for _, ev := range events {
		switch ev.Kind {
		case tree.RoleChanged:
			n.log.Info("role changed", "role", ev.Role.String())
			if err := n.state.saveRole(ev.Role); err != nil {
				n.log.Error("cannot persist role", "err", err)
			}
		case tree.ParentChanged:
			if ev.Addr == "" {
				n.log.Warn("detached from parent; looking for a new one")
				continue
			}
			n.log.Info("joined parent", "parent", ev.ID, "addr", ev.Addr)
			n.Agent.SetParent(n.conns.Get(ev.Addr))
		}
	}
	for _, env := range envs {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.send(env)
		}()
	}
}

func (n *Node) send(env tree.Envelope) {
	hb, isHeartbeat := env.Msg.(*canopyv1.HeartbeatRequest)
	// A heartbeat may carry a subtree's window (a new session's first one
	// carries every series' labels): it may take as long as the node would
	// wait for its parent anyway, dead_windows windows.
	timeout := n.cfg.Tree.RequestTimeout
	if isHeartbeat {
		timeout = max(timeout, time.Duration(n.cfg.Tree.DeadWindows)*n.cfg.Batch.Window)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if isHeartbeat && env.To == "" {
		// No parent: the window is sealed and waits in the buffer.
		_, _ = n.Agent.Heartbeat(ctx, nil)
		return
	}
	var resp any
	var err error
	if isHeartbeat {
		n.annotate(hb)
		var r *canopyv1.HeartbeatResponse
		r, err = n.Agent.Heartbeat(ctx, hb)
		n.applyControl(r.GetControl())
		resp = r
	} else {
		resp, err = n.conns.Call(ctx, env.To, env.Msg)
	}
	if err != nil {
		n.log.Debug("tree request failed", "to", env.To, "msg", fmt.Sprintf("%T", env.Msg), "err", err)
	}
	n.step(n.Members.Deliver(env, treegrpc.Message(resp), treegrpc.Error(err)))
}
