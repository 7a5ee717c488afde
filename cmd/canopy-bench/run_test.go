package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

func histogram(count uint64, buckets ...[2]float64) *dto.Histogram {
	h := &dto.Histogram{SampleCount: proto.Uint64(count)}
	for _, b := range buckets {
		h.Bucket = append(h.Bucket, &dto.Bucket{UpperBound: proto.Float64(b[0]), CumulativeCount: proto.Uint64(uint64(b[1]))})
	}
	return h
}

// Quantiles come from the increase between two scrapes, interpolated in
// the bucket; the maximum is the upper bound of the highest bucket hit.
func TestDelayQuantiles(t *testing.T) {
	before := histogram(10, [2]float64{1, 10}, [2]float64{2, 10}, [2]float64{4, 10}, [2]float64{8, 10})
	after := histogram(110, [2]float64{1, 10}, [2]float64{2, 60}, [2]float64{4, 109}, [2]float64{8, 110})
	p50, p99, mx := delayQuantiles(before, after)
	if p50 != 2 || math.Abs(p99-(2+2*49.0/49)) > 1e-9 || mx != 8 {
		t.Fatalf("p50 %v p99 %v max %v", p50, p99, mx)
	}
	if p50, p99, mx := delayQuantiles(nil, nil); p50 != 0 || p99 != 0 || mx != 0 {
		t.Fatal("no histogram")
	}
}

// The test binary stands in for canopy-bench when run re-executes itself
// as a role.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "role" {
		if err := role(os.Args[2:], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type runJSON struct {
	RequestsPerSecond float64 `json:"requests_per_second"`
	SamplesPerSecond  float64 `json:"samples_per_second"`
	FreshnessMax      float64 `json:"freshness_max_s"`
	FilterRatio       float64 `json:"filter_ratio"`
	Roles             []Role  `json:"roles"`
	Projected         struct {
		RequestsPerSecond float64 `json:"requests_per_second"`
	} `json:"projected"`
}

// A small live run: a root, the supernodes of a three-level tree (fan-out
// 20 makes 1 + 2) and 40 leaves, each role in its own process; the root sees one heartbeat per window from its one child,
// the samples the leaves send, and a freshness within the levels'
// windows.
func TestRunSmallTree(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	var out bytes.Buffer
	err := run([]string{"run", "--leaves", "40", "--levels", "3", "--fanout", "20", "--window", "500ms", "--scrape-interval", "250ms",
		"--series", "20", "--warmup", "3s", "--duration", "4s", "--json", "--quiet"}, &out)
	if err != nil {
		t.Fatal(err)
	}
	var r runJSON
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if r.Projected.RequestsPerSecond != 2 || math.Abs(r.RequestsPerSecond/2-1) > 0.1 {
		t.Errorf("requests/s %v, projected %v", r.RequestsPerSecond, r.Projected.RequestsPerSecond)
	}
	if r.SamplesPerSecond <= 0 || r.FilterRatio <= 0 || r.FilterRatio > 1 || r.FreshnessMax <= 0 || r.FreshnessMax > 3 {
		t.Errorf("result %+v", r)
	}
	if len(r.Roles) != 3 || r.Roles[2].Name != "leaves" || r.Roles[2].Nodes != 40 || r.Roles[1].Nodes != 3 {
		t.Errorf("roles %+v", r.Roles)
	}
}

// The centralised baseline: every leaf writes to the sink once per window.
func TestRunDirect(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	var requests atomic.Int64
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		requests.Add(1)
		w.WriteHeader(204)
	}))
	defer sink.Close()
	var out bytes.Buffer
	err := run([]string{"run", "--direct", sink.URL, "--leaves", "20", "--window", "500ms", "--scrape-interval", "250ms",
		"--series", "20", "--warmup", "2s", "--duration", "3s", "--json", "--quiet"}, &out)
	if err != nil {
		t.Fatal(err)
	}
	var r runJSON
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	if r.Projected.RequestsPerSecond != 40 || math.Abs(r.RequestsPerSecond/40-1) > 0.1 || r.FilterRatio != 1 || requests.Load() == 0 {
		t.Errorf("direct: %+v (sink saw %d requests)", r, requests.Load())
	}
}
