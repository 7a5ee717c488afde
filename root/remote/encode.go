package remote

import (
	"fmt"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
)

// Sample is one value of one series on its way to a sink.
type Sample struct {
	Labels labels.Labels
	T      int64
	V      float64
}

// Relabel is an endpoint's write relabelling: a series is sent when it
// matches at least one Keep selector (or Keep is empty) and no Drop
// selector. A selector matches when all its matchers do.
type Relabel struct {
	Keep [][]*labels.Matcher
	Drop [][]*labels.Matcher
}

func matchesAny(sels [][]*labels.Matcher, ls labels.Labels) bool {
	for _, sel := range sels {
		all := true
		for _, m := range sel {
			if !m.Matches(ls.Get(m.Name)) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

// Sends reports whether the relabelling lets the series through.
func (r Relabel) Sends(ls labels.Labels) bool {
	if len(r.Keep) > 0 && !matchesAny(r.Keep, ls) {
		return false
	}
	return !matchesAny(r.Drop, ls)
}

// Encoder builds remote write 1.0 requests for one endpoint. It is not
// safe for concurrent use; each shard has its own.
type Encoder struct {
	external labels.Labels
	req      prompb.WriteRequest
	raw      []byte
	out      []byte
	builder  labels.Builder
}

// NewEncoder adds external to every series (a series' own label of the
// same name wins, as in Prometheus).
func NewEncoder(external labels.Labels) *Encoder {
	return &Encoder{external: external, builder: *labels.NewBuilder(labels.EmptyLabels())}
}

// Encode returns the snappy-compressed WriteRequest for samples. Samples
// of one series must come in timestamp order; they are grouped into one
// TimeSeries per series, in the order the series first appear. The
// result is valid until the next call.
func (e *Encoder) Encode(samples []Sample) ([]byte, error) {
	e.req.Timeseries = e.req.Timeseries[:0]
	index := map[string]int{}
	var key []byte
	for _, s := range samples {
		key = s.Labels.Bytes(key[:0])
		i, ok := index[string(key)]
		if !ok {
			i = len(e.req.Timeseries)
			index[string(key)] = i
			e.req.Timeseries = append(e.req.Timeseries, prompb.TimeSeries{Labels: e.labels(s.Labels)})
		}
		ts := &e.req.Timeseries[i]
		if n := len(ts.Samples); n > 0 && ts.Samples[n-1].Timestamp > s.T {
			return nil, fmt.Errorf("series %s: sample at %d after one at %d", s.Labels, s.T, ts.Samples[n-1].Timestamp)
		}
		ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: s.T, Value: s.V})
	}
	size := e.req.Size()
	if cap(e.raw) < size {
		e.raw = make([]byte, size)
	}
	n, err := e.req.MarshalToSizedBuffer(e.raw[:size])
	if err != nil {
		return nil, fmt.Errorf("marshal write request: %w", err)
	}
	e.out = snappy.Encode(e.out[:cap(e.out)], e.raw[size-n:size])
	return e.out, nil
}

// labels converts a label set to the wire: external labels added, empty
// values left out, in name order.
func (e *Encoder) labels(ls labels.Labels) []prompb.Label {
	e.builder.Reset(ls)
	e.external.Range(func(l labels.Label) {
		if ls.Get(l.Name) == "" {
			e.builder.Set(l.Name, l.Value)
		}
	})
	out := make([]prompb.Label, 0, ls.Len()+e.external.Len())
	e.builder.Labels().Range(func(l labels.Label) {
		if l.Value != "" {
			out = append(out, prompb.Label{Name: l.Name, Value: l.Value})
		}
	})
	return out // labels.Labels are sorted by name
}
