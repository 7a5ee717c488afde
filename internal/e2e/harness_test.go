package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/canopytree/canopy/batch"
	"github.com/canopytree/canopy/internal/node"
	"github.com/canopytree/canopy/leaf"
	"github.com/canopytree/canopy/root"
)

// Timings of the test tree: fast enough for a test, with the same ratio of
// scrape interval to window as the defaults.
const (
	scrapeInterval = 100 * time.Millisecond
	window         = 250 * time.Millisecond
)

var nodeBinary, rootBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "canopy-e2e")
	if err != nil {
		panic(err)
	}
	nodeBinary = filepath.Join(dir, "canopy-node")
	rootBinary = filepath.Join(dir, "canopy-root")
	for bin, pkg := range map[string]string{nodeBinary: "./cmd/canopy-node", rootBinary: "./cmd/canopy-root"} {
		build := exec.Command("go", "build", "-o", bin, "github.com/canopytree/canopy/"+strings.TrimPrefix(pkg, "./"))
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build", pkg+":", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("test", t.Name())
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// freeAddr reserves a loopback port and releases it for a process to bind.
func freeAddr(t *testing.T) string {
	l := listen(t)
	addr := l.Addr().String()
	l.Close()
	return addr
}

// eventually polls cond until it holds or the deadline passes. End-to-end
// tests run real processes on real sockets; only they may poll.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type rootRun struct {
	*root.Root
	grpcAddr, httpAddr string
}

func startRoot(t *testing.T) *rootRun {
	t.Helper()
	return startRootOn(t, listen(t))
}

// startRootOn serves the root's gRPC on g (a fixed address lets a test
// start children before their parent exists).
func startRootOn(t *testing.T, g net.Listener) *rootRun {
	t.Helper()
	return startRootConfigured(t, g, 0, window)
}

// startRootConfigured runs a root with a child limit (0: none) and window.
func startRootConfigured(t *testing.T, g net.Listener, childLimit int, window time.Duration) *rootRun {
	t.Helper()
	return startRootWith(t, g, func(o *root.Options) { o.ChildLimit, o.Window = childLimit, window })
}

// startRootWith lets a test adjust the root's options.
func startRootWith(t *testing.T, g net.Listener, adjust func(*root.Options)) *rootRun {
	t.Helper()
	opts := root.Options{
		ID: "root", Address: g.Addr().String(), DataDir: t.TempDir(),
		Retention: 24 * time.Hour, OutOfOrderWindow: time.Hour,
		Window: window, MaxMessageBytes: 4 << 20,
		Limits:      batch.DecodeLimits{MaxSeries: 100_000, MaxSamples: 500_000, MaxLabelsPerSet: 64, MaxLabelNameLen: 128, MaxLabelValueLen: 1024, MaxDictionarySize: 1_000_000},
		Ingest:      root.IngestConfig{MaxAge: time.Hour, MaxFuture: time.Minute},
		ForgetAfter: time.Minute,
	}
	adjust(&opts)
	r, err := root.Open(opts, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	h := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, g, h) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("root: %v", err)
		}
		r.Close()
	})
	return &rootRun{Root: r, grpcAddr: g.Addr().String(), httpAddr: h.Addr().String()}
}

// supernodeProcess is a canopy-node process in the supernode role.
type supernodeProcess struct {
	t          *testing.T
	cmd        *exec.Cmd
	configFile string
	treeAddr   string
}

