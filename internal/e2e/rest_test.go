package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func get(t *testing.T, url, accept string) (int, string, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(body)
}

// TestRESTPaths: a leaf attached straight to the root (the root is a valid
// parent), then the REST paths of the foundation: latest, a node's range,
// everything in a range; JSON on request; clear errors for bad input.
func TestRESTPaths(t *testing.T) {
	r := startRoot(t)
	l := startLeaf(t, "solo", "eu-2", r.grpcAddr)
	eventually(t, 20*time.Second, "data at the root", func() bool {
		d := l.node.Agent.Delivery()
		return d.LowSeq > 3
	})
	base := "http://" + r.httpAddr + "/api/metrics-api"
	from := time.Now().Add(-time.Minute).Unix()
	to := time.Now().Add(time.Minute).Format(time.RFC3339)

	code, ct, body := get(t, base+"/nodes/solo/latest", "")
	if code != 200 || !strings.HasPrefix(ct, "application/openmetrics-text") || !strings.Contains(body, `up{dc="eu-2",job="node_exporter",level="machine",node="solo"} 1 `) {
		t.Fatalf("latest: %d %s\n%s", code, ct, body)
	}
	if strings.Contains(body, "node_cpu_seconds_total") {
		t.Error("latest should carry only the dashboard subset")
	}
	parseOpenMetrics(t, []byte(body))

	code, _, body = get(t, fmt.Sprintf("%s/nodes/solo/%d/%s", base, from, to), "")
	if code != 200 || !strings.Contains(body, "node_cpu_seconds_total{") {
		t.Fatalf("node range: %d\n%s", code, head([]byte(body)))
	}
	parseOpenMetrics(t, []byte(body))
	code, _, body = get(t, fmt.Sprintf("%s/nodes/solo/%d", base, from*1000), "")
	if code != 200 || !strings.Contains(body, "node_cpu_seconds_total{") {
		t.Fatalf("node since (ms): %d\n%s", code, head([]byte(body)))
	}
	code, _, body = get(t, fmt.Sprintf("%s/%d/%s", base, from, to), "")
	if code != 200 || !strings.Contains(body, `node="solo"`) {
		t.Fatalf("all range: %d\n%s", code, head([]byte(body)))
	}
	parseOpenMetrics(t, []byte(body))

	code, ct, body = get(t, fmt.Sprintf("%s/nodes/solo/%d/%s", base, from, to), "application/json")
	var js struct {
		Series []struct {
			Labels  map[string]string `json:"labels"`
			Samples [][2]any          `json:"samples"`
		} `json:"series"`
	}
	if code != 200 || ct != "application/json" || json.Unmarshal([]byte(body), &js) != nil || len(js.Series) == 0 || js.Series[0].Labels["node"] != "solo" {
		t.Fatalf("json: %d %s %.300s", code, ct, body)
	}

	for _, tc := range []struct {
		path string
		code int
		msg  string
	}{
		{"/nodes/nobody/latest", 404, `unknown node \"nobody\"`},
		{fmt.Sprintf("/nodes/nobody/%d/%s", from, to), 404, "unknown node"},
		{"/nodes/solo/yesterday/now", 400, "start: timestamp"},
		{fmt.Sprintf("/nodes/solo/%d/%d", from+100, from), 400, "is after end"},
		{"/nodes/solo/0/never", 400, "end: timestamp"},
	} {
		code, _, body := get(t, base+tc.path, "")
		if code != tc.code || !strings.Contains(body, tc.msg) {
			t.Errorf("GET %s: %d %s, want %d containing %q", tc.path, code, body, tc.code, tc.msg)
		}
	}
}
