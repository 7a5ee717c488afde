package reader

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/canopytree/canopy/batch"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// JSONContentType is the answer's type when a client asks for JSON.
const JSONContentType = "application/json"

// seriesWriter renders series in one of the answer formats.
type seriesWriter interface {
	Series(labels.Labels, []batch.Sample) error
	Close() error
}

// negotiate picks the format: the request's format field first, then the
// HTTP Accept header the gateway forwarded; OpenMetrics by default.
func negotiate(ctx context.Context, format string) (string, error) {
	switch strings.ToLower(format) {
	case "openmetrics":
		return OpenMetricsContentType, nil
	case "json":
		return JSONContentType, nil
	case "":
	default:
		return "", status.Errorf(codes.InvalidArgument, "format %q: want openmetrics or json", format)
	}
	md, _ := metadata.FromIncomingContext(ctx)
	for _, accept := range md.Get("grpcgateway-accept") {
		if strings.Contains(accept, "application/json") && !strings.Contains(accept, "openmetrics") {
			return JSONContentType, nil
		}
	}
	return OpenMetricsContentType, nil
}

func newSeriesWriter(contentType string, w io.Writer) seriesWriter {
	if contentType == JSONContentType {
		return newJSONWriter(w)
	}
	return NewOpenMetricsWriter(w)
}

// bodySender turns writes into HttpBody messages on a stream.
type bodySender struct {
	contentType string
	send        func(*httpbody.HttpBody) error
}

func (b *bodySender) Write(p []byte) (int, error) {
	err := b.send(&httpbody.HttpBody{ContentType: b.contentType, Data: append([]byte(nil), p...)})
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// Export streams a range query as OpenMetrics text or JSON.
func (s *Service) Export(req *canopyv1.ExportRequest, stream canopyv1.ReaderService_ExportServer) error {
	ct, err := negotiate(stream.Context(), req.Format)
	if err != nil {
		return err
	}
	// The writer buffers 32 KiB before the first message goes out, so
	// errors found early (unknown id, a limit hit early) still become a
	// proper HTTP status rather than a truncated body.
	w := newSeriesWriter(ct, &bodySender{contentType: ct, send: stream.Send})
	if _, err := s.rangeScan(stream.Context(), req.Target, req.TimeRange, w.Series); err != nil {
		return err
	}
	return w.Close()
}

// ExportLatest renders Latest.
func (s *Service) ExportLatest(ctx context.Context, req *canopyv1.ExportLatestRequest) (*httpbody.HttpBody, error) {
	ct, err := negotiate(ctx, req.Format)
	if err != nil {
		return nil, err
	}
	resp, err := s.Latest(ctx, &canopyv1.LatestRequest{Target: req.Target})
	if err != nil {
		return nil, err
	}
	var buf strings.Builder
	w := newSeriesWriter(ct, &buf)
	for _, ser := range resp.Series {
		b := labels.NewScratchBuilder(len(ser.Labels))
		for _, l := range ser.Labels {
			b.Add(l.Name, l.Value)
		}
		samples := make([]batch.Sample, len(ser.Samples))
		for i, smp := range ser.Samples {
			samples[i] = batch.Sample{T: smp.TimestampMs, V: smp.Value}
		}
		if err := w.Series(b.Labels(), samples); err != nil {
			return nil, err
		}
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return &httpbody.HttpBody{ContentType: ct, Data: []byte(buf.String())}, nil
}

// jsonWriter streams {"series":[{"labels":{…},"samples":[[sec,"value"],…]},…]}.
// Values are strings, as in the Prometheus HTTP API, so NaN and ±Inf survive.
type jsonWriter struct {
	w     *bufio.Writer
	first bool
}

func newJSONWriter(w io.Writer) *jsonWriter {
	return &jsonWriter{w: bufio.NewWriterSize(w, 32<<10), first: true}
}

func (j *jsonWriter) Series(ls labels.Labels, samples []batch.Sample) error {
	if j.first {
		j.w.WriteString(`{"series":[`)
		j.first = false
	} else {
		j.w.WriteByte(',')
	}
	lb, err := json.Marshal(ls.Map())
	if err != nil {
		return err
	}
	j.w.WriteString(`{"labels":`)
	j.w.Write(lb)
	j.w.WriteString(`,"samples":[`)
	for i, smp := range samples {
		b := j.w.AvailableBuffer()
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '[')
		b = appendTimestamp(b, smp.T)
		b = append(b, `,"`...)
		b = appendValue(b, smp.V)
		b = append(b, `"]`...)
		j.w.Write(b)
	}
	j.w.WriteString("]}")
	return nil
}

func (j *jsonWriter) Close() error {
	if j.first {
		j.w.WriteString(`{"series":[`)
	}
	j.w.WriteString("]}\n")
	return j.w.Flush()
}
