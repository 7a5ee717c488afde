package supernode

import (
	"math"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"

	"github.com/canopytree/canopy/batch"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

const (
	healthy = canopyv1.ChildState_CHILD_STATE_HEALTHY
	suspect = canopyv1.ChildState_CHILD_STATE_SUSPECT
	dead    = canopyv1.ChildState_CHILD_STATE_DEAD
)

var (
	fnSum = canopyv1.AggregateFunction_AGGREGATE_FUNCTION_SUM
	fnMin = canopyv1.AggregateFunction_AGGREGATE_FUNCTION_MIN
	fnMax = canopyv1.AggregateFunction_AGGREGATE_FUNCTION_MAX
	fnAvg = canopyv1.AggregateFunction_AGGREGATE_FUNCTION_AVG
	fnCnt = canopyv1.AggregateFunction_AGGREGATE_FUNCTION_COUNT
)

func memRule(aggregateOnly bool) []Rule {
	r, err := RuleFromProto(&canopyv1.AggregationRule{
		Matchers:      []*canopyv1.LabelMatcher{{Name: "__name__", Type: canopyv1.MatchType_MATCH_TYPE_REGEX, Value: "mem_.*"}},
		Functions:     []canopyv1.AggregateFunction{fnSum, fnCnt, fnMin, fnMax, fnAvg},
		AggregateOnly: aggregateOnly,
	})
	if err != nil {
		panic(err)
	}
	return []Rule{r}
}

func memSeries(node, dc string, t int64, v float64) batch.Series {
	return batch.Series{
		Labels:  labels.FromStrings("__name__", "mem_bytes", "node", node, "dc", dc),
		Type:    canopyv1.MetricType_METRIC_TYPE_GAUGE,
		Samples: []batch.Sample{{T: t, V: v}},
	}
}

func hb(id, dc string, moved bool) *canopyv1.HeartbeatRequest {
	return &canopyv1.HeartbeatRequest{Node: &canopyv1.NodeInfo{Id: id, Dc: dc}, Moved: moved}
}

func one(origin string, epoch, seq uint64, series ...batch.Series) []batch.Batch {
	return []batch.Batch{{ID: batch.ID{Origin: origin, Epoch: epoch, Seq: seq}, Series: series}}
}

func partial(t *testing.T, rep *Report, name, dc string) *Partial {
	t.Helper()
	for _, p := range rep.Partials {
		if p.Name == name && p.Group.Get("dc") == dc {
			return p
		}
	}
	t.Fatalf("no partial %s{dc=%q} in %+v", name, dc, rep.Partials)
	return nil
}

func valueOf(p *Partial, f canopyv1.AggregateFunction) float64 {
	v, ok := p.Value(f)
	if !ok {
		return math.NaN()
	}
	return v
}

// The cache: an absent update is unchanged, a retransmitted or reordered
// sample changes nothing, a staleness marker ends the series, a new epoch
// starts afresh, and aggregate-only series are not passed on.
func TestAggregatorCache(t *testing.T) {
	a := NewAggregator(memRule(false))
	states := map[string]canopyv1.ChildState{"a": healthy, "b": healthy}
	a.Observe("a", hb("a", "eu", false), one("a", 1, 1, memSeries("a", "eu", 1000, 10)))
	a.Observe("b", hb("b", "eu", false), one("b", 1, 1, memSeries("b", "eu", 1000, 5)))
	p := partial(t, a.Report(states), "dc:mem_bytes", "eu")
	if valueOf(p, fnSum) != 15 || valueOf(p, fnCnt) != 2 || valueOf(p, fnMin) != 5 || valueOf(p, fnMax) != 10 || valueOf(p, fnAvg) != 7.5 {
		t.Fatalf("first window: %+v", p)
	}
	// Window 2: a's value unchanged (filtered out), b moved on.
	a.Observe("a", hb("a", "eu", false), one("a", 1, 2))
	a.Observe("b", hb("b", "eu", false), one("b", 1, 2, memSeries("b", "eu", 2000, 7)))
	// A retransmit of b's first batch, arriving late.
	a.Observe("b", hb("b", "eu", false), one("b", 1, 1, memSeries("b", "eu", 1000, 5)))
	if got := valueOf(partial(t, a.Report(states), "dc:mem_bytes", "eu"), fnSum); got != 17 {
		t.Fatalf("sum after an absent update and a retransmit = %g, want 17", got)
	}
	// a's series ends: the staleness marker takes it out.
	a.Observe("a", hb("a", "eu", false), one("a", 1, 3, memSeries("a", "eu", 3000, math.Float64frombits(value.StaleNaN))))
	if p := partial(t, a.Report(states), "dc:mem_bytes", "eu"); valueOf(p, fnSum) != 7 || p.NI.All != 1 {
		t.Fatalf("after a staleness marker: %+v", p)
	}
	// b restarts (new epoch) with a different series: the old one is gone.
	a.Observe("b", hb("b", "eu", false), one("b", 2, 1, memSeries("b2", "eu", 500, 3)))
	if got := valueOf(partial(t, a.Report(states), "dc:mem_bytes", "eu"), fnSum); got != 3 {
		t.Fatalf("after b restarted: sum %g, want 3", got)
	}

	only := NewAggregator(memRule(true))
	other := batch.Series{Labels: labels.FromStrings("__name__", "load1", "node", "a"), Samples: []batch.Sample{{T: 1000, V: 1}}}
	out := only.Observe("a", hb("a", "eu", false), one("a", 1, 1, memSeries("a", "eu", 1000, 10), other))
	if len(out[0].Series) != 1 || out[0].Series[0].Labels.Get("__name__") != "load1" {
		t.Fatalf("aggregate-only series passed on: %v", out[0].Series)
	}
	deeper := only.Observe("a", hb("a", "eu", false), one("x", 1, 1, memSeries("x", "eu", 1000, 10)))
	if len(deeper[0].Series) != 1 {
		t.Fatal("a descendant's series was stripped: only its own parent may do that")
	}
}

// What the failure detector says of a child decides how it counts: a
// suspect child still contributes its values but is not reachable; a dead
// one contributes no values but still counts in all; a forgotten one is
// gone; a supernode child's report counts as reachable only while the
// child itself is fresh.
func TestAggregatorFreshness(t *testing.T) {
	sn := NewAggregator(memRule(false))
	sn.Observe("l1", hb("l1", "eu", false), one("l1", 1, 1, memSeries("l1", "eu", 1000, 1)))
	sn.Observe("l2", hb("l2", "us", false), one("l2", 1, 1, memSeries("l2", "us", 1000, 2)))
	req := hb("sn", "eu", false)
	sn.Report(map[string]canopyv1.ChildState{"l1": healthy, "l2": healthy}).Heartbeat(req, 1000)

	root := NewAggregator(memRule(false))
	root.Observe("sn", req, one("sn", 1, 1, memSeries("sn", "eu", 1000, 4)))
	root.Observe("l3", hb("l3", "eu", false), one("l3", 1, 1, memSeries("l3", "eu", 1000, 8)))

	for _, c := range []struct {
		sn, l3              canopyv1.ChildState
		sum                 float64
		all, reachable, dup uint64
	}{
		{healthy, healthy, 4 + 1 + 8, 3, 3, 0},
		{suspect, healthy, 4 + 1 + 8, 3, 1, 0},
		{dead, healthy, 8, 3, 1, 0},
		{healthy, dead, 4 + 1, 3, 2, 0},
	} {
		rep := root.Report(map[string]canopyv1.ChildState{"sn": c.sn, "l3": c.l3})
		p := partial(t, rep, "dc:mem_bytes", "eu")
		if got := valueOf(p, fnSum); got != c.sum && !(math.IsNaN(got) && c.sum == 0) {
			t.Errorf("sn %v, l3 %v: eu sum %g, want %g", c.sn, c.l3, got, c.sum)
		}
		if p.NI != (NI{c.all, c.reachable, c.dup}) {
			t.Errorf("sn %v, l3 %v: eu NI %+v, want {%d %d %d}", c.sn, c.l3, p.NI, c.all, c.reachable, c.dup)
		}
		if rep.NI.All != 4 { // sn, l1, l2, l3
			t.Errorf("tree NI %+v, want all 4", rep.NI)
		}
	}
	rep := root.Report(map[string]canopyv1.ChildState{"sn": healthy})
	if rep.NI != (NI{3, 3, 0}) || rep.GroupNI["eu"] != (NI{2, 2, 0}) || rep.GroupNI["us"] != (NI{1, 1, 0}) {
		t.Fatalf("after l3 was forgotten: %+v %+v", rep.NI, rep.GroupNI)
	}
	// A supernode that moved reports its whole subtree as possibly counted
	// twice, itself included.
	req = hb("sn", "eu", true)
	sn.Report(map[string]canopyv1.ChildState{"l1": healthy, "l2": healthy}).Heartbeat(req, 2000)
	root.Observe("sn", req, nil)
	rep = root.Report(map[string]canopyv1.ChildState{"sn": healthy})
	if rep.NI != (NI{3, 3, 3}) {
		t.Fatalf("moved supernode: %+v", rep.NI)
	}
}
