package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/canopytree/canopy/batch"
	"github.com/canopytree/canopy/internal/config"
	"github.com/canopytree/canopy/internal/node"
	"github.com/canopytree/canopy/internal/treegrpc"
	"github.com/canopytree/canopy/leaf"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// Workload is the synthetic series an emulated node exposes, shaped like
// node_exporter's: many constant values (sizes, hardware facts), gauges
// that drift now and then (free memory, free space), counters that grow
// every scrape (CPU seconds, bytes), and noisy gauges (load).
type Workload struct {
	Series int
	// Fractions of the series of each kind; the rest are constant.
	Drifting, Counters, Noisy float64
	// DriftEvery is the chance a drifting gauge changes at a scrape.
	DriftEvery float64
}

// DefaultWorkload is node_exporter-like: 45 % constant, 25 % drifting
// (10 % of scrapes), 20 % counters, 10 % noisy.
func DefaultWorkload(series int) Workload {
	return Workload{Series: series, Drifting: 0.25, Counters: 0.2, Noisy: 0.1, DriftEvery: 0.1}
}

type seriesKind uint8

const (
	constant seriesKind = iota
	drifting
	counter
	noisy
)

// families are the metric names emulated series take, with the label that
// tells their instances apart.
var families = []struct{ name, label string }{
	{"node_cpu_seconds_total", "cpu"}, {"node_memory_bytes", "field"}, {"node_filesystem_avail_bytes", "mountpoint"},
	{"node_network_receive_bytes_total", "device"}, {"node_disk_read_bytes_total", "device"},
	{"node_hwmon_temp_celsius", "sensor"}, {"node_load", "period"}, {"node_netstat_tcp", "field"},
}

// Synthetic is one emulated node's collector: its series and their state.
// It counts what it produced.
type Synthetic struct {
	mu     sync.Mutex
	ls     []labels.Labels
	kinds  []seriesKind
	values []float64
	rng    *rand.Rand
	w      Workload

	Produced *atomic.Int64 // shared by the nodes of a process
}

// NewSynthetic builds node id's series; seed makes nodes differ.
func NewSynthetic(w Workload, id leaf.Identity, seed uint64, produced *atomic.Int64) *Synthetic {
	s := &Synthetic{rng: rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)), w: w, Produced: produced}
	b := labels.NewScratchBuilder(6)
	for i := range w.Series {
		f := families[i%len(families)]
		b.Reset()
		b.Add(labels.MetricName, f.name)
		b.Add(f.label, fmt.Sprintf("%s%d", f.label, i/len(families)))
		b.Add(leaf.LabelNode, id.Node)
		b.Add(leaf.LabelDC, id.DC)
		b.Add(leaf.LabelJob, "node_exporter")
		b.Add(leaf.LabelLevel, string(leaf.LevelMachine))
		b.Sort()
		s.ls = append(s.ls, b.Labels())
		kind := constant
		switch x := float64(i*37%100) / 100; { // 37 is coprime with 100: kinds interleave
		case x < w.Counters:
			kind = counter
		case x < w.Counters+w.Noisy:
			kind = noisy
		case x < w.Counters+w.Noisy+w.Drifting:
			kind = drifting
		}
		s.kinds = append(s.kinds, kind)
		s.values = append(s.values, math.Round(s.rng.Float64()*1e6))
	}
	return s
}

// Collect advances every series one scrape and returns their values.
func (s *Synthetic) Collect(_ leaf.Identity, now time.Time) ([]leaf.ScrapedSample, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := now.UnixMilli()
	out := make([]leaf.ScrapedSample, len(s.ls))
	for i, ls := range s.ls {
		typ := canopyv1.MetricType_METRIC_TYPE_GAUGE
		switch s.kinds[i] {
		case counter:
			s.values[i] += float64(1 + s.rng.IntN(1000))
			typ = canopyv1.MetricType_METRIC_TYPE_COUNTER
		case noisy:
			s.values[i] = math.Round(s.rng.Float64() * 400)
		case drifting:
			if s.rng.Float64() < s.w.DriftEvery {
				s.values[i] += float64(s.rng.IntN(2001) - 1000)
			}
		}
		out[i] = leaf.ScrapedSample{Labels: ls, Type: typ, T: t, V: s.values[i]}
	}
	s.Produced.Add(int64(len(out)))
	return out, nil
}

// EmulationConfig is what the emulated roles share.
type EmulationConfig struct {
	Window, ScrapeInterval time.Duration
	Workload               Workload
	DCs                    int
	MaxMessageBytes        int
}

// leafIdentity names leaf i and spreads the leaves over the dcs.
func (c EmulationConfig) leafIdentity(i int) leaf.Identity {
	return leaf.Identity{Node: fmt.Sprintf("leaf-%06d", i), DC: fmt.Sprintf("dc-%d", i%max(1, c.DCs))}
}

// after runs f once d has passed, unless ctx ends first: starts are
// staggered so that heartbeats do not arrive in lockstep.
func after(ctx context.Context, d time.Duration, f func()) {
	select {
	case <-time.After(d):
		f()
	case <-ctx.Done():
	}
}

