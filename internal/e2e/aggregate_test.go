package e2e

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"

	"github.com/canopytree/canopy/internal/node"
	"github.com/canopytree/canopy/leaf"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
	"github.com/canopytree/canopy/root"
)

// loadTarget serves one gauge whose value the test sets.
type loadTarget struct {
	*httptest.Server
	v    atomic.Int64
	gone atomic.Bool // the series is no longer exposed
}

func newLoadTarget(t *testing.T, v int64) *loadTarget {
	lt := &loadTarget{}
	lt.v.Store(v)
	lt.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !lt.gone.Load() {
			fmt.Fprintf(w, "# TYPE canopy_test_load gauge\ncanopy_test_load %d\n", lt.v.Load())
		}
	}))
	t.Cleanup(lt.Close)
	return lt
}

const aggWindow = 500 * time.Millisecond

// startMovingLeaf runs an in-process leaf-only node that knows only the
// root, so it finds a parent itself and moves when it loses it.
func startMovingLeaf(t *testing.T, id, dc, rootAddr, targetURL string) *leafRun {
	t.Helper()
	return startLeafWith(t, id, dc, rootAddr, func(cfg *node.Config) {
		cfg.Node.Static, cfg.Node.Role = false, "leaf-only"
		cfg.Tree.ForgetAfter, cfg.Tree.RequestTimeout = 5*time.Second, aggWindow
		cfg.Tree.BackoffInitial, cfg.Tree.BackoffMax = 250*time.Millisecond, time.Second
		cfg.Scrape.Interval, cfg.Scrape.Timeout = 250*time.Millisecond, 250*time.Millisecond
		cfg.Scrape.Targets = []leaf.Target{{Name: "load", URL: targetURL}}
		cfg.Batch.Window, cfg.Batch.DrainTimeout = aggWindow, 2*time.Second
	})
}

