//go:build integration

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"

	"github.com/canopytree/canopy/bench"
	"github.com/canopytree/canopy/internal/config"
	"github.com/canopytree/canopy/internal/node"
	"github.com/canopytree/canopy/leaf"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
	"github.com/canopytree/canopy/root"
	"github.com/canopytree/canopy/root/remote"
)

// points is series → timestamp (ms) → value.
type points map[string]map[int64]float64

func (p points) add(ls labels.Labels, ts int64, v float64) {
	k := ls.String()
	if p[k] == nil {
		p[k] = map[int64]float64{}
	}
	p[k][ts] = v
}

// TestRealRemoteWrite: two leaves scraping a real node_exporter (and the
// built-in collector) write through the root into a real Prometheus
// (remote-write receiver) and a real VictoriaMetrics at once; each sink
// holds every sample the root stored: node series, dc aggregates, NI
// series, with the root's external label.
func TestRealRemoteWrite(t *testing.T) {
	exporter := requireService(t, "CANOPY_IT_NODE_EXPORTER_URL")
	prom := requireService(t, "CANOPY_IT_PROMETHEUS_URL")
	vm := requireService(t, "CANOPY_IT_VICTORIAMETRICS_URL")

	var rules []*canopyv1.AggregationRule
	for i, r := range config.DefaultAggregationRules() {
		p, err := r.Proto(fmt.Sprint(i))
		if err != nil {
			t.Fatal(err)
		}
		rules = append(rules, p)
	}
	external := labels.FromStrings("canopy_root", "it")
	q := remote.DefaultQueueConfig()
	q.BatchSendDeadline = 200 * time.Millisecond
	r := startRootWith(t, listen(t), func(o *root.Options) {
		o.Control = &canopyv1.Control{AggregationRules: rules}
		o.Remote = []remote.Endpoint{
			{Name: "prometheus", Client: remote.ClientConfig{URL: prom + "/api/v1/write", Timeout: 10 * time.Second}, Queue: q, ExternalLabels: external},
			{Name: "victoriametrics", Client: remote.ClientConfig{URL: vm + "/api/v1/write", Timeout: 10 * time.Second}, Queue: q, ExternalLabels: external},
		}
	})
	for i, dc := range []string{"eu-1", "eu-2"} {
		l := startLeafWith(t, fmt.Sprintf("it%d", i+1), dc, r.grpcAddr, func(c *node.Config) {
			c.Scrape.Machine, c.Scrape.Interval, c.Scrape.Timeout = true, time.Second, time.Second
			c.Scrape.Targets = []leaf.Target{{Name: "node_exporter", URL: exporter}}
		})
		defer l.stop()
	}
	eventually(t, 60*time.Second, "dc aggregates over a few windows", func() bool {
		return len(series(t, r, "dc:node_memory_MemTotal_bytes:sum", "dc", "eu-1")) >= 4
	})
	snapshot := time.Now()
	want := storedUntil(t, r, snapshot.UnixMilli(), external)
	total := 0
	for _, s := range want {
		total += len(s)
	}
	// VictoriaMetrics keeps 12 significant decimal digits of a value (its
	// documented precision); Prometheus keeps float64 bits.
	for name, sink := range map[string]struct {
		fetch     func() (points, error)
		tolerance float64
	}{
		"prometheus":      {func() (points, error) { return prometheusPoints(prom, snapshot) }, 0},
		"victoriametrics": {func() (points, error) { return victoriaPoints(vm) }, 1e-11},
	} {
		var missing int
		var example string
		eventually(t, 60*time.Second, "every stored sample in "+name, func() bool {
			got, err := sink.fetch()
			if err != nil {
				t.Logf("%s: %v", name, err)
				return false
			}
			missing, example = compare(want, got, sink.tolerance)
			if missing > 0 {
				t.Logf("%s: %d missing, e.g. %s", name, missing, example)
			}
			return missing == 0
		})
		t.Logf("%s holds all %d samples of %d series the root stored (dc aggregates and NI included)", name, total, len(want))
	}
	for _, s := range []string{"dc:node_memory_MemTotal_bytes:sum", "canopy_ni_all", "node_cpu_seconds_total"} {
		found := false
		for k := range want {
			if strings.Contains(k, `__name__="`+s+`"`) {
				found = true
			}
		}
		if !found {
			t.Errorf("no %s among the stored series", s)
		}
	}
}

