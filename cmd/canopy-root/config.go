package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/canopytree/canopy/batch"
	"github.com/canopytree/canopy/internal/config"
	"github.com/canopytree/canopy/internal/tlsconfig"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
	"github.com/canopytree/canopy/reader"
	"github.com/canopytree/canopy/root"
	"github.com/canopytree/canopy/root/remote"
)

// Config is the canopy-root configuration file; examples/root.yaml shows
// every key with its default.
type Config struct {
	Root    RootSection   `mapstructure:"root"`
	Storage Storage       `mapstructure:"storage"`
	Ingest  Ingest        `mapstructure:"ingest"`
	Limits  config.Limits `mapstructure:"limits"`
	Reader  Reader        `mapstructure:"reader"`
	// Filter and Aggregation are pushed down the tree to every node.
	Filter      Filter      `mapstructure:"filter"`
	Aggregation Aggregation `mapstructure:"aggregation"`
	RemoteWrite RemoteWrite `mapstructure:"remote_write"`
	Log         config.Log  `mapstructure:"log"`
}

// RemoteWrite configures persistence to Prometheus remote-write sinks.
type RemoteWrite struct {
	// ExternalLabels are added to every series sent (a series' own label
	// wins), e.g. canopy_root: a, so two roots can feed one
	// deduplicating sink.
	ExternalLabels map[string]string `mapstructure:"external_labels"`
	// The durable queue: segments in storage.data_dir/remote-write, kept
	// for endpoints that are behind up to max_bytes and max_age.
	MaxBytes     int64         `mapstructure:"max_bytes"`
	MaxAge       time.Duration `mapstructure:"max_age"`
	SegmentBytes int64         `mapstructure:"segment_bytes"`
	Endpoints    []Endpoint    `mapstructure:"endpoints"`
}

// Endpoint is one remote-write sink. Zero queue values take Prometheus's
// defaults.
type Endpoint struct {
	Name        string            `mapstructure:"name"`
	URL         string            `mapstructure:"url"`
	Timeout     time.Duration     `mapstructure:"timeout"`
	Username    string            `mapstructure:"username"`
	Password    string            `mapstructure:"password"`
	BearerToken string            `mapstructure:"bearer_token"`
	Headers     map[string]string `mapstructure:"headers"`
	// TLS reads ca_file, cert_file and key_file (a client certificate),
	// server_name and insecure_skip_verify.
	TLS tlsconfig.Config `mapstructure:"tls"`
	// Keep and Drop are write relabelling: a series is sent when it
	// matches a keep selector (or there is none) and no drop selector.
	Keep  []config.Selector `mapstructure:"keep"`
	Drop  []config.Selector `mapstructure:"drop"`
	Queue struct {
		MinShards         int           `mapstructure:"min_shards"`
		MaxShards         int           `mapstructure:"max_shards"`
		MaxSamplesPerSend int           `mapstructure:"max_samples_per_send"`
		BatchSendDeadline time.Duration `mapstructure:"batch_send_deadline"`
		MinBackoff        time.Duration `mapstructure:"min_backoff"`
		MaxBackoff        time.Duration `mapstructure:"max_backoff"`
	} `mapstructure:"queue"`
}

// Filter is the tree-wide filtering configuration: dead-band rules every
// node applies ahead of its own, and the keyframe period (0: each node
// keeps its own).
type Filter struct {
	KeyframeWindows int                 `mapstructure:"keyframe_windows"`
	Rules           []config.FilterRule `mapstructure:"rules"`
}

// Aggregation lists the aggregation rules supernodes compute and the root
// finalises; the default is the c12s DC-level machine metrics.
type Aggregation struct {
	Rules []config.AggregationRule `mapstructure:"rules"`
}

// RootSection is the root's identity and listeners.
type RootSection struct {
	// ID names the root in the topology.
	ID string `mapstructure:"id"`
	// GRPCListen serves TreeService (children) and ReaderService.
	GRPCListen string `mapstructure:"grpc_listen"`
	// HTTPListen serves the REST gateway, /metrics and /healthz.
	HTTPListen string `mapstructure:"http_listen"`
	// Advertise is the gRPC address nodes dial (default: grpc_listen).
	Advertise string `mapstructure:"advertise"`
	// ChildLimit is how many direct children the root adopts (0 = no limit).
	ChildLimit int `mapstructure:"child_limit"`
	// Window is the children's heartbeat period, for failure detection.
	Window time.Duration `mapstructure:"window"`
	// ForgetAfter drops silent children and stale dedup state.
	ForgetAfter time.Duration `mapstructure:"forget_after"`
	// TLS secures both listeners when cert_file and key_file are set;
	// client_ca_file also requires client certificates. Nodes then dial
	// the root with their own tls section.
	TLS tlsconfig.Config `mapstructure:"tls"`
}

