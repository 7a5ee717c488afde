package supernode

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"

	"github.com/canopytree/canopy/batch"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// Rule is a compiled aggregation rule: the series its matchers select are
// aggregated per group (the values of GroupBy) into mergeable partials
// named level:metric, where level is GroupBy joined by "_" (the
// recording-rule convention).
type Rule struct {
	Matchers      []*labels.Matcher
	GroupBy       []string
	Functions     []canopyv1.AggregateFunction
	AggregateOnly bool
	level         string
}

// RuleFromProto compiles a rule pushed down the tree. GroupBy defaults to
// dc.
func RuleFromProto(r *canopyv1.AggregationRule) (Rule, error) {
	ms, err := batch.MatchersFromProto(r.Matchers)
	if err != nil {
		return Rule{}, err
	}
	if len(r.Functions) == 0 {
		return Rule{}, fmt.Errorf("aggregation rule without functions")
	}
	for _, f := range r.Functions {
		if _, ok := canopyv1.AggregateFunction_name[int32(f)]; !ok || f == canopyv1.AggregateFunction_AGGREGATE_FUNCTION_UNSPECIFIED {
			return Rule{}, fmt.Errorf("unknown aggregate function %v", f)
		}
	}
	group := r.GroupBy
	if len(group) == 0 {
		group = []string{"dc"}
	}
	for _, g := range group {
		if !model.LabelName(g).IsValid() || g == labels.MetricName {
			return Rule{}, fmt.Errorf("cannot group by %q", g)
		}
	}
	return Rule{Matchers: ms, GroupBy: group, Functions: r.Functions, AggregateOnly: r.AggregateOnly, level: strings.Join(group, "_")}, nil
}