func (c EmulationConfig) nodeConfig(id, dc, parent string) node.Config {
	cfg := node.Default()
	cfg.Node.ID, cfg.Node.DC, cfg.Node.Roots, cfg.Node.Static = id, dc, []string{parent}, true
	cfg.Node.Role, cfg.Node.Listen = "leaf-only", ""
	cfg.Scrape.Interval, cfg.Scrape.Timeout, cfg.Scrape.Machine = c.ScrapeInterval, c.ScrapeInterval, false
	cfg.Batch.Window = c.Window
	cfg.Batch.RetransmitAfter = max(time.Minute, 6*c.Window)
	cfg.Batch.DrainTimeout = 3 * c.Window
	cfg.Limits.MaxMessageBytes = c.MaxMessageBytes
	cfg.Log = config.Log{Level: "warn", Format: "text"}
	return cfg
}

// Emulated is a set of nodes running in this process.
type Emulated struct {
	Nodes    []*node.Node
	Produced atomic.Int64 // samples the synthetic collectors produced
	Sealed   atomic.Int64 // samples the nodes sealed into batches (after the filter)

	cancel context.CancelFunc
	wg     sync.WaitGroup
	conns  *treegrpc.Conns
}

// StartSpread is how long StartLeaves takes to start count leaves: at
// least a window, so their heartbeats do not arrive in lockstep, and 2 ms
// per leaf, so joining (a first session carries every series' labels) is
// a ramp, not a storm.
func StartSpread(count int, window time.Duration) time.Duration {
	return max(window, time.Duration(count)*2*time.Millisecond)
}

// StartLeaves runs count emulated leaves with ids leaf-<first>… in this
// process, leaf i below parents[i % len(parents)]. Every leaf runs the real
// node: filter, batch, heartbeat, acknowledgements; they share one
// connection per parent. Starts are spread over StartSpread.
func StartLeaves(c EmulationConfig, first, count int, parents []string, log *slog.Logger) (*Emulated, error) {
	e := &Emulated{conns: treegrpc.NewConns(c.Window, c.MaxMessageBytes, nil)}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	if log != nil {
		quiet = log
	}
	for i := first; i < first+count; i++ {
		id := c.leafIdentity(i)
		cfg := c.nodeConfig(id.Node, id.DC, parents[i%len(parents)])
		if err := cfg.Validate(); err != nil {
			e.Stop()
			return nil, err
		}
		syn := NewSynthetic(c.Workload, id, uint64(i)+1, &e.Produced)
		n, err := node.New(cfg, 0, quiet, node.WithConns(e.conns), node.WithCollector(syn))
		if err != nil {
			e.Stop()
			return nil, err
		}
		n.Agent.Observe(func(_ batch.ID, series []batch.Series) {
			var k int64
			for _, s := range series {
				k += int64(len(s.Samples))
			}
			e.Sealed.Add(k)
		})
		e.Nodes = append(e.Nodes, n)
	}
	stagger := StartSpread(count, c.Window) / time.Duration(max(1, count))
	for i, n := range e.Nodes {
		e.wg.Go(func() { after(ctx, time.Duration(i)*stagger, func() { _ = n.Run(ctx, nil, nil) }) })
	}
	return e, nil
}

// StartSupernodes runs one supernode per parent address, each listening on
// a loopback port of its own, and returns their addresses in order.
func StartSupernodes(c EmulationConfig, level int, parents []string, childLimit int, log *slog.Logger) (*Emulated, []string, error) {
	e := &Emulated{conns: treegrpc.NewConns(c.Window, c.MaxMessageBytes, nil)}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	var addrs []string
	for i, parent := range parents {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			e.Stop()
			return nil, nil, err
		}
		cfg := c.nodeConfig(fmt.Sprintf("sn-%d-%04d", level, i), fmt.Sprintf("dc-%d", i%max(1, c.DCs)), parent)
		cfg.Node.Role, cfg.Node.TreeListen, cfg.Node.Advertise = "supernode", lis.Addr().String(), lis.Addr().String()
		cfg.Tree.ChildLimit = childLimit
		// A whole subtree's window in one upward heartbeat, as the model
		// has it: a top supernode over 10,000 leaves forwards about a
		// million samples a window, past the default budget.
		cfg.Forward.MaxMessageSamples, cfg.Forward.MaxSamples, cfg.Forward.MaxBytes = 50_000_000, 100_000_000, 8<<30
		cfg.Limits.MaxSamples, cfg.Limits.MaxSeries, cfg.Limits.MaxDictionary = 50_000_000, 10_000_000, 50_000_000
		if err := cfg.Validate(); err != nil {
			e.Stop()
			return nil, nil, err
		}
		n, err := node.New(cfg, 0, log, node.WithConns(e.conns))
		if err != nil {
			e.Stop()
			return nil, nil, err
		}
		e.Nodes = append(e.Nodes, n)
		addrs = append(addrs, lis.Addr().String())
		start := time.Duration(i) * c.Window / time.Duration(len(parents)) // spread over a window
		e.wg.Go(func() { after(ctx, start, func() { _ = n.Run(ctx, nil, lis) }) })
	}
	return e, addrs, nil
}

// Stop stops every node and waits for them.
func (e *Emulated) Stop() {
	if e.cancel != nil {
		e.cancel()
	}
	e.wg.Wait()
	e.conns.Close()
}
