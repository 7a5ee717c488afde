package root

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/storage"
	"google.golang.org/protobuf/proto"

	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
	"github.com/canopytree/canopy/supernode"
)

// Network-imprecision series, labelled scope="tree", "group" (with dc),
// "subtree" (with subtree, a child of the root) or "aggregate" (with
// aggregate and the aggregate's group labels).
const (
	NIAll       = "canopy_ni_all"
	NIReachable = "canopy_ni_reachable"
	NIDup       = "canopy_ni_dup"
)

// finaliser turns the root's report into stored series once per window:
// aggregates under their recording-rule names, and NI. A series written
// last window and not now (a group emptied, a subtree forgotten) gets a
// staleness marker.
type finaliser struct {
	db  storage.Appendable
	agg *supernode.Aggregator

	mu      sync.Mutex
	last    *supernode.Report
	written map[string]labels.Labels
}

func newFinaliser(db storage.Appendable, agg *supernode.Aggregator) *finaliser {
	return &finaliser{db: db, agg: agg, written: map[string]labels.Labels{}}
}

// run computes the report from the children's states and appends it at now.
func (f *finaliser) run(ctx context.Context, states map[string]canopyv1.ChildState, now time.Time) error {
	rep := f.agg.Report(states)
	f.mu.Lock()
	f.last = rep
	f.mu.Unlock()

	ts := now.UnixMilli()
	app := f.db.Appender(ctx)
	written := make(map[string]labels.Labels, len(f.written))
	add := func(ls labels.Labels, v float64) error {
		key := string(ls.Bytes(nil))
		written[key] = ls
		if _, err := app.Append(0, ls, ts, v); err != nil {
			return fmt.Errorf("append %s: %w", ls, err)
		}
		return nil
	}
	addNI := func(ni supernode.NI, kv ...string) error {
		for _, s := range []struct {
			name string
			v    uint64
		}{{NIAll, ni.All}, {NIReachable, ni.Reachable}, {NIDup, ni.Dup}} {
			if err := add(seriesLabels(s.name, kv...), float64(s.v)); err != nil {
				return err
			}
		}
		return nil
	}
	err := func() error {
		rules := f.agg.Rules()
		for _, p := range rep.Partials {
			var group []string
			p.Group.Range(func(l labels.Label) { group = append(group, l.Name, l.Value) })
			for _, fn := range supernode.Functions(rules, p.Name) {
				if v, ok := p.Value(fn); ok {
					if err := add(seriesLabels(p.Name+":"+supernode.FunctionName(fn), group...), v); err != nil {
						return err
					}
				}
			}
			if err := addNI(p.NI, append([]string{"scope", "aggregate", "aggregate", p.Name}, group...)...); err != nil {
				return err
			}
		}
		if err := addNI(rep.NI, "scope", "tree"); err != nil {
			return err
		}
		for dc, ni := range rep.GroupNI {
			if err := addNI(ni, "scope", "group", "dc", dc); err != nil {
				return err
			}
		}
		for id, ni := range rep.Children {
			if err := addNI(ni, "scope", "subtree", "subtree", id); err != nil {
				return err
			}
		}
		stale := math.Float64frombits(value.StaleNaN)
		for k, ls := range f.written {
			if _, ok := written[k]; !ok {
				if _, err := app.Append(0, ls, ts, stale); err != nil {
					return fmt.Errorf("staleness marker for %s: %w", ls, err)
				}
			}
		}
		return nil
	}()
	if err != nil {
		_ = app.Rollback()
		return err
	}
	if err := app.Commit(); err != nil {
		return fmt.Errorf("commit aggregates: %w", err)
	}
	f.written = written
	return nil
}

// seriesLabels builds name{kv...}, leaving out empty values (a group label
// the series did not have).
func seriesLabels(name string, kv ...string) labels.Labels {
	b := labels.NewBuilder(labels.EmptyLabels())
	b.Set(labels.MetricName, name)
	for i := 0; i+1 < len(kv); i += 2 {
		b.Set(kv[i], kv[i+1])
	}
	return b.Labels()
}

// report is the last report finalised, or nil.
func (f *finaliser) report() *supernode.Report {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

// nextControl stamps c with a version newer than prev: the clock, so a
// restarted root's configuration wins over what nodes applied before.
func nextControl(c *canopyv1.Control, prev uint64, now time.Time) *canopyv1.Control {
	out := proto.Clone(c).(*canopyv1.Control)
	out.ConfigVersion = max(prev+1, uint64(now.UnixNano()))
	out.Promote, out.Rejoin = false, nil
	return out
}
