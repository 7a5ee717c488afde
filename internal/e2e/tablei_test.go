package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/canopytree/canopy/internal/node"
	"github.com/canopytree/canopy/leaf"
	canopyv1 "github.com/canopytree/canopy/proto/canopy/v1"
	"github.com/canopytree/canopy/root"
)

// workloadTarget serves what a leaf scrapes besides its machine: a
// cAdvisor-like container endpoint and an application's endpoint, with
// values the test knows.
type workloadTarget struct {
	*httptest.Server
	scrapes atomic.Int64
}

const containerMemory = 104857600 // bytes every container reports

func newWorkloadTarget(t *testing.T, container string, inflight int) *workloadTarget {
	w := &workloadTarget{}
	mux := http.NewServeMux()
	mux.HandleFunc("/container", func(rw http.ResponseWriter, _ *http.Request) {
		n := w.scrapes.Add(1)
		fmt.Fprintf(rw, "# TYPE container_memory_usage_bytes gauge\ncontainer_memory_usage_bytes{name=%q,image=\"nginx\"} %d\n", container, containerMemory)
		fmt.Fprintf(rw, "# TYPE container_cpu_usage_seconds_total counter\ncontainer_cpu_usage_seconds_total{name=%q,cpu=\"total\"} %g\n", container, float64(n)/2)
	})
	mux.HandleFunc("/app", func(rw http.ResponseWriter, _ *http.Request) {
		n := w.scrapes.Add(1)
		fmt.Fprintf(rw, "# TYPE shop_inflight gauge\nshop_inflight %d\n# TYPE shop_requests_total counter\nshop_requests_total %d\n", inflight, n)
	})
	w.Server = httptest.NewServer(mux)
	t.Cleanup(w.Close)
	return w
}

// answer is a query's samples by series.
type answer map[string]map[int64]float64

func (a answer) samples() int {
	n := 0
	for _, points := range a {
		n += len(points)
	}
	return n
}

func answerOf(series []*canopyv1.Series) answer {
	out := answer{}
	for _, s := range series {
		key := labelsOf(s).String()
		if out[key] == nil {
			out[key] = map[int64]float64{}
		}
		for _, smp := range s.Samples {
			out[key][smp.TimestampMs] = smp.Value
		}
	}
	return out
}

// seriesKey is how answers key a series: the metric name and label pairs.
func seriesKey(name string, pairs ...string) string {
	return labels.FromStrings(append([]string{labels.MetricName, name}, pairs...)...).String()
}

func labelsOf(s *canopyv1.Series) labels.Labels {
	b := labels.NewScratchBuilder(len(s.Labels))
	for _, l := range s.Labels {
		b.Add(l.Name, l.Value)
	}
	b.Sort()
	return b.Labels()
}

// checkStored compares an answer with the TSDB: every sample stored in
// [mint, settled] is in it with its value (bit for bit), and every sample
// in it is stored in [mint, maxt] (a "since" query also sees what arrived
// while it ran). Every series carries the target's label.
func checkStored(t *testing.T, what string, got answer, r *rootRun, label, id string, mint, settled, maxt int64) {
	t.Helper()
	ms := everything
	if label != "" {
		ms = []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, label, id)}
	}
	db := answer{}
	eachSample(t, r, maxt, ms, func(ls labels.Labels, ts int64, v float64) {
		if ts < mint {
			return
		}
		key := ls.String()
		if db[key] == nil {
			db[key] = map[int64]float64{}
		}
		db[key][ts] = v
	})
	if got.samples() == 0 {
		t.Errorf("%s: empty answer", what)
		return
	}
	var missing, extra int
	for key, points := range db {
		for ts, v := range points {
			if ts > settled {
				continue
			}
			if gv, ok := got[key][ts]; !ok || math.Float64bits(gv) != math.Float64bits(v) {
				if missing++; missing == 1 {
					t.Errorf("%s: %s @%d: answer %v (present %v), TSDB %v", what, key, ts, gv, ok, v)
				}
			}
		}
	}
	for key, points := range got {
		if id != "" && !strings.Contains(key, fmt.Sprintf("%s=%q", label, id)) {
			t.Errorf("%s: series %s does not belong to %s %s", what, key, label, id)
		}
		for ts, v := range points {
			if dv, ok := db[key][ts]; !ok || math.Float64bits(dv) != math.Float64bits(v) {
				if extra++; extra == 1 {
					t.Errorf("%s: %s @%d = %v is not stored", what, key, ts, v)
				}
			}
		}
	}
	if missing+extra > 0 {
		t.Errorf("%s: %d stored samples missing, %d not stored, of %d", what, missing, extra, got.samples())
	}
}

