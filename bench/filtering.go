package bench

import (
	"bytes"
	"fmt"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/proto"

	"github.com/canopytree/canopy/batch"
	"github.com/canopytree/canopy/bench/recording"
	"github.com/canopytree/canopy/filter"
	"github.com/canopytree/canopy/internal/grpcsnappy"
	"github.com/canopytree/canopy/leaf"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// RemoteWriteMaxSamplesPerSend is Prometheus's default
// queue_config.max_samples_per_send.
const RemoteWriteMaxSamplesPerSend = 2000

// ReplayConfig is how a recording is replayed: the node's window and its
// filter.
type ReplayConfig struct {
	Window time.Duration
	Filter filter.Config
}

// ReplayResult counts what one node would send for a recording.
type ReplayResult struct {
	Windows int
	// Scraped samples, and samples left after filtering (staleness
	// markers included).
	Scraped, Sent int
	// WireBytes: canopy heartbeats as sent (series dictionary per session,
	// delta timestamps, the gRPC snappy compressor).
	WireBytes int
	// RemoteWriteBytes: every scraped sample as Prometheus remote write
	// 1.0 sends it (one prompb.TimeSeries per sample with all its labels,
	// up to RemoteWriteMaxSamplesPerSend per request, snappy block format).
	RemoteWriteBytes int
}

// SentPerWindow is the mean number of samples a window carries.
func (r ReplayResult) SentPerWindow() float64 { return float64(r.Sent) / float64(r.Windows) }

// WireBytesPerScrapedSample is canopy's cost per sample scraped.
func (r ReplayResult) WireBytesPerScrapedSample() float64 {
	return float64(r.WireBytes) / float64(r.Scraped)
}

// WireBytesPerSentSample is canopy's cost per sample it sends.
func (r ReplayResult) WireBytesPerSentSample() float64 { return float64(r.WireBytes) / float64(r.Sent) }

// RemoteWriteBytesPerSample is remote write's cost per sample.
func (r ReplayResult) RemoteWriteBytesPerSample() float64 {
	return float64(r.RemoteWriteBytes) / float64(r.Scraped)
}

// Replay feeds the recorded scrapes, in windows, through the node's parser,
// filter and heartbeat encoder, and through a remote-write 1.0 encoding.
func Replay(frames []recording.Frame, cfg ReplayConfig) (ReplayResult, error) {
	var res ReplayResult
	if len(frames) == 0 {
		return res, fmt.Errorf("empty recording")
	}
	id := leaf.Identity{Node: "n1", DC: "eu-1"}
	target := leaf.Target{Name: "node_exporter"}
	f := filter.New(cfg.Filter)
	enc := batch.NewEncoder(1, 1<<20)
	snappyGRPC := encoding.GetCompressor(grpcsnappy.Name)
	b := batch.NewBuilder()
	var rw []prompb.TimeSeries
	seq := uint64(0)
	start := frames[0].TimestampMs
	window := cfg.Window.Milliseconds()
	flush := func(sealedAt int64) error {
		res.Windows++
		seq++
		series := f.Apply(sealedAt, b.Take())
		for _, s := range series {
			res.Sent += len(s.Samples)
		}
		req := &canopyv1.HeartbeatRequest{}
		defined := enc.Encode(req, []*batch.Batch{{ID: batch.ID{Origin: id.Node, Epoch: 1, Seq: seq}, Series: series}}, 1)
		enc.Confirm(defined)
		n, err := compressedSize(snappyGRPC, req)
		if err != nil {
			return err
		}
		res.WireBytes += n
		for len(rw) > 0 {
			k := min(len(rw), RemoteWriteMaxSamplesPerSend)
			raw, err := (&prompb.WriteRequest{Timeseries: rw[:k]}).Marshal()
			if err != nil {
				return err
			}
			res.RemoteWriteBytes += len(snappy.Encode(nil, raw))
			rw = rw[k:]
		}
		return nil
	}
	next := start + window
	for _, fr := range frames {
		for fr.TimestampMs >= next {
			if err := flush(next); err != nil {
				return res, err
			}
			next += window
		}
		samples, _, err := leaf.Parse(fr.Body, fr.ContentType, target, id, fr.TimestampMs)
		if err != nil {
			return res, fmt.Errorf("frame at %d: %w", fr.TimestampMs, err)
		}
		for _, s := range samples {
			b.Add(s.Labels, s.Type, s.T, s.V)
			rw = append(rw, remoteWriteSeries(s.Labels, s.T, s.V))
		}
		res.Scraped += len(samples)
	}
	return res, flush(next)
}

func compressedSize(c encoding.Compressor, m proto.Message) (int, error) {
	raw, err := proto.Marshal(m)
	if err != nil {
		return 0, err
	}
	var buf bytes.Buffer
	w, err := c.Compress(&buf)
	if err != nil {
		return 0, err
	}
	if _, err := w.Write(raw); err != nil {
		return 0, err
	}
	if err := w.Close(); err != nil {
		return 0, err
	}
	return buf.Len(), nil
}

func remoteWriteSeries(ls labels.Labels, t int64, v float64) prompb.TimeSeries {
	out := prompb.TimeSeries{Labels: make([]prompb.Label, 0, ls.Len()), Samples: []prompb.Sample{{Timestamp: t, Value: v}}}
	ls.Range(func(l labels.Label) { out.Labels = append(out.Labels, prompb.Label{Name: l.Name, Value: l.Value}) })
	return out
}
