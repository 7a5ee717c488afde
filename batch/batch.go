// Package batch owns temporal batching: the window Builder that collects a
// node's samples, the bounded retention Buffer with sequence numbers and
// end-to-end acknowledgement, and the series-dictionary codec (Encoder,
// Decoder) that puts batches on the wire. It knows nothing of transports or
// storage and must not import the TSDB.
package batch

import (
	"github.com/prometheus/prometheus/model/labels"

	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// Sample is one value at one instant (milliseconds since the Unix epoch).
type Sample struct {
	T int64
	V float64
}

// LabeledSample is one sample with its series' labels, as storage
// commits it: what the root hands to remote write and to the stream.
type LabeledSample struct {
	Labels labels.Labels
	T      int64
	V      float64
}

// Series is a label set with its samples in timestamp order.
type Series struct {
	Labels  labels.Labels
	Type    canopyv1.MetricType
	Samples []Sample
}

// ID identifies a batch end to end. Seq starts at 1 in each epoch.
type ID struct {
	Origin string
	Epoch  uint64
	Seq    uint64
}

// Batch is one window of samples from one origin.
type Batch struct {
	ID
	// LowSeq is the lowest seq the origin still retained when it sent the
	// batch: everything below was acknowledged or dropped and counted.
	LowSeq uint64
	Series []Series
}

// NumSamples counts the samples across all series.
func (b *Batch) NumSamples() int {
	n := 0
	for i := range b.Series {
		n += len(b.Series[i].Samples)
	}
	return n
}

// SizeBytes estimates the batch's memory footprint: label bytes plus 16
// bytes per sample. It is what retention limits are measured in.
func (b *Batch) SizeBytes() int {
	n := 0
	for i := range b.Series {
		n += int(b.Series[i].Labels.ByteSize()) + 16*len(b.Series[i].Samples)
	}
	return n
}
