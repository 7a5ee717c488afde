package config

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// Selector picks series for a rule. Metric is a regular expression on the
// metric name (empty: any); Labels and Exclude map label names to regular
// expressions their values must, or must not, match. Expressions are
// anchored, as in PromQL.
type Selector struct {
	Metric  string            `mapstructure:"metric"`
	Labels  map[string]string `mapstructure:"labels"`
	Exclude map[string]string `mapstructure:"exclude"`
}

// Proto compiles the selector into wire matchers; errors name key.
func (s Selector) Proto(key string) ([]*canopyv1.LabelMatcher, error) {
	var out []*canopyv1.LabelMatcher
	add := func(sub, name, re string, t canopyv1.MatchType) error {
		if _, err := labels.NewFastRegexMatcher(re); err != nil {
			return fmt.Errorf("%s.%s: %w", key, sub, err)
		}
		out = append(out, &canopyv1.LabelMatcher{Name: name, Type: t, Value: re})
		return nil
	}
	if s.Metric != "" {
		if err := add("metric", labels.MetricName, s.Metric, canopyv1.MatchType_MATCH_TYPE_REGEX); err != nil {
			return nil, err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(s.Labels)) {
		if err := add("labels."+name, name, s.Labels[name], canopyv1.MatchType_MATCH_TYPE_REGEX); err != nil {
			return nil, err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(s.Exclude)) {
		if err := add("exclude."+name, name, s.Exclude[name], canopyv1.MatchType_MATCH_TYPE_NOT_REGEX); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// FilterRule sets a dead-band for the series it selects: a new value goes
// out once it moved by Absolute, or by Relative (0.01 = 1 %) of the last
// value sent.
type FilterRule struct {
	Selector `mapstructure:",squash"`
	Absolute float64 `mapstructure:"absolute"`
	Relative float64 `mapstructure:"relative"`
}

// Proto converts the rule; errors name key.
func (r FilterRule) Proto(key string) (*canopyv1.FilterRule, error) {
	if r.Absolute < 0 || r.Relative < 0 || math.IsNaN(r.Absolute) || math.IsNaN(r.Relative) {
		return nil, fmt.Errorf("%s: absolute and relative must not be negative", key)
	}
	ms, err := r.Selector.Proto(key)
	if err != nil {
		return nil, err
	}
	return &canopyv1.FilterRule{Matchers: ms, Absolute: r.Absolute, Relative: r.Relative}, nil
}

// AggregationRule aggregates the series it selects per group: GroupBy
// label names (default dc), Functions among sum, count, min, max, avg.
// AggregateOnly keeps the node series out of storage.
type AggregationRule struct {
	Selector      `mapstructure:",squash"`
	GroupBy       []string `mapstructure:"group_by"`
	Functions     []string `mapstructure:"functions"`
	AggregateOnly bool     `mapstructure:"aggregate_only"`
}

// Proto converts the rule; errors name key.
func (r AggregationRule) Proto(key string) (*canopyv1.AggregationRule, error) {
	ms, err := r.Selector.Proto(key)
	if err != nil {
		return nil, err
	}
	if len(r.Functions) == 0 {
		return nil, fmt.Errorf("%s.functions: name at least one of sum, count, min, max, avg", key)
	}
	out := &canopyv1.AggregationRule{Matchers: ms, GroupBy: r.GroupBy, AggregateOnly: r.AggregateOnly}
	for i, f := range r.Functions {
		v, ok := canopyv1.AggregateFunction_value["AGGREGATE_FUNCTION_"+strings.ToUpper(f)]
		if !ok || v == 0 {
			return nil, fmt.Errorf("%s.functions[%d]: %q is not sum, count, min, max or avg", key, i, f)
		}
		out.Functions = append(out.Functions, canopyv1.AggregateFunction(v))
	}
	for i, g := range r.GroupBy {
		if !model.LabelName(g).IsValid() || g == labels.MetricName {
			return nil, fmt.Errorf("%s.group_by[%d]: %q is not a label name to group by", key, i, g)
		}
	}
	return out, nil
}

// DefaultAggregationRules give the c12s paper's DC-level machine metrics,
// from the built-in machine collector (job="canopy", leaf.MachineJob, so a node_exporter
// target on the same node is not counted twice): memory and CPU cores
// (total and busy), filesystem size and free space, network receive and
// transmit (loopback excluded).
func DefaultAggregationRules() []AggregationRule {
	machine := map[string]string{"job": "canopy"}
	return []AggregationRule{
		{Selector: Selector{Metric: "node_memory_MemTotal_bytes|canopy_machine_cpu_cores", Labels: machine}, Functions: []string{"sum", "count"}},
		{Selector: Selector{Metric: "node_memory_MemAvailable_bytes|canopy_machine_cpu_busy_cores", Labels: machine}, Functions: []string{"sum", "min", "max", "avg"}},
		{Selector: Selector{Metric: "node_filesystem_size_bytes|node_filesystem_avail_bytes", Labels: machine}, Functions: []string{"sum"}},
		{Selector: Selector{Metric: "node_network_receive_bytes_total|node_network_transmit_bytes_total", Labels: machine, Exclude: map[string]string{"device": "lo"}}, Functions: []string{"sum"}},
	}
}
