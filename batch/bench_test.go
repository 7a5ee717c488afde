package batch_test

import (
	"os"
	"testing"

	"github.com/golang/snappy"
	"google.golang.org/protobuf/proto"

	"github.com/canopytree/canopy/batch"
	"github.com/canopytree/canopy/leaf"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// exporterWindow builds one window of a real node_exporter (a scrape
// recorded in testdata): three scrapes 2 s apart, counters advancing,
// gauges mostly still — what a leaf seals every 5 s.
func exporterWindow(tb testing.TB, seq uint64, t0 int64) *batch.Batch {
	tb.Helper()
	body, err := os.ReadFile("testdata/node_exporter.txt")
	if err != nil {
		tb.Fatal(err)
	}
	b := batch.NewBuilder()
	for i := range int64(3) {
		samples, _, err := leaf.Parse(body, "text/plain; version=0.0.4", leaf.Target{Name: "node_exporter", Level: leaf.LevelMachine},
			leaf.Identity{Node: "edge-0001", DC: "eu-1"}, t0+i*2000)
		if err != nil {
			tb.Fatal(err)
		}
		for _, s := range samples {
			v := s.V
			if s.Type == canopyv1.MetricType_METRIC_TYPE_COUNTER {
				v += float64(i) * 17
			}
			b.Add(s.Labels, s.Type, s.T, v)
		}
	}
	return &batch.Batch{ID: batch.ID{Origin: "edge-0001", Epoch: 1, Seq: seq}, LowSeq: seq, Series: b.Take()}
}

func marshal(tb testing.TB, req *canopyv1.HeartbeatRequest) []byte {
	wire, err := proto.Marshal(req)
	if err != nil {
		tb.Fatal(err)
	}
	return wire
}

// BenchmarkHeartbeatEncode measures a leaf's steady state: the dictionary
// is established, each window goes out as refs, deltas and values, then
// snappy (as the gRPC codec does).
func BenchmarkHeartbeatEncode(b *testing.B) {
	window := exporterWindow(b, 1, 1_700_000_000_000)
	samples := window.NumSamples()
	enc := batch.NewEncoder(1, 0)
	first := &canopyv1.HeartbeatRequest{}
	enc.Confirm(enc.Encode(first, []*batch.Batch{window}, 2))
	firstWire := snappy.Encode(nil, marshal(b, first))

	var wire []byte
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		req := &canopyv1.HeartbeatRequest{}
		enc.Encode(req, []*batch.Batch{window}, 2)
		raw, _ := proto.Marshal(req)
		wire = snappy.Encode(wire[:0], raw)
	}
	b.ReportMetric(float64(samples)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
	b.ReportMetric(float64(len(wire))/float64(samples), "wire_bytes/sample")
	b.ReportMetric(float64(len(firstWire))/float64(samples), "first_window_bytes/sample")
	b.ReportMetric(float64(samples), "samples/window")
}

// BenchmarkHeartbeatDecode measures a parent: snappy, unmarshal, and
// resolving refs through the child's dictionary.
func BenchmarkHeartbeatDecode(b *testing.B) {
	window := exporterWindow(b, 1, 1_700_000_000_000)
	samples := window.NumSamples()
	enc := batch.NewEncoder(1, 0)
	dec := batch.NewDecoder()
	first := &canopyv1.HeartbeatRequest{}
	enc.Confirm(enc.Encode(first, []*batch.Batch{window}, 2))
	if _, err := dec.Decode(first, batch.DecodeLimits{}); err != nil {
		b.Fatal(err)
	}
	req := &canopyv1.HeartbeatRequest{}
	enc.Encode(req, []*batch.Batch{window}, 2)
	wire := snappy.Encode(nil, marshal(b, req))

	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		raw, err := snappy.Decode(nil, wire)
		if err != nil {
			b.Fatal(err)
		}
		var got canopyv1.HeartbeatRequest
		if err := proto.Unmarshal(raw, &got); err != nil {
			b.Fatal(err)
		}
		if _, err := dec.Decode(&got, batch.DecodeLimits{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(samples)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
}

// BenchmarkScrapeParse measures parsing and labelling one real
// node_exporter scrape.
func BenchmarkScrapeParse(b *testing.B) {
	body, err := os.ReadFile("testdata/node_exporter.txt")
	if err != nil {
		b.Fatal(err)
	}
	var n int
	b.ReportAllocs()
	for b.Loop() {
		samples, _, err := leaf.Parse(body, "text/plain; version=0.0.4", leaf.Target{Name: "node_exporter", Level: leaf.LevelMachine}, leaf.Identity{Node: "n", DC: "d"}, 1)
		if err != nil {
			b.Fatal(err)
		}
		n = len(samples)
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
}

func TestExporterWindowShape(t *testing.T) {
	w := exporterWindow(t, 1, 1_700_000_000_000)
	if len(w.Series) < 400 || w.NumSamples() != 3*len(w.Series) {
		t.Fatalf("window has %d series, %d samples", len(w.Series), w.NumSamples())
	}
}
