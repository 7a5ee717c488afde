package batch

import (
	"github.com/prometheus/prometheus/model/labels"

	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// Builder collects the samples of one window, grouping them by series. It is
// not safe for concurrent use.
type Builder struct {
	index   map[string]int
	series  []Series
	samples int
	key     []byte
}

// NewBuilder returns an empty builder.
func NewBuilder() *Builder { return &Builder{index: map[string]int{}} }

// Add appends a sample to its series. Samples of a series must be added in
// timestamp order; one at an already-seen timestamp replaces nothing and is
// dropped, so a re-scrape with an explicit timestamp does not duplicate.
func (b *Builder) Add(lset labels.Labels, typ canopyv1.MetricType, t int64, v float64) {
	b.key = lset.Bytes(b.key[:0])
	i, ok := b.index[string(b.key)]
	if !ok {
		i = len(b.series)
		b.index[string(b.key)] = i
		b.series = append(b.series, Series{Labels: lset, Type: typ})
	}
	s := &b.series[i]
	if n := len(s.Samples); n > 0 && s.Samples[n-1].T >= t {
		return
	}
	s.Samples = append(s.Samples, Sample{T: t, V: v})
	b.samples++
}

// Samples is the number of samples collected so far.
func (b *Builder) Samples() int { return b.samples }

// Take returns the collected series and starts a new window.
func (b *Builder) Take() []Series {
	out := b.series
	b.series = nil
	b.samples = 0
	clear(b.index)
	return out
}
