package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
)

func TestRemoteWrite(t *testing.T) {
	var samples atomic.Int64
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		raw, err := snappy.Decode(nil, body)
		var req prompb.WriteRequest
		if err == nil {
			err = req.Unmarshal(raw)
		}
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		for _, ts := range req.Timeseries {
			samples.Add(int64(len(ts.Samples)))
		}
		w.WriteHeader(204)
	}))
	defer sink.Close()
	var out bytes.Buffer
	if err := run([]string{"remote-write", "--url", sink.URL, "--nodes", "3", "--windows", "2", "--series", "50", "--json"}, &out); err != nil {
		t.Fatal(err)
	}
	var rows []struct {
		Samples        int     `json:"samples"`
		BytesPerSample float64 `json:"wire_bytes_per_sample"`
	}
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if len(rows) != 1 || rows[0].Samples != 300 || samples.Load() != 300 || rows[0].BytesPerSample <= 0 {
		t.Fatalf("rows %+v, sink got %d", rows, samples.Load())
	}
	if err := run([]string{"remote-write"}, &out); err == nil || !strings.Contains(err.Error(), "usage") {
		t.Fatalf("no url: %v", err)
	}
}

// project with its defaults prints the paper's tables and writes its
// three graphs; bad parameters are refused with the flag named.
func TestProject(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	if err := run([]string{"project", "--plots", dir}, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"One Level (Baseline Centralized)    100,000  20,000  10,000  3,333",
		"Three Level (10 + 1000 supernodes)       10       2       1   0.33",
		"Two Level (1000 supernodes)         0 + 2 hops  10s  20s  60s",
		"Sink servers needed at 500 requests/s each",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	for _, name := range []string{"nodes-requests.svg", "nodes-servers.svg", "window-requests.svg"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !bytes.HasPrefix(b, []byte("<svg")) || bytes.Count(b, []byte("<polyline")) != 3 {
			t.Errorf("%s: %v, %.80s", name, err, b)
		}
	}
	out.Reset()
	if err := run([]string{"project", "--nodes", "10000", "--depths", "2", "--windows", "5s,10s", "--json"}, &out); err != nil {
		t.Fatal(err)
	}
	var cells []struct {
		Depth    string  `json:"depth"`
		Requests float64 `json:"requests_per_second"`
	}
	if err := json.Unmarshal(out.Bytes(), &cells); err != nil || len(cells) != 4 || cells[2].Depth != "Two Level (100 supernodes)" || cells[2].Requests != 20 {
		t.Fatalf("json: %v %+v", err, cells)
	}
	for _, bad := range [][]string{{"project", "--fanout", "1"}, {"project", "--filter-ratio", "2"}, {"project", "--windows", "-5s"}, {"project", "--bogus"}} {
		if err := run(bad, io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
