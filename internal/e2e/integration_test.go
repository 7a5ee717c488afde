//go:build integration

package e2e

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/canopytree/canopy/internal/node"
	"github.com/canopytree/canopy/leaf"
)

// requireService returns the address of a real service started by `make
// integration`. Under CI a missing service fails the suite, never skips it.
func requireService(t *testing.T, env string) string {
	t.Helper()
	v := os.Getenv(env)
	if v == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not set: the integration services did not start", env)
		}
		t.Skipf("%s not set; run `make integration`", env)
	}
	return v
}

// TestRealNodeExporter: a leaf scrapes a real prometheus-node-exporter
// (Debian package) and its series reach the root's TSDB through a
// supernode.
func TestRealNodeExporter(t *testing.T) {
	url := requireService(t, "CANOPY_IT_NODE_EXPORTER_URL")
	r := startRoot(t)
	sn := startSupernode(t, "sn1", r.grpcAddr)

	cfg := node.Default()
	cfg.Node.ID, cfg.Node.DC, cfg.Node.Roots, cfg.Node.Static = "edge1", "eu-1", []string{sn.treeAddr}, true
	cfg.Scrape.Interval, cfg.Scrape.Timeout, cfg.Scrape.Machine = time.Second, time.Second, false
	cfg.Scrape.Targets = []leaf.Target{{Name: "node_exporter", URL: url}}
	cfg.Batch.Window = window
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	n, err := node.New(cfg, 0, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx, listen(t), nil) }()
	defer func() { cancel(); <-done }()

	count := func(ms ...*labels.Matcher) int {
		q, err := r.DB.Querier(0, time.Now().Add(time.Minute).UnixMilli())
		if err != nil {
			t.Fatal(err)
		}
		defer q.Close()
		set := q.Select(context.Background(), false, nil, ms...)
		c := 0
		for set.Next() {
			c++
		}
		return c
	}
	job := labels.MustNewMatcher(labels.MatchEqual, "job", "node_exporter")
	node := labels.MustNewMatcher(labels.MatchEqual, "node", "edge1")
	eventually(t, 30*time.Second, "node_exporter series in the root's TSDB", func() bool {
		return count(job, node, labels.MustNewMatcher(labels.MatchEqual, "__name__", "node_exporter_build_info")) == 1 &&
			count(job, node, labels.MustNewMatcher(labels.MatchEqual, "__name__", "up")) == 1
	})
	all := count(job, node)
	cpu := count(job, node, labels.MustNewMatcher(labels.MatchEqual, "__name__", "node_cpu_seconds_total"))
	t.Logf("root holds %d node_exporter series of edge1 (%d node_cpu_seconds_total)", all, cpu)
	if all < 100 || cpu == 0 {
		t.Fatalf("expected a real node_exporter's series (≥100, with CPU), got %d (cpu %d)", all, cpu)
	}
}
