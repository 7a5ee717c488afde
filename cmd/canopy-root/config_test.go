package main

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"

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
}

func TestValidateNamesTheKey(t *testing.T) {
	for key, mutate := range map[string]func(*Config){
		"root.grpc_listen":         func(c *Config) { c.Root.GRPCListen = "7070" },
		"storage.data_dir":         func(c *Config) { c.Storage.DataDir = "" },
		"root.forget_after":        func(c *Config) { c.Root.ForgetAfter = 1 },
		"reader.latest_metrics[1]": func(c *Config) { c.Reader.LatestMetrics = []string{"up", "node_(bad"} },
		"ingest.max_age":           func(c *Config) { c.Ingest.MaxAge = 0 },
	} {
		cfg := Default()
		mutate(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: error %v does not name the key", key, err)
		}
	}
}
