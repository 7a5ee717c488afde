package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/spf13/pflag"
	"google.golang.org/protobuf/proto"

	"github.com/canopytree/canopy/internal/config"
)

func TestExampleLoads(t *testing.T) {
	cfg := Default()
	if err := config.Load(&cfg, "../../examples/root.yaml", pflag.NewFlagSet("x", pflag.ContinueOnError), nil); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Options().MaxMessageBytes != cfg.Limits.MaxMessageBytes {
		t.Fatal("options lost the message limit")
	}
	// The example spells out the default aggregation rules.
	want, _ := (&Config{Aggregation: Aggregation{Rules: config.DefaultAggregationRules()}}).Control()
	got := cfg.Options().Control
	if !proto.Equal(got, want) || len(got.AggregationRules) != 4 {
		t.Fatalf("example aggregation rules differ from the defaults:\n%v\n%v", got, want)
	}
}

func TestValidateNamesTheKey(t *testing.T) {
	for key, mutate := range map[string]func(*Config){
		"root.grpc_listen":         func(c *Config) { c.Root.GRPCListen = "7070" },
		"storage.data_dir":         func(c *Config) { c.Storage.DataDir = "" },
		"root.forget_after":        func(c *Config) { c.Root.ForgetAfter = 1 },
		"reader.latest_metrics[1]": func(c *Config) { c.Reader.LatestMetrics = []string{"up", "node_(bad"} },
		"ingest.max_age":           func(c *Config) { c.Ingest.MaxAge = 0 },
		"aggregation.rules[0].functions[1]": func(c *Config) {
			c.Aggregation.Rules = []config.AggregationRule{{Functions: []string{"sum", "median"}}}
		},
		"aggregation.rules[0].group_by[0]": func(c *Config) {
			c.Aggregation.Rules = []config.AggregationRule{{Functions: []string{"sum"}, GroupBy: []string{"__name__"}}}
		},
		"aggregation.rules[0].exclude.device": func(c *Config) {
			c.Aggregation.Rules = []config.AggregationRule{{Functions: []string{"sum"}, Selector: config.Selector{Exclude: map[string]string{"device": "("}}}}
		},
		"filter.rules[0]":         func(c *Config) { c.Filter.Rules = []config.FilterRule{{Relative: -1}} },
		"filter.keyframe_windows": func(c *Config) { c.Filter.KeyframeWindows = -1 },
		"remote_write.endpoints[0].url": func(c *Config) {
			c.RemoteWrite.Endpoints = []Endpoint{{Name: "p", URL: "ftp://x"}}
		},
		"remote_write.endpoints[0].name": func(c *Config) {
			c.RemoteWrite.Endpoints = []Endpoint{{Name: "a/b", URL: "http://127.0.0.1:9090/api/v1/write"}}
		},
		"remote_write.endpoints[0].keep[0].metric": func(c *Config) {
			c.RemoteWrite.Endpoints = []Endpoint{{Name: "p", URL: "http://h/w", Keep: []config.Selector{{Metric: "("}}}}
		},
		"root.tls.cert_file":                            func(c *Config) { c.Root.TLS.KeyFile = "key.pem" },
		"root.tls.cert_file/key_file":                   func(c *Config) { c.Root.TLS.CertFile, c.Root.TLS.KeyFile = "/nonexistent/c.pem", "/nonexistent/k.pem" },
		"reader.bearer_token_file":                      func(c *Config) { c.Reader.BearerTokenFile = "/nonexistent/token" },
		"reader.bearer_token, reader.bearer_token_file": func(c *Config) { c.Reader.BearerToken, c.Reader.BearerTokenFile = "a", "b" },
		"remote_write.endpoints[0]": func(c *Config) {
			c.RemoteWrite.Endpoints = []Endpoint{{Name: "p", URL: "http://h/w", Username: "u", BearerToken: "t"}}
		},
	} {
		cfg := Default()
		mutate(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: error %v does not name the key", key, err)
		}
	}
}

func TestRemoteWriteSection(t *testing.T) {
	file := filepath.Join(t.TempDir(), "root.yaml")
	os.WriteFile(file, []byte(`remote_write:
  external_labels: {canopy_root: a}
  max_bytes: 1000000
  endpoints:
    - name: vm
      url: http://127.0.0.1:8428/api/v1/write
      bearer_token: tok
      headers: {X-Scope-OrgID: t1}
      drop: [{metric: "node_network_.*", labels: {device: lo}}]
      queue: {max_shards: 4, max_samples_per_send: 500}
`), 0o644)
	cfg := Default()
	if err := config.Load(&cfg, file, pflag.NewFlagSet("x", pflag.ContinueOnError), nil); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	o := cfg.Options()
	if len(o.Remote) != 1 || o.RemoteLog.MaxBytes != 1000000 || o.RemoteLog.MaxAge != 6*time.Hour {
		t.Fatalf("options %+v", o)
	}
	ep := o.Remote[0]
	if ep.Name != "vm" || ep.Client.Auth.BearerToken != "tok" || ep.Queue.MaxShards != 4 || ep.Queue.MaxSamplesPerSend != 500 ||
		ep.Queue.MinShards != 1 || ep.ExternalLabels.Get("canopy_root") != "a" || len(ep.Relabel.Drop) != 1 {
		t.Fatalf("endpoint %+v", ep)
	}
	if ep.Relabel.Sends(labels.FromStrings("__name__", "node_network_receive_bytes_total", "device", "lo")) {
		t.Fatal("the drop selector lets loopback through")
	}
	// A misspelt key in an endpoint is an error naming it.
	os.WriteFile(file, []byte("remote_write:\n  endpoints:\n    - name: vm\n      url: http://h/w\n      bearer_tokn: x\n"), 0o644)
	cfg = Default()
	if err := config.Load(&cfg, file, pflag.NewFlagSet("x", pflag.ContinueOnError), nil); err == nil || !strings.Contains(err.Error(), "bearer_tokn") {
		t.Fatalf("misspelt key: %v", err)
	}
}

// The reader's token comes from its file, first line, trimmed; an empty
// file is an error.
func TestBearerTokenFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte("  abc123 \nignored\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Default()
	cfg.Reader.BearerTokenFile = file
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := cfg.Options().Reader.BearerToken; got != "abc123" {
		t.Fatalf("token %q", got)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Reader.BearerTokenFile = empty
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "holds no token") {
		t.Fatalf("empty token file: %v", err)
	}
}