// TestDCAggregatesThroughAFailure: a root (child limit 2, so leaves go
// below it) with an aggregation rule on canopy_test_load, two supernode
// processes, and six leaves in two dcs that find their parents
// themselves. The root's dc sums equal the sum of the leaves' own values;
// a supernode killed with SIGKILL shows in the NI the reader returns
// (reachable < all, then dup while its children are counted twice); when
// the root forgets it the NI clears and the sums are right again. Over
// the whole run, every window the root stored as trusted (reachable ==
// all, dup == 0) has the exact sum. A series the target stops exposing
// ends in the TSDB with a staleness marker and leaves the sum. Rules
// changed at the root reach every leaf within a few windows.
func TestDCAggregatesThroughAFailure(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	rule := &canopyv1.AggregationRule{
		Matchers:  []*canopyv1.LabelMatcher{{Name: "__name__", Type: canopyv1.MatchType_MATCH_TYPE_EQUAL, Value: "canopy_test_load"}},
		Functions: []canopyv1.AggregateFunction{canopyv1.AggregateFunction_AGGREGATE_FUNCTION_SUM, canopyv1.AggregateFunction_AGGREGATE_FUNCTION_COUNT},
	}
	r := startRootWith(t, listen(t), func(o *root.Options) {
		o.ChildLimit, o.Window, o.ForgetAfter = 2, aggWindow, 5*time.Second
		o.Control = &canopyv1.Control{AggregationRules: []*canopyv1.AggregationRule{rule}}
	})
	dir := t.TempDir()
	sns := map[string]*nodeProcess{}
	for _, id := range []string{"sn1", "sn2"} {
		sns[id] = startNodeProcess(t, id, r.grpcAddr, filepath.Join(dir, id),
			// Either supernode can take all six leaves: the survivor must.
			"CANOPY_NODE_ROLE=supernode", "CANOPY_TREE_CHILD_LIMIT=6", "CANOPY_TREE_FORGET_AFTER=5s", "CANOPY_SCRAPE_MACHINE=false")
	}
	eventually(t, 30*time.Second, "both supernodes under the root", func() bool { return attached(r.Topology()) == 2 })

	want := map[string]float64{}
	var targets []*loadTarget
	var leaves []*leafRun
	for i := range 6 {
		dc := []string{"eu-1", "us-1"}[i%2]
		lt := newLoadTarget(t, int64(10*(i+1)))
		targets = append(targets, lt)
		want[dc] += float64(10 * (i + 1))
		leaves = append(leaves, startMovingLeaf(t, fmt.Sprintf("leaf%d", i), dc, r.grpcAddr, lt.URL))
	}
	trusted := func(dc string) (sum float64, ni *canopyv1.NetworkImprecision, ok bool) {
		resp, err := r.Reader.Latest(context.Background(), &canopyv1.LatestRequest{Target: &canopyv1.Target{DcId: dc}})
		if err != nil {
			return 0, nil, false
		}
		sum = math.NaN()
		for _, s := range resp.Series {
			if name(s) == "dc:canopy_test_load:sum" {
				sum = s.Samples[len(s.Samples)-1].Value
			}
		}
		ni = resp.Ni
		return sum, ni, ni != nil && ni.All == ni.Reachable && ni.Dup == 0
	}
	converged := func() bool {
		for dc, w := range want {
			if sum, ni, ok := trusted(dc); !ok || sum != w || ni.All != 3 /* the dc's leaves; the supernodes are in dcs of their own */ {
				return false
			}
		}
		return true
	}
	eventually(t, 30*time.Second, "dc sums at the root equal the leaves' values", converged)

	// A value changes: within a few windows the sum follows.
	targets[0].v.Store(1000)
	want["eu-1"] += 1000 - 10
	eventually(t, 10*time.Second, "the sum follows a changed value", converged)
	auditFrom := time.Now()

	// Kill the supernode with more children.
	top := r.Topology()
	victim := "sn1"
	if children(top, "sn2") > children(top, "sn1") {
		victim = "sn2"
	}
	t.Logf("killing %s with %d children", victim, children(top, victim))
	killed := time.Now()
	sns[victim].signal(syscall.SIGKILL)
	var sawUnreachable, sawDup bool
	eventually(t, 60*time.Second, "NI clears after the failure", func() bool {
		tn := r.Topology().Ni
		sawUnreachable = sawUnreachable || tn.GetReachable() < tn.GetAll()
		sawDup = sawDup || tn.GetDup() > 0
		return sawUnreachable && sawDup && tn.GetAll() == tn.GetReachable() && tn.GetDup() == 0 && converged()
	})
	t.Logf("NI showed unreachable members and duplicates, then cleared %s after the kill", time.Since(killed).Round(time.Millisecond))

	time.Sleep(4 * aggWindow) // some steady windows for the audit

	// Audit what the root stored: every trusted window has the exact sum.
	total := 0
	for dc, w := range want {
		audited := 0
		sums := series(t, r, "dc:canopy_test_load:sum", "dc", dc)
		all := series(t, r, root.NIAll, "scope", "aggregate", "dc", dc)
		reach := series(t, r, root.NIReachable, "scope", "aggregate", "dc", dc)
		dup := series(t, r, root.NIDup, "scope", "aggregate", "dc", dc)
		distrusted, distrustedExact := 0, 0
		for ts, v := range sums {
			if ts < auditFrom.UnixMilli() {
				continue
			}
			if all[ts] != reach[ts] || dup[ts] != 0 {
				distrusted++
				if v == w {
					distrustedExact++
				}
				continue
			}
			audited++
			total++
			if v != w {
				t.Errorf("%s at %d: trusted (all %g reachable %g dup %g) but sum %g, want %g", dc, ts, all[ts], reach[ts], dup[ts], v, w)
			}
		}
		t.Logf("%s: %d windows trusted and exact; %d distrusted, %d of them exact anyway", dc, audited, distrusted, distrustedExact)
	}
	if total == 0 {
		t.Fatal("no trusted window to audit")
	}

	// A series that disappears gets a staleness marker, which ends it in
	// storage and takes it out of the aggregate.
	targets[5].gone.Store(true)
	want["us-1"] -= 60
	eventually(t, 10*time.Second, "the vanished series leaves the sum", func() bool {
		sum, _, ok := trusted("us-1")
		return ok && sum == want["us-1"]
	})
	eventually(t, 10*time.Second, "a staleness marker in the TSDB", func() bool {
		return endsStale(t, r, labels.MustNewMatcher(labels.MatchEqual, labels.MetricName, "canopy_test_load"), labels.MustNewMatcher(labels.MatchEqual, "node", "leaf5"))
	})

	// A rule changed at the root reaches every leaf within a few windows.
	changed := time.Now()
	if err := r.SetControl(&canopyv1.Control{
		AggregationRules: []*canopyv1.AggregationRule{rule},
		FilterRules:      []*canopyv1.FilterRule{{Matchers: rule.Matchers, Relative: 0.01}},
	}); err != nil {
		t.Fatal(err)
	}
	version := r.Parent.Control().ConfigVersion
	eventually(t, 10*time.Second, "every leaf applies the new rules", func() bool {
		for _, l := range leaves {
			if l.node.ConfigVersion() != version {
				return false
			}
		}
		return true
	})
	t.Logf("new rules applied by every leaf %s (%.1f windows) after the change at the root",
		time.Since(changed).Round(time.Millisecond), float64(time.Since(changed))/float64(aggWindow))
}

