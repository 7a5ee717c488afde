package remote

import (
	"fmt"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"

	"github.com/canopytree/canopy/batch"
)

// Sample is one value of one series on its way to a sink.
type Sample = batch.LabeledSample

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
// safe for concurrent use; each shard has its own. It reuses its buffers
// from request to request.
type Encoder struct {
	external []labels.Label
	req      prompb.WriteRequest
	pool     []prompb.TimeSeries
	orig     []labels.Labels
	index    map[uint64][]int // labels hash → series in this request
	raw      []byte
	out      []byte
}

// NewEncoder adds external to every series (a series' own label of the
// same name wins, as in Prometheus).
func NewEncoder(external labels.Labels) *Encoder {
	e := &Encoder{index: map[uint64][]int{}}
	external.Range(func(l labels.Label) { e.external = append(e.external, l) })
	return e
}

// Encode returns the snappy-compressed WriteRequest for samples. Samples
// of one series must come in timestamp order; they are grouped into one
// TimeSeries per series, in the order the series first appear. The
// result is valid until the next call.
func (e *Encoder) Encode(samples []Sample) ([]byte, error) {
	clear(e.index)
	n := 0
	for _, s := range samples {
		h := s.Labels.Hash()
		i := -1
		for _, j := range e.index[h] {
			if labels.Equal(e.orig[j], s.Labels) {
				i = j
				break
			}
		}
		if i < 0 {
			i = n
			n++
			e.index[h] = append(e.index[h], i)
			if i == len(e.pool) {
				e.pool = append(e.pool, prompb.TimeSeries{})
				e.orig = append(e.orig, labels.EmptyLabels())
			}
			e.orig[i] = s.Labels
			ts := &e.pool[i]
			ts.Labels = e.appendLabels(ts.Labels[:0], s.Labels)
			ts.Samples = ts.Samples[:0]
		}
		ts := &e.pool[i]
		if k := len(ts.Samples); k > 0 && ts.Samples[k-1].Timestamp > s.T {
			return nil, fmt.Errorf("series %s: sample at %d after one at %d", s.Labels, s.T, ts.Samples[k-1].Timestamp)
		}
		ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: s.T, Value: s.V})
	}
	e.req.Timeseries = e.pool[:n]
	size := e.req.Size()
	if cap(e.raw) < size {
		e.raw = make([]byte, size)
	}
	k, err := e.req.MarshalToSizedBuffer(e.raw[:size])
	if err != nil {
		return nil, fmt.Errorf("marshal write request: %w", err)
	}
	e.out = snappy.Encode(e.out[:cap(e.out)], e.raw[size-k:size])
	return e.out, nil
}

// appendLabels appends the wire labels of ls: merged in name order with
// the external labels (the series' own wins), empty values left out.
func (e *Encoder) appendLabels(out []prompb.Label, ls labels.Labels) []prompb.Label {
	extNames, j := e.external, 0
	add := func(l labels.Label) {
		if l.Value != "" {
			out = append(out, prompb.Label{Name: l.Name, Value: l.Value})
		}
	}
	ls.Range(func(l labels.Label) {
		for j < len(extNames) && extNames[j].Name < l.Name {
			add(extNames[j])
			j++
		}
		if j < len(extNames) && extNames[j].Name == l.Name {
			j++ // the series' own label wins
		}
		add(l)
	})
	for ; j < len(extNames); j++ {
		add(extNames[j])
	}
	return out
}
