package reader

import (
	"fmt"
	"sync"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
)

// BenchmarkStreamFanOut: one node's committed batch (100 samples) turned
// into an update and fanned out to 100 subscribers of metrics.nodes.*
// that read as fast as they can; with one more subscriber that never
// reads, publishing must cost the same (its buffer fills, its updates are
// dropped, nobody waits).
func BenchmarkStreamFanOut(b *testing.B) {
	samples := make([]Sample, 100)
	for i := range samples {
		samples[i] = Sample{Labels: labels.FromStrings("__name__", fmt.Sprintf("m%d", i), "node", "n1", "dc", "eu-1"), T: 1000, V: float64(i)}
	}
	for _, stalled := range []bool{false, true} {
		b.Run(fmt.Sprintf("stalled=%v", stalled), func(b *testing.B) {
			h := NewHub(1024, 100_000, nil)
			var wg sync.WaitGroup
			var subs []*Subscription
			for range 100 {
				s, _ := h.Subscribe("metrics.nodes.*")
				subs = append(subs, s)
				wg.Go(func() {
					for range s.Updates() {
					}
				})
			}
			if stalled {
				_, _ = h.Subscribe("metrics.nodes.*")
			}
			publish := h.Publisher()
			b.ResetTimer()
			for range b.N {
				publish(samples)
			}
			b.StopTimer()
			for _, s := range subs {
				h.Unsubscribe(s)
				close(s.c)
			}
			wg.Wait()
			b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "deliveries/s")
		})
	}
}