// Storage configures the embedded TSDB.
type Storage struct {
	// DataDir holds the TSDB.
	DataDir string `mapstructure:"data_dir"`
	// Retention of stored samples.
	Retention time.Duration `mapstructure:"retention"`
	// OutOfOrderWindow accepts late (retransmitted) samples this far behind
	// the newest.
	OutOfOrderWindow time.Duration `mapstructure:"out_of_order_window"`
}

// Ingest bounds accepted sample timestamps.
type Ingest struct {
	MaxAge    time.Duration `mapstructure:"max_age"`
	MaxFuture time.Duration `mapstructure:"max_future"`
}

// Reader configures queries.
type Reader struct {
	MaxSeries      int           `mapstructure:"max_series"`
	MaxSamples     int           `mapstructure:"max_samples"`
	LatestLookback time.Duration `mapstructure:"latest_lookback"`
	LatestMetrics  []string      `mapstructure:"latest_metrics"`
	// BearerToken (or the first line of BearerTokenFile) is required of
	// every reader call, gRPC and REST; /healthz, /metrics and
	// /openapi.json stay open. Empty: the reader is open.
	BearerToken     string `mapstructure:"bearer_token"`
	BearerTokenFile string `mapstructure:"bearer_token_file"`
	// StreamBuffer and StreamBufferSamples bound what a stream subscriber
	// that reads too slowly may fall behind before its updates are dropped
	// (and reported to it): updates, and samples in them.
	StreamBuffer        int `mapstructure:"stream_buffer"`
	StreamBufferSamples int `mapstructure:"stream_buffer_samples"`
}

// Default is what the root runs with when nothing is set.
func Default() Config {
	return Config{
		Root: RootSection{
			ID:          "root",
			GRPCListen:  "127.0.0.1:7070",
			HTTPListen:  "127.0.0.1:8080",
			Window:      5 * time.Second,
			ForgetAfter: 10 * time.Minute,
		},
		Storage: Storage{
			DataDir:          "data/root",
			Retention:        15 * 24 * time.Hour,
			OutOfOrderWindow: 2 * time.Hour, // a leaf catching up after an outage lands behind
		},
		Ingest: Ingest{MaxAge: 2 * time.Hour, MaxFuture: 10 * time.Minute},
		Limits: config.DefaultLimits(),
		Reader: Reader{
			MaxSeries:           200_000,
			MaxSamples:          50_000_000,
			LatestLookback:      5 * time.Minute,
			LatestMetrics:       reader.DefaultLatestMetrics,
			StreamBuffer:        1024,
			StreamBufferSamples: 100_000,
		},
		Aggregation: Aggregation{Rules: config.DefaultAggregationRules()},
		RemoteWrite: RemoteWrite{MaxBytes: 4 << 30, MaxAge: 6 * time.Hour, SegmentBytes: 64 << 20},
		Log:         config.DefaultLog(),
	}
}

// Control converts the filter and aggregation sections into what the root
// pushes down the tree; errors name the key.
func (c *Config) Control() (*canopyv1.Control, error) {
	if c.Filter.KeyframeWindows < 0 {
		return nil, fmt.Errorf("filter.keyframe_windows: must not be negative")
	}
	out := &canopyv1.Control{KeyframeWindows: uint32(c.Filter.KeyframeWindows)}
	for i, r := range c.Filter.Rules {
		p, err := r.Proto(fmt.Sprintf("filter.rules[%d]", i))
		if err != nil {
			return nil, err
		}
		out.FilterRules = append(out.FilterRules, p)
	}
	for i, r := range c.Aggregation.Rules {
		p, err := r.Proto(fmt.Sprintf("aggregation.rules[%d]", i))
		if err != nil {
			return nil, err
		}
		out.AggregationRules = append(out.AggregationRules, p)
	}
	return out, nil
}

