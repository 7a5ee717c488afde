package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/canopytree/canopy/root/remote"
)

// RemoteWriteConfig is one remote-write throughput run: Nodes
// node_exporter-sized nodes (Series series each) over Windows 5 s windows
// are put in a fresh durable log, then one endpoint queue drains it into
// URL with the given queue settings.
type RemoteWriteConfig struct {
	URL                    string
	Nodes, Windows, Series int
	Queue                  remote.QueueConfig
	Timeout                time.Duration
}

// RemoteWriteResult is what the run measured.
type RemoteWriteResult struct {
	Samples   int
	Bytes     int64 // on the wire (compressed requests)
	Seconds   float64
	MaxShards int
}

// SamplesPerSecond is the sustained rate.
func (r RemoteWriteResult) SamplesPerSecond() float64 { return float64(r.Samples) / r.Seconds }

// BytesPerSample is the wire cost.
func (r RemoteWriteResult) BytesPerSample() float64 { return float64(r.Bytes) / float64(r.Samples) }

// RemoteWrite runs cfg: series are labelled with a unique run label so
// repeated runs never collide in the sink; timestamps are a minute ago
// onwards, inside what sinks accept.
func RemoteWrite(ctx context.Context, cfg RemoteWriteConfig) (RemoteWriteResult, error) {
	dir, err := os.MkdirTemp("", "canopy-bench-rw")
	if err != nil {
		return RemoteWriteResult{}, err
	}
	defer os.RemoveAll(dir)
	l, err := remote.OpenLog(dir, remote.LogConfig{})
	if err != nil {
		return RemoteWriteResult{}, err
	}
	defer l.Close()
	run := fmt.Sprint(time.Now().UnixNano())
	start := time.Now().Add(-time.Minute).UnixMilli()
	for w := range cfg.Windows {
		for n := range cfg.Nodes {
			samples := make([]remote.Sample, 0, cfg.Series)
			for i := range cfg.Series {
				ls := labels.FromStrings("__name__", fmt.Sprintf("node_metric_%d", i%150), "node", fmt.Sprintf("n%05d", n), "dc", "eu-1",
					"job", "node_exporter", "level", "machine", "i", fmt.Sprint(i), "bench_run", run)
				samples = append(samples, remote.Sample{Labels: ls, T: start + int64(w)*5000, V: float64(w*i) * 1.5})
			}
			if err := l.Append(samples); err != nil {
				return RemoteWriteResult{}, err
			}
		}
	}
	reg := prometheus.NewRegistry()
	c, err := l.Cursor("bench")
	if err != nil {
		return RemoteWriteResult{}, err
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	q, err := remote.NewQueue(remote.Endpoint{Name: "bench", Client: remote.ClientConfig{URL: cfg.URL, Timeout: timeout}, Queue: cfg.Queue},
		c, remote.NewMetrics(reg), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return RemoteWriteResult{}, err
	}
	want := float64(cfg.Nodes * cfg.Windows * cfg.Series)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	began := time.Now()
	go func() { done <- q.Run(runCtx) }()
	res := RemoteWriteResult{}
	for {
		sent, bytes, dropped, shards := gather(reg)
		res.MaxShards = max(res.MaxShards, shards)
		if sent+dropped >= want || ctx.Err() != nil {
			res.Seconds = time.Since(began).Seconds()
			res.Samples, res.Bytes = int(sent), int64(bytes)
			cancel()
			err := <-done
			if dropped > 0 {
				return res, fmt.Errorf("%g samples dropped by the sink", dropped)
			}
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			return res, err
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func gather(reg *prometheus.Registry) (sent, bytes, dropped float64, shards int) {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		total := 0.0
		for _, m := range mf.Metric {
			total += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
		switch mf.GetName() {
		case "canopy_remote_sent_samples_total":
			sent = total
		case "canopy_remote_sent_bytes_total":
			bytes = total
		case "canopy_remote_dropped_samples_total":
			dropped = total
		case "canopy_remote_shards":
			shards = int(total)
		}
	}
	return sent, bytes, dropped, shards
}