// tableIPath is one row of Table I with its target.
type tableIPath struct {
	kind, label, id string // kind as in the URL; "" for all
}

func (p tableIPath) prefix() string {
	if p.kind == "" {
		return ""
	}
	return "/" + p.kind + "/" + p.id
}

func (p tableIPath) target() *canopyv1.Target {
	switch p.kind {
	case "nodes":
		return &canopyv1.Target{NodeId: p.id}
	case "dc":
		return &canopyv1.Target{DcId: p.id}
	case "containers":
		return &canopyv1.Target{ContainerId: p.id}
	case "apps":
		return &canopyv1.Target{AppId: p.id}
	}
	return &canopyv1.Target{}
}

// TestReaderTableI: the twelve REST paths of the c12s paper's Table I and
// their gRPC twins (Export renders the same document, Query the typed
// series, Latest), against a root fed by a real tree: a supernode process
// with three in-process leaves below it, each scraping a machine, a
// container and an application target. Every answer is parsed back
// (OpenMetrics with Prometheus's parser) and compared with the TSDB,
// sample by sample; values the targets serve are checked as well. Bad
// ids, bad timestamps and start after end get the right status and a
// message that says what is wrong, on both faces.
func TestReaderTableI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process")
	}
	rule := &canopyv1.AggregationRule{
		Matchers: []*canopyv1.LabelMatcher{{Name: "__name__", Type: canopyv1.MatchType_MATCH_TYPE_EQUAL, Value: "shop_inflight"}},
		Functions: []canopyv1.AggregateFunction{canopyv1.AggregateFunction_AGGREGATE_FUNCTION_SUM,
			canopyv1.AggregateFunction_AGGREGATE_FUNCTION_COUNT, canopyv1.AggregateFunction_AGGREGATE_FUNCTION_MAX},
	}
	r := startRootWith(t, listen(t), func(o *root.Options) {
		o.Control = &canopyv1.Control{AggregationRules: []*canopyv1.AggregationRule{rule}}
	})
	start := time.Now().Add(-time.Second)
	sn := startSupernode(t, "sn1", r.grpcAddr)
	inflight := map[string]int{"leafA": 3, "leafB": 5, "leafC": 7}
	dcOf := map[string]string{"leafA": "north", "leafB": "north", "leafC": "south"}
	var leaves []*leafRun
	for _, id := range []string{"leafA", "leafB", "leafC"} {
		dc := dcOf[id]
		wl := newWorkloadTarget(t, "web-"+id, inflight[id])
		leaves = append(leaves, startLeafWith(t, id, dc, sn.treeAddr, func(c *node.Config) {
			c.Scrape.Targets = append(c.Scrape.Targets,
				leaf.Target{Name: "cadvisor", URL: wl.URL + "/container", Level: leaf.LevelContainer, ContainerLabel: "name"},
				leaf.Target{Name: "shop", URL: wl.URL + "/app", Level: leaf.LevelApp, App: "shop"})
		}))
	}
	conn, err := grpc.NewClient(r.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := canopyv1.NewReaderServiceClient(conn)
	ctx := context.Background()

	dcLatest := func(dc string) (map[string]float64, *canopyv1.NetworkImprecision) {
		resp, err := client.Latest(ctx, &canopyv1.LatestRequest{Target: &canopyv1.Target{DcId: dc}})
		if err != nil {
			return nil, nil
		}
		vals := map[string]float64{}
		for _, s := range resp.Series {
			vals[labelsOf(s).String()] = s.Samples[len(s.Samples)-1].Value
		}
		return vals, resp.Ni
	}
	eventually(t, 30*time.Second, "every leaf's data and the dc aggregates at the root", func() bool {
		for _, l := range leaves {
			if l.node.Agent.Delivery().LowSeq < 8 {
				return false
			}
		}
		vals, ni := dcLatest("north")
		return vals[seriesKey("dc:shop_inflight:sum", "dc", "north")] == 8 && ni != nil && ni.All == 2 && ni.Reachable == 2 && ni.Dup == 0
	})
	time.Sleep(4 * time.Second) // the range queries end 3 s ago: give them data on both sides of start+ranges

	base := "http://" + r.httpAddr + "/api/metrics-api"
	paths := []tableIPath{
		{"nodes", "node", "leafA"},
		{"dc", "dc", "north"},
		{"containers", "container", "web-leafB"},
		{"apps", "app", "shop"},
		{"", "", ""},
	}
	// Timestamps in each accepted form, rotating over the paths.
	formats := []func(ms int64) string{
		func(ms int64) string { return strconv.FormatInt(ms/1000, 10) },
		func(ms int64) string { return strconv.FormatInt(ms, 10) },
		func(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano) },
	}
	for i, p := range paths {
		mint := start.UnixMilli() / 1000 * 1000 // whole seconds: every format says the same instant
		fmtStart, fmtEnd := formats[i%3], formats[(i+1)%3]

		// {start}/{end}: a closed range that ended 3 s ago.
		end := time.Now().Add(-3*time.Second).UnixMilli() / 1000 * 1000
		rangePath := fmt.Sprintf("%s/%s/%s", p.prefix(), fmtStart(mint), fmtEnd(end))
		tr := &canopyv1.TimeRange{Start: fmtStart(mint), End: fmtEnd(end)}
		checkPathTwins(t, r, client, base, rangePath, p, tr, mint, end, end)

		// {timestamp}: from then until now.
		settledAt := time.Now().Add(-3 * time.Second).UnixMilli()
		sincePath := fmt.Sprintf("%s/%s", p.prefix(), fmtStart(mint))
		checkPathTwins(t, r, client, base, sincePath, p, &canopyv1.TimeRange{Start: fmtStart(mint)}, mint, settledAt, math.MaxInt64)
	}

	// Values the targets served, through the REST answers.
	now := time.Now().UnixMilli()
	code, _, body := get(t, fmt.Sprintf("%s/apps/shop/%d/%d", base, start.Unix(), now), "")
	apps := parseOpenMetrics(t, []byte(body))
	for _, l := range leaves {
		key := seriesKey("shop_inflight", "app", "shop", "dc", dcOf[l.id], "job", "shop", "level", "app", "node", l.id)
		if code != 200 || len(apps[key]) == 0 {
			t.Fatalf("apps/shop: %d, no %s in\n%s", code, key, head([]byte(body)))
		}
		for ts, v := range apps[key] {
			if v != float64(inflight[l.id]) {
				t.Errorf("%s @%d = %v, the target serves %d", key, ts, v, inflight[l.id])
			}
		}
	}
	_, _, body = get(t, fmt.Sprintf("%s/containers/web-leafC/%d", base, start.UnixMilli()), "")
	for key, points := range parseOpenMetrics(t, []byte(body)) {
		if !strings.Contains(key, `"container_memory_usage_bytes"`) {
			continue
		}
		for ts, v := range points {
			if v != containerMemory || !strings.Contains(key, `node="leafC"`) || !strings.Contains(key, `container="web-leafC"`) {
				t.Errorf("%s @%d = %v", key, ts, v)
			}
		}
	}

	// nodes/{id}/latest and its twins.
	code, ct, body := get(t, base+"/nodes/leafB/latest", "")
	latestREST := parseOpenMetrics(t, []byte(body))
	resp, err := client.Latest(ctx, &canopyv1.LatestRequest{Target: &canopyv1.Target{NodeId: "leafB"}})
	if err != nil || code != 200 || !strings.HasPrefix(ct, "application/openmetrics-text") {
		t.Fatalf("nodes/leafB/latest: %d %s %v", code, ct, err)
	}
	checkLatest(t, "nodes/leafB/latest", latestREST, answerOf(resp.Series), seriesKey("up", "dc", "north", "job", "node_exporter", "level", "machine", "node", "leafB"), 1)

	// dc/{id}/latest: the aggregates with the dc's NI beside them.
	code, _, body = get(t, base+"/dc/north/latest", "")
	dcREST := parseOpenMetrics(t, []byte(body))
	resp, err = client.Latest(ctx, &canopyv1.LatestRequest{Target: &canopyv1.Target{DcId: "north"}})
	if err != nil || code != 200 {
		t.Fatalf("dc/north/latest: %d %v", code, err)
	}
	if ni := resp.Ni; ni == nil || ni.All != 2 || ni.Reachable != 2 || ni.Dup != 0 {
		t.Errorf("dc/north/latest NI %v, want all 2, reachable 2, dup 0", ni)
	}
	for name, want := range map[string]float64{"sum": 8, "count": 2, "max": 5} {
		checkLatest(t, "dc/north/latest", dcREST, answerOf(resp.Series), seriesKey("dc:shop_inflight:"+name, "dc", "north"), want)
	}
	checkLatest(t, "dc/north/latest", dcREST, answerOf(resp.Series), seriesKey("canopy_ni_all", "dc", "north", "scope", "group"), 2)
	checkLatest(t, "dc/north/latest", dcREST, answerOf(resp.Series), seriesKey("canopy_ni_reachable", "dc", "north", "scope", "group"), 2)
	checkLatest(t, "dc/north/latest", dcREST, answerOf(resp.Series), seriesKey("canopy_ni_dup", "dc", "north", "scope", "group"), 0)

	// JSON on request, for a dc range.
	code, ct, body = get(t, fmt.Sprintf("%s/dc/south/%d", base, start.Unix()), "application/json")
	var js struct {
		Series []struct {
			Labels map[string]string `json:"labels"`
		} `json:"series"`
	}
	if err := json.Unmarshal([]byte(body), &js); code != 200 || ct != "application/json" || err != nil || len(js.Series) == 0 {
		t.Fatalf("dc/south as JSON: %d %s %v %.300s", code, ct, err, body)
	}
	for _, s := range js.Series {
		if s.Labels["dc"] != "south" {
			t.Errorf("dc/south as JSON: series %v", s.Labels)
		}
	}

	checkBadRequests(t, client, base, start)
}