// Validate names the first bad key.
func (c *Config) Validate() error {
	switch {
	case c.Root.ID == "":
		return fmt.Errorf("root.id: must not be empty")
	case c.Root.ChildLimit < 0:
		return fmt.Errorf("root.child_limit: must not be negative")
	case c.Root.Window <= 0:
		return fmt.Errorf("root.window: must be positive")
	case c.Root.ForgetAfter < 3*c.Root.Window:
		return fmt.Errorf("root.forget_after: must be at least three windows")
	case c.Storage.DataDir == "":
		return fmt.Errorf("storage.data_dir: must not be empty")
	case c.Storage.Retention <= 0:
		return fmt.Errorf("storage.retention: must be positive")
	case c.Storage.OutOfOrderWindow < 0:
		return fmt.Errorf("storage.out_of_order_window: must not be negative")
	case c.Ingest.MaxAge <= 0 || c.Ingest.MaxFuture <= 0:
		return fmt.Errorf("ingest.max_age, ingest.max_future: must be positive")
	case c.Reader.MaxSeries <= 0 || c.Reader.MaxSamples <= 0:
		return fmt.Errorf("reader.max_series, reader.max_samples: must be positive")
	case c.Reader.LatestLookback <= 0:
		return fmt.Errorf("reader.latest_lookback: must be positive")
	case c.Reader.StreamBuffer <= 0 || c.Reader.StreamBufferSamples <= 0:
		return fmt.Errorf("reader.stream_buffer, reader.stream_buffer_samples: must be positive")
	}
	for _, addr := range []struct{ key, v string }{{"root.grpc_listen", c.Root.GRPCListen}, {"root.http_listen", c.Root.HTTPListen}} {
		if _, _, err := net.SplitHostPort(addr.v); err != nil {
			return fmt.Errorf("%s: %q is not host:port", addr.key, addr.v)
		}
	}
	for i, m := range c.Reader.LatestMetrics {
		if _, err := regexp.Compile(m); err != nil {
			return fmt.Errorf("reader.latest_metrics[%d]: %w", i, err)
		}
	}
	if err := c.Limits.Validate("limits"); err != nil {
		return err
	}
	if _, err := c.Control(); err != nil {
		return err
	}
	if _, err := c.remote(); err != nil {
		return err
	}
	if _, err := c.serverTLS(); err != nil {
		return err
	}
	if _, err := c.bearerToken(); err != nil {
		return err
	}
	_, err := c.Log.Logger()
	return err
}

// remote converts the remote_write section; errors name the key.
func (c *Config) remote() ([]remote.Endpoint, error) {
	rw := c.RemoteWrite
	if rw.MaxBytes < 0 || rw.MaxAge < 0 || rw.SegmentBytes <= 0 {
		return nil, fmt.Errorf("remote_write.max_bytes, max_age, segment_bytes: must not be negative (segment_bytes positive)")
	}
	external := labels.FromMap(rw.ExternalLabels)
	var out []remote.Endpoint
	for i, e := range rw.Endpoints {
		key := fmt.Sprintf("remote_write.endpoints[%d]", i)
		u, err := url.Parse(e.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("%s.url: %q is not an http(s) URL", key, e.URL)
		}
		if e.Name == "" || strings.ContainsAny(e.Name, `/\ `) {
			return nil, fmt.Errorf("%s.name: %q must be a non-empty name without slashes or spaces", key, e.Name)
		}
		q := remote.DefaultQueueConfig()
		set := func(dst *int, v int) {
			if v > 0 {
				*dst = v
			}
		}
		set(&q.MinShards, e.Queue.MinShards)
		set(&q.MaxShards, e.Queue.MaxShards)
		set(&q.MaxSamplesPerSend, e.Queue.MaxSamplesPerSend)
		if e.Queue.BatchSendDeadline > 0 {
			q.BatchSendDeadline = e.Queue.BatchSendDeadline
		}
		if e.Queue.MinBackoff > 0 {
			q.Retry.MinBackoff = e.Queue.MinBackoff
		}
		if e.Queue.MaxBackoff > 0 {
			q.Retry.MaxBackoff = e.Queue.MaxBackoff
		}
		if q.MaxShards < q.MinShards || q.Retry.MaxBackoff < q.Retry.MinBackoff {
			return nil, fmt.Errorf("%s.queue: max below min", key)
		}
		var rl remote.Relabel
		for j, sel := range e.Keep {
			ms, err := selectorMatchers(sel, fmt.Sprintf("%s.keep[%d]", key, j))
			if err != nil {
				return nil, err
			}
			rl.Keep = append(rl.Keep, ms)
		}
		for j, sel := range e.Drop {
			ms, err := selectorMatchers(sel, fmt.Sprintf("%s.drop[%d]", key, j))
			if err != nil {
				return nil, err
			}
			rl.Drop = append(rl.Drop, ms)
		}
		timeout := e.Timeout
		if timeout <= 0 {
			timeout = 30 * time.Second
		}
		ep := remote.Endpoint{
			Name: e.Name, Queue: q, Relabel: rl, ExternalLabels: external,
			Client: remote.ClientConfig{
				URL: e.URL, Timeout: timeout, Headers: e.Headers,
				Auth: remote.Auth{Username: e.Username, Password: e.Password, BearerToken: e.BearerToken},
				TLS:  e.TLS,
			},
		}
		if _, err := remote.NewClient(ep.Client); err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		out = append(out, ep)
	}
	return out, nil
}

