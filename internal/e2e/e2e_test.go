package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"

	"github.com/canopytree/canopy/root"
)

// TestTreeDeliversEverySample runs root + supernode (a real canopy-node
// process) + 3 leaves scraping node_exporter-format targets, kills the
// supernode with SIGKILL mid-run and restarts it, and then audits: every
// batch each leaf sealed up to a cut-off is persisted (seq range 1..cut-off
// complete in the root's ledger), every sample of those batches is in the
// TSDB with its value, nothing was appended twice, and the REST gateway
// serves the same data as valid OpenMetrics.
func TestTreeDeliversEverySample(t *testing.T) {
	r := startRoot(t)
	sn := startSupernode(t, "sn1", r.grpcAddr)
	var leaves []*leafRun
	for i := range 3 {
		leaves = append(leaves, startLeaf(t, fmt.Sprintf("leaf%d", i), "eu-1", sn.treeAddr))
	}
	acked := func(l *leafRun) uint64 {
		epoch := l.node.Agent.Delivery().Epoch
		for _, o := range r.Ingester.Ledger() {
			if o.Origin == l.id && o.Epoch == epoch {
				return o.Acked
			}
		}
		return 0
	}
	eventually(t, 20*time.Second, "every leaf has batches persisted", func() bool {
		for _, l := range leaves {
			if acked(l) < 4 {
				return false
			}
		}
		return true
	})

	sn.kill()
	killedAt := map[string]uint64{}
	for _, l := range leaves {
		killedAt[l.id] = l.node.Agent.Delivery().NextSeq
	}
	eventually(t, 10*time.Second, "leaves notice the dead parent and buffer", func() bool {
		for _, l := range leaves {
			d := l.node.Agent.Delivery()
			if d.LastError == nil || d.NextSeq < killedAt[l.id]+3 {
				return false
			}
		}
		return true
	})
	sn.start()

	// Cut-off: everything sealed by now must arrive.
	cut := map[string]uint64{}
	for _, l := range leaves {
		cut[l.id] = l.node.Agent.Delivery().NextSeq - 1
	}
	eventually(t, 30*time.Second, "backlog persisted after the restart", func() bool {
		for _, l := range leaves {
			if acked(l) < cut[l.id] {
				return false
			}
		}
		return true
	})
	for _, l := range leaves {
		l.stop()
	}
	sn.kill() // nothing more arrives at the root while we audit
	settled(t, r)

	var checked int
	for _, l := range leaves {
		if d := l.node.Agent.Delivery(); d.Loss.Batches != 0 || d.Rejected.Batches != 0 {
			t.Errorf("%s: buffer lost %+v, rejected %+v", l.id, d.Loss, d.Rejected)
		}
		db := stored(t, r, l.id)
		l.mu.Lock()
		for seq := uint64(1); seq <= cut[l.id]; seq++ {
			series, ok := l.sealed[seq]
			if !ok {
				t.Fatalf("%s: batch %d was never sealed", l.id, seq)
			}
			for _, s := range series {
				points := db[s.Labels.String()]
				for _, smp := range s.Samples {
					v, ok := points[smp.T]
					if !ok {
						t.Errorf("%s batch %d: %s @%d missing from the TSDB", l.id, seq, s.Labels, smp.T)
						continue
					}
					if math.Float64bits(v) != math.Float64bits(smp.V) {
						t.Errorf("%s batch %d: %s @%d = %g stored, %g scraped", l.id, seq, s.Labels, smp.T, v, smp.V)
					}
					checked++
				}
			}
		}
		l.mu.Unlock()
		if l.target.Scrapes() == 0 {
			t.Errorf("%s: target never scraped", l.id)
		}
		checkREST(t, r, l.id, db)
	}
	t.Logf("audited %d samples in %d+%d+%d batches", checked, cut["leaf0"], cut["leaf1"], cut["leaf2"])
	if checked < 3*4*20 {
		t.Fatalf("only %d samples audited; the test did not exercise the path", checked)
	}

	appended := metricValue(t, r.Root, "canopy_root_samples_appended_total")
	var storedTotal int
	for _, id := range []string{"leaf0", "leaf1", "leaf2", "sn1"} {
		for _, points := range stored(t, r, id) {
			storedTotal += len(points)
		}
	}
	if int(appended) != storedTotal {
		t.Errorf("root appended %d samples but the TSDB holds %d: a batch was appended twice or lost", int(appended), storedTotal)
	}
	if dups := metricValue(t, r.Root, "canopy_root_duplicate_batches_total"); dups == 0 {
		t.Log("no retransmit reached the root as a duplicate (the supernode died with nothing forwarded)")
	}
}

// settled waits until the root has appended nothing for three windows.
func settled(t *testing.T, r *rootRun) {
	t.Helper()
	last, since := -1.0, time.Now()
	eventually(t, 10*time.Second, "ingest to settle", func() bool {
		if v := metricValue(t, r.Root, "canopy_root_samples_appended_total"); v != last {
			last, since = v, time.Now()
		}
		return time.Since(since) > 3*window
	})
}

// checkREST fetches the node's whole range through the REST gateway and
// parses the OpenMetrics answer back: it must equal what the TSDB holds.
func checkREST(t *testing.T, r *rootRun, nodeID string, db map[string]map[int64]float64) {
	t.Helper()
	url := fmt.Sprintf("http://%s/api/metrics-api/nodes/%s/0/%d", r.httpAddr, nodeID, time.Now().Add(time.Minute).UnixMilli())
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/openmetrics-text; version=1.0.0; charset=utf-8" {
		t.Errorf("content type %q", ct)
	}
	got := parseOpenMetrics(t, body)
	var want, have int
	for key, points := range db {
		want += len(points)
		for ts, v := range points {
			if gv, ok := got[key][ts]; !ok || math.Float64bits(gv) != math.Float64bits(v) {
				t.Errorf("REST %s: %s @%d: got %v (present %v), TSDB has %g", nodeID, key, ts, gv, ok, v)
				return
			}
		}
	}
	for _, points := range got {
		have += len(points)
	}
	if want != have {
		t.Errorf("REST %s: %d samples, TSDB %d", nodeID, have, want)
	}
}

func parseOpenMetrics(t *testing.T, body []byte) map[string]map[int64]float64 {
	t.Helper()
	p, err := textparse.New(body, "application/openmetrics-text; version=1.0.0", nil, textparse.ParserOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[int64]float64{}
	var ls labels.Labels
	for {
		entry, err := p.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("invalid OpenMetrics: %v\n%s", err, head(body))
		}
		if entry != textparse.EntrySeries {
			continue
		}
		_, ts, v := p.Series()
		p.Labels(&ls)
		if ts == nil {
			t.Fatalf("sample without timestamp")
		}
		key := ls.String()
		if out[key] == nil {
			out[key] = map[int64]float64{}
		}
		out[key][*ts] = v
	}
	if !bytes.HasSuffix(body, []byte("# EOF\n")) {
		t.Error("OpenMetrics answer does not end with # EOF")
	}
	return out
}

func head(b []byte) []byte {
	if len(b) > 2000 {
		return b[:2000]
	}
	return b
}

func metricValue(t *testing.T, r *root.Root, name string) float64 {
	t.Helper()
	mfs, err := r.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var sum float64
		for _, m := range mf.Metric {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
		return sum
	}
	t.Fatalf("metric %s not found", name)
	return 0
}
