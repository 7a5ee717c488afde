package supernode

import (
	"fmt"
	"testing"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/canopytree/canopy/batch"
	"github.com/canopytree/canopy/internal/config"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

func defaultRules(b *testing.B) []Rule {
	var protos []*canopyv1.AggregationRule
	for i, r := range config.DefaultAggregationRules() {
		p, err := r.Proto(fmt.Sprint(i))
		if err != nil {
			b.Fatal(err)
		}
		protos = append(protos, p)
	}
	rules, err := RulesFromProto(protos)
	if err != nil {
		b.Fatal(err)
	}
	return rules
}

// childWindow is one window of a node_exporter-sized node: 1,500 series,
// 14 of them selected by the default rules.
func childWindow(id string, t int64) []batch.Batch {
	var series []batch.Series
	add := func(v float64, kv ...string) {
		ls := labels.FromStrings(append([]string{"node", id, "dc", "eu-1", "job", "machine"}, kv...)...)
		series = append(series, batch.Series{Labels: ls, Type: canopyv1.MetricType_METRIC_TYPE_GAUGE, Samples: []batch.Sample{{T: t, V: v}}})
	}
	for _, m := range []string{"node_memory_MemTotal_bytes", "node_memory_MemAvailable_bytes", "canopy_machine_cpu_cores", "canopy_machine_cpu_busy_cores"} {
		add(float64(t%97), "__name__", m)
	}
	for _, fs := range []string{"/", "/boot", "/home"} {
		add(1e9, "__name__", "node_filesystem_size_bytes", "mountpoint", fs)
		add(5e8, "__name__", "node_filesystem_avail_bytes", "mountpoint", fs)
	}
	for _, dev := range []string{"eth0", "lo", "wlan0"} {
		add(float64(t), "__name__", "node_network_receive_bytes_total", "device", dev)
		add(float64(t), "__name__", "node_network_transmit_bytes_total", "device", dev)
	}
	for i := len(series); i < 1500; i++ {
		add(float64(i), "__name__", fmt.Sprintf("node_other_metric_%d", i%150), "i", fmt.Sprint(i))
	}
	return []batch.Batch{{ID: batch.ID{Origin: id, Epoch: 1, Seq: uint64(t)}, Series: series}}
}

// BenchmarkAggregatorObserve: a supernode takes one window from a child
// (1,500 series, default rules). Reported per sample of the window.
func BenchmarkAggregatorObserve(b *testing.B) {
	a := NewAggregator(defaultRules(b))
	req := hb("c", "eu-1", false)
	windows := make([][]batch.Batch, 64)
	for i := range windows {
		windows[i] = childWindow("c", int64(i+1)*5000)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		w := windows[i%len(windows)]
		bs := []batch.Batch{{ID: w[0].ID, Series: append([]batch.Series(nil), w[0].Series...)}}
		a.Observe("c", req, bs)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1500), "ns/sample")
}

// BenchmarkAggregatorReport: a supernode with 100 leaf children computes
// its report for the upward heartbeat.
func BenchmarkAggregatorReport(b *testing.B) {
	a := NewAggregator(defaultRules(b))
	states := map[string]canopyv1.ChildState{}
	for c := range 100 {
		id := fmt.Sprintf("c%03d", c)
		a.Observe(id, hb(id, "eu-1", false), childWindow(id, 5000))
		states[id] = healthy
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		req := &canopyv1.HeartbeatRequest{}
		a.Report(states).Heartbeat(req, 5000)
	}
}
