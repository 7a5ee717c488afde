package node

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/canopytree/canopy/internal/config"
	"github.com/canopytree/canopy/leaf"
)

// The shipped examples must load and validate: they document the keys.
func TestExamplesLoad(t *testing.T) {
	for _, f := range []string{"node.yaml", "static.yaml"} {
		cfg := Default()
		if err := config.Load(&cfg, "../../examples/"+f, pflag.NewFlagSet("x", pflag.ContinueOnError), nil); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
}

func TestDefaults(t *testing.T) {
	cfg := Default()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Scrape.Interval != 2*time.Second || cfg.Batch.Window != 5*time.Second || cfg.Batch.Delivery != "at-least-once" {
		t.Fatalf("defaults drifted from the design: %+v %+v", cfg.Scrape, cfg.Batch)
	}
}

func TestValidateNamesTheKey(t *testing.T) {
	for key, mutate := range map[string]func(*Config){
		"node.role":              func(c *Config) { c.Node.Role = "king" },
		"node.tree_listen":       func(c *Config) { c.Node.Role = "supernode" },
		"node.roots[0]":          func(c *Config) { c.Node.Roots = []string{"nocolon"} },
		"node.roots":             func(c *Config) { c.Node.Roots = nil },
		"tree.dead_windows":      func(c *Config) { c.Tree.DeadWindows = 1 },
		"tree.shed_fraction":     func(c *Config) { c.Tree.ShedFraction = 2 },
		"scrape.timeout":         func(c *Config) { c.Scrape.Timeout = time.Hour },
		"batch.delivery":         func(c *Config) { c.Batch.Delivery = "exactly-once" },
		"batch.retransmit_after": func(c *Config) { c.Batch.RetransmitAfter = time.Second },
		"scrape.targets[0].url":  func(c *Config) { c.Scrape.Targets = append(c.Scrape.Targets, badTarget()) },
		"limits.max_samples":     func(c *Config) { c.Limits.MaxSamples = -1 },
		"log.level":              func(c *Config) { c.Log.Level = "chatty" },
		"filter.rules[0].metric": func(c *Config) { c.Filter.Rules = []config.FilterRule{{Selector: config.Selector{Metric: "node_("}}} },
		"filter.rules[0].labels.device": func(c *Config) {
			c.Filter.Rules = []config.FilterRule{{Selector: config.Selector{Labels: map[string]string{"device": "eth["}}}}
		},
		"filter.keyframe_windows":    func(c *Config) { c.Filter.KeyframeWindows = -1 },
		"batch.drain_timeout":        func(c *Config) { c.Batch.DrainTimeout = -time.Second },
		"tls.cert_file":              func(c *Config) { c.Node.TreeListen, c.TLS.Enabled = "127.0.0.1:0", true },
		"tls.ca_file":                func(c *Config) { c.TLS.CAFile = "/nonexistent/ca.pem" },
		"tls.cert_file and key_file": func(c *Config) { c.TLS.KeyFile = "key.pem"; c.TLS.Enabled = true },
	} {
		cfg := Default()
		mutate(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: error %v does not name the key", key, err)
		}
	}
}

func badTarget() (t leaf.Target) {
	t.Name, t.URL = "x", "not a url"
	return t
}
