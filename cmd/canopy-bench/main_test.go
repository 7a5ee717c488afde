package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
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