func selectorMatchers(s config.Selector, key string) ([]*labels.Matcher, error) {
	ps, err := s.Proto(key)
	if err != nil {
		return nil, err
	}
	ms, err := batch.MatchersFromProto(ps)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return ms, nil
}

// serverTLS builds the listeners' TLS configuration (nil: plaintext).
func (c *Config) serverTLS() (*tls.Config, error) {
	t := c.Root.TLS
	if !t.ServerEnabled() {
		if t.KeyFile != "" || t.ClientCAFile != "" {
			return nil, fmt.Errorf("root.tls.cert_file: must be set with key_file and client_ca_file")
		}
		return nil, nil
	}
	tc, err := t.Server()
	if err != nil {
		return nil, fmt.Errorf("root.tls.%w", err)
	}
	return tc, nil
}

// bearerToken is the reader's token from the file or the key.
func (c *Config) bearerToken() (string, error) {
	r := c.Reader
	if r.BearerTokenFile == "" {
		return r.BearerToken, nil
	}
	if r.BearerToken != "" {
		return "", fmt.Errorf("reader.bearer_token, reader.bearer_token_file: set one, not both")
	}
	b, err := os.ReadFile(r.BearerTokenFile)
	if err != nil {
		return "", fmt.Errorf("reader.bearer_token_file: %w", err)
	}
	token, _, _ := strings.Cut(string(b), "\n")
	if token = strings.TrimSpace(token); token == "" {
		return "", fmt.Errorf("reader.bearer_token_file: %s holds no token", r.BearerTokenFile)
	}
	return token, nil
}

// Options converts the validated file configuration for root.Open.
func (c *Config) Options() root.Options {
	control, _ := c.Control() // checked by Validate
	endpoints, _ := c.remote()
	serverTLS, _ := c.serverTLS()
	token, _ := c.bearerToken()
	return root.Options{
		Control:          control,
		Remote:           endpoints,
		RemoteLog:        remote.LogConfig{MaxBytes: c.RemoteWrite.MaxBytes, MaxAge: c.RemoteWrite.MaxAge, SegmentBytes: c.RemoteWrite.SegmentBytes},
		ID:               c.Root.ID,
		DataDir:          c.Storage.DataDir,
		Retention:        c.Storage.Retention,
		OutOfOrderWindow: c.Storage.OutOfOrderWindow,
		ChildLimit:       c.Root.ChildLimit,
		Window:           c.Root.Window,
		MaxMessageBytes:  c.Limits.MaxMessageBytes,
		Limits:           c.Limits.Decode(),
		Ingest:           root.IngestConfig{MaxAge: c.Ingest.MaxAge, MaxFuture: c.Ingest.MaxFuture},
		Reader: reader.Config{
			MaxSeries: c.Reader.MaxSeries, MaxSamples: c.Reader.MaxSamples,
			LatestLookback: c.Reader.LatestLookback, LatestMetrics: c.Reader.LatestMetrics,
			BearerToken: token,
		},
		TLS:                 serverTLS,
		StreamBuffer:        c.Reader.StreamBuffer,
		StreamBufferSamples: c.Reader.StreamBufferSamples,
		ForgetAfter:         c.Root.ForgetAfter,
	}
}
