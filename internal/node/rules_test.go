package node

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/canopytree/canopy/batch"
	"github.com/canopytree/canopy/internal/config"
	"github.com/canopytree/canopy/leaf"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
	"github.com/canopytree/canopy/supernode"
)

// The default aggregation rules select what the built-in collector
// produces on this machine: every c12s DC metric it reports gets its
// aggregate.
func TestDefaultAggregationRulesSelectTheMachineCollector(t *testing.T) {
	mc, err := leaf.NewMachineCollector("/proc", "/sys")
	if err != nil {
		t.Fatal(err)
	}
	id := leaf.Identity{Node: "n1", DC: "eu-1"}
	now := time.Now()
	_, _ = mc.Collect(id, now.Add(-time.Second)) // busy cores needs a previous reading
	samples, err := mc.Collect(id, now)
	if err != nil {
		t.Logf("collector: %v", err) // partial results are fine (a missing /sys entry)
	}
	var series []batch.Series
	produced := map[string]bool{}
	for _, s := range samples {
		series = append(series, batch.Series{Labels: s.Labels, Type: s.Type, Samples: []batch.Sample{{T: s.T, V: s.V}}})
		if s.Labels.Get("device") != "lo" {
			produced[s.Labels.Get("__name__")] = true
		}
	}
	var protos []*canopyv1.AggregationRule
	for i, r := range config.DefaultAggregationRules() {
		p, err := r.Proto(fmt.Sprint(i))
		if err != nil {
			t.Fatal(err)
		}
		protos = append(protos, p)
	}
	rules, err := supernode.RulesFromProto(protos)
	if err != nil {
		t.Fatal(err)
	}
	agg := supernode.NewAggregator(rules)
	agg.Observe("n1", &canopyv1.HeartbeatRequest{Node: &canopyv1.NodeInfo{Id: "n1", Dc: "eu-1"}},
		[]batch.Batch{{ID: batch.ID{Origin: "n1", Epoch: 1, Seq: 1}, Series: series}})
	got := map[string]bool{}
	for _, p := range agg.Report(map[string]canopyv1.ChildState{"n1": canopyv1.ChildState_CHILD_STATE_HEALTHY}).Partials {
		got[strings.TrimPrefix(p.Name, "dc:")] = p.Group.Get("dc") == "eu-1" && p.Count > 0
	}
	for _, m := range []string{
		"node_memory_MemTotal_bytes", "node_memory_MemAvailable_bytes", "canopy_machine_cpu_cores", "canopy_machine_cpu_busy_cores",
		"node_filesystem_size_bytes", "node_filesystem_avail_bytes", "node_network_receive_bytes_total", "node_network_transmit_bytes_total",
	} {
		if produced[m] && !got[m] {
			t.Errorf("the collector produces %s but no default rule aggregates it (got %v)", m, got)
		}
	}
	for _, m := range []string{"node_memory_MemTotal_bytes", "canopy_machine_cpu_cores"} {
		if !got[m] {
			t.Errorf("no dc aggregate of %s", m)
		}
	}
}
