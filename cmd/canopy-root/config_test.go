package main

import (
	"strings"
	"testing"

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
	} {
		cfg := Default()
		mutate(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: error %v does not name the key", key, err)
		}
	}
}