// checkPathTwins queries one path over REST, gRPC Export and gRPC Query
// and checks each answer against the TSDB.
func checkPathTwins(t *testing.T, r *rootRun, client canopyv1.ReaderServiceClient, base, path string, p tableIPath, tr *canopyv1.TimeRange, mint, settled, maxt int64) {
	t.Helper()
	code, ct, body := get(t, base+path, "")
	if code != 200 || ct != "application/openmetrics-text; version=1.0.0; charset=utf-8" {
		t.Fatalf("GET %s: %d %s\n%s", path, code, ct, head([]byte(body)))
	}
	rest := answer(parseOpenMetrics(t, []byte(body)))
	checkStored(t, "REST "+path, rest, r, p.label, p.id, mint, settled, maxt)

	ctx := context.Background()
	export, err := client.Export(ctx, &canopyv1.ExportRequest{Target: p.target(), TimeRange: tr})
	if err != nil {
		t.Fatal(err)
	}
	var doc []byte
	for {
		chunk, err := export.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("gRPC Export %s: %v", path, err)
		}
		doc = append(doc, chunk.Data...)
	}
	checkStored(t, "gRPC Export "+path, parseOpenMetrics(t, doc), r, p.label, p.id, mint, settled, maxt)

	query, err := client.Query(ctx, &canopyv1.QueryRequest{Target: p.target(), TimeRange: tr})
	if err != nil {
		t.Fatal(err)
	}
	var series []*canopyv1.Series
	for {
		msg, err := query.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("gRPC Query %s: %v", path, err)
		}
		series = append(series, msg.Series...)
	}
	typed := answerOf(series)
	checkStored(t, "gRPC Query "+path, typed, r, p.label, p.id, mint, settled, maxt)
	t.Logf("%-60s %5d series %7d samples (REST), %7d (Query)", path, len(rest), rest.samples(), typed.samples())
}

