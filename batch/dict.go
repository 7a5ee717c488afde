package batch

import (
	"errors"
	"fmt"

	"github.com/prometheus/prometheus/model/labels"

	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// Encoder turns batches into the wire form of one sender→parent session:
// each label set is sent once as a SeriesDef and afterwards referred to by a
// small ref; timestamps are delta encoded. A definition is repeated in every
// message that uses it until the parent has accepted one message carrying
// it (Confirm). It is not safe for concurrent use.
type Encoder struct {
	session   uint64
	maxRefs   int
	refs      map[string]uint64
	confirmed []bool // by ref; index 0 unused
	key       []byte
}

// NewEncoder starts a session. When the dictionary would grow past maxRefs
// (0 = unbounded) the encoder starts a new session rather than grow forever
// under series churn.
func NewEncoder(session uint64, maxRefs int) *Encoder {
	e := &Encoder{maxRefs: maxRefs}
	e.Reset(session)
	return e
}

// Session is the current session id.
func (e *Encoder) Session() uint64 { return e.session }

// Reset starts a new, empty session. Use it when the parent reports that it
// does not know the session (it restarted) or on a new parent.
func (e *Encoder) Reset(session uint64) {
	e.session = session
	e.refs = map[string]uint64{}
	e.confirmed = []bool{false}
}

// Encode fills req.Session, req.Series and req.Batches from batches and
// returns the refs it defined, to Confirm once the parent accepted req.
// If the dictionary is full it first starts session newSession.
func (e *Encoder) Encode(req *canopyv1.HeartbeatRequest, batches []*Batch, newSession uint64) (defined []uint64) {
	if e.maxRefs > 0 && len(e.refs) >= e.maxRefs {
		e.Reset(newSession)
	}
	req.Session = e.session
	inMessage := map[uint64]bool{}
	for _, b := range batches {
		pb := &canopyv1.Batch{
			Origin: b.Origin, Epoch: b.Epoch, Seq: b.Seq, LowSeq: b.LowSeq,
			Series: make([]*canopyv1.SeriesSamples, 0, len(b.Series)),
		}
		pb.BaseTimestampMs = baseTimestamp(b.Series)
		for i := range b.Series {
			s := &b.Series[i]
			ref := e.ref(s.Labels)
			if !e.confirmed[ref] && !inMessage[ref] {
				inMessage[ref] = true
				defined = append(defined, ref)
				req.Series = append(req.Series, &canopyv1.SeriesDef{Ref: ref, Labels: ToProtoLabels(s.Labels), Type: s.Type})
			}
			pb.Series = append(pb.Series, encodeSamples(ref, pb.BaseTimestampMs, s.Samples))
		}
		req.Batches = append(req.Batches, pb)
	}
	return defined
}

// Confirm records that the parent has the given definitions.
func (e *Encoder) Confirm(refs []uint64) {
	for _, r := range refs {
		if r < uint64(len(e.confirmed)) {
			e.confirmed[r] = true
		}
	}
}

func (e *Encoder) ref(ls labels.Labels) uint64 {
	e.key = ls.Bytes(e.key[:0])
	if r, ok := e.refs[string(e.key)]; ok {
		return r
	}
	r := uint64(len(e.confirmed))
	e.refs[string(e.key)] = r
	e.confirmed = append(e.confirmed, false)
	return r
}

func baseTimestamp(series []Series) int64 {
	var base int64
	first := true
	for i := range series {
		if len(series[i].Samples) == 0 {
			continue
		}
		if t := series[i].Samples[0].T; first || t < base {
			base, first = t, false
		}
	}
	return base
}

func encodeSamples(ref uint64, base int64, samples []Sample) *canopyv1.SeriesSamples {
	out := &canopyv1.SeriesSamples{
		Ref:             ref,
		TimestampDeltas: make([]int64, len(samples)),
		Values:          make([]float64, len(samples)),
	}
	prev := base
	for i, s := range samples {
		out.TimestampDeltas[i] = s.T - prev
		out.Values[i] = s.V
		prev = s.T
	}
	return out
}

// ToProtoLabels converts a label set to its wire form.
func ToProtoLabels(ls labels.Labels) []*canopyv1.Label {
	n := ls.Len()
	out := make([]*canopyv1.Label, n)
	slab := make([]canopyv1.Label, n) // one allocation for the messages
	i := 0
	ls.Range(func(l labels.Label) {
		slab[i].Name, slab[i].Value = l.Name, l.Value
		out[i] = &slab[i]
		i++
	})
	return out
}

// FromProtoLabels converts a wire label set, sorting it.
func FromProtoLabels(ls []*canopyv1.Label) labels.Labels {
	b := labels.NewScratchBuilder(len(ls))
	for _, l := range ls {
		b.Add(l.Name, l.Value)
	}
	b.Sort()
	return b.Labels()
}

// ErrUnknownSession is wrapped by Decode when a message refers to series the
// decoder was never given in this session; the sender must start a new one.
var ErrUnknownSession = errors.New("unknown series ref in session")

// DecodeLimits bound one message; zero means unbounded.
type DecodeLimits struct {
	MaxSeries         int // series samples entries across all batches
	MaxSamples        int
	MaxLabelsPerSet   int
	MaxLabelNameLen   int
	MaxLabelValueLen  int
	MaxDictionarySize int // refs kept per session
}

type defined struct {
	labels labels.Labels
	typ    canopyv1.MetricType
}

// Decoder is the parent's side of one child's session. It is not safe for
// concurrent use.
type Decoder struct {
	session uint64
	series  []defined // by ref; a zero label set means undefined
	builder labels.ScratchBuilder
}

// NewDecoder returns a decoder that knows no session yet.
func NewDecoder() *Decoder { return &Decoder{} }

// Session is the session the decoder holds a dictionary for.
func (d *Decoder) Session() uint64 { return d.session }

// Decode validates req against lim and returns its batches. A new session id
// starts an empty dictionary. Any error leaves the dictionary as it was
// before definitions that failed validation, and nothing of the message is
// returned: a message is accepted whole or not at all.
func (d *Decoder) Decode(req *canopyv1.HeartbeatRequest, lim DecodeLimits) ([]Batch, error) {
	if req.Session != d.session {
		d.session = req.Session
		d.series = d.series[:0]
	}
	for _, def := range req.Series {
		if err := d.define(def, lim); err != nil {
			return nil, err
		}
	}
	var nSeries, nSamples int
	for _, pb := range req.Batches {
		nSeries += len(pb.Series)
		for _, s := range pb.Series {
			nSamples += len(s.Values)
		}
	}
	if lim.MaxSeries > 0 && nSeries > lim.MaxSeries {
		return nil, fmt.Errorf("heartbeat carries %d series, limit is %d", nSeries, lim.MaxSeries)
	}
	if lim.MaxSamples > 0 && nSamples > lim.MaxSamples {
		return nil, fmt.Errorf("heartbeat carries %d samples, limit is %d", nSamples, lim.MaxSamples)
	}
	out := make([]Batch, 0, len(req.Batches))
	samples := make([]Sample, nSamples) // one allocation shared by all series
	for _, pb := range req.Batches {
		if pb.Origin == "" || pb.Seq == 0 {
			return nil, fmt.Errorf("batch (origin %q, epoch %d, seq %d): origin and seq are required", pb.Origin, pb.Epoch, pb.Seq)
		}
		b := Batch{ID: ID{Origin: pb.Origin, Epoch: pb.Epoch, Seq: pb.Seq}, LowSeq: pb.LowSeq, Series: make([]Series, len(pb.Series))}
		for i, ss := range pb.Series {
			if ss.Ref == 0 || ss.Ref >= uint64(len(d.series)) || d.series[ss.Ref].labels.IsEmpty() {
				return nil, fmt.Errorf("batch %s/%d/%d: series ref %d in session %d: %w", pb.Origin, pb.Epoch, pb.Seq, ss.Ref, req.Session, ErrUnknownSession)
			}
			if len(ss.TimestampDeltas) != len(ss.Values) {
				return nil, fmt.Errorf("batch %s/%d/%d: series ref %d has %d timestamps but %d values", pb.Origin, pb.Epoch, pb.Seq, ss.Ref, len(ss.TimestampDeltas), len(ss.Values))
			}
			def := d.series[ss.Ref]
			n := len(ss.Values)
			s := samples[:n:n]
			samples = samples[n:]
			t := pb.BaseTimestampMs
			for j, v := range ss.Values {
				t += ss.TimestampDeltas[j]
				s[j] = Sample{T: t, V: v}
			}
			b.Series[i] = Series{Labels: def.labels, Type: def.typ, Samples: s}
		}
		out = append(out, b)
	}
	return out, nil
}

func (d *Decoder) define(def *canopyv1.SeriesDef, lim DecodeLimits) error {
	if def.Ref == 0 {
		return errors.New("series definition with ref 0")
	}
	if lim.MaxDictionarySize > 0 && def.Ref > uint64(lim.MaxDictionarySize) {
		return fmt.Errorf("series ref %d exceeds the dictionary limit %d", def.Ref, lim.MaxDictionarySize)
	}
	if err := ValidateLabels(def.Labels, lim); err != nil {
		return fmt.Errorf("series ref %d: %w", def.Ref, err)
	}
	d.builder.Reset()
	for _, l := range def.Labels {
		d.builder.Add(l.Name, l.Value)
	}
	d.builder.Sort()
	ls := d.builder.Labels()
	for uint64(len(d.series)) <= def.Ref {
		d.series = append(d.series, defined{})
	}
	if old := d.series[def.Ref].labels; !old.IsEmpty() && !labels.Equal(old, ls) {
		return fmt.Errorf("series ref %d redefined with different labels in session %d", def.Ref, d.session)
	}
	d.series[def.Ref] = defined{labels: ls, typ: def.Type}
	return nil
}
