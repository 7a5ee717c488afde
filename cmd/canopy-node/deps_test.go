package main

import (
	"os/exec"
	"strings"
	"testing"
)

// badDeps must never be linked into the node binary: it runs on
// constrained devices. The TSDB and the query engine belong to the root,
// the REST gateway to the reader, and Prometheus's config and discovery
// pull in the cloud SDKs.
var badDeps = []string{
	"github.com/prometheus/prometheus/tsdb",
	"github.com/prometheus/prometheus/promql",
	"github.com/prometheus/prometheus/storage",
	"github.com/prometheus/prometheus/config",
	"github.com/prometheus/prometheus/discovery",
	"github.com/grpc-ecosystem/grpc-gateway",
	"github.com/canopytree/canopy/root",
	"github.com/canopytree/canopy/reader",
	"github.com/aws/",
	"github.com/Azure/",
	"cloud.google.com/",
	"google.golang.org/api/",
	"k8s.io/",
	"github.com/hashicorp/",
}

func TestNodeBinaryStaysSmall(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	external := 0
	for _, dep := range deps {
		if first, _, _ := strings.Cut(dep, "/"); strings.Contains(first, ".") {
			external++
		}
		for _, bad := range badDeps {
			if dep == bad || strings.HasPrefix(dep, bad+"/") || (strings.HasSuffix(bad, "/") && strings.HasPrefix(dep, bad)) {
				t.Errorf("canopy-node links %s (forbidden: %s)", dep, bad)
			}
		}
	}
	// 191 non-standard-library packages when this was written; a jump
	// means something heavy came in.
	if external > 240 {
		t.Errorf("canopy-node links %d packages outside the standard library (was 191): find what grew", external)
	}
}