func startSupernode(t *testing.T, id, parent string) *supernodeProcess {
	t.Helper()
	p := &supernodeProcess{t: t, treeAddr: freeAddr(t), configFile: filepath.Join(t.TempDir(), "supernode.yaml")}
	cfg := fmt.Sprintf(`node:
  id: %s
  dc: eu-1
  role: supernode
  roots: [%s]
  static: true
  listen: 127.0.0.1:0
  tree_listen: %s
scrape:
  interval: %s
  timeout: %s
  machine: true
batch:
  window: %s
  retransmit_after: 5s
log:
  level: warn
`, id, parent, p.treeAddr, scrapeInterval, scrapeInterval, window)
	if err := os.WriteFile(p.configFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p.start()
	t.Cleanup(p.kill)
	return p
}

func (p *supernodeProcess) start() {
	p.cmd = exec.Command(nodeBinary, "--config", p.configFile)
	p.cmd.Stderr = os.Stderr
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	// Ready when it accepts connections from children.
	eventually(p.t, 10*time.Second, "supernode listening", func() bool {
		c, err := net.Dial("tcp", p.treeAddr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// kill is kill -9: no final heartbeat, queued batches gone.
func (p *supernodeProcess) kill() {
	if p.cmd == nil || p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
}

// leafRun is an in-process leaf with its own target, recording every batch
// it sealed.
type leafRun struct {
	id     string
	target *ExporterTarget
	node   *node.Node
	cancel context.CancelFunc
	done   chan error

	mu     sync.Mutex
	sealed map[uint64][]batch.Series
}

func startLeaf(t *testing.T, id, dc, parent string) *leafRun {
	t.Helper()
	return startLeafWith(t, id, dc, parent, func(*node.Config) {})
}

// startLeafWith lets a test adjust the leaf's configuration.
func startLeafWith(t *testing.T, id, dc, parent string, adjust func(*node.Config)) *leafRun {
	t.Helper()
	l := &leafRun{id: id, target: NewExporterTarget(2), sealed: map[uint64][]batch.Series{}, done: make(chan error, 1)}
	t.Cleanup(l.target.Close)
	cfg := node.Default()
	cfg.Node.ID, cfg.Node.DC, cfg.Node.Roots, cfg.Node.Static = id, dc, []string{parent}, true
	cfg.Scrape.Interval, cfg.Scrape.Timeout, cfg.Scrape.Machine = scrapeInterval, scrapeInterval, false
	cfg.Scrape.Targets = []leaf.Target{{Name: "node_exporter", URL: l.target.URL + "/metrics"}}
	cfg.Batch.Window, cfg.Batch.RetransmitAfter = window, 5*time.Second
	adjust(&cfg)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	n, err := node.New(cfg, 0, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	l.node = n
	n.Agent.Observe(func(id batch.ID, series []batch.Series) {
		l.mu.Lock()
		l.sealed[id.Seq] = series
		l.mu.Unlock()
	})
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	go func() { l.done <- n.Run(ctx, listen(t), nil) }()
	t.Cleanup(l.stop)
	return l
}

func (l *leafRun) stop() {
	if l.cancel != nil {
		l.cancel()
		<-l.done
		l.cancel = nil
	}
}

// eachSample visits every sample the root's TSDB holds up to maxt in the
// series ms select, series by series, in timestamp order.
func eachSample(t *testing.T, r *rootRun, maxt int64, ms []*labels.Matcher, f func(ls labels.Labels, ts int64, v float64)) {
	t.Helper()
	q, err := r.DB.Querier(math.MinInt64, maxt)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	set := q.Select(context.Background(), false, nil, ms...)
	var it chunkenc.Iterator
	for set.Next() {
		ls := set.At().Labels()
		it = set.At().Iterator(it)
		for it.Next() == chunkenc.ValFloat {
			ts, v := it.At()
			f(ls, ts, v)
		}
	}
	if err := set.Err(); err != nil {
		t.Fatal(err)
	}
}

// everything selects every series.
var everything = []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, labels.MetricName, ".+")}

// withLabels returns ls with extra set (external labels, as a sink sees them).
func withLabels(ls, extra labels.Labels) labels.Labels {
	b := labels.NewBuilder(ls)
	extra.Range(func(l labels.Label) { b.Set(l.Name, l.Value) })
	return b.Labels()
}

// stored reads every sample of the node from the TSDB, keyed by series.
func stored(t *testing.T, r *rootRun, nodeID string) map[string]map[int64]float64 {
	t.Helper()
	q, err := r.DB.Querier(math.MinInt64, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	out := map[string]map[int64]float64{}
	set := q.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchEqual, "node", nodeID))
	var it chunkenc.Iterator
	for set.Next() {
		s := set.At()
		points := map[int64]float64{}
		it = s.Iterator(it)
		last := int64(math.MinInt64)
		for it.Next() == chunkenc.ValFloat {
			ts, v := it.At()
			if ts <= last {
				t.Errorf("%s: timestamps not strictly increasing (%d after %d): duplicate stored", s.Labels(), ts, last)
			}
			last = ts
			points[ts] = v
		}
		out[s.Labels().String()] = points
	}
	if err := set.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