// checkLatest: the REST and gRPC answers of a latest path agree on the
// newest sample of every series, one sample each, and key has want.
func checkLatest(t *testing.T, what string, rest, typed answer, key string, want float64) {
	t.Helper()
	for k, points := range typed {
		if len(points) != 1 {
			t.Errorf("%s: %s has %d samples, latest is one", what, k, len(points))
		}
		for ts, v := range points {
			if rv, ok := rest[k][ts]; !ok || math.Float64bits(rv) != math.Float64bits(v) {
				// A window may have been stored between the two calls: the
				// REST answer is then newer, never older.
				if !newer(rest[k], ts) {
					t.Errorf("%s: %s @%d: gRPC %v, REST %v", what, k, ts, v, rest[k])
				}
			}
		}
	}
	for _, a := range []answer{rest, typed} {
		points := a[key]
		if len(points) != 1 {
			t.Errorf("%s: %s has %d samples, want 1", what, key, len(points))
		}
		for _, v := range points {
			if v != want {
				t.Errorf("%s: %s = %v, want %v", what, key, v, want)
			}
		}
	}
}

func newer(points map[int64]float64, than int64) bool {
	for ts := range points {
		if ts > than {
			return true
		}
	}
	return false
}

// checkBadRequests: unknown ids are 404 / NotFound, bad timestamps and
// start after end 400 / InvalidArgument, each naming the problem.
func checkBadRequests(t *testing.T, client canopyv1.ReaderServiceClient, base string, start time.Time) {
	t.Helper()
	from, to := start.Unix(), start.Add(time.Minute).Unix()
	ts := strconv.FormatInt(from, 10)
	future := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
	for _, tc := range []struct {
		path   string
		target *canopyv1.Target
		tr     *canopyv1.TimeRange // nil: a latest path
		status int
		code   codes.Code
		msg    string
	}{
		{"/nodes/nobody/" + ts, &canopyv1.Target{NodeId: "nobody"}, &canopyv1.TimeRange{Start: ts}, 404, codes.NotFound, `unknown node "nobody"`},
		{"/dc/nowhere/" + ts + "/" + future, &canopyv1.Target{DcId: "nowhere"}, &canopyv1.TimeRange{Start: ts, End: future}, 404, codes.NotFound, `unknown dc "nowhere"`},
		{"/containers/none/" + ts, &canopyv1.Target{ContainerId: "none"}, &canopyv1.TimeRange{Start: ts}, 404, codes.NotFound, `unknown container "none"`},
		{"/apps/none/" + ts + "/" + future, &canopyv1.Target{AppId: "none"}, &canopyv1.TimeRange{Start: ts, End: future}, 404, codes.NotFound, `unknown app "none"`},
		{"/nodes/nobody/latest", &canopyv1.Target{NodeId: "nobody"}, nil, 404, codes.NotFound, `unknown node "nobody"`},
		{"/dc/nowhere/latest", &canopyv1.Target{DcId: "nowhere"}, nil, 404, codes.NotFound, `unknown dc "nowhere"`},
		{"/nodes/leafA/yesterday", &canopyv1.Target{NodeId: "leafA"}, &canopyv1.TimeRange{Start: "yesterday"}, 400, codes.InvalidArgument, `start: timestamp "yesterday"`},
		{"/dc/north/" + ts + "/never", &canopyv1.Target{DcId: "north"}, &canopyv1.TimeRange{Start: ts, End: "never"}, 400, codes.InvalidArgument, `end: timestamp "never"`},
		{"/apps/shop/-5", &canopyv1.Target{AppId: "shop"}, &canopyv1.TimeRange{Start: "-5"}, 400, codes.InvalidArgument, "non-negative"},
		{"/2026-13-01T00:00:00Z", &canopyv1.Target{}, &canopyv1.TimeRange{Start: "2026-13-01T00:00:00Z"}, 400, codes.InvalidArgument, "RFC 3339"},
		{fmt.Sprintf("/containers/web-leafA/%d/%d", to, from), &canopyv1.Target{ContainerId: "web-leafA"}, &canopyv1.TimeRange{Start: strconv.FormatInt(to, 10), End: strconv.FormatInt(from, 10)}, 400, codes.InvalidArgument, "is after end"},
		{fmt.Sprintf("/%d/%d", to, from), &canopyv1.Target{}, &canopyv1.TimeRange{Start: strconv.FormatInt(to, 10), End: strconv.FormatInt(from, 10)}, 400, codes.InvalidArgument, "is after end"},
		{"/nodes/leafA/" + future, &canopyv1.Target{NodeId: "leafA"}, &canopyv1.TimeRange{Start: future}, 400, codes.InvalidArgument, "is after end now"},
	} {
		code, _, body := get(t, base+tc.path, "")
		if code != tc.status || !strings.Contains(body, strings.ReplaceAll(tc.msg, `"`, `\"`)) {
			t.Errorf("GET %s: %d %s, want %d saying %s", tc.path, code, body, tc.status, tc.msg)
		}
		var err error
		if tc.tr == nil {
			_, err = client.Latest(context.Background(), &canopyv1.LatestRequest{Target: tc.target})
		} else {
			var stream grpc.ServerStreamingClient[canopyv1.QueryResponse]
			if stream, err = client.Query(context.Background(), &canopyv1.QueryRequest{Target: tc.target, TimeRange: tc.tr}); err == nil {
				_, err = stream.Recv()
			}
		}
		if st, _ := status.FromError(err); st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
			t.Errorf("gRPC twin of %s: %v, want %s saying %s", tc.path, err, tc.code, tc.msg)
		}
	}
}
