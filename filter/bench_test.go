package filter_test

import (
	"os"
	"testing"

	"github.com/canopytree/canopy/batch"
	"github.com/canopytree/canopy/filter"
	"github.com/canopytree/canopy/leaf"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// BenchmarkApply filters windows of a real node_exporter (the scrape in
// batch/testdata, three scrapes a window, counters advancing, gauges
// still) in steady state, with the default configuration.
func BenchmarkApply(b *testing.B) {
	body, err := os.ReadFile("../batch/testdata/node_exporter.txt")
	if err != nil {
		b.Fatal(err)
	}
	parsed, _, err := leaf.Parse(body, "text/plain; version=0.0.4", leaf.Target{Name: "node_exporter", Level: leaf.LevelMachine}, leaf.Identity{Node: "n", DC: "d"}, 0)
	if err != nil {
		b.Fatal(err)
	}
	window := func(w int64) []batch.Series {
		bld := batch.NewBuilder()
		for j := range int64(3) {
			for _, s := range parsed {
				v := s.V
				if s.Type == canopyv1.MetricType_METRIC_TYPE_COUNTER {
					v += float64(w*3 + j)
				}
				bld.Add(s.Labels, s.Type, w*5000+j*2000, v)
			}
		}
		return bld.Take()
	}
	windows := make([][]batch.Series, 64)
	for i := range windows {
		windows[i] = window(int64(i))
	}
	f := filter.New(filter.DefaultConfig())
	var in, out uint64
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		w := windows[i%len(windows)]
		// Apply filters in place; give it a copy of the sample slices.
		cp := make([]batch.Series, len(w))
		for k := range w {
			cp[k] = w[k]
			cp[k].Samples = append([]batch.Sample(nil), w[k].Samples...)
		}
		f.Apply(int64(i)*5000, cp)
	}
	st := f.Stats()
	in, out = st.In, st.Out
	b.ReportMetric(float64(in)*float64(1)/b.Elapsed().Seconds(), "samples/s")
	b.ReportMetric(float64(out)/float64(in), "sent_fraction")
}
