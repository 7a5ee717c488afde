package root

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

// BenchmarkRangeQuery measures range queries served from the embedded
// TSDB by a running root over loopback: an hour of 10 nodes × 100 series
// at a 5 s window (720,000 samples), read whole over REST (OpenMetrics
// text, streamed) and over gRPC (Query, typed series; Export, the REST
// document). It reports samples/s served and bytes per sample.
func BenchmarkRangeQuery(b *testing.B) {
	const nodes, perNode, points = 10, 100, 720
	end := time.Now().Truncate(time.Second)
	start := end.Add(-points * 5 * time.Second)
	r, err := Open(Options{
		ID: "root", DataDir: b.TempDir(), Retention: 24 * time.Hour, Window: time.Second,
		MaxMessageBytes: 4 << 20, ForgetAfter: time.Minute,
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	app := r.DB.Appender(context.Background())
	for n := range nodes {
		for s := range perNode {
			ls := labels.FromStrings("__name__", fmt.Sprintf("node_metric_%d", s%20), "node", fmt.Sprintf("edge-%04d", n),
				"dc", "eu-1", "job", "node_exporter", "level", "machine", "device", fmt.Sprintf("dev%d", s/20))
			for p := range points {
				if _, err := app.Append(0, ls, start.Add(time.Duration(p)*5*time.Second).UnixMilli(), float64(p*s)+0.25); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	if err := app.Commit(); err != nil {
		b.Fatal(err)
	}
	g, _ := net.Listen("tcp", "127.0.0.1:0")
	h, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.Serve(ctx, g, h); close(done) }()
	defer func() { cancel(); <-done }()
	conn, err := grpc.NewClient(g.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	client := canopyv1.NewReaderServiceClient(conn)
	tr := &canopyv1.TimeRange{Start: fmt.Sprint(start.Unix()), End: fmt.Sprint(end.Unix())}
	const total = nodes * perNode * points

	run := func(b *testing.B, query func() (samples, bytes int)) {
		var bytes int
		for b.Loop() {
			n, nb := query()
			if n != total {
				b.Fatalf("%d samples served, want %d", n, total)
			}
			bytes += nb
		}
		b.ReportMetric(float64(total)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
		b.ReportMetric(float64(bytes)/float64(total*b.N), "B/sample")
	}
	b.Run("REST", func(b *testing.B) {
		url := fmt.Sprintf("http://%s/api/metrics-api/%s/%s", h.Addr(), tr.Start, tr.End)
		run(b, func() (int, int) {
			resp, err := http.Get(url)
			if err != nil {
				b.Fatal(err)
			}
			defer resp.Body.Close()
			n, nb := countOpenMetricsSamples(b, resp.Body)
			return n, nb
		})
	})
	b.Run("gRPC-Query", func(b *testing.B) {
		run(b, func() (int, int) {
			stream, err := client.Query(context.Background(), &canopyv1.QueryRequest{Target: &canopyv1.Target{}, TimeRange: tr})
			if err != nil {
				b.Fatal(err)
			}
			var n, nb int
			for {
				msg, err := stream.Recv()
				if err == io.EOF {
					return n, nb
				}
				if err != nil {
					b.Fatal(err)
				}
				nb += proto.Size(msg)
				for _, s := range msg.Series {
					n += len(s.Samples)
				}
			}
		})
	})
	b.Run("gRPC-Export", func(b *testing.B) {
		run(b, func() (int, int) {
			stream, err := client.Export(context.Background(), &canopyv1.ExportRequest{Target: &canopyv1.Target{}, TimeRange: tr})
			if err != nil {
				b.Fatal(err)
			}
			pr, pw := io.Pipe()
			go func() {
				for {
					chunk, err := stream.Recv()
					if err != nil {
						if err == io.EOF {
							err = nil
						}
						pw.CloseWithError(err)
						return
					}
					if _, err := pw.Write(chunk.Data); err != nil {
						return
					}
				}
			}()
			return countOpenMetricsSamples(b, pr)
		})
	})
}

// countOpenMetricsSamples counts the sample lines of an OpenMetrics
// document as it streams in, and its bytes.
func countOpenMetricsSamples(b *testing.B, r io.Reader) (samples, bytes int) {
	buf := make([]byte, 256<<10)
	lineStart := true
	for {
		n, err := r.Read(buf)
		for _, c := range buf[:n] {
			if lineStart && c != '#' {
				samples++
			}
			lineStart = c == '\n'
		}
		bytes += n
		if err == io.EOF {
			return samples, bytes
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}