// endsStale reports whether the selected series' last stored sample is a
// staleness marker.
func endsStale(t *testing.T, r *rootRun, ms ...*labels.Matcher) bool {
	stale := false
	eachSample(t, r, math.MaxInt64, ms, func(_ labels.Labels, _ int64, v float64) { stale = value.IsStaleNaN(v) })
	return stale
}

func name(s *canopyv1.Series) string {
	for _, l := range s.Labels {
		if l.Name == "__name__" {
			return l.Value
		}
	}
	return ""
}

func children(top *canopyv1.TopologyResponse, id string) int {
	n := 0
	for _, c := range top.Nodes {
		if c.ParentId == id && c.State != canopyv1.ChildState_CHILD_STATE_DEAD {
			n++
		}
	}
	return n
}

// series reads one stored series (by name and label pairs) as ts → value,
// skipping staleness markers.
func series(t *testing.T, r *rootRun, metric string, kv ...string) map[int64]float64 {
	t.Helper()
	ms := []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, labels.MetricName, metric)}
	for i := 0; i+1 < len(kv); i += 2 {
		ms = append(ms, labels.MustNewMatcher(labels.MatchEqual, kv[i], kv[i+1]))
	}
	out := map[int64]float64{}
	eachSample(t, r, math.MaxInt64, ms, func(_ labels.Labels, ts int64, v float64) {
		if !value.IsStaleNaN(v) {
			out[ts] = v
		}
	})
	return out
}

// TestAggregateOnly: a rule marked aggregate-only keeps the node series
// out of storage; the root stores only the group aggregate, and every
// other series of the same nodes as before.
func TestAggregateOnly(t *testing.T) {
	r := startRootWith(t, listen(t), func(o *root.Options) {
		o.Control = &canopyv1.Control{AggregationRules: []*canopyv1.AggregationRule{{
			Matchers:      []*canopyv1.LabelMatcher{{Name: "__name__", Type: canopyv1.MatchType_MATCH_TYPE_EQUAL, Value: "node_memory_MemTotal_bytes"}},
			Functions:     []canopyv1.AggregateFunction{canopyv1.AggregateFunction_AGGREGATE_FUNCTION_SUM},
			AggregateOnly: true,
		}}}
	})
	startLeaf(t, "a1", "eu-1", r.grpcAddr)
	startLeaf(t, "a2", "eu-1", r.grpcAddr)
	eventually(t, 20*time.Second, "the dc aggregate of both leaves", func() bool {
		sums := series(t, r, "dc:node_memory_MemTotal_bytes:sum", "dc", "eu-1")
		for _, v := range sums {
			if v == 2*(8<<30) {
				return true
			}
		}
		return false
	})
	if raw := series(t, r, "node_memory_MemTotal_bytes"); len(raw) != 0 {
		t.Fatalf("aggregate-only node series reached storage: %d samples", len(raw))
	}
	if len(series(t, r, "node_load1", "node", "a1")) == 0 {
		t.Fatal("the leaf's other series are missing")
	}
}
