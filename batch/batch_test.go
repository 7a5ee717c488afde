package batch

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/protobuf/proto"

	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

func series(name string, samples ...Sample) Series {
	return Series{Labels: labels.FromStrings("__name__", name, "node", "n1"), Type: canopyv1.MetricType_METRIC_TYPE_GAUGE, Samples: samples}
}

func TestBuilderGroupsAndDropsRepeatedTimestamps(t *testing.T) {
	b := NewBuilder()
	a := labels.FromStrings("__name__", "a")
	c := labels.FromStrings("__name__", "c")
	b.Add(a, 0, 1000, 1)
	b.Add(c, 0, 1000, 5)
	b.Add(a, 0, 3000, 2)
	b.Add(a, 0, 3000, 9) // same timestamp again: dropped
	if b.Samples() != 3 {
		t.Fatalf("samples = %d, want 3", b.Samples())
	}
	got := b.Take()
	if len(got) != 2 || len(got[0].Samples) != 2 || got[0].Samples[1] != (Sample{3000, 2}) {
		t.Fatalf("unexpected series %+v", got)
	}
	if b.Samples() != 0 || len(b.Take()) != 0 {
		t.Fatal("Take did not reset the builder")
	}
}

func TestBufferAckAndOverflow(t *testing.T) {
	buf := NewBuffer("n1", 7, AtLeastOnce, Limits{MaxSamples: 5})
	for i := range 4 {
		id := buf.Seal([]Series{series("m", Sample{int64(i), 1}, Sample{int64(i) + 1, 2})})
		if id.Seq != uint64(i+1) || id.Epoch != 7 {
			t.Fatalf("seal %d: id %+v", i, id)
		}
	}
	// 4 batches x 2 samples over a 5-sample limit: the two oldest went.
	if buf.Len() != 2 || buf.LowSeq() != 3 {
		t.Fatalf("len %d low %d, want 2 and 3", buf.Len(), buf.LowSeq())
	}
	if l := buf.Loss(); l != (Loss{Batches: 2, Samples: 4}) {
		t.Fatalf("loss %+v", l)
	}
	buf.Ack(6, 100) // other epoch: ignored
	if buf.Len() != 2 {
		t.Fatal("ack for another epoch released batches")
	}
	buf.Ack(7, 3)
	if buf.Len() != 1 || buf.LowSeq() != 4 {
		t.Fatalf("after ack: len %d low %d", buf.Len(), buf.LowSeq())
	}
	buf.Ack(7, 4)
	if buf.Len() != 0 || buf.LowSeq() != 5 {
		t.Fatalf("after full ack: len %d low %d", buf.Len(), buf.LowSeq())
	}
}

func TestBufferDue(t *testing.T) {
	now := time.Unix(1000, 0)
	buf := NewBuffer("n1", 1, AtLeastOnce, Limits{})
	buf.Seal(nil)
	buf.Seal(nil)
	due := buf.Due(10, now, time.Minute, 100)
	if len(due) != 2 || due[0].LowSeq != 1 {
		t.Fatalf("due %v", due)
	}
	buf.Sent([]ID{due[0].ID, due[1].ID}, 10, now)
	if d := buf.Due(10, now.Add(time.Second), time.Minute, 100); len(d) != 0 {
		t.Fatalf("handed-over batches due again: %v", d)
	}
	buf.Seal(nil)
	if d := buf.Due(10, now, time.Minute, 100); len(d) != 1 || d[0].Seq != 3 {
		t.Fatalf("only the new batch should be due, got %v", d)
	}
	// A different path instance means something above restarted.
	if d := buf.Due(11, now, time.Minute, 2); len(d) != 2 || d[0].Seq != 1 {
		t.Fatalf("path change should resend from the oldest, got %v", d)
	}
	// Unacknowledged for too long: resent on the same path.
	if d := buf.Due(10, now.Add(2*time.Minute), time.Minute, 100); len(d) != 3 {
		t.Fatalf("timeout should resend all, got %d", len(d))
	}
}

func TestBufferAtMostOnce(t *testing.T) {
	buf := NewBuffer("n1", 1, AtMostOnce, Limits{})
	buf.Seal(nil)
	buf.Seal(nil)
	due := buf.Due(1, time.Unix(0, 0), time.Minute, 10)
	buf.Sent([]ID{due[0].ID, due[1].ID}, 1, time.Unix(0, 0))
	if buf.Len() != 0 {
		t.Fatalf("at-most-once kept %d batches", buf.Len())
	}
}

func roundTrip(t *testing.T, enc *Encoder, dec *Decoder, in []*Batch) ([]Batch, []uint64) {
	t.Helper()
	req := &canopyv1.HeartbeatRequest{}
	defs := enc.Encode(req, in, 99)
	wire, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var got canopyv1.HeartbeatRequest
	if err := proto.Unmarshal(wire, &got); err != nil {
		t.Fatal(err)
	}
	out, err := dec.Decode(&got, DecodeLimits{})
	if err != nil {
		t.Fatal(err)
	}
	return out, defs
}