// storedUntil reads the root's TSDB up to maxt (staleness markers left
// out: query APIs do not return them), with the external labels added.
func storedUntil(t *testing.T, r *rootRun, maxt int64, external labels.Labels) points {
	out := points{}
	eachSample(t, r, maxt, everything, func(ls labels.Labels, ts int64, v float64) {
		if !value.IsStaleNaN(v) {
			out.add(withLabels(ls, external), ts, v)
		}
	})
	return out
}

// compare counts wanted samples the sink lacks or holds with another
// value (relative tolerance tol).
func compare(want, got points, tol float64) (missing int, example string) {
	for k, s := range want {
		for ts, v := range s {
			g, ok := got[k][ts]
			same := g == v || math.IsNaN(g) && math.IsNaN(v) || math.Abs(g-v) <= tol*math.Abs(v)
			if !ok || !same {
				missing++
				example = fmt.Sprintf("%s @%d (%v %v, want %v)", k, ts, ok, g, v)
			}
		}
	}
	return missing, example
}

func getJSON(u string, out any) error {
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// prometheusPoints reads every raw sample with the external label through
// a range selector.
func prometheusPoints(base string, at time.Time) (points, error) {
	var resp struct {
		Status string
		Data   struct {
			Result []struct {
				Metric map[string]string
				Values [][2]any
			}
		}
	}
	u := base + "/api/v1/query?" + url.Values{
		"query": {`{canopy_root="it"}[30m]`},
		"time":  {strconv.FormatFloat(float64(at.Add(time.Second).UnixMilli())/1000, 'f', 3, 64)},
	}.Encode()
	if err := getJSON(u, &resp); err != nil {
		return nil, err
	}
	out := points{}
	for _, s := range resp.Data.Result {
		ls := labels.FromMap(s.Metric)
		for _, v := range s.Values {
			ts, _ := v[0].(float64)
			str, _ := v[1].(string)
			f, err := strconv.ParseFloat(str, 64)
			if err != nil {
				return nil, err
			}
			out.add(ls, int64(math.Round(ts*1000)), f)
		}
	}
	return out, nil
}

// victoriaPoints flushes VictoriaMetrics' buffers and exports every raw
// sample with the external label.
func victoriaPoints(base string) (points, error) {
	if resp, err := http.Get(base + "/internal/force_flush"); err == nil {
		resp.Body.Close()
	}
	resp, err := http.Get(base + "/api/v1/export?" + url.Values{"match[]": {`{canopy_root="it"}`}, "start": {"0"}, "end": {strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)}}.Encode())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := points{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var line struct {
			Metric     map[string]string
			Values     []json.RawMessage
			Timestamps []int64
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return nil, err
		}
		ls := labels.FromMap(line.Metric)
		for i, raw := range line.Values {
			f := math.NaN() // null: NaN, staleness markers included
			if string(raw) != "null" {
				if f, err = strconv.ParseFloat(strings.Trim(string(raw), `"`), 64); err != nil {
					return nil, err
				}
			}
			out.add(ls, line.Timestamps[i], f)
		}
	}
	return out, sc.Err()
}

// BenchmarkRealRemoteWrite measures sustained remote write from the
// root's durable log into the real Prometheus and VictoriaMetrics: 100
// node_exporter-sized nodes × 10 windows (1.5 M samples) per iteration,
// Prometheus's default queue settings with shards adapting every second,
// reported as samples/s and bytes per sample on the wire. `make
// bench-remote` runs it and the same measurement with canopy-bench.
func BenchmarkRealRemoteWrite(b *testing.B) {
	for _, sink := range []struct{ name, env string }{
		{"prometheus", "CANOPY_IT_PROMETHEUS_URL"},
		{"victoriametrics", "CANOPY_IT_VICTORIAMETRICS_URL"},
	} {
		base := os.Getenv(sink.env)
		if base == "" {
			b.Skipf("%s not set; run `make bench-remote`", sink.env)
		}
		b.Run(sink.name, func(b *testing.B) {
			var samples, seconds float64
			var bytes int64
			q := remote.DefaultQueueConfig()
			q.ShardUpdateEvery = time.Second
			for range b.N {
				res, err := bench.RemoteWrite(context.Background(), bench.RemoteWriteConfig{URL: base + "/api/v1/write", Nodes: 100, Windows: 10, Series: 1500, Queue: q})
				if err != nil {
					b.Fatal(err)
				}
				samples, seconds, bytes = samples+float64(res.Samples), seconds+res.Seconds, bytes+res.Bytes
			}
			b.ReportMetric(samples/seconds, "samples/s")
			b.ReportMetric(float64(bytes)/samples, "wire-B/sample")
		})
	}
}
