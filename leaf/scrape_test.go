package leaf

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/canopytree/canopy/batch"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
)

const promText = `# HELP http_requests_total Requests.
# TYPE http_requests_total counter
http_requests_total{code="200",node="inner"} 7
# TYPE temperature gauge
temperature 21.5
`

const openMetricsText = `# TYPE http_requests counter
http_requests_total{code="200"} 7 1700000000.5
# TYPE temperature gauge
temperature 21.5
# EOF
`

func TestParseFormatsAndLabels(t *testing.T) {
	id := Identity{Node: "n1", DC: "eu-1"}
	for name, tc := range map[string]struct{ body, ct string }{
		"prometheus text": {promText, "text/plain; version=0.0.4"},
		"openmetrics":     {openMetricsText, "application/openmetrics-text; version=1.0.0"},
		"no content type": {promText, ""},
	} {
		t.Run(name, func(t *testing.T) {
			samples, invalid, err := Parse([]byte(tc.body), tc.ct, Target{Name: "app1", Level: LevelApp, App: "shop"}, id, 1000)
			if err != nil || invalid != 0 || len(samples) != 2 {
				t.Fatalf("samples %v invalid %d err %v", samples, invalid, err)
			}
			c := samples[0]
			want := map[string]string{"__name__": "http_requests_total", "code": "200", "node": "n1", "dc": "eu-1", "level": "app", "job": "app1", "app": "shop"}
			if tc.body == promText {
				want["exported_node"] = "inner"
			}
			if !labels.Equal(c.Labels, labels.FromMap(want)) {
				t.Errorf("labels %s, want %s", c.Labels, labels.FromMap(want))
			}
			if c.Type != canopyv1.MetricType_METRIC_TYPE_COUNTER || samples[1].Type != canopyv1.MetricType_METRIC_TYPE_GAUGE {
				t.Errorf("types %v %v", c.Type, samples[1].Type)
			}
			if name == "openmetrics" && c.T != 1700000000500 {
				t.Errorf("explicit timestamp lost: %d", c.T)
			}
			if name != "openmetrics" && c.T != 1000 {
				t.Errorf("scrape timestamp not applied: %d", c.T)
			}
		})
	}
}

func TestParseContainerLabel(t *testing.T) {
	body := "container_memory_usage_bytes{name=\"web\",id=\"/docker/abc\"} 5\n"
	samples, _, err := Parse([]byte(body), "text/plain", Target{Name: "cadvisor", Level: LevelContainer, ContainerLabel: "name"}, Identity{Node: "n", DC: "d"}, 1)
	if err != nil || len(samples) != 1 {
		t.Fatal(samples, err)
	}
	if got := samples[0].Labels.Get("container"); got != "web" {
		t.Fatalf("container label %q", got)
	}
}

func TestParseRejectsGarbageWhole(t *testing.T) {
	_, _, err := Parse([]byte("temperature 21.5\nthis is { not metrics\n"), "text/plain", Target{Name: "x", Level: LevelMachine}, Identity{Node: "n", DC: "d"}, 1)
	if err == nil {
		t.Fatal("garbage accepted")
	}
}

// TestBadTargetsDoNotStopOthers: garbage, HTTP 500 and a hanging target
// beside a good one. The good target's samples arrive; each bad one is
// reported with up=0 and a failure reason series.
func TestBadTargetsDoNotStopOthers(t *testing.T) {
	release := make(chan struct{})
	servers := map[string]http.HandlerFunc{
		"good":    func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, promText) },
		"garbage": func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "<html><body>Not Found</body></html>") },
		"binary":  func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "\x00\x01\x02") },
		"error":   func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "boom", http.StatusInternalServerError) },
		"hang":    func(w http.ResponseWriter, r *http.Request) { <-release },
	}
	var targets []Target
	for name, h := range servers {
		srv := httptest.NewServer(h)
		defer srv.Close()
		targets = append(targets, Target{Name: name, URL: srv.URL + "/metrics"})
	}
	defer close(release)
	now := time.Unix(1_700_000_000, 0)
	a, err := NewAgent(AgentConfig{
		Identity: Identity{Node: "n1", DC: "eu-1"}, ScrapeInterval: time.Second, ScrapeTimeout: 200 * time.Millisecond,
		Window: time.Second, Targets: targets, Epoch: 1, Buffer: batch.Limits{MaxSamples: 1000},
		Now: func() time.Time { return now },
	}, nil, nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	a.ScrapeOnce(context.Background())
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("scrape round took %s: a hanging target held the others", d)
	}
	var sealed []batch.Series
	a.Observe(func(_ batch.ID, s []batch.Series) { sealed = s })
	if _, err := a.Heartbeat(context.Background(), nil); err != ErrNoParent {
		t.Fatalf("heartbeat without parent: %v", err)
	}
	got := map[string]float64{}
	for _, s := range sealed {
		key := s.Labels.Get("__name__") + "/" + s.Labels.Get("job") + "/" + s.Labels.Get("reason")
		got[key] = s.Samples[0].V
	}
	for key, want := range map[string]float64{
		"http_requests_total/good/": 7,
		"up/good/":                  1,
		"up/garbage/":               0,
		"up/error/":                 0,
		"up/hang/":                  0,
		"canopy_scrape_failures_total/garbage/parse": 1,
		"up/binary/": 0,
		"canopy_scrape_failures_total/binary/parse":      1,
		"canopy_scrape_failures_total/error/http_status": 1,
		"canopy_scrape_failures_total/hang/timeout":      1,
	} {
		if v, ok := got[key]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", key, v, ok, want)
		}
	}
	if t.Failed() {
		var keys []string
		for k := range got {
			keys = append(keys, k)
		}
		t.Log(strings.Join(keys, "\n"))
	}
}