func TestCodecRoundTripAndDictionary(t *testing.T) {
	enc, dec := NewEncoder(1, 0), NewDecoder()
	b1 := &Batch{ID: ID{"n1", 3, 1}, LowSeq: 1, Series: []Series{
		series("a", Sample{1000, 1.5}, Sample{3000, -2}),
		series("b", Sample{999, 7}),
	}}
	out, defs := roundTrip(t, enc, dec, []*Batch{b1})
	if len(defs) != 2 {
		t.Fatalf("defined %v, want 2 refs", defs)
	}
	if len(out) != 1 || out[0].ID != b1.ID || out[0].LowSeq != 1 {
		t.Fatalf("batch header lost: %+v", out)
	}
	for i := range b1.Series {
		if !labels.Equal(out[0].Series[i].Labels, b1.Series[i].Labels) || fmt.Sprint(out[0].Series[i].Samples) != fmt.Sprint(b1.Series[i].Samples) {
			t.Fatalf("series %d: got %+v want %+v", i, out[0].Series[i], b1.Series[i])
		}
	}
	// Unconfirmed definitions are repeated; confirmed ones are not.
	if _, defs := roundTrip(t, enc, dec, []*Batch{b1}); len(defs) != 2 {
		t.Fatalf("unconfirmed refs not resent: %v", defs)
	}
	enc.Confirm(defs)
	b2 := &Batch{ID: ID{"n1", 3, 2}, Series: []Series{series("a", Sample{5000, 3}), series("c", Sample{5000, 1})}}
	out, defs = roundTrip(t, enc, dec, []*Batch{b2})
	if len(defs) != 1 || out[0].Series[1].Labels.Get("__name__") != "c" {
		t.Fatalf("expected only series c defined, got %v", defs)
	}
}

func TestDecoderUnknownSession(t *testing.T) {
	enc := NewEncoder(1, 0)
	b := &Batch{ID: ID{"n1", 1, 1}, Series: []Series{series("a", Sample{1, 1})}}
	req := &canopyv1.HeartbeatRequest{}
	enc.Confirm(enc.Encode(req, []*Batch{b}, 2))
	// The parent restarted: a fresh decoder sees refs without definitions.
	req = &canopyv1.HeartbeatRequest{}
	enc.Encode(req, []*Batch{b}, 2)
	if _, err := NewDecoder().Decode(req, DecodeLimits{}); !errors.Is(err, ErrUnknownSession) {
		t.Fatalf("err = %v, want ErrUnknownSession", err)
	}
}

func TestDecoderRejects(t *testing.T) {
	lbl := func(kv ...string) []*canopyv1.Label {
		var out []*canopyv1.Label
		for i := 0; i < len(kv); i += 2 {
			out = append(out, &canopyv1.Label{Name: kv[i], Value: kv[i+1]})
		}
		return out
	}
	cases := map[string]*canopyv1.HeartbeatRequest{
		"invalid label name": {Series: []*canopyv1.SeriesDef{{Ref: 1, Labels: lbl("__name__", "m", "bad-name", "x")}}},
		"invalid metric":     {Series: []*canopyv1.SeriesDef{{Ref: 1, Labels: lbl("__name__", "1m")}}},
		"no metric name":     {Series: []*canopyv1.SeriesDef{{Ref: 1, Labels: lbl("a", "b")}}},
		"duplicate name":     {Series: []*canopyv1.SeriesDef{{Ref: 1, Labels: lbl("__name__", "m", "a", "1", "a", "2")}}},
		"empty value":        {Series: []*canopyv1.SeriesDef{{Ref: 1, Labels: lbl("__name__", "m", "a", "")}}},
		"bad utf8":           {Series: []*canopyv1.SeriesDef{{Ref: 1, Labels: lbl("__name__", "m", "a", "\xff")}}},
		"long value":         {Series: []*canopyv1.SeriesDef{{Ref: 1, Labels: lbl("__name__", "m", "a", string(make([]byte, 300)))}}},
		"ref zero":           {Series: []*canopyv1.SeriesDef{{Ref: 0, Labels: lbl("__name__", "m")}}},
		"length mismatch": {Series: []*canopyv1.SeriesDef{{Ref: 1, Labels: lbl("__name__", "m")}}, Batches: []*canopyv1.Batch{
			{Origin: "n", Seq: 1, Series: []*canopyv1.SeriesSamples{{Ref: 1, TimestampDeltas: []int64{1}, Values: []float64{1, 2}}}}}},
		"no origin": {Batches: []*canopyv1.Batch{{Seq: 1}}},
		"too many samples": {Series: []*canopyv1.SeriesDef{{Ref: 1, Labels: lbl("__name__", "m")}}, Batches: []*canopyv1.Batch{
			{Origin: "n", Seq: 1, Series: []*canopyv1.SeriesSamples{{Ref: 1, TimestampDeltas: make([]int64, 11), Values: make([]float64, 11)}}}}},
	}
	for name, req := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := NewDecoder().Decode(req, DecodeLimits{MaxLabelValueLen: 256, MaxSamples: 10})
			if err == nil {
				t.Fatal("accepted")
			}
			t.Log(err)
		})
	}
}
