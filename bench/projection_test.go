package bench

import (
	"slices"
	"testing"
	"time"
)

// The projection reproduces every cell of the Astral paper's two tables
// (100,000 nodes; one, two and three levels; windows 0, 5, 10, 30 s).
func TestProjectionReproducesThePaper(t *testing.T) {
	requests, freshness := Tables(PaperModel, 3, PaperWindows)
	want := map[string][2][]string{
		"One Level (Baseline Centralized)": {
			{"100,000", "20,000", "10,000", "3,333"},
			{"0", "5s", "10s", "30s"},
		},
		"Two Level (1000 supernodes)": {
			{"1,000", "200", "100", "33"},
			{"0 + 2 hops", "10s", "20s", "60s"},
		},
		"Three Level (10 + 1000 supernodes)": {
			{"10", "2", "1", "0.33"},
			{"0 + 3 hops", "15s", "30s", "90s"},
		},
	}
	if !slices.Equal(requests.Columns, []string{"0", "5s", "10s", "30s"}) {
		t.Errorf("columns %v", requests.Columns)
	}
	if len(requests.Rows) != 3 || len(freshness.Rows) != 3 {
		t.Fatalf("rows: %d, %d", len(requests.Rows), len(freshness.Rows))
	}
	for i := range requests.Rows {
		name := requests.Rows[i].Name
		w, ok := want[name]
		if !ok {
			t.Errorf("row %q is not one of the paper's", name)
			continue
		}
		if !slices.Equal(requests.Rows[i].Cells, w[0]) {
			t.Errorf("%s requests/s: %v, paper %v", name, requests.Rows[i].Cells, w[0])
		}
		if freshness.Rows[i].Name != name || !slices.Equal(freshness.Rows[i].Cells, w[1]) {
			t.Errorf("%s freshness: %v, paper %v", name, freshness.Rows[i].Cells, w[1])
		}
	}
	t.Logf("\n%s\n%s", requests, freshness)
}

// The paper's prose: a 2,000-node system needs four 500 requests/s
// servers unbatched, and a two-level hierarchy at 5 s lets the same four
// servers take 1,000,000 nodes (10,000 supernodes of 100).
func TestProjectionSinkServers(t *testing.T) {
	m := Model{Nodes: 2_000, UpdatesPerSecond: 1, SinkCapacity: 500}
	if p := m.Project(); p.SinkServers != 4 {
		t.Errorf("2,000 nodes unbatched: %d servers, want 4", p.SinkServers)
	}
	m = Model{Nodes: 1_000_000, Supernodes: SupernodesForFanOut(1_000_000, 2, 100), Window: 5 * time.Second, UpdatesPerSecond: 1, SinkCapacity: 500}
	if p := m.Project(); p.SinkServers != 4 || p.RequestsPerSecond != 2_000 {
		t.Errorf("1,000,000 nodes, two levels, 5 s: %+v", p)
	}
	// Samples and bytes: what the filter lets through.
	m = Model{Nodes: 10_000, Supernodes: []int{100}, Window: 5 * time.Second, SeriesPerNode: 500, ScrapeInterval: 2 * time.Second, FilterRatio: 0.25, BytesPerSample: 10}
	if p := m.Project(); p.SamplesPerSecond != 625_000 || p.BytesPerSecond != 6_250_000 || p.RequestsPerSecond != 20 {
		t.Errorf("samples: %+v", p)
	}
	if got := SupernodesForFanOut(100_000, 3, 100); !slices.Equal(got, []int{10, 1000}) {
		t.Errorf("fan-out 100, three levels: %v", got)
	}
	if got := SupernodesForFanOut(12_345, 2, 100); !slices.Equal(got, []int{124}) {
		t.Errorf("rounding up: %v", got)
	}
}