// RulesFromProto compiles a rule list; errors name the rule.
func RulesFromProto(rs []*canopyv1.AggregationRule) ([]Rule, error) {
	out := make([]Rule, 0, len(rs))
	for i, r := range rs {
		c, err := RuleFromProto(r)
		if err != nil {
			return nil, fmt.Errorf("aggregation rule %d: %w", i, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// FunctionName is the suffix of a finalised series: sum, count, min, max,
// avg.
func FunctionName(f canopyv1.AggregateFunction) string {
	return strings.ToLower(strings.TrimPrefix(f.String(), "AGGREGATE_FUNCTION_"))
}

// ruleFor returns the first rule selecting ls, or -1.
func ruleFor(rules []Rule, ls labels.Labels) int {
	for i := range rules {
		if batch.Matches(rules[i].Matchers, ls) {
			return i
		}
	}
	return -1
}

// Functions returns the functions to finalise for a partial named
// level:metric: those of the first rule with that level whose metric-name
// matchers accept metric.
func Functions(rules []Rule, name string) []canopyv1.AggregateFunction {
	level, metric, ok := strings.Cut(name, ":")
	if !ok {
		return nil
	}
	for _, r := range rules {
		if r.level != level {
			continue
		}
		ok := true
		for _, m := range r.Matchers {
			if m.Name == labels.MetricName && !m.Matches(metric) {
				ok = false
			}
		}
		if ok {
			return r.Functions
		}
	}
	return nil
}

// NI is a network-imprecision triple (see DESIGN.md).
type NI struct{ All, Reachable, Dup uint64 }

func niFrom(p *canopyv1.NetworkImprecision) NI {
	return NI{All: p.GetAll(), Reachable: p.GetReachable(), Dup: p.GetDup()}
}

// Proto converts the triple.
func (n NI) Proto() *canopyv1.NetworkImprecision {
	return &canopyv1.NetworkImprecision{All: n.All, Reachable: n.Reachable, Dup: n.Dup}
}

func (n *NI) add(o NI) { n.All, n.Reachable, n.Dup = n.All+o.All, n.Reachable+o.Reachable, n.Dup+o.Dup }

// seenFrom is o as this node sees it through a child: nothing in the
// child's subtree is reachable while the child itself is not fresh.
func (o NI) seenFrom(fresh bool) NI {
	if !fresh {
		o.Reachable = 0
	}
	return o
}

// Partial is a mergeable aggregate of one group.
type Partial struct {
	Name  string // level:metric
	Group labels.Labels
	Sum   float64
	Count uint64
	Min   float64
	Max   float64
	NI    NI
}

func newPartial(name string, group labels.Labels) *Partial {
	return &Partial{Name: name, Group: group, Min: math.Inf(1), Max: math.Inf(-1)}
}

func (p *Partial) addValue(v float64) {
	p.Sum += v
	p.Count++
	p.Min, p.Max = min(p.Min, v), max(p.Max, v)
}

func (p *Partial) merge(sum float64, count uint64, lo, hi float64) {
	if count == 0 {
		return
	}
	p.Sum += sum
	p.Count += count
	p.Min, p.Max = min(p.Min, lo), max(p.Max, hi)
}

// Value finalises f; ok is false for an empty group.
func (p *Partial) Value(f canopyv1.AggregateFunction) (v float64, ok bool) {
	if p.Count == 0 {
		return 0, false
	}
	switch f {
	case canopyv1.AggregateFunction_AGGREGATE_FUNCTION_SUM:
		return p.Sum, true
	case canopyv1.AggregateFunction_AGGREGATE_FUNCTION_COUNT:
		return float64(p.Count), true
	case canopyv1.AggregateFunction_AGGREGATE_FUNCTION_MIN:
		return p.Min, true
	case canopyv1.AggregateFunction_AGGREGATE_FUNCTION_MAX:
		return p.Max, true
	case canopyv1.AggregateFunction_AGGREGATE_FUNCTION_AVG:
		return p.Sum / float64(p.Count), true
	}
	return 0, false
}

func (p *Partial) proto(ts int64) *canopyv1.AggregatePartial {
	return &canopyv1.AggregatePartial{
		Name: p.Name, Group: batch.ToProtoLabels(p.Group), TimestampMs: ts,
		Sum: p.Sum, Count: p.Count, Min: p.Min, Max: p.Max, Ni: p.NI.Proto(),
	}
}

// Report is what a node knows of its descendants: partial aggregates, NI
// per dc and in total, and NI per direct child (the child and its
// subtree).
type Report struct {
	Partials []*Partial
	GroupNI  map[string]NI // by dc
	NI       NI
	Children map[string]NI
}

// Heartbeat fills the data part of an outgoing heartbeat, stamped ts. A
// node that moved marks all of it as possibly duplicated.
func (r *Report) Heartbeat(req *canopyv1.HeartbeatRequest, ts int64) {
	dup := func(n NI) NI {
		if req.Moved {
			n.Dup = n.All
		}
		return n
	}
	req.Aggregates = req.Aggregates[:0]
	for _, p := range r.Partials {
		q := *p
		q.NI = dup(q.NI)
		req.Aggregates = append(req.Aggregates, q.proto(ts))
	}
	req.Ni = dup(r.NI).Proto()
	req.GroupNi = req.GroupNi[:0]
	for _, dc := range slices.Sorted(maps.Keys(r.GroupNI)) {
		req.GroupNi = append(req.GroupNi, &canopyv1.GroupImprecision{Group: []*canopyv1.Label{{Name: "dc", Value: dc}}, Ni: dup(r.GroupNI[dc]).Proto()})
	}
}

// Aggregator keeps, per direct child, the last value of each of the
// child's own series that an aggregation rule selects (a series absent
// from a window is unchanged; a staleness marker ends it; a new epoch
// starts afresh) and the partials and NI the child last reported for its
// descendants. From them, and the failure detector's verdict on each
// child, it computes this node's report. Retransmitted and reordered
// batches never change a value (a cached sample is only replaced by a
// newer one), so aggregates depend on state, not on traffic. It is safe
// for concurrent use.
type Aggregator struct {
	mu      sync.Mutex
	rules   []Rule
	members map[string]*member
}

type member struct {
	dc       string
	moved    bool
	epoch    uint64
	series   map[string]*cached
	partials []*canopyv1.AggregatePartial
	ni       NI
	groupNI  []*canopyv1.GroupImprecision
}

type cached struct {
	labels labels.Labels
	rule   int
	name   string
	group  labels.Labels
	gkey   string
	t      int64
	v      float64
}

// NewAggregator returns an aggregator with rules.
func NewAggregator(rules []Rule) *Aggregator {
	return &Aggregator{rules: rules, members: map[string]*member{}}
}

// SetRules replaces the rules (pushed down the tree). Cached series are
// matched again; series newly selected arrive with the keyframe every
// child sends when it applies the same rules.
func (a *Aggregator) SetRules(rules []Rule) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.rules = rules
	for _, m := range a.members {
		for k, c := range m.series {
			r := ruleFor(rules, c.labels)
			if r < 0 {
				delete(m.series, k)
				continue
			}
			n := a.newCached(r, c.labels)
			n.t, n.v = c.t, c.v
			m.series[k] = n
		}
	}
}

// Observe takes a child's accepted heartbeat: its dc, whether it moved,
// what it reported of its descendants, and the child's own series from
// batches. It returns the batches to forward or persist, without the
// child's series that aggregate-only rules select.
func (a *Aggregator) Observe(child string, req *canopyv1.HeartbeatRequest, batches []batch.Batch) []batch.Batch {
	a.mu.Lock()
	defer a.mu.Unlock()
	m, ok := a.members[child]
	if !ok {
		m = &member{series: map[string]*cached{}}
		a.members[child] = m
	}
	m.dc, m.moved = req.GetNode().GetDc(), req.Moved
	m.partials, m.ni, m.groupNI = req.Aggregates, niFrom(req.Ni), req.GroupNi
	var key []byte
	for bi := range batches {
		b := &batches[bi]
		if b.Origin != child || len(a.rules) == 0 {
			continue
		}
		switch {
		case b.Epoch < m.epoch:
			continue // a straggler from before the child restarted
		case b.Epoch > m.epoch:
			clear(m.series) // restarted: its first window carries everything
			m.epoch = b.Epoch
		}
		kept := b.Series[:0]
		for _, s := range b.Series {
			key = s.Labels.Bytes(key[:0])
			c := m.series[string(key)]
			r := -1
			if c != nil {
				r = c.rule
			} else {
				r = ruleFor(a.rules, s.Labels)
			}
			if r < 0 {
				kept = append(kept, s)
				continue
			}
			if !a.rules[r].AggregateOnly {
				kept = append(kept, s)
			}
			for _, smp := range s.Samples {
				if c != nil && smp.T <= c.t {
					continue // retransmitted or reordered: not news
				}
				if value.IsStaleNaN(smp.V) {
					delete(m.series, string(key))
					c = nil
					continue
				}
				if c == nil {
					c = a.newCached(r, s.Labels)
					m.series[string(key)] = c
				}
				c.t, c.v = smp.T, smp.V
			}
		}
		b.Series = kept
	}
	return batches
}

func (a *Aggregator) newCached(r int, ls labels.Labels) *cached {
	rule := &a.rules[r]
	b := labels.NewScratchBuilder(len(rule.GroupBy))
	for _, g := range rule.GroupBy {
		b.Add(g, ls.Get(g))
	}
	b.Sort()
	group := b.Labels()
	name := rule.level + ":" + ls.Get(labels.MetricName)
	return &cached{labels: ls, rule: r, name: name, group: group, gkey: name + "\xff" + string(group.Bytes(nil))}
}

// Report computes this node's view of its descendants. states is the
// failure detector's verdict on each direct child; children it no longer
// lists are forgotten. A healthy child is fresh (counts as reachable, with
// what it reports as reachable); a suspect one still contributes its values
// but nothing of it is reachable; a dead one contributes no values, only
// its members to all, until it is forgotten.
func (a *Aggregator) Report(states map[string]canopyv1.ChildState) *Report {
	a.mu.Lock()
	defer a.mu.Unlock()
	rep := &Report{GroupNI: map[string]NI{}, Children: map[string]NI{}}
	parts := map[string]*Partial{}
	part := func(key, name string, group labels.Labels) *Partial {
		p, ok := parts[key]
		if !ok {
			p = newPartial(name, group)
			parts[key] = p
		}
		return p
	}
	for _, id := range slices.Sorted(maps.Keys(a.members)) {
		m := a.members[id]
		st, ok := states[id]
		if !ok {
			delete(a.members, id)
			continue
		}
		fresh, live := st == canopyv1.ChildState_CHILD_STATE_HEALTHY, st != canopyv1.ChildState_CHILD_STATE_DEAD
		self := NI{All: 1}
		if fresh {
			self.Reachable = 1
		}
		if m.moved {
			self.Dup = 1
		}
		// The child itself, then what it says of its descendants.
		g := rep.GroupNI[m.dc]
		g.add(self)
		rep.GroupNI[m.dc] = g
		for _, gi := range m.groupNI {
			dc := labelValue(gi.Group, "dc")
			g := rep.GroupNI[dc]
			g.add(niFrom(gi.Ni).seenFrom(fresh))
			rep.GroupNI[dc] = g
		}
		sub := self
		sub.add(m.ni.seenFrom(fresh))
		rep.Children[id] = sub
		rep.NI.add(sub)

		contributed := map[string]bool{}
		for _, c := range m.series {
			p := part(c.gkey, c.name, c.group)
			if !contributed[c.gkey] {
				contributed[c.gkey] = true
				p.NI.add(self)
			}
			if live && !math.IsNaN(c.v) {
				p.addValue(c.v)
			}
		}
		for _, cp := range m.partials {
			group := batch.FromProtoLabels(cp.Group)
			p := part(cp.Name+"\xff"+string(group.Bytes(nil)), cp.Name, group)
			p.NI.add(niFrom(cp.Ni).seenFrom(fresh))
			if live {
				p.merge(cp.Sum, cp.Count, cp.Min, cp.Max)
			}
		}
	}
	for id := range states {
		if _, ok := a.members[id]; !ok {
			// Accepted, no heartbeat yet: a member whose data is not here.
			rep.Children[id] = NI{All: 1}
			rep.NI.All++
		}
	}
	for _, k := range slices.Sorted(maps.Keys(parts)) {
		rep.Partials = append(rep.Partials, parts[k])
	}
	return rep
}

func labelValue(ls []*canopyv1.Label, name string) string {
	for _, l := range ls {
		if l.Name == name {
			return l.Value
		}
	}
	return ""
}

// Rules returns the rules in force.
func (a *Aggregator) Rules() []Rule {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.rules
}
