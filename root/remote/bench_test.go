package remote

import (
	"fmt"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
)

// nodeWindow is 1,500 samples of a node_exporter-sized node.
func nodeWindow(node string, t int64) []Sample {
	out := make([]Sample, 0, 1500)
	for i := range 1500 {
		ls := labels.FromStrings("__name__", fmt.Sprintf("node_metric_%d", i%150), "node", node, "dc", "eu-1",
			"job", "node_exporter", "level", "machine", "i", fmt.Sprint(i))
		out = append(out, Sample{Labels: ls, T: t, V: float64(t%1000) + float64(i)})
	}
	return out
}

// BenchmarkEncode: building and compressing remote-write requests of
// MaxSamplesPerSend samples.
func BenchmarkEncode(b *testing.B) {
	samples := nodeWindow("n1", 1000)
	enc := NewEncoder(labels.FromStrings("canopy_root", "a"))
	var bytes int
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		body, err := enc.Encode(samples)
		if err != nil {
			b.Fatal(err)
		}
		bytes = len(body)
	}
	b.ReportMetric(float64(b.N*len(samples))/b.Elapsed().Seconds(), "samples/s")
	b.ReportMetric(float64(bytes)/float64(len(samples)), "B/sample")
}

// BenchmarkLogAppend: the root's durable write before it acknowledges a
// heartbeat (encode, compress, checksum, write).
func BenchmarkLogAppend(b *testing.B) {
	l, err := OpenLog(b.TempDir(), LogConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	samples := nodeWindow("n1", 1000)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := l.Append(samples); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(samples))/b.Elapsed().Seconds(), "samples/s")
	b.ReportMetric(float64(l.Bytes())/float64(b.N*len(samples)), "disk-B/sample")
}
